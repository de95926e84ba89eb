//! `runops server <command>`: maintenance commands that act on the database and exit
//! instead of serving (`migrate`, for deploy pipelines that migrate before rolling the
//! replicas).

use crate::ServerArgs;
use crate::store::postgres::{self, PgStore};

/// What `runops server` does instead of serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ServerCommand {
    /// Apply the pending database migrations and exit (PostgreSQL: --database-url; SQLite: --data-dir).
    Migrate,
}

/// The PostgreSQL URL of `args` (`None`: SQLite in the data dir); anything else than a
/// `postgres://` URL is refused rather than taken for a file.
pub fn database_url(args: &ServerArgs) -> anyhow::Result<Option<String>> {
    let Some(url) = args
        .database_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    if !postgres::is_postgres_url(url) {
        anyhow::bail!(
            "--database-url (RUNOPS_DATABASE_URL) must be a postgres:// or postgresql:// URL, not {}; leave it unset to use SQLite in --data-dir",
            postgres::redact_url(url)
        );
    }
    Ok(Some(url.to_string()))
}

/// Runs `command` and returns what to print.
pub async fn run(command: &ServerCommand, args: &ServerArgs) -> anyhow::Result<String> {
    match command {
        ServerCommand::Migrate => migrate(args).await,
    }
}

async fn migrate(args: &ServerArgs) -> anyhow::Result<String> {
    match database_url(args)? {
        Some(url) => {
            let store =
                PgStore::connect(postgres::connect_options(&url)?, args.database_pool_size).await?;
            let applied = store.migrate().await;
            store.pool().close().await;
            let applied = applied?;
            Ok(format!(
                "PostgreSQL database {}: {}",
                postgres::redact_url(&url),
                describe(&applied, postgres::MIGRATOR.iter().count())
            ))
        }
        None => {
            tokio::fs::create_dir_all(&args.data_dir)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the data dir {}: {e}",
                        args.data_dir.display()
                    )
                })?;
            let before = crate::store::sqlite::migrate::MIGRATOR.iter().count();
            let store = crate::store::sqlite::SqliteStore::open(&args.data_dir).await?;
            crate::store::Store::close(&store).await;
            Ok(format!(
                "SQLite database in {}: migrated ({before} migrations known)",
                args.data_dir.display()
            ))
        }
    }
}

fn describe(applied: &[i64], known: usize) -> String {
    if applied.is_empty() {
        format!("up to date ({known} migrations)")
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        format!("applied migration(s) {} of {known}", list.join(", "))
    }
}
