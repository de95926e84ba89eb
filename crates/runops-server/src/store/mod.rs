//! Persistent state of the control plane behind one trait.
//!
//! Handlers only ever see an `Arc<dyn Store>`; [`sqlite::SqliteStore`] is the default
//! and [`postgres::PgStore`] serves several replicas on one database, both passing the
//! same conformance suite (`tests/conformance/`). Every method that changes a task's state does so in one
//! transaction, so a crash never leaves a task half-moved: it reads the row, asks
//! [`crate::lifecycle`] what the event does, and writes that; the effects it decided
//! come back in [`Decided`] for the handler to apply. Times are milliseconds since
//! the Unix epoch; the times of state changes are passed in by the caller, so the
//! state machine does not depend on the store's clock.

pub mod held;
pub mod postgres;
pub mod reviews;
pub mod sqlite;
pub mod web_sessions;
pub mod webhooks;

use crate::lifecycle::Effect;
pub use reviews::ReviewStore;

use async_trait::async_trait;
use runops_proto::agent::{FinishRequest, TaskOffer};
use runops_proto::api::{
    Agent, AgentToken, AuditEvent, AuditQuery, Target, Task, TaskListQuery, User,
};
use runops_proto::token::TokenKind;
use runops_proto::{FailureReason, TaskStatus};

/// Errors a store reports to handlers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (the message names what already exists).
    #[error("{0}")]
    Conflict(String),
    /// The database failed; details go to the server log, not to the user.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A read of the SQLite store on the request path failed (`sqlite::inline`).
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// Stored data could not be read back (corrupt row, unknown status...).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// True when the database could not be reached (down, restarting, failing over, or
    /// no connection free in time): the same request may succeed later, unchanged.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_) => true,
                // PostgreSQL's classes 08 (connection exception) and 57P (the server is
                // shutting down or starting up); SQLite's codes are numbers.
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            // Locked by another process for longer than the busy timeout.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DatabaseBusy
            }
            _ => false,
        }
    }
}

/// What a bearer token resolves to.
#[derive(Debug, Clone)]
pub struct AuthToken {
    pub id: i64,
    pub org_id: i64,
    pub org: String,
    pub kind: TokenKind,
    /// The SHA-256 stored for this token (compared again in constant time).
    pub hash: [u8; 32],
    /// The user a user token belongs to.
    pub user: Option<User>,
    pub revoked: bool,
    /// The tag set an agent token is scoped to (`None`: untagged agents only).
    pub tags: Option<String>,
}

/// A task [`Store::claim_tasks`] just gave to an agent: its offer, and what the offer
/// still needs before it goes out (read by the claim itself, so that a poll makes no
/// further query for tasks that need neither).
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub offer: TaskOffer,
    /// Created with an identity-provider token, which must travel with the offer.
    pub created_with_jwt: bool,
    /// Its target has a sealed write-only config ([`Store::target_config`]).
    pub target_has_config: bool,
}

/// A target's sealed config and the tags of the agents it may be sent to.
#[derive(Debug, Clone)]
pub struct SealedTargetConfig {
    pub tags: Option<String>,
    pub sealed: Vec<u8>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    pub role: runops_proto::Role,
}

/// A task to create: the caller resolved the target and snapshots its settings here.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub target: Target,
    pub kind: String,
    pub script: String,
    pub message: Option<String>,
    pub user: User,
    pub status: TaskStatus,
    /// Created with an identity-provider JWT (held in memory, never stored).
    pub created_with_jwt: bool,
    /// SHA-256 of what reviewers approve, for a task of a reviewed target (see
    /// [`crate::review::digest`]); the target's review rule is snapshotted with it.
    pub review_sha256: Option<String>,
    /// The template it was made from, at which commit, with which values.
    pub template: Option<runops_proto::templates::TaskTemplate>,
}

/// The stored form of a task's template parameters (a JSON object), `None` without a template.
pub(crate) fn task_template_params_json(
    t: Option<&runops_proto::templates::TaskTemplate>,
) -> Option<String> {
    t.map(|t| serde_json::to_string(&t.params).unwrap_or_else(|_| "{}".into()))
}

