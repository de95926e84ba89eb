//! Posts task events to the target's Slack channel: a review request (with the
//! buttons), its decision (the request updated in place with `chat.update` when this
//! server knows where it is, a new message otherwise) and the finished task.
//!
//! [`crate::notify::emit`] queues each event ([`Queue::push`], never waiting); one
//! worker ([`run`]) posts them one at a time, so a task's messages arrive in order. A
//! failure Slack may recover from (network, 5xx, rate limit) is retried with backoff
//! for a few minutes; the queue lives in memory, so events queued when the server
//! stops are not posted (the web app and the CLI always have the state).

use std::time::Duration;

use runops_proto::api::Task;
use serde_json::Value;
use tokio::sync::mpsc;

use super::SlackApp;
use super::messages;
use crate::http::AppState;
use crate::notify::EventKind;

/// Events waiting to be posted at most; beyond, new ones are dropped (logged) rather
/// than growing memory while Slack is down.
pub const QUEUE_CAPACITY: usize = 1000;

/// Attempts of one message; with [`FIRST_RETRY`] doubling, about four minutes.
pub const MAX_ATTEMPTS: u32 = 8;

/// Delay before the first retry; each later one doubles.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Bytes of a finished task's log read for its message (far more than the lines shown).
const OUTPUT_HEAD_BYTES: usize = 16 * 1024;

/// One event to post.
#[derive(Debug, Clone)]
pub struct Event {
    pub org_id: i64,
    pub task_id: i64,
    pub kind: EventKind,
    pub detail: Value,
}

/// The sending side, kept by [`SlackApp`].
#[derive(Debug)]
pub struct Queue(mpsc::Sender<Event>);

/// The worker's side.
pub type Receiver = mpsc::Receiver<Event>;

pub fn queue() -> (Queue, Receiver) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (Queue(tx), rx)
}

impl Queue {
    pub fn push(&self, e: Event) {
        if let Err(e) = self.0.try_send(e) {
            tracing::warn!(error = %e, "the Slack queue is full; an event is not posted");
        }
    }
}

/// Queues `kind` for Slack when the app is configured (called by `notify::emit`).
pub fn emit(st: &AppState, org_id: i64, task_id: i64, kind: EventKind, detail: &Value) {
    if let Some(app) = &st.slack
        && app.org_id == org_id
    {
        app.events.push(Event {
            org_id,
            task_id,
            kind,
            detail: detail.clone(),
        });
    }
}

/// The worker: posts queued events until the queue closes (server shutdown).
pub async fn run(st: AppState, mut rx: Receiver) {
    let Some(app) = st.slack.clone() else { return };
    while let Some(event) = rx.recv().await {
        let mut delay = FIRST_RETRY;
        for attempt in 1..=MAX_ATTEMPTS {
            match post(&st, &app, &event).await {
                Ok(()) => break,
                Err(e) if e.retryable && attempt < MAX_ATTEMPTS => {
                    tracing::info!(task = event.task_id, event = event.kind.as_str(), attempt, error = %e, "cannot post to Slack; will retry");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                Err(e) => {
                    tracing::warn!(task = event.task_id, event = event.kind.as_str(), error = %e, "cannot post to Slack; given up");
                    break;
                }
            }
        }
    }
}

fn store_error(e: impl std::fmt::Display) -> super::api::SlackError {
    super::api::SlackError {
        message: format!("cannot read the task: {e}"),
        retryable: true,
    }
}

/// Posts one event; `Ok` also when there is nothing to post (no channel).
async fn post(st: &AppState, app: &SlackApp, e: &Event) -> Result<(), super::api::SlackError> {
    let Some(rec) = st
        .store
        .get_task(e.org_id, e.task_id)
        .await
        .map_err(store_error)?
    else {
        return Ok(());
    };
    let task = match e.kind {
        // With its review (the version's SHA-256 goes into the buttons).
        EventKind::ReviewRequested => crate::http::reviews::with_review(st, rec)
            .await
            .map_err(store_error)?,
        _ => rec.task,
    };
    let target = st
        .store
        .get_target(e.org_id, &task.target)
        .await
        .map_err(store_error)?;
    let Some(channel) = target.and_then(|t| t.channel) else {
        return Ok(());
    };
    match e.kind {
        EventKind::ReviewRequested => {
            let msg = messages::review_requested(&task, &app.web_url);
            let at = app.api.post_message(&channel, &msg).await?;
            app.remember(task.id, at);
        }
        EventKind::ReviewApproved | EventKind::ReviewRejected => {
            let approved = e.kind == EventKind::ReviewApproved;
            let by = ["approved_by", "rejected_by", "by"]
                .iter()
                .find_map(|k| e.detail[*k].as_str())
                .unwrap_or("an admin");
            let reason = e.detail["reason"].as_str();
            let msg = messages::review_decided(&task, approved, by, reason, &app.web_url);
            match app.recall(task.id) {
                Some(at) => app.api.update_message(&at, &msg).await?,
                None => {
                    let at = app.api.post_message(&channel, &msg).await?;
                    app.remember(task.id, at);
                }
            }
            if !approved {
                app.forget(task.id);
            }
        }
        EventKind::TaskFinished => {
            if !app.first_finish(task.id) {
                return Ok(());
            }
            let output = output_head(st, &task).await;
            let msg = messages::task_finished(&task, &output, &app.web_url);
            app.api.post_message(&channel, &msg).await?;
            app.forget(task.id);
        }
    }
    Ok(())
}

/// The start of a task's stored (agent-redacted) log; empty when unreadable.
async fn output_head(st: &AppState, task: &Task) -> String {
    match st.store.read_log(task.id, 0, OUTPUT_HEAD_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            tracing::warn!(task = task.id, error = %e, "cannot read a task's log for Slack");
            String::new()
        }
    }
}
