//! Two control-plane replicas in one process on one PostgreSQL database (issue 16):
//! what one replica held in memory before is shared through the database. The server
//! is `RUNOPS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! under CI a missing PostgreSQL fails the test, elsewhere it is skipped.

#[path = "../../runops/tests/common/guard.rs"]
mod guard;

use runops_client::Client;
use runops_jwt::testing::{JwksServer, TestKey, claims_for};
use runops_proto::agent::{ConnectRequest, PollRequest};
use runops_proto::api::{TargetCreate, TaskCreate};
use runops_server::identity::UnknownUsers;
use runops_server::{Server, ServerArgs};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::str::FromStr;
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
