//! Token formats.
//!
//! - API (user) tokens: `rou_<secret>`.
//! - Agent tokens: `roa_<base64url(server URL)>.<secret>`, so that `TOKEN` alone is
//!   enough to start an agent (`docker run --env TOKEN ...`); `API_URL` overrides the URL.
//!
//! `<secret>` is 32 random bytes (256 bits) in unpadded base64url. The server stores
//! only the SHA-256 of the whole token string and compares hashes in constant time.
//! The prefixes make a leaked token recognisable to secret scanners and tell the
//! server which kind it was handed without a database lookup.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const USER_TOKEN_PREFIX: &str = "rou_";
pub const AGENT_TOKEN_PREFIX: &str = "roa_";

/// Number of random bytes in a token's secret part.
pub const TOKEN_SECRET_BYTES: usize = 32;

/// Which side of the API a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    User,
    Agent,
}

/// Tells the kind of a token from its prefix.
pub fn token_kind(token: &str) -> Option<TokenKind> {
    if token.starts_with(USER_TOKEN_PREFIX) {
        Some(TokenKind::User)
    } else if token.starts_with(AGENT_TOKEN_PREFIX) {
        Some(TokenKind::Agent)
    } else {
        None
    }
}

/// Builds a user token from random bytes (the caller provides the randomness).
pub fn format_user_token(secret: &[u8; TOKEN_SECRET_BYTES]) -> String {
    format!("{USER_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// Builds an agent token that carries `server_url`.
pub fn format_agent_token(server_url: &str, secret: &[u8; TOKEN_SECRET_BYTES]) -> String {
    format!(
        "{AGENT_TOKEN_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(server_url.trim_end_matches('/')),
        URL_SAFE_NO_PAD.encode(secret)
    )
}

/// Reads the server URL out of an agent token.
pub fn agent_token_server_url(token: &str) -> Result<String, String> {
    let rest = token.strip_prefix(AGENT_TOKEN_PREFIX).ok_or_else(|| {
        format!("this is not an agent token (agent tokens start with `{AGENT_TOKEN_PREFIX}`); create one with `runops agents create-token`")
    })?;
    let (url_part, secret) = rest
        .split_once('.')
        .ok_or("the agent token is truncated: it has no `.` between the server URL and the secret; copy the whole token again")?;
    if secret.is_empty() {
        return Err("the agent token is truncated: its secret part is empty".into());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(url_part)
        .map_err(|_| "the agent token is damaged: its server URL part is not valid base64url")?;
    String::from_utf8(bytes)
        .map_err(|_| "the agent token is damaged: its server URL is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_token_carries_the_server_url() {
        let t = format_agent_token("http://127.0.0.1:8080/", &[7u8; 32]);
        assert!(t.starts_with(AGENT_TOKEN_PREFIX));
        assert_eq!(token_kind(&t), Some(TokenKind::Agent));
        assert_eq!(agent_token_server_url(&t).unwrap(), "http://127.0.0.1:8080");
    }

    #[test]
    fn user_token_is_not_an_agent_token() {
        let t = format_user_token(&[1u8; 32]);
        assert_eq!(token_kind(&t), Some(TokenKind::User));
        assert!(
            agent_token_server_url(&t)
                .unwrap_err()
                .contains("not an agent token")
        );
        assert!(
            agent_token_server_url("roa_abc")
                .unwrap_err()
                .contains("truncated")
        );
    }
}
