//! The store conformance suite on SQLite: each contract on a fresh database in its
//! own temp dir.

mod conformance;

use conformance::{StoreSettings, StoreUnderTest};
use runops_server::store::sqlite::{LogQuotas, SqliteStore};
use std::sync::Arc;

async fn sqlite_store(settings: StoreSettings) -> StoreUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path())
        .await
        .expect("open the SQLite store")
        .with_log_quotas(LogQuotas {
            server_bytes: settings.server_log_quota_bytes,
            org_bytes: settings.org_log_quota_bytes,
        });
    StoreUnderTest::new(Arc::new(store), dir)
}

conformance::store_conformance!(sqlite_store);

/// Databases created before `sqlx::migrate!` (by the hand-written runner that recorded
/// versions in `schema_version`) open with today's code.
mod legacy_migrations {
    use runops_server::store::Store;
    use runops_server::store::sqlite::migrate::MIGRATOR;
    use runops_server::store::sqlite::{DB_FILE, SqliteStore};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    use sqlx::{Connection, SqliteConnection};
    use std::path::Path;

    /// The migrations the hand-written runner knew, as it embedded them.
    const LEGACY_MIGRATIONS: &[(i64, &str)] = &[
        (1, include_str!("../migrations/0001_init.sql")),
        (2, include_str!("../migrations/0002_target_config.sql")),
        (3, include_str!("../migrations/0003_identity.sql")),
        (4, include_str!("../migrations/0004_audit.sql")),
        (5, include_str!("../migrations/0005_agent_token_tags.sql")),
        (
            6,
            include_str!("../migrations/0006_disk_and_identities.sql"),
        ),
        (7, include_str!("../migrations/0007_redact_keys.sql")),
    ];

    /// The hand-written runner, as it was: applies versions up to `up_to`, each in a
    /// transaction with its row in `schema_version`.
    async fn create_the_old_way(dir: &Path, up_to: i64) {
        let opts = SqliteConnectOptions::new()
            .filename(dir.join(DB_FILE))
            .create_if_missing(true);
        let mut conn = SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (version, sql) in LEGACY_MIGRATIONS.iter().filter(|(v, _)| *v <= up_to) {
            let mut tx = conn.begin().await.unwrap();
            sqlx::raw_sql(*sql).execute(&mut *tx).await.unwrap();
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(1_700_000_000_000i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        // Data the upgrade must keep.
        sqlx::query("INSERT INTO orgs (name, created_at) VALUES ('acme', 1)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    async fn pool(dir: &Path) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.join(DB_FILE)))
            .await
            .unwrap()
    }

    /// `(version, checksum, execution_time)` as sqlx recorded them.
    async fn recorded(dir: &Path) -> Vec<(i64, Vec<u8>, i64)> {
        let pool = pool(dir).await;
        let rows = sqlx::query_as(
            "SELECT version, checksum, execution_time FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    }

    fn every_version() -> Vec<i64> {
        MIGRATOR.iter().map(|m| m.version).collect()
    }

    async fn assert_fully_migrated(dir: &Path) {
        let rows = recorded(dir).await;
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            every_version()
        );
        for ((version, checksum, _), m) in rows.iter().zip(MIGRATOR.iter()) {
            assert_eq!(
                checksum.as_slice(),
                &*m.checksum,
                "checksum of version {version}"
            );
        }
    }

    #[tokio::test]
    async fn a_database_of_the_old_runner_opens_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        create_the_old_way(dir.path(), 7).await;
        for _ in 0..2 {
            let store = SqliteStore::open(dir.path()).await.expect("opens");
            assert!(store.find_org_id("acme").await.unwrap().is_some());
            store.close().await;
            assert_fully_migrated(dir.path()).await;
        }
        let rows = recorded(dir.path()).await;
        assert!(
            rows.iter().filter(|r| r.0 <= 7).all(|r| r.2 == -1),
            "versions the old runner applied are marked, not re-run: {rows:?}"
        );
        // The old bookkeeping stays, so the previous binary still opens the database.
        let pool = pool(dir.path()).await;
        let legacy: i64 = sqlx::query_scalar("SELECT max(version) FROM schema_version")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(legacy, 7);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_database_the_old_runner_left_behind_gets_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        create_the_old_way(dir.path(), 5).await;
        let store = SqliteStore::open(dir.path()).await.expect("opens");
        // Migration 6 added log quotas' bookkeeping and 7 the redact keys: both work.
        let acme = store.find_org_id("acme").await.unwrap().unwrap();
        store
            .create_target(acme, &crate::conformance::target("t", None))
            .await
            .expect("the schema of version 7");
        store.close().await;
        assert_fully_migrated(dir.path()).await;
        let rows = recorded(dir.path()).await;
        let marked: Vec<i64> = rows.iter().filter(|r| r.2 == -1).map(|r| r.0).collect();
        assert_eq!(
            marked,
            vec![1, 2, 3, 4, 5],
            "only what the old runner applied"
        );
    }

    #[tokio::test]
    async fn a_new_database_records_every_migration_with_sqlx_only() {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::open(dir.path()).await.unwrap().close().await;
        assert_fully_migrated(dir.path()).await;
        let pool = pool(dir.path()).await;
        let legacy: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(legacy, 0);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_database_of_a_newer_runner_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        create_the_old_way(dir.path(), 7).await;
        let pool = pool(dir.path()).await;
        sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES (9999, 1)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let err = match SqliteStore::open(dir.path()).await {
            Ok(_) => panic!("a database from the future must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("9999") && err.contains("newer"), "{err}");
    }
}
