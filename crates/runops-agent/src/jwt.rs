//! `JWK_URL` enforcement: with it set, a task runs only when it carries its creator's
//! identity-provider JWT, valid (signature by a key of the JWKS at `JWK_URL`, RS256 or
//! ES256, `exp`/`nbf`, optional `JWT_ISSUER` / `JWT_AUDIENCE`) and naming the task's
//! creator in its e-mail claim (`JWT_EMAIL_CLAIM`, default `email`). The pipeline calls
//! [`TaskAuthenticator::check`] first, before any secret is fetched; a refusal ends the
//! task `failure`/`unauthenticated` with a message that says why, and nothing runs.
//!
//! What binds a token to the task, so that a captured token does not run anything:
//! - `iat` is required; a token issued after the task was created (beyond the clock skew)
//!   is not the one the task was created with, and one issued more than
//!   `JWT_MAX_AGE_SECS` ago (default [`DEFAULT_MAX_AGE_SECS`]) by the agent's clock is
//!   refused, whatever its `exp`;
//! - a token bound to a key (`cnf.jkt`, RFC 9449) needs the creator's proof in the offer:
//!   a JWS signed with that key over this task's id, target, type and script and over the
//!   token (`runops_jwt::proof`), not older than `JWT_MAX_AGE_SECS`. The agent checks it
//!   itself (the server's word counts for nothing) and remembers the proofs it accepted
//!   ([`MAX_REMEMBERED_PROOFS`], until they are too old to pass anyway), so one proof
//!   runs one task once per agent process;
//! - a JWS header with `crit` is refused (`runops_jwt`).
//!
//! The token lives only in the offer in memory: it is never written to the spool, the
//! log, a file or an error message.

use crate::failure::TaskFailure;
use runops_jwt::proof::{ProofCheck, ProofError, TaskBinding, verify_task_proof};
use runops_jwt::{JwksVerifier, JwtError, LEEWAY_SECS, VerifierConfig};
use runops_proto::FailureReason;
use runops_proto::agent::TaskOffer;
use std::collections::HashMap;
use std::sync::Mutex;

/// The claim that names the user when `JWT_EMAIL_CLAIM` is not set.
pub const DEFAULT_EMAIL_CLAIM: &str = "email";

/// `JWT_MAX_AGE_SECS` when not set: an hour, the usual lifetime of an access token, so a
/// task may wait that long for an agent; a token captured later than that is useless.
pub const DEFAULT_MAX_AGE_SECS: u64 = 3600;

/// Largest `JWT_MAX_AGE_SECS` accepted: a week. More is most likely milliseconds given
/// by mistake, and would keep captured tokens usable for longer than any session.
pub const MAX_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// Task proofs remembered for replay detection: bounds memory (at most ~200 bytes each)
/// at far more tasks than one agent runs within `JWT_MAX_AGE_SECS`.
pub const MAX_REMEMBERED_PROOFS: usize = 100_000;

/// What `JWK_URL` and its companions configure.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwk_url: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub email_claim: String,
    /// `JWT_MAX_AGE_SECS`: oldest `iat` (and task proof) accepted, in seconds.
    pub max_age_secs: u64,
}

/// Checks the identity token of every task (one per agent, shared by all tasks).
pub struct TaskAuthenticator {
    verifier: JwksVerifier,
    email_claim: String,
    max_age_secs: u64,
    /// `jti` of accepted task proofs → when they stop passing the age check (seconds).
    seen_proofs: Mutex<HashMap<String, i64>>,
}

fn unauthenticated(message: String) -> TaskFailure {
    TaskFailure::new(FailureReason::Unauthenticated, message)
}

