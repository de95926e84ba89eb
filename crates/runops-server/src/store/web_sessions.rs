//! Storage of the web app's browser sessions (see [`crate::http::web`]): a separate
//! small trait, reached through [`super::Store::web_sessions`], so a store that does
//! not implement it yet still builds (its web app then refuses to sign in, saying so).
//!
//! Only the SHA-256 of a session's cookie secret is stored. A session belongs to the API
//! token it was opened with: a revoked token ends its sessions at their next request. A
//! session opened through the identity provider keeps its ID token sealed
//! ([`SealedIdpToken`]) until it ends.

use async_trait::async_trait;
use runops_proto::api::User;

use super::StoreResult;

/// A session to open; the caller checked the API token.
#[derive(Debug, Clone)]
pub struct NewWebSession {
    pub id_hash: [u8; 32],
    pub org_id: i64,
    pub user_id: i64,
    /// The API token signed in with; `None` for a sign-in through the identity provider.
    pub token_id: Option<i64>,
    pub csrf: String,
    pub expires_at_ms: i64,
    /// The ID token of a sign-in through the identity provider, sealed.
    pub idp_token: Option<SealedIdpToken>,
}

/// The identity provider's ID token of an SSO session, sealed with the server key and
/// bound to the session (`ConfigSealer::seal_session_token`): tasks created from the
/// session carry it to the agent, as tasks created with the CLI carry the user's JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIdpToken {
    pub sealed: Vec<u8>,
    /// The token's `exp`, in ms since the epoch.
    pub expires_at_ms: i64,
}

impl SealedIdpToken {
    /// The token kept in a session row's two columns (both set, or none).
    pub fn from_columns(sealed: Option<Vec<u8>>, expires_at_ms: Option<i64>) -> Option<Self> {
        Some(SealedIdpToken {
            sealed: sealed?,
            expires_at_ms: expires_at_ms?,
        })
    }
}

/// A stored session with its user, as a request sees it.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub org_id: i64,
    pub user: User,
    /// The API token signed in with; `None` for a sign-in through the identity provider.
    pub token_id: Option<i64>,
    /// The API token it was opened with was revoked.
    pub token_revoked: bool,
    /// Signed out (or revoked by "sign out everywhere").
    pub revoked: bool,
    pub csrf: String,
    pub expires_at_ms: i64,
    /// The ID token of a sign-in through the identity provider, sealed.
    pub idp_token: Option<SealedIdpToken>,
}

#[async_trait]
pub trait WebSessionStore: Send + Sync {
    async fn create_web_session(&self, s: &NewWebSession, now_ms: i64) -> StoreResult<()>;
    /// The session whose cookie secret hashes to `id_hash`, revoked or not.
    async fn find_web_session(&self, id_hash: &[u8; 32]) -> StoreResult<Option<WebSession>>;
    /// Ends one session (dropping its identity token); false when there is no such live
    /// session.
    async fn revoke_web_session(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<bool>;
    /// Ends every live session of a user (dropping their identity tokens); returns how
    /// many.
    async fn revoke_user_web_sessions(
        &self,
        org_id: i64,
        user_id: i64,
        now_ms: i64,
    ) -> StoreResult<u64>;
    /// Deletes sessions that expired or were revoked before `before_ms`.
    async fn purge_web_sessions(&self, before_ms: i64) -> StoreResult<u64>;
}
