//! Notifications: events about tasks and reviews, delivered to the organisation's
//! webhooks (generic JSON signed with HMAC-SHA256, or Slack incoming-webhook messages)
//! and, when the Slack app is configured, to the target's channel ([`crate::slack`]).
//!
//! Handlers call [`emit`] after the state change the event reports (and
//! [`task_finished`] wherever a task reaches a final status). The event is stored in an
//! outbox with one delivery per subscribed webhook and delivered with retries by
//! [`crate::webhook::worker`]; nothing here waits for a receiver.
//!
//! The `detail` of review events, as the formats read it: `by` (the reviewer's e-mail),
//! `comment`, `forced` (true when an admin force-approved) and `reason` (of a
//! force-approval or a rejection). Other keys are passed on in the generic format.

use crate::http::AppState;
use crate::store::webhooks::NewEvent;

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
/// Failures are logged, not returned: the state change already happened.
pub async fn emit(
    st: &AppState,
    org_id: i64,
    task_id: i64,
    kind: EventKind,
    detail: serde_json::Value,
) {
    crate::slack::events::emit(st, org_id, task_id, kind, &detail);
    if let Err(e) = record(st, org_id, task_id, kind, detail).await {
        tracing::error!(error = %e, task = task_id, event = kind.as_str(), "cannot queue a webhook event");
    }
}

/// [`emit`] of [`EventKind::TaskFinished`]: call it wherever a task reaches a final
/// status (a second call for the same task records nothing).
pub async fn task_finished(st: &AppState, org_id: i64, task_id: i64) {
    emit(
        st,
        org_id,
        task_id,
        EventKind::TaskFinished,
        serde_json::json!({}),
    )
    .await;
}

async fn record(
    st: &AppState,
    org_id: i64,
    task_id: i64,
    kind: EventKind,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    // The common case, an organisation without webhooks, costs one indexed read.
    if !st.store.has_webhooks(org_id).await? {
        return Ok(());
    }
    let Some(rec) = st.store.get_task(org_id, task_id).await? else {
        return Ok(());
    };
    let payload =
        crate::webhook::payload::event_payload(kind, &rec.task, detail, chrono::Utc::now());
    let event = NewEvent {
        org_id,
        task_id,
        kind: kind.as_str(),
        payload,
    };
    if st.store.record_event(&event, crate::now_ms()).await? > 0 {
        st.webhooks.wake();
    }
    Ok(())
}
