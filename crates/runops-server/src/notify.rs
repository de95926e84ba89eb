//! Notifications: events about tasks and reviews, delivered to the organisation's
//! webhooks (generic JSON signed with HMAC-SHA256, or Slack incoming-webhook messages).
//!
//! Handlers call [`emit`] after the state change the event reports. The event is stored
//! in an outbox and delivered with retries; nothing here blocks the caller on a receiver.
//!
//! The outbox, the delivery worker and the webhook API are being built (issue 13); until
//! then `emit` records nothing.

use crate::http::AppState;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A task on a reviewed target is waiting for reviews.
    ReviewRequested,
    /// A review rule is met (or an admin force-approved: `detail.forced = true`).
    ReviewApproved,
    /// A reviewer rejected the task (`detail.reason`).
    ReviewRejected,
    /// A task ended (success or failure).
    TaskFinished,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ReviewRequested => "review.requested",
            EventKind::ReviewApproved => "review.approved",
            EventKind::ReviewRejected => "review.rejected",
            EventKind::TaskFinished => "task.finished",
        }
    }
}

/// Records `kind` for task `task_id` of organisation `org_id`. `detail` carries what
/// the event adds to the task (who approved, `forced`, the rejection `reason`...).
pub async fn emit(
    _st: &AppState,
    _org_id: i64,
    _task_id: i64,
    _kind: EventKind,
    _detail: serde_json::Value,
) {
}
