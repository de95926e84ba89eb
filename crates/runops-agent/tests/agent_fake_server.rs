//! The whole agent (`run_with`) against a small in-process fake of the server's agent
//! protocol on 127.0.0.1: offers, start, ordered log chunks, finish, cancels, transport
//! errors, session expiry, log gaps, fatal connect answers, the spool at start-up and
//! the graceful stop. The real server is tested against the agent by the binary's
//! end-to-end tests.

use axum::Json;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use runops_agent::ShutdownSignal;
use runops_agent::config::AgentConfig;
use runops_agent::logs::spool::{RESTARTED_MESSAGE, Spool, TaskResult};
use runops_agent::runners::RunnerRegistry;
use runops_agent::secrets::SecretsRegistry;
use runops_agent::secrets::env_var::EnvVarProvider;
use runops_proto::agent::*;
use runops_proto::{FailureReason, TaskStatus};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const TOKEN: &str = "roa_test.secret";
/// Every test ends well within this; a hang fails instead of blocking the suite.
const TEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Fake {
    queue: VecDeque<TaskOffer>,
    cancel: Vec<i64>,
    /// instance id → session id.
    sessions: HashMap<String, String>,
    valid: HashSet<String>,
    connects: Vec<ConnectRequest>,
    polls: Vec<PollRequest>,
    started: HashSet<i64>,
    logs: HashMap<i64, Vec<u8>>,
    finished: HashMap<i64, FinishRequest>,
    disconnected: bool,
    taken_tags: Option<String>,
    fail_uploads: u32,
    /// Acknowledge the next upload without storing it (the server "lost" it).
    lose_next_upload: bool,
    /// Take a finish's `log_tail` as the real server does (else: ignore it, as a
    /// server that predates it).
    takes_tails: bool,
    /// Finishes that carried a `log_tail`.
    tails: u32,
    /// Refuse the next `log_tail` with `409 log_gap`.
    gap_next_tail: bool,
    /// `max_log_chunk_bytes` in the connect answer (`None`: a server that predates it).
    advertise_chunk: Option<u64>,
    /// Answer uploads `503` while set.
    hold_uploads: bool,
    /// Refuse bodies bigger than this with `413`, as a proxy before the server would.
    proxy_body_limit: Option<usize>,
    /// Sizes of the uploads taken, and of those refused with `413`.
    chunk_sizes: Vec<usize>,
    too_large: Vec<usize>,
}

type Shared = Arc<Mutex<Fake>>;

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, Json(json!({"code": code, "error": msg}))).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn connect(
    State(s): State<Shared>,
    h: HeaderMap,
    Json(req): Json<ConnectRequest>,
) -> Response {
    if !authorized(&h) {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked agent token",
        );
    }
    let mut f = s.lock().unwrap();
    f.connects.push(req.clone());
    if req.tags.is_some() && req.tags == f.taken_tags {
        let msg = format!(
            "tags `{}` are held by another live agent",
            req.tags.unwrap_or_default()
        );
        return err(StatusCode::CONFLICT, "tags_taken", &msg);
    }
    let resumed = f
        .sessions
        .get(&req.instance_id)
        .is_some_and(|id| f.valid.contains(id));
    let id = if resumed {
        f.sessions[&req.instance_id].clone()
    } else {
        format!("s{}", f.connects.len())
    };
    f.sessions.insert(req.instance_id.clone(), id.clone());
    f.valid.insert(id.clone());
    Json(ConnectResponse {
        session_id: id,
        org: "test".into(),
        lease_secs: 30,
        poll_hold_secs: 1,
        resumed,
        max_log_chunk_bytes: f.advertise_chunk,
    })
    .into_response()
}

