//! Identity-provider login (`--auth-jwk-url`) and the hand-off of a task's creator JWT
//! to the agent.
//!
//! A bearer that has the shape of a JWT (three base64url parts) is verified against the
//! provider's JWKS (RS256/ES256 only, `exp`/`nbf`, optional issuer and audience, see
//! `runops_jwt`) instead of being looked up as an API token. Its e-mail claim names the
//! user: found in the identity org, or created on first sight with the groups of the
//! groups claim (or refused, with `--auth-unknown-users reject`). Later logins refresh
//! the groups from the claim: the identity provider is the source of truth.
//!
//! A task created with such a token carries it to the agent in its offer, so that an
//! agent with `JWK_URL` can check who asked. The token is held in memory only
//! ([`HeldTokens`]), never in the database: the task row records only *that* it was
//! created with one. After a restart that memory is gone, and such a task fails
//! `unauthenticated` when it is dispatched ([`LOST_TOKEN_MESSAGE`]) instead of reaching
//! an agent without its token.
//!
//! A JWT bound to a key (`cnf.jkt`, RFC 9449) creates its task in status `created`: it
//! waits there (at most [`PROOF_WAIT`]) for the creator's proof, a JWS signed with that
//! key over the task (`POST /v1/tasks/{id}/proof`, see `runops_jwt::proof`). The proof is
//! checked here, held in memory next to the token, never stored, and goes to the agent
//! with the offer; the agent checks it again on its own.

use crate::auth::{Credential, UserAuth};
use crate::error::ApiError;
use crate::http::AppState;
use crate::sealed::ConfigSealer;
use crate::store::held::{HeldRow, HeldTokenStore};
use crate::store::{ClaimedTask, NewUser, StoreError};
use crate::{now_ms, validate};
use runops_jwt::{JwksVerifier, VerifierConfig};
use runops_proto::FailureReason;
use runops_proto::agent::TaskOffer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// The failure message of a task whose creator's token is no longer in memory.
pub const LOST_TOKEN_MESSAGE: &str = "the identity token of this task was lost when the control plane restarted; create the task again";

/// Claim holding the user's e-mail unless `--auth-email-claim` says otherwise.
pub const DEFAULT_EMAIL_CLAIM: &str = "email";

/// Claim holding the user's groups unless `--auth-groups-claim` says otherwise.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// Most tokens held for tasks that were not started yet: bounds memory (a token is at
/// most 16 KiB) whatever users do; beyond, creating a task with a token answers 503.
pub const MAX_HELD_TOKENS: usize = 10_000;

/// A dispatch that finds a task created with a token but no token in memory waits this
/// long for it: the creating request registers the token right after inserting the
/// task, and a poll may claim the task in between.
const TOKEN_HANDOFF_WAIT: Duration = Duration::from_secs(2);

/// How long a task created with a key-bound JWT (`cnf.jkt`) waits in `created` for its
/// creator's proof. The CLI sends it right after creating the task; two minutes cover a
/// slow network or machine without leaving unproven tasks around.
pub const PROOF_WAIT: Duration = Duration::from_secs(120);

/// The failure message of a task whose proof did not come within [`PROOF_WAIT`].
pub fn proof_missing_message() -> String {
    format!(
        "the identity token this task was created with is bound to a key (`cnf.jkt`), and no proof signed with that key arrived within {} s; nothing ran. create the task with the runops CLI holding that key (`runops login --dpop-key FILE`, or RUNOPS_DPOP_KEY)",
        PROOF_WAIT.as_secs()
    )
}

/// A held token is dropped this long after it expires (its task could not pass an
/// agent's check any more anyway).
const HELD_TOKEN_GRACE_MS: i64 = 5 * 60 * 1000;

/// What happens to a valid token naming an e-mail that is no user of the org.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownUsers {
    /// Create the user (role `user`, groups from the claim).
    #[default]
    Create,
    /// Refuse the login: an admin creates users with `runops users create`.
    Reject,
}

