//! The user-facing REST API, authenticated with `Authorization: Bearer <user token>`.
//!
//! | method and path                 | body → answer                                  |
//! |---------------------------------|------------------------------------------------|
//! | `GET /healthz`, `GET /readyz`   | `200 ok` / `503` when the store is unreachable |
//! | `GET /v1/openapi.json`          | → the OpenAPI 3.1 document of the API (no token; `docs/openapi.json`) |
//! | `GET /v1/me`                    | → [`Me`] (a [`User`] and the credential used)  |
//! | `POST /v1/targets`              | [`TargetCreate`] → `201` [`Target`]            |
//! | `GET /v1/targets`               | → `[`[`Target`]`]`                             |
//! | `GET /v1/targets/{name}`        | → [`Target`]                                   |
//! | `PUT /v1/targets/{name}`        | [`TargetUpdate`] → [`Target`]                  |
//! | `DELETE /v1/targets/{name}`     | → `204`                                        |
//! | `POST /v1/tasks`                | [`TaskCreate`] → `201` [`Task`]; status `created` when the caller's JWT is bound to a key (`cnf.jkt`): the task waits for its proof |
//! | `POST /v1/tasks/{id}/proof`     | [`TaskProof`] → [`Task`] (`ready`); only for a `created` task of yours |
//! | `GET /v1/tasks`                 | query [`TaskListQuery`] → `[`[`Task`]`]` newest first |
//! | `GET /v1/tasks/{id}`            | → [`Task`]                                     |
//! | `GET /v1/tasks/{id}/logs`       | query [`LogsQuery`] → `text/plain` bytes; with `follow=true` the body streams until the task ends |
//! | `POST /v1/tasks/{id}/kill`      | → `202` [`Task`]                               |
//! | `POST /v1/tasks/{id}/approve`   | [`TaskApprove`] → [`Task`] (with its [`TaskReview`]); `force` + `reason`: admins |
//! | `POST /v1/tasks/{id}/reject`    | [`TaskReject`] → [`Task`] (`rejected`)         |
//! | `POST /v1/tasks/{id}/run`       | [`TaskRun`] → [`Task`] (`ready`); the creator of an `approved` task |
//! | `GET /v1/reviews`               | query [`ReviewsQuery`] → `[`[`Task`]`]` waiting for your review, oldest first |
//! | `GET /v1/agents`                | → `[`[`Agent`]`]` (live sessions)              |
//! | `POST /v1/agent-tokens`         | [`AgentTokenCreate`] → `201` [`AgentTokenCreated`] |
//! | `GET /v1/agent-tokens`          | → `[`[`AgentToken`]`]`                         |
//! | `DELETE /v1/agent-tokens/{id}`  | → `204` (revoked; its agents are disconnected) |
//! | `GET /v1/tokens`                | query [`TokenListQuery`] → `[`[`UserToken`]`]` (your API tokens; `all=true`: everyone's, admin) |
//! | `POST /v1/tokens`               | [`UserTokenCreate`] → `201` [`UserTokenCreated`] (another API token for yourself, shown once) |
//! | `DELETE /v1/tokens/{id}`        | → `204` (revoked; another user's token: admin) |
//! | `POST /v1/users`                | [`UserCreate`] → `201` [`UserCreated`] (admin) |
//! | `GET /v1/users`                 | → `[`[`User`]`]`                               |
//! | `GET /v1/audit`                 | query [`AuditQuery`] → `[`[`AuditEvent`]`]` newest first (admin) |
//! | `/v1/templates/...`             | see [`crate::templates`]                       |
//!
//! Every error is a JSON [`ApiErrorBody`] `{code, error, hint}` with a status code that fits.
//! With the `openapi` feature (the server's), the types derive their OpenAPI schemas.

