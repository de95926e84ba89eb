//! The PostgreSQL store: one database that any number of `runops server` replicas
//! share (`--database-url postgres://...`), with its own migrations
//! (`migrations_postgres/`).
//!
//! No correctness relies on one writer: every read-modify-write of a task reads its row
//! `FOR UPDATE` in the transaction that writes the lifecycle's decision, a poll's claim
//! takes the oldest ready rows `FOR UPDATE SKIP LOCKED` (two replicas never offer one
//! task twice, and never wait on each other), and the one-live-agent-per-tags rule is a
//! partial unique index. Wake-ups reach the other replicas with `NOTIFY` (see
//! [`notify_channel`] and `crate::pg_listen`).

mod webhooks;

use super::*;
use crate::lifecycle::{self, Event, LogLimit, LogRoom, Refusal, TaskState, Write};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use runops_proto::api::DEFAULT_TIMEOUT_SECS;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

pub use super::sqlite::{FIRST_ADMIN_TOKEN_NAME, LogQuotas};

/// Connections one replica opens at most unless told otherwise: a long-poll holds none
/// while it waits, so a few serve many agents.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// How long a request waits for a free connection before failing (the database is down
/// or the pool is too small for the load).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every migration of `crates/runops-server/migrations_postgres`, in version order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_postgres");

/// How long `/readyz` waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The `NOTIFY` channel on which every replica announces wake-ups (see [`Wake`]).
pub const NOTIFY_CHANNEL: &str = "runops_wake";

/// The channel name (for the listener).
pub fn notify_channel() -> &'static str {
    NOTIFY_CHANNEL
}

pub struct PgStore {
    pool: PgPool,
    quotas: LogQuotas,
}

/// True for `postgres://` and `postgresql://` URLs.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The connect options of `url`, with errors that do not echo its password.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| {
        anyhow::anyhow!(
            "the database URL {} is not a valid PostgreSQL URL: {e}",
            redact_url(url)
        )
    })
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{}:***@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    /// Connects to `opts` with at most `pool_size` connections. Migrations are not run:
    /// see [`PgStore::migrate`].
    pub async fn connect(opts: PgConnectOptions, pool_size: u32) -> anyhow::Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to PostgreSQL at {}:{} (database {}): {e}",
                    opts.get_host(),
                    opts.get_port(),
                    opts.get_database().unwrap_or("(default)")
                )
            })?;
        Ok(PgStore {
            pool,
            quotas: LogQuotas::default(),
        })
    }

    /// Connects and brings the schema to the latest version.
    pub async fn open(opts: PgConnectOptions, pool_size: u32) -> anyhow::Result<PgStore> {
        let store = PgStore::connect(opts, pool_size).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the pending migrations (several replicas starting at once are safe:
    /// sqlx takes an advisory lock).
    pub async fn migrate(&self) -> anyhow::Result<Vec<i64>> {
        // No table yet on a new database: nothing applied.
        let before: Vec<i64> =
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the PostgreSQL database: {e}"))?;
        let mut applied = Vec::new();
        for m in MIGRATOR.iter().filter(|m| !before.contains(&m.version)) {
            tracing::info!(version = m.version, name = %m.description, "applied database migration");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// Enforces `quotas` on every later log append.
    pub fn with_log_quotas(mut self, quotas: LogQuotas) -> PgStore {
        self.quotas = quotas;
        self
    }

    /// The pool (the `LISTEN` connection and tools reach below the trait with it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records the fingerprint of the secret key on the first start, and refuses a
    /// replica whose key differs: configs and webhook secrets sealed by the others
    /// would not open on it, so it must not serve.
    pub async fn check_key_fingerprint(&self, fingerprint: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(KEY_FINGERPRINT)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
            .bind(KEY_FINGERPRINT)
            .fetch_one(&self.pool)
            .await?;
        if stored != fingerprint {
            anyhow::bail!(
                "RUNOPS_SECRET_KEY is not the key this database was set up with (its fingerprint is {fingerprint}, the database's is {stored}); \
                 every replica must be given the same RUNOPS_SECRET_KEY, or target configs and webhook secrets sealed by the others cannot be opened. Refusing to start"
            );
        }
        Ok(())
    }

    /// Takes a transaction-scoped advisory lock, held until the returned transaction
    /// ends: replicas starting together on an empty database bootstrap one at a time.
    pub async fn begin_bootstrap(&self) -> anyhow::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// `server_meta` key of the secret key's fingerprint.
const KEY_FINGERPRINT: &str = "secret_key_fingerprint";

/// Advisory lock key of the bootstrap (any constant of ours).
const BOOTSTRAP_LOCK: i64 = 0x7275_6e6f_7073_0001;

/// Ends `tx` without writing, at once: a transaction that is only dropped keeps its row
/// locks until the pool gets round to rolling it back, and a claim meanwhile would skip
/// those rows (`SKIP LOCKED`) as if another replica held them.
async fn rolled_back<T>(tx: Transaction<'_, Postgres>, value: T) -> StoreResult<T> {
    tx.rollback().await?;
    Ok(value)
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

fn user_from_row(row: &PgRow, org: &str) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("u_id")?,
        name: row.try_get("u_name")?,
        email: row.try_get("u_email")?,
        groups: json_list(&row.try_get::<String, _>("u_groups")?)?,
        role: row.try_get("u_role")?,
        org: org.to_string(),
        created_at: ts(row.try_get("u_created_at")?)?,
    })
}

macro_rules! user_cols {
    () => {
        "u.id AS u_id, u.name AS u_name, u.email AS u_email, u.groups_json AS u_groups, u.role AS u_role, u.created_at AS u_created_at"
    };
}

macro_rules! target_cols {
    () => {
        "name, kind, description, tags, secret_provider, secret_path, secret_mapping, runner_provider, redact, review, reviewers_json, custom_command, timeout_secs, created_at, updated_at, config_keys_json, redact_keys_json, public_keys_json, min_approvals, approval_ttl_secs, review_ttl_secs, channel"
    };
}

fn target_from_row(row: &PgRow) -> StoreResult<Target> {
    let mapping: Option<String> = row.try_get("secret_mapping")?;
    let secret_mapping = match mapping {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            StoreError::Corrupt(format!("stored secret_mapping is not a JSON object: {e}"))
        })?),
    };
    let timeout: i64 = row.try_get("timeout_secs")?;
    Ok(Target {
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        description: row.try_get("description")?,
        tags: row.try_get("tags")?,
        secret_provider: row.try_get("secret_provider")?,
        secret_path: row.try_get("secret_path")?,
        secret_mapping,
        runner_provider: row.try_get("runner_provider")?,
        redact: row.try_get("redact")?,
        review: row.try_get("review")?,
        reviewers: json_list(&row.try_get::<String, _>("reviewers_json")?)?,
        min_approvals: row
            .try_get::<Option<i64>, _>("min_approvals")?
            .and_then(|n| u32::try_from(n).ok()),
        approval_ttl: u64_of(row.try_get("approval_ttl_secs")?),
        review_ttl: u64_of(row.try_get("review_ttl_secs")?),
        custom_command: row.try_get("custom_command")?,
        timeout: u64::try_from(timeout).unwrap_or(DEFAULT_TIMEOUT_SECS),
        channel: row.try_get("channel")?,
        created_at: ts(row.try_get("created_at")?)?,
        updated_at: ts(row.try_get("updated_at")?)?,
        config_keys: json_list(&row.try_get::<String, _>("config_keys_json")?)?,
        redact_keys: json_list(&row.try_get::<String, _>("redact_keys_json")?)?,
        public_keys: json_list(&row.try_get::<String, _>("public_keys_json")?)?,
    })
}