/// `runops server --auth-*`: identity-provider login.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// JWKS URL of an identity provider: users may call the API with its JWTs (RS256/ES256) instead of API tokens
    #[arg(long, env = "RUNOPS_AUTH_JWK_URL")]
    pub auth_jwk_url: Option<String>,
    /// With --auth-jwk-url: the `iss` claim tokens must have
    #[arg(long, env = "RUNOPS_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// With --auth-jwk-url: the audience (`aud`) tokens must be meant for
    #[arg(long, env = "RUNOPS_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// With --auth-jwk-url: the claim holding the user's e-mail (default `email`)
    #[arg(long, env = "RUNOPS_AUTH_EMAIL_CLAIM")]
    pub auth_email_claim: Option<String>,
    /// With --auth-jwk-url: the claim holding the user's groups, a list or a comma-separated string (default `groups`)
    #[arg(long, env = "RUNOPS_AUTH_GROUPS_CLAIM")]
    pub auth_groups_claim: Option<String>,
    /// With --auth-jwk-url: create users on first sight, or reject tokens of unknown users
    #[arg(long, env = "RUNOPS_AUTH_UNKNOWN_USERS", value_enum, default_value_t)]
    pub auth_unknown_users: UnknownUsers,
    /// With --auth-jwk-url: the organisation its users belong to (default: the first one)
    #[arg(long, env = "RUNOPS_AUTH_ORG")]
    pub auth_org: Option<String>,
    /// With --auth-jwk-url: the OpenID Connect issuer whose discovery document the web app's "Sign in with SSO" uses (authorization code + PKCE)
    #[arg(long, env = "RUNOPS_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// With --oidc-issuer: the web app's client id at the identity provider (a public client; its ID tokens must pass --auth-audience)
    #[arg(long, env = "RUNOPS_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
}

/// The web app's OpenID Connect client (`--oidc-issuer`, `--oidc-client-id`).
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub issuer: String,
    pub client_id: String,
}

/// The configured identity provider.
pub struct IdentityProvider {
    /// "Sign in with SSO" in the web app, when configured.
    pub oidc: Option<OidcClient>,
    verifier: JwksVerifier,
    email_claim: String,
    groups_claim: String,
    unknown_users: UnknownUsers,
    org_id: i64,
}

fn clean(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl IdentityProvider {
    /// `None` when `--auth-jwk-url` is not set. `default_org_id` is the org its users
    /// join unless `--auth-org` names another.
    pub async fn from_args(
        args: &AuthArgs,
        store: &dyn crate::store::Store,
        default_org_id: Option<i64>,
    ) -> anyhow::Result<Option<IdentityProvider>> {
        let oidc = match (clean(&args.oidc_issuer), clean(&args.oidc_client_id)) {
            (Some(issuer), Some(client_id)) => Some(OidcClient {
                issuer: issuer.trim_end_matches('/').to_string(),
                client_id,
            }),
            (None, None) => None,
            _ => anyhow::bail!("--oidc-issuer and --oidc-client-id go together"),
        };
        let Some(jwks_url) = clean(&args.auth_jwk_url) else {
            if oidc.is_some() {
                anyhow::bail!(
                    "--oidc-issuer needs --auth-jwk-url (the identity provider's JWKS URL, which checks its ID tokens)"
                );
            }
            if clean(&args.auth_issuer).is_some() || clean(&args.auth_audience).is_some() {
                anyhow::bail!(
                    "--auth-issuer / --auth-audience need --auth-jwk-url (the identity provider's JWKS URL)"
                );
            }
            return Ok(None);
        };
        let verifier = JwksVerifier::new(VerifierConfig {
            jwks_url,
            issuer: clean(&args.auth_issuer),
            audience: clean(&args.auth_audience),
        })
        .map_err(|e| anyhow::anyhow!("--auth-jwk-url: {e}"))?;
        let org_id = match clean(&args.auth_org) {
            Some(name) => store.find_org_id(&name).await?.ok_or_else(|| {
                anyhow::anyhow!("--auth-org names organisation `{name}`, which does not exist")
            })?,
            None => default_org_id.ok_or_else(|| {
                anyhow::anyhow!("there is no organisation for identity-provider users")
            })?,
        };
        Ok(Some(IdentityProvider {
            oidc,
            verifier,
            email_claim: clean(&args.auth_email_claim)
                .unwrap_or_else(|| DEFAULT_EMAIL_CLAIM.to_string()),
            groups_claim: clean(&args.auth_groups_claim)
                .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_string()),
            unknown_users: args.auth_unknown_users,
            org_id,
        }))
    }
}

