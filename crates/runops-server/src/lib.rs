//! The Runops control plane as a library: `runops server` and `runops up` call
//! [`Server::start`].
//!
//! It serves the user API (`/v1/targets`, `/v1/tasks`, ...) and the agent protocol
//! (`/v1/agent/*`) described in `runops_proto`, over plain HTTP with axum. State lives
//! in a [`store::Store`] (SQLite in the data dir today; handlers only see the trait).
//! Dispatch is a long-poll: an agent's poll claims ready tasks of its tags in one
//! transaction, or waits on an in-memory wake-up ([`hub`]) that task creation fires, so
//! a new task reaches a waiting agent in milliseconds. A [`reaper`] ends sessions whose
//! lease expired (their running tasks fail `agent-lost`, never re-run) and requeues
//! offers that were not started in time.
//!
//! Files: `http/` (routes, one file per API area), `store/` (trait + SQLite),
//! `auth.rs` (bearer tokens), `extract.rs` (JSON/query/path extractors with JSON
//! errors), `error.rs` (the one `ApiError`), `validate.rs` (target and user checks),
//! `templates/` (scripts from a git repository, run with parameters),
//! `hub.rs` (wake-ups), `reaper.rs` (leases), `metrics.rs` (`/metrics`), `audit.rs`
//! (the audit log: who did what, when, from where), `lifecycle.rs` (every task status
//! change, decided without I/O), `effects.rs` (carries out what it decided),
//! `notify.rs` + `webhook/` (events delivered to webhooks from an outbox), and this
//! file (start-up, bootstrap, shutdown).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod conn;
pub mod effects;
pub mod error;
pub mod extract;
pub mod http;
pub mod hub;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod pg_listen;
pub mod reaper;
pub mod review;
pub mod sealed;
pub mod slack;
pub mod store;
pub mod templates;
pub mod validate;
pub mod webhook;

use anyhow::Context;
use runops_proto::limits::MAX_POLL_HOLD_SECS;
use runops_proto::token::{TokenKind, format_user_token};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

use crate::http::{AppState, Settings};
use crate::hub::Hub;
use crate::store::sqlite::SqliteStore;
use crate::store::{NewUser, Store};

/// Default bytes of log kept per task: big enough for any readable output, small
/// enough that one runaway task cannot fill the disk.
pub const DEFAULT_LOG_CAP_BYTES: u64 = 256 * 1024 * 1024;

/// Default bytes of log the whole server keeps: one busy org cannot fill a small disk,
/// and it is far above what the retention period usually leaves.
pub const DEFAULT_LOG_QUOTA_BYTES: u64 = 20 * 1024 * 1024 * 1024;

/// Default days a task's log is kept after the task ends.
pub const DEFAULT_LOG_RETENTION_DAYS: u64 = 90;

/// After `shutdown` stops accepting, in-flight requests get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Name of the organisation created on first start.
pub const DEFAULT_ORG: &str = "default";

