//! The SQLite store: one file in the data dir, WAL mode, embedded migrations.
//!
//! Writes go through exactly one connection, held by the store behind a lock
//! (`Writer`), so writers queue in the process instead of failing with `SQLITE_BUSY`,
//! and every state change is one short transaction. Reads use a separate small pool
//! that WAL lets run beside the writer; the reads of the request path run without a
//! thread hop (`inline`), and an agent's start and result are written optimistically
//! (`start_if_unchanged`).

mod inline;
mod webhooks;

use super::web_sessions as web_sessions_trait;
use super::*;
use crate::lifecycle::{self, Event, LogLimit, LogRoom, Refusal, TaskState, Write};
use chrono::{DateTime, Utc};
use inline::{Cols, InlineReaders, read_all, read_optional};
use runops_proto::api::DEFAULT_TIMEOUT_SECS;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

pub mod migrate;

/// Name of the database file inside the data dir.
pub const DB_FILE: &str = "runops.db";

/// How long a connection waits for a lock held by another process (a backup tool,
/// the `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of a new database: log chunks are up to 1 MiB BLOBs, and big pages
/// mean far fewer overflow pages to chain per chunk (measured: the main cost of
/// appending logs). Only applies when the file is created.
const PAGE_SIZE: u32 = 16384;

/// Readers running beside the single writer; enough for the API's list and log reads.
const READ_POOL_SIZE: u32 = 4;

/// Log bytes appended after which the background checkpointer copies the WAL into the
/// database: SQLite's own default, 1000 pages (16 MiB at [`PAGE_SIZE`]), but done on a
/// connection of its own so the writer no longer waits for the copy and its two fsyncs
/// in the middle of a log chunk's commit (BENCHMARKS.md, issue 20).
const CHECKPOINT_AFTER_LOG_BYTES: u64 = 1000 * PAGE_SIZE as u64;

/// How often the checkpointer looks at the WAL anyway (other writes than logs).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// WAL pages after which the writer checkpoints by itself after all, should the
/// background checkpointer fall behind (256 MiB at [`PAGE_SIZE`]).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16 * 1000;

/// The name the first start gives the first admin's token.
pub const FIRST_ADMIN_TOKEN_NAME: &str = "bootstrap admin";

/// Log quotas beyond the per-task cap; 0 = none.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuotas {
    /// Bytes of log kept by the whole server.
    pub server_bytes: u64,
    /// Bytes of log kept by one organisation.
    pub org_bytes: u64,
}

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// The request path's reads (token, session, task, log), without a thread hop.
    inline: InlineReaders,
    quotas: LogQuotas,
    checkpoints: Checkpoints,
}

/// The one connection that writes, held by the store rather than pooled: a pool pings
/// a connection each time it is given back, a second round trip to the connection's
/// thread after every write, and the next writer waited for it (BENCHMARKS.md, issue
/// 20). Writers queue in order on the lock.
struct Writer(tokio::sync::Mutex<Option<sqlx::SqliteConnection>>);

impl Writer {
    async fn connect(opts: &SqliteConnectOptions) -> Result<Writer, sqlx::Error> {
        use sqlx::ConnectOptions;
        Ok(Writer(tokio::sync::Mutex::new(Some(opts.connect().await?))))
    }