use crate::{FailureReason, TaskStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Default task timeout when a target sets none: one hour.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;

/// How long an approved task waits for its creator to run it unless the target says
/// otherwise: a day, long enough to come back to it, short enough that an approval
/// does not outlive the situation it was given for.
pub const DEFAULT_APPROVAL_TTL_SECS: u64 = 24 * 3600;

/// How long a task waits for its reviews unless the target says otherwise: a week.
pub const DEFAULT_REVIEW_TTL_SECS: u64 = 7 * 24 * 3600;

fn default_approval_ttl() -> u64 {
    DEFAULT_APPROVAL_TTL_SECS
}

fn default_review_ttl() -> u64 {
    DEFAULT_REVIEW_TTL_SECS
}

/// The body of every error answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Machine-readable kind: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `conflict`, `tags_taken`, `session_expired`, `offer_expired`, `task_ended`,
    /// `payload_too_large`, `internal`, ...
    pub code: String,
    /// What went wrong, in a sentence an operator can act on (lower-case, no trailing dot).
    pub error: String,
    /// What to do about it. The server always sends one; optional here for servers
    /// that predate that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub hint: Option<String>,
}

/// A user of an organisation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub groups: Vec<String>,
    /// `admin` or `user`.
    pub role: String,
    pub org: String,
    pub created_at: DateTime<Utc>,
}

/// Answer to `GET /v1/me`: the caller, and how the request was authenticated. The
/// user's fields are at the top level, so a client that reads a [`User`] reads it too.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Me {
    #[serde(flatten)]
    pub user: User,
    /// The credential of this request (absent from servers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<MeToken>,
}

/// The credential a request was made with.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeToken {
    /// `api-token` (`rou_...`) or `identity-provider` (a JWT).
    pub kind: String,
    /// The API token's id (`runops tokens list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// When the token stops being accepted; API tokens do not expire (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `admin` or `user` (default).
    #[serde(default)]
    pub role: Option<String>,
}

/// Answer to `POST /v1/users`: the user and their first API token, shown once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserCreated {
    pub user: User,
    pub token: String,
}

/// A target as the API shows it. Secret material is never part of it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Target {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: Option<String>,
    /// The agent tags this target runs on; `None` means the untagged agent.
    pub tags: Option<String>,
    /// `env-var`, `filesystem`, `aws`, `hashicorp/kv`, `hashicorp/db` or `runops`.
    pub secret_provider: Option<String>,
    pub secret_path: Option<String>,
    /// `{"WANTED_KEY": "KEY_IN_SECRET"}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub secret_mapping: Option<serde_json::Map<String, serde_json::Value>>,
    pub runner_provider: Option<String>,
    /// `all` (default) or `none`.
    pub redact: String,
    /// `none` (default), `anyone` or `team`.
    pub review: String,
    /// Reviewer groups (`team`).
    pub reviewers: Vec<String>,
    /// Approvals a task needs: for `team`, how many of the reviewer groups must each
    /// have approved (default: all); for `anyone`, how many other users (default 1).
    /// `None` for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_approvals: Option<u32>,
    /// Seconds an approved task may wait for its creator to run it (default a day).
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl: u64,
    /// Seconds a task may wait for its reviews (default 7 days).
    #[serde(default = "default_review_ttl")]
    pub review_ttl: u64,
    pub custom_command: Option<String>,
    pub timeout: u64,
    /// The Slack channel of the target's messages (see `docs/slack.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The keys of the target's write-only config (`runops` provider); the values are
    /// never returned by any read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_keys: Vec<String>,
    /// Secret keys whose values are redacted although their name says where to connect
    /// (`PG_HOST`); see `docs/redaction.md`.
    #[serde(default)]
    pub redact_keys: Vec<String>,
    /// Secret keys whose values are never redacted.
    #[serde(default)]
    pub public_keys: Vec<String>,
}

