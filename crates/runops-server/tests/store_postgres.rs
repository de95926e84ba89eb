//! The store conformance suite on PostgreSQL: each contract on a fresh database of its
//! own, created from a migrated template and dropped when the contract ends.
//!
//! The server is `RUNOPS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! the trust-auth service `scripts/test.sh` runs). Under CI a missing PostgreSQL fails
//! every test here (see `guard.rs`); elsewhere they print `SKIPPED` and pass.

mod conformance;
#[path = "../../runops/tests/common/guard.rs"]
mod guard;

use conformance::{StoreSettings, StoreUnderTest};
use runops_server::store::Store;
use runops_server::store::postgres::{LogQuotas, PgStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::OnceCell;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn server_url() -> String {
    std::env::var("RUNOPS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&server_url())
        .expect("RUNOPS_TEST_POSTGRES_URL is a PostgreSQL URL")
        .disable_statement_logging()
}

/// The migrated template of this test run (`None`: PostgreSQL is not reachable).
static TEMPLATE: OnceCell<Option<String>> = OnceCell::const_new();
static NEXT: AtomicU32 = AtomicU32::new(0);

async fn template() -> Option<String> {
    TEMPLATE
        .get_or_init(|| async {
            let mut admin = PgConnection::connect_with(&admin_options()).await.ok()?;
            drop_leftovers(&mut admin).await;
            let name = format!("runops_tpl_{}", std::process::id());
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .expect("create the template database");
            }
            let store = PgStore::open(admin_options().database(&name), 2)
                .await
                .expect("migrate the template database");
            store.close().await;
            admin.close().await.ok();
            Some(name)
        })
        .await
        .clone()
}

/// Drops the databases of earlier runs whose process is gone (killed mid-run).
async fn drop_leftovers(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'runops\\_tpl\\_%' OR datname LIKE 'runops\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    for name in names {
        let pid = name.split('_').nth(2).unwrap_or_default();
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut *admin)
        .await;
    }
}

/// Drops its database (and, for the last one, the template) when the test ends.
struct Database {
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: the test's runtime is shutting down or busy.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect_with(&admin_options()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A fresh, migrated database; `None` when PostgreSQL is missing (and not under CI).
async fn fresh_database() -> Option<(PgConnectOptions, Database)> {
    let template = template().await;
    if !guard::require(
        &format!("PostgreSQL at {}", server_url()),
        template.is_some(),
    ) {
        return None;
    }
    let template = template?;
    let name = format!(
        "runops_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = PgConnection::connect_with(&admin_options())
        .await
        .expect("connect to PostgreSQL");
    // CREATE DATABASE ... TEMPLATE needs the template without other sessions: creations
    // of this run queue on an advisory lock.
    sqlx::query("SELECT pg_advisory_lock(8616)")
        .execute(&mut admin)
        .await
        .expect("lock");
    // A copy fails while anything else (autovacuum) is connected to the template:
    // that passes, so try again a few times.
    let mut created = Err(sqlx::Error::PoolClosed);
    for _ in 0..50 {
        created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut admin)
        .await;
        match &created {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    sqlx::query("SELECT pg_advisory_unlock(8616)")
        .execute(&mut admin)
        .await
        .expect("unlock");
    created.expect("create the test database");
    admin.close().await.ok();
    Some((admin_options().database(&name), Database { name }))
}

/// Keeps the database alive as long as the store; dropped after the store is closed.
struct Guard {
    _db: Database,
}

async fn postgres_store(settings: StoreSettings) -> StoreUnderTest {
    let Some((opts, db)) = fresh_database().await else {
        // Not under CI and no PostgreSQL: the contract runs against SQLite instead of
        // failing, after the SKIPPED line above.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = runops_server::store::sqlite::SqliteStore::open(dir.path())
            .await
            .expect("open SQLite");
        return StoreUnderTest::new(Arc::new(store), dir);
    };
    let store = PgStore::open(opts, 8)
        .await
        .expect("open the PostgreSQL store")
        .with_log_quotas(LogQuotas {
            server_bytes: settings.server_log_quota_bytes,
            org_bytes: settings.org_log_quota_bytes,
        });
    let store: Arc<dyn Store> = Arc::new(store);
    StoreUnderTest::new(store, Guard { _db: db })
}

conformance::store_conformance!(postgres_store);
