//! Signing in to the web app with an API token, the session cookie, and the CSRF check
//! every state-changing form goes through ([`WebForm`]).
//!
//! The cookie holds a random 256-bit secret; the store keeps only its SHA-256
//! ([`WebSessionStore`](crate::store::web_sessions::WebSessionStore)), with the user, the
//! API token used to sign in and the session's CSRF token. The cookie is `HttpOnly`,
//! `SameSite=Lax`, and `Secure` when the public URL is `https://`. The API token is
//! sent once, in the sign-in form's body; it never appears in a URL or a page.
//!
//! A session opened through the identity provider (SSO) keeps the ID token of its
//! sign-in, sealed with the server key and bound to the session, never in a cookie or a
//! page: tasks created from the session carry it to the agent (an agent with `JWK_URL`
//! runs only tasks carrying their creator's token), as tasks created with the CLI carry
//! the JWT it was given. Once the token is about to expire ([`IDP_TOKEN_MIN_LEFT_MS`]),
//! the session still reads and reviews, and creating or running a task asks the user
//! to sign in again ([`WebUser::require_task_credentials`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::token::TokenKind;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::layout;
use super::{WebError, WebResult, see_other};
use crate::auth::{Credential, UserAuth, hash_token};
use crate::error::ApiError;
use crate::http::AppState;
use crate::now_ms;
use crate::store::web_sessions::{NewWebSession, SealedIdpToken, WebSessionStore};

/// Name of the session cookie.
const COOKIE_NAME: &str = "runops_session";

/// A session lasts a working day; then the user pastes a token again.
const SESSION_TTL_SECS: i64 = 12 * 3600;

/// An SSO session's ID token goes with a new task only while it has at least this long
/// left: the agent checks it when the task starts, and a token that expires on the way
/// would fail the task `unauthenticated` instead of asking for a new sign-in here.
pub const IDP_TOKEN_MIN_LEFT_MS: i64 = 60_000;

/// Whether an SSO session's ID token expiring at `expires_at_ms` may still go with a
/// task created at `now_ms`.
pub fn idp_token_usable(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms.saturating_sub(now_ms) >= IDP_TOKEN_MIN_LEFT_MS
}

/// The signed-in user of a web request, with the session's CSRF token for the forms of
/// the page.
pub struct WebUser {
    pub auth: UserAuth,
    pub csrf: String,
    id_hash: [u8; 32],
    /// A session opened through the identity provider whose ID token can no longer go
    /// with a task: when it expired (`None`: the session holds no token).
    idp_token_expired: Option<Option<i64>>,
}

impl WebUser {
    pub fn is_admin(&self) -> bool {
        self.auth.is_admin()
    }

    pub fn email(&self) -> &str {
        &self.auth.user.email
    }

    /// For a session opened with SSO whose ID token expired: the refusal that asks the
    /// user to sign in again (tasks created from the web carry that token to the agent).
    pub fn require_task_credentials(&self) -> Result<(), ApiError> {
        let Some(expired) = self.idp_token_expired else {
            return Ok(());
        };
        let when = expired
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| format!(" (it expired at {})", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        Err(ApiError::unauthorized(format!(
            "your sign-in with the identity provider has expired{when}; a task created here carries it to the agent, so nothing was created"
        ))
        .hint("sign in with SSO again (/sign-in/sso), then send the form again"))
    }

    /// True when this session's tasks need a new SSO sign-in first.
    pub fn must_sign_in_again(&self) -> bool {
        self.idp_token_expired.is_some()
    }

    /// The same user as another value (the API handlers take `UserAuth` by value).
    pub fn auth(&self) -> UserAuth {
        UserAuth {
            org_id: self.auth.org_id,
            user: self.auth.user.clone(),
            via: self.auth.via.clone(),
            remote_addr: self.auth.remote_addr.clone(),
        }
    }
}

fn sessions(st: &AppState) -> Result<&dyn WebSessionStore, ApiError> {
    st.store.web_sessions().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this server's store keeps no web sessions; the web app is not available with it",
        )
        .hint("use the CLI, or run the server with its default SQLite store")
    })
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> WebResult<WebUser> {
        let Some(secret) = session_cookie(&parts.headers) else {
            return Err(WebError::SignIn);
        };
        let id_hash = hash_token(secret);
        let Some(s) = sessions(st)?.find_web_session(&id_hash).await? else {
            return Err(WebError::SignIn);
        };
        let now = now_ms();
        if s.revoked || s.token_revoked || s.expires_at_ms <= now {
            return Err(WebError::SignIn);
        }
        let (via, idp_token_expired) = match (s.token_id, &s.idp_token) {
            (Some(id), _) => (Credential::ApiToken { id }, None),
            (None, Some(t)) if idp_token_usable(t.expires_at_ms, now) => {
                match st.sealer.open_session_token(&id_hash, &t.sealed) {
                    Ok(jwt) => (Credential::IdentityToken(jwt), None),
                    Err(e) => {
                        tracing::warn!(error = %e, "web session: its identity token does not open; the user signs in again");
                        (Credential::Sso, Some(None))
                    }
                }
            }
            (None, t) => (Credential::Sso, Some(t.as_ref().map(|t| t.expires_at_ms))),
        };
        Ok(WebUser {
            auth: UserAuth {
                org_id: s.org_id,
                user: s.user,
                via,
                remote_addr: crate::audit::peer_ip(parts),
            },
            csrf: s.csrf,
            id_hash,
            idp_token_expired,
        })
    }
}

