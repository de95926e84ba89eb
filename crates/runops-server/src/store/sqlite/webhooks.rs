//! [`WebhookStore`] on SQLite: the `webhooks`, `webhook_events` and
//! `webhook_deliveries` tables of migration 0009.

use super::{SqliteStore, json_list, to_json_list, ts, ts_opt};
use crate::store::webhooks::{AttemptOutcome, ClaimedDelivery, NewEvent, NewWebhook, WebhookStore};
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use runops_proto::webhook::{DeliveryStatus, Webhook, WebhookDelivery, WebhookFormat};
use sqlx::Connection as _;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// The pending deliveries that may go out: each the oldest pending one of its
/// (webhook, task), so a task's events reach a receiver in order.
macro_rules! chain_head {
    () => {
        "d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
         WHERE p.webhook_id = d.webhook_id AND p.task_id = d.task_id AND p.status = 'pending' AND p.id < d.id)"
    };
}

fn parse_format(s: &str) -> StoreResult<WebhookFormat> {
    s.parse().map_err(StoreError::Corrupt)
}

fn webhook_from_row(r: &SqliteRow) -> StoreResult<Webhook> {
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        format: parse_format(&r.try_get::<String, _>("format")?)?,
        events: json_list(&r.try_get::<String, _>("events_json")?)?,
        created_by: r.try_get("created_by")?,
        created_at: ts(r.try_get("created_at")?)?,
        pending: u64::try_from(r.try_get::<i64, _>("pending")?).unwrap_or(0),
        failed: u64::try_from(r.try_get::<i64, _>("failed")?).unwrap_or(0),
    })
}

macro_rules! webhook_cols {
    () => {
        "w.id, w.url, w.format, w.events_json, w.created_by, w.created_at, \
     (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'pending') AS pending, \
     (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.status = 'failed') AS failed"
    };
}