/// Calls `$m!` with the settings of a target that a create and an update both take,
/// after the caller's own tokens: the one list of those fields. Each is optional in a
/// request (absent: the default on create, unchanged on update).
macro_rules! with_target_settings {
    ($m:ident ! { $($args:tt)* }) => {
        $m! { $($args)* [
            /// Free text shown in lists.
            description: String,
            /// The agent tags the target runs on; `""` in an update makes it untagged.
            tags: String,
            /// A [`crate::vocab::SecretProvider`] name; `env-var` when a `secret_path`
            /// is given without one.
            secret_provider: String,
            /// Where the secret is in the provider.
            secret_path: String,
            /// `{"WANTED_KEY": "KEY_IN_SECRET"}`: a JSON object, or a string holding one
            /// (the CLI passes the user's text through, so the server can point at the
            /// error).
            secret_mapping: serde_json::Value,
            /// Where the task runs (kept for compatibility with the original API).
            runner_provider: String,
            /// A [`crate::vocab::RedactMode`] name (default `all`).
            redact: String,
            /// A [`crate::vocab::ReviewMode`] name (default `none`).
            review: String,
            /// Reviewer groups (`team`).
            reviewers: Vec<String>,
            /// See [`Target::min_approvals`]; `0` in an update goes back to the default.
            min_approvals: u32,
            /// Seconds; see [`Target::approval_ttl`].
            approval_ttl: u64,
            /// Seconds; see [`Target::review_ttl`].
            review_ttl: u64,
            /// Replaces the type's command; `[[SCRIPT]]` and `[[KEY]]` are filled in.
            custom_command: String,
            /// Seconds; default [`DEFAULT_TIMEOUT_SECS`].
            timeout: u64,
            /// The Slack channel (`#ops` or a channel id) the Slack app posts this
            /// target's review requests and finished tasks to; `""` in an update removes it.
            channel: String,
            /// Write-only config (`{"KEY": "value"}`; numbers and booleans become
            /// strings): the secrets of the `runops` provider, and extra keys for the
            /// others. Stored encrypted. In an update, replaces it; `{}` removes it.
            #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
            config: serde_json::Map<String, serde_json::Value>,
            /// Keys redacted even when they name where to connect (`["PG_HOST"]`); in an
            /// update, replaces the list (`[]` clears it).
            redact_keys: Vec<String>,
            /// Keys never redacted; in an update, replaces the list.
            public_keys: Vec<String>,
        ] }
    };
}

