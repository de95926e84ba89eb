//! End-to-end: the Slack app with the real binary and a real agent. Slack cannot be
//! reached from here, so the test plays both of Slack's roles: it signs requests to
//! `/slack/commands` and `/slack/interactivity` exactly as Slack documents (v0
//! HMAC-SHA256 of `v0:timestamp:body`), and it runs a stand-in of the Web API methods
//! the server calls (`users.info`, `chat.postMessage`, `chat.update`, `views.open`, and
//! the `response_url` of commands and buttons), which checks the bot token and records
//! every call for the assertions.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use runops_jwt::testing::{JwksServer, TestKey};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-bot-token";
/// What the stand-in answers for the channel `#ops`: Slack answers with channel ids.
const OPS_CHANNEL_ID: &str = "C0OPS";

/// Messages posted so far: each gets its own `ts`.
static POSTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// One call the stand-in received.
#[derive(Debug, Clone)]
struct Call {
    /// `chat.postMessage`, `users.info`... or `respond` for a response URL.
    method: String,
    /// The `N` of `/respond/N`.
    respond_to: Option<String>,
    authorization: String,
    /// The JSON body, or the query of a GET as an object.
    body: Value,
    /// What the stand-in answered.
    answer: Value,
}

/// The Slack Web API stand-in on 127.0.0.1.
struct SlackStandIn {
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl SlackStandIn {
    /// `users`: Slack user id → the e-mail `users.info` gives.
    fn start(users: &[(&str, &str)]) -> SlackStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Slack stand-in");
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let users: BTreeMap<String, String> = users
            .iter()
            .map(|(id, email)| (id.to_string(), email.to_string()))
            .collect();
        let (calls2, users) = (calls.clone(), Arc::new(users));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (calls, users) = (calls2.clone(), users.clone());
                std::thread::spawn(move || serve(conn, &calls, &users));
            }
        });
        SlackStandIn { port, calls }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    fn response_url(&self, n: &str) -> String {
        format!("http://127.0.0.1:{}/respond/{n}", self.port)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits for a call of `method` whose body satisfies `pred`; returns the body.
    fn wait_call(&self, what: &str, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_posted(what, method, pred).body
    }

    /// [`SlackStandIn::wait_call`], returning the whole call (with the answer's `ts`).
    fn wait_posted(&self, what: &str, method: &str, pred: impl Fn(&Value) -> bool) -> Call {
        wait_for(what, || {
            self.calls()
                .into_iter()
                .find(|c| c.method == method && pred(&c.body))
        })
    }

    /// Waits for the answer posted to response URL `n`.
    fn wait_response(&self, n: &str) -> Value {
        wait_for(&format!("the answer on response URL {n}"), || {
            self.calls()
                .into_iter()
                .find(|c| c.method == "respond" && c.respond_to.as_deref() == Some(n))
                .map(|c| c.body)
        })
    }
}

