//! Every fixed limit and timeout of the agent, each with its reason: the connection to
//! the server, log upload, task processes, and the providers it calls (secrets
//! managers, AWS, Vault, S3). What an operator sets is in [`crate::config`].

use std::time::Duration;

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
/// Log chunk bytes all the agent's uploads may hold in memory at once. A chunk is read
/// from the spool into a buffer of its size (up to 4 MiB with a current server) and
/// kept until the server answers: without a bound, 30 tasks each with a large backlog
/// would hold 120 MiB. Uploads beyond it wait their turn; the server stores one
/// task's chunk at a time anyway.
pub const UPLOAD_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Size of one read from a child's stdout/stderr: a whole pipe buffer (64 KiB on
/// Linux), so a fast writer costs one redact-and-spool round per pipe-full, not four.
pub const PIPE_READ_BYTES: usize = 64 * 1024;
/// Redacted output gathered before one spool write: each write is a hand-off to a
/// blocking thread, and thread switches were the agent's largest cost while streaming
/// 1 GiB (BENCHMARKS.md, issue 20).
pub const SPOOL_WRITE_BYTES: usize = 256 * 1024;
/// Longest redacted output waits in memory for more before it is written to the spool.
/// A task printing steadily is read faster than it fills its pipe, so reads come back
/// small (~40 KiB) and each one was its own spool write; gathered, they make one write
/// per [`SPOOL_WRITE_BYTES`]. Far below [`UPLOAD_INTERVAL`]: output stays live.
pub const SPOOL_WRITE_AFTER: Duration = Duration::from_millis(5);
/// Longest a task's result stays in memory only while the agent reports it right after
/// the task ended (see `crate::logs::stream`); then it is spooled and retried as usual.
pub const DIRECT_REPORT_TIMEOUT: Duration = Duration::from_secs(2);
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

// ---- Secrets providers and S3 log storage (issue 4) ----

/// Connect timeout of calls to a secrets manager: an unreachable one fails the task fast.
pub const SECRETS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of calls to a secrets manager: a hung one fails the task fast.
pub const SECRETS_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read from a secrets manager (a secret is a small JSON object).
pub const MAX_SECRET_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest `SECRETS_FILE` read by the filesystem provider (it is re-read per task).
pub const MAX_SECRETS_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Temporary AWS credentials are refreshed this long before they expire.
pub const AWS_CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The instance metadata service answers in milliseconds when it exists; off EC2 the
/// address is a black hole, so give up quickly.
pub const AWS_IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// A Vault token is renewed (or a new login made) when it has less than this left.
pub const VAULT_TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(60);
/// Size of one part of a multipart S3 log upload (S3's minimum part size is 5 MiB); only
/// one part is in memory at a time.
pub const S3_PART_BYTES: usize = 8 * 1024 * 1024;
/// Attempts of one S3 log upload before the task reports the failure and the log is
/// queued for background retries.
pub const S3_UPLOAD_ATTEMPTS: u32 = 3;
/// Timeout of one S3 request (one part of at most [`S3_PART_BYTES`]).
pub const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often logs whose S3 upload failed are tried again.
pub const S3_RETRY_INTERVAL: Duration = Duration::from_secs(60);
