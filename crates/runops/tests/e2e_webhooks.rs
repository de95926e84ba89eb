//! End-to-end: webhooks with the real binary. A receiver on loopback (a small HTTP
//! server in this test) gets `task.finished` events signed with the secret `runops
//! webhooks create` printed; stopped while tasks run and restarted on the same port,
//! it still receives every event exactly once, in order per task.
//!
//! To assert more events (`review.requested`...), subscribe the webhook to them and
//! read them with [`Receiver::events_of`]: it returns a task's delivered events in the
//! order they arrived.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request the receiver answered 200.
#[derive(Debug, Clone)]
struct Hit {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

/// A webhook receiver on 127.0.0.1:`port` that answers 200 to every POST and keeps
/// what it got (shared across a stop and a start on the same port).
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// `port` 0 takes a free port (no race with other tests picking ports); a restart
    /// on the same port waits until the port can be bound again.
    fn start(port: u16, hits: Arc<Mutex<Vec<Hit>>>) -> Receiver {
        let listener = wait_for(&format!("port {port} to bind the receiver"), || {
            TcpListener::bind(("127.0.0.1", port)).ok()
        });
        let port = listener.local_addr().expect("receiver address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn
                    && let Some(hit) = serve_one(conn)
                {
                    hits2.lock().unwrap().push(hit);
                }
            }
        });
        Receiver {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting and closes the port: deliveries are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The `event` names delivered for `task`, in arrival order.
    fn events_of(&self, task: i64) -> Vec<String> {
        self.hits()
            .iter()
            .filter(|h| h.json()["task"]["id"] == task)
            .map(|h| h.header("x-runops-event").to_string())
            .collect()
    }

    /// Waits until `n` deliveries arrived; returns them.
    fn wait_hits(&self, n: usize) -> Vec<Hit> {
        wait_for(&format!("{n} webhook deliveries"), || {
            let hits = self.hits();
            (hits.len() >= n).then_some(hits)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one HTTP/1.1 request, answers `200` (connection closed), and returns it once
/// the answer was written (an answer that did not reach the server is no delivery).
fn serve_one(conn: TcpStream) -> Option<Hit> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut conn = conn;
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    conn.flush().ok()?;
    Some(Hit { headers, body })
}

/// `X-Runops-Signature: t=<unix>,v1=<hex>` is the HMAC-SHA256 of `<t>.<body>` under
/// `secret`, as docs/webhooks.md tells receivers to check it.
fn assert_signed(hit: &Hit, secret: &str) {
    let sig = hit.header("x-runops-signature");
    let (t, v1) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("bad X-Runops-Signature {sig:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1,
        want,
        "signature of {}",
        String::from_utf8_lossy(&hit.body)
    );
}

/// The docs' shell check (`openssl dgst -hmac`) on one delivery, when openssl exists.
fn assert_signed_per_docs_shell(hit: &Hit, secret: &str) {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not found: the shell example of docs/webhooks.md was not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, &hit.body).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            r#"t=${SIG#t=}; t=${t%%,*}; v1=${SIG#*v1=}
expected=$( { printf '%s.' "$t"; cat "$BODY"; } | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.*= //')
[ "$expected" = "$v1" ] && echo valid"#,
        )
        .env("SIG", hit.header("x-runops-signature"))
        .env("BODY", &body)
        .env("SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "valid", "{}", stderr(&out));
}

fn deliveries(server: &Server, webhook: &str) -> Vec<Value> {
    let out = server.cli_ok(&["webhooks", "deliveries", webhook, "--json"]);
    serde_json::from_str::<Value>(&out)
        .expect("deliveries --json is JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn receiver_down_then_back_gets_every_signed_task_event_once_in_order() {
    let sb = Sandbox::new();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = Receiver::start(0, hits.clone());
    // Retries at most a second apart, so the receiver's return is noticed quickly.
    let server = Server::start_with(&sb, 30, |c| {
        c.env("RUNOPS_WEBHOOK_RETRY_MAX_SECS", "1");
    });
    let out = server.cli(&[
        "webhooks",
        "create",
        "--url",
        &receiver.url(),
        "--events",
        "task.finished",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let secret = stdout(&out).trim().to_string();
    assert!(
        secret.starts_with("whsec_"),
        "only the secret on stdout: {secret:?}"
    );
    assert!(
        stderr(&out).contains("shown only this once"),
        "{}",
        stderr(&out)
    );
    let list: Value =
        serde_json::from_str(&server.cli_ok(&["webhooks", "list", "--json"])).unwrap();
    let webhook = list[0]["id"]
        .as_i64()
        .expect("the webhook is listed")
        .to_string();
    assert!(
        !list.to_string().contains(&secret),
        "the secret is never listed"
    );

    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);

    // Up: the first task's end arrives, signed.
    let first = server.submit("sh", "echo one");
    server.wait_final(first);
    let got = receiver.wait_hits(1);
    assert_eq!(got[0].header("x-runops-event"), "task.finished");
    assert_signed(&got[0], &secret);
    assert_signed_per_docs_shell(&got[0], &secret);
    let body = got[0].json();
    assert_eq!(body["task"]["id"], first);
    assert_eq!(body["task"]["status"], "success");
    assert_eq!(body["task"]["exit_code"], 0);
    assert_eq!(body["task"]["creator"], "admin@localhost");
    assert_eq!(body["task"]["target"], "sh");

    // Down: three more tasks end while nothing listens.
    receiver.stop();
    let scripts = ["echo two", "exit 3", "echo four"];
    let ids: Vec<i64> = scripts.iter().map(|s| server.submit("sh", s)).collect();
    for id in &ids {
        server.wait_final(*id);
    }
    // The server tried them and keeps them pending.
    wait_for("failed attempts while the receiver is down", || {
        let d = deliveries(&server, &webhook);
        let tried = d
            .iter()
            .filter(|d| {
                d["status"] == "pending"
                    && d["attempts"].as_u64() >= Some(1)
                    && d["last_error"].as_str().is_some_and(|e| !e.is_empty())
            })
            .count();
        (tried == ids.len()).then_some(())
    });
    let table = server.cli_ok(&["webhooks", "list"]);
    assert!(table.contains("PENDING"), "{table}");

    // Back on the same port: every event arrives, once.
    let receiver2 = Receiver::start(receiver.port, hits);
    let got = receiver2.wait_hits(1 + ids.len());
    wait_for("every delivery recorded delivered", || {
        let d = deliveries(&server, &webhook);
        d.iter().all(|d| d["status"] == "delivered").then_some(())
    });
    let got_after = receiver2.hits();
    assert_eq!(
        got_after.len(),
        got.len(),
        "no delivery twice: {got_after:#?}"
    );
    let mut delivery_ids: Vec<&str> = got.iter().map(|h| h.header("x-runops-delivery")).collect();
    delivery_ids.sort();
    delivery_ids.dedup();
    assert_eq!(delivery_ids.len(), got.len(), "each delivery once");
    for (id, script) in ids.iter().zip(scripts) {
        assert_eq!(receiver2.events_of(*id), ["task.finished"], "task {id}");
        let hit = got.iter().find(|h| h.json()["task"]["id"] == *id).unwrap();
        assert_signed(hit, &secret);
        let body = hit.json();
        let (status, code) = if script == "exit 3" {
            ("failure", 3)
        } else {
            ("success", 0)
        };
        assert_eq!(body["task"]["status"], status, "{body}");
        assert_eq!(body["task"]["exit_code"], code, "{body}");
    }
    assert_eq!(receiver2.events_of(first), ["task.finished"]);

    let shown = server.cli_ok(&["webhooks", "deliveries", &webhook]);
    assert!(
        shown.lines().next().unwrap_or_default().starts_with("ID"),
        "{shown}"
    );
    assert_eq!(shown.matches("delivered").count(), 1 + ids.len(), "{shown}");
}

/// Review events (issue 13): a reviewed task's `review.requested` reaches the receiver,
/// signed; while the receiver is down, an approval, a force-approval and both runs
/// happen; back up, it gets every event once, in order per task, the forced one
/// marked as such.
#[test]
fn review_events_reach_a_receiver_that_was_down_once_each_in_order() {
    let sb = Sandbox::new();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = Receiver::start(0, hits.clone());
    let server = Server::start_with(&sb, 30, |c| {
        c.env("RUNOPS_WEBHOOK_RETRY_MAX_SECS", "1");
    });
    // Every event (no --events).
    let secret = server
        .cli_ok(&["webhooks", "create", "--url", &receiver.url()])
        .trim()
        .to_string();
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    let carol = server.create_user("carol", "");
    let dan = server.create_user("dan", "dba");
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "prod",
        "--type",
        "bash",
        "--review",
        "team",
        "--reviewers",
        "dba",
    ]);
    let submit = |script: &str| -> i64 {
        server
            .cli_ok_as(
                &carol,
                &["tasks", "create", "-t", "prod", "-s", script, "--no-wait"],
            )
            .trim()
            .parse()
            .expect("--no-wait prints the id")
    };

    let first = submit("echo reviewed");
    let got = receiver.wait_hits(1);
    assert_eq!(got[0].header("x-runops-event"), "review.requested");
    assert_signed(&got[0], &secret);
    let body = got[0].json();
    assert_eq!(body["task"]["id"], first);
    assert_eq!(body["task"]["status"], "pending-review");

    receiver.stop();
    let second = submit("echo forced");
    server.cli_ok_as(&dan, &["tasks", "approve", &first.to_string()]);
    server.cli_ok(&[
        "tasks",
        "approve",
        &second.to_string(),
        "--force",
        "--reason",
        "outage",
    ]);
    for id in [first, second] {
        let out = server.cli_ok_as(&carol, &["tasks", "run", &id.to_string()]);
        assert!(!out.is_empty(), "task {id} printed its output");
        server.wait_final(id);
    }

    let receiver2 = Receiver::start(receiver.port, hits);
    let got = receiver2.wait_hits(6);
    let want = ["review.requested", "review.approved", "task.finished"];
    assert_eq!(receiver2.events_of(first), want);
    assert_eq!(receiver2.events_of(second), want);
    for hit in &got {
        assert_signed(hit, &secret);
    }
    let mut ids: Vec<&str> = got.iter().map(|h| h.header("x-runops-delivery")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "each delivery once: {got:#?}");
    let approved = |task: i64| {
        got.iter()
            .find(|h| {
                h.json()["task"]["id"] == task && h.header("x-runops-event") == "review.approved"
            })
            .expect("review.approved")
            .json()
    };
    let forced = approved(second);
    assert_eq!(forced["detail"]["forced"], true, "{forced}");
    assert_eq!(forced["detail"]["reason"], "outage", "{forced}");
    let plain = approved(first);
    assert_eq!(plain["detail"]["forced"], false, "{plain}");
    assert_eq!(plain["detail"]["approved_by"], "dan@example.com", "{plain}");
}

#[test]
fn webhook_cli_refuses_bad_input_with_clear_errors_and_deletes() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    let out = server.cli(&["webhooks", "create", "--url", "ftp://example.com/x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("error: the webhook URL must start with http:// or https://"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&[
        "webhooks",
        "create",
        "--url",
        "https://example.com/x",
        "--events",
        "task.done",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown webhook event `task.done`"), "{err}");
    assert!(
        err.contains("hint: the events are: review.requested"),
        "{err}"
    );

    let out = server.cli_ok(&[
        "webhooks",
        "create",
        "--url",
        "https://example.com/x",
        "--format",
        "slack",
        "--json",
    ]);
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_i64().unwrap().to_string();
    assert_eq!(created["format"], "slack");
    let table = server.cli_ok(&["webhooks", "list"]);
    assert!(
        table.contains("slack") && table.contains("https://example.com/x"),
        "{table}"
    );
    assert_eq!(
        server.cli_ok(&["webhooks", "delete", &id]).trim(),
        format!("webhook {id} deleted")
    );
    let out = server.cli(&["webhooks", "delete", &id]);
    assert!(
        stderr(&out).contains(&format!("webhook {id} not found")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("hint: run `runops webhooks list`"),
        "{}",
        stderr(&out)
    );
}
