//! "Sign in with SSO": OpenID Connect authorization code flow with PKCE against the
//! identity provider of `--auth-jwk-url` (`--oidc-issuer`, `--oidc-client-id`).
//!
//! `GET /sign-in/sso` reads the issuer's discovery document and sends the browser to its
//! authorization endpoint with a fresh `state`, `nonce` and PKCE challenge (S256); the
//! three are kept for the round trip in a short-lived `HttpOnly` cookie, never on the
//! server. `GET /sign-in/sso/callback` checks `state`, exchanges the code (with the
//! verifier) at the token endpoint, and checks the ID token exactly as an API request
//! with a JWT is checked ([`crate::identity::authenticate_jwt`]: keys, issuer, audience,
//! user mapping), plus its `nonce`. Then it opens a session like a token sign-in does,
//! keeping the ID token sealed with it for the tasks it creates (see [`super::session`]).

use axum::extract::{Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::session::{SignedInWith, open_session};
use super::{WebError, WebQuery, WebResult, see_other};
use crate::error::ApiError;
use crate::http::AppState;
use crate::identity::OidcClient;

/// The cookie that carries `state`, `nonce` and the PKCE verifier through the round trip.
const FLOW_COOKIE: &str = "runops_sso";

/// Time a user has at the identity provider before the round trip is refused.
const FLOW_TTL_SECS: u64 = 600;

/// Discovery and token requests give up after this long.
const IDP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The configured client, or a page saying SSO is not set up.
pub fn client(st: &AppState) -> Option<&OidcClient> {
    st.identity.as_ref().and_then(|i| i.oidc.as_ref())
}

#[derive(Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

fn idp_error(what: &str, e: impl std::fmt::Display) -> WebError {
    tracing::warn!(error = %e, "SSO: {what}");
    WebError::Api(
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the identity provider failed: {what}: {e}"),
        )
        .hint("try again; if it persists, an admin checks --oidc-issuer and the provider's logs"),
    )
}

async fn discover(oidc: &OidcClient) -> WebResult<Discovery> {
    let url = format!("{}/.well-known/openid-configuration", oidc.issuer);
    let http = reqwest::Client::builder()
        .timeout(IDP_TIMEOUT)
        .build()
        .map_err(|e| idp_error("cannot make an HTTP client", e))?;
    let res = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| idp_error("cannot read its discovery document", e))?;
    res.json::<Discovery>()
        .await
        .map_err(|e| idp_error("its discovery document is not usable", e))
}

fn random_b64(bytes: usize) -> WebResult<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| {
        tracing::error!(error = %e, "cannot read random bytes");
        WebError::Api(ApiError::internal())
    })?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn redirect_uri(st: &AppState) -> String {
    format!("{}/sign-in/sso/callback", st.settings.public_url)
}

fn not_configured() -> WebError {
    WebError::Api(
        ApiError::not_found("sign-in with SSO is not set up on this server")
            .hint("sign in with an API token; an admin enables SSO with --oidc-issuer and --oidc-client-id"),
    )
}

/// `GET /sign-in/sso`: off to the identity provider.
pub async fn start(State(st): State<AppState>) -> WebResult<Response> {
    let oidc = client(&st).ok_or_else(not_configured)?;
    let d = discover(oidc).await?;
    let state = random_b64(24)?;
    let nonce = random_b64(24)?;
    let verifier = random_b64(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", oidc.client_id.as_str()),
        ("redirect_uri", redirect_uri(&st).as_str()),
        ("scope", "openid email profile"),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| idp_error("cannot build the authorization request", e))?;
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut res = see_other(&format!("{}{sep}{query}", d.authorization_endpoint));
    let cookie = format!(
        "{FLOW_COOKIE}={state}.{nonce}.{verifier}; Path=/sign-in/sso; HttpOnly; SameSite=Lax; Max-Age={FLOW_TTL_SECS}{}",
        super::session::secure_attr(&st)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(res)
}

#[derive(Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: String,
}

fn refused(msg: impl Into<String>) -> WebError {
    WebError::Api(
        ApiError::unauthorized(msg).hint("start again from the sign-in page (Sign in with SSO)"),
    )
}

/// The `nonce` claim of a JWT whose signature was already checked.
fn nonce_of(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["nonce"].as_str().map(str::to_string)
}

/// `GET /sign-in/sso/callback?code=&state=`: back from the identity provider.
pub async fn callback(
    State(st): State<AppState>,
    WebQuery(q): WebQuery<Callback>,
    req: Request,
) -> WebResult<Response> {
    let oidc = client(&st).ok_or_else(not_configured)?;
    if let Some(e) = q.error {
        return Err(refused(format!(
            "the identity provider refused the sign-in: {e}{}",
            q.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )));
    }
    let (head, _) = req.into_parts();
    let flow = head
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == FLOW_COOKIE)
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| refused("the sign-in took too long or did not start here"))?;
    let mut parts = flow.splitn(3, '.');
    let (Some(state), Some(nonce), Some(verifier)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(refused("the sign-in cookie is malformed"));
    };
    if q.state.as_deref() != Some(state) {
        return Err(refused(
            "the answer of the identity provider does not belong to this sign-in (state differs)",
        ));
    }
    let code = q
        .code
        .ok_or_else(|| refused("the identity provider sent no authorization code"))?;
    let d = discover(oidc).await?;
    let body = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri(&st).as_str()),
        ("client_id", oidc.client_id.as_str()),
        ("code_verifier", verifier),
    ])
    .map_err(|e| idp_error("cannot build the token request", e))?;
    let http = reqwest::Client::builder()
        .timeout(IDP_TIMEOUT)
        .build()
        .map_err(|e| idp_error("cannot make an HTTP client", e))?;
    let res = http
        .post(&d.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| idp_error("cannot reach its token endpoint", e))?;
    if !res.status().is_success() {
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        return Err(idp_error(
            "its token endpoint refused the code",
            format!("{status}: {}", crate::error::echo(&text)),
        ));
    }
    let answer: TokenAnswer = res
        .json()
        .await
        .map_err(|e| idp_error("its token answer has no ID token", e))?;
    let remote_addr = crate::audit::peer_ip(&head);
    let auth = crate::identity::authenticate_jwt(&st, &answer.id_token, remote_addr).await?;
    if nonce_of(&answer.id_token).as_deref() != Some(nonce) {
        return Err(refused(
            "the ID token does not belong to this sign-in (nonce differs)",
        ));
    }
    // The session keeps the ID token (sealed, server-side) for the tasks it creates.
    let mut res = open_session(
        &st,
        auth,
        SignedInWith::IdentityProvider {
            id_token: &answer.id_token,
        },
    )
    .await?;
    // The round trip is over: its cookie goes.
    let gone = format!("{FLOW_COOKIE}=; Path=/sign-in/sso; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        res.headers_mut().append(SET_COOKIE, v);
    }
    Ok(res.into_response())
}
