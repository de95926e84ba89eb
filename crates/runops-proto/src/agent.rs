//! The agent protocol. Every call goes from the agent to the server (outbound only),
//! with `Authorization: Bearer <agent token>`.
//!
//! | method and path                          | body → answer |
//! |------------------------------------------|---------------|
//! | `POST /v1/agent/connect`                 | [`ConnectRequest`] → [`ConnectResponse`]; `409 tags_taken` when another live agent holds the tags |
//! | `POST /v1/agent/poll`                    | [`PollRequest`] → [`PollResponse`]; held open up to `poll_hold_secs`; `410 session_expired` → connect again |
//! | `POST /v1/agent/tasks/{id}/start`        | [`StartRequest`] → `200` [`StartResponse`]; `409 offer_expired` / `task_ended` → drop the offer, never run it |
//! | `POST /v1/agent/tasks/{id}/logs?session_id=S&offset=N` | raw bytes (`application/octet-stream`) → [`LogAck`]; idempotent by offset |
//! | `POST /v1/agent/tasks/{id}/finish`       | [`FinishRequest`] → [`FinishResponse`]; idempotent; `409 log_incomplete` carries the stored size in [`LogAck`] form; with `log_tail`, `409 log_gap` as for an upload |
//! | `POST /v1/agent/disconnect`              | [`DisconnectRequest`] → `204` |
//!
//! Semantics:
//! - The poll is the heartbeat: a session whose last poll began more than `lease_secs`
//!   ago (and has none open) is lost. Its running tasks end `failure`/`agent-lost`; its
//!   offers that were not started go back to `ready`.
//! - A task is started at most once. `start` after the offer deadline, or for a task
//!   that was cancelled, answers 409 and the agent must not run it.
//! - Logs are one byte stream per task. A chunk carries its offset; the server appends
//!   the part it does not have yet and answers with its stored size, so resends are
//!   harmless and gaps are detected (`409 log_gap` with the stored size). A chunk is
//!   at most the connect answer's `max_log_chunk_bytes` (1 MiB when absent); after a
//!   `413` (a proxy with a lower limit) the agent halves its chunks until it reconnects.
//! - A small task's last log bytes may ride with its result ([`FinishRequest::log_tail`],
//!   at most [`MAX_LOG_TAIL_BYTES`]): the server appends them exactly as an upload at
//!   that offset (resends harmless, a gap refused with `409 log_gap` and nothing
//!   finished), then takes the result; one request instead of two. A server that
//!   predates the field ignores it and answers `409 log_incomplete` when it lacks the
//!   bytes: the agent then uploads them as a chunk and finishes again.
//! - Reconnecting with the same `instance_id`, token and tags resumes the session (after
//!   a server restart, a network cut), instead of being refused as a second agent. The
//!   agent keeps its `instance_id` in its data dir, so a restarted agent (after a crash
//!   or SIGKILL) takes its session back at once (`restarted`), rather than waiting for
//!   the old lease to expire.

