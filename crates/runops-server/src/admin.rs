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
    /// Copy a SQLite installation into an empty PostgreSQL database, verified by row counts and checksums.
    CopyStore {
        /// The SQLite installation: sqlite://<data dir> (the directory holding runops.db).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://user:password@host:5432/db.
        #[arg(long)]
        to: String,
    },
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
        ServerCommand::CopyStore { from, to } => copy_store_command(from, to, args).await,
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

async fn copy_store_command(from: &str, to: &str, args: &ServerArgs) -> anyhow::Result<String> {
    let Some(dir) = from.strip_prefix("sqlite://") else {
        anyhow::bail!(
            "--from must be sqlite://<data dir> (the directory holding runops.db), not {from}"
        );
    };
    let dir = std::path::Path::new(dir);
    if !postgres::is_postgres_url(to) {
        anyhow::bail!(
            "--to must be a postgres:// URL, not {}",
            postgres::redact_url(to)
        );
    }
    let pg = PgStore::open(postgres::connect_options(to)?, args.database_pool_size).await?;
    // The sealed configs and webhook secrets keep working only with the source's key:
    // record its fingerprint, so replicas started with another key refuse to start.
    let env_key = std::env::var(crate::sealed::SECRET_KEY_ENV).ok();
    let key_file = dir.join(crate::sealed::SECRET_KEY_FILE);
    let key_note = if env_key.as_deref().is_some_and(|k| !k.trim().is_empty()) || key_file.exists()
    {
        let sealer = crate::sealed::ConfigSealer::load(env_key.as_deref(), dir)?;
        pg.check_key_fingerprint(sealer.fingerprint()).await?;
        match env_key.filter(|k| !k.trim().is_empty()) {
            Some(_) => "start the replicas with the same RUNOPS_SECRET_KEY".to_string(),
            None => format!(
                "start the replicas with RUNOPS_SECRET_KEY set to the content of {}",
                key_file.display()
            ),
        }
    } else {
        "the source has no secret key yet: choose RUNOPS_SECRET_KEY for the replicas".to_string()
    };
    let copied = copy_store(dir, &pg).await;
    pg.pool().close().await;
    let copied = copied?;
    let mut out = format!(
        "copied {} into {}, verified:\n",
        dir.display(),
        postgres::redact_url(to)
    );
    for t in &copied {
        out.push_str(&format!(
            "  {:<20} {:>8} rows  sha256 {}\n",
            t.table, t.rows, t.checksum
        ));
    }
    out.push_str(&key_note);
    Ok(out)
}

fn describe(applied: &[i64], known: usize) -> String {
    if applied.is_empty() {
        format!("up to date ({known} migrations)")
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        format!("applied migration(s) {} of {known}", list.join(", "))
    }
}

/// The tables `copy-store` moves, parents first, with the columns that order their rows.
const COPIED_TABLES: &[(&str, &str)] = &[
    ("orgs", "id"),
    ("users", "id"),
    ("tokens", "id"),
    ("targets", "id"),
    ("agent_sessions", "id"),
    ("tasks", "id"),
    ("task_log_chunks", "task_id, end_offset"),
    ("audit_events", "id"),
    ("log_usage", "org_id"),
    ("task_reviews", "id"),
    ("webhooks", "id"),
    ("webhook_events", "id"),
    ("webhook_deliveries", "id"),
];

/// One copied table: rows and the checksum both sides agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    pub table: &'static str,
    pub rows: u64,
    pub checksum: String,
}

/// A value as both stores hold it (SQLite's integer flags are PostgreSQL's booleans).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    fn digest_into(&self, h: &mut sha2::Sha256) {
        use sha2::Digest;
        match self {
            Value::Null => h.update([0u8]),
            Value::Int(i) => {
                h.update([1u8]);
                h.update(i.to_le_bytes());
            }
            Value::Text(t) => {
                h.update([2u8]);
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            Value::Bytes(b) => {
                h.update([3u8]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
}

/// The checksum of `rows`: SHA-256 over the rows' own hashes, sorted (order-free).
fn checksum(rows: &[Vec<Value>]) -> String {
    use sha2::Digest;
    let mut hashes: Vec<[u8; 32]> = rows
        .iter()
        .map(|r| {
            let mut h = sha2::Sha256::new();
            for v in r {
                v.digest_into(&mut h);
            }
            h.finalize().into()
        })
        .collect();
    hashes.sort_unstable();
    let mut all = sha2::Sha256::new();
    for h in &hashes {
        all.update(h);
    }
    all.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `(column, PostgreSQL data type)` of a table of the PostgreSQL schema.
async fn pg_columns(pool: &sqlx::PgPool, table: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await?)
}

async fn read_sqlite(
    pool: &sqlx::SqlitePool,
    table: &str,
    columns: &[(String, String)],
) -> anyhow::Result<Vec<Vec<Value>>> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let list: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let sql = format!("SELECT {} FROM {table}", list.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, (_, pg_type)) in columns.iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            let v = if raw.is_null() {
                Value::Null
            } else {
                match pg_type.as_str() {
                    "bigint" | "boolean" => Value::Int(row.try_get::<i64, _>(i)?),
                    "bytea" => Value::Bytes(row.try_get::<Vec<u8>, _>(i)?),
                    "text" => Value::Text(row.try_get::<String, _>(i)?),
                    other => anyhow::bail!(
                        "{table}: column type {other} (SQLite {}) is not copied",
                        raw.type_info().name()
                    ),
                }
            };
            values.push(v);
        }
        out.push(values);
    }
    Ok(out)
}