async fn poll(State(s): State<Shared>, Json(req): Json<PollRequest>) -> Response {
    for _ in 0..50 {
        {
            let mut f = s.lock().unwrap();
            if !f.valid.contains(&req.session_id) {
                return err(
                    StatusCode::GONE,
                    "session_expired",
                    "session expired; connect again",
                );
            }
            let n = (req.free_slots as usize).min(f.queue.len());
            if n > 0 || !f.cancel.is_empty() {
                f.polls.push(req.clone());
                let offers = f.queue.drain(..n).collect();
                let cancel = std::mem::take(&mut f.cancel);
                return Json(PollResponse { offers, cancel }).into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.lock().unwrap().polls.push(req);
    Json(PollResponse::default()).into_response()
}

async fn start(
    State(s): State<Shared>,
    Path(id): Path<i64>,
    Json(req): Json<StartRequest>,
) -> Response {
    let mut f = s.lock().unwrap();
    if !f.valid.contains(&req.session_id) {
        return err(StatusCode::GONE, "session_expired", "session expired");
    }
    f.started.insert(id);
    Json(StartResponse {
        task_id: id,
        status: TaskStatus::Running,
    })
    .into_response()
}

async fn logs(
    State(s): State<Shared>,
    Path(id): Path<i64>,
    Query(q): Query<LogChunkQuery>,
    body: Bytes,
) -> Response {
    let mut f = s.lock().unwrap();
    if f.fail_uploads > 0 || f.hold_uploads {
        f.fail_uploads = f.fail_uploads.saturating_sub(1);
        return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "restarting");
    }
    if f.proxy_body_limit.is_some_and(|max| body.len() > max) {
        f.too_large.push(body.len());
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "<html><body>413 Request Entity Too Large</body></html>",
        )
            .into_response();
    }
    if !f.valid.contains(&q.session_id) {
        return err(StatusCode::GONE, "session_expired", "session expired");
    }
    if !body.is_empty() {
        f.chunk_sizes.push(body.len());
    }
    if f.lose_next_upload && !body.is_empty() {
        f.lose_next_upload = false;
        return Json(LogAck {
            stored: q.offset + body.len() as u64,
        })
        .into_response();
    }
    let log = f.logs.entry(id).or_default();
    let stored = log.len() as u64;
    if q.offset > stored {
        let msg = format!(
            "log chunk at offset {} leaves a gap; stored {stored}",
            q.offset
        );
        return (
            StatusCode::CONFLICT,
            Json(json!({"code": "log_gap", "error": msg, "stored": stored})),
        )
            .into_response();
    }
    let skip = (stored - q.offset) as usize;
    if body.len() > skip {
        log.extend_from_slice(&body[skip..]);
    }
    Json(LogAck {
        stored: log.len() as u64,
    })
    .into_response()
}

async fn finish(
    State(s): State<Shared>,
    Path(id): Path<i64>,
    Json(req): Json<FinishRequest>,
) -> Response {
    let mut f = s.lock().unwrap();
    if !f.valid.contains(&req.session_id) {
        return err(StatusCode::GONE, "session_expired", "session expired");
    }
    if let Some(tail) = &req.log_tail {
        f.tails += 1;
        if f.takes_tails {
            let bytes = tail.bytes().expect("base64");
            let refuse = std::mem::take(&mut f.gap_next_tail);
            let log = f.logs.entry(id).or_default();
            let stored = log.len() as u64;
            if tail.offset > stored || refuse {
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"code": "log_gap", "error": "gap", "stored": stored})),
                )
                    .into_response();
            }
            let skip = (stored - tail.offset) as usize;
            if bytes.len() > skip {
                log.extend_from_slice(&bytes[skip..]);
            }
        }
    }
    let stored = f.logs.get(&id).map_or(0, |l| l.len() as u64);
    if req.result.log_size > stored {
        return (
            StatusCode::CONFLICT,
            Json(json!({"code": "log_incomplete", "error": "log incomplete", "stored": stored})),
        )
            .into_response();
    }
    f.finished.insert(id, req.clone());
    Json(FinishResponse {
        task_id: id,
        status: req.result.status,
    })
    .into_response()
}

async fn disconnect(State(s): State<Shared>) -> StatusCode {
    s.lock().unwrap().disconnected = true;
    StatusCode::NO_CONTENT
}

async fn fake_server() -> (Shared, String) {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/agent/connect", post(connect))
        .route("/v1/agent/poll", post(poll))
        .route("/v1/agent/tasks/{id}/start", post(start))
        .route(
            "/v1/agent/tasks/{id}/logs",
            post(logs).layer(DefaultBodyLimit::max(64 << 20)),
        )
        .route("/v1/agent/tasks/{id}/finish", post(finish))
        .route("/v1/agent/disconnect", post(disconnect))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url)
}