/// A form post of a signed-in user whose CSRF token matched the session's, with its
/// fields parsed as `T`. Every state-changing web route takes one, so none can forget
/// the check.
pub struct WebForm<T> {
    pub user: WebUser,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A post that did not come from one of our pages: another site's form, or a page
/// whose session ended.
fn csrf_refused() -> WebError {
    WebError::Api(
        ApiError::forbidden("the form was refused: it did not carry this session's CSRF token")
            .hint("reload the page and send the form again"),
    )
}

/// Refuses a post another site's page made (browsers send `Origin` on posts).
fn check_same_origin(parts: &Parts) -> WebResult<()> {
    if parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(csrf_refused());
    }
    let (Some(origin), Some(host)) = (parts.headers.get(ORIGIN), parts.headers.get(HOST)) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    if origin_host.as_bytes() != host.as_bytes() {
        return Err(csrf_refused());
    }
    Ok(())
}

async fn form_bytes(req: Request, st: &AppState) -> WebResult<Bytes> {
    Bytes::from_request(req, st).await.map_err(|rej| {
        WebError::Api(ApiError::too_large(format!(
            "the form could not be read: {}",
            rej.body_text()
        )))
    })
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> WebResult<T> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| WebError::Api(ApiError::bad_request(format!("invalid form: {e}"))))
}

impl<T: DeserializeOwned> FromRequest<AppState> for WebForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, st: &AppState) -> WebResult<WebForm<T>> {
        let (mut parts, body) = req.into_parts();
        check_same_origin(&parts)?;
        let user = WebUser::from_request_parts(&mut parts, st).await?;
        let bytes = form_bytes(Request::from_parts(parts, body), st).await?;
        let sent: CsrfField = parse_form(&bytes)?;
        if sent.csrf.is_empty() || !bool::from(sent.csrf.as_bytes().ct_eq(user.csrf.as_bytes())) {
            tracing::info!(user = %user.email(), "web form refused: wrong or missing CSRF token");
            return Err(csrf_refused());
        }
        Ok(WebForm {
            user,
            form: parse_form(&bytes)?,
        })
    }
}

/// The hidden field every form of a signed-in page carries.
pub fn csrf_field(user: &WebUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

fn sign_in_form(sso: bool, error: Option<&ApiError>) -> Markup {
    layout::bare_page(
        "Sign in",
        html! {
            h1 { "Sign in to Runops" }
            @if let Some(e) = error { (layout::error_box(e)) }
            form method="post" action="/sign-in" class="card" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required
                    placeholder="rou_…" autofocus;
                p class="help" {
                    "Paste an API token (" code { "runops tokens create" } ", or the admin token "
                    code { "runops server" } " printed on its first start). It is sent once and never stored in the browser."
                }
                button type="submit" { "Sign in" }
            }
            @if sso {
                p { a class="button" href="/sign-in/sso" id="sso" { "Sign in with SSO" } }
            }
        },
    )
}

pub async fn sign_in_page(State(st): State<AppState>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    if WebUser::from_request_parts(&mut parts, &st).await.is_ok() {
        return see_other("/tasks");
    }
    sign_in_form(super::sso::client(&st).is_some(), None).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
}

fn refused(st: &AppState, e: ApiError) -> Response {
    (
        e.status,
        sign_in_form(super::sso::client(st).is_some(), Some(&e)),
    )
        .into_response()
}

/// `POST /sign-in`: checks the token as the API does, opens a session, sets the cookie.
pub async fn sign_in(State(st): State<AppState>, req: Request) -> Response {
    match try_sign_in(&st, req).await {
        Ok(r) => r,
        Err(WebError::Api(e)) => refused(&st, e),
        Err(WebError::SignIn) => see_other("/sign-in"),
    }
}

