//! The delivery loop, started by `Server::start`: claims due deliveries, sends each in
//! its own task (at most [`MAX_IN_FLIGHT`] at once, each bounded by
//! [`ATTEMPT_TIMEOUT`]) and records the outcome. It sleeps until the next delivery is
//! due, a new one is queued ([`super::Outbox::wake`]) or an attempt ends.

use std::time::Duration;

use runops_proto::webhook::WebhookFormat;
use tokio::task::JoinSet;

use super::payload::{generic_body, signature_header, slack_body};
use super::schedule::{after_failure, is_delivered};
use super::{
    ATTEMPT_TIMEOUT, CLAIM_LEASE, CONNECT_TIMEOUT, GIVE_UP_AFTER, HISTORY_KEPT,
    HISTORY_PURGE_INTERVAL, IDLE_RECHECK, MAX_ERROR_CHARS, MAX_IN_FLIGHT,
};
use crate::http::AppState;
use crate::now_ms;
use crate::store::webhooks::{AttemptOutcome, ClaimedDelivery};

/// After a store failure the loop waits this long before reading the outbox again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The HTTP client of every delivery: short timeouts, no redirects (a 3xx is not a
/// delivery; following it could post the event somewhere the admin did not name).
fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("runops-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Runs until [`super::Outbox::stop`] (then returns once the attempts in flight are
/// recorded) or until aborted (which also aborts the attempts in flight: they stay
/// pending and are tried again after their claim lease).
pub async fn run(st: AppState) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let mut in_flight = JoinSet::new();
    let mut next_purge = tokio::time::Instant::now();
    loop {
        if st.webhooks.is_stopping() {
            while in_flight.join_next().await.is_some() {}
            return;
        }
        if tokio::time::Instant::now() >= next_purge {
            next_purge += HISTORY_PURGE_INTERVAL;
            purge_history(&st).await;
        }
        let mut wait = IDLE_RECHECK;
        match claim(&st, MAX_IN_FLIGHT - in_flight.len()).await {
            Ok(claimed) => {
                for d in claimed {
                    let (st, client) = (st.clone(), client.clone());
                    in_flight.spawn(async move { attempt(&st, &client, d).await });
                }
                if in_flight.len() < MAX_IN_FLIGHT {
                    match st.store.next_delivery_due().await {
                        Ok(Some(due)) => {
                            let ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                            wait = wait.min(Duration::from_millis(ms));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the webhook outbox; retrying");
                            wait = STORE_RETRY;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
                wait = STORE_RETRY;
            }
        }
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = st.webhooks.wake.notified() => {}
            Some(_) = in_flight.join_next() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Deletes ended deliveries older than [`HISTORY_KEPT`]; a failure waits for the next round.
async fn purge_history(st: &AppState) {
    let kept = i64::try_from(HISTORY_KEPT.as_millis()).unwrap_or(i64::MAX);
    match st
        .store
        .purge_webhook_history(now_ms().saturating_sub(kept))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(deliveries = n, "deleted old webhook deliveries"),
        Err(e) => tracing::warn!(error = %e, "cannot delete old webhook deliveries"),
    }
}

async fn claim(st: &AppState, free: usize) -> anyhow::Result<Vec<ClaimedDelivery>> {
    if free == 0 {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let lease = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX);
    let limit = u32::try_from(free).unwrap_or(u32::MAX);
    Ok(st
        .store
        .claim_due_deliveries(now, now.saturating_add(lease), limit)
        .await?)
}

/// One attempt of one delivery, with its outcome recorded.
async fn attempt(st: &AppState, client: &reqwest::Client, d: ClaimedDelivery) {
    let (status, error) = match send(st, client, &d).await {
        Ok(code) if is_delivered(code) => (Some(code), None),
        Ok(code) => (
            Some(code),
            Some(format!("the receiver answered HTTP {code}")),
        ),
        Err(e) => (None, Some(e)),
    };
    let now = now_ms();
    let outcome = match (status, error) {
        (Some(code), None) => AttemptOutcome::Delivered { status: code },
        (status, error) => {
            let mut error = error.unwrap_or_default();
            if error.chars().count() > MAX_ERROR_CHARS {
                error = error.chars().take(MAX_ERROR_CHARS).collect();
            }
            after_failure(
                d.attempts,
                d.created_at_ms,
                now,
                st.webhooks.retry_max,
                GIVE_UP_AFTER,
                status,
                error,
            )
        }
    };
    match &outcome {
        AttemptOutcome::Delivered { status } => tracing::debug!(
            webhook = d.webhook_id, delivery = d.id, event = %d.kind, task = d.task_id, status,
            "webhook delivered"
        ),
        AttemptOutcome::Retry {
            error,
            next_attempt_ms,
            ..
        } => tracing::info!(
            webhook = d.webhook_id, delivery = d.id, event = %d.kind, attempts = d.attempts,
            retry_in_ms = next_attempt_ms - now, error = %error,
            "webhook delivery failed; will retry"
        ),
        AttemptOutcome::GiveUp { error, .. } => tracing::warn!(
            webhook = d.webhook_id, delivery = d.id, event = %d.kind, attempts = d.attempts,
            error = %error,
            "webhook delivery given up after the retry horizon"
        ),
    }
    if let Err(e) = st.store.record_attempt(d.id, &outcome, now).await {
        // The claim lease runs out and the delivery is tried again.
        tracing::error!(error = %e, delivery = d.id, "cannot record a webhook attempt");
    }
}

/// POSTs the delivery; the HTTP status, or why there was none (never the URL: a Slack
/// webhook URL is itself a credential and must not reach the logs).
async fn send(st: &AppState, client: &reqwest::Client, d: &ClaimedDelivery) -> Result<u16, String> {
    let secret = st
        .sealer
        .open_webhook_secret(d.org_id, &d.url, &d.secret_sealed)
        .map_err(|e| e.to_string())?;
    let body = match d.format {
        WebhookFormat::Generic => generic_body(d.event_id, &d.payload),
        WebhookFormat::Slack => slack_body(&d.payload),
    };
    let t = chrono::Utc::now().timestamp();
    let resp = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("x-runops-event", &d.kind)
        .header("x-runops-delivery", d.id.to_string())
        .header("x-runops-signature", signature_header(&secret, t, &body))
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    Ok(resp.status().as_u16())
}

fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
    } else if e.is_connect() {
        let mut msg = "cannot connect".to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("cannot connect: {s}");
            source = s.source();
        }
        msg
    } else {
        e.to_string()
    }
}