use crate::status::{FailureReason, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The agent's `TAGS`; `None` (or empty) for the untagged agent.
    pub tags: Option<String>,
    pub hostname: String,
    pub version: String,
    /// Random per agent process; lets a reconnecting agent resume its own session.
    pub instance_id: String,
    /// The agent's `CONCURRENCY`.
    pub concurrency: u32,
    /// Wait for the tags to become free instead of failing with 409 (`--standby`).
    #[serde(default)]
    pub standby: bool,
    /// The first connect of a restarted agent process whose `instance_id` was kept in
    /// its data dir: the server hands it its session back at once, failing the tasks
    /// the old process ran but did not spool (`spooled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarted: bool,
    /// With `restarted`: the tasks whose results the agent's spool still holds (it
    /// reports them next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spooled: Vec<i64>,
    /// The agent enforces `JWK_URL`: every task must carry its creator's identity
    /// token. The server refuses up front the tasks that cannot (Slack tasks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verifies_identity: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectResponse {
    pub session_id: String,
    pub org: String,
    /// A session is lost when it has not polled for this long.
    pub lease_secs: u64,
    /// The server answers an idle poll after this long; poll again at once.
    pub poll_hold_secs: u64,
    /// True when this connect resumed an existing session of the same instance.
    pub resumed: bool,
    /// The largest log chunk the server takes, in bytes. Servers that predate this
    /// field leave it out; they take 1 MiB (`BASE_LOG_CHUNK_BYTES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_chunk_bytes: Option<u64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollRequest {
    pub session_id: String,
    /// Tasks this agent is running or still reporting.
    pub running: Vec<i64>,
    /// How many new tasks the agent can take now; 0 makes the poll a pure heartbeat.
    pub free_slots: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PollResponse {
    pub offers: Vec<TaskOffer>,
    /// Running tasks to stop now (killed by a user, or already ended on the server).
    pub cancel: Vec<i64>,
}

/// Everything the agent needs to run one task. Secrets are *not* in here (except the
/// target's `runops`-provider config): the agent fetches them from the user's own
/// secrets manager.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskOffer {
    pub task_id: i64,
    pub target: String,
    /// The integration type (`bash`, `postgres`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub script: String,
    /// The task's message (exposed as `RUNOPS_TASK_DESCRIPTION`).
    pub message: Option<String>,
    pub secret_provider: Option<String>,
    pub secret_path: Option<String>,
    /// The mapping as stored text; the agent parses it and fails fast if it is malformed.
    pub secret_mapping: Option<String>,
    /// `all` or `none`.
    pub redact: String,
    /// The target's keys to redact although they name where to connect (snapshot at
    /// task creation). Absent from older servers.
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// The target's keys never to redact.
    #[serde(default)]
    pub public_keys: Vec<String>,
    pub custom_command: Option<String>,
    pub timeout_secs: u64,
    pub user_email: String,
    pub user_groups: Vec<String>,
    /// The creator's identity-provider JWT, when the task was created with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_jwt: Option<String>,
    /// When `user_jwt` is bound to a key (`cnf.jkt`): the creator's proof, signed with
    /// that key over this task (see `runops_jwt::proof`). Memory only, like the JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_jwt_proof: Option<String>,
    /// When the task was created (ms since the epoch): the agent refuses a JWT issued
    /// after it. Absent from servers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
    /// The target's write-only config (`runops` secrets provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    /// Start within this many milliseconds, or the offer goes back to the queue.
    pub start_deadline_ms: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    pub session_id: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartResponse {
    pub task_id: i64,
    pub status: TaskStatus,
}

/// Query of the log upload call.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunkQuery {
    pub session_id: String,
    pub offset: u64,
}

/// The server's stored size of a task's log after an upload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogAck {
    pub stored: u64,
}

/// How a task ended, as the agent reports it in [`FinishRequest`] (and keeps it in its
/// spool until the server has it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// `success` or `failure`.
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    /// Why it failed, in words, already redacted.
    pub failure_message: Option<String>,
    pub redacted: bool,
    /// Total bytes of the (redacted) log.
    pub log_size: u64,
    /// `None` when the log went to the server; `s3://bucket/key` when it went to the
    /// user's bucket.
    #[serde(default)]
    pub log_location: Option<String>,
    pub elapsed_ms: u64,
}

impl TaskResult {
    /// The finish call reporting this result for session `session_id`.
    pub fn to_finish(&self, session_id: &str) -> FinishRequest {
        FinishRequest {
            session_id: session_id.to_string(),
            result: self.clone(),
            log_tail: None,
        }
    }
}

/// The body of the finish call: the session and the task's result, its fields at the
/// top level.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishRequest {
    pub session_id: String,
    #[serde(flatten)]
    pub result: TaskResult,
    /// Log bytes sent with the result, appended before it is taken (see the module
    /// documentation). Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<LogTail>,
}

/// Most log bytes a [`FinishRequest`] may carry in its `log_tail` (before base64).
pub const MAX_LOG_TAIL_BYTES: usize = 64 * 1024;

/// Log bytes sent with a task's result: an upload at `offset` of the bytes in `data`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTail {
    /// Where the bytes start in the task's log.
    pub offset: u64,
    /// The bytes, standard base64 with padding.
    pub data: String,
}

impl LogTail {
    /// The tail of `bytes` starting at log offset `offset`.
    pub fn new(offset: u64, bytes: &[u8]) -> LogTail {
        use base64::Engine;
        LogTail {
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The bytes; `None` when `data` is not base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.data.as_bytes())
            .ok()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishResponse {
    pub task_id: i64,
    pub status: TaskStatus,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectRequest {
    pub session_id: String,
}
