//! The web app, served by the same binary at `/`: server-rendered HTML (maud templates,
//! compiled and escaped with the crate) and one small embedded script for the live parts.
//!
//! Every page and form calls the JSON API's own handlers ([`super::tasks`],
//! [`super::reviews`], [`super::targets`], [`super::org`]) with the signed-in user's
//! [`UserAuth`](crate::auth::UserAuth): the rules, validation messages, audit events
//! and effects are exactly the API's, never a second copy. This module only turns
//! browser requests into those calls and their answers into pages.
//!
//! - [`session`]: sign in with an API token, the session cookie, CSRF checks on forms;
//!   [`sso`]: sign in through the identity provider (OpenID Connect, code + PKCE).
//! - [`layout`]: the page frame, navigation and small formatting helpers.
//! - [`tasks`], [`reviews`], [`targets`], [`agents`], [`admin`]: the pages.
//!
//! Security headers on every answer of these routes: a Content-Security-Policy that
//! allows only this origin's script and style (no inline script), no framing, no
//! sniffing, no caching of pages that hold data.

mod admin;
mod agents;
mod csv_view;
mod layout;
mod reviews;
mod session;
mod sso;
mod targets;
mod tasks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};

/// Largest form body: a script of `MAX_SCRIPT_BYTES` percent-encoded (up to 3 bytes per
/// byte) with room for the other fields.
const MAX_FORM_BYTES: usize = 3 * runops_proto::limits::MAX_SCRIPT_BYTES + 64 * 1024;

/// Only this origin's script, style and connections; no inline script or style, no
/// plugins, no framing by anyone, forms post only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The web app's routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/tasks") }))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-in/sso", get(sso::start))
        .route("/sign-in/sso/callback", get(sso::callback))
        .route("/sign-out", post(session::sign_out))
        .route("/sign-out-everywhere", post(session::sign_out_everywhere))
        .route("/assets/app.js", get(layout::script))
        .route("/assets/app.css", get(layout::style))
        .route("/tasks", get(tasks::list))
        .route("/tasks/rows", get(tasks::rows))
        .route("/tasks/new", get(tasks::new_form).post(tasks::create))
        .route("/tasks/{id}", get(tasks::show))
        .route("/tasks/{id}/watch", get(tasks::watch))
        .route("/tasks/{id}/log", get(tasks::follow_log))
        .route("/tasks/{id}/log.txt", get(tasks::download_log))
        .route("/tasks/{id}/result.csv", get(tasks::download_csv))
        .route("/tasks/{id}/kill", post(tasks::kill))
        .route("/tasks/{id}/approve", post(reviews::approve))
        .route("/tasks/{id}/reject", post(reviews::reject))
        .route("/tasks/{id}/run", post(reviews::run))
        .route("/reviews", get(reviews::inbox))
        .route("/reviews/rows", get(reviews::rows))
        .route("/targets", get(targets::list))
        .route("/targets/new", get(targets::new_form).post(targets::create))
        .route("/targets/{name}", get(targets::show))
        .route(
            "/targets/{name}/edit",
            get(targets::edit_form).post(targets::update),
        )
        .route("/agents", get(agents::show).post(agents::create_token))
        .route("/agents/tokens/{id}/revoke", post(agents::revoke_token))
        .route("/users", get(admin::users).post(admin::create_user))
        .route("/tokens", get(admin::tokens).post(admin::create_token))
        .route("/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/audit", get(admin::audit))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Why a web request failed.
pub enum WebError {
    /// No (valid) session: go to the sign-in page.
    SignIn,
    /// A refusal or failure, shown as a page with the API's message and hint.
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> WebError {
        WebError::Api(e)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        WebError::Api(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn => Redirect::to("/sign-in").into_response(),
            WebError::Api(e) => {
                let status = e.status;
                let title = match status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    s if s.is_server_error() => "Server error",
                    _ => "Refused",
                };
                (status, layout::error_page(title, &e)).into_response()
            }
        }
    }
}

pub type WebResult<T> = Result<T, WebError>;

/// A query string; a malformed one is refused with a page, not the API's JSON.
pub struct WebQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for WebQuery<T> {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> WebResult<Self> {
        let ApiQuery(q) = ApiQuery::<T>::from_request_parts(parts, state).await?;
        Ok(WebQuery(q))
    }
}

/// A path parameter; a malformed one is refused with a page, not the API's JSON.
pub struct WebPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for WebPath<T> {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> WebResult<Self> {
        let ApiPath(p) = ApiPath::<T>::from_request_parts(parts, state).await?;
        Ok(WebPath(p))
    }
}

/// A `303 See Other` to `to` (the answer to a form post).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
