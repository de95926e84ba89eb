//! The webhook API (`/v1/webhooks`, admins): an organisation's receivers of task and
//! review events, and the record of each delivery.
//!
//! | method and path                       | body → answer                                  |
//! |---------------------------------------|------------------------------------------------|
//! | `POST /v1/webhooks`                   | [`WebhookCreate`] → `201` [`WebhookCreated`] (the signing secret, shown once) |
//! | `GET /v1/webhooks`                    | → `[`[`Webhook`]`]`                            |
//! | `DELETE /v1/webhooks/{id}`            | → `204` (its pending deliveries are dropped)   |
//! | `GET /v1/webhooks/{id}/deliveries`    | query [`DeliveryListQuery`] → `[`[`WebhookDelivery`]`]` newest first |
//!
//! `docs/webhooks.md` describes the payloads, the signature and the retries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest webhook URL accepted: far above any real receiver's, small enough to list.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// The events a webhook can subscribe to, by wire name.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "review.requested",
    "review.approved",
    "review.rejected",
    "task.finished",
];

/// How a delivery's body is shaped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// JSON describing the event, signed (`X-Runops-Signature`).
    #[default]
    Generic,
    /// A Slack incoming-webhook message (`text` + `blocks`).
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Slack => "slack",
        }
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "generic" => Ok(WebhookFormat::Generic),
            "slack" => Ok(WebhookFormat::Slack),
            other => Err(format!(
                "unknown webhook format `{other}`: use `generic` or `slack`"
            )),
        }
    }
}

impl std::fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/webhooks`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Event names (see [`WEBHOOK_EVENTS`]); empty or absent: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// A webhook as listed (never its secret).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub format: WebhookFormat,
    /// The events it receives.
    pub events: Vec<String>,
    /// The admin who created it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Deliveries not done yet (waiting for their turn or for a retry).
    #[serde(default)]
    pub pending: u64,
    /// Deliveries given up on.
    #[serde(default)]
    pub failed: u64,
}

/// Answer of `POST /v1/webhooks`: the webhook and its signing secret, shown only here.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The HMAC-SHA256 key of `X-Runops-Signature`.
    pub secret: String,
}

/// Where a delivery stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its first attempt, a retry, or an earlier event
    /// of the same task.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after the retry horizon.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            other => Err(format!("unknown delivery status `{other}`")),
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's delivery to one webhook.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookDelivery {
    /// Also sent as `X-Runops-Delivery` (the same on every attempt: receivers dedup on it).
    pub id: i64,
    pub event: String,
    pub event_id: i64,
    pub task_id: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Query of `GET /v1/webhooks/{id}/deliveries`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryListQuery {
    /// At most this many (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
