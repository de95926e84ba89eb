//! Bearer-token authentication.
//!
//! A token is looked up by its SHA-256 (the only thing stored) and the hashes are
//! compared again in constant time. The token's *kind* comes from its database row,
//! not from its prefix: user tokens reach only the user API, agent tokens only the
//! agent protocol. Every object a handler touches is then scoped to the token's org.
//! A bearer shaped like a JWT is an identity-provider token instead: it is verified
//! against the provider's keys (see [`crate::identity`]) and reaches the user API only.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use runops_proto::api::User;
use runops_proto::token::{TOKEN_SECRET_BYTES, TokenKind};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, LOGIN_HINT};
use crate::http::AppState;
use crate::store::AuthToken;

/// Longer bearers are rejected before any work: API tokens are under 200 characters,
/// identity-provider JWTs a few KiB.
const MAX_TOKEN_LEN: usize = runops_jwt::MAX_TOKEN_LEN;

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 256 random bits for a new token.
pub fn random_secret() -> anyhow::Result<[u8; TOKEN_SECRET_BYTES]> {
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes from the OS: {e}"))?;
    Ok(secret)
}

/// A random id (sessions), 128 bits in hex.
pub fn random_id() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("cannot read random bytes: {e}"))?;
    Ok(hex::encode(b))
}

/// The bearer of a request, checked for presence and size only.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing API token (no Authorization header)"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        }
    };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::unauthorized("invalid API token"));
    }
    Ok(token)
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthToken, ApiError> {
    check_token(state, bearer(parts)?).await
}

/// The stored token `token` resolves to, refused when unknown or revoked (any kind; the
/// caller checks the kind). Shared by bearer authentication and the web app's sign-in.
pub async fn check_token(state: &AppState, token: &str) -> Result<AuthToken, ApiError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::unauthorized("invalid API token"));
    }
    let hash = hash_token(token);
    let found = state.store.find_token(&hash).await?;
    let Some(found) = found else {
        return Err(ApiError::unauthorized("invalid API token"));
    };
    if !bool::from(found.hash.ct_eq(&hash)) {
        return Err(ApiError::unauthorized("invalid API token"));
    }
    if found.revoked {
        return Err(ApiError::unauthorized("this token was revoked"));
    }
    note_first_admin_use(state, found.id).await;
    Ok(found)
}

/// Records the first use of the first admin's token (one atomic load per request
/// otherwise).
async fn note_first_admin_use(state: &AppState, token_id: i64) {
    use std::sync::atomic::Ordering;
    let unused = &state.unused_first_admin_token;
    if unused.load(Ordering::Relaxed) == token_id
        && unused
            .compare_exchange(token_id, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        && let Err(e) = state.store.mark_token_used(token_id, crate::now_ms()).await
    {
        tracing::warn!(error = %e, "cannot record the first use of the admin token");
    }
}

/// How a user proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API token (`rou_...`), by its id.
    ApiToken { id: i64 },
    /// An identity-provider JWT (kept for the tasks this request creates; never stored).
    IdentityToken(String),
    /// A web app session opened through the identity provider (SSO) whose ID token has
    /// expired (while it is valid, the session's requests carry it as `IdentityToken`).
    Sso,
    /// A Slack user (by Slack id) mapped to this user by the e-mail Slack verified.
    Slack { user_id: String },
}

/// A user caller: an API token or an identity-provider token.
pub struct UserAuth {
    pub org_id: i64,
    pub user: User,
    pub via: Credential,
    /// The TCP peer's IP, for the audit log.
    pub remote_addr: Option<String>,
}

impl UserAuth {
    pub fn org_id(&self) -> i64 {
        self.org_id
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == runops_proto::Role::Admin.as_str()
    }

    /// `403` unless the caller is an admin; `what` completes "only admins can ...".
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            return Ok(());
        }
        Err(ApiError::forbidden(format!("only admins can {what}"))
            .hint("ask an admin of your organisation"))
    }

    /// The id of the API token used, if one was.
    pub fn token_id(&self) -> Option<i64> {
        match self.via {
            Credential::ApiToken { id } => Some(id),
            Credential::IdentityToken(_) | Credential::Sso | Credential::Slack { .. } => None,
        }
    }
}

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = bearer(parts)?;
        if runops_jwt::looks_like_jwt(bearer) {
            let peer = crate::audit::peer_ip(parts);
            return crate::identity::authenticate_jwt(state, bearer, peer).await;
        }
        let token = authenticate(parts, state).await?;
        if token.kind != TokenKind::User {
            return Err(ApiError::forbidden(
                "an agent token can only call the agent protocol (/v1/agent/*); this route needs a user token",
            )
            .hint(LOGIN_HINT));
        }
        let user = token
            .user
            .clone()
            .ok_or_else(|| ApiError::unauthorized("this token belongs to no user"))?;
        Ok(UserAuth {
            org_id: token.org_id,
            user,
            via: Credential::ApiToken { id: token.id },
            remote_addr: crate::audit::peer_ip(parts),
        })
    }
}

/// A caller holding an agent token.
pub struct AgentAuth {
    pub token: AuthToken,
    /// The TCP peer's IP, for the audit log.
    pub remote_addr: Option<String>,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if runops_jwt::looks_like_jwt(bearer(parts)?) {
            return Err(ApiError::forbidden(
                "an identity-provider token cannot call the agent protocol; start the agent with an agent token",
            )
            .hint("create one with `runops agents create-token` and pass it as TOKEN"));
        }
        let token = authenticate(parts, state).await?;
        if token.kind != TokenKind::Agent {
            return Err(ApiError::forbidden(
                "a user token cannot call the agent protocol; start the agent with an agent token",
            )
            .hint("create one with `runops agents create-token` and pass it as TOKEN"));
        }
        Ok(AgentAuth {
            token,
            remote_addr: crate::audit::peer_ip(parts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(hash_token("a"), hash_token("a"));
        assert_ne!(hash_token("a"), hash_token("b"));
        let s1 = random_secret().unwrap();
        let s2 = random_secret().unwrap();
        assert_ne!(s1, s2);
        assert_eq!(random_id().unwrap().len(), 32);
    }
}