fn serve(conn: TcpStream, calls: &Mutex<Vec<Call>>, users: &BTreeMap<String, String>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (_verb, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let body: Value = if body.is_empty() {
        let q: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        json!(q)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let authorization = headers.get("authorization").cloned().unwrap_or_default();
    let (method, respond_to) = match path.strip_prefix("/respond/") {
        Some(n) => ("respond".to_string(), Some(n.to_string())),
        None => (path.trim_start_matches("/api/").to_string(), None),
    };
    let answer = if method == "respond" {
        json!({"ok": true})
    } else if authorization != format!("Bearer {BOT_TOKEN}") {
        json!({"ok": false, "error": "invalid_auth"})
    } else {
        match method.as_str() {
            "users.info" => match users.get(body["user"].as_str().unwrap_or_default()) {
                Some(email) => json!({"ok": true, "user": {
                    "id": body["user"], "deleted": false, "is_bot": false,
                    "is_email_confirmed": true, "profile": {"email": email},
                }}),
                None => json!({"ok": false, "error": "user_not_found"}),
            },
            "chat.postMessage" => {
                let n = POSTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                json!({"ok": true, "channel": OPS_CHANNEL_ID, "ts": format!("1700000000.{n:06}")})
            }
            "chat.update" => json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
            "views.open" => json!({"ok": true, "view": {"id": "V0001"}}),
            _ => json!({"ok": false, "error": "unknown_method"}),
        }
    };
    calls.lock().unwrap().push(Call {
        method,
        respond_to,
        authorization,
        body,
        answer: answer.clone(),
    });
    let text = answer.to_string();
    let mut conn = reader.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Percent-encoding of a form value (`application/x-www-form-urlencoded`).
fn form_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", form_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Slack's signature of `body` at `timestamp`, as its docs compute it.
fn slack_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs `body` to the server as Slack would; `(status, body)`.
fn post_signed(port: u16, path: &str, body: &str, timestamp: i64, secret: &str) -> (u16, String) {
    let ts = timestamp.to_string();
    let sig = slack_signature(secret, &ts, body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The slash command `/runops TEXT` typed by Slack user `user`, answered on response
/// URL `n`.
fn slash(server: &Server, slack: &SlackStandIn, user: &str, text: &str, n: &str) -> (u16, String) {
    let body = form(&[
        ("token", "deprecated-verification-token"),
        ("team_id", "T0001"),
        ("team_domain", "example"),
        ("channel_id", OPS_CHANNEL_ID),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", user),
        ("command", "/runops"),
        ("text", text),
        ("api_app_id", "A0001"),
        ("response_url", &slack.response_url(n)),
        ("trigger_id", "13345224609.738474920.8088930838d88f008e0"),
    ]);
    post_signed(
        server.port,
        "/slack/commands",
        &body,
        unix_now(),
        SIGNING_SECRET,
    )
}

/// `/runops TEXT`, expecting the immediate 200; returns the answer's text.
fn command_answer(
    server: &Server,
    slack: &SlackStandIn,
    user: &str,
    text: &str,
    n: &str,
) -> String {
    let (status, body) = slash(server, slack, user, text, n);
    assert_eq!(status, 200, "/runops {text}: {body}");
    let answer = slack.wait_response(n);
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    answer["text"].as_str().unwrap_or_default().to_string()
}

/// An interaction (`block_actions`, `view_submission`) as Slack posts it.
fn interact(server: &Server, payload: &Value) -> (u16, String) {
    let body = form(&[("payload", &payload.to_string())]);
    post_signed(
        server.port,
        "/slack/interactivity",
        &body,
        unix_now(),
        SIGNING_SECRET,
    )
}

/// A click on the button `action_id` of the message `message` (a posted body plus
/// the ts the stand-in gave it), by Slack user `user`, answered on response URL `n`.
fn click(
    server: &Server,
    slack: &SlackStandIn,
    user: &str,
    message_ts: &str,
    button: &Value,
    n: &str,
) -> (u16, String) {
    interact(
        server,
        &json!({
            "type": "block_actions",
            "user": {"id": user, "username": user, "team_id": "T0001"},
            "api_app_id": "A0001",
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": OPS_CHANNEL_ID, "is_ephemeral": false},
            "trigger_id": format!("trigger-{n}"),
            "team": {"id": "T0001", "domain": "example"},
            "channel": {"id": OPS_CHANNEL_ID, "name": "ops"},
            "message": {"type": "message", "ts": message_ts, "text": "…"},
            "response_url": slack.response_url(n),
            "actions": [{
                "type": "button",
                "block_id": "runops_review",
                "action_id": button["action_id"],
                "text": button["text"],
                "value": button["value"],
                "action_ts": "1700000001.000001",
            }],
        }),
    )
}

/// The button `action_id` of a posted message.
fn button(message: &Value, action_id: &str) -> Value {
    message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action_id)
        .unwrap_or_else(|| panic!("no {action_id} button in {message}"))
}

/// Asserts Block Kit's shape of a message (Slack refuses others): a fallback `text`,
/// blocks of known types, mrkdwn sections, buttons with text, action_id and value.
fn assert_block_kit(m: &Value) {
    assert!(m["text"].as_str().is_some_and(|t| !t.is_empty()), "{m}");
    let blocks = m["blocks"].as_array().expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= 50, "{m}");
    for b in blocks {
        match b["type"].as_str().unwrap_or_default() {
            "section" => {
                assert_eq!(b["text"]["type"], "mrkdwn", "{b}");
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 3000);
            }
            "context" => assert!(b["elements"].as_array().is_some_and(|e| !e.is_empty())),
            "actions" => {
                for e in b["elements"].as_array().unwrap() {
                    assert_eq!(e["type"], "button", "{e}");
                    assert_eq!(e["text"]["type"], "plain_text", "{e}");
                    assert!(e["action_id"].as_str().is_some_and(|a| a.len() <= 255));
                    assert!(e["value"].as_str().is_some_and(|v| v.len() <= 2000));
                }
            }
            other => panic!("unexpected block type {other} in {m}"),
        }
    }
}

fn task_id_in(text: &str) -> i64 {
    text.split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no task id in {text:?}"))
}

fn slack_server(sb: &Sandbox, slack: &SlackStandIn) -> Server {
    Server::start_with(sb, 10, |c| {
        c.env("RUNOPS_SLACK_SIGNING_SECRET", SIGNING_SECRET)
            .env("RUNOPS_SLACK_BOT_TOKEN", BOT_TOKEN)
            .args(["--slack-api-url", &slack.api_url()]);
    })
}

fn untagged_agent(sb: &Sandbox, server: &Server, env: &[(&str, &str)]) -> Agent {
    let token = server.create_agent_token();
    let agent = Agent::start(sb, "a", &token, None, env);
    wait_for("the agent to connect", || {
        (server
            .cli_ok(&["agents", "list", "--json"])
            .contains("\"hostname\""))
        .then_some(())
    });
    agent
}

fn task_count(server: &Server) -> usize {
    let out = server.cli_ok(&["tasks", "list", "--json"]);
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn a_signed_slash_command_runs_a_task_and_posts_its_end_to_the_channel() {
    let sb = Sandbox::new();
    let slack =
        SlackStandIn::start(&[("UANA", "ana@example.com"), ("UGHOST", "ghost@example.com")]);
    let server = slack_server(&sb, &slack);
    server.create_user("ana", "dev");
    let _agent = untagged_agent(&sb, &server, &[]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "local",
        "--type",
        "bash",
        "--channel",
        "#ops",
    ]);

    let text = command_answer(
        &server,
        &slack,
        "UANA",
        "tasks create -t local -s 'echo hello from slack; echo mail bob@example.com' -m \"from chat\"",
        "1",
    );
    assert!(
        text.contains("created on `local`") && text.contains("posted in #ops"),
        "{text}"
    );
    let id = task_id_in(&text);
    let task = server.wait_final(id);
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(
        task["user"], "ana@example.com",
        "the Slack user acts as their runops user"
    );
    assert_eq!(task["message"], "from chat");

    let finished = slack.wait_call("the finished message", "chat.postMessage", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Task {id} on `local` succeeded (exit code 0)")))
    });
    assert_block_kit(&finished);
    assert_eq!(finished["channel"], "#ops");
    let all = finished.to_string();
    assert!(
        all.contains("hello from slack"),
        "the first output lines: {all}"
    );
    assert!(
        all.contains("[EMAIL_ADDRESS]") && !all.contains("bob@example.com"),
        "the output is shown redacted: {all}"
    );
    assert!(
        all.contains(&format!("{}/tasks/{id}", server.url())),
        "a link to the web app: {all}"
    );
    for c in slack.calls().iter().filter(|c| c.method != "respond") {
        assert_eq!(c.authorization, format!("Bearer {BOT_TOKEN}"), "{c:?}");
    }

    let shown = command_answer(&server, &slack, "UANA", &format!("tasks show {id}"), "2");
    assert!(
        shown.contains(&format!("Task {id} on `local` is *success*")),
        "{shown}"
    );
    let templates = command_answer(&server, &slack, "UANA", "templates list", "3");
    assert!(
        templates.contains("templates are not configured on this server"),
        "{templates}"
    );
    let bad = command_answer(&server, &slack, "UANA", "tasks create -t local", "4");
    assert!(
        bad.contains("needs a script") && bad.contains("/runops tasks create"),
        "{bad}"
    );
    let missing = command_answer(
        &server,
        &slack,
        "UANA",
        "tasks create -t nope -s 'echo'",
        "5",
    );
    assert!(missing.contains("nope"), "{missing}");

    // A Slack user without a runops account is told how to get one, and nothing runs.
    let before = task_count(&server);
    let ghost = command_answer(
        &server,
        &slack,
        "UGHOST",
        "tasks create -t local -s 'echo hi'",
        "6",
    );
    assert!(
        ghost.contains("ghost@example.com") && ghost.contains("not a runops user"),
        "{ghost}"
    );
    assert!(ghost.contains("runops users create"), "{ghost}");
    let ghost_show = command_answer(&server, &slack, "UGHOST", &format!("tasks show {id}"), "7");
    assert!(ghost_show.contains("not a runops user"), "{ghost_show}");
    assert_eq!(task_count(&server), before);

    // Requests not signed with the app's secret, or replayed late, are refused before
    // anything happens.
    let calls_before = slack.calls().len();
    let body = form(&[
        ("user_id", "UANA"),
        ("text", "tasks create -t local -s 'echo x'"),
        ("response_url", &slack.response_url("8")),
    ]);
    let (status, answer) = post_signed(
        server.port,
        "/slack/commands",
        &body,
        unix_now(),
        "not-the-secret",
    );
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("not a request from Slack"), "{answer}");
    let (status, answer) = post_signed(
        server.port,
        "/slack/commands",
        &body,
        unix_now() - 600,
        SIGNING_SECRET,
    );
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("signed 600 s away"), "{answer}");
    let (status, _) = post_signed(
        server.port,
        "/slack/interactivity",
        "payload=%7B%7D",
        unix_now(),
        "not-the-secret",
    );
    assert_eq!(status, 401);
    // The command after them (signed) proves the refused ones were not queued.
    let later = command_answer(&server, &slack, "UANA", "help", "9");
    assert!(later.contains("/runops tasks create"), "{later}");
    assert_eq!(
        task_count(&server),
        before,
        "no task from a refused request"
    );
    assert!(
        slack.calls()[calls_before..]
            .iter()
            .all(|c| c.respond_to.as_deref() == Some("9")),
        "the refused requests called nothing: {:?}",
        &slack.calls()[calls_before..]
    );
}