fn offer(task_id: i64, script: &str) -> TaskOffer {
    TaskOffer {
        task_id,
        target: "demo".into(),
        kind: "bash".into(),
        script: script.into(),
        message: None,
        secret_provider: None,
        secret_path: None,
        secret_mapping: None,
        redact: "all".into(),
        redact_keys: Vec::new(),
        public_keys: Vec::new(),
        custom_command: None,
        timeout_secs: 60,
        user_email: "ana@example.com".into(),
        user_groups: vec![],
        user_jwt: None,
        user_jwt_proof: None,
        created_at_ms: None,
        config: None,
        start_deadline_ms: 5000,
    }
}

struct Running {
    shutdown: watch::Sender<u8>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start_agent(
    url: &str,
    data_dir: &std::path::Path,
    tags: Option<&str>,
    concurrency: u32,
) -> Running {
    let cfg = AgentConfig {
        server_url: url.to_string(),
        token: TOKEN.to_string(),
        tags: tags.map(str::to_string),
        concurrency,
        data_dir: data_dir.to_path_buf(),
        standby: false,
        kill_grace: Duration::from_millis(500),
        health_addr: None,
        // Tasks write into the test's private temp dir: keep the agent's user even
        // when the machine has a `runops` user.
        identity: runops_agent::config::IdentityConfig {
            run_as_user: Some("root".into()),
            ..Default::default()
        },
        redact_info_types: None,
        redact_phone_regions: None,
    };
    let mut secrets = SecretsRegistry::default();
    secrets.register(Arc::new(EnvVarProvider::from_vars([(
        "MY_TARGET".to_string(),
        "\"MYSQL_PASS\": \"GtK23d<ejkLy0ST2\",".to_string(),
    )])));
    let (tx, signal) = ShutdownSignal::channel();
    let handle = tokio::spawn(runops_agent::run_with(
        cfg,
        RunnerRegistry::with_defaults(),
        secrets,
        signal,
    ));
    Running {
        shutdown: tx,
        handle,
    }
}

/// Waits until `cond` holds on the fake's state.
async fn until(s: &Shared, what: &str, cond: impl Fn(&Fake) -> bool) {
    let wait = async {
        while !cond(&s.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(TEST_LIMIT, wait).await.is_err() {
        panic!("timed out waiting for: {what}");
    }
}

async fn stop(agent: Running, signals: u8) -> anyhow::Result<()> {
    agent.shutdown.send_replace(signals);
    tokio::time::timeout(TEST_LIMIT, agent.handle)
        .await
        .expect("the agent stopped")
        .expect("no panic")
}

fn log_of(s: &Shared, id: i64) -> String {
    String::from_utf8_lossy(
        s.lock()
            .unwrap()
            .logs
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default(),
    )
    .into_owned()
}

#[tokio::test]
async fn agent_runs_offers_within_concurrency_streams_logs_and_reports() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("running");
    std::fs::create_dir(&marks).unwrap();
    // Each task records how many tasks run alongside it.
    let script = format!(
        "touch {m}/$RUNOPS_TASK_ID; ls {m} | wc -l > {m}/../count-$RUNOPS_TASK_ID; echo \"task $RUNOPS_TASK_ID\"; sleep 0.3; rm {m}/$RUNOPS_TASK_ID",
        m = marks.display()
    );
    {
        let mut f = s.lock().unwrap();
        for id in 1..=6 {
            f.queue.push_back(offer(id, &script));
        }
        let mut secret = offer(7, "echo \"pw=$MYSQL_PASS\"; exit 4");
        secret.secret_path = Some("MY_TARGET".into());
        f.queue.push_back(secret);
    }
    let agent = start_agent(&url, &dir.path().join("data"), Some("prod"), 2);
    until(&s, "all tasks finished", |f| f.finished.len() == 7).await;
    for id in 1..=6 {
        assert_eq!(log_of(&s, id), format!("task {id}\n"));
        let fin = &s.lock().unwrap().finished[&id];
        assert_eq!(fin.result.status, TaskStatus::Success);
        assert_eq!(fin.result.exit_code, Some(0));
        assert_eq!(fin.result.log_size, format!("task {id}\n").len() as u64);
        let count: u32 = std::fs::read_to_string(dir.path().join(format!("count-{id}")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            count <= 2,
            "task {id} ran alongside {} others with CONCURRENCY=2",
            count - 1
        );
    }
    assert_eq!(log_of(&s, 7), "pw=[REDACTED:MYSQL_PASS]\n");
    let fin = s.lock().unwrap().finished[&7].clone();
    assert_eq!(
        (
            fin.result.status,
            fin.result.failure_reason,
            fin.result.exit_code
        ),
        (TaskStatus::Failure, Some(FailureReason::ExitCode), Some(4))
    );
    {
        let f = s.lock().unwrap();
        assert!(f.polls.iter().all(|p| p.free_slots <= 2));
        assert_eq!(f.connects[0].tags.as_deref(), Some("prod"));
        assert_eq!(f.connects[0].concurrency, 2);
    }
    stop(agent, 1).await.unwrap();
    assert!(s.lock().unwrap().disconnected);
    let spool = Spool::open(&dir.path().join("data")).unwrap();
    assert!(
        spool.pending().await.unwrap().is_empty(),
        "reported tasks left in the spool"
    );
}

#[tokio::test]
async fn reports_survive_server_errors_session_expiry_and_lost_chunks() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    let script = format!(
        "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second",
        flag.display()
    );
    s.lock().unwrap().queue.push_back(offer(1, &script));
    let agent = start_agent(&url, &dir.path().join("data"), None, 5);
    until(&s, "first line uploaded", |f| {
        f.logs.get(&1).is_some_and(|l| l == b"first\n")
    })
    .await;
    {
        // The server restarts: its sessions are gone, it fails a few calls, and it
        // acknowledges one chunk it then forgets.
        let mut f = s.lock().unwrap();
        f.valid.clear();
        f.fail_uploads = 3;
        f.lose_next_upload = true;
    }
    std::fs::write(&flag, "").unwrap();
    until(&s, "task finished", |f| f.finished.contains_key(&1)).await;
    assert_eq!(log_of(&s, 1), "first\nsecond\n");
    {
        let f = s.lock().unwrap();
        assert_eq!(f.finished[&1].result.status, TaskStatus::Success);
        assert!(f.connects.len() >= 2, "the agent did not reconnect");
        assert!(
            f.connects
                .iter()
                .all(|c| c.instance_id == f.connects[0].instance_id)
        );
    }
    stop(agent, 1).await.unwrap();
}

#[tokio::test]
async fn cancel_from_the_poll_kills_the_task() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    s.lock()
        .unwrap()
        .queue
        .push_back(offer(9, "echo started; sleep 600"));
    let agent = start_agent(&url, &dir.path().join("data"), None, 5);
    until(&s, "output uploaded", |f| {
        f.logs.get(&9).is_some_and(|l| l.starts_with(b"started\n"))
    })
    .await;
    s.lock().unwrap().cancel.push(9);
    until(&s, "task finished", |f| f.finished.contains_key(&9)).await;
    let fin = s.lock().unwrap().finished[&9].clone();
    assert_eq!(fin.result.failure_reason, Some(FailureReason::Cancelled));
    assert!(
        log_of(&s, 9).contains("runops: the task was cancelled"),
        "{}",
        log_of(&s, 9)
    );
    stop(agent, 1).await.unwrap();
}

#[tokio::test]
async fn second_stop_request_cancels_running_tasks_then_the_agent_exits() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    s.lock()
        .unwrap()
        .queue
        .push_back(offer(3, "echo started; sleep 600"));
    let agent = start_agent(&url, &dir.path().join("data"), None, 5);
    until(&s, "output uploaded", |f| {
        f.logs.get(&3).is_some_and(|l| !l.is_empty())
    })
    .await;
    agent.shutdown.send_replace(1);
    // Draining: new offers are not taken while the running task goes on.
    s.lock().unwrap().queue.push_back(offer(4, "echo never"));
    until(&s, "a draining poll", |f| {
        f.polls
            .iter()
            .any(|p| p.free_slots == 0 && p.running == [3])
    })
    .await;
    assert!(!s.lock().unwrap().finished.contains_key(&3));
    stop(agent, 2).await.unwrap();
    let f = s.lock().unwrap();
    assert_eq!(
        f.finished[&3].result.failure_reason,
        Some(FailureReason::Cancelled)
    );
    assert!(!f.started.contains(&4), "an offer was taken while stopping");
    assert!(f.disconnected);
}

