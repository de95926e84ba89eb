//! Task statuses and failure reasons, with the exact names used on the wire,
//! in the database and on the command line.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a task is in its life.
///
/// `created` → (`pending-review` → `approved` | `rejected`) → `ready` → `dispatched`
/// (offered to an agent, not yet started) → `running` → `success` | `failure`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Created,
    PendingReview,
    Approved,
    Rejected,
    Ready,
    Dispatched,
    Running,
    Success,
    Failure,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 9] = [
        TaskStatus::Created,
        TaskStatus::PendingReview,
        TaskStatus::Approved,
        TaskStatus::Rejected,
        TaskStatus::Ready,
        TaskStatus::Dispatched,
        TaskStatus::Running,
        TaskStatus::Success,
        TaskStatus::Failure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Created => "created",
            TaskStatus::PendingReview => "pending-review",
            TaskStatus::Approved => "approved",
            TaskStatus::Rejected => "rejected",
            TaskStatus::Ready => "ready",
            TaskStatus::Dispatched => "dispatched",
            TaskStatus::Running => "running",
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
        }
    }

    /// A finished task never changes status again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Success | TaskStatus::Failure | TaskStatus::Rejected
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    /// Exact names only; the error lists them and, for a near miss (`failed`,
    /// `sucess`, `pending`), suggests the one meant.
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
                let hint = match TaskStatus::closest(s) {
                    Some(c) => format!("did you mean `{c}`? "),
                    None => String::new(),
                };
                format!(
                    "unknown task status `{s}`: {hint}expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

impl TaskStatus {
    /// Every name, in the order of [`TaskStatus::ALL`].
    pub const NAMES: [&'static str; 9] = [
        "created",
        "pending-review",
        "approved",
        "rejected",
        "ready",
        "dispatched",
        "running",
        "success",
        "failure",
    ];

    /// The status a mistyped name most likely meant: a few edits away, or sharing
    /// its first four letters (`failed` → `failure`, `pending` → `pending-review`).
    pub fn closest(typed: &str) -> Option<TaskStatus> {
        crate::vocab::closest(typed, &TaskStatus::NAMES).and_then(|n| n.parse().ok())
    }
}

/// Why a task ended `failure`. A fixed list, so that automation can rely on it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// The script ran and exited non-zero (or was killed by a signal).
    ExitCode,
    /// The target's timeout elapsed; the process group was killed.
    Timeout,
    /// A user killed the task.
    Cancelled,
    /// The agent running the task stopped answering before the task finished.
    AgentLost,
    /// The secrets could not be fetched, parsed or lacked a required key.
    Secrets,
    /// The target or task configuration is invalid (malformed mapping, unknown type...).
    InvalidConfig,
    /// The task lacks a valid identity-provider token while the agent requires one.
    Unauthenticated,
    /// The agent itself failed (could not spawn, disk full, ...).
    AgentError,
    /// The task waited longer than its target allows for its reviews, or for its
    /// creator to run it once approved; it never ran.
    ReviewExpired,
}

impl FailureReason {
    /// Every name, in the order of [`FailureReason::ALL`].
    pub const NAMES: [&'static str; 9] = [
        "exit-code",
        "timeout",
        "cancelled",
        "agent-lost",
        "secrets",
        "invalid-config",
        "unauthenticated",
        "agent-error",
        "review-expired",
    ];

    pub const ALL: [FailureReason; 9] = [
        FailureReason::ExitCode,
        FailureReason::Timeout,
        FailureReason::Cancelled,
        FailureReason::AgentLost,
        FailureReason::Secrets,
        FailureReason::InvalidConfig,
        FailureReason::Unauthenticated,
        FailureReason::AgentError,
        FailureReason::ReviewExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ExitCode => "exit-code",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::AgentLost => "agent-lost",
            FailureReason::Secrets => "secrets",
            FailureReason::InvalidConfig => "invalid-config",
            FailureReason::Unauthenticated => "unauthenticated",
            FailureReason::AgentError => "agent-error",
            FailureReason::ReviewExpired => "review-expired",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FailureReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                crate::vocab::UnknownName::new("failure reason", s, &FailureReason::NAMES)
                    .to_string()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistyped_statuses_get_a_suggestion() {
        assert_eq!(TaskStatus::closest("failed"), Some(TaskStatus::Failure));
        assert_eq!(TaskStatus::closest("sucess"), Some(TaskStatus::Success));
        assert_eq!(
            TaskStatus::closest("pending"),
            Some(TaskStatus::PendingReview)
        );
        assert_eq!(TaskStatus::closest("Running"), Some(TaskStatus::Running));
        assert_eq!(TaskStatus::closest("banana"), None);
        let e = "failed".parse::<TaskStatus>().unwrap_err();
        assert!(
            e.starts_with(
                "unknown task status `failed`: did you mean `failure`? expected one of: created,"
            ),
            "{e}"
        );
        let e = "xyz".parse::<TaskStatus>().unwrap_err();
        assert!(
            e.starts_with("unknown task status `xyz`: expected one of"),
            "{e}"
        );
    }

    #[test]
    fn status_names_round_trip_through_serde_and_from_str() {
        for st in TaskStatus::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<TaskStatus>().unwrap(), st);
        }
        for r in FailureReason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(r.as_str().parse::<FailureReason>().unwrap(), r);
        }
        let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, TaskStatus::NAMES);
        let names: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, FailureReason::NAMES);
        let e = "timeot".parse::<FailureReason>().unwrap_err();
        assert!(
            e.starts_with(
                "unknown failure reason `timeot` (did you mean `timeout`?); use one of: exit-code,"
            ),
            "{e}"
        );
    }
}
