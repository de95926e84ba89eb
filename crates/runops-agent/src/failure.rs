//! Why a task failed: a [`FailureReason`] from the fixed list and a sentence for humans.

use runops_proto::FailureReason;
use std::fmt;

/// A task failure that is reported to the server (and written into the task's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub reason: FailureReason,
    /// One line, lower-case, naming the problem and what to do about it.
    pub message: String,
}

impl TaskFailure {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            reason,
            message: message.into(),
        }
    }

    pub fn secrets(message: impl Into<String>) -> TaskFailure {
        TaskFailure::new(FailureReason::Secrets, message)
    }

    pub fn invalid_config(message: impl Into<String>) -> TaskFailure {
        TaskFailure::new(FailureReason::InvalidConfig, message)
    }

    pub fn agent_error(message: impl Into<String>) -> TaskFailure {
        TaskFailure::new(FailureReason::AgentError, message)
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.reason)
    }
}