#[tokio::test]
async fn spool_of_a_previous_run_is_reported_at_start() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = Spool::open(&data).unwrap();
    // Task 1 finished but was not reported; task 2 was running when the agent died.
    let done = spool.task(1);
    let mut f = tokio::fs::File::from_std(done.create().await.unwrap());
    tokio::io::AsyncWriteExt::write_all(&mut f, b"ok\n")
        .await
        .unwrap();
    done.write_result(&TaskResult {
        status: TaskStatus::Success,
        exit_code: Some(0),
        failure_reason: None,
        failure_message: None,
        redacted: true,
        log_size: 3,
        elapsed_ms: 5,
        log_location: None,
    })
    .await
    .unwrap();
    let cut = spool.task(2);
    let mut f = tokio::fs::File::from_std(cut.create().await.unwrap());
    tokio::io::AsyncWriteExt::write_all(&mut f, b"half")
        .await
        .unwrap();
    let agent = start_agent(&url, &data, None, 5);
    until(&s, "both reported", |f| f.finished.len() == 2).await;
    assert_eq!(log_of(&s, 1), "ok\n");
    assert_eq!(
        log_of(&s, 2),
        format!("half\nrunops: {RESTARTED_MESSAGE}\n")
    );
    let fin = s.lock().unwrap().finished[&2].clone();
    assert_eq!(fin.result.failure_reason, Some(FailureReason::AgentError));
    assert!(
        s.lock().unwrap().started.is_empty(),
        "a spooled task was run again"
    );
    stop(agent, 1).await.unwrap();
    assert!(spool.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn taken_tags_and_rejected_token_stop_the_agent_with_a_clear_error() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    s.lock().unwrap().taken_tags = Some("prod".into());
    let agent = start_agent(&url, &dir.path().join("a"), Some("prod"), 1);
    let e = tokio::time::timeout(TEST_LIMIT, agent.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("tags `prod` are held by another live agent"),
        "{e}"
    );

    let cfg = AgentConfig {
        server_url: url.clone(),
        token: "roa_wrong.token".into(),
        tags: None,
        concurrency: 1,
        data_dir: dir.path().join("b"),
        standby: false,
        kill_grace: Duration::from_millis(100),
        health_addr: None,
        // Tasks write into the test's private temp dir: keep the agent's user even
        // when the machine has a `runops` user.
        identity: runops_agent::config::IdentityConfig {
            run_as_user: Some("root".into()),
            ..Default::default()
        },
        redact_info_types: None,
        redact_phone_regions: None,
    };
    let (_tx, signal) = ShutdownSignal::channel();
    let e = tokio::time::timeout(
        TEST_LIMIT,
        runops_agent::run_with(
            cfg,
            RunnerRegistry::with_defaults(),
            SecretsRegistry::default(),
            signal,
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "the agent token was rejected by {url}: unknown or revoked agent token"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_server_is_retried_until_stopped() {
    // A port nothing listens on: the agent warns and backs off, it does not exit.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&url, &dir.path().join("data"), None, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !agent.handle.is_finished(),
        "the agent gave up on an unreachable server"
    );
    stop(agent, 1).await.unwrap();
}

#[tokio::test]
async fn two_agents_cannot_share_a_data_dir() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    let first = start_agent(&url, &dir.path().join("data"), Some("a"), 1);
    until(&s, "the first agent connected", |f| !f.connects.is_empty()).await;
    let second = start_agent(&url, &dir.path().join("data"), Some("b"), 1);
    let e = tokio::time::timeout(TEST_LIMIT, second.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        e.to_string().contains("is in use by another running agent"),
        "{e}"
    );
    stop(first, 1).await.unwrap();
}

/// A task that just ended is reported at once, its last log bytes riding with the
/// result; when that finish is refused (a gap) the result is spooled and reported the
/// ordinary way. Either way the log arrives whole, once, and the spool is emptied.
#[tokio::test]
async fn a_small_task_reports_log_and_result_together_and_falls_back_on_a_gap() {
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut f = s.lock().unwrap();
        f.takes_tails = true;
        // Output written just before the exit: usually still unsent when it ends.
        f.queue
            .push_back(offer(1, "sleep 0.2; printf 'one\\ntwo\\n'"));
        f.queue.push_back(offer(2, "true"));
    }
    let agent = start_agent(&url, &dir.path().join("data"), None, 1);
    until(&s, "two tasks finished", |f| f.finished.len() == 2).await;
    assert_eq!(log_of(&s, 1), "one\ntwo\n");
    assert_eq!(log_of(&s, 2), "");
    assert_eq!(
        s.lock().unwrap().finished[&2].log_tail,
        None,
        "an empty tail was sent"
    );

    // The next finish with a tail is refused (the server lacks bytes before it).
    {
        let mut f = s.lock().unwrap();
        f.gap_next_tail = true;
        f.queue.push_back(offer(3, "sleep 0.2; echo three; exit 3"));
    }
    until(&s, "third task finished", |f| f.finished.contains_key(&3)).await;
    assert_eq!(log_of(&s, 3), "three\n");
    let fin = s.lock().unwrap().finished[&3].clone();
    assert_eq!(
        (fin.result.status, fin.result.exit_code),
        (TaskStatus::Failure, Some(3))
    );
    stop(agent, 1).await.unwrap();
    let spool = Spool::open(&dir.path().join("data")).unwrap();
    assert!(
        spool.pending().await.unwrap().is_empty(),
        "reported tasks left in the spool"
    );
}

