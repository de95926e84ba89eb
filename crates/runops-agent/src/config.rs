//! The agent's command line / environment ([`AgentArgs`]), its resolved form
//! ([`AgentConfig`]) and every limit and timeout of the agent, each with its reason.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Flags and environment variables of `runops agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// agent token (from `runops agents create-token`); carries the server URL
    #[arg(long, env = "TOKEN", hide_env_values = true)]
    pub token: String,
    /// server URL; overrides the one carried by the token
    #[arg(long, env = "API_URL")]
    pub api_url: Option<String>,
    /// run only the targets whose tags equal these; empty = only untagged targets
    #[arg(long, env = "TAGS")]
    pub tags: Option<String>,
    /// how many tasks may run at the same time
    #[arg(long, env = "CONCURRENCY", default_value_t = 30)]
    pub concurrency: u32,
    /// where task logs and results are kept until the server acknowledges them
    #[arg(long, env = "RUNOPS_AGENT_DATA_DIR", default_value = "./.runops-agent")]
    pub data_dir: PathBuf,
    /// wait for the tags to become free instead of exiting when another agent holds them
    #[arg(long)]
    pub standby: bool,
    /// seconds between SIGTERM and SIGKILL when a task is killed or times out (default 10)
    #[arg(long, env = "RUNOPS_KILL_GRACE_SECS", default_value_t = 10)]
    pub kill_grace_secs: u64,
}

/// [`AgentArgs`] checked and resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    pub token: String,
    /// `None` for the untagged agent.
    pub tags: Option<String>,
    pub concurrency: u32,
    pub data_dir: PathBuf,
    pub standby: bool,
    pub kill_grace: Duration,
}

impl AgentConfig {
    pub fn from_args(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let token = args.token.trim().to_string();
        if token.is_empty() {
            anyhow::bail!(
                "the agent token is empty; set TOKEN to a token from `runops agents create-token`"
            );
        }
        let server_url = match args.api_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
            _ => runops_proto::token::agent_token_server_url(&token)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        if args.concurrency == 0 {
            anyhow::bail!("CONCURRENCY must be at least 1");
        }
        let tags = args
            .tags
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(t) = &tags
            && t.len() > runops_proto::limits::MAX_TAGS_LEN
        {
            anyhow::bail!(
                "TAGS is {} bytes long; at most {} are allowed",
                t.len(),
                runops_proto::limits::MAX_TAGS_LEN
            );
        }
        Ok(AgentConfig {
            server_url,
            token,
            tags,
            concurrency: args.concurrency,
            data_dir: args.data_dir.clone(),
            standby: args.standby,
            kill_grace: Duration::from_secs(args.kill_grace_secs),
        })
    }
}

/// First wait after a transport error; short so a blip costs little.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between retries, so an agent notices a recovered server quickly.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a caller that hit `410 session_expired` waits for the main loop to
/// reconnect before trying again anyway.
pub const SESSION_WAIT: Duration = Duration::from_secs(5);

/// How long the agent waits for `disconnect` when stopping: it is a courtesy (the
/// lease would expire anyway), so a dead server must not hold the exit.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fatal error waits for killed tasks to record their results.
pub const FATAL_STOP_WAIT: Duration = Duration::from_secs(5);

/// Log bytes pending upload that trigger an upload at once instead of waiting for the tick.
pub const UPLOAD_FLUSH_BYTES: u64 = 64 * 1024;
/// How long new log bytes may wait before being uploaded: "live" for a human.
pub const UPLOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Size of one read from a child's stdout/stderr.
pub const PIPE_READ_BYTES: usize = 16 * 1024;
/// After a task's processes are gone, how long to wait for the pipes to drain
/// (a process that escaped the group may hold them open forever).
pub const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// After SIGKILL, how long to wait for the group to disappear before giving up
/// (zombies of orphans are reaped by init, which may be slow or absent in a container).
pub const GROUP_EXIT_WAIT: Duration = Duration::from_secs(2);
/// How often to look whether a killed process group is gone.
pub const GROUP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// PATH for child processes when the agent itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// LANG for child processes when the agent itself has none: UTF-8 output by default.
pub const DEFAULT_LANG: &str = "C.UTF-8";
