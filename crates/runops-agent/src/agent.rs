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
    /// Random per data dir, kept in it: lets a reconnect (and a restarted process)
    /// resume this agent's session.
    pub instance_id: String,
    /// True when `instance_id` came from the data dir: this process is a restart.
    pub instance_restored: bool,
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
            restarted: false,
            spooled: Vec::new(),
            verifies_identity: self.cfg.identity.jwt.is_some(),
        }
    }

    /// The process's first connect: a restarted agent says so, with the tasks its spool
    /// still holds, so it gets its session back at once.
    pub async fn first_connect_request(&self) -> ConnectRequest {
        let mut req = self.connect_request();
        if self.instance_restored {
            req.restarted = true;
            req.spooled = self.spool.pending().await.unwrap_or_default();
        }
        req
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
                report_task(
                    agent.link.clone(),
                    agent.spool.task(task_id),
                    progress,
                    None,
                )
                .await;
                agent.active.remove(task_id);
            });
        }
    }
}

/// The file in the data dir that keeps the agent's instance id across restarts.
const INSTANCE_ID_FILE: &str = "instance-id";

/// The instance id kept in `data_dir`, or a new one written there (0600); true when
/// it was already there (this process restarts an earlier one).
pub fn load_instance_id(data_dir: &std::path::Path) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(INSTANCE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if is_instance_id(id.trim()) => return Ok((id.trim().to_string(), true)),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "the kept instance id is malformed; making a new one")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot read the agent's instance id from {}: {e}",
                path.display()
            ));
        }
    }
    let id = new_instance_id();
    let tmp = data_dir.join(format!("{INSTANCE_ID_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        anyhow::anyhow!(
            "cannot write the agent's instance id to {}: {e}",
            path.display()
        )
    })?;
    Ok((id, false))
}

fn is_instance_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A random hex id for a new agent data dir.
pub fn new_instance_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: fall back on what is unique enough on this host.
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        return format!("{:x}-{:x}", std::process::id(), t);
    }
    hex::encode(bytes)
}

/// The machine's host name, for `runops agents list`.
pub fn hostname() -> String {
    match nix::unistd::gethostname() {
        Ok(name) if !name.is_empty() => name.to_string_lossy().into_owned(),
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (first, restored) = load_instance_id(dir.path()).unwrap();
        assert!(!restored);
        let (again, restored) = load_instance_id(dir.path()).unwrap();
        assert!(restored);
        assert_eq!(first, again);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(INSTANCE_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(INSTANCE_ID_FILE), "../../etc").unwrap();
        let (fresh, restored) = load_instance_id(dir.path()).unwrap();
        assert!(!restored);
        assert_ne!(fresh, first);
    }
}