fn delivery_from_row(r: &SqliteRow) -> StoreResult<WebhookDelivery> {
    let status: DeliveryStatus = r
        .try_get::<String, _>("status")?
        .parse()
        .map_err(StoreError::Corrupt)?;
    let next: i64 = r.try_get("next_attempt_at")?;
    Ok(WebhookDelivery {
        id: r.try_get("id")?,
        event: r.try_get("kind")?,
        event_id: r.try_get("event_id")?,
        task_id: r.try_get("task_id")?,
        status,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        created_at: ts(r.try_get("created_at")?)?,
        last_attempt_at: ts_opt(r.try_get("last_attempt_at")?)?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            Some(ts(next)?)
        } else {
            None
        },
        last_status: r
            .try_get::<Option<i64>, _>("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error")?,
        delivered_at: ts_opt(r.try_get("delivered_at")?)?,
    })
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook(&self, w: &NewWebhook, now_ms: i64) -> StoreResult<Webhook> {
        let id = sqlx::query(
            "INSERT INTO webhooks (org_id, url, format, events_json, secret_sealed, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(w.org_id)
        .bind(&w.url)
        .bind(w.format.as_str())
        .bind(to_json_list(&w.events))
        .bind(&w.secret_sealed)
        .bind(&w.created_by)
        .bind(now_ms)
        .execute(&mut *self.writer.lock().await?)
        .await?
        .last_insert_rowid();
        Ok(Webhook {
            id,
            url: w.url.clone(),
            format: w.format,
            events: w.events.clone(),
            created_by: w.created_by.clone(),
            created_at: ts(now_ms)?,
            pending: 0,
            failed: 0,
        })
    }

    async fn list_webhooks(&self, org_id: i64) -> StoreResult<Vec<Webhook>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks w WHERE w.org_id = ? ORDER BY w.id"
        ))
        .bind(org_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn has_webhooks(&self, org_id: i64) -> StoreResult<bool> {
        // Asked for every task that changes state: a read without a thread hop.
        self.inline.read(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM webhooks WHERE org_id = ? LIMIT 1")?
                    .exists([org_id])?,
            )
        })
    }

    async fn delete_webhook(&self, org_id: i64, id: i64) -> StoreResult<bool> {
        let n = sqlx::query("DELETE FROM webhooks WHERE org_id = ? AND id = ?")
            .bind(org_id)
            .bind(id)
            .execute(&mut *self.writer.lock().await?)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn list_webhook_deliveries(
        &self,
        org_id: i64,
        webhook_id: i64,
        limit: u32,
    ) -> StoreResult<Option<Vec<WebhookDelivery>>> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM webhooks WHERE org_id = ? AND id = ?")
                .bind(org_id)
                .bind(webhook_id)
                .fetch_optional(&self.reader)
                .await?;
        if found.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT d.id, e.kind, d.event_id, d.task_id, d.status, d.attempts, d.created_at, \
             d.last_attempt_at, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at \
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
             WHERE d.webhook_id = ? ORDER BY d.id DESC LIMIT ?",
        )
        .bind(webhook_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(delivery_from_row)
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    async fn record_event(&self, e: &NewEvent, now_ms: i64) -> StoreResult<u64> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let hooks: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, events_json FROM webhooks WHERE org_id = ? ORDER BY id")
                .bind(e.org_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut subscribed = Vec::new();
        for (id, events) in hooks {
            if json_list(&events)?.iter().any(|k| k == e.kind) {
                subscribed.push(id);
            }
        }
        if subscribed.is_empty() {
            return Ok(0);
        }
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO webhook_events (org_id, task_id, kind, payload_json, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(e.org_id)
        .bind(e.task_id)
        .bind(e.kind)
        .bind(e.payload.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(0);
        }
        let event_id = inserted.last_insert_rowid();
        for webhook_id in &subscribed {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, task_id, status, created_at, next_attempt_at) \
                 VALUES (?, ?, ?, 'pending', ?, ?)",
            )
            .bind(webhook_id)
            .bind(event_id)
            .bind(e.task_id)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(subscribed.len() as u64)
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT d.id FROM webhook_deliveries d WHERE ",
            chain_head!(),
            " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.id LIMIT ?"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = ?, next_attempt_at = ? WHERE id = ?",
            )
            .bind(now_ms)
            .bind(lease_until_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let r = sqlx::query(
                "SELECT d.id, d.webhook_id, d.task_id, d.attempts, d.created_at, w.org_id, w.url, w.format, \
                 w.secret_sealed, e.id AS event_id, e.kind, e.payload_json \
                 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 JOIN webhook_events e ON e.id = d.event_id WHERE d.id = ?",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let payload: String = r.try_get("payload_json")?;
            claimed.push(ClaimedDelivery {
                id,
                webhook_id: r.try_get("webhook_id")?,
                org_id: r.try_get("org_id")?,
                url: r.try_get("url")?,
                format: parse_format(&r.try_get::<String, _>("format")?)?,
                secret_sealed: r.try_get("secret_sealed")?,
                event_id: r.try_get("event_id")?,
                kind: r.try_get("kind")?,
                task_id: r.try_get("task_id")?,
                payload: serde_json::from_str(&payload).map_err(|e| {
                    StoreError::Corrupt(format!("bad webhook event payload {payload:?}: {e}"))
                })?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                created_at_ms: r.try_get("created_at")?,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT min(d.next_attempt_at) FROM webhook_deliveries d WHERE ",
            chain_head!()
        ))
        .fetch_one(&mut *self.writer.lock().await?)
        .await?)
    }

    async fn purge_webhook_history(&self, before_ms: i64) -> StoreResult<u64> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        // Ended: when it was delivered, or the attempt it was given up after.
        let n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' \
             AND coalesce(delivered_at, last_attempt_at, created_at) < ?",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM webhook_events WHERE created_at < ? AND NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn record_attempt(
        &self,
        delivery_id: i64,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> StoreResult<()> {
        let q = match outcome {
            AttemptOutcome::Delivered { status } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = ?, last_status = ?, last_error = NULL \
                 WHERE id = ? AND status = 'pending'",
            )
            .bind(now_ms)
            .bind(i64::from(*status)),
            AttemptOutcome::Retry {
                status,
                error,
                next_attempt_ms,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = ?, last_status = ?, last_error = ? \
                 WHERE id = ? AND status = 'pending'",
            )
            .bind(*next_attempt_ms)
            .bind(status.map(i64::from))
            .bind(error.clone()),
            AttemptOutcome::GiveUp { status, error } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', last_status = ?, last_error = ? \
                 WHERE id = ? AND status = 'pending'",
            )
            .bind(status.map(i64::from))
            .bind(error.clone()),
        };
        q.bind(delivery_id)
            .execute(&mut *self.writer.lock().await?)
            .await?;
        Ok(())
    }
}
