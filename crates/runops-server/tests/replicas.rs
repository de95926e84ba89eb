//! Two control-plane replicas in one process on one PostgreSQL database (issue 16):
//! what one replica held in memory before is shared through the database. The server
//! is `RUNOPS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! under CI a missing PostgreSQL fails the test, elsewhere it is skipped.

#[path = "../../runops/tests/common/guard.rs"]
mod guard;

use runops_client::Client;
use runops_jwt::testing::{JwksServer, TestKey, claims_for};
use runops_proto::TaskStatus;
use runops_proto::agent::{ConnectRequest, PollRequest};
use runops_proto::api::{TargetCreate, TaskCreate};
use runops_server::identity::UnknownUsers;
use runops_server::{Server, ServerArgs};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADMIN: &str = "rou_replicas-test-admin-token";
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn server_url() -> String {
    std::env::var("RUNOPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of this test, dropped at the end.
struct Database {
    name: String,
}

impl Database {
    async fn create(tag: &str) -> Option<Database> {
        let opts = PgConnectOptions::from_str(&server_url()).expect("a PostgreSQL URL");
        let admin = PgConnection::connect_with(&opts).await;
        if !guard::require(&format!("PostgreSQL at {}", server_url()), admin.is_ok()) {
            return None;
        }
        let mut admin = admin.ok()?;
        let name = format!("runops_replicas_{tag}_{}", std::process::id());
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("create the test database");
        }
        admin.close().await.ok();
        Some(Database { name })
    }

    fn url(&self) -> String {
        let base = server_url();
        let root = base.rsplit_once('/').map(|(r, _)| r).unwrap_or(&base);
        format!("{root}/{}", self.name)
    }

    async fn drop_now(self) {
        let opts = PgConnectOptions::from_str(&server_url()).expect("a PostgreSQL URL");
        if let Ok(mut admin) = PgConnection::connect_with(&opts).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

async fn replica(db: &Database, dir: &std::path::Path, jwks: &JwksServer) -> Server {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    args.database_url = Some(db.url());
    args.agent_lease_secs = 5;
    args.auth.auth_jwk_url = Some(jwks.url.clone());
    args.auth.auth_unknown_users = UnknownUsers::Create;
    Server::start(args, Some(ADMIN.to_string())).await.unwrap()
}

/// A task created with an identity-provider JWT on replica A is claimed by an agent
/// polling replica B: the offer carries the JWT, which the database held sealed with
/// the server key (never in plain) and drops once the task started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_creators_jwt_reaches_an_agent_of_another_replica() {
    let Some(db) = Database::create("jwt").await else {
        return;
    };
    // SAFETY: set before any replica reads it, to the one value every test here uses.
    unsafe { std::env::set_var("RUNOPS_SECRET_KEY", KEY) };
    let key = TestKey::rsa("idp-1");
    let jwks = JwksServer::start(&[&key]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&db, dir_a.path(), &jwks).await;
    let b = replica(&db, dir_b.path(), &jwks).await;
    let admin_a = Client::new(&a.url(), ADMIN).unwrap();
    admin_a
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let jwt = key.sign(&claims_for("carol@example.com", 600));
    let carol_a = Client::new(&a.url(), &jwt).unwrap();
    let task = carol_a
        .create_task(&TaskCreate {
            target: "db".into(),
            script: "id".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Held in the database, sealed.
    let opts = PgConnectOptions::from_str(&db.url()).unwrap();
    let mut conn = PgConnection::connect_with(&opts).await.unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM held_jwts WHERE task_id = $1")
        .bind(task.id)
        .fetch_one(&mut conn)
        .await
        .expect("the token is held in the database");
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(
        !sealed
            .windows(signature.len())
            .any(|w| w == signature.as_bytes()),
        "the held JWT is sealed"
    );

    let agent_tok = admin_a.create_agent_token(None, None).await.unwrap();
    let agent_b = Client::new(&b.url(), &agent_tok.token).unwrap();
    let session = agent_b
        .agent_connect(&ConnectRequest {
            tags: None,
            hostname: "host".into(),
            version: "test".into(),
            instance_id: "i-1".into(),
            concurrency: 4,
            standby: false,
            restarted: false,
            spooled: Vec::new(),
            verifies_identity: false,
        })
        .await
        .unwrap()
        .session_id;
    let offers = agent_b
        .agent_poll(
            &PollRequest {
                session_id: session.clone(),
                running: vec![],
                free_slots: 5,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .offers;
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(offers[0].user_jwt.as_deref(), Some(jwt.as_str()));
    agent_b.agent_start(task.id, &session).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM held_jwts")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the token is dropped once the task started");
    conn.close().await.ok();
    a.shutdown().await;
    b.shutdown().await;
    db.drop_now().await;
}

/// A TCP proxy in front of PostgreSQL that a test cuts (every connection through it
/// closed, new ones closed at once) and restores: what a replica sees of a PostgreSQL
/// restart or failover, without touching the shared server.
struct CutProxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    links: Vec<tokio::task::AbortHandle>,
}

impl CutProxy {
    async fn start(upstream: (String, u16)) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                let mut st = shared.lock().unwrap();
                if st.cut {
                    continue; // `down` is dropped: closed at once
                }
                let up = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect((up.0.as_str(), up.1)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                st.links.push(link.abort_handle());
            }
        });
        CutProxy { port, state }
    }

    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.cut = true;
        for link in st.links.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// PostgreSQL unreachable for longer than the agents' lease (a restart, a failover):
/// when it is back, the replica's lease reaper gives every open session a fresh lease
/// before judging any, instead of ending the sessions whose heartbeats (polls) it could
/// not record meanwhile; the agent's running task then finishes `success`. Regression
/// test for the PostgreSQL chaos soak's first finding: after a PostgreSQL restart
/// longer than the lease, the first sweep ended every agent's session and failed its
/// running tasks `agent-lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_of_the_database_longer_than_the_lease_loses_no_agent() {
    const LEASE_SECS: u64 = 2;
    let Some(db) = Database::create("outage").await else {
        return;
    };
    // SAFETY: set before any replica reads it, to the one value every test here uses.
    unsafe { std::env::set_var("RUNOPS_SECRET_KEY", KEY) };
    let direct = PgConnectOptions::from_str(&db.url()).unwrap();
    let upstream = format!("{}:{}", direct.get_host(), direct.get_port());
    assert!(
        db.url().contains(&upstream),
        "the test's PostgreSQL URL names its host and port: {}",
        db.url()
    );
    let proxy = CutProxy::start((direct.get_host().to_string(), direct.get_port())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    args.database_url = Some(
        db.url()
            .replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1),
    );
    args.agent_lease_secs = LEASE_SECS;
    let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
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
    let session = agent
        .agent_connect(&ConnectRequest {
            tags: None,
            hostname: "host".into(),
            version: "test".into(),
            instance_id: "i-1".into(),
            concurrency: 1,
            standby: false,
            restarted: false,
            spooled: Vec::new(),
            verifies_identity: false,
        })
        .await
        .unwrap()
        .session_id;
    let task = admin
        .create_task(&TaskCreate {
            target: "demo".into(),
            script: "sleep 10".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let poll = |running: Vec<i64>, free_slots| PollRequest {
        session_id: session.clone(),
        running,
        free_slots,
    };
    let offers = agent
        .agent_poll(&poll(vec![], 1), Duration::from_secs(10))
        .await
        .unwrap()
        .offers;
    assert_eq!(offers.len(), 1, "{offers:?}");
    agent.agent_start(task, &session).await.unwrap();

    proxy.cut();
    eventually("the replica to lose its database", || async {
        server.store().ping().await.is_err().then_some(())
    })
    .await;
    // Down for longer than the lease: the agent's polls fail meanwhile (503).
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 1)).await;
    let restored_at = now_ms();
    proxy.restore();

    // The reaper's first decision about the session once the database is back, read
    // directly (not through the proxy): a fresh lease, or (the bug) the session ended.
    let mut conn = PgConnection::connect_with(&direct).await.unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let (last_seen, ended_at) = loop {
        let (last_seen, ended_at): (i64, Option<i64>) =
            sqlx::query_as("SELECT last_seen, ended_at FROM agent_sessions WHERE id = $1")
                .bind(&session)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if last_seen >= restored_at || ended_at.is_some() {
            break (last_seen, ended_at);
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the lease reaper never judged the session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        ended_at, None,
        "the session was ended for heartbeats the replica could not record (last seen {last_seen})"
    );
    // The agent polls again (its heartbeat) and reports: nothing was lost.
    agent
        .agent_poll(&poll(vec![task], 0), Duration::from_secs(10))
        .await
        .expect("the session is alive");
    agent
        .agent_finish(
            task,
            &runops_proto::agent::FinishRequest {
                session_id: session.clone(),
                result: runops_proto::agent::TaskResult {
                    status: TaskStatus::Success,
                    exit_code: Some(0),
                    failure_reason: None,
                    failure_message: None,
                    redacted: true,
                    log_size: 0,
                    log_location: None,
                    elapsed_ms: 5,
                },
                log_tail: None,
            },
        )
        .await
        .unwrap();
    let t = admin.get_task(task).await.unwrap();
    assert_eq!(t.status, TaskStatus::Success, "{t:?}");
    conn.close().await.ok();
    server.shutdown().await;
    db.drop_now().await;
}
