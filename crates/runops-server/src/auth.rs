//! Bearer-token authentication.
//!
//! A token is looked up by its SHA-256 (the only thing stored) and the hashes are
//! compared again in constant time. The token's *kind* comes from its database row,
//! not from its prefix: user tokens reach only the user API, agent tokens only the
//! agent protocol. Every object a handler touches is then scoped to the token's org.

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

/// Longer "tokens" are rejected before hashing; real ones are under 200 characters.
const MAX_TOKEN_LEN: usize = 1024;

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
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthToken, ApiError> {
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
    Ok(found)
}

/// A caller holding a user token.
pub struct UserAuth {
    pub token: AuthToken,
    pub user: User,
}

impl UserAuth {
    pub fn org_id(&self) -> i64 {
        self.token.org_id
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == "admin"
    }
}

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
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
        Ok(UserAuth { token, user })
    }
}

/// A caller holding an agent token.
pub struct AgentAuth {
    pub token: AuthToken,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = authenticate(parts, state).await?;
        if token.kind != TokenKind::Agent {
            return Err(ApiError::forbidden(
                "a user token cannot call the agent protocol; start the agent with an agent token",
            )
            .hint("create one with `runops agents create-token` and pass it as TOKEN"));
        }
        Ok(AgentAuth { token })
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
