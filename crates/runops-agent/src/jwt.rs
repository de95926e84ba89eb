//! `JWK_URL` enforcement: with it set, a task runs only when it carries its creator's
//! identity-provider JWT, valid (signature by a key of the JWKS at `JWK_URL`, RS256 or
//! ES256, `exp`/`nbf`, optional `JWT_ISSUER` / `JWT_AUDIENCE`) and naming the task's
//! creator in its e-mail claim (`JWT_EMAIL_CLAIM`, default `email`). The pipeline calls
//! [`TaskAuthenticator::check`] first, before any secret is fetched; a refusal ends the
//! task `failure`/`unauthenticated` with a message that says why, and nothing runs.
//!
//! The token lives only in the offer in memory: it is never written to the spool, the
//! log, a file or an error message.

use crate::failure::TaskFailure;
use runops_jwt::{JwksVerifier, JwtError, VerifierConfig};
use runops_proto::FailureReason;
use runops_proto::agent::TaskOffer;

/// The claim that names the user when `JWT_EMAIL_CLAIM` is not set.
pub const DEFAULT_EMAIL_CLAIM: &str = "email";

/// What `JWK_URL` and its companions configure.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwk_url: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub email_claim: String,
}

/// Checks the identity token of every task (one per agent, shared by all tasks).
pub struct TaskAuthenticator {
    verifier: JwksVerifier,
    email_claim: String,
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
        Ok(())
    }
}