/// A task's template from its three columns (all set, or none).
pub(crate) fn task_template_of(
    name: Option<String>,
    commit: Option<String>,
    params_json: Option<String>,
) -> StoreResult<Option<runops_proto::templates::TaskTemplate>> {
    let (Some(name), Some(commit)) = (name, commit) else {
        return Ok(None);
    };
    let params = match params_json {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            StoreError::Corrupt(format!(
                "stored template parameters are not a JSON object: {e}"
            ))
        })?,
        None => Default::default(),
    };
    Ok(Some(runops_proto::templates::TaskTemplate {
        name,
        commit,
        params,
    }))
}

/// A task plus the bookkeeping the API does not show.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub task: Task,
    pub org_id: i64,
    pub tags: Option<String>,
    pub session_id: Option<String>,
    pub cancel_requested: bool,
    /// Bytes acknowledged to the agent so far.
    pub log_received: u64,
    /// Bytes readable through the logs API.
    pub log_kept: u64,
}

/// An agent session row.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub org_id: i64,
    pub org: String,
    pub token_id: i64,
    pub tags: Option<String>,
    pub hostname: String,
    pub version: String,
    pub instance_id: String,
    pub concurrency: u32,
    pub connected_at_ms: i64,
    pub last_seen_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// The agent enforces `JWK_URL` (see `ConnectRequest::verifies_identity`).
    pub verifies_identity: bool,
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub org_id: i64,
    pub token_id: i64,
    pub tags: Option<String>,
    pub hostname: String,
    pub version: String,
    pub instance_id: String,
    pub concurrency: u32,
    /// The agent enforces `JWK_URL`.
    pub verifies_identity: bool,
}

/// Why a session ends; decides what happens to the tasks it still runs.
#[derive(Debug, Clone)]
pub enum SessionEnd {
    /// The agent said goodbye.
    Disconnected,
    /// The lease expired without a poll.
    Lost { lease_secs: u64 },
    /// Its agent token was revoked.
    TokenRevoked,
    /// The agent process restarted (same data dir) and took its session back; what the
    /// old process ran and did not spool is over.
    Restarted,
}

impl SessionEnd {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionEnd::Disconnected => "disconnected",
            SessionEnd::Lost { .. } => "lost",
            SessionEnd::TokenRevoked => "token-revoked",
            SessionEnd::Restarted => "restarted",
        }
    }

    /// The failure message of a task that was running when the session ended this way.
    pub fn running_task_message(&self, hostname: &str) -> String {
        match self {
            SessionEnd::Disconnected => {
                format!("agent {hostname} disconnected while the task ran; it was not re-run")
            }
            SessionEnd::Lost { lease_secs } => format!(
                "agent {hostname} stopped answering (lease of {lease_secs} s expired) while the task ran; it was not re-run"
            ),
            SessionEnd::TokenRevoked => format!(
                "the token of agent {hostname} was revoked while the task ran; it was not re-run"
            ),
            SessionEnd::Restarted => format!(
                "agent {hostname} restarted while the task ran and kept no record of it; it was not re-run"
            ),
        }
    }
}

/// What ending a session did to its tasks.
#[derive(Debug, Clone, Default)]
pub struct EndedSession {
    /// False when the session had already ended (nothing was done).
    pub ended_now: bool,
    pub org_id: i64,
    pub tags: Option<String>,
    pub hostname: String,
    /// Tasks that were running and are now `failure`/`agent-lost`.
    pub failed: Vec<i64>,
    /// Offers that were not started and are `ready` again.
    pub requeued: Vec<i64>,
}

/// A dispatched offer whose deadline passed and that is `ready` again.
#[derive(Debug, Clone)]
pub struct RequeuedOffer {
    pub task_id: i64,
    pub org_id: i64,
    pub tags: Option<String>,
}