/// A 6 MiB log spooled while the server answers `503`, then uploaded: in chunks of the
/// size the server advertises (1 MiB when it does not say), halved after a `413`.
async fn chunk_sizes_for(advertise: Option<u64>, proxy: Option<usize>) -> Fake {
    const BYTES: usize = 6 << 20;
    let (s, url) = fake_server().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut f = s.lock().unwrap();
        f.advertise_chunk = advertise;
        f.proxy_body_limit = proxy;
        f.hold_uploads = true;
        f.queue
            .push_back(offer(1, &format!("yes abcdefgh | head -c {BYTES}")));
    }
    let agent = start_agent(&url, &dir.path().join("data"), None, 1);
    let spooled = dir.path().join("data/spool/1/log");
    let wait = async {
        while std::fs::metadata(&spooled).map_or(0, |m| m.len()) < BYTES as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(TEST_LIMIT, wait)
        .await
        .expect("the whole log reached the spool");
    s.lock().unwrap().hold_uploads = false;
    until(&s, "the task finished", |f| f.finished.contains_key(&1)).await;
    stop(agent, 1).await.unwrap();
    assert_eq!(
        log_of(&s, 1),
        "abcdefgh\n".repeat(BYTES / 9) + &"abcdefgh"[..BYTES % 9]
    );
    std::mem::take(&mut *s.lock().unwrap())
}

