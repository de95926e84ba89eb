//! What the whole agent process shares: its configuration, the pipeline's registries,
//! the spool, the link to the server, and the bookkeeping of its tasks.

use crate::config::AgentConfig;
use crate::connection::ServerLink;
use crate::health::AgentHealth;
use crate::logs::output::LogProgress;
use crate::logs::spool::Spool;
use crate::logs::stream::report_task;
use crate::pipeline::PipelineContext;
use crate::tasks::{ActiveTasks, Slots};
use runops_proto::agent::ConnectRequest;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Agent {
    pub cfg: AgentConfig,
    pub ctx: PipelineContext,
    pub spool: Spool,
    pub link: ServerLink,
    pub active: ActiveTasks,
    pub slots: Slots,
    /// Connection state and task counters behind `--health-addr`.
    pub health: Arc<AgentHealth>,
    /// Random per process: lets a reconnect resume this agent's session.
    pub instance_id: String,
    pub hostname: String,
    /// Held for the life of the process: one agent per data dir.
    pub data_dir_lock: std::fs::File,
}

impl Agent {
    pub fn connect_request(&self) -> ConnectRequest {
        ConnectRequest {
            tags: self.cfg.tags.clone(),
            hostname: self.hostname.clone(),
            version: runops_proto::VERSION.to_string(),
            instance_id: self.instance_id.clone(),
            concurrency: self.cfg.concurrency,
            standby: self.cfg.standby,
        }
    }

    /// Reports every task left in the spool by a previous run of the agent: finished
    /// ones as they ended, interrupted ones as `failure`/`agent-error` (never re-run).
    /// The reports wait for a session and run in the background.
    pub async fn resume_spool(self: &Arc<Self>) {
        let ids = match self.spool.pending().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cannot read the spool, earlier results are not reported: {e}");
                return;
            }
        };
        for task_id in ids {
            let result = match self.spool.recover(task_id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(task_id, "cannot recover the spooled task: {e}");
                    continue;
                }
            };
            tracing::info!(task_id, status = %result.status, "reporting a task spooled by an earlier run");
            self.active.add(task_id, None);
            let progress = watch::channel(LogProgress {
                written: result.log_size,
                done: true,
            })
            .1;
            let agent = self.clone();
            tokio::spawn(async move {
                report_task(agent.link.clone(), agent.spool.task(task_id), progress).await;
                agent.active.remove(task_id);
            });
        }
    }
}

/// A random hex id for this agent process.
pub fn new_instance_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: fall back on what is unique enough on this host.
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        return format!("{:x}-{:x}", std::process::id(), t);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The machine's host name, for `runops agents list`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end])
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    "unknown".to_string()
}
