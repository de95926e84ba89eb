//! The HTTP layer: the router, the shared state, and the routes that fit in a line.
//! Each file below holds the handlers of one part of the API:
//! [`targets`], [`tasks`] (with log reading), [`reviews`] (approve, reject, run, the
//! inbox), [`templates`] (scripts from git, run with parameters), [`org`] (me, users,
//! tokens, agents, audit), [`webhooks`] and [`agent`] (the agent protocol); [`openapi`] is
//! the document of them all. [`web`] is the browser app at `/`, built on
//! those same handlers.

pub mod agent;
pub mod openapi;
pub mod org;
pub mod reviews;
pub mod targets;
pub mod tasks;
pub mod templates;
pub mod web;
pub mod webhooks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use runops_proto::limits::{MAX_JSON_BODY_BYTES, MAX_LOG_CHUNK_BYTES};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::store::Store;

/// Settings the handlers need, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A session that has not polled for this long is lost.
    pub lease_secs: u64,
    /// How long an idle poll is held open.
    pub poll_hold: Duration,
    /// How long an offered task may wait for `start`.
    pub offer_timeout_secs: u64,
    /// Log bytes kept per task.
    pub log_cap_bytes: u64,
    /// Written into agent tokens.
    pub public_url: String,
}

impl Settings {
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub settings: Arc<Settings>,
    /// Counters behind `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Seals and opens the targets' write-only config.
    pub sealer: Arc<crate::sealed::ConfigSealer>,
    /// Identity-provider login (`--auth-jwk-url`), when configured.
    pub identity: Option<Arc<crate::identity::IdentityProvider>>,
    /// Creator JWTs of tasks not started yet (memory only).
    pub jwts: Arc<crate::identity::HeldTokens>,
    /// Id of the first admin's token while it was never used (0 once it was): its first
    /// use is recorded, so later starts stop telling how to recover a lost one.
    pub unused_first_admin_token: Arc<std::sync::atomic::AtomicI64>,
    /// The webhook outbox's wake-up and retry settings.
    pub webhooks: Arc<crate::webhook::Outbox>,
    /// The templates pulled from git (`--templates-repo`).
    pub templates: Arc<crate::templates::Templates>,
    /// The Slack app, when configured (`--slack-signing-secret`, `--slack-bot-token`).
    pub slack: Option<Arc<crate::slack::SlackApp>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/openapi.json", get(openapi::document_route))
        .route("/v1/me", get(org::me))
        .route("/v1/targets", get(targets::list).post(targets::create))
        .route(
            "/v1/targets/{name}",
            get(targets::show)
                .put(targets::update)
                .delete(targets::remove),
        )
        .route("/v1/tasks", get(tasks::list).post(tasks::create))
        .route("/v1/tasks/{id}", get(tasks::show))
        .route("/v1/tasks/{id}/logs", get(tasks::logs))
        .route("/v1/tasks/{id}/kill", post(tasks::kill))
        .route("/v1/tasks/{id}/proof", post(tasks::proof))
        .route("/v1/tasks/{id}/approve", post(reviews::approve))
        .route("/v1/tasks/{id}/reject", post(reviews::reject))
        .route("/v1/tasks/{id}/run", post(reviews::run))
        .route("/v1/reviews", get(reviews::inbox))
        .route("/v1/templates", get(templates::list))
        .route("/v1/templates/refresh", post(templates::refresh))
        .route("/v1/templates/webhook", post(templates::webhook))
        .route("/v1/templates/{name}", get(templates::show))
        .route("/v1/templates/{name}/run", post(templates::run))
        .route("/v1/agents", get(org::list_agents))
        .route(
            "/v1/agent-tokens",
            get(org::list_agent_tokens).post(org::create_agent_token),
        )
        .route("/v1/agent-tokens/{id}", delete(org::revoke_agent_token))
        .route("/v1/tokens", get(org::list_tokens).post(org::create_token))
        .route("/v1/tokens/{id}", delete(org::revoke_token))
        .route("/v1/users", get(org::list_users).post(org::create_user))
        .route("/v1/audit", get(org::list_audit))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/webhooks/{id}", delete(webhooks::remove))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/slack/commands", post(crate::slack::handlers::commands))
        .route(
            "/slack/interactivity",
            post(crate::slack::handlers::interactivity),
        )
        .route("/v1/agent/connect", post(agent::connect))
        .route("/v1/agent/poll", post(agent::poll))
        .route("/v1/agent/tasks/{id}/start", post(agent::start))
        .route(
            "/v1/agent/tasks/{id}/logs",
            post(agent::upload_log).layer(DefaultBodyLimit::max(MAX_LOG_CHUNK_BYTES)),
        )
        .route("/v1/agent/tasks/{id}/finish", post(agent::finish))
        .route("/v1/agent/disconnect", post(agent::disconnect))
        .merge(web::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        // Outermost, applied per route: sees the matched route template and every answer.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track_http,
        ))
        .with_state(state)
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness: the store answers",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String), (status = 503, description = "The store does not answer", body = runops_proto::api::ApiErrorBody)),
)]
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store does not answer",
            )
            .hint("the process is alive (`/healthz`) and serves again by itself once its database answers; check the database")
            .into_response()
        }
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such route: {method} {}",
        crate::error::echo(uri.path())
    ))
    .hint("the API lives under /v1 (see `runops --help`); check the URL")
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "method {method} is not allowed on {}",
            crate::error::echo(uri.path())
        ),
    )
}