#[tokio::test]
async fn log_chunks_take_the_size_the_server_advertises_and_shrink_after_413() {
    const MIB: usize = 1 << 20;
    // A server that predates `max_log_chunk_bytes`: 1 MiB chunks.
    let f = chunk_sizes_for(None, None).await;
    assert_eq!(f.chunk_sizes.first(), Some(&MIB), "{:?}", f.chunk_sizes);
    assert!(
        f.chunk_sizes.iter().all(|&n| n <= MIB),
        "{:?}",
        f.chunk_sizes
    );

    // A server that takes 4 MiB.
    let f = chunk_sizes_for(Some(4 * MIB as u64), None).await;
    assert_eq!(
        f.chunk_sizes.first(),
        Some(&(4 * MIB)),
        "{:?}",
        f.chunk_sizes
    );

    // More than the agent sends: its own limit.
    let f = chunk_sizes_for(Some(1 << 40), None).await;
    assert_eq!(
        f.chunk_sizes.first(),
        Some(&(4 * MIB)),
        "{:?}",
        f.chunk_sizes
    );

    // A proxy before it takes 1.5 MiB: 4 MiB and 2 MiB are refused, then 1 MiB goes.
    let f = chunk_sizes_for(Some(4 * MIB as u64), Some(3 * MIB / 2)).await;
    assert_eq!(f.too_large, [4 * MIB, 2 * MIB]);
    assert_eq!(f.chunk_sizes.first(), Some(&MIB), "{:?}", f.chunk_sizes);
    assert!(
        f.chunk_sizes.iter().all(|&n| n <= MIB),
        "{:?}",
        f.chunk_sizes
    );
}