macro_rules! task_cols {
    () => {
        "id, org_id, target_name, tags, kind, script, message, user_email, status, exit_code, failure_reason, failure_message, session_id, agent_hostname, cancel_requested, redacted, log_received, log_kept, log_size, log_location, created_at, started_at, finished_at, elapsed_ms, offer_deadline, created_with_jwt, template_name, template_commit, template_params_json"
    };
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn task_from_row(row: &PgRow) -> StoreResult<TaskRecord> {
    let id: i64 = row.try_get("id")?;
    let status = parse_status(&row.try_get::<String, _>("status")?)?;
    let log_received = u64_of(row.try_get("log_received")?);
    let log_size: Option<i64> = row.try_get("log_size")?;
    let started_ms: Option<i64> = row.try_get("started_at")?;
    let finished_ms: Option<i64> = row.try_get("finished_at")?;
    let elapsed: Option<i64> = row.try_get("elapsed_ms")?;
    let elapsed_ms = match (elapsed, started_ms, finished_ms) {
        (Some(e), _, _) => Some(u64_of(e)),
        (None, Some(s), Some(f)) => Some(u64_of(f - s)),
        (None, Some(s), None) => Some(u64_of(Utc::now().timestamp_millis() - s)),
        _ => None,
    };
    let exit_code: Option<i64> = row.try_get("exit_code")?;
    let task = Task {
        id,
        target: row.try_get("target_name")?,
        kind: row.try_get("kind")?,
        script: row.try_get("script")?,
        message: row.try_get("message")?,
        status,
        exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
        failure_reason: parse_reason(row.try_get("failure_reason")?)?,
        failure_message: row.try_get("failure_message")?,
        user: row.try_get("user_email")?,
        agent: row.try_get("agent_hostname")?,
        redacted: row.try_get::<bool, _>("redacted")?,
        log_size: log_size.map(u64_of).unwrap_or(log_received),
        log_location: row.try_get("log_location")?,
        task_logs: format!("/v1/tasks/{id}/logs"),
        created_at: ts(row.try_get("created_at")?)?,
        started_at: ts_opt(started_ms)?,
        finished_at: ts_opt(finished_ms)?,
        elapsed_ms,
        review: None,
        template: super::task_template_of(
            row.try_get("template_name")?,
            row.try_get("template_commit")?,
            row.try_get("template_params_json")?,
        )?,
    };
    Ok(TaskRecord {
        task,
        org_id: row.try_get("org_id")?,
        tags: row.try_get("tags")?,
        session_id: row.try_get("session_id")?,
        cancel_requested: row.try_get::<bool, _>("cancel_requested")?,
        log_received,
        log_kept: u64_of(row.try_get("log_kept")?),
    })
}

macro_rules! session_cols {
    () => {
        "s.id, s.org_id, o.name AS org_name, s.token_id, s.tags, s.hostname, s.version, s.instance_id, s.concurrency, s.connected_at, s.last_seen, s.ended_at, s.verifies_identity"
    };
}

fn session_from_row(row: &PgRow) -> StoreResult<SessionRecord> {
    let concurrency: i64 = row.try_get("concurrency")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        org: row.try_get("org_name")?,
        token_id: row.try_get("token_id")?,
        tags: row.try_get("tags")?,
        hostname: row.try_get("hostname")?,
        version: row.try_get("version")?,
        instance_id: row.try_get("instance_id")?,
        concurrency: u32::try_from(concurrency).unwrap_or(0),
        connected_at_ms: row.try_get("connected_at")?,
        last_seen_ms: row.try_get("last_seen")?,
        ended_at_ms: row.try_get("ended_at")?,
        verifies_identity: row.try_get("verifies_identity")?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        // Bounded: a readiness probe must get its answer while the database is away,
        // not after the pool's acquire timeout.
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(r) => {
                r?;
                Ok(())
            }
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    fn web_sessions(&self) -> Option<&dyn super::web_sessions::WebSessionStore> {
        Some(self)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn is_empty(&self) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orgs")
            .fetch_one(&self.pool)
            .await?;
        Ok(n == 0)
    }

    async fn create_org(&self, name: &str, now_ms: i64) -> StoreResult<i64> {
        let r =
            sqlx::query_scalar("INSERT INTO orgs (name, created_at) VALUES ($1, $2) RETURNING id")
                .bind(name)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await;
        match r {
            Ok(id) => Ok(id),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "organisation `{name}` already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_org_id(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn first_admin(&self) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.role = $1 ORDER BY o.id, u.id LIMIT 1"
        ))
        .bind(runops_proto::Role::Admin.as_str())
        .fetch_optional(&self.pool)
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
            "INSERT INTO users (org_id, name, email, groups_json, role, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(org_id)
        .bind(&user.name)
        .bind(&user.email)
        .bind(to_json_list(&user.groups))
        .bind(user.role.as_str())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await;
        let id: i64 = match r {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "a user with e-mail `{}` already exists",
                    user.email
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let org: String = sqlx::query_scalar("SELECT name FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_one(&self.pool)
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
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.org_id = $1 ORDER BY u.id"
        ))
        .bind(org_id)
        .fetch_all(&self.pool)
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
        let row = sqlx::query(concat!(
            "SELECT t.id, t.org_id, o.name AS org_name, t.kind, t.hash, t.user_id, t.revoked_at, t.tags AS token_tags, ",
            user_cols!(),
            " FROM tokens t JOIN orgs o ON o.id = t.org_id LEFT JOIN users u ON u.id = t.user_id WHERE t.hash = $1"
        ))
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let org: String = row.try_get("org_name")?;
        let kind = match row.try_get::<String, _>("kind")?.as_str() {
            "user" => TokenKind::User,
            "agent" => TokenKind::Agent,
            other => return Err(StoreError::Corrupt(format!("token kind `{other}`"))),
        };
        let stored: Vec<u8> = row.try_get("hash")?;
        let hash: [u8; 32] = stored
            .try_into()
            .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))?;
        let user_id: Option<i64> = row.try_get("user_id")?;
        let user = match user_id {
            Some(_) => Some(user_from_row(&row, &org)?),
            None => None,
        };
        Ok(Some(AuthToken {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            org,
            kind,
            hash,
            user,
            revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            tags: row.try_get("token_tags")?,
        }))
    }

    async fn unrevoke_token(&self, token_id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked_at = NULL WHERE id = $1")
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_agent_tokens(&self, org_id: i64) -> StoreResult<Vec<AgentToken>> {
        let rows = sqlx::query(
            "SELECT id, name, tags, created_at, revoked_at FROM tokens WHERE org_id = $1 AND kind = 'agent' ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 AND org_id = $3 AND kind = 'agent'",
        )
        .bind(now_ms)
        .bind(token_id)
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return rolled_back(tx, None).await;
        }
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM agent_sessions WHERE token_id = $1 AND ended_at IS NULL",
        )
        .bind(token_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(sessions))
    }

    async fn create_target(&self, org_id: i64, t: &Target) -> StoreResult<Target> {
        let r = sqlx::query(
            "INSERT INTO targets (org_id, name, kind, description, tags, secret_provider, secret_path, secret_mapping, runner_provider, redact, review, reviewers_json, custom_command, timeout_secs, created_at, updated_at, redact_keys_json, public_keys_json, min_approvals, approval_ttl_secs, review_ttl_secs, channel) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        )
        .bind(org_id)
        .bind(&t.name)
        .bind(&t.kind)
        .bind(&t.description)
        .bind(&t.tags)
        .bind(&t.secret_provider)
        .bind(&t.secret_path)
        .bind(mapping_text(t))
        .bind(&t.runner_provider)
        .bind(&t.redact)
        .bind(&t.review)
        .bind(to_json_list(&t.reviewers))
        .bind(&t.custom_command)
        .bind(i64::try_from(t.timeout).unwrap_or(i64::MAX))
        .bind(t.created_at.timestamp_millis())
        .bind(t.updated_at.timestamp_millis())
        .bind(to_json_list(&t.redact_keys))
        .bind(to_json_list(&t.public_keys))
        .bind(t.min_approvals.map(i64::from))
        .bind(i64::try_from(t.approval_ttl).unwrap_or(i64::MAX))
        .bind(i64::try_from(t.review_ttl).unwrap_or(i64::MAX))
        .bind(&t.channel)
        .execute(&self.pool)
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            target_cols!(),
            " FROM targets WHERE org_id = $1 ORDER BY name COLLATE \"C\""
        ))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(target_from_row).collect()
    }

    async fn get_target(&self, org_id: i64, name: &str) -> StoreResult<Option<Target>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            target_cols!(),
            " FROM targets WHERE org_id = $1 AND name = $2"
        ))
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(target_from_row).transpose()
    }

    async fn update_target(&self, org_id: i64, t: &Target) -> StoreResult<Option<Target>> {
        let r = sqlx::query(
            "UPDATE targets SET kind = $1, description = $2, tags = $3, secret_provider = $4, secret_path = $5, secret_mapping = $6, runner_provider = $7, redact = $8, review = $9, reviewers_json = $10, custom_command = $11, timeout_secs = $12, updated_at = $13, redact_keys_json = $14, public_keys_json = $15, min_approvals = $16, approval_ttl_secs = $17, review_ttl_secs = $18, channel = $19 WHERE org_id = $20 AND name = $21",
        )
        .bind(&t.kind)
        .bind(&t.description)
        .bind(&t.tags)
        .bind(&t.secret_provider)
        .bind(&t.secret_path)
        .bind(mapping_text(t))
        .bind(&t.runner_provider)
        .bind(&t.redact)
        .bind(&t.review)
        .bind(to_json_list(&t.reviewers))
        .bind(&t.custom_command)
        .bind(i64::try_from(t.timeout).unwrap_or(i64::MAX))
        .bind(t.updated_at.timestamp_millis())
        .bind(to_json_list(&t.redact_keys))
        .bind(to_json_list(&t.public_keys))
        .bind(t.min_approvals.map(i64::from))
        .bind(i64::try_from(t.approval_ttl).unwrap_or(i64::MAX))
        .bind(i64::try_from(t.review_ttl).unwrap_or(i64::MAX))
        .bind(&t.channel)
        .bind(org_id)
        .bind(&t.name)
        .execute(&self.pool)
        .await?;
        Ok((r.rows_affected() > 0).then(|| t.clone()))
    }

    async fn target_config(
        &self,
        org_id: i64,
        name: &str,
    ) -> StoreResult<Option<SealedTargetConfig>> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT tags, config_sealed FROM targets WHERE org_id = $1 AND name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
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
            "UPDATE targets SET config_sealed = $1, config_keys_json = $2 WHERE org_id = $3 AND name = $4",
        )
        .bind(sealed)
        .bind(keys)
        .bind(org_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_target(&self, org_id: i64, name: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM targets WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn create_task(&self, org_id: i64, t: &NewTask, now_ms: i64) -> StoreResult<TaskRecord> {
        let target = &t.target;
        // RETURNING the whole row: the new task without a second statement.
        let row = sqlx::query(concat!(
            "INSERT INTO tasks (org_id, target_name, tags, tag_key, kind, script, message, user_id, user_email, user_groups_json, secret_provider, secret_path, secret_mapping, redact, custom_command, timeout_secs, status, created_at, created_with_jwt, redact_keys_json, public_keys_json, review, reviewers_json, min_approvals, approval_ttl_secs, review_ttl_secs, review_sha256, template_name, template_commit, template_params_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30) RETURNING ",
            task_cols!()
        ))
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
        .bind(&target.secret_provider)
        .bind(&target.secret_path)
        .bind(mapping_text(target))
        .bind(&target.redact)
        .bind(&target.custom_command)
        .bind(i64::try_from(target.timeout).unwrap_or(i64::MAX))
        .bind(t.status.as_str())
        .bind(now_ms)
        .bind(t.created_with_jwt)
        .bind(to_json_list(&target.redact_keys))
        .bind(to_json_list(&target.public_keys))
        .bind(&target.review)
        .bind(to_json_list(&target.reviewers))
        .bind(target.min_approvals.map(i64::from))
        .bind(i64::try_from(target.approval_ttl).unwrap_or(i64::MAX))
        .bind(i64::try_from(target.review_ttl).unwrap_or(i64::MAX))
        .bind(&t.review_sha256)
        .bind(t.template.as_ref().map(|x| &x.name))
        .bind(t.template.as_ref().map(|x| &x.commit))
        .bind(super::task_template_params_json(t.template.as_ref()))
        .fetch_one(&self.pool)
        .await?;
        task_from_row(&row)
    }

    async fn get_task(&self, org_id: i64, id: i64) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, org_id: i64, q: &TaskListQuery) -> StoreResult<Vec<Task>> {
        let status = q.status.map(|s| s.as_str());
        let since_ms = q.since.map(|t| t.timestamp_millis());
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        // Only the filters given are in the statement: a prepared statement's generic
        // plan cannot use the `tasks_org_*` indexes for `($2 IS NULL OR status = $2)`.
        let mut sql = String::from(concat!(
            "SELECT ",
            task_cols!(),
            " FROM tasks WHERE org_id = $1"
        ));
        let mut n = 1;
        for (given, column) in [
            (status.is_some(), "status ="),
            (q.target.is_some(), "target_name ="),
            (q.user.is_some(), "user_email ="),
            (q.before.is_some(), "id <"),
            (since_ms.is_some(), "created_at >="),
        ] {
            if given {
                n += 1;
                sql.push_str(&format!(" AND {column} ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
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
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
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
        // One statement: the select and the update are atomic, and the partial index
        // `tasks_ready` finds the oldest ready tasks without a scan.
        let rows = sqlx::query(CLAIM_SQL.as_str())
            .bind(lifecycle::CLAIM.to.as_str())
            .bind(&session.id)
            .bind(&session.hostname)
            .bind(deadline_ms)
            .bind(now_ms)
            .bind(session.org_id)
            .bind(tag_key(session.tags.as_deref()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
                    created_with_jwt: r.try_get("created_with_jwt")?,
                    target_has_config: r.try_get("target_has_config")?,
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
        let mut tx = self.pool.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return rolled_back(tx, Decided::only(StartOutcome::NotFound)).await;
        };
        let d = match lifecycle::decide(&state, &Event::Start { session_id, now_ms }) {
            Ok(d) => d,
            Err(Refusal::Ended(status)) => {
                return rolled_back(tx, Decided::only(StartOutcome::Ended(status))).await;
            }
            Err(_) => return rolled_back(tx, Decided::only(StartOutcome::OfferExpired)).await,
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
        let mut tx = self.pool.begin().await?;
        // Only the columns the log path needs (a chunk comes many times a second).
        let row = sqlx::query(
            "SELECT id, org_id, target_name, tags, status, session_id, offer_deadline, cancel_requested, failure_reason, log_received, log_kept, log_truncated, created_with_jwt, created_at \
             FROM tasks WHERE org_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return rolled_back(tx, Decided::only(AppendOutcome::NotFound)).await;
        };
        let state = TaskState {
            status: parse_status(&row.try_get::<String, _>("status")?)?,
            session_id: row.try_get("session_id")?,
            offer_deadline_ms: row.try_get("offer_deadline")?,
            cancel_requested: row.try_get::<bool, _>("cancel_requested")?,
            failure_reason: parse_reason(row.try_get("failure_reason")?)?,
            log_received: u64_of(row.try_get("log_received")?),
            created_with_jwt: row.try_get::<bool, _>("created_with_jwt")?,
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
        let truncated = row.try_get::<bool, _>("log_truncated")?;
        let chunk = Event::LogChunk {
            session_id,
            offset,
            len: bytes.len() as u64,
        };
        let d = match lifecycle::decide(&state, &chunk) {
            Ok(d) => d,
            Err(Refusal::LogGap { stored }) => {
                return rolled_back(tx, Decided::only(AppendOutcome::Gap(stored))).await;
            }
            Err(
                Refusal::Ended(status) | Refusal::NotYours(status) | Refusal::WrongStatus(status),
            ) => return rolled_back(tx, Decided::only(AppendOutcome::Ended(status))).await,
            Err(r) => {
                return rolled_back(
                    tx,
                    Decided::only(AppendOutcome::Ended(refused_status(r, &state))),
                )
                .await;
            }
        };
        let effects = (!d.effects.is_empty()).then_some(TaskEffects {
            task,
            effects: d.effects,
        });
        let Write::AppendLog { skip } = d.write else {
            // A resend of bytes already stored.
            return rolled_back(
                tx,
                Decided {
                    outcome: AppendOutcome::Stored(state.log_received),
                    effects,
                },
            )
            .await;
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
                    "SELECT coalesce(max(bytes), 0) FROM log_usage WHERE org_id = $1",
                )
                .bind(org_id)
                .fetch_one(&mut *tx)
                .await?;
                room.org = Some((self.quotas.org_bytes, u64_of(used)));
            }
            if self.quotas.server_bytes > 0 {
                let used: i64 =
                    sqlx::query_scalar("SELECT coalesce(sum(bytes), 0)::BIGINT FROM log_usage")
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
            "UPDATE tasks SET log_received = $1, log_kept = $2, log_truncated = $3 WHERE id = $4",
        )
        .bind(i64::try_from(received_now).unwrap_or(i64::MAX))
        .bind(i64::try_from(kept_now).unwrap_or(i64::MAX))
        .bind(truncated_now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Decided {
            outcome: AppendOutcome::Stored(received_now),
            effects,
        })
    }

    async fn read_log(&self, id: i64, offset: u64, max: usize) -> StoreResult<Vec<u8>> {
        let offset_i = i64::try_from(offset).unwrap_or(i64::MAX);
        let mut rows = sqlx::query(
            "SELECT start_offset, data FROM task_log_chunks WHERE task_id = $1 AND end_offset > $2 ORDER BY end_offset",
        )
        .bind(id)
        .bind(offset_i)
        .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            let start = u64_of(row.try_get("start_offset")?);
            let data: Vec<u8> = row.try_get("data")?;
            let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
            if from < data.len() {
                out.extend_from_slice(&data[from..]);
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    async fn first_admin_token(&self) -> StoreResult<Option<(i64, bool)>> {
        let row = sqlx::query(
            "SELECT id, first_used_at FROM tokens WHERE kind = 'user' AND name = $1 AND revoked_at IS NULL ORDER BY id LIMIT 1",
        )
        .bind(FIRST_ADMIN_TOKEN_NAME)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let used: Option<i64> = row.try_get("first_used_at")?;
        Ok(Some((row.try_get("id")?, used.is_some())))
    }

    async fn mark_token_used(&self, token_id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET first_used_at = $1 WHERE id = $2 AND first_used_at IS NULL")
            .bind(now_ms)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_token_by_id(&self, token_id: i64, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(token_id)
            .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, org_id, log_kept FROM tasks WHERE finished_at IS NOT NULL AND finished_at < $1 \
             AND log_purged_at IS NULL ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
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
                sqlx::query("DELETE FROM task_log_chunks WHERE task_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                insert_chunk(&mut tx, id, 0, note.as_bytes()).await?;
                kept_now = note.len() as u64;
                // The server's own note does not count against the quotas.
                add_log_usage(&mut tx, org_id, -i64::try_from(kept).unwrap_or(i64::MAX)).await?;
            }
            sqlx::query("UPDATE tasks SET log_kept = $1, log_purged_at = $2 WHERE id = $3")
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
        let mut tx = self.pool.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return rolled_back(tx, Decided::only(FinishOutcome::NotFound)).await;
        };
        let event = Event::Finish {
            session_id: &req.session_id,
            status: req.result.status,
            failure_reason: req.result.failure_reason,
            log_size: req.result.log_size,
            log_elsewhere: req.result.log_location.is_some(),
        };
        let d = match lifecycle::decide(&state, &event) {
            Ok(d) => d,
            Err(Refusal::Ended(status)) => {
                return rolled_back(tx, Decided::only(FinishOutcome::Ended(status))).await;
            }
            Err(Refusal::LogIncomplete { stored }) => {
                return rolled_back(tx, Decided::only(FinishOutcome::LogIncomplete { stored }))
                    .await;
            }
            Err(_) => return rolled_back(tx, Decided::only(FinishOutcome::NotYours)).await,
        };
        let Write::Finish { status, reason } = d.write else {
            // The same result again: the first one stays.
            return rolled_back(
                tx,
                Decided::only(FinishOutcome::AlreadyFinished(Box::new(rec))),
            )
            .await;
        };
        let message = match status {
            TaskStatus::Success => None,
            _ => req.result.failure_message.clone(),
        };
        let row = sqlx::query(concat!(
            "UPDATE tasks SET status = $1, exit_code = $2, failure_reason = $3, failure_message = $4, redacted = $5, log_size = $6, log_location = $7, finished_at = $8, elapsed_ms = $9, offer_deadline = NULL WHERE id = $10 RETURNING ",
            task_cols!()
        ))
        .bind(status.as_str())
        .bind(req.result.exit_code)
        .bind(reason.map(|r| r.as_str()))
        .bind(message)
        .bind(req.result.redacted)
        .bind(i64::try_from(req.result.log_size).unwrap_or(i64::MAX))
        .bind(req.result.log_location.as_deref().unwrap_or("server"))
        .bind(now_ms)
        .bind(i64::try_from(req.result.elapsed_ms).unwrap_or(i64::MAX))
        .bind(id)
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
        let mut tx = self.pool.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return rolled_back(tx, Decided::only(KillOutcome::NotFound)).await;
        };
        let d = match lifecycle::decide(&state, &Event::Kill { by: by_email }) {
            Ok(d) => d,
            Err(r) => {
                return rolled_back(
                    tx,
                    Decided::only(KillOutcome::AlreadyEnded(refused_status(r, &state))),
                )
                .await;
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
        let mut ids: Vec<i64> = sqlx::query_scalar(CANCELS_SQL.as_str())
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        if !running.is_empty() {
            let ended: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE id = ANY($1) AND org_id = $2 AND status = ANY($3)",
            )
            .bind(running)
            .bind(org_id)
            .bind(status_list(&lifecycle::FINAL))
            .fetch_all(&self.pool)
            .await?;
            ids.extend(ended);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    async fn take_new_cancels(
        &self,
        session_id: &str,
        cancels: &[i64],
    ) -> StoreResult<Option<usize>> {
        if cancels.is_empty() {
            return Ok(Some(0));
        }
        let r = sqlx::query(
            "INSERT INTO delivered_cancels (session_id, task_id) SELECT $1, unnest($2::BIGINT[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(session_id)
        .bind(cancels)
        .execute(&self.pool)
        .await?;
        Ok(Some(
            usize::try_from(r.rows_affected()).unwrap_or(usize::MAX),
        ))
    }

    async fn requeue_expired_offers(&self, now_ms: i64) -> StoreResult<Vec<RequeuedOffer>> {
        let rule = lifecycle::OFFER_EXPIRED;
        let rows = sqlx::query(
            "UPDATE tasks SET status = $1, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL \
             WHERE status = $2 AND offer_deadline < $3 RETURNING id, org_id, tags",
        )
        .bind(rule.to.as_str())
        .bind(rule.from.as_str())
        .bind(now_ms)
        .fetch_all(&self.pool)
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
            "INSERT INTO agent_sessions (id, org_id, token_id, tags, tag_key, hostname, version, instance_id, concurrency, connected_at, last_seen, verifies_identity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        .execute(&self.pool)
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
        self.session_by_id(&self.pool, &s.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("session {} vanished", s.id)))
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        self.session_by_id(&self.pool, id).await
    }

    async fn find_live_session(
        &self,
        org_id: i64,
        tags: Option<&str>,
    ) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.org_id = $1 AND s.tag_key = $2 AND s.ended_at IS NULL"
        ))
        .bind(org_id)
        .bind(tag_key(tags))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn recover_restarted_session(
        &self,
        id: &str,
        keep: &[i64],
        now_ms: i64,
    ) -> StoreResult<EndedSession> {
        let mut tx = self.pool.begin().await?;
        let Some((mut recovered, _)) = session_head(&mut tx, id).await? else {
            return rolled_back(tx, EndedSession::default()).await;
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
            "UPDATE agent_sessions SET hostname = $1, version = $2, concurrency = $3, verifies_identity = $4, last_seen = $5 WHERE id = $6",
        )
        .bind(hostname)
        .bind(version)
        .bind(i64::from(concurrency))
        .bind(verifies_identity)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_session(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agent_sessions SET last_seen = GREATEST(last_seen, $1) WHERE id = $2 AND ended_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn end_session(
        &self,
        id: &str,
        how: &SessionEnd,
        now_ms: i64,
    ) -> StoreResult<EndedSession> {
        let mut tx = self.pool.begin().await?;
        let Some((mut ended, already)) = session_head(&mut tx, id).await? else {
            return rolled_back(tx, EndedSession::default()).await;
        };
        if already {
            return rolled_back(tx, ended).await;
        }
        sqlx::query("UPDATE agent_sessions SET ended_at = $1, end_reason = $2 WHERE id = $3")
            .bind(now_ms)
            .bind(how.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM delivered_cancels WHERE session_id = $1")
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
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.ended_at IS NULL AND s.last_seen < $1"
        ))
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn extend_live_sessions(&self, now_ms: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE agent_sessions SET last_seen = GREATEST(last_seen, $1) WHERE ended_at IS NULL",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn find_user_by_email(&self, org_id: i64, email: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            ", o.name AS org_name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.org_id = $1 AND lower(u.email) = lower($2) ORDER BY u.id LIMIT 1"
        ))
        .bind(org_id)
        .bind(email)
        .fetch_optional(&self.pool)
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
        sqlx::query("UPDATE users SET groups_json = $1 WHERE id = $2")
            .bind(to_json_list(groups))
            .bind(user_id)
            .execute(&self.pool)
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
             WHERE t.org_id = $1 AND t.kind = 'user' AND ($2 IS NULL OR t.user_id = $3) ORDER BY t.id",
        )
        .bind(org_id)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(&self.pool)
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
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) \
             WHERE id = $2 AND org_id = $3 AND kind = 'user' AND ($4 IS NULL OR user_id = $5)",
        )
        .bind(now_ms)
        .bind(token_id)
        .bind(org_id)
        .bind(user_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tasks_created_with_jwt(&self, org_id: i64, ids: &[i64]) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "SELECT id FROM tasks WHERE id = ANY($1) AND org_id = $2 AND created_with_jwt ORDER BY id",
        )
        .bind(ids)
        .bind(org_id)
        .fetch_all(&self.pool)
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
            "UPDATE tasks SET status = $1, failure_reason = $2, failure_message = $3, finished_at = $4 \
             WHERE status = $5 AND created_with_jwt = TRUE",
        )
        .bind(rule.to.as_str())
        .bind(rule.reason.map(|r| r.as_str()))
        .bind(message)
        .bind(now_ms)
        .bind(rule.from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn list_live_agents(&self, org_id: i64) -> StoreResult<Vec<Agent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.org_id = $1 AND s.ended_at IS NULL ORDER BY s.tag_key COLLATE \"C\""
        ))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = session_from_row(row)?;
            let running: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE session_id = $1 AND status = $2 ORDER BY id",
            )
            .bind(&s.id)
            .bind(TaskStatus::Running.as_str())
            .fetch_all(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("id")?)
    }

    async fn list_audit(&self, org_id: i64, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
        let actor = q.actor.as_deref().map(AuditActorFilter::of);
        // Only the filters given, so that the plan can use the `audit_events_org_*` indexes.
        let mut sql = String::from(
            "SELECT id, at, actor_email, actor_kind, action, object_kind, object_id, remote_addr, detail_json \
             FROM audit_events WHERE org_id = $1",
        );
        let mut n = 1;
        for (given, clause) in [
            (q.before.is_some(), "id <"),
            (q.action.is_some(), "action ="),
            (
                matches!(actor, Some(AuditActorFilter::Email(_))),
                "actor_email =",
            ),
            (
                matches!(actor, Some(AuditActorFilter::Kind(_))),
                "actor_email IS NULL AND actor_kind =",
            ),
            (q.object.is_some(), "object_id ="),
        ] {
            if given {
                n += 1;
                sql.push_str(&format!(" AND {clause} ${n}"));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
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
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
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
                .fetch_all(&self.pool)
                .await?;
        let mut tasks_by_status = Vec::with_capacity(rows.len());
        for (status, n) in rows {
            tasks_by_status.push((parse_status(&status)?, u64::try_from(n).unwrap_or(0)));
        }
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM agent_sessions WHERE ended_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(StoreGauges {
            tasks_by_status,
            live_agents: u64::try_from(live).unwrap_or(0),
        })
    }
}

impl PgStore {
    /// One task, one event: reads the row in the write transaction, asks the lifecycle,
    /// writes what it decided. `true` when the event applied.
    async fn decide_and_write(
        &self,
        org_id: i64,
        id: i64,
        event: &Event<'_>,
        now_ms: i64,
    ) -> StoreResult<Decided<bool>> {
        let mut tx = self.pool.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
            return rolled_back(tx, Decided::only(false)).await;
        };
        let Ok(d) = lifecycle::decide(&state, event) else {
            return rolled_back(tx, Decided::only(false)).await;
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
    tx: &mut Transaction<'_, Postgres>,
    org_id: i64,
    id: i64,
) -> StoreResult<Option<(TaskRecord, TaskState)>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        task_cols!(),
        " FROM tasks WHERE org_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let rec = task_from_row(&row)?;
    let state = TaskState {
        status: rec.task.status,
        session_id: rec.session_id.clone(),
        offer_deadline_ms: row.try_get("offer_deadline")?,
        cancel_requested: rec.cancel_requested,
        failure_reason: rec.task.failure_reason,
        log_received: rec.log_received,
        created_with_jwt: row.try_get::<bool, _>("created_with_jwt")?,
        created_at_ms: rec.task.created_at.timestamp_millis(),
    };
    Ok(Some((rec, state)))
}

/// Writes a change the lifecycle decided for one task and returns the task as it is
/// now; `None` when nothing changes. (Log appends and agent results carry data of
/// their own: `append_log` and `finish_task` write those.)
async fn write_task(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    write: &Write,
    now_ms: i64,
) -> StoreResult<Option<TaskRecord>> {
    let row = match write {
        Write::Nothing => return Ok(None),
        Write::Status(status) => {
            sqlx::query(concat!(
                "UPDATE tasks SET status = $1 WHERE id = $2 RETURNING ",
                task_cols!()
            ))
            .bind(status.as_str())
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::Requeue => {
            sqlx::query(concat!(
                "UPDATE tasks SET status = $1, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL WHERE id = $2 RETURNING ",
                task_cols!()
            ))
            .bind(TaskStatus::Ready.as_str())
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
        }
        Write::Start => {
            sqlx::query(concat!(
                "UPDATE tasks SET status = $1, started_at = $2, offer_deadline = NULL WHERE id = $3 RETURNING ",
                task_cols!()
            ))
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
                "UPDATE tasks SET status = $1, failure_reason = $2, failure_message = $3, finished_at = $4, elapsed_ms = $5 - started_at, offer_deadline = NULL WHERE id = $6 RETURNING ",
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
                "UPDATE tasks SET cancel_requested = TRUE WHERE id = $1 RETURNING ",
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

/// Statuses as the text array `= ANY($n)` reads.
fn status_list(statuses: &[TaskStatus]) -> Vec<String> {
    statuses.iter().map(|s| s.as_str().to_string()).collect()
}

/// Statements that run on every poll and compare `status` in their WHERE clause. The
/// status is spliced in from [`TaskStatus::as_str`] instead of bound: a generic plan
/// with a bound status cannot use the partial index `tasks_ready`, which the claim
/// needs. Rows another replica is claiming right now are skipped, not waited for.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE tasks SET status = $1, session_id = $2, agent_hostname = $3, offer_deadline = $4, dispatched_at = $5 \
         WHERE id IN (SELECT id FROM tasks WHERE status = {from} AND org_id = $6 AND tag_key = $7 ORDER BY id LIMIT $8 FOR UPDATE SKIP LOCKED) \
         RETURNING id, target_name, kind, script, message, secret_provider, secret_path, secret_mapping, redact, redact_keys_json, public_keys_json, custom_command, timeout_secs, user_email, user_groups_json, coalesce(run_requested_at, created_at) AS run_from, created_with_jwt, \
         EXISTS (SELECT 1 FROM targets g WHERE g.org_id = tasks.org_id AND g.name = tasks.target_name AND g.config_sealed IS NOT NULL) AS target_has_config",
        from = sql_literal(lifecycle::CLAIM.from),
    )
});

static CANCELS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM tasks WHERE session_id = $1 AND status = {running} AND cancel_requested",
        running = sql_literal(TaskStatus::Running),
    )
});

/// A status as an SQL string literal (its names are plain lower-case words and dashes).
fn sql_literal(status: TaskStatus) -> String {
    format!("'{}'", status.as_str())
}

impl PgStore {
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
            "INSERT INTO tokens (org_id, kind, user_id, name, tags, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(org_id)
        .bind(kind)
        .bind(user_id)
        .bind(name)
        .bind(tags)
        .bind(&hash[..])
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await;
        match r {
            Ok(row) => Ok(row.try_get("id")?),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("this token already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn session_by_id(&self, pool: &PgPool, id: &str) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM agent_sessions s JOIN orgs o ON o.id = s.org_id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
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
    tx: &mut Transaction<'_, Postgres>,
    org_id: i64,
    delta: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO log_usage (org_id, bytes) VALUES ($1, GREATEST($2, 0)) \
         ON CONFLICT (org_id) DO UPDATE SET bytes = GREATEST(log_usage.bytes + $2, 0)",
    )
    .bind(org_id)
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_chunk(
    tx: &mut Transaction<'_, Postgres>,
    task_id: i64,
    start: u64,
    data: &[u8],
) -> StoreResult<()> {
    let start_i = i64::try_from(start).unwrap_or(i64::MAX);
    let end_i = i64::try_from(start + data.len() as u64).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO task_log_chunks (task_id, start_offset, end_offset, data) VALUES ($1, $2, $3, $4)",
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
    conn: &mut sqlx::PgConnection,
    id: &str,
) -> StoreResult<Option<(EndedSession, bool)>> {
    let row = sqlx::query(
        "SELECT org_id, tags, hostname, ended_at FROM agent_sessions WHERE id = $1 FOR UPDATE",
    )
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
    conn: &mut sqlx::PgConnection,
    id: &str,
    ended: &mut EndedSession,
    how: &SessionEnd,
    keep: &[i64],
    now_ms: i64,
) -> StoreResult<()> {
    let running = lifecycle::SESSION_ENDED_RUNNING;
    ended.failed = sqlx::query_scalar(
        "UPDATE tasks SET status = $1, failure_reason = $2, failure_message = $3, finished_at = $4, elapsed_ms = $5 - started_at \
         WHERE session_id = $6 AND status = $7 AND NOT (id = ANY($8)) RETURNING id",
    )
    .bind(running.to.as_str())
    .bind(running.reason.map(|r| r.as_str()))
    .bind(how.running_task_message(&ended.hostname))
    .bind(now_ms)
    .bind(now_ms)
    .bind(id)
    .bind(running.from.as_str())
    .bind(keep)
    .fetch_all(&mut *conn)
    .await?;
    let offered = lifecycle::SESSION_ENDED_OFFERED;
    ended.requeued = sqlx::query_scalar(
        "UPDATE tasks SET status = $1, session_id = NULL, agent_hostname = NULL, offer_deadline = NULL \
         WHERE session_id = $2 AND status = $3 RETURNING id",
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
#[path = "postgres_reviews.rs"]
mod reviews;

// Browser sessions of the web app (after the macros above, which it uses).
mod web_sessions;

#[async_trait]
impl super::held::HeldTokenStore for PgStore {
    async fn held_count(&self, now_ms: i64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM held_jwts WHERE drop_after > $1")
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64_of(n))
    }

    async fn hold_token(&self, row: &super::held::HeldRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO held_jwts (task_id, sealed, proof_sealed, drop_after, proof_org, proof_due) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_id) DO UPDATE SET sealed = EXCLUDED.sealed, \
             proof_sealed = EXCLUDED.proof_sealed, drop_after = EXCLUDED.drop_after, \
             proof_org = EXCLUDED.proof_org, proof_due = EXCLUDED.proof_due",
        )
        .bind(row.task_id)
        .bind(&row.sealed)
        .bind(row.proof_sealed.as_deref())
        .bind(row.drop_after_ms)
        .bind(row.awaiting_proof.map(|(org, _)| org))
        .bind(row.awaiting_proof.map(|(_, due)| due))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn held_token(&self, task_id: i64) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
        Ok(
            sqlx::query_as("SELECT sealed, proof_sealed FROM held_jwts WHERE task_id = $1")
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn await_held_proof(&self, task_id: i64, org_id: i64, due_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE held_jwts SET proof_org = $2, proof_due = $3 WHERE task_id = $1")
            .bind(task_id)
            .bind(org_id)
            .bind(due_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_held_proof(&self, task_id: i64, proof_sealed: &[u8]) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE held_jwts SET proof_sealed = $2, proof_org = NULL, proof_due = NULL \
             WHERE task_id = $1 AND proof_due IS NOT NULL",
        )
        .bind(task_id)
        .bind(proof_sealed)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn take_overdue_proofs(&self, now_ms: i64) -> StoreResult<Vec<(i64, i64)>> {
        sqlx::query("DELETE FROM held_jwts WHERE drop_after < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_as(
            "DELETE FROM held_jwts WHERE proof_due <= $1 RETURNING proof_org, task_id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn release_token(&self, task_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM held_jwts WHERE task_id = $1")
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Statuses come from `TaskStatus::as_str`, never from literals in SQL text.
    #[test]
    fn no_status_literal_in_sql() {
        let source = include_str!("postgres.rs");
        for status in runops_proto::TaskStatus::ALL {
            let literal = format!("'{}'", status.as_str());
            assert!(
                !source.contains(&literal),
                "postgres.rs has the literal {literal}: bind `TaskStatus::as_str()` instead"
            );
        }
    }

    /// Roles are bound from `Role`, as in sqlite.rs.
    #[test]
    fn no_admin_role_literal_in_sql() {
        let literal = format!("'{}'", runops_proto::Role::Admin);
        assert!(
            !include_str!("postgres.rs").contains(&literal),
            "postgres.rs has the literal {literal}: bind `Role::Admin.as_str()` instead"
        );
    }
}