/// The task a state change was decided for, as its effects need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub id: i64,
    pub org_id: i64,
    pub tags: Option<String>,
    /// `None` for tasks changed in bulk (the statement returns only ids).
    pub target: Option<String>,
    /// The session the task is offered to or runs on (before the change).
    pub session_id: Option<String>,
}

/// The effects the lifecycle decided for one task; the handler applies them
/// (`crate::effects::apply`) after the store wrote the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEffects {
    pub task: TaskRef,
    pub effects: Vec<Effect>,
}

impl TaskEffects {
    /// `effects` for the task `rec`; `None` when there are none.
    pub fn for_task(rec: &TaskRecord, effects: Vec<Effect>) -> Option<TaskEffects> {
        (!effects.is_empty()).then(|| TaskEffects {
            task: TaskRef {
                id: rec.task.id,
                org_id: rec.org_id,
                tags: rec.tags.clone(),
                target: Some(rec.task.target.clone()),
                session_id: rec.session_id.clone(),
            },
            effects,
        })
    }
}

/// What a state-changing call on one task did: its outcome and the effects to apply
/// (`None` when there are none: a refusal, a resend).
#[derive(Debug, Clone)]
pub struct Decided<T> {
    pub outcome: T,
    pub effects: Option<TaskEffects>,
}

impl<T> Decided<T> {
    /// An outcome without effects.
    pub fn only(outcome: T) -> Decided<T> {
        Decided {
            outcome,
            effects: None,
        }
    }
}

/// Result of `start`.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    Started(Box<TaskRecord>),
    /// The offer's deadline passed or it went to another session; it is (again) `ready`.
    OfferExpired,
    /// The task already ended (killed, lost...).
    Ended(TaskStatus),
    NotFound,
}

/// Result of a log upload.
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Bytes acknowledged so far (all of them, including any beyond the cap).
    Stored(u64),
    /// The chunk starts beyond the stored size: the agent must resend from `stored`.
    Gap(u64),
    /// The task ended (or belongs to another session): stop sending.
    Ended(TaskStatus),
    NotFound,
}

/// Result of `finish`.
#[derive(Debug, Clone)]
pub enum FinishOutcome {
    Finished(Box<TaskRecord>),
    /// The task had already ended with the same result (a resent finish).
    AlreadyFinished(Box<TaskRecord>),
    /// The server has fewer log bytes than the agent reports: resend from `stored`.
    LogIncomplete {
        stored: u64,
    },
    /// The task ended differently (agent-lost, cancelled before start...).
    Ended(TaskStatus),
    /// The task is not held by this session (never offered to it).
    NotYours,
    NotFound,
}

/// Result of a kill.
#[derive(Debug, Clone)]
pub enum KillOutcome {
    /// It had not started: it is `failure`/`cancelled` now.
    CancelledBeforeStart(Box<TaskRecord>),
    /// It runs: the cancel is recorded for its session to pick up.
    CancelRequested {
        task: Box<TaskRecord>,
        session_id: Option<String>,
    },
    AlreadyEnded(TaskStatus),
    NotFound,
}