impl TaskAuthenticator {
    pub fn new(settings: &JwtSettings) -> anyhow::Result<TaskAuthenticator> {
        let verifier = JwksVerifier::new(VerifierConfig {
            jwks_url: settings.jwk_url.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
        .map_err(|e| anyhow::anyhow!("JWK_URL: {e}"))?;
        Ok(TaskAuthenticator {
            verifier,
            email_claim: settings.email_claim.clone(),
            max_age_secs: settings.max_age_secs,
            seen_proofs: Mutex::new(HashMap::new()),
        })
    }

    /// `Ok` when `offer` carries a valid token of its creator; otherwise the failure that
    /// ends the task (`unauthenticated`), worded for the user who created it.
    pub async fn check(&self, offer: &TaskOffer) -> Result<(), TaskFailure> {
        let Some(token) = offer.user_jwt.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Err(unauthenticated(
                "the task carries no identity token: it was created with an API token, and this agent (JWK_URL is set) runs only tasks of users signed in with the identity provider; nothing ran. log in with `runops login --url URL --token <identity-provider JWT>` and create the task again".into(),
            ));
        };
        let verified = self.verifier.verify(token).await.map_err(|e| {
            let what_to_do = match &e {
                JwtError::Expired(_) | JwtError::NotYetValid(_) => {
                    "sign in to the identity provider again, log in with the new token and create the task again"
                }
                JwtError::UnknownKey { .. } | JwtError::JwksUnavailable { .. } => {
                    "check that JWK_URL points at the identity provider that issued the token"
                }
                _ => "log in with a token from the identity provider and create the task again",
            };
            tracing::warn!(task_id = offer.task_id, refusal = e.kind(), "identity token refused");
            unauthenticated(format!(
                "the identity token of the task was refused: {e}; nothing ran. {what_to_do}"
            ))
        })?;
        let claim = &self.email_claim;
        let Some(named) = verified.string_claim(claim) else {
            return Err(unauthenticated(format!(
                "the identity token has no `{claim}` claim naming its user, so it cannot be matched to the task's creator; nothing ran. set JWT_EMAIL_CLAIM to the claim that holds the user's e-mail"
            )));
        };
        if !named.eq_ignore_ascii_case(offer.user_email.trim()) {
            tracing::warn!(
                task_id = offer.task_id,
                "identity token of another user than the task's creator"
            );
            return Err(unauthenticated(format!(
                "the identity token belongs to `{named}` but the task was created by `{}`: a task runs only with its own creator's token; nothing ran",
                offer.user_email
            )));
        }
        self.check_age(offer, &verified)?;
        let jkt = verified.confirmation_jkt().map_err(|e| {
            unauthenticated(format!(
                "the identity token of the task was refused: {e}; nothing ran. ask the identity provider for a token bound with DPoP (`cnf.jkt`) or not bound at all"
            ))
        })?;
        if let Some(jkt) = jkt {
            self.check_proof(offer, token, &jkt)?;
        }
        Ok(())
    }

    /// `iat` is required, not after the task's creation, not older than the max age.
    fn check_age(
        &self,
        offer: &TaskOffer,
        verified: &runops_jwt::VerifiedToken,
    ) -> Result<(), TaskFailure> {
        let max_age = self.max_age_secs;
        let Some(iat) = verified.issued_at() else {
            return Err(unauthenticated(format!(
                "the identity token has no `iat` (issued-at) claim, so its age cannot be checked against JWT_MAX_AGE_SECS ({max_age} s); nothing ran. use a token from an identity provider that sets `iat`"
            )));
        };
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECS as i64;
        if iat > now + leeway {
            return Err(unauthenticated(format!(
                "the identity token was issued in the future ({}) by this agent's clock; nothing ran. check the clocks of the identity provider and the agent",
                time_text(iat)
            )));
        }
        if let Some(created_ms) = offer.created_at_ms {
            let created = created_ms.div_euclid(1000);
            if iat > created + leeway {
                tracing::warn!(
                    task_id = offer.task_id,
                    "identity token issued after the task was created"
                );
                return Err(unauthenticated(format!(
                    "the identity token was issued at {}, after the task was created at {}: it is not the token the task was created with; nothing ran",
                    time_text(iat),
                    time_text(created)
                )));
            }
        }
        let max = i64::try_from(max_age).unwrap_or(i64::MAX);
        if now.saturating_sub(iat) > max.saturating_add(leeway) {
            return Err(unauthenticated(format!(
                "the identity token was issued at {}, more than JWT_MAX_AGE_SECS ({max_age} s) ago: this agent runs only tasks with recently issued tokens, whatever their expiry; nothing ran. sign in to the identity provider again and create the task again",
                time_text(iat)
            )));
        }
        Ok(())
    }

    /// A token bound to a key needs its creator's proof over this task, once.
    fn check_proof(&self, offer: &TaskOffer, token: &str, jkt: &str) -> Result<(), TaskFailure> {
        let Some(proof) = offer
            .user_jwt_proof
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        else {
            tracing::warn!(
                task_id = offer.task_id,
                "key-bound identity token without a task proof"
            );
            return Err(unauthenticated(
                "the identity token is bound to a key (`cnf.jkt`) but the task carries no proof signed with that key: the token alone may have been captured; nothing ran. create the task with the runops CLI holding the key (`runops login --dpop-key FILE`, or RUNOPS_DPOP_KEY)".into(),
            ));
        };
        let check = ProofCheck {
            jkt,
            token: token.trim(),
            binding: TaskBinding {
                task_id: offer.task_id,
                target: &offer.target,
                kind: &offer.kind,
                script: &offer.script,
            },
            not_before: offer.created_at_ms.map(|ms| ms.div_euclid(1000)),
            max_age_secs: self.max_age_secs,
        };
        let verified = verify_task_proof(proof, &check).map_err(|e: ProofError| {
            tracing::warn!(
                task_id = offer.task_id,
                refusal = e.kind(),
                "task proof refused"
            );
            unauthenticated(format!(
                "{e}; nothing ran. the task runs only with a proof its creator signed for it, with the key the identity token is bound to"
            ))
        })?;
        let now = chrono::Utc::now().timestamp();
        let max = i64::try_from(self.max_age_secs).unwrap_or(i64::MAX);
        // Past this, the proof fails the age check anyway: no need to remember it.
        let useless_after = verified
            .iat
            .saturating_add(max)
            .saturating_add(2 * LEEWAY_SECS as i64);
        let mut seen = self.seen_proofs.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains_key(&verified.jti) {
            tracing::warn!(task_id = offer.task_id, "task proof replayed");
            return Err(unauthenticated(format!(
                "the task proof (jti `{}`) was already used for a task on this agent: a proof runs one task once; nothing ran",
                verified.jti
            )));
        }
        if seen.len() >= MAX_REMEMBERED_PROOFS {
            seen.retain(|_, until| *until >= now);
        }
        if seen.len() >= MAX_REMEMBERED_PROOFS {
            return Err(unauthenticated(format!(
                "this agent already remembers {MAX_REMEMBERED_PROOFS} recent task proofs and cannot check this one for replay; nothing ran. try again later"
            )));
        }
        seen.insert(verified.jti, useless_after);
        Ok(())
    }
}

fn time_text(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}