/// Defines a request struct: the caller's fields, then every target setting as an
/// optional field; and moves the settings in and out as a [`TargetSettings`].
macro_rules! settings_struct {
    (
        $(#[$sm:meta])*
        $name:ident { $($head:tt)* }
        [ $( $(#[$fm:meta])* $f:ident : $t:ty, )* ]
    ) => {
        $(#[$sm])*
        pub struct $name {
            $($head)*
            $(
                $(#[$fm])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $f: Option<$t>,
            )*
        }
        impl $name {
            /// Takes the target settings out of the request.
            pub fn take_settings(&mut self) -> TargetSettings {
                TargetSettings {
                    $( $f: self.$f.take(), )*
                }
            }

            /// The request with its target settings set to `s`.
            pub fn with_settings(mut self, s: TargetSettings) -> Self {
                $( self.$f = s.$f; )*
                self
            }
        }
    };
}

with_target_settings!(settings_struct! {
    /// The settings of a target as a create or an update sends them, every one
    /// optional (see [`TargetCreate`], [`TargetUpdate`]).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    TargetSettings {}
});

with_target_settings!(settings_struct! {
    /// `POST /v1/targets`: a name, a type and any of the [`TargetSettings`].
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    TargetCreate {
        pub name: String,
        /// A [`crate::vocab::TargetType`] name.
        #[serde(rename = "type")]
        pub kind: String,
    }
});

with_target_settings!(settings_struct! {
    /// `PUT /v1/targets/{name}`: only the fields present change. An empty string clears
    /// an optional text field (`"tags": ""` makes the target untagged).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    TargetUpdate {
        /// A new [`crate::vocab::TargetType`] name.
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        pub kind: Option<String>,
    }
});

/// A task as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub id: i64,
    pub target: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub script: String,
    pub message: Option<String>,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    /// Why the task failed, in words (already redacted by the agent).
    pub failure_message: Option<String>,
    /// The creator's e-mail.
    pub user: String,
    /// Hostname of the agent that ran (or was offered) the task.
    pub agent: Option<String>,
    /// True only when the whole output went through the agent's redactor.
    pub redacted: bool,
    pub log_size: u64,
    /// `server` when the control plane holds the log, or the URL of the object
    /// in the user's bucket (`s3://bucket/key`).
    pub log_location: Option<String>,
    /// API path of the task's log, as the original API named it.
    pub task_logs: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from start to finish (or to now while running).
    pub elapsed_ms: Option<u64>,
    /// The task's reviews, when its target required them (`GET /v1/tasks/{id}` and
    /// `GET /v1/reviews`; lists leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<TaskReview>,
    /// The template the task was made from (`runops templates run`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::templates::TaskTemplate>,
}

/// Where a task on a reviewed target stands with its reviews.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskReview {
    /// `anyone` or `team`, as the target said when the task was created.
    pub rule: String,
    /// The reviewer groups (`team`).
    pub reviewers: Vec<String>,
    /// Approvals needed: groups for `team`, users for `anyone`.
    pub required: u32,
    /// Approvals that count so far (same unit as `required`).
    pub approvals: u32,
    /// For `team`: each reviewer group and who approved for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ReviewGroup>,
    /// Every approval and rejection, oldest first.
    pub reviews: Vec<ReviewEntry>,
    /// SHA-256 (hex) of what is reviewed: the script, the type and the target's
    /// settings as the task snapshotted them. Approvals record the one they saw.
    pub sha256: String,
    /// When the rule was met (or an admin forced it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    /// When the task expires if nothing happens: the end of the review wait while
    /// pending, of the approval while approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TaskReview {
    /// `0 of 1 (group dba)`, `1 of 2 (groups dba, security; dba approved)`,
    /// `0 of 1 (any other user)`: how far the approvals are.
    pub fn progress(&self) -> String {
        let head = format!("{} of {}", self.approvals, self.required);
        if self.rule == crate::vocab::ReviewMode::Team.as_str() {
            let word = if self.reviewers.len() == 1 {
                "group"
            } else {
                "groups"
            };
            let done: Vec<&str> = self
                .groups
                .iter()
                .filter(|g| g.approved_by.is_some())
                .map(|g| g.group.as_str())
                .collect();
            if done.is_empty() {
                format!("{head} ({word} {})", self.reviewers.join(", "))
            } else {
                format!(
                    "{head} ({word} {}; {} approved)",
                    self.reviewers.join(", "),
                    done.join(", ")
                )
            }
        } else if self.required == 1 {
            format!("{head} (any other user)")
        } else {
            format!("{head} (other users)")
        }
    }
}

/// A reviewer group of a `team` review.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReviewGroup {
    pub group: String,
    /// The reviewer whose approval counts for this group, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
}

/// One approval or rejection.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReviewEntry {
    /// The reviewer's e-mail.
    pub user: String,
    /// The reviewer's groups that the review counts for (for `team`, those among the
    /// reviewer groups; for `anyone`, all of them).
    pub groups: Vec<String>,
    /// `approved` or `rejected`.
    pub verdict: String,
    /// The reviewer's comment (for a rejection, the reason; for a forced approval, the
    /// admin's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// An admin approved without the rule being met.
    #[serde(default)]
    pub forced: bool,
    /// SHA-256 of what the reviewer approved or rejected (see [`TaskReview::sha256`]).
    pub sha256: String,
    pub at: DateTime<Utc>,
}

/// `POST /v1/tasks/{id}/approve`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskApprove {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// An admin approves whatever the rule says; `reason` is then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The [`TaskReview::sha256`] the reviewer looked at: refused when the task is not
    /// that one (optional; the CLI always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /v1/tasks/{id}/reject`: the reason is required.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskReject {
    #[serde(default)]
    pub comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `POST /v1/tasks/{id}/run`: the creator runs an approved task. With an identity
/// token bound to a key (`cnf.jkt`), `proof` is the creator's proof over the task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// Query of `GET /v1/reviews`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReviewsQuery {
    /// Every task waiting for review in the organisation, not only those you may review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// `POST /v1/tasks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCreate {
    pub target: String,
    pub script: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Overrides the target's type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `POST /v1/tasks/{id}/proof`: the creator's proof for a task created with a JWT
/// bound to a key (`cnf.jkt`), a JWS signed with that key over the task (see
/// `runops_jwt::proof`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProof {
    pub proof: String,
}

/// Query of `GET /v1/tasks`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// At most this many tasks (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only tasks with an id below this one (paging backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Only tasks created by the user with this e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Only tasks created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// Query of `GET /v1/tasks/{id}/logs`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Start at this byte offset of the log (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Keep the answer open and stream new output until the task ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
    /// Answer in [`LOG_FRAMES_CONTENT_TYPE`] frames: the log's bytes, then the task
    /// itself once it ended, so that a follower learns the end without another
    /// request. A server that predates it answers `text/plain`: look at the answer's
    /// content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<bool>,
}