#[test]
fn reviews_from_slack_approve_in_place_run_and_reject_with_a_reason() {
    let sb = Sandbox::new();
    let slack = SlackStandIn::start(&[("UANA", "ana@example.com"), ("UBOB", "bob@example.com")]);
    let server = slack_server(&sb, &slack);
    server.create_user("ana", "dev");
    server.create_user("bob", "dba");
    let _agent = untagged_agent(&sb, &server, &[]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "prod",
        "--type",
        "bash",
        "--review",
        "anyone",
        "--channel",
        "#ops",
    ]);

    let text = command_answer(
        &server,
        &slack,
        "UANA",
        "tasks create -t prod -s 'echo approved in slack'",
        "1",
    );
    assert!(text.contains("waits for review"), "{text}");
    let id = task_id_in(&text);
    assert_eq!(server.task(id)["status"], "pending-review");
    let posted = slack.wait_posted("the review request", "chat.postMessage", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Review requested: task {id} on `prod`")))
    });
    let (request, ts) = (
        posted.body,
        posted.answer["ts"].as_str().unwrap().to_string(),
    );
    assert_block_kit(&request);
    assert!(
        request.to_string().contains("echo approved in slack"),
        "the script preview"
    );
    let approve = button(&request, "runops_approve");
    assert!(
        approve["value"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}:")),
        "binds the reviewed version"
    );
    button(&request, "runops_reject");

    // Its creator cannot approve it; the refusal goes to them only.
    let (status, _) = click(&server, &slack, "UANA", &ts, &approve, "2");
    assert_eq!(status, 200);
    let own = slack.wait_response("2");
    assert_eq!(own["response_type"], "ephemeral");
    assert!(
        own["text"]
            .as_str()
            .unwrap()
            .contains("the creator of a task cannot review it"),
        "{own}"
    );
    assert_eq!(server.task(id)["status"], "pending-review");

    // Another user approves: the request is updated in place, with a Run button.
    let (status, _) = click(&server, &slack, "UBOB", &ts, &approve, "3");
    assert_eq!(status, 200);
    let updated = slack.wait_call("the request updated as approved", "chat.update", |b| {
        b["text"].as_str().is_some_and(|t| {
            t.contains(&format!("Task {id} on `prod` approved by bob@example.com"))
        })
    });
    assert_block_kit(&updated);
    assert_eq!(updated["channel"], OPS_CHANNEL_ID);
    assert_eq!(updated["ts"], ts.as_str());
    assert!(
        !updated.to_string().contains("runops_approve"),
        "the buttons are gone"
    );
    assert_eq!(server.task(id)["status"], "approved");
    let audit = server.cli_ok(&["audit", "list", "--json"]);
    assert!(
        audit.contains("task.approve") && audit.contains("bob@example.com"),
        "audited as any approval"
    );

    // Only the creator runs it.
    let run = button(&updated, "runops_run");
    click(&server, &slack, "UBOB", &ts, &run, "4");
    let not_yours = slack.wait_response("4");
    assert!(
        not_yours["text"]
            .as_str()
            .unwrap()
            .contains("only its creator runs it"),
        "{not_yours}"
    );
    click(&server, &slack, "UANA", &ts, &run, "5");
    assert!(
        slack.wait_response("5")["text"]
            .as_str()
            .unwrap()
            .contains("runs now")
    );
    assert_eq!(server.wait_final(id)["status"], "success");
    slack.wait_call("the finished message", "chat.postMessage", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Task {id} on `prod` succeeded")))
    });

    // Reject: the button opens a dialog; its submission rejects with the reason.
    let text = command_answer(
        &server,
        &slack,
        "UANA",
        "tasks create -t prod -s 'rm -rf /tmp/x'",
        "6",
    );
    let id2 = task_id_in(&text);
    let posted2 = slack.wait_posted("the second review request", "chat.postMessage", |b| {
        b["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Review requested: task {id2}")))
    });
    let (request2, ts2) = (
        posted2.body,
        posted2.answer["ts"].as_str().unwrap().to_string(),
    );
    click(
        &server,
        &slack,
        "UBOB",
        &ts2,
        &button(&request2, "runops_reject"),
        "7",
    );
    let opened = slack.wait_call("the reject dialog", "views.open", |_| true);
    assert_eq!(opened["trigger_id"], "trigger-7");
    let view = &opened["view"];
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], "runops_reject");
    assert_eq!(view["blocks"][0]["type"], "input");
    assert_eq!(view["blocks"][0]["element"]["type"], "plain_text_input");
    assert_eq!(
        server.task(id2)["status"],
        "pending-review",
        "opening the dialog decides nothing"
    );
    let submit = |reason: &str| {
        interact(
            &server,
            &json!({
                "type": "view_submission",
                "team": {"id": "T0001", "domain": "example"},
                "user": {"id": "UBOB", "username": "bob", "team_id": "T0001"},
                "api_app_id": "A0001",
                "trigger_id": "trigger-submit",
                "view": {
                    "id": "V0001",
                    "type": "modal",
                    "callback_id": view["callback_id"],
                    "private_metadata": view["private_metadata"],
                    "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
                },
            }),
        )
    };
    // A blank reason is refused in the dialog itself.
    let (status, body) = submit("   ");
    assert_eq!(status, 200);
    let errors: Value = serde_json::from_str(&body).expect("a response_action");
    assert_eq!(errors["response_action"], "errors");
    assert!(
        errors["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("needs a reason"),
        "{errors}"
    );
    let (status, body) = submit("not on a Friday");
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "an empty answer closes the dialog"
    );
    assert_eq!(server.task(id2)["status"], "rejected");
    let rejected = slack.wait_call("the request updated as rejected", "chat.update", |b| {
        b["text"].as_str().is_some_and(|t| {
            t.contains(&format!(
                "Task {id2} on `prod` rejected by bob@example.com: not on a Friday"
            ))
        })
    });
    assert_block_kit(&rejected);
    assert_eq!(rejected["ts"], ts2.as_str());
}

