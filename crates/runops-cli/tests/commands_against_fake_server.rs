//! Runs real CLI commands (`runops_cli::run_code`) against a small fake API server on
//! 127.0.0.1: what they send, the exit codes they return, the config file they write.
//! The real server is exercised by the binary's end-to-end tests.
//!
//! One test function, because the commands read the process environment
//! (`RUNOPS_CONFIG`, `RUNOPS_URL`, `RUNOPS_TOKEN`), which tests must not share.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

#[derive(Parser, Debug)]
#[command(name = "runops")]
struct Root {
    #[command(subcommand)]
    cmd: runops_cli::Command,
}

/// A request the fake server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: String,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

const GOOD_TOKEN: &str = "rou_good";
const ENV_TOKEN: &str = "rou_env";
const LOG: &str = "hello\n";

fn task(status: &str, exit_code: Option<i32>, reason: Option<&str>) -> Value {
    json!({
        "id": 1, "target": "demo", "type": "bash", "script": "exit 3", "message": null,
        "status": status, "exit_code": exit_code, "failure_reason": reason,
        "failure_message": reason.map(|_| "exit status 3"), "user": "ana@example.com",
        "agent": "host", "redacted": true, "log_size": 6, "log_location": "server",
        "task_logs": "/v1/tasks/1/logs", "created_at": "2026-01-01T00:00:00Z",
        "started_at": null, "finished_at": null, "elapsed_ms": null
    })
}

fn error(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"code": code, "error": msg}))).into_response()
}

async fn fake_api(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        token: token.clone(),
        body: body_json.clone(),
    });
    if token != GOOD_TOKEN && token != ENV_TOKEN {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API token",
        );
    }
    let ok = |v: Value| axum::Json(v).into_response();
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/me") => ok(json!({
            "id": 1, "name": "Ana", "email": "ana@example.com", "groups": [],
            "role": "admin", "org": "default", "created_at": "2026-01-01T00:00:00Z"
        })),
        ("GET", "/v1/targets") => ok(json!([])),
        ("POST", "/v1/targets") => {
            if body_json["name"] == "bad" {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({
                        "code": "bad_request",
                        "error": "secret_mapping is not valid JSON: expected `:` at line 1 column 6",
                        "hint": "pass a JSON object such as '{\"MYSQL_HOST\": \"MYSQL_HOSTNAME\"}'"
                    })),
                )
                    .into_response();
            }
            (
                StatusCode::CREATED,
                axum::Json(json!({
                    "name": body_json["name"], "type": body_json["type"], "description": null,
                    "tags": null, "secret_provider": "aws", "secret_path": "p",
                    "secret_mapping": {"MYSQL_HOST": "MYSQL_HOSTNAME"}, "runner_provider": null,
                    "redact": "all", "review": "none", "reviewers": [], "custom_command": null,
                    "timeout": 3600, "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z"
                })),
            )
                .into_response()
        }
        ("POST", "/v1/tasks") => {
            (StatusCode::CREATED, axum::Json(task("ready", None, None))).into_response()
        }
        ("GET", "/v1/tasks/1") => ok(task("failure", Some(3), Some("exit-code"))),
        ("GET", "/v1/tasks/1/logs") => {
            let offset: usize = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("offset=")))
                .and_then(|o| o.parse().ok())
                .unwrap_or(0);
            LOG.get(offset..).unwrap_or("").to_string().into_response()
        }
        ("POST", "/v1/tasks/1/kill") => (
            StatusCode::ACCEPTED,
            axum::Json(task("running", None, None)),
        )
            .into_response(),
        ("POST", "/v1/agent-tokens") => (
            StatusCode::CREATED,
            axum::Json(json!({"id": 5, "token": "roa_x.y"})),
        )
            .into_response(),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
    }
}

async fn run(args: &[&str]) -> u8 {
    let mut full = vec!["runops"];
    full.extend_from_slice(args);
    let root = Root::try_parse_from(full).expect("command line parses");
    runops_cli::run_code(root.cmd).await
}

fn last(log: &Log, method: &str, path: &str) -> Seen {
    log.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s.method == method && s.path == path)
        .cloned()
        .unwrap_or_else(|| panic!("no {method} {path} received"))
}