/// Content type of a log answer in frames (`frames=true`). Each frame is one byte of
/// kind, the length of its payload (4 bytes, big-endian) and the payload: kind
/// [`LOG_FRAME_BYTES`] carries log bytes, kind [`LOG_FRAME_END`] the ended task as
/// JSON ([`Task`]), and is the last frame. An answer that stops without the end
/// frame was cut (or the server is stopping): follow again from the bytes received.
pub const LOG_FRAMES_CONTENT_TYPE: &str = "application/vnd.runops.log-frames";
/// Frame kind: log bytes.
pub const LOG_FRAME_BYTES: u8 = b'L';
/// Frame kind: the task, ended.
pub const LOG_FRAME_END: u8 = b'E';

/// One frame of a log answer in frames, header included.
pub fn log_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..len as usize]);
    out
}

/// Splits the complete frames off the front of `buf`: `(kind, payload)` each, the
/// incomplete rest left in `buf`.
pub fn take_log_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if buf.len() - at - 5 < len {
            break;
        }
        frames.push((buf[at], buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    buf.drain(..at);
    frames
}

/// A live agent session.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Agent {
    pub id: String,
    pub tags: Option<String>,
    pub hostname: String,
    pub version: String,
    pub concurrency: u32,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub running_tasks: Vec<i64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tag set the token is for: only an agent with exactly these `TAGS` may
    /// connect with it. `None` (or empty): untagged agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
}

/// Query of `GET /v1/agent-tokens`: `?tags=prod` lists the tokens of one tag set,
/// `?untagged=true` those of untagged agents; neither lists all.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentTokenListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untagged: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentToken {
    pub id: i64,
    pub name: Option<String>,
    /// The tag set it is scoped to; `None` for untagged agents.
    #[serde(default)]
    pub tags: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Answer to `POST /v1/agent-tokens`: the token is shown this once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentTokenCreated {
    pub id: i64,
    pub token: String,
}

/// A user API token as listed (never the token itself: only its hash is stored).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserToken {
    pub id: i64,
    pub name: Option<String>,
    /// The e-mail of the user it belongs to.
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// True for the token this request was made with.
    #[serde(default)]
    pub current: bool,
}

/// `POST /v1/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTokenCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Answer to `POST /v1/tokens`: the token is shown this once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserTokenCreated {
    pub id: i64,
    pub token: String,
}

/// Query of `GET /v1/tokens`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenListQuery {
    /// Every user's tokens (admins only); default: the caller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// One entry of the organisation's audit log (`GET /v1/audit`): who did what, when,
/// from where. `detail` never holds secret values (a target's config: keys only).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The user's e-mail; `None` for agents and the server itself.
    pub actor: Option<String>,
    /// `user`, `agent` or `system`.
    pub actor_kind: String,
    /// `login`, `user.create`, `token.create`, `token.revoke`, `target.create`,
    /// `target.update`, `target.delete`, `task.create`, `task.kill`, `agent.connect`,
    /// `agent.disconnect`, `agent.lost`, ...
    pub action: String,
    /// `user`, `api-token`, `agent-token`, `target`, `task`, `agent-session`.
    pub object_kind: Option<String>,
    /// The object's id or name.
    pub object_id: Option<String>,
    /// The IP address of the TCP peer (a proxy's address when behind one).
    pub remote_addr: Option<String>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Query of `GET /v1/audit`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// At most this many events (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only events with an id below this one (paging backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Only this action (`target.update`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Only events of this actor: a user's e-mail, or `system` / `agent` for events no
    /// user caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Only events about this object: a task id, a target's name, a user's e-mail...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_are_split_whole_across_any_cut() {
        let mut wire = log_frame(LOG_FRAME_BYTES, b"hello ");
        wire.extend(log_frame(LOG_FRAME_BYTES, b""));
        wire.extend(log_frame(LOG_FRAME_END, br#"{"id":1}"#));
        for cut in 0..=wire.len() {
            let mut buf = wire[..cut].to_vec();
            let mut frames = take_log_frames(&mut buf);
            buf.extend_from_slice(&wire[cut..]);
            frames.extend(take_log_frames(&mut buf));
            assert!(buf.is_empty(), "cut at {cut}");
            assert_eq!(
                frames,
                vec![
                    (LOG_FRAME_BYTES, b"hello ".to_vec()),
                    (LOG_FRAME_BYTES, Vec::new()),
                    (LOG_FRAME_END, br#"{"id":1}"#.to_vec()),
                ],
                "cut at {cut}"
            );
        }
    }
}