    /// The connection, once the writers before have finished; an error once the store
    /// is closed.
    async fn lock(&self) -> StoreResult<tokio::sync::MappedMutexGuard<'_, sqlx::SqliteConnection>> {
        tokio::sync::MutexGuard::try_map(self.0.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))
    }

    /// Closes the connection after the writers before; later writes fail.
    async fn close(&self) {
        if let Some(conn) = self.0.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// Asks the background checkpointer to run once enough log bytes went into the WAL.
/// Dropping it (with the store) ends the checkpointer.
struct Checkpoints {
    appended: std::sync::atomic::AtomicU64,
    wake: tokio::sync::mpsc::Sender<()>,
}

impl Checkpoints {
    /// Starts the checkpointer on a connection of its own made from `opts`.
    fn start(opts: SqliteConnectOptions) -> Checkpoints {
        let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            use sqlx::ConnectOptions;
            let mut conn = None;
            loop {
                // Woken, or the interval passed; the store was dropped: done.
                if let Ok(None) = tokio::time::timeout(CHECKPOINT_INTERVAL, woken.recv()).await {
                    return;
                }
                if conn.is_none() {
                    conn = opts.connect().await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                // PASSIVE: copies what no reader still needs, never waits for a lock
                // and never blocks the writer.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut *c)
                    .await
                {
                    tracing::debug!("background WAL checkpoint failed: {e}");
                    conn = None;
                }
            }
        });
        Checkpoints {
            appended: std::sync::atomic::AtomicU64::new(0),
            wake,
        }
    }

    /// Counts `bytes` of log committed; wakes the checkpointer past the threshold.
    fn log_appended(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        let before = self.appended.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes >= CHECKPOINT_AFTER_LOG_BYTES {
            self.appended.store(0, Ordering::Relaxed);
            let _ = self.wake.try_send(());
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/runops.db` and migrates it.
    pub async fn open(data_dir: &Path) -> anyhow::Result<SqliteStore> {
        let path = data_dir.join(DB_FILE);
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a power loss may lose the last commits, never corrupt.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Statement journals and sorts in memory: with the default (files), every
            // multi-row write of a transaction created, then unlinked, a file in
            // /var/tmp (six system calls per task).
            .pragma("temp_store", "MEMORY")
            .page_size(PAGE_SIZE)
            .busy_timeout(BUSY_TIMEOUT);
        let checkpoints = Checkpoints::start(opts.clone());
        let writer_opts = opts.clone().pragma(
            "wal_autocheckpoint",
            WRITER_AUTOCHECKPOINT_PAGES.to_string(),
        );
        let cannot_open =
            |e: sqlx::Error| anyhow::anyhow!("cannot open the database {}: {e}", path.display());
        // sqlx's migrator wants a pool: one of a single connection, closed after it.
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_opts.clone())
            .await
            .map_err(cannot_open)?;
        migrate::migrate(&migrations).await?;
        migrations.close().await;
        let writer = Writer::connect(&writer_opts).await.map_err(cannot_open)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        // One per thread of the runtime or more, so a read rarely waits for another.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let inline = InlineReaders::open(&path, threads.clamp(READ_POOL_SIZE as usize, 16))?;
        Ok(SqliteStore {
            writer,
            reader,
            inline,
            quotas: LogQuotas::default(),
            checkpoints,
        })
    }

    /// Enforces `quotas` on every later log append.
    pub fn with_log_quotas(mut self, quotas: LogQuotas) -> SqliteStore {
        self.quotas = quotas;
        self
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn ts(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

fn ts_opt(ms: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(ts).transpose()
}

fn json_list(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bad list {text:?}: {e}")))
}

fn to_json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn user_from_row(row: &(impl Cols + ?Sized), org: &str) -> StoreResult<User> {
    Ok(User {
        id: row.col("u_id")?,
        name: row.col("u_name")?,
        email: row.col("u_email")?,
        groups: json_list(&row.col::<String>("u_groups")?)?,
        role: row.col("u_role")?,
        org: org.to_string(),
        created_at: ts(row.col("u_created_at")?)?,
    })
}

macro_rules! user_cols {
    () => {
        "u.id AS u_id, u.name AS u_name, u.email AS u_email, u.groups_json AS u_groups, u.role AS u_role, u.created_at AS u_created_at"
    };
}

/// A query with its arguments, as the binding helpers pass it along.
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

/// The stored settings of a target, each a column and the value bound to it: the one
/// list the targets' INSERT, UPDATE and SELECT and a task's snapshot of its target (its
/// INSERT; the offer reads the snapshot back) are generated from. `target` columns only
/// a target row has; `snapshot` columns a task copies at its creation, under the same
/// names.
macro_rules! target_settings_sql {
    (
        target { $($tcol:literal => |$tt:ident| $tbind:expr,)* }
        snapshot { $($scol:literal => |$st:ident| $sbind:expr,)* }
    ) => {
        /// Every settings column of `targets`, in bind order.
        const TARGET_SETTING_COLUMNS: &[&str] = &[$($tcol,)* $($scol,)*];
        /// The settings columns a task snapshots (the same names in `tasks`), in bind
        /// order.
        const SNAPSHOT_COLUMNS: &[&str] = &[$($scol,)*];

        /// Binds the values of [`TARGET_SETTING_COLUMNS`].
        fn bind_target_settings<'q>(q: SqliteQuery<'q>, target: &Target) -> SqliteQuery<'q> {
            $( let q = { let $tt = target; q.bind($tbind) }; )*
            bind_snapshot(q, target)
        }

        /// Binds the values of [`SNAPSHOT_COLUMNS`].
        fn bind_snapshot<'q>(q: SqliteQuery<'q>, target: &Target) -> SqliteQuery<'q> {
            $( let q = { let $st = target; q.bind($sbind) }; )*
            q
        }
    };
}

target_settings_sql! {
    target {
        "kind" => |t| &t.kind,
        "description" => |t| &t.description,
        "tags" => |t| &t.tags,
        "runner_provider" => |t| &t.runner_provider,
        "channel" => |t| &t.channel,
    }
    snapshot {
        "secret_provider" => |t| &t.secret_provider,
        "secret_path" => |t| &t.secret_path,
        "secret_mapping" => |t| mapping_text(t),
        "redact" => |t| &t.redact,
        "custom_command" => |t| &t.custom_command,
        "timeout_secs" => |t| i64::try_from(t.timeout).unwrap_or(i64::MAX),
        "redact_keys_json" => |t| to_json_list(&t.redact_keys),
        "public_keys_json" => |t| to_json_list(&t.public_keys),
        "review" => |t| &t.review,
        "reviewers_json" => |t| to_json_list(&t.reviewers),
        "min_approvals" => |t| t.min_approvals.map(i64::from),
        "approval_ttl_secs" => |t| i64::try_from(t.approval_ttl).unwrap_or(i64::MAX),
        "review_ttl_secs" => |t| i64::try_from(t.review_ttl).unwrap_or(i64::MAX),
    }
}

/// `?, ?, ?` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The columns [`target_from_row`] reads.
static TARGET_SELECT_COLS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "name, created_at, updated_at, config_keys_json, {}",
        TARGET_SETTING_COLUMNS.join(", ")
    )
});

static INSERT_TARGET_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO targets (org_id, name, created_at, updated_at, {}) VALUES (?, ?, ?, ?, {})",
        TARGET_SETTING_COLUMNS.join(", "),
        placeholders(TARGET_SETTING_COLUMNS.len())
    )
});

static UPDATE_TARGET_SQL: LazyLock<String> = LazyLock::new(|| {
    let set: Vec<String> = TARGET_SETTING_COLUMNS
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect();
    format!(
        "UPDATE targets SET updated_at = ?, {} WHERE org_id = ? AND name = ?",
        set.join(", ")
    )
});

static LIST_TARGETS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM targets WHERE org_id = ? ORDER BY name",
        *TARGET_SELECT_COLS
    )
});

static GET_TARGET_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM targets WHERE org_id = ? AND name = ?",
        *TARGET_SELECT_COLS
    )
});

/// A task and its snapshot of the target's settings.
macro_rules! task_cols {
    () => {
        "id, org_id, target_name, tags, kind, script, message, user_email, status, exit_code, failure_reason, failure_message, session_id, agent_hostname, cancel_requested, redacted, log_received, log_kept, log_size, log_location, created_at, started_at, finished_at, elapsed_ms, offer_deadline, created_with_jwt, template_name, template_commit, template_params_json"
    };
}

/// The columns of a task's lifecycle state that change, as an optimistic write
/// compares them: the row still holds the state its change was decided on. Bound by
/// [`bind_unchanged`].
macro_rules! unchanged_sql {
    () => {
        "status = ? AND session_id IS ? AND offer_deadline IS ? AND cancel_requested = ? AND failure_reason IS ? AND log_received = ?"
    };
}

/// An agent's result, without its RETURNING (bound by [`bind_finish`]).
macro_rules! finish_sql {
    () => {
        "UPDATE tasks SET status = ?, exit_code = ?, failure_reason = ?, failure_message = ?, redacted = ?, log_size = ?, log_location = ?, finished_at = ?, elapsed_ms = ?, offer_deadline = NULL WHERE id = ?"
    };
}

/// `Write::Start`'s statement, without its RETURNING (binds: status, started_at, id).
macro_rules! start_sql {
    () => {
        "UPDATE tasks SET status = ?, started_at = ?, offer_deadline = NULL WHERE id = ?"
    };
}

static INSERT_TASK_SQL: LazyLock<String> = LazyLock::new(|| {
    const OWN: &[&str] = &[
        "org_id",
        "target_name",
        "tags",
        "tag_key",
        "kind",
        "script",
        "message",
        "user_id",
        "user_email",
        "user_groups_json",
        "status",
        "created_at",
        "created_with_jwt",
        "review_sha256",
        "template_name",
        "template_commit",
        "template_params_json",
    ];
    // RETURNING the whole row: the new task without a second statement.
    format!(
        "INSERT INTO tasks ({}, {}) VALUES ({}) RETURNING {}",
        OWN.join(", "),
        SNAPSHOT_COLUMNS.join(", "),
        placeholders(OWN.len() + SNAPSHOT_COLUMNS.len()),
        task_cols!()
    )
});

fn target_from_row(row: &(impl Cols + ?Sized)) -> StoreResult<Target> {
    let mapping: Option<String> = row.col("secret_mapping")?;
    let secret_mapping = match mapping {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            StoreError::Corrupt(format!("stored secret_mapping is not a JSON object: {e}"))
        })?),
    };
    let timeout: i64 = row.col("timeout_secs")?;
    Ok(Target {
        name: row.col("name")?,
        kind: row.col("kind")?,
        description: row.col("description")?,
        tags: row.col("tags")?,
        secret_provider: row.col("secret_provider")?,
        secret_path: row.col("secret_path")?,
        secret_mapping,
        runner_provider: row.col("runner_provider")?,
        redact: row.col("redact")?,
        review: row.col("review")?,
        reviewers: json_list(&row.col::<String>("reviewers_json")?)?,
        min_approvals: row
            .col::<Option<i64>>("min_approvals")?
            .and_then(|n| u32::try_from(n).ok()),
        approval_ttl: u64_of(row.col("approval_ttl_secs")?),
        review_ttl: u64_of(row.col("review_ttl_secs")?),
        custom_command: row.col("custom_command")?,
        timeout: u64::try_from(timeout).unwrap_or(DEFAULT_TIMEOUT_SECS),
        channel: row.col("channel")?,
        created_at: ts(row.col("created_at")?)?,
        updated_at: ts(row.col("updated_at")?)?,
        config_keys: json_list(&row.col::<String>("config_keys_json")?)?,
        redact_keys: json_list(&row.col::<String>("redact_keys_json")?)?,
        public_keys: json_list(&row.col::<String>("public_keys_json")?)?,
    })
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn task_from_row(row: &(impl Cols + ?Sized)) -> StoreResult<TaskRecord> {
    let id: i64 = row.col("id")?;
    let status = parse_status(&row.col::<String>("status")?)?;
    let log_received = u64_of(row.col("log_received")?);
    let log_size: Option<i64> = row.col("log_size")?;
    let started_ms: Option<i64> = row.col("started_at")?;
    let finished_ms: Option<i64> = row.col("finished_at")?;
    let elapsed: Option<i64> = row.col("elapsed_ms")?;
    let elapsed_ms = match (elapsed, started_ms, finished_ms) {
        (Some(e), _, _) => Some(u64_of(e)),
        (None, Some(s), Some(f)) => Some(u64_of(f - s)),
        (None, Some(s), None) => Some(u64_of(Utc::now().timestamp_millis() - s)),
        _ => None,
    };
    let exit_code: Option<i64> = row.col("exit_code")?;
    let task = Task {
        id,
        target: row.col("target_name")?,
        kind: row.col("kind")?,
        script: row.col("script")?,
        message: row.col("message")?,
        status,
        exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
        failure_reason: parse_reason(row.col("failure_reason")?)?,
        failure_message: row.col("failure_message")?,
        user: row.col("user_email")?,
        agent: row.col("agent_hostname")?,
        redacted: row.col::<i64>("redacted")? != 0,
        log_size: log_size.map(u64_of).unwrap_or(log_received),
        log_location: row.col("log_location")?,
        task_logs: format!("/v1/tasks/{id}/logs"),
        created_at: ts(row.col("created_at")?)?,
        started_at: ts_opt(started_ms)?,
        finished_at: ts_opt(finished_ms)?,
        elapsed_ms,
        review: None,
        template: super::task_template_of(
            row.col("template_name")?,
            row.col("template_commit")?,
            row.col("template_params_json")?,
        )?,
    };
    Ok(TaskRecord {
        task,
        org_id: row.col("org_id")?,
        tags: row.col("tags")?,
        session_id: row.col("session_id")?,
        cancel_requested: row.col::<i64>("cancel_requested")? != 0,
        log_received,
        log_kept: u64_of(row.col("log_kept")?),
    })
}

macro_rules! session_cols {
    () => {
        "s.id, s.org_id, o.name AS org_name, s.token_id, s.tags, s.hostname, s.version, s.instance_id, s.concurrency, s.connected_at, s.last_seen, s.ended_at, s.verifies_identity"
    };
}

fn session_from_row(row: &(impl Cols + ?Sized)) -> StoreResult<SessionRecord> {
    let concurrency: i64 = row.col("concurrency")?;
    Ok(SessionRecord {
        id: row.col("id")?,
        org_id: row.col("org_id")?,
        org: row.col("org_name")?,
        token_id: row.col("token_id")?,
        tags: row.col("tags")?,
        hostname: row.col("hostname")?,
        version: row.col("version")?,
        instance_id: row.col("instance_id")?,
        concurrency: u32::try_from(concurrency).unwrap_or(0),
        connected_at_ms: row.col("connected_at")?,
        last_seen_ms: row.col("last_seen")?,
        ended_at_ms: row.col("ended_at")?,
        verifies_identity: row.col("verifies_identity")?,
    })
}

const SESSION_BY_ID_SQL: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.id = ?"
);

const GET_TASK_SQL: &str = concat!(
    "SELECT ",
    task_cols!(),
    " FROM tasks WHERE org_id = ? AND id = ?"
);

const FIND_TOKEN_SQL: &str = concat!(
    "SELECT t.id, t.org_id, o.name AS org_name, t.kind, t.hash, t.user_id, t.revoked_at, t.tags AS token_tags, ",
    user_cols!(),
    " FROM tokens t JOIN orgs o ON o.id = t.org_id LEFT JOIN users u ON u.id = t.user_id WHERE t.hash = ?"
);

fn token_from_row(row: &(impl Cols + ?Sized)) -> StoreResult<AuthToken> {
    let org: String = row.col("org_name")?;
    let kind = match row.col::<String>("kind")?.as_str() {
        "user" => TokenKind::User,
        "agent" => TokenKind::Agent,
        other => return Err(StoreError::Corrupt(format!("token kind `{other}`"))),
    };
    let stored: Vec<u8> = row.col("hash")?;
    let hash: [u8; 32] = stored
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))?;
    let user_id: Option<i64> = row.col("user_id")?;
    let user = match user_id {
        Some(_) => Some(user_from_row(row, &org)?),
        None => None,
    };
    Ok(AuthToken {
        id: row.col("id")?,
        org_id: row.col("org_id")?,
        org,
        kind,
        hash,
        user,
        revoked: row.col::<Option<i64>>("revoked_at")?.is_some(),
        tags: row.col("token_tags")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    fn web_sessions(&self) -> Option<&dyn web_sessions_trait::WebSessionStore> {
        Some(self)
    }

    async fn is_empty(&self) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orgs")
            .fetch_one(&mut *self.writer.lock().await?)
            .await?;
        Ok(n == 0)
    }

    async fn create_org(&self, name: &str, now_ms: i64) -> StoreResult<i64> {
        let r = sqlx::query("INSERT INTO orgs (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now_ms)
            .execute(&mut *self.writer.lock().await?)
            .await;
        match r {
            Ok(r) => Ok(r.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "organisation `{name}` already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_org_id(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM orgs WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *self.writer.lock().await?)
            .await?)
    }

    async fn first_admin(&self) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.role = ? ORDER BY o.id, u.id LIMIT 1"
        ))
        .bind(runops_proto::Role::Admin.as_str())
        .fetch_optional(&mut *self.writer.lock().await?)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let org: String = row.try_get("org_name")?;
                Ok(Some(user_from_row(&row, &org)?))
            }
        }
    }

    async fn create_user(&self, org_id: i64, user: &NewUser, now_ms: i64) -> StoreResult<User> {
        let r = sqlx::query(
            "INSERT INTO users (org_id, name, email, groups_json, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(org_id)
        .bind(&user.name)
        .bind(&user.email)
        .bind(to_json_list(&user.groups))
        .bind(user.role.as_str())
        .bind(now_ms)
        .execute(&mut *self.writer.lock().await?)
        .await;
        let id = match r {
            Ok(r) => r.last_insert_rowid(),
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user with e-mail `{}` already exists",
                    user.email
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let org: String = sqlx::query_scalar("SELECT name FROM orgs WHERE id = ?")
            .bind(org_id)
            .fetch_one(&mut *self.writer.lock().await?)
            .await?;
        Ok(User {
            id,
            name: user.name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            role: user.role.as_str().to_string(),
            org,
            created_at: ts(now_ms)?,
        })
    }

    async fn list_users(&self, org_id: i64) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.org_id = ? ORDER BY u.id"
        ))
        .bind(org_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let org: String = r.try_get("org_name")?;
                user_from_row(r, &org)
            })
            .collect()
    }

    async fn create_token(
        &self,
        org_id: i64,
        kind: TokenKind,
        user_id: Option<i64>,
        name: Option<&str>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> StoreResult<i64> {
        let kind = match kind {
            TokenKind::User => "user",
            TokenKind::Agent => "agent",
        };
        self.insert_token(org_id, kind, user_id, name, None, hash, now_ms)
            .await
    }

    async fn create_agent_token(
        &self,
        org_id: i64,
        name: Option<&str>,
        tags: Option<&str>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> StoreResult<i64> {
        self.insert_token(org_id, "agent", None, name, tags, hash, now_ms)
            .await
    }

    async fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<AuthToken>> {
        self.inline
            .read(|c| read_optional(c, FIND_TOKEN_SQL, [&hash[..]], |r| token_from_row(r)))
    }

    async fn unrevoke_token(&self, token_id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked_at = NULL WHERE id = ?")
            .bind(token_id)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(())
    }

    async fn list_agent_tokens(&self, org_id: i64) -> StoreResult<Vec<AgentToken>> {
        let rows = sqlx::query(
            "SELECT id, name, tags, created_at, revoked_at FROM tokens WHERE org_id = ? AND kind = 'agent' ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentToken {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    tags: r.try_get("tags")?,
                    created_at: ts(r.try_get("created_at")?)?,
                    revoked_at: ts_opt(r.try_get("revoked_at")?)?,
                })
            })
            .collect()
    }

    async fn revoke_agent_token(
        &self,
        org_id: i64,
        token_id: i64,
        now_ms: i64,
    ) -> StoreResult<Option<Vec<String>>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? AND org_id = ? AND kind = 'agent'",
        )
        .bind(now_ms)
        .bind(token_id)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM agent_sessions WHERE token_id = ? AND ended_at IS NULL",
        )
        .bind(token_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(sessions))
    }

    async fn create_target(&self, org_id: i64, t: &Target) -> StoreResult<Target> {
        let q = sqlx::query(INSERT_TARGET_SQL.as_str())
            .bind(org_id)
            .bind(&t.name)
            .bind(t.created_at.timestamp_millis())
            .bind(t.updated_at.timestamp_millis());
        let r = bind_target_settings(q, t)
            .execute(&mut *self.writer.lock().await?)
            .await;
        match r {
            Ok(_) => Ok(t.clone()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "target `{}` already exists",
                t.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_targets(&self, org_id: i64) -> StoreResult<Vec<Target>> {
        let rows = sqlx::query(LIST_TARGETS_SQL.as_str())
            .bind(org_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(target_from_row).collect()
    }

    async fn get_target(&self, org_id: i64, name: &str) -> StoreResult<Option<Target>> {
        self.inline
            .read(|c| read_optional(c, &GET_TARGET_SQL, (org_id, name), |r| target_from_row(r)))
    }

    async fn update_target(&self, org_id: i64, t: &Target) -> StoreResult<Option<Target>> {
        let q = sqlx::query(UPDATE_TARGET_SQL.as_str()).bind(t.updated_at.timestamp_millis());
        let r = bind_target_settings(q, t)
            .bind(org_id)
            .bind(&t.name)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok((r.rows_affected() > 0).then(|| t.clone()))
    }

    async fn target_config(
        &self,
        org_id: i64,
        name: &str,
    ) -> StoreResult<Option<SealedTargetConfig>> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT tags, config_sealed FROM targets WHERE org_id = ? AND name = ?")
                .bind(org_id)
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.and_then(|(tags, sealed)| {
            Some(SealedTargetConfig {
                tags,
                sealed: sealed?,
            })
        }))
    }

    async fn set_target_config(
        &self,
        org_id: i64,
        name: &str,
        config: Option<(&[u8], &[String])>,
    ) -> StoreResult<bool> {
        let (sealed, keys) = match config {
            Some((sealed, keys)) => (Some(sealed), to_json_list(keys)),
            None => (None, "[]".to_string()),
        };
        let r = sqlx::query(
            "UPDATE targets SET config_sealed = ?, config_keys_json = ? WHERE org_id = ? AND name = ?",
        )
        .bind(sealed)
        .bind(keys)
        .bind(org_id)
        .bind(name)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_target(&self, org_id: i64, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM targets WHERE org_id = ? AND name = ?")
            .bind(org_id)
            .bind(name)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn create_task(&self, org_id: i64, t: &NewTask, now_ms: i64) -> StoreResult<TaskRecord> {
        let target = &t.target;
        let q = sqlx::query(INSERT_TASK_SQL.as_str())
            .bind(org_id)
            .bind(&target.name)
            .bind(&target.tags)
            .bind(tag_key(target.tags.as_deref()))
            .bind(&t.kind)
            .bind(&t.script)
            .bind(&t.message)
            .bind(t.user.id)
            .bind(&t.user.email)
            .bind(to_json_list(&t.user.groups))
            .bind(t.status.as_str())
            .bind(now_ms)
            .bind(t.created_with_jwt)
            .bind(&t.review_sha256)
            .bind(t.template.as_ref().map(|x| &x.name))
            .bind(t.template.as_ref().map(|x| &x.commit))
            .bind(super::task_template_params_json(t.template.as_ref()));
        let row = bind_snapshot(q, target)
            .fetch_one(&mut *self.writer.lock().await?)
            .await?;
        task_from_row(&row)
    }

    async fn get_task(&self, org_id: i64, id: i64) -> StoreResult<Option<TaskRecord>> {
        self.inline
            .read(|c| read_optional(c, GET_TASK_SQL, (org_id, id), |r| task_from_row(r)))
    }

    async fn list_tasks(&self, org_id: i64, q: &TaskListQuery) -> StoreResult<Vec<Task>> {
        let status = q.status.map(|s| s.as_str());
        let since_ms = q.since.map(|t| t.timestamp_millis());
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        let sql = list_tasks_sql(q);
        // Built from fixed clauses only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org_id);
        if let Some(s) = status {
            query = query.bind(s);
        }
        if let Some(t) = &q.target {
            query = query.bind(t);
        }
        if let Some(u) = &q.user {
            query = query.bind(u);
        }
        if let Some(b) = q.before {
            query = query.bind(b);
        }
        if let Some(s) = since_ms {
            query = query.bind(s);
        }
        let rows = query.bind(limit).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| task_from_row(r).map(|t| t.task))
            .collect()
    }

    async fn claim_tasks(
        &self,
        session: &SessionRecord,
        limit: u32,
        now_ms: i64,
        deadline_ms: i64,
    ) -> StoreResult<Vec<ClaimedTask>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Most polls find nothing ready: asking a reader first spares the writer a
        // write transaction that changes nothing. (A task made ready right after this
        // wakes the poll, which asks again.)
        let tags = tag_key(session.tags.as_deref());
        let any_ready = self.inline.read(|c| {
            Ok(c.prepare_cached(&ANY_READY_SQL)?
                .exists((session.org_id, tags))?)
        })?;
        if !any_ready {
            return Ok(Vec::new());
        }
        // One statement: the select and the update are atomic, and the partial index
        // `tasks_ready` finds the oldest ready tasks without a scan.
        let rows = sqlx::query(CLAIM_SQL.as_str())
            .bind(lifecycle::CLAIM.to.as_str())
            .bind(&session.id)
            .bind(&session.hostname)
            .bind(deadline_ms)
            .bind(now_ms)
            .bind(session.org_id)
            .bind(tags)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.writer.lock().await?)
            .await?;
        let start_deadline_ms = u64_of(deadline_ms - now_ms);
        let mut offers = rows
            .iter()
            .map(|r| {
                let offer = TaskOffer {
                    task_id: r.try_get("id")?,
                    target: r.try_get("target_name")?,
                    kind: r.try_get("kind")?,
                    script: r.try_get("script")?,
                    message: r.try_get("message")?,
                    secret_provider: r.try_get("secret_provider")?,
                    secret_path: r.try_get("secret_path")?,
                    secret_mapping: r.try_get("secret_mapping")?,
                    redact: r.try_get("redact")?,
                    redact_keys: json_list(&r.try_get::<String, _>("redact_keys_json")?)?,
                    public_keys: json_list(&r.try_get::<String, _>("public_keys_json")?)?,
                    custom_command: r.try_get("custom_command")?,
                    timeout_secs: u64_of(r.try_get("timeout_secs")?),
                    user_email: r.try_get("user_email")?,
                    user_groups: json_list(&r.try_get::<String, _>("user_groups_json")?)?,
                    user_jwt: None,
                    user_jwt_proof: None,
                    // For a reviewed task, when its creator ran it after the approval:
                    // the identity token sent then is the one the agent checks.
                    created_at_ms: Some(r.try_get("run_from")?),
                    config: None,
                    start_deadline_ms,
                };
                Ok(ClaimedTask {
                    offer,
                    created_with_jwt: r.try_get::<i64, _>("created_with_jwt")? != 0,
                    target_has_config: r.try_get::<i64, _>("target_has_config")? != 0,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        offers.sort_by_key(|c| c.offer.task_id);
        Ok(offers)
    }

    async fn start_task(
        &self,
        org_id: i64,
        id: i64,
        session_id: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<StartOutcome>> {
        // The usual start, in one statement: decided on the row as read, written if
        // the row still holds that state. Anything else takes the locked way below.
        let event = Event::Start { session_id, now_ms };
        if let Some((rec, state)) = self.read_task_state(org_id, id)?
            && let Ok(d) = lifecycle::decide(&state, &event)
            && matches!(d.write, Write::Start)
            && let Some(after) = self.start_if_unchanged(id, &state, now_ms).await?
        {
            return Ok(Decided {
                outcome: StartOutcome::Started(Box::new(after)),
                effects: TaskEffects::for_task(&rec, d.effects),
            });
        }
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return Ok(Decided::only(StartOutcome::NotFound));
        };
        let d = match lifecycle::decide(&state, &event) {
            Ok(d) => d,
            Err(Refusal::Ended(status)) => return Ok(Decided::only(StartOutcome::Ended(status))),
            Err(_) => return Ok(Decided::only(StartOutcome::OfferExpired)),
        };
        let after = write_task(&mut tx, id, &d.write, now_ms).await?;
        tx.commit().await?;
        let outcome = match (&d.write, after) {
            (Write::Start, Some(after)) => StartOutcome::Started(Box::new(after)),
            (Write::Nothing, _) => StartOutcome::Started(Box::new(rec.clone())),
            _ => StartOutcome::OfferExpired,
        };
        Ok(Decided {
            outcome,
            effects: TaskEffects::for_task(&rec, d.effects),
        })
    }

    async fn append_log(
        &self,
        org_id: i64,
        id: i64,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
        cap_bytes: u64,
    ) -> StoreResult<Decided<AppendOutcome>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        // Only the columns the log path needs (a chunk comes many times a second).
        let row = sqlx::query(
            "SELECT id, org_id, target_name, tags, status, session_id, offer_deadline, cancel_requested, failure_reason, log_received, log_kept, log_truncated, created_with_jwt, created_at \
             FROM tasks WHERE org_id = ? AND id = ?",
        )
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Decided::only(AppendOutcome::NotFound));
        };
        let state = TaskState {
            status: parse_status(&row.try_get::<String, _>("status")?)?,
            session_id: row.try_get("session_id")?,
            offer_deadline_ms: row.try_get("offer_deadline")?,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            failure_reason: parse_reason(row.try_get("failure_reason")?)?,
            log_received: u64_of(row.try_get("log_received")?),
            created_with_jwt: row.try_get::<i64, _>("created_with_jwt")? != 0,
            created_at_ms: row.try_get("created_at")?,
        };
        let task = TaskRef {
            id,
            org_id,
            tags: row.try_get("tags")?,
            target: Some(row.try_get("target_name")?),
            session_id: state.session_id.clone(),
        };
        let kept = u64_of(row.try_get("log_kept")?);
        let truncated = row.try_get::<i64, _>("log_truncated")? != 0;
        let chunk = Event::LogChunk {
            session_id,
            offset,
            len: bytes.len() as u64,
        };
        let d = match lifecycle::decide(&state, &chunk) {
            Ok(d) => d,
            Err(Refusal::LogGap { stored }) => {
                return Ok(Decided::only(AppendOutcome::Gap(stored)));
            }
            Err(
                Refusal::Ended(status) | Refusal::NotYours(status) | Refusal::WrongStatus(status),
            ) => return Ok(Decided::only(AppendOutcome::Ended(status))),
            Err(r) => {
                return Ok(Decided::only(AppendOutcome::Ended(refused_status(
                    r, &state,
                ))));
            }
        };
        let effects = (!d.effects.is_empty()).then_some(TaskEffects {
            task,
            effects: d.effects,
        });
        let Write::AppendLog { skip } = d.write else {
            // A resend of bytes already stored.
            return Ok(Decided {
                outcome: AppendOutcome::Stored(state.log_received),
                effects,
            });
        };
        let new = &bytes[usize::try_from(skip).unwrap_or(usize::MAX).min(bytes.len())..];
        let mut kept_now = kept;
        let mut truncated_now = truncated;
        if !truncated {
            let mut room = LogRoom {
                task: (cap_bytes, kept),
                org: None,
                server: None,
            };
            if self.quotas.org_bytes > 0 {
                let used: i64 = sqlx::query_scalar(
                    "SELECT coalesce(max(bytes), 0) FROM log_usage WHERE org_id = ?",
                )
                .bind(org_id)
                .fetch_one(&mut *tx)
                .await?;
                room.org = Some((self.quotas.org_bytes, u64_of(used)));
            }
            if self.quotas.server_bytes > 0 {
                let used: i64 = sqlx::query_scalar("SELECT coalesce(sum(bytes), 0) FROM log_usage")
                    .fetch_one(&mut *tx)
                    .await?;
                room.server = Some((self.quotas.server_bytes, u64_of(used)));
            }
            let plan = lifecycle::log_keep(new.len() as u64, &room);
            let keep = &new[..usize::try_from(plan.keep)
                .unwrap_or(usize::MAX)
                .min(new.len())];
            if !keep.is_empty() {
                insert_chunk(&mut tx, id, kept_now, keep).await?;
                kept_now += keep.len() as u64;
            }
            if let Some(note) = plan.note {
                if let Some((limit @ (LogLimit::Org | LogLimit::Server), quota)) = plan.limit {
                    let (whose, flag) = if limit == LogLimit::Org {
                        ("this organisation's", "--org-log-quota-bytes")
                    } else {
                        ("new", "--log-quota-bytes")
                    };
                    tracing::warn!(
                        task = id,
                        org_id,
                        quota,
                        "log quota reached: {whose} log bytes are no longer kept (raise {flag} or lower --log-retention-days)",
                    );
                }
                insert_chunk(&mut tx, id, kept_now, note.as_bytes()).await?;
                kept_now += note.len() as u64;
                truncated_now = true;
            }
            if kept_now > kept {
                add_log_usage(&mut tx, org_id, (kept_now - kept) as i64).await?;
            }
        }
        let received_now = d.next.log_received;
        sqlx::query(
            "UPDATE tasks SET log_received = ?, log_kept = ?, log_truncated = ? WHERE id = ?",
        )
        .bind(i64::try_from(received_now).unwrap_or(i64::MAX))
        .bind(i64::try_from(kept_now).unwrap_or(i64::MAX))
        .bind(i64::from(truncated_now))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.checkpoints.log_appended(kept_now - kept);
        Ok(Decided {
            outcome: AppendOutcome::Stored(received_now),
            effects,
        })
    }

    async fn read_log(&self, id: i64, offset: u64, max: usize) -> StoreResult<Vec<u8>> {
        let offset_i = i64::try_from(offset).unwrap_or(i64::MAX);
        self.inline.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT start_offset, data FROM task_log_chunks WHERE task_id = ? AND end_offset > ? ORDER BY end_offset",
            )?;
            let mut rows = stmt.query((id, offset_i))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let start = u64_of(row.get("start_offset")?);
                let data = row.get_ref("data")?.as_blob().map_err(|e| {
                    StoreError::Corrupt(format!("log chunk of task {id}: {e}"))
                })?;
                let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
                if from < data.len() {
                    out.extend_from_slice(&data[from..]);
                }
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
    }

    async fn first_admin_token(&self) -> StoreResult<Option<(i64, bool)>> {
        let row = sqlx::query(
            "SELECT id, first_used_at FROM tokens WHERE kind = 'user' AND name = ? AND revoked_at IS NULL ORDER BY id LIMIT 1",
        )
        .bind(FIRST_ADMIN_TOKEN_NAME)
        .fetch_optional(&mut *self.writer.lock().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let used: Option<i64> = row.try_get("first_used_at")?;
        Ok(Some((row.try_get("id")?, used.is_some())))
    }

    async fn mark_token_used(&self, token_id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET first_used_at = ? WHERE id = ? AND first_used_at IS NULL")
            .bind(now_ms)
            .bind(token_id)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(())
    }

    async fn revoke_token_by_id(&self, token_id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(token_id)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(())
    }

    async fn purge_logs(
        &self,
        finished_before_ms: i64,
        now_ms: i64,
        note: &str,
        limit: usize,
    ) -> StoreResult<(usize, Vec<PurgedLogs>)> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let rows = sqlx::query(
            "SELECT id, org_id, log_kept FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? \
             AND log_purged_at IS NULL ORDER BY finished_at LIMIT ?",
        )
        .bind(finished_before_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let seen = rows.len();
        let mut by_org: BTreeMap<i64, PurgedLogs> = BTreeMap::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let org_id: i64 = row.try_get("org_id")?;
            let kept = u64_of(row.try_get("log_kept")?);
            let mut kept_now = 0u64;
            if kept > 0 {
                sqlx::query("DELETE FROM task_log_chunks WHERE task_id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                insert_chunk(&mut tx, id, 0, note.as_bytes()).await?;
                kept_now = note.len() as u64;
                // The server's own note does not count against the quotas.
                add_log_usage(&mut tx, org_id, -i64::try_from(kept).unwrap_or(i64::MAX)).await?;
            }
            sqlx::query("UPDATE tasks SET log_kept = ?, log_purged_at = ? WHERE id = ?")
                .bind(kept_now as i64)
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if kept > 0 {
                let e = by_org.entry(org_id).or_insert_with(|| PurgedLogs {
                    org_id,
                    ..Default::default()
                });
                e.tasks += 1;
                e.bytes += kept;
            }
        }
        tx.commit().await?;
        Ok((seen, by_org.into_values().collect()))
    }

    async fn finish_task(
        &self,
        org_id: i64,
        id: i64,
        req: &FinishRequest,
        now_ms: i64,
    ) -> StoreResult<Decided<FinishOutcome>> {
        let event = Event::Finish {
            session_id: &req.session_id,
            status: req.result.status,
            failure_reason: req.result.failure_reason,
            log_size: req.result.log_size,
            log_elsewhere: req.result.log_location.is_some(),
        };
        // The usual finish, in one statement: decided on the row as read, written if
        // the row still holds that state. Anything else takes the locked way below.
        if let Some((rec, state)) = self.read_task_state(org_id, id)?
            && let Ok(d) = lifecycle::decide(&state, &event)
            && let Write::Finish { status, reason } = d.write
            && let Some(after) = self
                .finish_if_unchanged(id, &state, req, status, reason, now_ms)
                .await?
        {
            return Ok(Decided {
                outcome: FinishOutcome::Finished(Box::new(after)),
                effects: TaskEffects::for_task(&rec, d.effects),
            });
        }
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return Ok(Decided::only(FinishOutcome::NotFound));
        };
        let d = match lifecycle::decide(&state, &event) {
            Ok(d) => d,
            Err(Refusal::Ended(status)) => return Ok(Decided::only(FinishOutcome::Ended(status))),
            Err(Refusal::LogIncomplete { stored }) => {
                return Ok(Decided::only(FinishOutcome::LogIncomplete { stored }));
            }
            Err(_) => return Ok(Decided::only(FinishOutcome::NotYours)),
        };
        let Write::Finish { status, reason } = d.write else {
            // The same result again: the first one stays.
            return Ok(Decided::only(FinishOutcome::AlreadyFinished(Box::new(rec))));
        };
        let q = sqlx::query(concat!(finish_sql!(), " RETURNING ", task_cols!()));
        let row = bind_finish(q, req, status, reason, now_ms, id)
            .fetch_one(&mut *tx)
            .await?;
        let after = task_from_row(&row)?;
        tx.commit().await?;
        Ok(Decided {
            outcome: FinishOutcome::Finished(Box::new(after)),
            effects: TaskEffects::for_task(&rec, d.effects),
        })
    }

    async fn kill_task(
        &self,
        org_id: i64,
        id: i64,
        by_email: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<KillOutcome>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return Ok(Decided::only(KillOutcome::NotFound));
        };
        let d = match lifecycle::decide(&state, &Event::Kill { by: by_email }) {
            Ok(d) => d,
            Err(r) => {
                return Ok(Decided::only(KillOutcome::AlreadyEnded(refused_status(
                    r, &state,
                ))));
            }
        };
        let after = write_task(&mut tx, id, &d.write, now_ms)
            .await?
            .unwrap_or_else(|| rec.clone());
        tx.commit().await?;
        let outcome = match d.write {
            Write::RequestCancel => KillOutcome::CancelRequested {
                session_id: after.session_id.clone(),
                task: Box::new(after),
            },
            _ => KillOutcome::CancelledBeforeStart(Box::new(after)),
        };
        Ok(Decided {
            outcome,
            effects: TaskEffects::for_task(&rec, d.effects),
        })
    }

    async fn cancels_for(
        &self,
        session_id: &str,
        org_id: i64,
        running: &[i64],
    ) -> StoreResult<Vec<i64>> {
        let mut ids = self.inline.read(|c| {
            let ids = if running.is_empty() {
                let mut stmt = c.prepare_cached(&CANCELS_SQL)?;
                stmt.query_map([session_id], |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                // One statement for both (a poll listing running tasks is the common
                // case of a busy agent).
                let list = serde_json::to_string(running).unwrap_or_else(|_| "[]".into());
                let mut stmt = c.prepare_cached(&CANCELS_OR_ENDED_SQL)?;
                let finals = status_list(&lifecycle::FINAL);
                stmt.query_map((session_id, list, org_id, finals), |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?
            };
            Ok(ids)
        })?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    async fn requeue_expired_offers(&self, now_ms: i64) -> StoreResult<Vec<RequeuedOffer>> {
        let rule = lifecycle::OFFER_EXPIRED;
        let rows = sqlx::query(
            "UPDATE tasks SET status = ?, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL \
             WHERE status = ? AND offer_deadline < ? RETURNING id, org_id, tags",
        )
        .bind(rule.to.as_str())
        .bind(rule.from.as_str())
        .bind(now_ms)
        .fetch_all(&mut *self.writer.lock().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RequeuedOffer {
                    task_id: r.try_get("id")?,
                    org_id: r.try_get("org_id")?,
                    tags: r.try_get("tags")?,
                })
            })
            .collect()
    }

    async fn create_session(&self, s: &NewSession, now_ms: i64) -> StoreResult<SessionRecord> {
        let r = sqlx::query(
            "INSERT INTO agent_sessions (id, org_id, token_id, tags, tag_key, hostname, version, instance_id, concurrency, connected_at, last_seen, verifies_identity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(s.org_id)
        .bind(s.token_id)
        .bind(&s.tags)
        .bind(tag_key(s.tags.as_deref()))
        .bind(&s.hostname)
        .bind(&s.version)
        .bind(&s.instance_id)
        .bind(i64::from(s.concurrency))
        .bind(now_ms)
        .bind(now_ms)
        .bind(s.verifies_identity)
        .execute(&mut *self.writer.lock().await?)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(
                    "another agent is already connected with these tags".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.session_by_id(&mut *self.writer.lock().await?, &s.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("session {} vanished", s.id)))
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        self.inline
            .read(|c| read_optional(c, SESSION_BY_ID_SQL, [id], |r| session_from_row(r)))
    }

    async fn find_live_session(
        &self,
        org_id: i64,
        tags: Option<&str>,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.org_id = ? AND s.tag_key = ? AND s.ended_at IS NULL"
        ))
        .bind(org_id)
        .bind(tag_key(tags))
        .fetch_optional(&mut *self.writer.lock().await?)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn recover_restarted_session(
        &self,
        id: &str,
        keep: &[i64],
        now_ms: i64,
    ) -> StoreResult<EndedSession> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((mut recovered, _)) = session_head(&mut tx, id).await? else {
            return Ok(EndedSession::default());
        };
        release_session_tasks(
            &mut tx,
            id,
            &mut recovered,
            &SessionEnd::Restarted,
            keep,
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(recovered)
    }

    async fn resume_session(
        &self,
        id: &str,
        hostname: &str,
        version: &str,
        concurrency: u32,
        verifies_identity: bool,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agent_sessions SET hostname = ?, version = ?, concurrency = ?, verifies_identity = ?, last_seen = ? WHERE id = ?",
        )
        .bind(hostname)
        .bind(version)
        .bind(i64::from(concurrency))
        .bind(verifies_identity)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(())
    }

    async fn touch_session(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agent_sessions SET last_seen = max(last_seen, ?) WHERE id = ? AND ended_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(())
    }

    async fn end_session(
        &self,
        id: &str,
        how: &SessionEnd,
        now_ms: i64,
    ) -> StoreResult<EndedSession> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((mut ended, already)) = session_head(&mut tx, id).await? else {
            return Ok(EndedSession::default());
        };
        if already {
            return Ok(ended);
        }
        sqlx::query("UPDATE agent_sessions SET ended_at = ?, end_reason = ? WHERE id = ?")
            .bind(now_ms)
            .bind(how.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        release_session_tasks(&mut tx, id, &mut ended, how, &[], now_ms).await?;
        tx.commit().await?;
        ended.ended_now = true;
        Ok(ended)
    }

    async fn stale_sessions(&self, cutoff_ms: i64) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.ended_at IS NULL AND s.last_seen < ?"
        ))
        .bind(cutoff_ms)
        .fetch_all(&mut *self.writer.lock().await?)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn extend_live_sessions(&self, now_ms: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE agent_sessions SET last_seen = max(last_seen, ?) WHERE ended_at IS NULL",
        )
        .bind(now_ms)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(r.rows_affected())
    }

    async fn find_user_by_email(&self, org_id: i64, email: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.org_id = ? AND lower(u.email) = lower(?) ORDER BY u.id LIMIT 1"
        ))
        .bind(org_id)
        .bind(email)
        .fetch_optional(&mut *self.writer.lock().await?)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let org: String = row.try_get("org_name")?;
                Ok(Some(user_from_row(&row, &org)?))
            }
        }
    }

    async fn set_user_groups(&self, user_id: i64, groups: &[String]) -> StoreResult<()> {
        sqlx::query("UPDATE users SET groups_json = ? WHERE id = ?")
            .bind(to_json_list(groups))
            .bind(user_id)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(())
    }

    async fn list_user_tokens(
        &self,
        org_id: i64,
        user_id: Option<i64>,
    ) -> StoreResult<Vec<runops_proto::api::UserToken>> {
        let rows = sqlx::query(
            "SELECT t.id, t.name, u.email, t.created_at, t.revoked_at FROM tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.org_id = ? AND t.kind = 'user' AND (? IS NULL OR t.user_id = ?) ORDER BY t.id",
        )
        .bind(org_id)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(runops_proto::api::UserToken {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    user: r.try_get("email")?,
                    created_at: ts(r.try_get("created_at")?)?,
                    revoked_at: ts_opt(r.try_get("revoked_at")?)?,
                    current: false,
                })
            })
            .collect()
    }

    async fn revoke_user_token(
        &self,
        org_id: i64,
        token_id: i64,
        user_id: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) \
             WHERE id = ? AND org_id = ? AND kind = 'user' AND (? IS NULL OR user_id = ?)",
        )
        .bind(now_ms)
        .bind(token_id)
        .bind(org_id)
        .bind(user_id)
        .bind(user_id)
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tasks_created_with_jwt(&self, org_id: i64, ids: &[i64]) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_scalar(
            "SELECT t.id FROM json_each(?) j JOIN tasks t ON t.id = j.value WHERE t.org_id = ? AND t.created_with_jwt = 1",
        )
        .bind(list)
        .bind(org_id)
        .fetch_all(&mut *self.writer.lock().await?)
        .await?)
    }

    async fn fail_unstarted_task(
        &self,
        org_id: i64,
        id: i64,
        reason: FailureReason,
        message: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<bool>> {
        let event = Event::FailUnstarted { reason, message };
        self.decide_and_write(org_id, id, &event, now_ms).await
    }

    async fn ready_proven_task(&self, org_id: i64, id: i64) -> StoreResult<Decided<bool>> {
        self.decide_and_write(org_id, id, &Event::Proven, 0).await
    }

    async fn fail_tasks_awaiting_proof(&self, message: &str, now_ms: i64) -> StoreResult<u64> {
        let rule = lifecycle::PROOF_LOST;
        let r = sqlx::query(
            "UPDATE tasks SET status = ?, failure_reason = ?, failure_message = ?, finished_at = ? \
             WHERE status = ? AND created_with_jwt = 1",
        )
        .bind(rule.to.as_str())
        .bind(rule.reason.map(|r| r.as_str()))
        .bind(message)
        .bind(now_ms)
        .bind(rule.from.as_str())
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(r.rows_affected())
    }

    async fn list_live_agents(&self, org_id: i64) -> StoreResult<Vec<Agent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.org_id = ? AND s.ended_at IS NULL ORDER BY s.tag_key"
        ))
        .bind(org_id)
        .fetch_all(&self.reader)
        .await?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = session_from_row(row)?;
            let running: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE session_id = ? AND status = ? ORDER BY id",
            )
            .bind(&s.id)
            .bind(TaskStatus::Running.as_str())
            .fetch_all(&self.reader)
            .await?;
            agents.push(Agent {
                id: s.id,
                tags: s.tags,
                hostname: s.hostname,
                version: s.version,
                concurrency: s.concurrency,
                connected_at: ts(s.connected_at_ms)?,
                last_seen: ts(s.last_seen_ms)?,
                running_tasks: running,
            });
        }
        Ok(agents)
    }

    async fn record_audit(&self, e: &NewAuditEvent) -> StoreResult<i64> {
        let r = sqlx::query(
            "INSERT INTO audit_events (org_id, at, actor_email, actor_kind, action, object_kind, object_id, remote_addr, detail_json) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.org_id)
        .bind(e.at_ms)
        .bind(&e.actor_email)
        .bind(e.actor_kind)
        .bind(e.action)
        .bind(e.object_kind)
        .bind(&e.object_id)
        .bind(&e.remote_addr)
        .bind(e.detail.to_string())
        .execute(&mut *self.writer.lock().await?)
        .await?;
        Ok(r.last_insert_rowid())
    }

    async fn list_audit(&self, org_id: i64, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        let actor = q.actor.as_deref().map(AuditActorFilter::of);
        // Only the filters given, so that SQLite can use the `audit_events_org_*` indexes.
        let mut sql = String::from(
            "SELECT id, at, actor_email, actor_kind, action, object_kind, object_id, remote_addr, detail_json \
             FROM audit_events WHERE org_id = ?",
        );
        for (given, clause) in [
            (q.before.is_some(), " AND id < ?"),
            (q.action.is_some(), " AND action = ?"),
            (
                matches!(actor, Some(AuditActorFilter::Email(_))),
                " AND actor_email = ?",
            ),
            (
                matches!(actor, Some(AuditActorFilter::Kind(_))),
                " AND actor_email IS NULL AND actor_kind = ?",
            ),
            (q.object.is_some(), " AND object_id = ?"),
        ] {
            if given {
                sql.push_str(clause);
            }
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        // Built from fixed clauses only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org_id);
        if let Some(b) = q.before {
            query = query.bind(b);
        }
        if let Some(a) = &q.action {
            query = query.bind(a);
        }
        match actor {
            Some(AuditActorFilter::Email(e)) | Some(AuditActorFilter::Kind(e)) => {
                query = query.bind(e);
            }
            None => {}
        }
        if let Some(o) = &q.object {
            query = query.bind(o);
        }
        let rows = query.bind(limit).fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail_json")?;
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: ts(r.try_get("at")?)?,
                    actor: r.try_get("actor_email")?,
                    actor_kind: r.try_get("actor_kind")?,
                    action: r.try_get("action")?,
                    object_kind: r.try_get("object_kind")?,
                    object_id: r.try_get("object_id")?,
                    remote_addr: r.try_get("remote_addr")?,
                    detail: serde_json::from_str(&detail).map_err(|e| {
                        StoreError::Corrupt(format!("bad audit detail {detail:?}: {e}"))
                    })?,
                })
            })
            .collect()
    }

    async fn metrics_gauges(&self) -> StoreResult<StoreGauges> {
        // A scan of `tasks` (no index has every status); `/metrics` caches the result.
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
                .fetch_all(&self.reader)
                .await?;
        let mut tasks_by_status = Vec::with_capacity(rows.len());
        for (status, n) in rows {
            tasks_by_status.push((parse_status(&status)?, u64::try_from(n).unwrap_or(0)));
        }
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM agent_sessions WHERE ended_at IS NULL")
                .fetch_one(&self.reader)
                .await?;
        Ok(StoreGauges {
            tasks_by_status,
            live_agents: u64::try_from(live).unwrap_or(0),
        })
    }
}

impl SqliteStore {
    /// Task `id` and its lifecycle state as a reader sees them now (no lock: a change
    /// decided on it is written only if the row is unchanged, see `unchanged_sql!`).
    fn read_task_state(
        &self,
        org_id: i64,
        id: i64,
    ) -> StoreResult<Option<(TaskRecord, TaskState)>> {
        self.inline
            .read(|c| read_optional(c, GET_TASK_SQL, (org_id, id), |r| task_state_from_row(r)))
    }

    /// `Write::Start` for task `id` if its row still holds `state`; `None` when it
    /// changed since `state` was read (nothing written).
    async fn start_if_unchanged(
        &self,
        id: i64,
        state: &TaskState,
        now_ms: i64,
    ) -> StoreResult<Option<TaskRecord>> {
        let q = sqlx::query(concat!(
            start_sql!(),
            " AND ",
            unchanged_sql!(),
            " RETURNING ",
            task_cols!()
        ))
        .bind(TaskStatus::Running.as_str())
        .bind(now_ms)
        .bind(id);
        let row = bind_unchanged(q, state)
            .fetch_optional(&mut *self.writer.lock().await?)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// An agent's result for task `id` if its row still holds `state`; `None` when it
    /// changed since `state` was read (nothing written).
    async fn finish_if_unchanged(
        &self,
        id: i64,
        state: &TaskState,
        req: &FinishRequest,
        status: TaskStatus,
        reason: Option<FailureReason>,
        now_ms: i64,
    ) -> StoreResult<Option<TaskRecord>> {
        let q = sqlx::query(concat!(
            finish_sql!(),
            " AND ",
            unchanged_sql!(),
            " RETURNING ",
            task_cols!()
        ));
        let row = bind_unchanged(bind_finish(q, req, status, reason, now_ms, id), state)
            .fetch_optional(&mut *self.writer.lock().await?)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// One task, one event: reads the row in the write transaction, asks the lifecycle,
    /// writes what it decided. `true` when the event applied.
    async fn decide_and_write(
        &self,
        org_id: i64,
        id: i64,
        event: &Event<'_>,
        now_ms: i64,
    ) -> StoreResult<Decided<bool>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return Ok(Decided::only(false));
        };
        let Ok(d) = lifecycle::decide(&state, event) else {
            return Ok(Decided::only(false));
        };
        write_task(&mut tx, id, &d.write, now_ms).await?;
        tx.commit().await?;
        Ok(Decided {
            outcome: true,
            effects: TaskEffects::for_task(&rec, d.effects),
        })
    }
}

/// A task row and its lifecycle state, read in the write transaction: the single
/// writer connection holds it until the decided change is written.
async fn locked_task(
    tx: &mut Transaction<'_, Sqlite>,
    org_id: i64,
    id: i64,
) -> StoreResult<Option<(TaskRecord, TaskState)>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        task_cols!(),
        " FROM tasks WHERE org_id = ? AND id = ?"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(task_state_from_row).transpose()
}

/// A task row (of `task_cols!`) and the lifecycle state it holds.
fn task_state_from_row(row: &(impl Cols + ?Sized)) -> StoreResult<(TaskRecord, TaskState)> {
    let rec = task_from_row(row)?;
    let state = TaskState {
        status: rec.task.status,
        session_id: rec.session_id.clone(),
        offer_deadline_ms: row.col("offer_deadline")?,
        cancel_requested: rec.cancel_requested,
        failure_reason: rec.task.failure_reason,
        log_received: rec.log_received,
        created_with_jwt: row.col::<i64>("created_with_jwt")? != 0,
        created_at_ms: rec.task.created_at.timestamp_millis(),
    };
    Ok((rec, state))
}

/// Binds the values of `unchanged_sql!`.
fn bind_unchanged<'q>(q: SqliteQuery<'q>, state: &'q TaskState) -> SqliteQuery<'q> {
    q.bind(state.status.as_str())
        .bind(state.session_id.as_deref())
        .bind(state.offer_deadline_ms)
        .bind(i64::from(state.cancel_requested))
        .bind(state.failure_reason.map(|r| r.as_str()))
        .bind(i64::try_from(state.log_received).unwrap_or(i64::MAX))
}

/// Binds the values of `finish_sql!`.
fn bind_finish<'q>(
    q: SqliteQuery<'q>,
    req: &'q FinishRequest,
    status: TaskStatus,
    reason: Option<FailureReason>,
    now_ms: i64,
    id: i64,
) -> SqliteQuery<'q> {
    let message = match status {
        TaskStatus::Success => None,
        _ => req.result.failure_message.as_deref(),
    };
    q.bind(status.as_str())
        .bind(req.result.exit_code)
        .bind(reason.map(|r| r.as_str()))
        .bind(message)
        .bind(req.result.redacted)
        .bind(i64::try_from(req.result.log_size).unwrap_or(i64::MAX))
        .bind(req.result.log_location.as_deref().unwrap_or("server"))
        .bind(now_ms)
        .bind(i64::try_from(req.result.elapsed_ms).unwrap_or(i64::MAX))
        .bind(id)
}

/// Writes a change the lifecycle decided for one task and returns the task as it is
/// now; `None` when nothing changes. (Log appends and agent results carry data of
/// their own: `append_log` and `finish_task` write those.)
async fn write_task(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    write: &Write,
    now_ms: i64,
) -> StoreResult<Option<TaskRecord>> {
    let row = match write {
        Write::Nothing => return Ok(None),
        Write::Status(status) => {
            sqlx::query(concat!(
                "UPDATE tasks SET status = ? WHERE id = ? RETURNING ",
                task_cols!()
            ))
            .bind(status.as_str())
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::Requeue => {
            sqlx::query(concat!(
                "UPDATE tasks SET status = ?, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL WHERE id = ? RETURNING ",
                task_cols!()
            ))
            .bind(TaskStatus::Ready.as_str())
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::Start => {
            sqlx::query(concat!(start_sql!(), " RETURNING ", task_cols!()))
            .bind(TaskStatus::Running.as_str())
            .bind(now_ms)
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::End {
            status,
            reason,
            message,
        } => {
            // `elapsed_ms` stays NULL for a task that never started.
            sqlx::query(concat!(
                "UPDATE tasks SET status = ?, failure_reason = ?, failure_message = ?, finished_at = ?, elapsed_ms = ? - started_at, offer_deadline = NULL WHERE id = ? RETURNING ",
                task_cols!()
            ))
            .bind(status.as_str())
            .bind(reason.map(|r| r.as_str()))
            .bind(message)
            .bind(now_ms)
            .bind(now_ms)
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::RequestCancel => {
            sqlx::query(concat!(
                "UPDATE tasks SET cancel_requested = 1 WHERE id = ? RETURNING ",
                task_cols!()
            ))
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::Offer | Write::AppendLog { .. } | Write::Finish { .. } => {
            return Err(StoreError::Corrupt(format!(
                "task {id}: {write:?} is written by its own store method"
            )));
        }
    };
    task_from_row(&row).map(Some)
}

/// The status a refusal reports (the task's own when the refusal names none).
fn refused_status(r: Refusal, state: &TaskState) -> TaskStatus {
    match r {
        Refusal::Ended(s) | Refusal::NotYours(s) | Refusal::WrongStatus(s) => s,
        _ => state.status,
    }
}

/// Statuses as the JSON array `json_each(?)` reads.
fn status_list(statuses: &[TaskStatus]) -> String {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

/// Statements that run on every poll and compare `status` in their WHERE clause. The
/// status is spliced in from [`TaskStatus::as_str`] instead of bound: SQLite re-plans a
/// statement on every run when a bound value might select a partial index
/// (`tasks_ready`, `tasks_dispatched`), and the claim needs `tasks_ready`.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET status = ?, session_id = ?, agent_hostname = ?, offer_deadline = ?, dispatched_at = ? \
         WHERE id IN (SELECT id FROM tasks WHERE status = {from} AND org_id = ? AND tag_key = ? ORDER BY id LIMIT ?) \
         RETURNING id, target_name, kind, script, message, secret_provider, secret_path, secret_mapping, redact, redact_keys_json, public_keys_json, custom_command, timeout_secs, user_email, user_groups_json, coalesce(run_requested_at, created_at) AS run_from, created_with_jwt, \
         EXISTS (SELECT 1 FROM targets g WHERE g.org_id = tasks.org_id AND g.name = tasks.target_name AND g.config_sealed IS NOT NULL) AS target_has_config",
        from = sql_literal(lifecycle::CLAIM.from),
    )
});

/// Whether `CLAIM_SQL` would find a ready task (the same partial index).
static ANY_READY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM tasks WHERE status = {from} AND org_id = ? AND tag_key = ? LIMIT 1",
        from = sql_literal(lifecycle::CLAIM.from),
    )
});

static CANCELS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM tasks WHERE session_id = ? AND status = {running} AND cancel_requested = 1",
        running = sql_literal(TaskStatus::Running),
    )
});

/// [`CANCELS_SQL`], and the ids of a JSON list of tasks that already ended.
static CANCELS_OR_ENDED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{cancels} UNION ALL \
         SELECT t.id FROM json_each(?) j JOIN tasks t ON t.id = j.value WHERE t.org_id = ? AND t.status IN (SELECT value FROM json_each(?))",
        cancels = CANCELS_SQL.as_str(),
    )
});

/// A status as an SQL string literal (its names are plain lower-case words and dashes).
fn sql_literal(status: TaskStatus) -> String {
    format!("'{}'", status.as_str())
}

impl SqliteStore {
    #[allow(clippy::too_many_arguments)]
    async fn insert_token(
        &self,
        org_id: i64,
        kind: &str,
        user_id: Option<i64>,
        name: Option<&str>,
        tags: Option<&str>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> StoreResult<i64> {
        let r = sqlx::query(
            "INSERT INTO tokens (org_id, kind, user_id, name, tags, hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(org_id)
        .bind(kind)
        .bind(user_id)
        .bind(name)
        .bind(tags)
        .bind(&hash[..])
        .bind(now_ms)
        .execute(&mut *self.writer.lock().await?)
        .await;
        match r {
            Ok(r) => Ok(r.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("this token already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn session_by_id(
        &self,
        conn: impl sqlx::SqliteExecutor<'_>,
        id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(SESSION_BY_ID_SQL)
            .bind(id)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }
}

fn mapping_text(t: &Target) -> Option<String> {
    t.secret_mapping
        .as_ref()
        .map(|m| serde_json::Value::Object(m.clone()).to_string())
}

/// Adds `delta` (may be negative) to `org_id`'s kept log bytes.
async fn add_log_usage(
    tx: &mut Transaction<'_, Sqlite>,
    org_id: i64,
    delta: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO log_usage (org_id, bytes) VALUES (?, 0) ON CONFLICT (org_id) DO NOTHING",
    )
    .bind(org_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE log_usage SET bytes = max(bytes + ?, 0) WHERE org_id = ?")
        .bind(delta)
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'_, Sqlite>,
    task_id: i64,
    start: u64,
    data: &[u8],
) -> StoreResult<()> {
    let start_i = i64::try_from(start).unwrap_or(i64::MAX);
    let end_i = i64::try_from(start + data.len() as u64).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO task_log_chunks (task_id, start_offset, end_offset, data) VALUES (?, ?, ?, ?)",
    )
    .bind(task_id)
    .bind(start_i)
    .bind(end_i)
    .bind(data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A session's org, tags and hostname (for [`EndedSession`]) and whether it had already
/// ended; `None` when it does not exist.
async fn session_head(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
) -> StoreResult<Option<(EndedSession, bool)>> {
    let row =
        sqlx::query("SELECT org_id, tags, hostname, ended_at FROM agent_sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let head = EndedSession {
        ended_now: false,
        org_id: row.try_get("org_id")?,
        tags: row.try_get("tags")?,
        hostname: row.try_get("hostname")?,
        failed: Vec::new(),
        requeued: Vec::new(),
    };
    Ok(Some((
        head,
        row.try_get::<Option<i64>, _>("ended_at")?.is_some(),
    )))
}

/// What a session's end (or its agent's restart) does to its tasks, as the lifecycle's
/// bulk rules say: a task that started is never run again, so the running ones (but
/// `keep`, which the agent still reports) fail `agent-lost`; an offer that was not
/// started never ran, so it goes back to `ready` for the next agent.
async fn release_session_tasks(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    ended: &mut EndedSession,
    how: &SessionEnd,
    keep: &[i64],
    now_ms: i64,
) -> StoreResult<()> {
    let keep = serde_json::to_string(keep).unwrap_or_else(|_| "[]".into());
    let running = lifecycle::SESSION_ENDED_RUNNING;
    ended.failed = sqlx::query_scalar(
        "UPDATE tasks SET status = ?, failure_reason = ?, failure_message = ?, finished_at = ?, elapsed_ms = ? - started_at \
         WHERE session_id = ? AND status = ? AND id NOT IN (SELECT value FROM json_each(?)) RETURNING id",
    )
    .bind(running.to.as_str())
    .bind(running.reason.map(|r| r.as_str()))
    .bind(how.running_task_message(&ended.hostname))
    .bind(now_ms)
    .bind(now_ms)
    .bind(id)
    .bind(running.from.as_str())
    .bind(&keep)
    .fetch_all(&mut *conn)
    .await?;
    let offered = lifecycle::SESSION_ENDED_OFFERED;
    ended.requeued = sqlx::query_scalar(
        "UPDATE tasks SET status = ?, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL \
         WHERE session_id = ? AND status = ? RETURNING id",
    )
    .bind(offered.to.as_str())
    .bind(id)
    .bind(offered.from.as_str())
    .fetch_all(&mut *conn)
    .await?;
    ended.failed.sort_unstable();
    ended.requeued.sort_unstable();
    Ok(())
}

// Reviews: the `ReviewStore` half of this store (a child module, so it shares the
// helpers above).
#[path = "sqlite_reviews.rs"]
mod reviews;

// Browser sessions of the web app (after the macros above, which it uses).
mod web_sessions;

/// The statement of `list_tasks` for the filters `q` has, bound in this order: org,
/// status, target, user, before, since, limit. Only the filters given are in it: SQLite
/// plans a statement without its bound values, and `(? IS NULL OR status = ?)` would keep
/// it off the `tasks_org_*` indexes (a scan of every task of the org for a rare status).
fn list_tasks_sql(q: &TaskListQuery) -> String {
    let mut sql = String::from(concat!(
        "SELECT ",
        task_cols!(),
        " FROM tasks WHERE org_id = ?"
    ));
    for (given, clause) in [
        (q.status.is_some(), " AND status = ?"),
        (q.target.is_some(), " AND target_name = ?"),
        (q.user.is_some(), " AND user_email = ?"),
        (q.before.is_some(), " AND id < ?"),
        (q.since.is_some(), " AND created_at >= ?"),
    ] {
        if given {
            sql.push_str(clause);
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    sql
}

#[cfg(test)]
mod tests {
    /// Every filter of the task list (the web app's tasks page) is found through an
    /// index, newest first, without sorting: no scan of the org's tasks.
    #[tokio::test]
    async fn task_list_filters_use_their_index() {
        use runops_proto::TaskStatus;
        use runops_proto::api::TaskListQuery;
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(dir.path()).await.unwrap();
        let q = |f: fn(&mut TaskListQuery)| {
            let mut q = TaskListQuery::default();
            f(&mut q);
            q
        };
        for (query, index) in [
            (q(|_| {}), "tasks_org"),
            (q(|q| q.before = Some(9)), "tasks_org"),
            (
                q(|q| q.status = Some(TaskStatus::Running)),
                "tasks_org_status",
            ),
            (
                q(|q| {
                    q.status = Some(TaskStatus::Running);
                    q.before = Some(9);
                }),
                "tasks_org_status",
            ),
            (q(|q| q.target = Some("t".into())), "tasks_org_target"),
            (q(|q| q.user = Some("u@x".into())), "tasks_org_user"),
        ] {
            let sql = format!("EXPLAIN QUERY PLAN {}", super::list_tasks_sql(&query));
            let mut plan = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for _ in 0..sql.matches('?').count() {
                plan = plan.bind(1_i64);
            }
            let rows = plan.fetch_all(&store.reader).await.unwrap();
            let details: Vec<String> = rows
                .iter()
                .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
                .collect();
            let plan = details.join(" | ");
            assert!(
                plan.contains(&format!("USING INDEX {index} ")),
                "{query:?}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{query:?} sorts: {plan}");
        }
    }

    /// The optimistic start and finish write only a row that still holds the state
    /// they were decided on: a kill or a result in between leaves them writing nothing
    /// (and `start_task` / `finish_task` then take the locked way).
    #[tokio::test]
    async fn an_optimistic_write_on_a_changed_row_writes_nothing() {
        use super::super::{NewSession, NewTask, NewUser, Store};
        use runops_proto::agent::TaskResult;
        use runops_proto::{FailureReason, Role, TaskStatus};
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(dir.path()).await.unwrap();
        let org = store.create_org("acme", 0).await.unwrap();
        let user = NewUser {
            name: "ann".into(),
            email: "ann@acme.example".into(),
            groups: Vec::new(),
            role: Role::Admin,
        };
        let user = store.create_user(org, &user, 0).await.unwrap();
        let create = runops_proto::api::TargetCreate {
            name: "t".into(),
            kind: "bash".into(),
            ..Default::default()
        };
        let target = crate::validate::new_target(create, chrono::Utc::now()).unwrap();
        let target = store.create_target(org, &target).await.unwrap();
        let token = store
            .create_agent_token(org, Some("a"), None, &[7; 32], 0)
            .await
            .unwrap();
        let session = NewSession {
            id: "s1".into(),
            org_id: org,
            token_id: token,
            tags: None,
            hostname: "host".into(),
            version: "test".into(),
            instance_id: "i".into(),
            concurrency: 4,
            verifies_identity: false,
        };
        let session = store.create_session(&session, 0).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let task = NewTask {
                target: target.clone(),
                kind: "bash".into(),
                script: "true".into(),
                message: None,
                user: user.clone(),
                status: TaskStatus::Ready,
                created_with_jwt: false,
                review_sha256: None,
                template: None,
            };
            ids.push(store.create_task(org, &task, 1).await.unwrap().task.id);
        }
        assert_eq!(
            store
                .claim_tasks(&session, 2, 2, 60_000)
                .await
                .unwrap()
                .len(),
            2
        );

        // Start: the task was killed after its state was read.
        let (_, stale) = store.read_task_state(org, ids[0]).unwrap().unwrap();
        store
            .kill_task(org, ids[0], "ann@acme.example", 3)
            .await
            .unwrap();
        assert!(
            store
                .start_if_unchanged(ids[0], &stale, 4)
                .await
                .unwrap()
                .is_none()
        );
        let now = store.get_task(org, ids[0]).await.unwrap().unwrap();
        assert_eq!(now.task.status, TaskStatus::Failure);
        assert_eq!(now.task.started_at, None);
        // With the state as it is, the same write goes through.
        let (_, fresh) = store.read_task_state(org, ids[1]).unwrap().unwrap();
        let started = store.start_if_unchanged(ids[1], &fresh, 4).await.unwrap();
        assert_eq!(started.unwrap().task.status, TaskStatus::Running);

        // Finish: a cancel was requested after the state was read.
        let (_, stale) = store.read_task_state(org, ids[1]).unwrap().unwrap();
        store
            .kill_task(org, ids[1], "ann@acme.example", 5)
            .await
            .unwrap();
        let req = TaskResult {
            status: TaskStatus::Failure,
            exit_code: Some(1),
            failure_reason: Some(FailureReason::ExitCode),
            failure_message: None,
            redacted: true,
            log_size: 0,
            log_location: None,
            elapsed_ms: 1,
        }
        .to_finish("s1");
        let written = store
            .finish_if_unchanged(ids[1], &stale, &req, TaskStatus::Failure, None, 6)
            .await
            .unwrap();
        assert!(written.is_none());
        let now = store.get_task(org, ids[1]).await.unwrap().unwrap();
        assert_eq!(now.task.status, TaskStatus::Running);
        assert!(now.cancel_requested);
    }

    /// Statuses come from `TaskStatus::as_str`, never from literals in SQL text.
    #[test]
    fn no_admin_role_literal_in_sql() {
        // (`'user'` is also a token kind, which `kind = 'user'` means here.)
        let literal = format!("'{}'", runops_proto::Role::Admin);
        assert!(
            !include_str!("sqlite.rs").contains(&literal),
            "sqlite.rs has the literal {literal}: bind `Role::Admin.as_str()` instead"
        );
    }

    /// Every settings column is bound once, in the order listed.
    #[test]
    fn target_settings_sql_has_one_placeholder_per_column() {
        let count = |sql: &str| sql.matches('?').count();
        assert_eq!(
            count(&super::INSERT_TARGET_SQL),
            4 + super::TARGET_SETTING_COLUMNS.len()
        );
        assert_eq!(
            count(&super::UPDATE_TARGET_SQL),
            3 + super::TARGET_SETTING_COLUMNS.len()
        );
        assert_eq!(
            count(&super::INSERT_TASK_SQL),
            17 + super::SNAPSHOT_COLUMNS.len()
        );
        for c in super::SNAPSHOT_COLUMNS {
            assert!(super::TARGET_SETTING_COLUMNS.contains(c), "{c}");
        }
    }

    #[test]
    fn no_status_literal_in_sql() {
        let source = include_str!("sqlite.rs");
        for status in runops_proto::TaskStatus::ALL {
            let literal = format!("'{}'", status.as_str());
            assert!(
                !source.contains(&literal),
                "sqlite.rs has the literal {literal}: bind `TaskStatus::as_str()` instead"
            );
        }
    }
}
