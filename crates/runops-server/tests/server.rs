//! The control plane over real HTTP: each test starts `Server::start` on 127.0.0.1:0
//! with its own data dir and talks to it as the CLI and a simulated agent would.

use runops_client::{Client, ClientError};
use runops_proto::agent::{ConnectRequest, FinishRequest, LogTail, PollRequest, PollResponse};
use runops_proto::api::{
    AgentTokenListQuery, TargetCreate, TargetUpdate, TaskCreate, TaskListQuery, UserCreate,
};
use runops_proto::token::TokenKind;
use runops_proto::{FailureReason, TaskStatus};
use runops_server::store::NewUser;
use runops_server::{Server, ServerArgs};
use serde_json::{Value, json};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

const ADMIN: &str = "rou_test-admin-token";

/// Bound on anything a test waits for; far above what a healthy server needs.
const PATIENCE: Duration = Duration::from_secs(15);

struct Opts {
    lease: u64,
    offer_timeout: u64,
    cap: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            lease: 30,
            offer_timeout: 30,
            cap: runops_server::DEFAULT_LOG_CAP_BYTES,
        }
    }
}

async fn start_in(dir: &Path, o: &Opts) -> Server {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    args.agent_lease_secs = o.lease;
    args.offer_timeout_secs = o.offer_timeout;
    args.log_cap_bytes = o.cap;
    Server::start(args, Some(ADMIN.to_string())).await.unwrap()
}

struct Env {
    server: Server,
    dir: tempfile::TempDir,
    admin: Client,
}

impl Env {
    async fn new() -> Env {
        Env::with(Opts::default()).await
    }

