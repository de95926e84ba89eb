//! The Runops agent: runs tasks inside the user's network for a Runops server.
//!
//! [`run`] connects to the server named by the agent token (outbound only), long-polls
//! for task offers (the poll is also the heartbeat), and runs each accepted task through
//! the [`pipeline`]: check the creator's identity token when `JWK_URL` is set ([`jwt`]),
//! fetch the target's secrets with a [`secrets`] provider, apply the
//! mapping, render `{{KEY}}` placeholders, run it with a [`runners`] integration in its
//! own process group with a minimal [`env`] (as an unprivileged user when the agent is
//! root, [`run_as`]), and send the output through the task's
//! redactor into the on-disk spool. A per-task uploader ([`logs::stream`]) streams the
//! redacted log and then the result to the server, retrying until acknowledged, so a
//! server restart loses nothing. The [`connection`] module holds the connect/poll loop;
//! [`shutdown`] the graceful stop (first signal drains, second cancels running tasks);
//! [`health`] the optional `/healthz` and `/metrics` endpoint (`--health-addr`).

pub mod agent;
pub mod aws;
pub mod backoff;
pub mod config;
pub mod connection;
pub mod env;
pub mod failure;
pub mod health;
pub mod isolation;
pub mod jwt;
pub mod limits;
pub mod logs;
pub mod memory;
pub mod pipeline;
pub mod process;
pub mod render;
pub mod run_as;
pub mod runners;
pub mod secrets;
pub mod shutdown;
pub mod spawn;
pub mod tasks;

pub use config::AgentArgs;
pub use shutdown::ShutdownSignal;

use crate::agent::Agent;
use crate::config::AgentConfig;
use crate::connection::ServerLink;
use crate::env::BaseEnv;
use crate::logs::spool::{Spool, create_private_dir};
use crate::pipeline::PipelineContext;
use crate::runners::RunnerRegistry;
use crate::secrets::SecretsRegistry;
use crate::tasks::{ActiveTasks, Slots};
use anyhow::Context;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// Longest wait for the integration checks before connecting: a slow tool's version
/// probe should not delay taking work.
const STARTUP_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `runops agent --check`: the report of which integration types can run on this machine.
pub async fn check_report() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let checks = runners::check::check_integrations(&RunnerRegistry::with_defaults(), &path).await;
    runners::check::format_checks(&checks)
}

/// Runs the agent until `shutdown` completes (graceful: stop taking work, finish running
/// tasks, report, disconnect; a second request cancels the running tasks, a third stops
/// without waiting for reports) or a fatal error: the token is rejected, the tags are
/// held by another agent (without `--standby`), or the data dir is unusable. The error's
/// message names the problem; the binary prints it and exits 1.
pub async fn run(args: AgentArgs, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let cfg = AgentConfig::from_args(&args)?;
    let runners = RunnerRegistry::with_defaults();
    // Tell the operator at start-up how many integrations can run here, before the
    // `ready` line when the version probes are quick; never hold the connection back
    // longer than STARTUP_CHECK_WAIT for them (the line then comes when they finish).
    let registry = runners.clone();
    let mut check = tokio::spawn(async move {
        let path = std::env::var("PATH").unwrap_or_default();
        runners::check::log_checks(&runners::check::check_integrations(&registry, &path).await);
    });
    let _ = tokio::time::timeout(STARTUP_CHECK_WAIT, &mut check).await;
    run_with(cfg, runners, SecretsRegistry::with_defaults(), shutdown).await
}

