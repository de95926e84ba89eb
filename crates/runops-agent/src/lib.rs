//! The Runops agent: runs tasks inside the user's network for a Runops server.
//!
//! [`run`] connects to the server named by the agent token (outbound only), long-polls
//! for task offers (the poll is also the heartbeat), and runs each accepted task through
//! the [`pipeline`]: fetch the target's secrets with a [`secrets`] provider, apply the
//! mapping, render `{{KEY}}` placeholders, run it with a [`runners`] integration in its
//! own process group with a minimal [`env`], and send the output through the task's
//! redactor into the on-disk spool. A per-task uploader ([`logs::stream`]) streams the
//! redacted log and then the result to the server, retrying until acknowledged, so a
//! server restart loses nothing. The [`connection`] module holds the connect/poll loop;
//! [`shutdown`] the graceful stop (first signal drains, second cancels running tasks).

pub mod agent;
pub mod backoff;
pub mod config;
pub mod connection;
pub mod env;
pub mod failure;
pub mod logs;
pub mod pipeline;
pub mod process;
pub mod render;
pub mod runners;
pub mod secrets;
pub mod shutdown;
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
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// Runs the agent until `shutdown` completes (graceful: stop taking work, finish running
/// tasks, report, disconnect; a second request cancels the running tasks, a third stops
/// without waiting for reports) or a fatal error: the token is rejected, the tags are
/// held by another agent (without `--standby`), or the data dir is unusable. The error's
/// message names the problem; the binary prints it and exits 1.
pub async fn run(args: AgentArgs, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let cfg = AgentConfig::from_args(&args)?;
    run_with(
        cfg,
        RunnerRegistry::with_defaults(),
        SecretsRegistry::with_defaults(),
        shutdown,
    )
    .await
}

/// [`run`] with explicit registries (tests, embedders).
pub async fn run_with(
    cfg: AgentConfig,
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
    let data_dir_lock = lock_data_dir(&cfg.data_dir)?;
    let spool = Spool::open(&cfg.data_dir)
        .with_context(|| format!("cannot create the spool in {}", cfg.data_dir.display()))?;
    // Temp dirs of tasks that ran when the agent died may hold secrets: remove them.
    let tmp_root = cfg.data_dir.join("tmp");
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

    let (publisher, link) = ServerLink::new(client);
    let agent = Arc::new(Agent {
        ctx: PipelineContext {
            runners,
            secrets,
            base_env: BaseEnv::from_process_env(),
            tmp_root,
            kill_grace: cfg.kill_grace,
        },
        spool,
        link,
        active: ActiveTasks::default(),
        slots: Slots::new(cfg.concurrency),
        instance_id: agent::new_instance_id(),
        hostname: agent::hostname(),
        cfg,
        data_dir_lock,
    });
    agent.resume_spool().await;
    connection::poll::run_loop(agent, publisher, shutdown).await
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
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            anyhow::bail!(
                "the data dir {} is in use by another running agent; give each agent its own RUNOPS_AGENT_DATA_DIR",
                dir.display()
            );
        }
        anyhow::bail!("cannot lock {}: {e}", path.display());
    }
    Ok(file)
}