/// E-mail of the admin user created on first start.
pub const BOOTSTRAP_ADMIN_EMAIL: &str = "admin@localhost";

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// clap args for `runops server`, flattened into the binary's `server` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "RUNOPS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database.
    #[arg(long, env = "RUNOPS_DATA_DIR", default_value = "./.runops")]
    pub data_dir: PathBuf,
    /// Agent lease seconds (default 30; at most 30 by default); poll hold = min(25, lease*0.6) s.
    #[arg(long, env = "RUNOPS_AGENT_LEASE_SECS", default_value_t = 30)]
    pub agent_lease_secs: u64,
    /// Seconds an offered task may wait for `start` before going back to `ready`.
    #[arg(long, env = "RUNOPS_OFFER_TIMEOUT_SECS", default_value_t = 30)]
    pub offer_timeout_secs: u64,
    /// Bytes of log kept per task; beyond: still acknowledged, not stored, a note appended.
    #[arg(long, env = "RUNOPS_LOG_CAP_BYTES", default_value_t = DEFAULT_LOG_CAP_BYTES)]
    pub log_cap_bytes: u64,
    /// Bytes of task logs the whole server keeps (0 = no quota); beyond: acknowledged, not stored, a note appended.
    #[arg(long, env = "RUNOPS_LOG_QUOTA_BYTES", default_value_t = DEFAULT_LOG_QUOTA_BYTES)]
    pub log_quota_bytes: u64,
    /// Bytes of task logs one organisation keeps (0 = only the server's quota).
    #[arg(long, env = "RUNOPS_ORG_LOG_QUOTA_BYTES", default_value_t = 0)]
    pub org_log_quota_bytes: u64,
    /// Days a task's log is kept after the task ends; then a background job deletes it (0 = forever).
    #[arg(long, env = "RUNOPS_LOG_RETENTION_DAYS", default_value_t = DEFAULT_LOG_RETENTION_DAYS)]
    pub log_retention_days: u64,
    /// Public URL written into agent tokens (default http://<listen>).
    #[arg(long, env = "RUNOPS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Open connections at most; more wait in the kernel's queue [default: 10000, lowered to fit the open-files limit].
    #[arg(long, env = "RUNOPS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers (from connecting, or from the first byte of a next request).
    #[arg(long, env = "RUNOPS_HEADER_READ_TIMEOUT_SECS", default_value_t = conn::DEFAULT_HEADER_READ_TIMEOUT_SECS)]
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit with no request; long-polls and log follows are requests, never idle.
    #[arg(long, env = "RUNOPS_IDLE_TIMEOUT_SECS", default_value_t = conn::DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Longest wait between two attempts of a failed webhook delivery (backoff doubles from 1 s up to this; given up after 3 days).
    #[arg(long, env = "RUNOPS_WEBHOOK_RETRY_MAX_SECS", default_value_t = webhook::DEFAULT_RETRY_MAX_SECS)]
    pub webhook_retry_max_secs: u64,
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`) shared by any number of server replicas; absent: SQLite in --data-dir.
    #[arg(long, env = "RUNOPS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Connections each replica opens to PostgreSQL at most.
    #[arg(long, env = "RUNOPS_DATABASE_POOL_SIZE", default_value_t = store::postgres::DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    #[command(flatten)]
    pub auth: identity::AuthArgs,
    #[command(flatten)]
    pub templates: templates::TemplatesArgs,
    #[command(flatten)]
    pub slack: slack::SlackArgs,
    #[command(subcommand)]
    pub command: Option<admin::ServerCommand>,
}

impl ServerArgs {
    /// Defaults for a server on `listen` with its data in `data_dir` (tests, `runops up`).
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerArgs {
        ServerArgs {
            listen,
            data_dir,
            agent_lease_secs: 30,
            offer_timeout_secs: 30,
            log_cap_bytes: DEFAULT_LOG_CAP_BYTES,
            public_url: None,
            log_quota_bytes: DEFAULT_LOG_QUOTA_BYTES,
            org_log_quota_bytes: 0,
            log_retention_days: DEFAULT_LOG_RETENTION_DAYS,
            max_connections: None,
            header_read_timeout_secs: conn::DEFAULT_HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: conn::DEFAULT_IDLE_TIMEOUT_SECS,
            webhook_retry_max_secs: webhook::DEFAULT_RETRY_MAX_SECS,
            auth: identity::AuthArgs::default(),
            templates: templates::TemplatesArgs {
                templates_branch: "main".into(),
                templates_interval_secs: templates::DEFAULT_INTERVAL_SECS,
                ..Default::default()
            },
            slack: slack::SlackArgs::default(),
            database_url: None,
            database_pool_size: store::postgres::DEFAULT_POOL_SIZE,
            command: None,
        }
    }
}

/// A running control plane.
pub struct Server {
    addr: SocketAddr,
    url: String,
    generated_admin_token: Option<String>,
    state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    serve: JoinHandle<()>,
    reaper: JoinHandle<()>,
    retention: JoinHandle<()>,
    webhooks: JoinHandle<()>,
    /// Pulls the templates repository (idle without one).
    templates: JoinHandle<()>,
    /// Posts events to Slack (when the app is configured).
    slack: Option<JoinHandle<()>>,
    /// The NOTIFY sender and LISTEN tasks (PostgreSQL only).
    links: Vec<JoinHandle<()>>,
}

/// Poll hold: well under the lease (the poll is the heartbeat), at most 25 s.
fn poll_hold(lease_secs: u64) -> Duration {
    Duration::from_millis(lease_secs.saturating_mul(600))
        .min(Duration::from_secs(MAX_POLL_HOLD_SECS))
}

impl Server {
    /// Opens/creates the data dir and SQLite (WAL), runs the embedded migrations,
    /// bootstraps, binds the listener, spawns the HTTP server and the lease reaper;
    /// returns once listening. `admin_token`: the RUNOPS_ADMIN_TOKEN value.
    pub async fn start(args: ServerArgs, admin_token: Option<String>) -> anyhow::Result<Server> {
        if args.agent_lease_secs == 0 {
            anyhow::bail!("--agent-lease-secs must be at least 1");
        }
        if args.offer_timeout_secs == 0 {
            anyhow::bail!("--offer-timeout-secs must be at least 1");
        }
        if args.header_read_timeout_secs == 0 {
            anyhow::bail!("--header-read-timeout-secs must be at least 1");
        }
        if args.idle_timeout_secs == 0 {
            anyhow::bail!("--idle-timeout-secs must be at least 1");
        }
        if args.webhook_retry_max_secs == 0 {
            anyhow::bail!("--webhook-retry-max-secs must be at least 1");
        }
        let limits = conn::ConnLimits {
            max_connections: conn::connection_cap(
                args.max_connections,
                conn::raise_nofile_limit(),
            )?,
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        };
        // Bind before touching the data dir: a port already taken must not leave a
        // half-made first start behind (an org and an admin whose token nobody saw).
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let quotas = store::sqlite::LogQuotas {
            server_bytes: args.log_quota_bytes,
            org_bytes: args.org_log_quota_bytes,
        };
        let secret_key = std::env::var(sealed::SECRET_KEY_ENV).ok();
        let jwts = Arc::new(identity::HeldTokens::default());
        let (store, sealer, pg, generated_admin_token) = match admin::database_url(&args)? {
            Some(url) => {
                // Replicas share the database, so they must share the key: a key file
                // generated per replica would differ.
                let Some(key) = secret_key.as_deref().filter(|k| !k.trim().is_empty()) else {
                    anyhow::bail!(
                        "with --database-url (RUNOPS_DATABASE_URL) set {} to the same key on every replica (`openssl rand -base64 32`)",
                        sealed::SECRET_KEY_ENV
                    );
                };
                let sealer = Arc::new(sealed::ConfigSealer::load(Some(key), &args.data_dir)?);
                let pg = store::postgres::PgStore::open(
                    store::postgres::connect_options(&url)?,
                    args.database_pool_size,
                )
                .await?
                .with_log_quotas(quotas);
                pg.check_key_fingerprint(sealer.fingerprint()).await?;
                let lock = pg.begin_bootstrap().await?;
                let pool = pg.pool().clone();
                let pg = Arc::new(pg);
                // Replicas share the creators' identity tokens (sealed) through it.
                jwts.share(pg.clone(), sealer.clone());
                let store: Arc<dyn Store> = pg;
                let generated = bootstrap(store.as_ref(), admin_token).await?;
                lock.commit().await?;
                (store, sealer, Some(pool), generated)
            }
            None => {
                create_data_dir(&args.data_dir).await?;
                let sealer = Arc::new(sealed::ConfigSealer::load(
                    secret_key.as_deref(),
                    &args.data_dir,
                )?);
                let store: Arc<dyn Store> = Arc::new(
                    SqliteStore::open(&args.data_dir)
                        .await?
                        .with_log_quotas(quotas),
                );
                secure_data_dir(&args.data_dir)?;
                let generated = bootstrap(store.as_ref(), admin_token).await?;
                (store, sealer, None, generated)
            }
        };
        let unused_first_admin_token = match store.first_admin_token().await? {
            Some((id, false)) => {
                if generated_admin_token.is_none() {
                    tracing::warn!(
                        "the first admin ({BOOTSTRAP_ADMIN_EMAIL}) has never used its API token; \
                         if it was lost, stop the server and start it once with \
                         RUNOPS_ADMIN_TOKEN=<a new token of your choice>: that value replaces \
                         the unused one (which is revoked)"
                    );
                }
                id
            }
            _ => 0,
        };
        let default_org_id = match store.first_admin().await? {
            Some(admin) => store.find_org_id(&admin.org).await?,
            None => store.find_org_id(DEFAULT_ORG).await?,
        };
        let identity =
            identity::IdentityProvider::from_args(&args.auth, store.as_ref(), default_org_id)
                .await?
                .map(Arc::new);
        // Tasks waiting for their creator's proof lost the token they need (memory only).
        // On PostgreSQL the other replicas may hold those tokens: a start of one replica
        // fails none of them (one that lost its token fails when it is claimed).
        let unproven = if pg.is_some() {
            0
        } else {
            store
                .fail_tasks_awaiting_proof(identity::LOST_TOKEN_MESSAGE, now_ms())
                .await?
        };
        if unproven > 0 {
            tracing::warn!(
                tasks = unproven,
                "tasks waiting for their creator's proof failed: their identity tokens were lost in the restart"
            );
        }
        let resumed = store.extend_live_sessions(now_ms()).await?;
        if resumed > 0 {
            tracing::info!(
                sessions = resumed,
                "agent sessions from the last run get a fresh lease to come back"
            );
        }
        let templates = Arc::new(templates::Templates::from_args(
            &args.templates,
            &args.data_dir,
        )?);
        let addr = listener.local_addr()?;
        let url = args
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{addr}"));
        let (slack_app, slack_events) =
            match slack::SlackApp::from_args(&args.slack, default_org_id, &url)? {
                Some((app, events)) => (Some(Arc::new(app)), Some(events)),
                None => (None, None),
            };
        let state = AppState {
            store,
            hub: Arc::new(Hub::default()),
            metrics: Arc::new(metrics::Metrics::default()),
            sealer,
            identity,
            jwts,
            unused_first_admin_token: Arc::new(std::sync::atomic::AtomicI64::new(
                unused_first_admin_token,
            )),
            webhooks: Arc::new(webhook::Outbox::new(Duration::from_secs(
                args.webhook_retry_max_secs,
            ))),
            templates: templates.clone(),
            slack: slack_app,
            settings: Arc::new(Settings {
                lease_secs: args.agent_lease_secs,
                poll_hold: poll_hold(args.agent_lease_secs),
                offer_timeout_secs: args.offer_timeout_secs,
                log_cap_bytes: args.log_cap_bytes,
                public_url: url.clone(),
            }),
        };
        let links = match pg {
            Some(pool) => pg_listen::start(pool, state.hub.clone()).await?.into(),
            None => Vec::new(),
        };
        let app = http::router(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(conn::serve(listener, app, limits, stopped));
        let reaper = tokio::spawn(reaper::run(state.clone()));
        let retention = tokio::spawn(reaper::run_retention(
            state.clone(),
            args.log_retention_days,
        ));
        let webhooks = tokio::spawn(webhook::worker::run(state.clone()));
        let templates = tokio::spawn(templates.run_poller());
        let slack = slack_events.map(|rx| tokio::spawn(slack::events::run(state.clone(), rx)));
        tracing::info!(
            %addr,
            %url,
            store = if args.database_url.is_some() { "postgresql" } else { "sqlite" },
            data_dir = %args.data_dir.display(),
            max_connections = limits.max_connections,
            "runops server listening"
        );
        Ok(Server {
            addr,
            url,
            generated_admin_token,
            state,
            stop,
            serve,
            reaper,
            retention,
            webhooks,
            templates,
            slack,
            links,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The public URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `Some(token)` only on the first start with an empty store when no admin token
    /// was given: the random admin token to print once.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The store (tests and tools that need to reach below the API).
    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// The handlers' shared state (tests that call [`notify::emit`] as a handler would).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// One log-retention pass as of `now_ms` (tests, tools); see [`reaper::purge_expired_logs`].
    pub async fn purge_expired_logs(&self, days: u64, now_ms: i64) -> anyhow::Result<u64> {
        reaper::purge_expired_logs(&self.state, days, now_ms).await
    }

    /// Graceful: stop accepting, let in-flight requests finish (bounded), close the store.
    pub async fn shutdown(self) {
        self.state.hub.begin_shutdown();
        let _ = self.stop.send(());
        let mut serve = self.serve;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; dropping them");
                serve.abort();
            }
        }
        self.reaper.abort();
        let _ = self.reaper.await;
        self.retention.abort();
        let _ = self.retention.await;
        self.templates.abort();
        let _ = self.templates.await;
        for link in self.links {
            link.abort();
            let _ = link.await;
        }
        // Attempts in flight end within their timeout; then their outcome is recorded.
        if let Some(slack) = self.slack {
            // Events not posted yet are dropped (the queue is in memory, see slack/events.rs).
            slack.abort();
            let _ = slack.await;
        }
        self.state.webhooks.stop();
        let mut webhooks = self.webhooks;
        if tokio::time::timeout(webhook::ATTEMPT_TIMEOUT * 2, &mut webhooks)
            .await
            .is_err()
        {
            webhooks.abort();
            let _ = webhooks.await;
        }
        self.state.store.close().await;
        tracing::info!("runops server stopped");
    }
}

/// Creates the data dir if needed and makes it private (0700): it holds scripts, logs,
/// token hashes and the config key. The database file is created 0600 before SQLite
/// opens it (SQLite gives its -wal and -shm files the database file's mode).
async fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .await
            .with_context(|| format!("cannot make the data dir {} private", dir.display()))?;
        let db = dir.join(store::sqlite::DB_FILE);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&db)
            .with_context(|| format!("cannot create the database {}", db.display()))?;
    }
    Ok(())
}

/// Every file in the data dir 0600 and every dir 0700, whatever an older version or
/// the umask left (run after the database is open, so its -wal/-shm exist).
fn secure_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the data dir {}", dir.display()))?
        {
            let entry = entry?;
            let ty = entry.file_type()?;
            let mode = if ty.is_dir() {
                secure_data_dir(&entry.path())?;
                0o700
            } else if ty.is_file() {
                0o600
            } else {
                continue;
            };
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot make {} private", entry.path().display()))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(())
}

/// First start: org, admin user, admin token. Later starts with an admin token:
/// make sure that token works (automation relies on it).
async fn bootstrap(
    store: &dyn Store,
    admin_token: Option<String>,
) -> anyhow::Result<Option<String>> {
    let admin_token = admin_token.map(|t| t.trim().to_string());
    if let Some(t) = &admin_token
        && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        anyhow::bail!("RUNOPS_ADMIN_TOKEN is empty or contains whitespace");
    }
    let now = now_ms();
    if store.is_empty().await? {
        let org_id = store.create_org(DEFAULT_ORG, now).await?;
        let admin = store
            .create_user(
                org_id,
                &NewUser {
                    name: "admin".into(),
                    email: BOOTSTRAP_ADMIN_EMAIL.into(),
                    groups: vec!["admin".into()],
                    role: runops_proto::Role::Admin,
                },
                now,
            )
            .await?;
        let (token, generated) = match admin_token {
            Some(t) => (t, false),
            None => (format_user_token(&auth::random_secret()?), true),
        };
        store
            .create_token(
                org_id,
                TokenKind::User,
                Some(admin.id),
                Some(store::sqlite::FIRST_ADMIN_TOKEN_NAME),
                &auth::hash_token(&token),
                now,
            )
            .await?;
        tracing::info!(
            org = DEFAULT_ORG,
            admin = BOOTSTRAP_ADMIN_EMAIL,
            "created the first organisation and its admin"
        );
        return Ok(generated.then_some(token));
    }
    let Some(token) = admin_token else {
        return Ok(None);
    };
    let hash = auth::hash_token(&token);
    match store.find_token(&hash).await? {
        Some(found) => {
            let is_admin = found.kind == TokenKind::User
                && found
                    .user
                    .as_ref()
                    .is_some_and(|u| u.role == runops_proto::Role::Admin.as_str());
            if !is_admin {
                anyhow::bail!(
                    "RUNOPS_ADMIN_TOKEN is already in use as a non-admin token; choose another value"
                );
            }
            if found.revoked {
                store.unrevoke_token(found.id).await?;
                tracing::info!("RUNOPS_ADMIN_TOKEN was revoked; it is valid again");
            }
        }
        None => {
            let admin = store
                .first_admin()
                .await?
                .context("the store has no admin user to attach RUNOPS_ADMIN_TOKEN to")?;
            let org_id = store
                .find_org_id(&admin.org)
                .await?
                .context("the admin's organisation vanished")?;
            let unused_first = store.first_admin_token().await?.filter(|(_, used)| !used);
            let new_id = store
                .create_token(
                    org_id,
                    TokenKind::User,
                    Some(admin.id),
                    Some("RUNOPS_ADMIN_TOKEN"),
                    &hash,
                    now,
                )
                .await?;
            tracing::info!(admin = %admin.email, "registered RUNOPS_ADMIN_TOKEN as an admin token");
            if let Some((old_id, _)) = unused_first {
                // The recovery path for a first admin token that was lost before anyone
                // used it: the new value replaces it, so a copy found later is worthless.
                store.revoke_token_by_id(old_id, now).await?;
                for (action, id, detail) in [
                    (
                        "token.create",
                        new_id,
                        serde_json::json!({ "name": "RUNOPS_ADMIN_TOKEN", "user": admin.email }),
                    ),
                    (
                        "token.revoke",
                        old_id,
                        serde_json::json!({ "reason": "replaced by RUNOPS_ADMIN_TOKEN before its first use" }),
                    ),
                ] {
                    store
                        .record_audit(&store::NewAuditEvent {
                            org_id,
                            at_ms: now,
                            actor_email: None,
                            actor_kind: "system",
                            action,
                            object_kind: Some("token"),
                            object_id: Some(id.to_string()),
                            remote_addr: None,
                            detail,
                        })
                        .await?;
                }
                tracing::warn!(
                    token_id = old_id,
                    "revoked the first admin's token, never used, in favour of RUNOPS_ADMIN_TOKEN"
                );
            }
        }
    }
    Ok(None)
}