/// [`run`] with explicit registries (tests, embedders).
pub async fn run_with(
    mut cfg: AgentConfig,
    runners: RunnerRegistry,
    secrets: SecretsRegistry,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let client = runops_client::Client::new(&cfg.server_url, &cfg.token)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .with_context(|| {
            format!(
                "cannot create the agent's data dir {}; set RUNOPS_AGENT_DATA_DIR to a writable directory",
                cfg.data_dir.display()
            )
        })?;
    // Absolute from here on: runners hand paths under it (a kubeconfig, a script) to
    // tools whose working directory is the task's temp dir, and Landlock rules need the
    // real path. Private even when it existed before with wider permissions.
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir).with_context(|| {
        format!(
            "cannot resolve the agent's data dir {}",
            cfg.data_dir.display()
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!(
                    "cannot make the agent's data dir {} private (0700)",
                    cfg.data_dir.display()
                )
            })?;
    }
    let data_dir_lock = lock_data_dir(&cfg.data_dir)?;
    let (instance_id, instance_restored) = agent::load_instance_id(&cfg.data_dir)?;
    // What an earlier run left running when it was SIGKILLed goes first (the spool's
    // process-group records below cover the main processes; this the detached ones).
    let tmp_root = cfg.data_dir.join("tmp");
    let earlier_roots: Vec<_> = std::iter::once(tmp_root.clone())
        .chain(run_as::previous_tmp_root(&cfg.data_dir))
        .collect();
    let killed = isolation::kill_earlier_leftovers(&earlier_roots);
    if killed > 0 {
        tracing::info!(killed, "killed processes left running by an earlier run");
    }
    let spool = Spool::open(&cfg.data_dir)
        .with_context(|| format!("cannot create the spool in {}", cfg.data_dir.display()))?;
    // Temp dirs of tasks that ran when the agent died may hold secrets: remove them.
    if tmp_root.exists()
        && let Err(e) = std::fs::remove_dir_all(&tmp_root)
    {
        tracing::warn!(
            "cannot clean the old task temp dirs in {}: {e}",
            tmp_root.display()
        );
    }
    create_private_dir(&tmp_root).with_context(|| {
        format!(
            "cannot create the task temp dir root {}",
            tmp_root.display()
        )
    })?;

    // Least privilege: as root, tasks run as RUN_AS_USER / `runops`, in temp dirs that
    // user can reach; the spool and data dir stay the agent's (0700).
    let run_as = run_as::resolve(cfg.identity.run_as_user.as_deref())?;
    let tmp_root = match &run_as {
        Some(user) => run_as::shared_tmp_root(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the temp dir root for tasks run as `{}`",
                user.name
            )
        })?,
        None => tmp_root,
    };
    let task_user = if !nix::unistd::geteuid().is_root() {
        isolation::TaskUser::AgentsOwn
    } else if run_as.is_some() {
        isolation::TaskUser::Other
    } else {
        isolation::TaskUser::Root
    };
    let isolation = Arc::new(isolation::Isolation::start(&cfg.data_dir, task_user));
    // The shared root lives outside the data dir: remove it on the way out.
    let shared_tmp_root = run_as.is_some().then(|| tmp_root.clone());
    let authenticator = match &cfg.identity.jwt {
        Some(settings) => {
            tracing::info!(jwk_url = %settings.jwk_url, "JWK_URL is set: every task must carry its creator's identity token");
            Some(Arc::new(jwt::TaskAuthenticator::new(settings)?))
        }
        None => None,
    };

    let health = Arc::new(health::AgentHealth::new(spool.root()));
    // Listening before the first connect: probes pass while the server is unreachable.
    let health_server = match cfg.health_addr {
        Some(addr) => Some(health::serve(health::bind(addr).await?, health.clone())),
        None => None,
    };

    // Self-hosted log storage (LOGS_S3_*): logs whose upload failed are retried from here.
    let log_store = crate::logs::s3::S3LogStore::from_process_env(&cfg.data_dir)?.map(Arc::new);
    if let Some(store) = &log_store {
        let s = store.settings();
        tracing::info!(bucket = %s.bucket, prefix = %s.prefix, endpoint = %s.endpoint, "task logs are also stored in S3");
        tokio::spawn(store.clone().run_retries());
    }
    let (publisher, link) = ServerLink::new(client);
    let agent = Arc::new(Agent {
        ctx: PipelineContext {
            runners,
            secrets,
            base_env: BaseEnv::from_process_env()
                .with_run_as(run_as)
                .with_isolation(isolation),
            authenticator,
            tmp_root,
            kill_grace: cfg.kill_grace,
            log_store: log_store.clone(),
            redact_info_types: cfg.redact_info_types.clone(),
            redact_phone_regions: cfg.redact_phone_regions.clone(),
        },
        spool,
        link,
        active: ActiveTasks::default(),
        slots: Slots::new(cfg.concurrency),
        health,
        instance_id,
        instance_restored,
        hostname: agent::hostname(),
        cfg,
        data_dir_lock,
    });
    agent.resume_spool().await;
    let trimmer = tokio::spawn(memory::trim_when_idle(agent.clone()));
    let result = connection::poll::run_loop(agent, publisher, shutdown).await;
    trimmer.abort();
    if let Some(server) = health_server {
        server.abort();
    }
    if let Some(root) = shared_tmp_root
        && let Err(e) = std::fs::remove_dir_all(&root)
    {
        tracing::warn!(
            "cannot remove the task temp dir root {}: {e}",
            root.display()
        );
    }
    result
}

/// Takes the data dir for this process: two agents sharing a spool would report (and
/// fail) each other's tasks. The lock goes with the returned file.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // An exclusive `flock`, released when the file is closed (or the process dies).
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the data dir {} is in use by another running agent; give each agent its own RUNOPS_AGENT_DATA_DIR",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
    Ok(file)
}
