//! `/v1/webhooks` (admins): create (the signing secret is shown once), list, delete,
//! and a webhook's deliveries. Delivery itself is [`crate::webhook`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runops_proto::webhook::{
    DeliveryListQuery, WEBHOOK_EVENTS, Webhook, WebhookCreate, WebhookCreated, WebhookDelivery,
};
use serde_json::json;

use super::AppState;
use crate::audit;
use crate::auth::{UserAuth, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::now_ms;
use crate::store::webhooks::NewWebhook;

/// Prefix of a webhook signing secret, so one found in a config file is recognised.
pub const SECRET_PREFIX: &str = "whsec_";

fn parse_webhook_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "webhook id `{}` is not a number",
            crate::error::echo(raw)
        ))
        .hint("run `runops webhooks list` to see the webhooks and their ids")
    })
}

fn webhook_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("webhook {id} not found"))
        .hint("run `runops webhooks list` to see the webhooks and their ids")
}

/// The events asked for, checked and deduplicated in the canonical order; all of
/// them when none is named.
fn subscribed_events(asked: &[String]) -> ApiResult<Vec<String>> {
    let asked: Vec<&str> = asked
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if let Some(bad) = asked.iter().find(|e| !WEBHOOK_EVENTS.contains(e)) {
        return Err(ApiError::bad_request(format!(
            "unknown webhook event `{}`",
            crate::error::echo(bad)
        ))
        .hint(format!("the events are: {}", WEBHOOK_EVENTS.join(", "))));
    }
    Ok(WEBHOOK_EVENTS
        .iter()
        .filter(|e| asked.is_empty() || asked.contains(e))
        .map(|e| e.to_string())
        .collect())
}

/// The host of a URL, for the audit log (a Slack webhook URL's path is a credential).
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "webhooks_create",
    tag = "webhooks",
    summary = "Add a webhook (admins)",
    request_body = WebhookCreate,
    responses((status = 201, description = "The webhook and its signing secret, shown once", body = WebhookCreated)),
)]
pub async fn create(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<WebhookCreate>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    auth.require_admin("manage webhooks")?;
    let url = crate::webhook::validate_url(&req.url)?;
    let events = subscribed_events(&req.events)?;
    let bytes = random_secret().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a webhook secret");
        ApiError::internal()
    })?;
    let secret = format!("{SECRET_PREFIX}{}", hex::encode(bytes));
    let sealed = st
        .sealer
        .seal_webhook_secret(auth.org_id(), &url, &secret)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot seal a webhook secret");
            ApiError::internal()
        })?;
    let webhook = st
        .store
        .create_webhook(
            &NewWebhook {
                org_id: auth.org_id(),
                url,
                format: req.format,
                events,
                secret_sealed: sealed,
                created_by: auth.user.email.clone(),
            },
            now_ms(),
        )
        .await?;
    tracing::info!(webhook = webhook.id, format = %webhook.format, by = %auth.user.email, "webhook created");
    let detail =
        json!({"host": host_of(&webhook.url), "format": webhook.format, "events": webhook.events});
    audit::by_user(&st, &auth, "webhook.create", "webhook", webhook.id, detail).await;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreated { webhook, secret }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "webhooks_list",
    tag = "webhooks",
    summary = "List the webhooks (admins)",
    responses((status = 200, description = "The webhooks", body = Vec<Webhook>)),
)]
pub async fn list(State(st): State<AppState>, auth: UserAuth) -> ApiResult<Json<Vec<Webhook>>> {
    auth.require_admin("list webhooks")?;
    Ok(Json(st.store.list_webhooks(auth.org_id()).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    operation_id = "webhooks_delete",
    tag = "webhooks",
    summary = "Remove a webhook (admins)",
    params(("id" = i64, Path, description = "The webhook's id")),
    responses((status = 204, description = "Removed")),
)]
pub async fn remove(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin("manage webhooks")?;
    let id = parse_webhook_id(&raw)?;
    if !st.store.delete_webhook(auth.org_id(), id).await? {
        return Err(webhook_not_found(id));
    }
    tracing::info!(webhook = id, by = %auth.user.email, "webhook deleted");
    audit::by_user(&st, &auth, "webhook.delete", "webhook", id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    operation_id = "webhooks_deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries, newest first (admins)",
    params(("id" = i64, Path, description = "The webhook's id"), DeliveryListQuery),
    responses((status = 200, description = "The deliveries", body = Vec<WebhookDelivery>)),
)]
pub async fn deliveries(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryListQuery>,
) -> ApiResult<Json<Vec<WebhookDelivery>>> {
    auth.require_admin("read webhook deliveries")?;
    let id = parse_webhook_id(&raw)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    st.store
        .list_webhook_deliveries(auth.org_id(), id, limit)
        .await?
        .map(Json)
        .ok_or_else(|| webhook_not_found(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_default_to_all_and_unknown_ones_are_named() {
        assert_eq!(subscribed_events(&[]).unwrap(), WEBHOOK_EVENTS);
        assert_eq!(
            subscribed_events(&["task.finished, review.requested".into()]).unwrap(),
            ["review.requested", "task.finished"]
        );
        let e = subscribed_events(&["task.done".into()]).unwrap_err();
        assert!(e.error.contains("`task.done`"), "{}", e.error);
        assert!(e.hint.unwrap().contains("review.rejected"));
    }
}
