//! Disk and identities over real HTTP: log quotas (server-wide and per org), log
//! retention with an audited purge, case-insensitive e-mails, and errors that never
//! echo a long client value.

use runops_client::{Client, ClientError};
use runops_proto::TaskStatus;
use runops_proto::agent::{ConnectRequest, FinishRequest, PollRequest};
use runops_proto::api::{AuditQuery, TargetCreate, TaskCreate, UserCreate};
use runops_server::error::MAX_ECHO_CHARS;
use runops_server::{Server, ServerArgs};
use std::path::Path;
use std::time::Duration;

const ADMIN: &str = "rou_disk-test-admin-token";
const DAY_MS: i64 = 24 * 3600 * 1000;

async fn start(dir: &Path, tune: impl FnOnce(&mut ServerArgs)) -> (Server, Client) {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    tune(&mut args);
    let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    (server, admin)
}

/// A simulated agent session on the untagged target `demo`.
async fn agent(server: &Server, admin: &Client) -> (Client, String) {
    admin
        .create_target(&TargetCreate {
            name: "demo".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = admin.create_agent_token(None, None).await.unwrap();
    let agent = Client::new(&server.url(), &t.token).unwrap();
    let s = agent
        .agent_connect(&ConnectRequest {
            tags: None,
            hostname: "h".into(),
            version: "test".into(),
            instance_id: "i".into(),
            concurrency: 1,
            standby: false,
            restarted: false,
            spooled: Vec::new(),
            verifies_identity: false,
        })
        .await
        .unwrap()
        .session_id;
    (agent, s)
}

/// Runs one task whose output is `log`; returns its id and the acknowledged size.
async fn run(admin: &Client, agent: &Client, s: &str, log: &[u8]) -> (i64, u64) {
    let id = admin
        .create_task(&TaskCreate {
            target: "demo".into(),
            script: "true".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let req = PollRequest {
        session_id: s.into(),
        running: vec![],
        free_slots: 1,
    };
    let offers = tokio::time::timeout(
        Duration::from_secs(15),
        agent.agent_poll(&req, Duration::from_secs(30)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(offers.offers.len(), 1);
    agent.agent_start(id, s).await.unwrap();
    let ack = agent
        .agent_upload_log(id, s, 0, log.to_vec())
        .await
        .unwrap();
    agent
        .agent_finish(
            id,
            &FinishRequest {
                session_id: s.into(),
                result: runops_proto::agent::TaskResult {
                    status: TaskStatus::Success,
                    exit_code: Some(0),
                    failure_reason: None,
                    failure_message: None,
                    redacted: true,
                    log_size: log.len() as u64,
                    log_location: None,
                    elapsed_ms: 1,
                },
                log_tail: None,
            },
        )
        .await
        .unwrap();
    (id, ack.stored)
}

async fn log_of(admin: &Client, id: i64) -> String {
    String::from_utf8(admin.task_logs(id, 0).await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn the_org_quota_keeps_no_more_log_but_acknowledges_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), |a| a.org_log_quota_bytes = 30).await;
    let (agent, s) = agent(&server, &admin).await;
    let (first, ack) = run(&admin, &agent, &s, b"aaaaaaaaaaaaaaaaaaaa").await;
    assert_eq!(ack, 20);
    assert_eq!(log_of(&admin, first).await, "aaaaaaaaaaaaaaaaaaaa");
    let (second, ack) = run(&admin, &agent, &s, b"0123456789bbbbbbbbbb").await;
    assert_eq!(ack, 20, "bytes beyond the quota are still acknowledged");
    let log = log_of(&admin, second).await;
    assert!(
        log.starts_with(
            "0123456789\n[runops: log truncated: this organisation's log quota of 30 bytes"
        ),
        "{log}"
    );
    assert!(
        log.contains("RUNOPS_ORG_LOG_QUOTA_BYTES") && !log.contains("bbb"),
        "{log}"
    );
    assert_eq!(
        admin.get_task(second).await.unwrap().status,
        TaskStatus::Success,
        "a quota never fails the task"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_quota_counts_every_org_and_retention_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), |a| a.log_quota_bytes = 25).await;
    let (agent, s) = agent(&server, &admin).await;
    let (old, _) = run(&admin, &agent, &s, b"old-output-0123456789").await;
    assert_eq!(log_of(&admin, old).await, "old-output-0123456789");
    let (full, _) = run(&admin, &agent, &s, b"0123456789").await;
    let log = log_of(&admin, full).await;
    assert!(
        log.starts_with("0123\n[runops: log truncated: the server's log quota of 25 bytes"),
        "{log}"
    );

    // Retention: nothing is old enough yet.
    let now = runops_server::now_ms();
    assert_eq!(server.purge_expired_logs(90, now).await.unwrap(), 0);
    // 91 days later both logs go, the freed space is usable again, and it is audited.
    assert_eq!(
        server
            .purge_expired_logs(90, now + 91 * DAY_MS)
            .await
            .unwrap(),
        2
    );
    let purged = log_of(&admin, old).await;
    assert!(
        purged.starts_with("[runops: log purged on ") && purged.contains("kept 90 days"),
        "{purged}"
    );
    assert_eq!(
        server
            .purge_expired_logs(90, now + 92 * DAY_MS)
            .await
            .unwrap(),
        0,
        "never twice"
    );
    let (fresh, _) = run(&admin, &agent, &s, b"fresh").await;
    assert_eq!(log_of(&admin, fresh).await, "fresh");
    let events = admin
        .list_audit(&AuditQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let purge: Vec<_> = events.iter().filter(|e| e.action == "log.purge").collect();
    assert_eq!(purge.len(), 1, "{events:#?}");
    assert_eq!(purge[0].actor_kind, "system");
    assert_eq!(purge[0].detail["tasks"], 2);
    assert_eq!(purge[0].detail["retention_days"], 90);
    server.shutdown().await;
}

#[tokio::test]
async fn e_mails_are_unique_whatever_their_case() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), |_| {}).await;
    let user = |email: &str| UserCreate {
        name: "Bob".into(),
        email: email.into(),
        groups: vec![],
        role: None,
    };
    admin.create_user(&user("bob@example.com")).await.unwrap();
    match admin
        .create_user(&user("Bob@Example.COM"))
        .await
        .unwrap_err()
    {
        ClientError::Api { status, body } => {
            assert_eq!(status, 409);
            assert!(body.error.contains("already exists"), "{}", body.error);
        }
        other => panic!("expected 409, got {other}"),
    }
    assert_eq!(admin.list_users().await.unwrap().len(), 2);
    server.shutdown().await;
}

/// The error answer to one request, as text (status, body).
async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<String>,
) -> (u16, String) {
    let mut rb = http.request(method, url).bearer_auth(ADMIN);
    if let Some(b) = body {
        rb = rb.header("content-type", "application/json").body(b);
    }
    let resp = rb.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn errors_never_echo_more_than_200_characters_of_a_client_value() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _admin) = start(dir.path(), |_| {}).await;
    let url = server.url();
    let long = "v".repeat(10 * 1024);
    let spaced = "v ".repeat(5 * 1024);
    let http = reqwest::Client::new();
    use reqwest::Method;
    let cases: Vec<(Method, String, Option<String>)> = vec![
        (Method::GET, format!("{url}/v1/targets/{long}"), None),
        (Method::GET, format!("{url}/v1/tasks/{long}"), None),
        (Method::GET, format!("{url}/v1/tasks/{long}/logs"), None),
        (Method::GET, format!("{url}/v1/tasks?limit={long}"), None),
        (Method::GET, format!("{url}/v1/no-such-{long}"), None),
        (
            Method::POST,
            format!("{url}/v1/targets"),
            Some(serde_json::json!({"name": long, "kind": "bash"}).to_string()),
        ),
        (
            Method::POST,
            format!("{url}/v1/targets"),
            Some(serde_json::json!({"name": "ok", "kind": long}).to_string()),
        ),
        (
            Method::POST,
            format!("{url}/v1/targets"),
            Some(
                serde_json::json!({"name": "ok", "kind": "bash", "timeout_secs": long}).to_string(),
            ),
        ),
        (
            Method::POST,
            format!("{url}/v1/targets"),
            Some(
                serde_json::json!({"name": "ok", "kind": "bash", "timeout_secs": spaced})
                    .to_string(),
            ),
        ),
        (
            Method::POST,
            format!("{url}/v1/tasks"),
            Some(serde_json::json!({"target": long, "script": "true"}).to_string()),
        ),
        (
            Method::POST,
            format!("{url}/v1/users"),
            Some(serde_json::json!({"name": "n", "email": long}).to_string()),
        ),
    ];
    for (method, u, body) in cases {
        let what = format!("{method} {}", &u[..u.len().min(60)]);
        let (status, text) = raw(&http, method, u, body).await;
        assert!((400..500).contains(&status), "{what}: {status} {text}");
        let err: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(err["error"].is_string(), "{what}: {text}");
        let echoed = "v".repeat(MAX_ECHO_CHARS + 1);
        let echoed_spaced = "v ".repeat(MAX_ECHO_CHARS / 2 + 1);
        assert!(
            !text.contains(&echoed) && !text.contains(&echoed_spaced),
            "{what} echoed the value: {text}"
        );
        assert!(text.len() < 1200, "{what}: {} bytes: {text}", text.len());
    }
    server.shutdown().await;
}