async fn try_sign_in(st: &AppState, req: Request) -> WebResult<Response> {
    let (parts, body) = req.into_parts();
    check_same_origin(&parts)?;
    let remote_addr = crate::audit::peer_ip(&parts);
    let bytes = form_bytes(Request::from_parts(parts, body), st).await?;
    let form: SignIn = parse_form(&bytes)?;
    let token = form.token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized("paste an API token to sign in")
            .hint("create one with `runops tokens create`")
            .into());
    }
    if runops_jwt::looks_like_jwt(token) {
        return Err(ApiError::unauthorized(
            "this is an identity-provider token; the web app signs in with an API token (rou_…)",
        )
        .hint("create one with `runops tokens create`")
        .into());
    }
    let found = crate::auth::check_token(st, token).await?;
    if found.kind != TokenKind::User {
        return Err(ApiError::forbidden(
            "this is an agent token; sign in with a user's API token (rou_…)",
        )
        .into());
    }
    let user = found
        .user
        .clone()
        .ok_or_else(|| ApiError::unauthorized("this token belongs to no user"))?;
    let auth = UserAuth {
        org_id: found.org_id,
        user,
        via: Credential::ApiToken { id: found.id },
        remote_addr,
    };
    open_session(st, auth, SignedInWith::ApiToken(found.id)).await
}

/// How a session was opened.
pub enum SignedInWith<'a> {
    /// An API token, by its id: the session ends when the token is revoked.
    ApiToken(i64),
    /// The identity provider (SSO), with the ID token it answered (already checked).
    IdentityProvider { id_token: &'a str },
}

/// Opens a session for `auth`, records the sign-in, and answers with the cookie and a
/// redirect to the tasks.
pub async fn open_session(
    st: &AppState,
    auth: UserAuth,
    with: SignedInWith<'_>,
) -> WebResult<Response> {
    let secret = crate::auth::random_secret().map_err(|e| {
        tracing::error!(error = %e, "cannot make a web session");
        ApiError::internal()
    })?;
    let secret = hex(&secret);
    let csrf = crate::auth::random_id().map_err(|e| {
        tracing::error!(error = %e, "cannot make a CSRF token");
        ApiError::internal()
    })?;
    let now = now_ms();
    let id_hash = hash_token(&secret);
    let (token_id, idp_token) = match with {
        SignedInWith::ApiToken(id) => (Some(id), None),
        SignedInWith::IdentityProvider { id_token } => {
            let sealed = st
                .sealer
                .seal_session_token(&id_hash, id_token)
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot seal a web session's identity token");
                    ApiError::internal()
                })?;
            let expires_at_ms = crate::identity::token_expiry_ms(id_token).unwrap_or(now);
            (
                None,
                Some(SealedIdpToken {
                    sealed,
                    expires_at_ms,
                }),
            )
        }
    };
    let store = sessions(st)?;
    // Sessions that ended a full lifetime ago are of no use to anyone any more.
    store
        .purge_web_sessions(now - SESSION_TTL_SECS * 1000)
        .await?;
    store
        .create_web_session(
            &NewWebSession {
                id_hash,
                org_id: auth.org_id,
                user_id: auth.user.id,
                token_id,
                csrf,
                expires_at_ms: now + SESSION_TTL_SECS * 1000,
                idp_token,
            },
            now,
        )
        .await?;
    let via = if token_id.is_some() { "web" } else { "web-sso" };
    tracing::info!(user = %auth.user.email, via, "signed in to the web app");
    crate::audit::by_user(
        st,
        &auth,
        "login",
        "user",
        &auth.user.email,
        serde_json::json!({"via": via, "token_id": token_id}),
    )
    .await;
    let cookie = format!(
        "{COOKIE_NAME}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_TTL_SECS}{}",
        secure_attr(st)
    );
    let mut res = see_other("/tasks");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(res)
}

/// `; Secure` when the server is reached over TLS (its public URL is `https://`).
pub fn secure_attr(st: &AppState) -> &'static str {
    if st.settings.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /sign-out`: ends the session on the server and clears the cookie.
pub async fn sign_out(
    State(st): State<AppState>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    sessions(&st)?
        .revoke_web_session(&user.id_hash, now_ms())
        .await?;
    signed_out(&st, &user).await
}

/// `POST /sign-out-everywhere`: ends every browser session of the user (another
/// computer left signed in), this one included.
pub async fn sign_out_everywhere(
    State(st): State<AppState>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    let ended = sessions(&st)?
        .revoke_user_web_sessions(user.auth.org_id, user.auth.user.id, now_ms())
        .await?;
    tracing::info!(user = %user.email(), sessions = ended, "signed out of every browser session");
    signed_out(&st, &user).await
}

async fn signed_out(st: &AppState, user: &WebUser) -> WebResult<Response> {
    crate::audit::by_user(
        st,
        &user.auth,
        "logout",
        "user",
        user.email(),
        serde_json::json!({"via": "web"}),
    )
    .await;
    let mut res = see_other("/sign-in");
    let cookie = format!(
        "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure_attr(st)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sso_sessions_id_token_goes_with_tasks_until_a_minute_before_it_expires() {
        let exp = 10_000_000;
        assert!(idp_token_usable(exp, exp - IDP_TOKEN_MIN_LEFT_MS));
        assert!(!idp_token_usable(exp, exp - IDP_TOKEN_MIN_LEFT_MS + 1));
        assert!(!idp_token_usable(exp, exp + 1));
        assert!(!idp_token_usable(i64::MIN, i64::MAX), "no overflow");
    }
}