    async fn with(o: Opts) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = start_in(dir.path(), &o).await;
        let admin = Client::new(&server.url(), ADMIN).unwrap();
        Env { server, dir, admin }
    }

    /// A client holding a new agent token for untagged agents.
    async fn agent_client(&self) -> Client {
        self.agent_client_for(None).await
    }

    /// A client holding a new agent token for agents with exactly `tags`.
    async fn agent_client_for(&self, tags: Option<&str>) -> Client {
        let t = self
            .admin
            .create_agent_token(Some("test".into()), tags.map(String::from))
            .await
            .unwrap();
        Client::new(&self.server.url(), &t.token).unwrap()
    }

    async fn target(&self, name: &str, tags: Option<&str>) {
        self.admin
            .create_target(&TargetCreate {
                name: name.into(),
                kind: "bash".into(),
                tags: tags.map(String::from),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn task(&self, target: &str, script: &str) -> i64 {
        self.admin
            .create_task(&TaskCreate {
                target: target.into(),
                script: script.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .id
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

fn connect_req(tags: Option<&str>, instance: &str) -> ConnectRequest {
    ConnectRequest {
        tags: tags.map(String::from),
        hostname: format!("host-{instance}"),
        version: "test".into(),
        instance_id: instance.into(),
        concurrency: 4,
        standby: false,
        restarted: false,
        spooled: Vec::new(),
        verifies_identity: false,
    }
}

fn poll_req(session: &str, running: Vec<i64>, free: u32) -> PollRequest {
    PollRequest {
        session_id: session.into(),
        running,
        free_slots: free,
    }
}

async fn poll(agent: &Client, req: &PollRequest) -> PollResponse {
    tokio::time::timeout(PATIENCE, agent.agent_poll(req, Duration::from_secs(30)))
        .await
        .expect("poll answered")
        .unwrap()
}

fn finish_ok(session: &str, log_size: u64) -> FinishRequest {
    FinishRequest {
        session_id: session.into(),
        result: runops_proto::agent::TaskResult {
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            redacted: true,
            log_size,
            log_location: None,
            elapsed_ms: 5,
        },
        log_tail: None,
    }
}

fn api_err(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, body } => (status, body.code, body.error),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Retries `check` until it returns `Some`, for state that changes in the background.
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition never became true"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn first_start_generates_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    let server = Server::start(args.clone(), None).await.unwrap();
    let token = server.generated_admin_token().unwrap().to_string();
    assert!(token.starts_with("rou_"));
    let me = Client::new(&server.url(), &token)
        .unwrap()
        .me()
        .await
        .unwrap();
    assert_eq!(me.email, "admin@localhost");
    assert_eq!(me.role, "admin");
    assert_eq!(me.org, "default");
    server.shutdown().await;

    // Second start: nothing new to print; the old token still works; a given admin
    // token is registered so automation can use it.
    let server = Server::start(args.clone(), Some("rou_automation".into()))
        .await
        .unwrap();
    assert!(server.generated_admin_token().is_none());
    Client::new(&server.url(), &token)
        .unwrap()
        .me()
        .await
        .unwrap();
    let me = Client::new(&server.url(), "rou_automation")
        .unwrap()
        .me()
        .await
        .unwrap();
    assert_eq!(me.role, "admin");
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let env = Env::new().await;
    for path in ["/healthz", "/readyz"] {
        let r = env
            .http()
            .get(format!("{}{path}", env.server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    env.server.shutdown().await;
}

#[tokio::test]
async fn target_validation_errors_are_precise() {
    let env = Env::new().await;
    let base = TargetCreate {
        name: "demo".into(),
        kind: "bash".into(),
        ..Default::default()
    };

    let bad_mapping = TargetCreate {
        secret_mapping: Some(json!("{\"A\" \"B\"}")),
        ..base.clone()
    };
    let (status, _, msg) = api_err(env.admin.create_target(&bad_mapping).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(msg.starts_with("secret_mapping is not valid JSON"), "{msg}");
    assert!(msg.contains("line 1 column 6"), "{msg}");

    let non_string = TargetCreate {
        secret_mapping: Some(json!({"A": 3})),
        ..base.clone()
    };
    let (status, _, msg) = api_err(env.admin.create_target(&non_string).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(msg.contains("must be a string"), "{msg}");

    let unknown = TargetCreate {
        kind: "cobol".into(),
        ..base.clone()
    };
    let (status, _, msg) = api_err(env.admin.create_target(&unknown).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(
        msg.contains("unknown target type `cobol`") && msg.contains("postgres-csv"),
        "{msg}"
    );

    let bad_name = TargetCreate {
        name: "no spaces".into(),
        ..base.clone()
    };
    assert_eq!(
        api_err(env.admin.create_target(&bad_name).await.unwrap_err()).0,
        400
    );
    let bad_timeout = TargetCreate {
        timeout: Some(0),
        ..base.clone()
    };
    assert_eq!(
        api_err(env.admin.create_target(&bad_timeout).await.unwrap_err()).0,
        400
    );

    let good = TargetCreate {
        secret_path: Some("MY_TARGET".into()),
        secret_mapping: Some(json!("{\"PG_PASS\": \"MYSQL_PASS\"}")),
        tags: Some("".into()),
        ..base.clone()
    };
    let t = env.admin.create_target(&good).await.unwrap();
    assert_eq!(t.secret_provider.as_deref(), Some("env-var"));
    assert_eq!(t.tags, None);
    assert_eq!(t.secret_mapping.unwrap()["PG_PASS"], "MYSQL_PASS");
    assert_eq!(t.redact, "all");

    let (status, code, msg) = api_err(env.admin.create_target(&good).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert!(msg.contains("`demo` already exists"), "{msg}");

    let u = env
        .admin
        .update_target(
            "demo",
            &TargetUpdate {
                tags: Some("prod".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.tags.as_deref(), Some("prod"));
    assert_eq!(env.admin.list_targets().await.unwrap().len(), 1);
    env.admin.delete_target("demo").await.unwrap();
    assert_eq!(
        api_err(env.admin.get_target("demo").await.unwrap_err()).0,
        404
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn task_input_errors() {
    let env = Env::new().await;
    let e = env
        .admin
        .create_task(&TaskCreate {
            target: "nope".into(),
            script: "echo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let ClientError::Api { status, body } = e else {
        panic!()
    };
    assert_eq!(status, 404);
    assert_eq!(body.error, "target `nope` not found");
    assert!(body.hint.unwrap().contains("runops targets list"));

    env.target("demo", None).await;
    let empty = TaskCreate {
        target: "demo".into(),
        script: "".into(),
        ..Default::default()
    };
    assert_eq!(
        api_err(env.admin.create_task(&empty).await.unwrap_err()).0,
        400
    );
    let huge = TaskCreate {
        target: "demo".into(),
        script: "x".repeat(runops_proto::limits::MAX_SCRIPT_BYTES + 1),
        ..Default::default()
    };
    let (status, code, msg) = api_err(env.admin.create_task(&huge).await.unwrap_err());
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert!(msg.contains("1048576"), "{msg}");
    env.server.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let env = Env::new().await;
    let url = env.server.url();
    let http = env.http();
    let check = |r: reqwest::Response, status: u16| async move {
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.expect("a JSON error body");
        assert!(
            body["code"].is_string() && body["error"].is_string(),
            "{body}"
        );
        body["error"].as_str().unwrap().to_string()
    };

    let r = http
        .post(format!("{url}/v1/targets"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert!(check(r, 400).await.starts_with("malformed JSON body"));

    let r = http
        .post(format!("{url}/v1/targets"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "a", "type": "bash", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert!(check(r, 400).await.contains("unknown field `colour`"));

    let r = http
        .post(format!("{url}/v1/targets"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(check(r, 415).await.contains("not JSON"));

    let r = http
        .post(format!("{url}/v1/tasks"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(vec![b' '; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert!(check(r, 413).await.contains("limit"));

    let r = http.get(format!("{url}/v1/nothing")).send().await.unwrap();
    assert!(check(r, 404).await.contains("no such route"));
    let r = http
        .delete(format!("{url}/v1/tasks"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    check(r, 405).await;
    let r = http
        .get(format!("{url}/v1/tasks/abc"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(check(r, 400).await.contains("`abc`"));
    let r = http
        .get(format!("{url}/v1/tasks?status=bogus"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    check(r, 400).await;

    let r = http.get(format!("{url}/v1/targets")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["hint"].as_str().unwrap().contains("runops login"));
    let r = http
        .get(format!("{url}/v1/targets"))
        .bearer_auth("rou_wrong")
        .send()
        .await
        .unwrap();
    check(r, 401).await;
    env.server.shutdown().await;
}

#[tokio::test]
async fn tokens_reach_only_their_side_and_revocation_ends_sessions() {
    let env = Env::new().await;
    let agent = env.agent_client().await;
    let (status, code, _) = api_err(agent.list_targets().await.unwrap_err());
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, _, _) = api_err(
        env.admin
            .agent_connect(&connect_req(None, "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);

    let c = agent.agent_connect(&connect_req(None, "a")).await.unwrap();
    assert_eq!(env.admin.list_agents().await.unwrap().len(), 1);
    let tokens = env
        .admin
        .list_agent_tokens(&Default::default())
        .await
        .unwrap();
    env.admin.revoke_agent_token(tokens[0].id).await.unwrap();
    assert!(env.admin.list_agents().await.unwrap().is_empty());
    let (status, _, msg) = api_err(
        agent
            .agent_poll(&poll_req(&c.session_id, vec![], 1), Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401, "{msg}");
    assert!(
        env.admin
            .list_agent_tokens(&Default::default())
            .await
            .unwrap()[0]
            .revoked_at
            .is_some()
    );
    assert_eq!(
        api_err(env.admin.revoke_agent_token(999).await.unwrap_err()).0,
        404
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn agent_runs_a_task_end_to_end() {
    let env = Env::new().await;
    env.target("demo", Some("prod")).await;
    let agent = env.agent_client_for(Some("prod")).await;
    let c = agent
        .agent_connect(&connect_req(Some("prod"), "a"))
        .await
        .unwrap();
    assert!(!c.resumed);
    assert_eq!(c.lease_secs, 30);
    assert!(c.poll_hold_secs <= 25);

    // One live agent per tags.
    let (status, code, msg) = api_err(
        agent
            .agent_connect(&connect_req(Some("prod"), "b"))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "tags_taken"));
    assert!(
        msg.contains("tags `prod`") && msg.contains("host-a"),
        "{msg}"
    );
    // The same instance resumes its session.
    let again = agent
        .agent_connect(&connect_req(Some("prod"), "a"))
        .await
        .unwrap();
    assert!(again.resumed);
    assert_eq!(again.session_id, c.session_id);
    let s = c.session_id.clone();

    // A waiting poll wakes up when the task is created.
    let waiting = {
        let agent = agent.clone();
        let req = poll_req(&s, vec![], 4);
        tokio::spawn(async move { poll(&agent, &req).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = env.task("demo", "echo hello").await;
    let offers = waiting.await.unwrap().offers;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].task_id, id);
    assert_eq!(offers[0].script, "echo hello");
    assert_eq!(offers[0].user_email, "admin@localhost");
    assert_eq!(
        env.admin.get_task(id).await.unwrap().status,
        TaskStatus::Dispatched
    );

    let started = agent.agent_start(id, &s).await.unwrap();
    assert_eq!(started.status, TaskStatus::Running);

    // A follower started now sees everything and ends when the task does.
    let follower = {
        let admin = env.admin.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = admin.follow_task_logs(id, 0).await.unwrap();
            let mut got = Vec::new();
            while let Some(piece) = stream.next().await {
                got.extend_from_slice(&piece.unwrap());
            }
            got
        })
    };

    assert_eq!(
        agent
            .agent_upload_log(id, &s, 0, b"hello ".to_vec())
            .await
            .unwrap()
            .stored,
        6
    );
    // A resend is harmless; an overlapping chunk adds only what is new.
    assert_eq!(
        agent
            .agent_upload_log(id, &s, 0, b"hello ".to_vec())
            .await
            .unwrap()
            .stored,
        6
    );
    assert_eq!(
        agent
            .agent_upload_log(id, &s, 3, b"lo world\n".to_vec())
            .await
            .unwrap()
            .stored,
        12
    );
    let (status, code, _) = api_err(
        agent
            .agent_upload_log(id, &s, 20, b"x".to_vec())
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "log_gap"));
    assert_eq!(
        &env.admin.task_logs(id, 0).await.unwrap()[..],
        b"hello world\n"
    );
    assert_eq!(&env.admin.task_logs(id, 6).await.unwrap()[..], b"world\n");

    let (status, code, _) = api_err(
        agent
            .agent_finish(id, &finish_ok(&s, 20))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "log_incomplete"));
    assert_eq!(
        agent
            .agent_finish(id, &finish_ok(&s, 12))
            .await
            .unwrap()
            .status,
        TaskStatus::Success
    );
    // Idempotent resend; a different result is refused.
    assert_eq!(
        agent
            .agent_finish(id, &finish_ok(&s, 12))
            .await
            .unwrap()
            .status,
        TaskStatus::Success
    );
    let mut other = finish_ok(&s, 12);
    other.result.status = TaskStatus::Failure;
    other.result.failure_reason = Some(FailureReason::ExitCode);
    assert_eq!(
        api_err(agent.agent_finish(id, &other).await.unwrap_err()).1,
        "task_ended"
    );

    let followed = tokio::time::timeout(PATIENCE, follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(followed, b"hello world\n");

    let t = env.admin.get_task(id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Success);
    assert_eq!(t.exit_code, Some(0));
    assert_eq!(t.log_size, 12);
    assert_eq!(t.log_location.as_deref(), Some("server"));
    assert_eq!(t.agent.as_deref(), Some("host-a"));
    assert!(t.redacted);
    assert!(t.finished_at.is_some());
    assert_eq!(t.task_logs, format!("/v1/tasks/{id}/logs"));
    assert_eq!(
        api_err(agent.agent_start(id, &s).await.unwrap_err()).1,
        "task_ended"
    );

    let listed = env
        .admin
        .list_tasks(&TaskListQuery {
            status: Some(TaskStatus::Success),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // An agent still listing an ended task is told to drop it.
    let got = poll(&agent, &poll_req(&s, vec![id], 0)).await;
    assert_eq!(got.cancel, vec![id]);

    agent.agent_disconnect(&s).await.unwrap();
    assert!(env.admin.list_agents().await.unwrap().is_empty());
    let (status, code, _) = api_err(
        agent
            .agent_poll(&poll_req(&s, vec![], 1), Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (410, "session_expired"));
    // The tags are free at once.
    agent
        .agent_connect(&connect_req(Some("prod"), "b"))
        .await
        .unwrap();
    env.server.shutdown().await;
}

#[tokio::test]
async fn agents_only_get_tasks_of_their_tags() {
    let env = Env::new().await;
    env.target("untagged", None).await;
    env.target("prod-db", Some("prod")).await;
    let agent = env.agent_client().await;
    let prod_agent = env.agent_client_for(Some("prod")).await;
    let plain = agent
        .agent_connect(&connect_req(None, "plain"))
        .await
        .unwrap();
    let prod = prod_agent
        .agent_connect(&connect_req(Some("prod"), "prod"))
        .await
        .unwrap();
    let a = env.task("untagged", "a").await;
    let b = env.task("prod-db", "b").await;
    let got = poll(&prod_agent, &poll_req(&prod.session_id, vec![], 4)).await;
    assert_eq!(
        got.offers.iter().map(|o| o.task_id).collect::<Vec<_>>(),
        vec![b]
    );
    let got = poll(&agent, &poll_req(&plain.session_id, vec![], 4)).await;
    assert_eq!(
        got.offers.iter().map(|o| o.task_id).collect::<Vec<_>>(),
        vec![a]
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn an_offer_not_started_goes_back_to_ready() {
    let env = Env::with(Opts {
        offer_timeout: 1,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "echo").await;
    let first = poll(&agent, &poll_req(&s, vec![], 1)).await;
    assert_eq!(first.offers[0].task_id, id);
    assert_eq!(first.offers[0].start_deadline_ms, 1000);
    eventually(|| async {
        (env.admin.get_task(id).await.unwrap().status == TaskStatus::Ready).then_some(())
    })
    .await;
    // The stale offer cannot be started; a fresh one can.
    assert_eq!(
        api_err(agent.agent_start(id, &s).await.unwrap_err()).1,
        "offer_expired"
    );
    let second = poll(&agent, &poll_req(&s, vec![], 1)).await;
    assert_eq!(second.offers[0].task_id, id);
    agent.agent_start(id, &s).await.unwrap();
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_lost_agent_fails_its_running_task_and_it_is_never_rerun() {
    let env = Env::with(Opts {
        lease: 2,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let c = agent.agent_connect(&connect_req(None, "a")).await.unwrap();
    let s = c.session_id;
    let id = env.task("demo", "sleep 600").await;
    let queued = env.task("demo", "echo later").await;
    let got = poll(&agent, &poll_req(&s, vec![], 2)).await;
    assert_eq!(got.offers.len(), 2);
    agent.agent_start(id, &s).await.unwrap();
    // The agent stops polling: the lease expires.
    let t = eventually(|| async {
        let t = env.admin.get_task(id).await.unwrap();
        t.status.is_final().then_some(t)
    })
    .await;
    assert_eq!(t.status, TaskStatus::Failure);
    assert_eq!(t.failure_reason, Some(FailureReason::AgentLost));
    let msg = t.failure_message.unwrap();
    assert!(
        msg.contains("host-a stopped answering (lease of 2 s expired)"),
        "{msg}"
    );
    // The offer it never started is ready again.
    assert_eq!(
        env.admin.get_task(queued).await.unwrap().status,
        TaskStatus::Ready
    );

    // A new agent takes the tags and gets only the requeued task.
    let s2 = agent
        .agent_connect(&connect_req(None, "b"))
        .await
        .unwrap()
        .session_id;
    let got = poll(&agent, &poll_req(&s2, vec![], 4)).await;
    assert_eq!(
        got.offers.iter().map(|o| o.task_id).collect::<Vec<_>>(),
        vec![queued]
    );
    assert_eq!(
        env.admin.get_task(id).await.unwrap().status,
        TaskStatus::Failure
    );
    // The old agent learns its session is gone and cannot report.
    assert_eq!(
        api_err(agent.agent_finish(id, &finish_ok(&s, 0)).await.unwrap_err()).1,
        "task_ended"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_server_restart_mid_task_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        lease: 2,
        ..Default::default()
    };
    let server = start_in(dir.path(), &opts).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    admin
        .create_target(&TargetCreate {
            name: "demo".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = admin.create_agent_token(None, None).await.unwrap().token;
    let agent = Client::new(&server.url(), &token).unwrap();
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = admin
        .create_task(&TaskCreate {
            target: "demo".into(),
            script: "echo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    agent
        .agent_upload_log(id, &s, 0, b"before\n".to_vec())
        .await
        .unwrap();
    server.shutdown().await;
    // Down for longer than the lease: the restart must still give the agent a full
    // lease to come back.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let server = start_in(dir.path(), &opts).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let agent = Client::new(&server.url(), &token).unwrap();
    let c = agent.agent_connect(&connect_req(None, "a")).await.unwrap();
    assert!(c.resumed);
    assert_eq!(c.session_id, s);
    assert_eq!(
        admin.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );
    let ack = agent
        .agent_upload_log(id, &s, 0, b"before\nafter\n".to_vec())
        .await
        .unwrap();
    assert_eq!(ack.stored, 13);
    agent.agent_finish(id, &finish_ok(&s, 13)).await.unwrap();
    let t = admin.get_task(id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Success);
    assert_eq!(
        &admin.task_logs(id, 0).await.unwrap()[..],
        b"before\nafter\n"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn kill_reaches_the_agent_in_its_poll() {
    // A short lease makes the final idle poll answer quickly.
    let env = Env::with(Opts {
        lease: 3,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "sleep 600").await;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    let agents = env.admin.list_agents().await.unwrap();
    assert_eq!(agents[0].running_tasks, vec![id]);

    let waiting = {
        let agent = agent.clone();
        let req = poll_req(&s, vec![id], 0);
        tokio::spawn(async move { poll(&agent, &req).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = env.admin.kill_task(id).await.unwrap();
    assert_eq!(killed.status, TaskStatus::Running);
    assert_eq!(waiting.await.unwrap().cancel, vec![id]);

    let mut fin = finish_ok(&s, 0);
    fin.result.status = TaskStatus::Failure;
    fin.result.failure_reason = Some(FailureReason::Cancelled);
    fin.result.exit_code = None;
    agent.agent_finish(id, &fin).await.unwrap();
    let (status, _, msg) = api_err(env.admin.kill_task(id).await.unwrap_err());
    assert_eq!(status, 409);
    assert_eq!(msg, format!("task {id} already ended (failure)"));

    // A task that has not started is cancelled at once.
    let queued = env.task("demo", "echo").await;
    let t = env.admin.kill_task(queued).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failure);
    assert_eq!(t.failure_reason, Some(FailureReason::Cancelled));
    assert_eq!(
        t.failure_message.as_deref(),
        Some("killed by admin@localhost before it started")
    );
    let got = poll(&agent, &poll_req(&s, vec![], 0)).await;
    assert!(got.offers.is_empty());
    env.server.shutdown().await;
}

#[tokio::test]
async fn standby_agent_takes_over_when_the_tags_free_up() {
    let env = Env::new().await;
    let agent = env.agent_client_for(Some("prod")).await;
    let first = agent
        .agent_connect(&connect_req(Some("prod"), "a"))
        .await
        .unwrap();
    let standby = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut req = connect_req(Some("prod"), "b");
            req.standby = true;
            agent.agent_connect(&req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.agent_disconnect(&first.session_id).await.unwrap();
    let second = tokio::time::timeout(PATIENCE, standby)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(second.session_id, first.session_id);
    let agents = env.admin.list_agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].hostname, "host-b");
    env.server.shutdown().await;
}

#[tokio::test]
async fn logs_beyond_the_cap_are_acknowledged_but_not_kept() {
    let env = Env::with(Opts {
        cap: 10,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "yes").await;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    let ack = agent
        .agent_upload_log(id, &s, 0, b"0123456789abcdefghij".to_vec())
        .await
        .unwrap();
    assert_eq!(ack.stored, 20);
    agent
        .agent_upload_log(id, &s, 20, b"more".to_vec())
        .await
        .unwrap();
    agent.agent_finish(id, &finish_ok(&s, 24)).await.unwrap();
    let log = String::from_utf8(env.admin.task_logs(id, 0).await.unwrap().to_vec()).unwrap();
    assert!(
        log.starts_with("0123456789\n[runops: log truncated"),
        "{log}"
    );
    assert!(!log.contains("abc"));
    assert_eq!(env.admin.get_task(id).await.unwrap().log_size, 24);
    env.server.shutdown().await;
}

#[tokio::test]
async fn other_organisations_objects_are_not_found() {
    let env = Env::with(Opts {
        lease: 3,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let id = env.task("demo", "echo").await;

    let store = env.server.store();
    let now = runops_server::now_ms();
    let org = store.create_org("other", now).await.unwrap();
    let user = store
        .create_user(
            org,
            &NewUser {
                name: "eve".into(),
                email: "eve@other".into(),
                groups: vec![],
                role: runops_proto::Role::Admin,
            },
            now,
        )
        .await
        .unwrap();
    let token = "rou_other-org";
    store
        .create_token(
            org,
            TokenKind::User,
            Some(user.id),
            None,
            &runops_server::auth::hash_token(token),
            now,
        )
        .await
        .unwrap();
    let eve = Client::new(&env.server.url(), token).unwrap();
    assert_eq!(eve.me().await.unwrap().org, "other");
    assert_eq!(api_err(eve.get_task(id).await.unwrap_err()).0, 404);
    assert_eq!(api_err(eve.kill_task(id).await.unwrap_err()).0, 404);
    assert_eq!(api_err(eve.task_logs(id, 0).await.unwrap_err()).0, 404);
    assert_eq!(api_err(eve.get_target("demo").await.unwrap_err()).0, 404);
    assert!(
        eve.list_tasks(&TaskListQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(eve.list_targets().await.unwrap().is_empty());
    assert_eq!(eve.list_users().await.unwrap().len(), 1);

    // An agent of the other org never sees the default org's task.
    let agent_token = eve.create_agent_token(None, None).await.unwrap().token;
    let agent = Client::new(&env.server.url(), &agent_token).unwrap();
    let s = agent
        .agent_connect(&connect_req(None, "eve"))
        .await
        .unwrap()
        .session_id;
    let got = poll(&agent, &poll_req(&s, vec![], 1)).await;
    assert!(got.offers.is_empty());
    assert_eq!(api_err(agent.agent_start(id, &s).await.unwrap_err()).0, 404);
    env.server.shutdown().await;
}

#[tokio::test]
async fn users_are_created_by_admins_only() {
    let env = Env::new().await;
    let created = env
        .admin
        .create_user(&runops_proto::api::UserCreate {
            name: "Bob".into(),
            email: "bob@example.com".into(),
            groups: vec!["dba,ops".into()],
            role: None,
        })
        .await
        .unwrap();
    assert_eq!(created.user.role, "user");
    assert_eq!(created.user.groups, vec!["dba", "ops"]);
    let bob = Client::new(&env.server.url(), &created.token).unwrap();
    assert_eq!(bob.me().await.unwrap().email, "bob@example.com");
    let (status, _, _) = api_err(
        bob.create_user(&runops_proto::api::UserCreate {
            name: "Mallory".into(),
            email: "m@example.com".into(),
            groups: vec![],
            role: Some("admin".into()),
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    let dup = env
        .admin
        .create_user(&runops_proto::api::UserCreate {
            name: "Bob".into(),
            email: "bob@example.com".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap_err();
    assert_eq!(api_err(dup).0, 409);
    assert_eq!(env.admin.list_users().await.unwrap().len(), 2);
    let _ = &env.dir;
    env.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_held_polls_and_ends_followers() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "sleep 600").await;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    agent
        .agent_upload_log(id, &s, 0, b"partial".to_vec())
        .await
        .unwrap();

    let mut stream = env.admin.follow_task_logs(id, 0).await.unwrap();
    let held = {
        let agent = agent.clone();
        let req = poll_req(&s, vec![id], 0);
        tokio::spawn(async move { agent.agent_poll(&req, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut got = Vec::new();
        while let Some(Ok(piece)) = stream.next().await {
            got.extend_from_slice(&piece);
        }
        got
    });
    tokio::time::timeout(PATIENCE, env.server.shutdown())
        .await
        .unwrap();
    // The held poll got a normal (empty) answer, not a broken connection.
    let answer = held.await.unwrap().unwrap();
    assert!(answer.offers.is_empty());
    assert_eq!(follower.await.unwrap(), b"partial");
}

#[tokio::test]
async fn log_chunks_up_to_the_advertised_size_are_taken_and_bigger_ones_refused() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let session = agent.agent_connect(&connect_req(None, "a")).await.unwrap();
    let max = runops_proto::limits::MAX_LOG_CHUNK_BYTES;
    assert_eq!(session.max_log_chunk_bytes, Some(max as u64));
    assert!(max >= runops_proto::limits::BASE_LOG_CHUNK_BYTES);
    let s = session.session_id;
    let id = env.task("demo", "yes").await;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    let ack = agent
        .agent_upload_log(id, &s, 0, vec![b'x'; max])
        .await
        .unwrap();
    assert_eq!(ack.stored, max as u64);
    let e = agent
        .agent_upload_log(id, &s, max as u64, vec![b'y'; max + 1])
        .await
        .unwrap_err();
    let (status, code, msg) = api_err(e);
    assert_eq!((status, code.as_str()), (413, "payload_too_large"), "{msg}");
    let log = env.admin.task_logs(id, 0).await.unwrap();
    assert_eq!(log.len(), max);
    env.server.shutdown().await;
}

/// Measurement, not a check: `cargo test -p runops-server -- --ignored --nocapture`.
/// Uploads the largest log chunks (`MAX_LOG_CHUNK_BYTES`) over HTTP and claims tasks one
/// by one, printing the rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_log_upload_and_claim_rates() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "yes").await;
    poll(&agent, &poll_req(&s, vec![], 1)).await;
    agent.agent_start(id, &s).await.unwrap();
    let chunk = vec![b'x'; runops_proto::limits::MAX_LOG_CHUNK_BYTES];
    let n = 256u64;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let off = i * chunk.len() as u64;
        agent
            .agent_upload_log(id, &s, off, chunk.clone())
            .await
            .unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "log upload over HTTP: {:.0} MB/s",
        (n * chunk.len() as u64) as f64 / 1e6 / secs
    );

    let store = env.server.store();
    let t0 = std::time::Instant::now();
    let id2 = env.task("demo", "yes").await;
    let session = store.get_session(&s).await.unwrap().unwrap();
    store.claim_tasks(&session, 1, 0, i64::MAX).await.unwrap();
    store
        .start_task(1, id2, &s, runops_server::now_ms())
        .await
        .unwrap();
    for i in 0..n {
        let off = i * chunk.len() as u64;
        store
            .append_log(1, id2, &s, off, &chunk, u64::MAX)
            .await
            .unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "log append in the store: {:.0} MB/s",
        (n * chunk.len() as u64) as f64 / 1e6 / secs
    );

    let tasks = 2000;
    for _ in 0..tasks {
        env.task("demo", "echo").await;
    }
    let t0 = std::time::Instant::now();
    let mut claimed = 0;
    while claimed < tasks {
        let got = store.claim_tasks(&session, 1, 0, i64::MAX).await.unwrap();
        assert_eq!(got.len(), 1);
        claimed += 1;
    }
    println!(
        "claims one by one: {:.0}/s",
        tasks as f64 / t0.elapsed().as_secs_f64()
    );
    for _ in 0..tasks {
        env.task("demo", "echo").await;
    }
    let t0 = std::time::Instant::now();
    let mut claimed = 0;
    while claimed < tasks {
        claimed += store
            .claim_tasks(&session, 30, 0, i64::MAX)
            .await
            .unwrap()
            .len();
    }
    println!(
        "claims 30 per poll: {:.0}/s",
        tasks as f64 / t0.elapsed().as_secs_f64()
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_session_is_usable_only_with_the_token_that_opened_it() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let owner = env.agent_client().await;
    // Another agent token of the same org (as any admin could have made for elsewhere).
    let thief = env.agent_client().await;
    let s = owner
        .agent_connect(&connect_req(None, "owner"))
        .await
        .unwrap()
        .session_id;
    // Session ids are public: every user sees them.
    assert!(
        env.admin
            .list_agents()
            .await
            .unwrap()
            .iter()
            .any(|a| a.id == s)
    );
    let id = env.task("demo", "echo hi").await;

    // A poll on the stolen session gets nothing (no offer, no JWT, no config).
    let (status, code, msg) = api_err(
        thief
            .agent_poll(&poll_req(&s, vec![], 1), Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (404, "not_found"), "{msg}");
    assert!(msg.contains("not found for this agent token"), "{msg}");
    assert_eq!(
        env.admin.get_task(id).await.unwrap().status,
        TaskStatus::Ready
    );

    // The owner gets the offer and starts it; the thief can neither start, log,
    // finish nor disconnect it.
    let got = poll(&owner, &poll_req(&s, vec![], 1)).await;
    assert_eq!(got.offers[0].task_id, id);
    assert_eq!(api_err(thief.agent_start(id, &s).await.unwrap_err()).0, 404);
    owner.agent_start(id, &s).await.unwrap();
    assert_eq!(
        api_err(
            thief
                .agent_upload_log(id, &s, 0, b"forged".to_vec())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
    let forged = FinishRequest {
        session_id: s.clone(),
        result: runops_proto::agent::TaskResult {
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            redacted: true,
            log_size: 0,
            log_location: None,
            elapsed_ms: 1,
        },
        log_tail: None,
    };
    assert_eq!(
        api_err(thief.agent_finish(id, &forged).await.unwrap_err()).0,
        404
    );
    assert_eq!(
        api_err(thief.agent_disconnect(&s).await.unwrap_err()).0,
        404
    );
    assert_eq!(
        env.admin.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );

    // The owner still finishes it, with its own log.
    owner
        .agent_upload_log(id, &s, 0, b"hi\n".to_vec())
        .await
        .unwrap();
    let mut real = forged.clone();
    real.result.log_size = 3;
    owner.agent_finish(id, &real).await.unwrap();
    assert_eq!(&env.admin.task_logs(id, 0).await.unwrap()[..], b"hi\n");

    // Each refusal is in the audit log, naming the call.
    let events = env
        .admin
        .list_audit(&runops_proto::api::AuditQuery {
            action: Some("agent.session-refused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let calls: Vec<String> = events
        .iter()
        .map(|e| e.detail["call"].as_str().unwrap_or_default().to_string())
        .collect();
    for call in ["poll", "start", "logs", "finish", "disconnect"] {
        assert!(
            calls.iter().any(|c| c == call),
            "{call} not audited: {calls:?}"
        );
    }
    env.server.shutdown().await;
}

#[tokio::test]
async fn agent_tokens_are_scoped_to_a_tag_set_and_made_by_admins_only() {
    let env = Env::new().await;
    let prod = env.agent_client_for(Some("prod")).await;
    // A prod token cannot connect an untagged or a dev agent.
    for tags in [None, Some("dev")] {
        let (status, code, msg) = api_err(
            prod.agent_connect(&connect_req(tags, "x"))
                .await
                .unwrap_err(),
        );
        assert_eq!((status, code.as_str()), (403, "forbidden"), "{msg}");
        assert!(msg.contains("is for agents with TAGS=`prod`"), "{msg}");
    }
    prod.agent_connect(&connect_req(Some("prod"), "p"))
        .await
        .unwrap();
    // An untagged token (and every token made before tag scoping) serves untagged agents only.
    let plain = env.agent_client().await;
    let (status, _, msg) = api_err(
        plain
            .agent_connect(&connect_req(Some("prod"), "y"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("is for untagged agents"), "{msg}");

    // Listing per tag set.
    let listed = env
        .admin
        .list_agent_tokens(&AgentTokenListQuery {
            tags: Some("prod".into()),
            untagged: false,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags.as_deref(), Some("prod"));

    // A user (not an admin) can neither create, list nor revoke agent tokens.
    let created = env
        .admin
        .create_user(&UserCreate {
            name: "Ana".into(),
            email: "ana@example.com".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap();
    let ana = Client::new(&env.server.url(), &created.token).unwrap();
    let (status, _, msg) = api_err(ana.create_agent_token(None, None).await.unwrap_err());
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("only admins can create agent tokens"), "{msg}");
    assert_eq!(
        api_err(
            ana.list_agent_tokens(&Default::default())
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    assert_eq!(
        api_err(ana.revoke_agent_token(listed[0].id).await.unwrap_err()).0,
        403
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn only_admins_change_where_and_how_a_target_runs() {
    let env = Env::new().await;
    env.target("db", Some("prod")).await;
    let created = env
        .admin
        .create_user(&UserCreate {
            name: "Bob".into(),
            email: "bob@example.com".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap();
    let bob = Client::new(&env.server.url(), &created.token).unwrap();
    // Redirecting the target to an agent Bob runs, or pointing it at other secrets.
    let (status, _, msg) = api_err(
        bob.update_target(
            "db",
            &TargetUpdate {
                tags: Some("bobs-laptop".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("only admins can change targets"), "{msg}");
    let (status, _, _) = api_err(
        bob.create_target(&TargetCreate {
            name: "mine".into(),
            kind: "bash".into(),
            tags: Some("prod".into()),
            secret_path: Some("PROD_SECRETS".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 403);
    assert_eq!(api_err(bob.delete_target("db").await.unwrap_err()).0, 403);
    assert_eq!(
        env.admin.get_target("db").await.unwrap().tags.as_deref(),
        Some("prod")
    );
    // Bob still runs tasks on it.
    bob.create_task(&TaskCreate {
        target: "db".into(),
        script: "true".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_task_cannot_switch_its_target_to_a_more_powerful_type() {
    let env = Env::new().await;
    env.admin
        .create_target(&TargetCreate {
            name: "pg".into(),
            kind: "postgres".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, _, msg) = api_err(
        env.admin
            .create_task(&TaskCreate {
                target: "pg".into(),
                script: "echo $PG_PASS | rev".into(),
                kind: Some("bash".into()),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("cannot run as `bash`"), "{msg}");
    // Within the family it works.
    env.admin
        .create_task(&TaskCreate {
            target: "pg".into(),
            script: "select 1".into(),
            kind: Some("postgres-csv".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_agent_takes_its_session_back_and_only_spooled_tasks_stay_running() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "box"))
        .await
        .unwrap()
        .session_id;
    let spooled = env.task("demo", "a").await;
    let forgotten = env.task("demo", "b").await;
    let got = poll(&agent, &poll_req(&s, vec![], 2)).await;
    assert_eq!(got.offers.len(), 2);
    agent.agent_start(spooled, &s).await.unwrap();
    agent.agent_start(forgotten, &s).await.unwrap();
    let offered = env.task("demo", "c").await;
    let got = poll(&agent, &poll_req(&s, vec![spooled, forgotten], 1)).await;
    assert_eq!(got.offers[0].task_id, offered);

    // Another process with the same instance id but on another host is not a restart.
    let mut other = connect_req(None, "box");
    other.restarted = true;
    other.hostname = "elsewhere".into();
    assert_eq!(
        api_err(agent.agent_connect(&other).await.unwrap_err()).1,
        "tags_taken"
    );

    // The same agent restarts: its session comes back at once, without waiting for
    // the lease.
    let mut again = connect_req(None, "box");
    again.restarted = true;
    again.spooled = vec![spooled];
    let c = agent.agent_connect(&again).await.unwrap();
    assert!(c.resumed);
    assert_eq!(c.session_id, s);
    assert_eq!(
        env.admin.get_task(spooled).await.unwrap().status,
        TaskStatus::Running
    );
    let t = env.admin.get_task(forgotten).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failure);
    assert_eq!(t.failure_reason, Some(FailureReason::AgentLost));
    assert!(
        t.failure_message.unwrap_or_default().contains("restarted"),
        "the message says why"
    );
    assert_eq!(
        env.admin.get_task(offered).await.unwrap().status,
        TaskStatus::Ready
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn queued_tasks_get_the_current_config_and_only_on_the_targets_current_tags() {
    let env = Env::new().await;
    let config = |v: &str| {
        let mut m = serde_json::Map::new();
        m.insert("DB_PASSWORD".into(), v.into());
        Some(m)
    };
    env.admin
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            tags: Some("prod".into()),
            secret_provider: Some("runops".into()),
            config: config("old-password-1"),
            ..Default::default()
        })
        .await
        .unwrap();
    let rotated = env.task("db", "echo 1").await;
    // The password is rotated while the task waits: the task runs with the new one.
    env.admin
        .update_target(
            "db",
            &TargetUpdate {
                config: config("new-password-2"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let prod = env.agent_client_for(Some("prod")).await;
    let s = prod
        .agent_connect(&connect_req(Some("prod"), "p"))
        .await
        .unwrap()
        .session_id;
    let got = poll(&prod, &poll_req(&s, vec![], 1)).await;
    assert_eq!(got.offers[0].task_id, rotated);
    let offered = got.offers[0].config.clone().unwrap_or_default();
    assert_eq!(offered["DB_PASSWORD"], "new-password-2");

    // The target moves to other agents while a task waits: the task still goes where it
    // was created for (its snapshot), but the config no longer goes with it.
    let moved = env.task("db", "echo 2").await;
    env.admin
        .update_target(
            "db",
            &TargetUpdate {
                tags: Some("prod-eu".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = poll(&prod, &poll_req(&s, vec![rotated], 1)).await;
    assert_eq!(got.offers[0].task_id, moved);
    assert!(got.offers[0].config.is_none(), "{:?}", got.offers[0].config);
    env.server.shutdown().await;
}

/// A finish may carry the log's last bytes (`log_tail`): they are stored exactly as an
/// upload at their offset would be, then the result is taken. A resend of the whole
/// request is harmless, a tail that leaves a gap is refused without finishing, a tail
/// overlapping what the server has adds only what is new, and bytes beyond the stored
/// log of an ended task are refused.
#[tokio::test]
async fn finish_with_a_log_tail_stores_it_once_and_refuses_gaps() {
    let env = Env::new().await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "tail"))
        .await
        .unwrap()
        .session_id;
    let id = env.task("demo", "echo hello").await;
    let offers = poll(&agent, &poll_req(&s, vec![], 4)).await.offers;
    assert_eq!(offers[0].task_id, id);
    agent.agent_start(id, &s).await.unwrap();
    assert_eq!(
        agent
            .agent_upload_log(id, &s, 0, b"hello ".to_vec())
            .await
            .unwrap()
            .stored,
        6
    );

    // A tail that starts beyond the stored bytes: a gap, and the task goes on running.
    let mut gap = finish_ok(&s, 12);
    gap.log_tail = Some(LogTail::new(7, b"orld\n"));
    let (status, code, _) = api_err(agent.agent_finish(id, &gap).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "log_gap"));
    assert_eq!(
        env.admin.get_task(id).await.unwrap().status,
        TaskStatus::Running
    );

    // Not base64: refused before anything is stored.
    let mut bad = finish_ok(&s, 12);
    bad.log_tail = Some(LogTail {
        offset: 6,
        data: "not base64!".into(),
    });
    let (status, _, _) = api_err(agent.agent_finish(id, &bad).await.unwrap_err());
    assert_eq!(status, 400);

    // Overlapping what the server has (from byte 3): only the new bytes are added.
    let mut with_tail = finish_ok(&s, 12);
    with_tail.log_tail = Some(LogTail::new(3, b"lo world\n"));
    assert_eq!(
        agent.agent_finish(id, &with_tail).await.unwrap().status,
        TaskStatus::Success
    );
    assert_eq!(
        &env.admin.task_logs(id, 0).await.unwrap()[..],
        b"hello world\n"
    );
    let task = env.admin.get_task(id).await.unwrap();
    assert_eq!((task.status, task.log_size), (TaskStatus::Success, 12));

    // The same request again (its answer was lost): accepted, nothing stored twice.
    assert_eq!(
        agent.agent_finish(id, &with_tail).await.unwrap().status,
        TaskStatus::Success
    );
    assert_eq!(
        &env.admin.task_logs(id, 0).await.unwrap()[..],
        b"hello world\n"
    );
    // New bytes for an ended task are refused.
    let mut late = finish_ok(&s, 13);
    late.log_tail = Some(LogTail::new(12, b"!"));
    let (status, code, _) = api_err(agent.agent_finish(id, &late).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "task_ended"));
    assert_eq!(
        &env.admin.task_logs(id, 0).await.unwrap()[..],
        b"hello world\n"
    );

    // A whole log in one request, from byte 0, without any upload before.
    let id2 = env.task("demo", "echo bye").await;
    let offers = poll(&agent, &poll_req(&s, vec![], 4)).await.offers;
    assert_eq!(offers[0].task_id, id2);
    agent.agent_start(id2, &s).await.unwrap();
    let mut whole = finish_ok(&s, 4);
    whole.log_tail = Some(LogTail::new(0, b"bye\n"));
    assert_eq!(
        agent.agent_finish(id2, &whole).await.unwrap().status,
        TaskStatus::Success
    );
    assert_eq!(&env.admin.task_logs(id2, 0).await.unwrap()[..], b"bye\n");
    env.server.shutdown().await;
}

/// A poll touches the session's lease unless it was touched within the last tenth of
/// the lease (a write fewer per poll for an agent busy with short tasks), and an agent
/// that keeps polling keeps its lease however often it polls.
#[tokio::test]
async fn polls_moments_apart_touch_the_lease_once_and_keep_it() {
    const LEASE_SECS: u64 = 2;
    let env = Env::with(Opts {
        lease: LEASE_SECS,
        ..Default::default()
    })
    .await;
    env.target("demo", None).await;
    let agent = env.agent_client().await;
    let s = agent
        .agent_connect(&connect_req(None, "a"))
        .await
        .unwrap()
        .session_id;
    let session = || async { env.server.store().get_session(&s).await.unwrap().unwrap() };
    let tenth_ms = i64::try_from(LEASE_SECS * 100).unwrap();

    // Polls answered at once (a task is ready each time): one that ends within a tenth
    // of the lease after the last touch leaves it as it was. The clock is read after
    // the answer, so "within" holds for the server's own check too.
    let mut skipped = 0;
    for _ in 0..20 {
        let before = session().await.last_seen_ms;
        env.task("demo", "true").await;
        let offers = poll(&agent, &poll_req(&s, vec![], 1)).await.offers;
        assert_eq!(offers.len(), 1, "{offers:?}");
        if runops_server::now_ms() - before < tenth_ms {
            assert_eq!(
                session().await.last_seen_ms,
                before,
                "touched again too soon"
            );
            skipped += 1;
        }
    }
    assert!(
        skipped > 0,
        "no poll came within {tenth_ms} ms of the last touch"
    );

    // Polling on (each idle poll held for part of the lease) carries the session past
    // a whole lease after it connected: the lease moves on and never lapses.
    let connected = session().await.connected_at_ms;
    eventually(|| async {
        let got = poll(&agent, &poll_req(&s, vec![], 0)).await;
        assert!(got.offers.is_empty());
        let now = session().await;
        assert_eq!(
            now.ended_at_ms, None,
            "the lease lapsed while the agent polled"
        );
        (now.last_seen_ms > connected + i64::try_from(LEASE_SECS * 1000).unwrap()).then_some(())
    })
    .await;
    env.server.shutdown().await;
}