#[test]
fn a_target_whose_agent_enforces_jwk_url_refuses_slack_tasks() {
    let sb = Sandbox::new();
    let key = TestKey::rsa("idp");
    let jwks = JwksServer::start(&[&key]);
    let slack = SlackStandIn::start(&[("UANA", "ana@example.com")]);
    let server = slack_server(&sb, &slack);
    server.create_user("ana", "dev");
    let _agent = untagged_agent(&sb, &server, &[("JWK_URL", &jwks.url)]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "guarded",
        "--type",
        "bash",
        "--channel",
        "#ops",
    ]);
    let before = task_count(&server);
    let text = command_answer(
        &server,
        &slack,
        "UANA",
        "tasks create -t guarded -s 'echo hi'",
        "1",
    );
    assert!(
        text.contains("Slack Tasks / REPL are disabled when this option is set"),
        "{text}"
    );
    assert!(
        text.contains("`guarded`") && text.contains("JWK_URL"),
        "{text}"
    );
    assert_eq!(task_count(&server), before, "nothing was created");
}

/// A `templates/` git repository (a bare one read through `file://`) holding `greet`.
fn templates_repo(sb: &Sandbox) -> String {
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    let (bare, work) = (sb.path("origin.git"), sb.path("work"));
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::create_dir_all(work.join("templates")).unwrap();
    git(&bare, &["init", "--quiet", "--bare"]);
    git(&work, &["init", "--quiet"]);
    std::fs::write(
        work.join("templates/greet.sh"),
        "# ---\n# description: Greets someone\n# targets: local\n# param who:\n#   type: text\n\
         #   required: true\n# ---\necho \"hello {{who}}\"\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "--quiet", "-m", "greet"]);
    git(
        &work,
        &[
            "push",
            "--quiet",
            &bare.display().to_string(),
            "HEAD:refs/heads/main",
        ],
    );
    format!("file://{}", bare.display())
}

#[test]
fn templates_are_listed_and_run_from_slack_with_checked_parameters() {
    let sb = Sandbox::new();
    let slack = SlackStandIn::start(&[("UANA", "ana@example.com")]);
    let repo = templates_repo(&sb);
    let server = Server::start_with(&sb, 10, |c| {
        c.env("RUNOPS_SLACK_SIGNING_SECRET", SIGNING_SECRET)
            .env("RUNOPS_SLACK_BOT_TOKEN", BOT_TOKEN)
            .args(["--slack-api-url", &slack.api_url()])
            .args(["--templates-repo", &repo, "--templates-branch", "main"]);
    });
    server.create_user("ana", "dev");
    let _agent = untagged_agent(&sb, &server, &[]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "local",
        "--type",
        "bash",
        "--channel",
        "#ops",
    ]);

    let listed = wait_for("the template in /runops templates list", || {
        let n = format!(
            "l{}",
            POSTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let text = command_answer(&server, &slack, "UANA", "templates list", &n);
        text.contains("`greet` Greets someone").then_some(text)
    });
    assert!(listed.contains("-p who=text"), "{listed}");

    let refused = command_answer(
        &server,
        &slack,
        "UANA",
        "templates run greet -t local -p 'who=a;rm -rf /'",
        "r1",
    );
    assert!(refused.contains("who"), "the parameter is named: {refused}");
    assert_eq!(task_count(&server), 0, "a refused value makes no task");

    let text = command_answer(
        &server,
        &slack,
        "UANA",
        "templates run greet -t local -p who=alice",
        "r2",
    );
    assert!(text.contains("created on `local`"), "{text}");
    let id = task_id_in(&text);
    let task = server.wait_final(id);
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(task["user"], "ana@example.com");
    assert_eq!(task["template"]["name"], "greet", "{task}");
    assert_eq!(task["template"]["params"]["who"], "alice", "{task}");
    slack.wait_call("the finished message", "chat.postMessage", |b| {
        b.to_string().contains("hello alice")
    });
}