#[test]
fn commands_talk_to_the_server_and_exit_with_the_right_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cfg").join("config.json");
    // SAFETY: the only test in this binary; no other thread exists yet.
    unsafe {
        std::env::set_var("RUNOPS_CONFIG", &config);
        std::env::remove_var("RUNOPS_URL");
        std::env::remove_var("RUNOPS_TOKEN");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log: Log = Arc::default();
        let app = axum::Router::new()
            .fallback(fake_api)
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        // Not logged in yet.
        assert_eq!(run(&["targets", "list"]).await, 1);

        // A rejected token is not saved.
        assert_eq!(
            run(&["login", "--url", &url, "--token", "rou_wrong"]).await,
            1
        );
        assert!(!config.exists());

        // A good token is checked with /v1/me and saved 0600.
        assert_eq!(
            run(&["login", "--url", &url, "--token", GOOD_TOKEN]).await,
            0
        );
        assert_eq!(last(&log, "GET", "/v1/me").token, GOOD_TOKEN);
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        assert_eq!(saved["current_context"], "default");
        assert_eq!(saved["contexts"]["default"]["url"], url.as_str());
        assert_eq!(saved["contexts"]["default"]["token"], GOOD_TOKEN);

        // An agent token is refused before any request.
        assert_eq!(
            run(&["login", "--url", &url, "--token", "roa_abc.def"]).await,
            1
        );

        // The docs' target line: the mapping travels as the user's text.
        let code = run(&[
            "targets",
            "create",
            "--name",
            "demo-db",
            "--type",
            "mysql",
            "--secret_provider",
            "aws",
            "--runner_provider",
            "runops",
            "--secret_path",
            "mysql-target-prod",
            "--secret_mapping",
            r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#,
        ])
        .await;
        assert_eq!(code, 0);
        let sent = last(&log, "POST", "/v1/targets");
        assert_eq!(sent.token, GOOD_TOKEN);
        assert_eq!(
            sent.body["secret_mapping"],
            r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#
        );
        assert_eq!(sent.body["runner_provider"], "runops");
        assert!(sent.body.get("tags").is_none());

        // A server error exits 1.
        assert_eq!(
            run(&[
                "targets",
                "create",
                "--name",
                "bad",
                "--type",
                "mysql",
                "--secret_mapping",
                "{x}"
            ])
            .await,
            1
        );

        // Waiting for a task ends with the task's exit code.
        assert_eq!(
            run(&["tasks", "create", "-t", "demo", "-s", "exit 3"]).await,
            3
        );
        let created = last(&log, "POST", "/v1/tasks");
        assert_eq!(created.body, json!({"target": "demo", "script": "exit 3"}));
        assert_eq!(
            run(&["tasks", "create", "-t", "demo", "-s", "exit 3", "--json"]).await,
            3
        );

        // --no-wait returns at once.
        let before = log.lock().unwrap().len();
        assert_eq!(
            run(&[
                "tasks",
                "create",
                "-t",
                "demo",
                "-s",
                "x",
                "--no-wait",
                "--message",
                "why"
            ])
            .await,
            0
        );
        let seen: Vec<Seen> = log.lock().unwrap()[before..].to_vec();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].body["message"], "why");

        assert_eq!(run(&["tasks", "logs", "1"]).await, 0);
        assert_eq!(run(&["tasks", "kill", "1"]).await, 0);
        assert_eq!(run(&["tasks", "show", "2"]).await, 1);
        assert_eq!(run(&["agents", "create-token", "--name", "k8s"]).await, 0);
        assert_eq!(
            last(&log, "POST", "/v1/agent-tokens").body,
            json!({"name": "k8s"})
        );

        // RUNOPS_TOKEN overrides the saved token.
        // SAFETY: single-threaded runtime; no other thread reads the environment now.
        unsafe { std::env::set_var("RUNOPS_TOKEN", ENV_TOKEN) };
        assert_eq!(run(&["targets", "list", "--json"]).await, 0);
        assert_eq!(last(&log, "GET", "/v1/targets").token, ENV_TOKEN);

        server.abort();
    });
}