/// Authenticates a bearer that looks like a JWT.
/// `remote_addr`: the peer's IP, recorded in the audit log when the user is created.
pub async fn authenticate_jwt(
    st: &AppState,
    token: &str,
    remote_addr: Option<String>,
) -> Result<UserAuth, ApiError> {
    let Some(idp) = &st.identity else {
        return Err(ApiError::unauthorized(
            "this server does not accept identity-provider tokens (JWTs); use an API token",
        )
        .hint("an admin can enable them with `runops server --auth-jwk-url URL`"));
    };
    let verified = idp.verifier.verify(token).await.map_err(|e| {
        tracing::info!(refusal = e.kind(), "identity token refused");
        ApiError::unauthorized(format!("the identity token was refused: {e}")).hint(
            "sign in to your identity provider again and pass the new token (`runops login --url URL --token JWT`)",
        )
    })?;
    // A binding this server cannot check would make the token a plain bearer token.
    verified.confirmation_jkt().map_err(|e| {
        ApiError::unauthorized(format!("the identity token was refused: {e}"))
            .hint("ask your identity provider for a token bound with DPoP (`cnf.jkt`) or not bound at all")
    })?;
    let claim = &idp.email_claim;
    let email = verified.string_claim(claim).ok_or_else(|| {
        ApiError::unauthorized(format!(
            "the identity token has no `{claim}` claim naming its user"
        ))
        .hint("an admin can name the claim holding e-mails with --auth-email-claim")
    })?;
    let email = email.to_string();
    let groups = verified
        .claims
        .contains_key(&idp.groups_claim)
        .then(|| verified.list_claim(&idp.groups_claim));
    let user = match st.store.find_user_by_email(idp.org_id, &email).await? {
        Some(user) => match groups {
            Some(groups) if groups != user.groups => {
                st.store.set_user_groups(user.id, &groups).await?;
                runops_proto::api::User { groups, ..user }
            }
            _ => user,
        },
        None if idp.unknown_users == UnknownUsers::Reject => {
            return Err(ApiError::unauthorized(format!(
                "`{email}` signed in with the identity provider but is not a user of this organisation"
            ))
            .hint("ask an admin to create the user with `runops users create`"));
        }
        None => {
            let name = verified
                .string_claim("name")
                .unwrap_or_else(|| email.split('@').next().unwrap_or(&email))
                .to_string();
            let role = validate::user_fields(&name, &email, runops_proto::Role::User.as_str())?;
            let new = NewUser {
                name,
                email: email.clone(),
                groups: groups.unwrap_or_default(),
                role,
            };
            match st.store.create_user(idp.org_id, &new, now_ms()).await {
                Ok(user) => {
                    tracing::info!(user = %user.email, "user created on first sign-in with the identity provider");
                    let actor = crate::audit::Actor {
                        email: Some(user.email.clone()),
                        kind: "user",
                        remote_addr: remote_addr.clone(),
                    };
                    let detail = serde_json::json!({"via": "identity-provider", "role": user.role, "groups": user.groups});
                    crate::audit::record(
                        st,
                        idp.org_id,
                        &actor,
                        "user.create",
                        "user",
                        &user.email,
                        detail,
                    )
                    .await;
                    user
                }
                // Two first requests at once: the other one created it.
                Err(StoreError::Conflict(_)) => st
                    .store
                    .find_user_by_email(idp.org_id, &email)
                    .await?
                    .ok_or_else(ApiError::internal)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(UserAuth {
        org_id: idp.org_id,
        user,
        via: Credential::IdentityToken(token.to_string()),
        remote_addr,
    })
}

/// Creator tokens of tasks not started yet, by task id: in memory for one process, or
/// sealed with the server key in the database that replicas share ([`HeldTokens::share`]).
#[derive(Default)]
pub struct HeldTokens {
    tokens: Mutex<HashMap<i64, Held>>,
    /// Wakes a dispatch waiting for a token being registered.
    registered: Notify,
    /// The shared store and the key tokens are sealed with (PostgreSQL).
    shared: std::sync::OnceLock<Shared>,
}

struct Shared {
    store: Arc<dyn HeldTokenStore>,
    sealer: Arc<ConfigSealer>,
}

/// How often a dispatch waiting for a token held by another replica looks again.
const SHARED_HANDOFF_POLL: Duration = Duration::from_millis(50);

struct Held {
    token: String,
    /// Dropped after this (ms since the epoch).
    drop_after_ms: i64,
    /// The creator's proof, for a token bound to a key.
    proof: Option<String>,
    /// `(org id, deadline in ms)` while the task waits in `created` for its proof.
    awaiting_proof: Option<(i64, i64)>,
}

/// A failure of the shared store: logged, and the token counts as not held (a task
/// never reaches an agent without its token; it fails `unauthenticated` instead).
fn shared_failed(what: &str, e: impl std::fmt::Display) {
    tracing::warn!(error = %e, "held identity tokens: cannot {what} in the database");
}

impl HeldTokens {
    /// From now on tokens are held in `store`, sealed with `sealer` (every replica of
    /// one database sees them).
    pub fn share(&self, store: Arc<dyn HeldTokenStore>, sealer: Arc<ConfigSealer>) {
        let _ = self.shared.set(Shared { store, sealer });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Held>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when another token can be held (checked before creating a task).
    pub async fn has_room(&self) -> bool {
        let now = now_ms();
        if let Some(sh) = self.shared.get() {
            return match sh.store.held_count(now).await {
                Ok(n) => n < MAX_HELD_TOKENS as u64,
                Err(e) => {
                    shared_failed("count tokens", e);
                    false
                }
            };
        }
        let mut held = self.lock();
        held.retain(|_, h| h.drop_after_ms > now);
        held.len() < MAX_HELD_TOKENS
    }

    /// Holds `token` for `task_id` until the task starts (or the token expires).
    pub async fn hold(&self, task_id: i64, token: &str, expires_at_ms: Option<i64>) {
        self.insert(task_id, token, expires_at_ms, None).await;
    }

    /// Holds `token` with the creator's already checked `proof` for `task_id` (an
    /// approved task run with a key-bound token, see `http::reviews::run`).
    pub async fn hold_proven(
        &self,
        task_id: i64,
        token: &str,
        expires_at_ms: Option<i64>,
        proof: &str,
    ) {
        self.insert(task_id, token, expires_at_ms, Some(proof))
            .await;
    }

    async fn insert(
        &self,
        task_id: i64,
        token: &str,
        expires_at_ms: Option<i64>,
        proof: Option<&str>,
    ) {
        let drop_after_ms = expires_at_ms
            .unwrap_or_else(now_ms)
            .saturating_add(HELD_TOKEN_GRACE_MS);
        if let Some(sh) = self.shared.get() {
            let sealed = sh.sealer.seal_held(task_id, "token", token);
            let proof_sealed = proof
                .map(|p| sh.sealer.seal_held(task_id, "proof", p))
                .transpose();
            match (sealed, proof_sealed) {
                (Ok(sealed), Ok(proof_sealed)) => {
                    let row = HeldRow {
                        task_id,
                        sealed,
                        proof_sealed,
                        drop_after_ms,
                        awaiting_proof: None,
                    };
                    if let Err(e) = sh.store.hold_token(&row).await {
                        shared_failed("hold a token", e);
                    }
                }
                (Err(e), _) | (_, Err(e)) => shared_failed("seal a token", e),
            }
        } else {
            self.lock().insert(
                task_id,
                Held {
                    token: token.to_string(),
                    drop_after_ms,
                    proof: proof.map(str::to_string),
                    awaiting_proof: None,
                },
            );
        }
        self.registered.notify_waiters();
    }

    async fn get(&self, task_id: i64) -> Option<(String, Option<String>)> {
        let Some(sh) = self.shared.get() else {
            return self
                .lock()
                .get(&task_id)
                .map(|h| (h.token.clone(), h.proof.clone()));
        };
        let (sealed, proof) = match sh.store.held_token(task_id).await {
            Ok(row) => row?,
            Err(e) => {
                shared_failed("read a token", e);
                return None;
            }
        };
        let opened = sh
            .sealer
            .open_held(task_id, "token", &sealed)
            .and_then(|t| {
                let p = proof
                    .map(|p| sh.sealer.open_held(task_id, "proof", &p))
                    .transpose()?;
                Ok((t, p))
            });
        match opened {
            Ok(pair) => Some(pair),
            Err(e) => {
                shared_failed("open a token", e);
                None
            }
        }
    }

    /// The token held for `task_id`.
    pub async fn token(&self, task_id: i64) -> Option<String> {
        self.get(task_id).await.map(|(t, _)| t)
    }

    /// The task of a held token waits for its creator's proof until `due_ms`.
    pub async fn await_proof(&self, task_id: i64, org_id: i64, due_ms: i64) {
        if let Some(sh) = self.shared.get() {
            if let Err(e) = sh.store.await_held_proof(task_id, org_id, due_ms).await {
                shared_failed("record a proof wait", e);
            }
            return;
        }
        if let Some(h) = self.lock().get_mut(&task_id) {
            h.awaiting_proof = Some((org_id, due_ms));
        }
    }

    /// Holds the creator's proof next to the token; false when the task no longer
    /// waits for one (its wait ran out, or it was killed).
    pub async fn set_proof(&self, task_id: i64, proof: &str) -> bool {
        if let Some(sh) = self.shared.get() {
            let sealed = match sh.sealer.seal_held(task_id, "proof", proof) {
                Ok(s) => s,
                Err(e) => {
                    shared_failed("seal a proof", e);
                    return false;
                }
            };
            return match sh.store.set_held_proof(task_id, &sealed).await {
                Ok(set) => set,
                Err(e) => {
                    shared_failed("hold a proof", e);
                    false
                }
            };
        }
        match self.lock().get_mut(&task_id) {
            Some(h) if h.awaiting_proof.is_some() => {
                h.awaiting_proof = None;
                h.proof = Some(proof.to_string());
                true
            }
            _ => false,
        }
    }

    /// Tasks whose proof did not come by `now_ms`, as `(org id, task id)`; their
    /// tokens are dropped (the caller fails the tasks).
    pub async fn overdue_proofs(&self, now_ms: i64) -> Vec<(i64, i64)> {
        if let Some(sh) = self.shared.get() {
            return sh
                .store
                .take_overdue_proofs(now_ms)
                .await
                .unwrap_or_else(|e| {
                    shared_failed("find overdue proofs", e);
                    Vec::new()
                });
        }
        let mut held = self.lock();
        let overdue: Vec<(i64, i64)> = held
            .iter()
            .filter_map(|(id, h)| match h.awaiting_proof {
                Some((org, due)) if due <= now_ms => Some((org, *id)),
                _ => None,
            })
            .collect();
        for (_, id) in &overdue {
            held.remove(id);
        }
        overdue
    }

    /// The task started (or ended): its token is not needed any more.
    pub async fn release(&self, task_id: i64) {
        if let Some(sh) = self.shared.get() {
            if let Err(e) = sh.store.release_token(task_id).await {
                shared_failed("drop a token", e);
            }
            return;
        }
        self.lock().remove(&task_id);
    }

    /// How many tokens this process holds in memory (tests, metrics; 0 when they are
    /// in the shared database).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token of `task_id`, waiting up to [`TOKEN_HANDOFF_WAIT`] for it to be
    /// registered by the request that created the task (on any replica).
    async fn wait_for(&self, task_id: i64) -> Option<(String, Option<String>)> {
        let deadline = tokio::time::Instant::now() + TOKEN_HANDOFF_WAIT;
        loop {
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            if let Some(t) = self.get(task_id).await {
                return Some(t);
            }
            // Another replica's registration fires no local wake-up: look again soon.
            let wait = match self.shared.get() {
                Some(_) => deadline.min(tokio::time::Instant::now() + SHARED_HANDOFF_POLL),
                None => deadline,
            };
            let _ = tokio::time::timeout_at(wait, registered).await;
            if tokio::time::Instant::now() >= deadline {
                return self.get(task_id).await;
            }
        }
    }
}

/// Puts the creator's token into each offer of a task created with one, and returns the
/// offers. A task whose token is gone (the server restarted since it was created) is
/// failed `unauthenticated` and taken out of the offers: it must never reach an agent
/// without the token it was created with.
pub async fn attach_tokens(
    st: &AppState,
    org_id: i64,
    claimed: Vec<ClaimedTask>,
) -> Result<Vec<TaskOffer>, ApiError> {
    let needing: Vec<i64> = claimed
        .iter()
        .filter(|c| c.created_with_jwt)
        .map(|c| c.offer.task_id)
        .collect();
    let mut offers: Vec<TaskOffer> = claimed.into_iter().map(|c| c.offer).collect();
    if needing.is_empty() {
        return Ok(offers);
    }
    let mut lost = Vec::new();
    for offer in offers.iter_mut() {
        if !needing.contains(&offer.task_id) {
            continue;
        }
        match st.jwts.wait_for(offer.task_id).await {
            Some((token, proof)) => {
                offer.user_jwt = Some(token);
                offer.user_jwt_proof = proof;
            }
            None => lost.push(offer.task_id),
        }
    }
    for id in &lost {
        let failed = st
            .store
            .fail_unstarted_task(
                org_id,
                *id,
                FailureReason::Unauthenticated,
                LOST_TOKEN_MESSAGE,
                now_ms(),
            )
            .await?;
        if failed.outcome {
            tracing::warn!(
                task = id,
                status = "failure",
                reason = "unauthenticated",
                "task lost its creator's identity token in a restart"
            );
        }
        let system = crate::audit::Actor::system();
        crate::effects::apply(st, &system, failed.effects.as_ref()).await;
    }
    offers.retain(|o| !lost.contains(&o.task_id));
    Ok(offers)
}

/// For [`Credential`]-aware callers: the token to hold for a task created by `auth`.
pub fn creator_token(auth: &UserAuth) -> Option<&str> {
    match &auth.via {
        Credential::IdentityToken(t) => Some(t),
        Credential::ApiToken { .. } | Credential::Sso | Credential::Slack { .. } => None,
    }
}

/// The key thumbprint (`cnf.jkt`) of a token already verified at authentication.
pub fn bound_key(token: &str) -> Option<String> {
    runops_jwt::confirmation_jkt(&runops_jwt::claims_of_verified_token(token))
        .ok()
        .flatten()
}

/// The `exp` of a token already verified at authentication, in ms.
pub fn token_expiry_ms(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    Some((exp as i64).saturating_mul(1000))
}

/// Shared handle.
pub type SharedHeldTokens = Arc<HeldTokens>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_token_is_found_even_when_registered_after_the_dispatch_asked() {
        let held = Arc::new(HeldTokens::default());
        let later = held.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.hold(7, "a.b.c", None).await;
        });
        assert_eq!(
            held.wait_for(7).await.map(|(t, _)| t).as_deref(),
            Some("a.b.c")
        );
        held.release(7).await;
        assert!(held.is_empty());
    }

    #[tokio::test]
    async fn a_task_waits_for_its_proof_until_its_deadline() {
        let held = HeldTokens::default();
        held.hold(1, "a.b.c", None).await;
        held.await_proof(1, 9, 1000).await;
        held.hold(2, "d.e.f", None).await;
        held.await_proof(2, 9, 1000).await;
        assert!(held.set_proof(2, "proof").await);
        assert!(!held.set_proof(2, "again").await, "a task is proven once");
        assert!(held.overdue_proofs(999).await.is_empty());
        assert_eq!(held.overdue_proofs(1000).await, vec![(9, 1)]);
        assert!(
            held.token(1).await.is_none(),
            "an unproven task's token is dropped"
        );
        assert!(!held.set_proof(1, "late").await, "too late");
        assert_eq!(
            held.get(2).await,
            Some(("d.e.f".into(), Some("proof".into())))
        );
    }

    #[tokio::test]
    async fn expired_tokens_are_dropped() {
        let held = HeldTokens::default();
        held.hold(1, "x.y.z", Some(now_ms() - HELD_TOKEN_GRACE_MS - 1000))
            .await;
        assert!(held.has_room().await);
        assert!(held.is_empty());
    }
}
