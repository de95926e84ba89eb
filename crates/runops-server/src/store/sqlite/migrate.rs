//! Schema migrations of the SQLite store: `migrations/NNNN_name.sql`, embedded at build
//! time by `sqlx::migrate!` and recorded with their checksums in `_sqlx_migrations`, so
//! an edited released migration is refused instead of silently diverging. Never edit a
//! released migration: add the next number (`build.rs` makes cargo see a new file).
//!
//! Databases created before this used a hand-written runner that recorded applied
//! versions in `schema_version` (no checksums). Opening one marks those versions as
//! applied in `_sqlx_migrations` (sqlx's own `skip`, with the embedded checksums: the
//! old runner applied the same files) before the pending ones run. `schema_version` is
//! left in place, so the previous binary can still open the database.

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use std::collections::BTreeSet;

/// Every migration of `crates/runops-server/migrations`, in version order.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The hand-written runner's bookkeeping table (databases made before `sqlx::migrate!`).
pub const LEGACY_TABLE: &str = "schema_version";

/// Brings the database to the latest schema.
pub async fn migrate(pool: &SqlitePool) -> anyhow::Result<()> {
    adopt_legacy_versions(pool).await?;
    let before = applied_versions(pool).await?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot migrate the database: {e}"))?;
    for m in MIGRATOR.iter().filter(|m| !before.contains(&m.version)) {
        tracing::info!(version = m.version, name = %m.description, "applied database migration");
    }
    Ok(())
}

/// Marks the versions the old runner applied as applied for sqlx. Idempotent (sqlx
/// skips only what it has not recorded), so a crash half-way is repaired next start.
async fn adopt_legacy_versions(pool: &SqlitePool) -> anyhow::Result<()> {
    if !table_exists(pool, LEGACY_TABLE).await? {
        return Ok(());
    }
    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_version")
        .fetch_one(pool)
        .await?;
    let Some(applied) = applied else {
        return Ok(());
    };
    if !MIGRATOR.version_exists(applied) {
        anyhow::bail!(
            "the database was migrated to version {applied} by a newer runops (this one knows versions up to {}); use that version or newer",
            MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
        );
    }
    MIGRATOR
        .skip(pool, Some(applied))
        .await
        .map_err(|e| anyhow::anyhow!("cannot adopt the migrations recorded in {LEGACY_TABLE}: {e}"))
}

async fn applied_versions(pool: &SqlitePool) -> anyhow::Result<BTreeSet<i64>> {
    if !table_exists(pool, "_sqlx_migrations").await? {
        return Ok(BTreeSet::new());
    }
    let v: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await?;
    Ok(v.into_iter().collect())
}

async fn table_exists(pool: &SqlitePool, name: &str) -> anyhow::Result<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}