/// The control plane's storage. Every method is scoped to an org where objects are
/// involved: an object of another org is simply not found.
#[async_trait]
pub trait Store: webhooks::WebhookStore + ReviewStore + Send + Sync + 'static {
    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Closes connections (graceful shutdown).
    async fn close(&self);
    /// The web app's browser sessions, when this store keeps them (`None`: the web
    /// app cannot sign anyone in and says so).
    fn web_sessions(&self) -> Option<&dyn web_sessions::WebSessionStore> {
        None
    }

    // --- orgs, users, tokens -------------------------------------------------------
    /// True when no organisation exists yet (first start).
    async fn is_empty(&self) -> StoreResult<bool>;
    async fn create_org(&self, name: &str, now_ms: i64) -> StoreResult<i64>;
    async fn find_org_id(&self, name: &str) -> StoreResult<Option<i64>>;
    /// The first admin of the oldest organisation (bootstrap with a given admin token).
    async fn first_admin(&self) -> StoreResult<Option<User>>;
    async fn create_user(&self, org_id: i64, user: &NewUser, now_ms: i64) -> StoreResult<User>;
    async fn list_users(&self, org_id: i64) -> StoreResult<Vec<User>>;
    /// Stores a token hash; `user_id` is `None` for agent tokens.
    async fn create_token(
        &self,
        org_id: i64,
        kind: TokenKind,
        user_id: Option<i64>,
        name: Option<&str>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> StoreResult<i64>;
    async fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<AuthToken>>;
    /// Clears `revoked_at` (bootstrap makes sure the configured admin token works).
    async fn unrevoke_token(&self, token_id: i64) -> StoreResult<()>;
    /// Stores an agent token's hash, scoped to one tag set (`None`: untagged agents).
    async fn create_agent_token(
        &self,
        org_id: i64,
        name: Option<&str>,
        tags: Option<&str>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> StoreResult<i64>;
    async fn list_agent_tokens(&self, org_id: i64) -> StoreResult<Vec<AgentToken>>;
    /// Revokes an agent token of the org; `None` when there is no such agent token.
    /// Returns the live sessions opened with it (the caller ends them).
    async fn revoke_agent_token(
        &self,
        org_id: i64,
        token_id: i64,
        now_ms: i64,
    ) -> StoreResult<Option<Vec<String>>>;

    // --- targets --------------------------------------------------------------------
    async fn create_target(&self, org_id: i64, target: &Target) -> StoreResult<Target>;
    async fn list_targets(&self, org_id: i64) -> StoreResult<Vec<Target>>;
    async fn get_target(&self, org_id: i64, name: &str) -> StoreResult<Option<Target>>;
    /// Replaces every field but the name; `None` when the target does not exist.
    async fn update_target(&self, org_id: i64, target: &Target) -> StoreResult<Option<Target>>;
    async fn delete_target(&self, org_id: i64, name: &str) -> StoreResult<bool>;
    /// The sealed write-only config of a target (see [`crate::sealed`]) with the
    /// target's current tags; `None` when it has none or does not exist.
    async fn target_config(
        &self,
        org_id: i64,
        name: &str,
    ) -> StoreResult<Option<SealedTargetConfig>>;
    /// Stores (`Some((sealed, keys))`) or removes (`None`) a target's sealed config and
    /// the list of its keys; false when the target does not exist.
    async fn set_target_config(
        &self,
        org_id: i64,
        name: &str,
        config: Option<(&[u8], &[String])>,
    ) -> StoreResult<bool>;

    // --- tasks ----------------------------------------------------------------------
    async fn create_task(
        &self,
        org_id: i64,
        task: &NewTask,
        now_ms: i64,
    ) -> StoreResult<TaskRecord>;
    async fn get_task(&self, org_id: i64, id: i64) -> StoreResult<Option<TaskRecord>>;
    async fn list_tasks(&self, org_id: i64, query: &TaskListQuery) -> StoreResult<Vec<Task>>;
    /// Atomically moves up to `limit` of the oldest `ready` tasks of (org, tags) to
    /// `dispatched` for `session_id`, with `deadline_ms` to start them, in id order.
    async fn claim_tasks(
        &self,
        session: &SessionRecord,
        limit: u32,
        now_ms: i64,
        deadline_ms: i64,
    ) -> StoreResult<Vec<ClaimedTask>>;
    async fn start_task(
        &self,
        org_id: i64,
        id: i64,
        session_id: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<StartOutcome>>;
    /// Appends the part of `bytes` (which starts at `offset`) beyond what is stored;
    /// beyond `cap_bytes` bytes are acknowledged but not kept, and a note says so.
    async fn append_log(
        &self,
        org_id: i64,
        id: i64,
        session_id: &str,
        offset: u64,
        bytes: &[u8],
        cap_bytes: u64,
    ) -> StoreResult<Decided<AppendOutcome>>;
    /// Up to `max` kept log bytes of a task from `offset`.
    async fn read_log(&self, id: i64, offset: u64, max: usize) -> StoreResult<Vec<u8>>;
    /// The first admin's token (created by the first start): `(token id, ever used)`,
    /// while it is not revoked.
    async fn first_admin_token(&self) -> StoreResult<Option<(i64, bool)>>;
    /// Records that a token authenticated a request (first time only).
    async fn mark_token_used(&self, token_id: i64, now_ms: i64) -> StoreResult<()>;
    /// Revokes a token (no org check: start-up only).
    async fn revoke_token_by_id(&self, token_id: i64, now_ms: i64) -> StoreResult<()>;
    /// Log retention: replaces the kept log of up to `limit` tasks that finished before
    /// `finished_before_ms` with `note`, once per task; returns how many tasks were
    /// looked at (fewer than `limit`: none left) and what was purged, per org.
    async fn purge_logs(
        &self,
        finished_before_ms: i64,
        now_ms: i64,
        note: &str,
        limit: usize,
    ) -> StoreResult<(usize, Vec<PurgedLogs>)>;
    async fn finish_task(
        &self,
        org_id: i64,
        id: i64,
        req: &FinishRequest,
        now_ms: i64,
    ) -> StoreResult<Decided<FinishOutcome>>;
    async fn kill_task(
        &self,
        org_id: i64,
        id: i64,
        by_email: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<KillOutcome>>;
    /// Tasks a poll must tell its agent to stop: running tasks of the session with a
    /// cancel request, and the ids of `running` that already ended on the server.
    async fn cancels_for(
        &self,
        session_id: &str,
        org_id: i64,
        running: &[i64],
    ) -> StoreResult<Vec<i64>>;
    /// Of `cancels` (of `session_id`), how many were not yet delivered to one of its
    /// polls; marks them delivered. `None`: this store does not track it, the one
    /// process's hub does (a store shared by replicas must, as the session's next poll
    /// may reach another replica).
    async fn take_new_cancels(
        &self,
        _session_id: &str,
        _cancels: &[i64],
    ) -> StoreResult<Option<usize>> {
        Ok(None)
    }
    /// Offers whose start deadline passed go back to `ready`.
    async fn requeue_expired_offers(&self, now_ms: i64) -> StoreResult<Vec<RequeuedOffer>>;

    // --- agent sessions -------------------------------------------------------------
    async fn create_session(&self, s: &NewSession, now_ms: i64) -> StoreResult<SessionRecord>;
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    async fn find_live_session(
        &self,
        org_id: i64,
        tags: Option<&str>,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Refreshes a resumed session's details and `last_seen`.
    /// A restarted agent process takes its session back: running tasks it did not
    /// spool (`keep`) fail `agent-lost`, offers it never started go back to `ready`.
    async fn recover_restarted_session(
        &self,
        id: &str,
        keep: &[i64],
        now_ms: i64,
    ) -> StoreResult<EndedSession>;
    async fn resume_session(
        &self,
        id: &str,
        hostname: &str,
        version: &str,
        concurrency: u32,
        verifies_identity: bool,
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn touch_session(&self, id: &str, now_ms: i64) -> StoreResult<()>;
    /// Ends a session: running tasks fail `agent-lost`, unstarted offers are requeued.
    async fn end_session(
        &self,
        id: &str,
        how: &SessionEnd,
        now_ms: i64,
    ) -> StoreResult<EndedSession>;
    /// Live sessions whose `last_seen` is before `cutoff_ms`.
    async fn stale_sessions(&self, cutoff_ms: i64) -> StoreResult<Vec<SessionRecord>>;
    /// Sets `last_seen` of every live session to now (server start: give agents a full
    /// lease to come back).
    async fn extend_live_sessions(&self, now_ms: i64) -> StoreResult<u64>;
    async fn list_live_agents(&self, org_id: i64) -> StoreResult<Vec<Agent>>;

    // --- identity -------------------------------------------------------------------
    async fn find_user_by_email(&self, org_id: i64, email: &str) -> StoreResult<Option<User>>;
    /// Replaces a user's groups (from the identity provider's claim).
    async fn set_user_groups(&self, user_id: i64, groups: &[String]) -> StoreResult<()>;
    /// User API tokens of the org; only those of `user_id` when given.
    async fn list_user_tokens(
        &self,
        org_id: i64,
        user_id: Option<i64>,
    ) -> StoreResult<Vec<runops_proto::api::UserToken>>;
    /// Revokes a user API token of the org (of `user_id` when given); false when there is
    /// no such token.
    async fn revoke_user_token(
        &self,
        org_id: i64,
        token_id: i64,
        user_id: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Which of `ids` (tasks of the org) were created with an identity-provider JWT.
    async fn tasks_created_with_jwt(&self, org_id: i64, ids: &[i64]) -> StoreResult<Vec<i64>>;
    /// Ends a task that has not started (`dispatched` or earlier) as `failure`; false
    /// when it had started or ended already.
    async fn fail_unstarted_task(
        &self,
        org_id: i64,
        id: i64,
        reason: FailureReason,
        message: &str,
        now_ms: i64,
    ) -> StoreResult<Decided<bool>>;

    /// A task created with a key-bound JWT got its creator's proof: `created` → `ready`.
    /// False when it is not (any more) a task waiting for a proof (killed meanwhile).
    async fn ready_proven_task(&self, org_id: i64, id: i64) -> StoreResult<Decided<bool>>;
    /// Server start: tasks still waiting for their creator's proof lost the JWT they
    /// were created with (memory only); they fail `unauthenticated` with `message`.
    /// Returns how many. Scans the tasks once, so it is for start-up only.
    async fn fail_tasks_awaiting_proof(&self, message: &str, now_ms: i64) -> StoreResult<u64>;

    // --- audit ------------------------------------------------------------------------
    /// Appends one event to the org's audit log; returns its id.
    async fn record_audit(&self, event: &NewAuditEvent) -> StoreResult<i64>;
    /// The org's audit events, newest first.
    async fn list_audit(&self, org_id: i64, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;

    // --- metrics ----------------------------------------------------------------------
    /// Counts for `/metrics`, over every org: tasks by status and live agent sessions.
    async fn metrics_gauges(&self) -> StoreResult<StoreGauges>;
}

/// An audit event to append (see [`crate::audit`]).
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub org_id: i64,
    pub at_ms: i64,
    /// The user's e-mail; `None` for agents and the server itself.
    pub actor_email: Option<String>,
    /// `user`, `agent` or `system`.
    pub actor_kind: &'static str,
    pub action: &'static str,
    pub object_kind: Option<&'static str>,
    pub object_id: Option<String>,
    pub remote_addr: Option<String>,
    /// Never secret values.
    pub detail: serde_json::Value,
}

/// The actor filter of an audit query (`AuditQuery::actor`): a user's e-mail, or the
/// kind of a caller that is no user (`agent`, `system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditActorFilter<'a> {
    Email(&'a str),
    Kind(&'a str),
}

impl<'a> AuditActorFilter<'a> {
    pub fn of(actor: &'a str) -> AuditActorFilter<'a> {
        match actor {
            "agent" | "system" => AuditActorFilter::Kind(actor),
            email => AuditActorFilter::Email(email),
        }
    }
}

/// One organisation's share of a log purge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgedLogs {
    pub org_id: i64,
    /// Tasks whose log was replaced by the purge note.
    pub tasks: u64,
    /// Log bytes deleted.
    pub bytes: u64,
}

/// What `/metrics` reads from the store (every org together).
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    /// Statuses without tasks may be missing.
    pub tasks_by_status: Vec<(TaskStatus, u64)>,
    pub live_agents: u64,
}

/// `coalesce(tags, '')`: the key tasks and sessions are matched on.
pub fn tag_key(tags: Option<&str>) -> &str {
    tags.unwrap_or("")
}

/// A failure reason and status pair as stored.
pub fn parse_status(s: &str) -> StoreResult<TaskStatus> {
    s.parse().map_err(StoreError::Corrupt)
}

pub fn parse_reason(s: Option<String>) -> StoreResult<Option<FailureReason>> {
    s.map(|r| r.parse().map_err(StoreError::Corrupt))
        .transpose()
}
