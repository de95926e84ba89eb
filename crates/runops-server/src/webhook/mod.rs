//! Webhook delivery: the outbox behind [`crate::notify::emit`].
//!
//! `emit` stores an event and one pending delivery per subscribed webhook (the
//! outbox, in the database) and wakes the [`worker`]. The worker claims due deliveries
//! (each the oldest pending one of its webhook and task, so a task's events arrive in
//! order), POSTs them with a short timeout, and records the outcome: 2xx is delivered,
//! anything else is retried with exponential backoff ([`schedule`]) until
//! [`GIVE_UP_AFTER`], then marked failed. All state is in the database, so retries
//! survive restarts; handlers never wait for a receiver.
//!
//! Files: [`payload`] (the event snapshot, the generic and Slack bodies, the
//! signature: pure functions), [`schedule`] (retry rules), [`worker`] (the loop),
//! [`validate_url`] here.

pub mod payload;
pub mod schedule;
pub mod worker;

use std::time::Duration;

use crate::error::ApiError;
use runops_proto::webhook::MAX_WEBHOOK_URL_LEN;

/// A receiver must answer within this: a slow one costs one in-flight slot, never
/// a handler, and is retried later.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connecting is part of the attempt; an unreachable host fails fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A claimed delivery is not claimed again before this: well beyond
/// [`ATTEMPT_TIMEOUT`], so only a crash mid-attempt (or a store failure recording its
/// outcome) leads to a second attempt.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Deliveries in flight at once, over every webhook: bounds sockets and memory when
/// many receivers are slow.
pub const MAX_IN_FLIGHT: usize = 16;

/// Default cap of the retry delay (`--webhook-retry-max-secs`): a receiver that comes
/// back gets its backlog within this.
pub const DEFAULT_RETRY_MAX_SECS: u64 = 300;

/// A delivery not done this long after its event is given up (marked `failed`):
/// long enough for a weekend outage of a receiver.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);

/// The worker re-reads the outbox this often even without a wake-up (a delivery that
/// another replica queued, a missed edge).
pub const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// Ended deliveries (and their events) are kept this long for `runops webhooks
/// deliveries`, then deleted: the outbox does not grow forever.
pub const HISTORY_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the worker deletes history older than [`HISTORY_KEPT`].
pub const HISTORY_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Characters of a failure kept in `last_error`.
pub const MAX_ERROR_CHARS: usize = 300;

/// The wake-up and settings the emitters and the worker share.
#[derive(Debug)]
pub struct Outbox {
    wake: tokio::sync::Notify,
    /// Set by a graceful shutdown: claim nothing more, finish what is in flight.
    stopping: std::sync::atomic::AtomicBool,
    /// Longest delay between two attempts of one delivery.
    pub retry_max: Duration,
}

impl Outbox {
    pub fn new(retry_max: Duration) -> Outbox {
        Outbox {
            wake: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            retry_max,
        }
    }

    /// Tells the worker that deliveries were queued (kept if it is busy: never lost).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the worker to stop once its attempts in flight are recorded (graceful
    /// shutdown: nothing stays claimed until its lease runs out).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A webhook URL as given, checked: `http` or `https`, a host, no user or password
/// (they would be listed to every admin), at most [`MAX_WEBHOOK_URL_LEN`] bytes.
pub fn validate_url(raw: &str) -> Result<String, ApiError> {
    let url = raw.trim();
    let example = "use a URL such as https://hooks.example.com/runops";
    if url.is_empty() {
        return Err(ApiError::bad_request("the webhook URL is empty").hint(example));
    }
    if url.len() > MAX_WEBHOOK_URL_LEN {
        return Err(ApiError::bad_request(format!(
            "the webhook URL is {} bytes; the limit is {MAX_WEBHOOK_URL_LEN}",
            url.len()
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        ApiError::bad_request(format!(
            "the webhook URL `{}` is not a valid URL: {e}",
            crate::error::echo(url)
        ))
        .hint(example)
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(format!(
            "the webhook URL must start with http:// or https://, not `{}:`",
            crate::error::echo(parsed.scheme())
        ))
        .hint(example));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "the webhook URL `{}` has no host",
            crate::error::echo(url)
        ))
        .hint(example));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::bad_request(
            "the webhook URL must not carry a user or password: every admin can list it",
        )
        .hint("authenticate deliveries with the signature (X-Runops-Signature) instead"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_http_with_a_host_and_no_credentials() {
        assert_eq!(
            validate_url(" https://hooks.example.com/x?a=1 ").unwrap(),
            "https://hooks.example.com/x?a=1"
        );
        assert!(validate_url("http://127.0.0.1:9/hook").is_ok());
        for (bad, says) in [
            ("", "empty"),
            ("ftp://example.com/", "http:// or https://"),
            ("file:///etc/passwd", "http:// or https://"),
            ("not a url", "not a valid URL"),
            ("https://user:pw@example.com/", "user or password"),
        ] {
            let e = validate_url(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.error.contains(says), "{bad}: {}", e.error);
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL_LEN));
        assert!(validate_url(&long).unwrap_err().error.contains("limit"));
    }
}
