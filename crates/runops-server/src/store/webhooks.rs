//! Storage of webhooks and their outbox (see [`crate::webhook`]): a separate trait, a
//! supertrait of [`super::Store`], so handlers reach it through the same
//! `Arc<dyn Store>`.
//!
//! The rules (which delivery is due, when to retry, when to give up) are decided in
//! `crate::webhook::schedule` and passed in; these methods only read and write rows.

use async_trait::async_trait;
use runops_proto::webhook::{Webhook, WebhookDelivery, WebhookFormat};

use super::StoreResult;

/// A webhook to create; the caller validated the URL and sealed the secret.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub org_id: i64,
    pub url: String,
    pub format: WebhookFormat,
    pub events: Vec<String>,
    pub secret_sealed: Vec<u8>,
    pub created_by: String,
}

/// An event to put in the outbox, with a delivery for each webhook of the org that
/// subscribes to `kind`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub org_id: i64,
    pub task_id: i64,
    pub kind: &'static str,
    pub payload: serde_json::Value,
}

/// A delivery claimed for one attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub webhook_id: i64,
    pub org_id: i64,
    pub url: String,
    pub format: WebhookFormat,
    pub secret_sealed: Vec<u8>,
    pub event_id: i64,
    pub kind: String,
    pub task_id: i64,
    pub payload: serde_json::Value,
    /// Attempts including this one.
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered { status: u16 },
    /// Try again at `next_attempt_ms`.
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_ms: i64,
    },
    /// The retry horizon passed: marked `failed`.
    GiveUp { status: Option<u16>, error: String },
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, w: &NewWebhook, now_ms: i64) -> StoreResult<Webhook>;
    async fn list_webhooks(&self, org_id: i64) -> StoreResult<Vec<Webhook>>;
    /// True when the org has at least one webhook (cheap: checked on every event).
    async fn has_webhooks(&self, org_id: i64) -> StoreResult<bool>;
    /// Deletes a webhook of the org with its deliveries; false when there is none.
    async fn delete_webhook(&self, org_id: i64, id: i64) -> StoreResult<bool>;
    /// A webhook's newest `limit` deliveries; `None` when the org has no such webhook.
    async fn list_webhook_deliveries(
        &self,
        org_id: i64,
        webhook_id: i64,
        limit: u32,
    ) -> StoreResult<Option<Vec<WebhookDelivery>>>;
    /// Records the event and its deliveries in one transaction, due at `now_ms`;
    /// returns how many deliveries were queued (0: nobody subscribes, or the task's
    /// `task.finished` was already recorded, and nothing was stored).
    async fn record_event(&self, e: &NewEvent, now_ms: i64) -> StoreResult<u64>;
    /// Claims up to `limit` due deliveries, each the oldest pending one of its (webhook,
    /// task): counts the attempt and pushes its due time to `lease_until_ms`, so no other
    /// loop (or replica) takes it while it is in flight.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// When the next delivery that may go out (the oldest pending one of its webhook and
    /// task) is due; `None` when nothing is pending.
    async fn next_delivery_due(&self) -> StoreResult<Option<i64>>;
    /// Deletes deliveries that ended (delivered or failed) before `before_ms`, and the
    /// events left without deliveries; returns how many deliveries went.
    async fn purge_webhook_history(&self, before_ms: i64) -> StoreResult<u64>;
    /// Records an attempt's outcome.
    async fn record_attempt(
        &self,
        delivery_id: i64,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> StoreResult<()>;
}
