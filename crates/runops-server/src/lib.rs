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
//! `hub.rs` (wake-ups), `reaper.rs` (leases), `metrics.rs` (`/metrics`), `audit.rs`
//! (the audit log: who did what, when, from where), and this
//! file (start-up, bootstrap, shutdown).

pub mod audit;
pub mod auth;
pub mod error;
pub mod extract;
pub mod http;
pub mod hub;
pub mod identity;
pub mod metrics;
pub mod reaper;
pub mod sealed;
pub mod store;
pub mod validate;

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
    /// Public URL written into agent tokens (default http://<listen>).
    #[arg(long, env = "RUNOPS_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub auth: identity::AuthArgs,
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
            auth: identity::AuthArgs::default(),
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
    serve: JoinHandle<std::io::Result<()>>,
    reaper: JoinHandle<()>,
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
        create_data_dir(&args.data_dir).await?;
        let sealer = Arc::new(sealed::ConfigSealer::load(
            std::env::var(sealed::SECRET_KEY_ENV).ok().as_deref(),
            &args.data_dir,
        )?);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&args.data_dir).await?);
        let generated_admin_token = bootstrap(store.as_ref(), admin_token).await?;
        let default_org_id = match store.first_admin().await? {
            Some(admin) => store.find_org_id(&admin.org).await?,
            None => store.find_org_id(DEFAULT_ORG).await?,
        };
        let identity =
            identity::IdentityProvider::from_args(&args.auth, store.as_ref(), default_org_id)
                .await?
                .map(Arc::new);
        // Tasks waiting for their creator's proof lost the token they need (memory only).
        let unproven = store
            .fail_tasks_awaiting_proof(identity::LOST_TOKEN_MESSAGE, now_ms())
            .await?;
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
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let url = args
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{addr}"));
        let state = AppState {
            store,
            hub: Arc::new(Hub::default()),
            metrics: Arc::new(metrics::Metrics::default()),
            sealer,
            identity,
            jwts: Arc::new(identity::HeldTokens::default()),
            settings: Arc::new(Settings {
                lease_secs: args.agent_lease_secs,
                poll_hold: poll_hold(args.agent_lease_secs),
                offer_timeout_secs: args.offer_timeout_secs,
                log_cap_bytes: args.log_cap_bytes,
                public_url: url.clone(),
            }),
        };
        let app = http::router(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // TCP_NODELAY: without it a small write (the end of a followed log, a short JSON
        // answer) waits for the peer's delayed ACK, ~40 ms on Linux, on every exchange.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
            }
        });
        let serve = tokio::spawn(async move {
            // Connect info: the peer address the audit log records.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        });
        let reaper = tokio::spawn(reaper::run(state.clone()));
        tracing::info!(%addr, %url, data_dir = %args.data_dir.display(), "runops server listening");
        Ok(Server {
            addr,
            url,
            generated_admin_token,
            state,
            stop,
            serve,
            reaper,
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

    /// Graceful: stop accepting, let in-flight requests finish (bounded), close the store.
    pub async fn shutdown(self) {
        self.state.hub.begin_shutdown();
        let _ = self.stop.send(());
        let mut serve = self.serve;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; dropping them");
                serve.abort();
            }
        }
        self.reaper.abort();
        let _ = self.reaper.await;
        self.state.store.close().await;
        tracing::info!("runops server stopped");
    }
}

/// Creates the data dir if needed; a new one is private (0700): it holds scripts,
/// logs and token hashes.
async fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let existed = tokio::fs::metadata(dir).await.is_ok();
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    #[cfg(unix)]
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .await
            .with_context(|| format!("cannot make the data dir {} private", dir.display()))?;
    }
    #[cfg(not(unix))]
    let _ = existed;
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
                    role: "admin".into(),
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
                Some("bootstrap admin"),
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
                && found.user.as_ref().is_some_and(|u| u.role == "admin");
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
            store
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
        }
    }
    Ok(None)
}