async fn read_pg(
    pool: &sqlx::PgPool,
    table: &str,
    columns: &[(String, String)],
) -> anyhow::Result<Vec<Vec<Value>>> {
    use sqlx::Row;
    let list: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let sql = format!("SELECT {} FROM {table}", list.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, (_, pg_type)) in columns.iter().enumerate() {
            let v = match pg_type.as_str() {
                "bigint" => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                "boolean" => row
                    .try_get::<Option<bool>, _>(i)?
                    .map(|b| Value::Int(i64::from(b))),
                "bytea" => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
                _ => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
            };
            values.push(v.unwrap_or(Value::Null));
        }
        out.push(values);
    }
    Ok(out)
}

/// Copies every row of a SQLite installation (`data_dir`) into an empty PostgreSQL
/// database (`pg`, migrated), then reads both back and compares counts and checksums.
pub async fn copy_store(
    data_dir: &std::path::Path,
    pg: &PgStore,
) -> anyhow::Result<Vec<CopiedTable>> {
    let db = data_dir.join(crate::store::sqlite::DB_FILE);
    if !db.exists() {
        anyhow::bail!(
            "no SQLite database at {}: --from must name the data dir of the installation (sqlite:///var/lib/runops)",
            db.display()
        );
    }
    // Brings the source to the latest schema (the columns copied are today's).
    let source = crate::store::sqlite::SqliteStore::open(data_dir).await?;
    crate::store::Store::close(&source).await;
    let sqlite = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true),
    )
    .await?;
    let pool = pg.pool();
    let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM orgs")
        .fetch_one(pool)
        .await?;
    if orgs > 0 {
        anyhow::bail!(
            "the PostgreSQL database already holds an installation ({orgs} organisation(s)); copy into an empty database"
        );
    }
    let mut report = Vec::new();
    let mut tx = pool.begin().await?;
    let mut plan = Vec::new();
    for (table, _) in COPIED_TABLES {
        let columns = pg_columns(pool, table).await?;
        let rows = read_sqlite(&sqlite, table, &columns).await?;
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            names.join(", "),
            placeholders.join(", ")
        );
        for row in &rows {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
            for (v, (_, pg_type)) in row.iter().zip(&columns) {
                q = match (v, pg_type.as_str()) {
                    (Value::Null, "bigint") => q.bind(None::<i64>),
                    (Value::Null, "boolean") => q.bind(None::<bool>),
                    (Value::Null, "bytea") => q.bind(None::<Vec<u8>>),
                    (Value::Null, _) => q.bind(None::<String>),
                    (Value::Int(i), "boolean") => q.bind(*i != 0),
                    (Value::Int(i), _) => q.bind(*i),
                    (Value::Text(t), _) => q.bind(t.clone()),
                    (Value::Bytes(b), _) => q.bind(b.clone()),
                };
            }
            q.execute(&mut *tx).await?;
        }
        if columns.iter().any(|(c, t)| c == "id" && t == "bigint") {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )))
            .execute(&mut *tx)
            .await?;
        }
        plan.push((*table, columns, rows.len() as u64, checksum(&rows)));
    }
    tx.commit().await?;
    for (table, columns, rows, sum) in plan {
        let copied = read_pg(pool, table, &columns).await?;
        let copied_sum = checksum(&copied);
        if copied.len() as u64 != rows || copied_sum != sum {
            anyhow::bail!(
                "{table}: the copy differs from the source ({} rows, checksum {copied_sum}; source {rows} rows, checksum {sum})",
                copied.len()
            );
        }
        report.push(CopiedTable {
            table,
            rows,
            checksum: sum,
        });
    }
    sqlite.close().await;
    Ok(report)
}
