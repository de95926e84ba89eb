//! The `aws` provider: AWS Secrets Manager `GetSecretValue(secret_path)` (a name or an
//! ARN) whose `SecretString` is a JSON object. The agent's own credentials come from the
//! standard chain ([`crate::aws::credentials`]); the region from `AWS_REGION` /
//! `AWS_DEFAULT_REGION` / the profile; `AWS_ENDPOINT_URL_SECRETS_MANAGER` or
//! `AWS_ENDPOINT_URL` point it at another endpoint (a VPC endpoint, an emulator).
//!
//! Failures are classified ([`AwsError`]): a refusal (`AccessDeniedException`, an invalid
//! key) or a wrong setting fails the task at once; a timeout, an unreachable endpoint, a
//! 5xx or throttling is retried with back-off, [`GET_SECRET_ATTEMPTS`] times in all.

use super::env_var::parse_secret_object;
use super::{Secrets, SecretsProvider, http};
use crate::aws::credentials::CredentialChain;
use crate::aws::sigv4::{SignRequest, sha256_hex, sign};
use crate::aws::{AwsEnv, AwsError, AwsErrorKind, classify};
use crate::backoff::Backoff;
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;

/// Attempts of one `GetSecretValue` when it fails transiently: with the back-off between
/// them (about 0.5 s, then 1 s) a throttled or restarting endpoint gets a chance, while a
/// task whose secrets cannot come waits at most three request timeouts.
pub const GET_SECRET_ATTEMPTS: u32 = 3;

/// Reads secrets from AWS Secrets Manager.
pub struct AwsSecretsManager {
    env: AwsEnv,
    creds: CredentialChain,
    http: reqwest::Client,
}

impl AwsSecretsManager {
    pub fn new(env: AwsEnv) -> AwsSecretsManager {
        AwsSecretsManager::with_client(env, http::client())
    }

    /// With another HTTP client (tests use a short timeout).
    pub fn with_client(env: AwsEnv, http: reqwest::Client) -> AwsSecretsManager {
        AwsSecretsManager {
            creds: CredentialChain::new(env.clone(), http.clone()),
            env,
            http,
        }
    }

    /// `GetSecretValue`, retried while it fails transiently (at most
    /// [`GET_SECRET_ATTEMPTS`] times); refused credentials are forgotten so the next task
    /// asks the chain again.
    pub async fn get_secret(&self, id: &str) -> Result<Secrets, AwsError> {
        let mut backoff = Backoff::new();
        let mut attempt = 1;
        loop {
            match self.get_secret_value(id).await {
                Err(e) if e.is_transient() && attempt < GET_SECRET_ATTEMPTS => {
                    tracing::warn!(
                        secret = id,
                        attempt,
                        "aws secrets manager failed, retrying: {e}"
                    );
                    attempt += 1;
                    backoff.wait().await;
                }
                Err(e) if e.is_transient() => {
                    return Err(AwsError::transient(format!(
                        "{e} (tried {GET_SECRET_ATTEMPTS} times)"
                    )));
                }
                Err(e) => {
                    if e.kind == AwsErrorKind::Denied {
                        self.creds.invalidate().await;
                    }
                    return Err(e);
                }
                Ok(s) => return Ok(s),
            }
        }
    }

    async fn get_secret_value(&self, id: &str) -> Result<Secrets, AwsError> {
        let region = self.env.region().ok_or_else(|| {
            AwsError::misconfigured(
                "no AWS region is set for the agent; set AWS_REGION (or AWS_DEFAULT_REGION)",
            )
        })?;
        let endpoint = self
            .env
            .endpoint("secrets manager", "SECRETS_MANAGER")
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        let url = reqwest::Url::parse(&format!("{endpoint}/")).map_err(|e| {
            AwsError::misconfigured(format!(
                "the endpoint `{endpoint}` is not a URL ({e}); fix AWS_ENDPOINT_URL"
            ))
        })?;
        let creds = self.creds.get().await?;
        let body = serde_json::json!({ "SecretId": id }).to_string();
        let target = "secretsmanager.GetSecretValue";
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signed = sign(
            &SignRequest {
                method: "POST",
                url: &url,
                headers: &headers,
                payload_sha256: &sha256_hex(body.as_bytes()),
                region: &region,
                service: "secretsmanager",
            },
            &creds,
            chrono::Utc::now(),
        );
        let mut req = self.http.post(url.clone()).body(body);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(signed)
        {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AwsError::from_transport(&e, &endpoint))?;
        let status = resp.status();
        let bytes = http::read_body(resp, &endpoint)
            .await
            .map_err(AwsError::transient)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let kind = json
                .get("__type")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .rsplit('#')
                .next()
                .unwrap_or("")
                .to_string();
            let class = classify(status, &kind);
            let what = match kind.as_str() {
                "ResourceNotFoundException" => {
                    format!(
                        "not found in region {region}; check the target's secret_path and the agent's AWS_REGION"
                    )
                }
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature" => format!(
                    "access denied ({kind}); check the agent's AWS credentials and their IAM policy (secretsmanager:GetSecretValue)"
                ),
                _ if class == AwsErrorKind::Transient => {
                    let code = if kind.is_empty() {
                        "no error code"
                    } else {
                        &kind
                    };
                    format!("unavailable (HTTP {status}, {code})")
                }
                "" => format!("refused with HTTP {status}"),
                other => format!("refused ({other})"),
            };
            return Err(AwsError::new(class, what));
        }
        let text = json
            .get("SecretString")
            .and_then(|s| s.as_str())
            .ok_or_else(|| {
                AwsError::misconfigured(
                    "has no SecretString (binary secrets are not supported; store a JSON object)",
                )
            })?;
        parse_secret_object(text).map_err(AwsError::misconfigured)
    }
}

#[async_trait]
impl SecretsProvider for AwsSecretsManager {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::Aws.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let id = offer.secret_path.as_deref().map(str::trim).unwrap_or("");
        if id.is_empty() {
            return Err(TaskFailure::invalid_config(
                "the target uses secret provider `aws` but has no secret_path; set it to the secret's name or ARN in AWS Secrets Manager",
            ));
        }
        self.get_secret(id)
            .await
            .map_err(|e| TaskFailure::secrets(format!("aws secrets manager, secret `{id}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A Secrets Manager stand-in whose `n`-th answer (from 1) is `answer(n)`: a status
    /// and a body, or `None` to hang past the client's timeout. Counts the requests.
    async fn secrets_manager(
        answer: fn(usize) -> Option<(u16, &'static str)>,
    ) -> (AwsSecretsManager, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let app = axum::Router::new().fallback(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match answer(n) {
                    Some((status, body)) => (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        body.to_string(),
                    ),
                    None => {
                        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                        (axum::http::StatusCode::OK, String::new())
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let env = AwsEnv::from_pairs(
            [
                ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL", base.as_str()),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        // A short timeout so that the hanging answer is a quick transient failure.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(500))
            .build()
            .unwrap();
        (AwsSecretsManager::with_client(env, http), count)
    }

    const SECRET: &str = r#"{"SecretString": "{\"DB_PASS\": \"p\"}"}"#;

    #[tokio::test]
    async fn access_denied_fails_at_once() {
        let (sm, count) = secrets_manager(|_| {
            Some((
                400,
                r#"{"__type":"AccessDeniedException","Message":"not authorized"}"#,
            ))
        })
        .await;
        let e = sm.get_secret("prod/app").await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Denied);
        assert!(
            e.message.starts_with(
                "access denied (AccessDeniedException); check the agent's AWS credentials"
            ),
            "{e}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "a refusal is not retried");
        let (sm, count) =
            secrets_manager(|_| Some((400, r#"{"__type":"ResourceNotFoundException"}"#))).await;
        let e = sm.get_secret("prod/app").await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Misconfigured);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn throttling_and_timeouts_are_retried_a_bounded_number_of_times() {
        let (sm, count) = secrets_manager(|n| match n {
            1 => Some((400, r#"{"__type":"ThrottlingException"}"#)),
            2 => None,
            _ => Some((200, SECRET)),
        })
        .await;
        let s = sm.get_secret("prod/app").await.unwrap();
        assert_eq!(s.get("DB_PASS").map(String::as_str), Some("p"));
        assert_eq!(count.load(Ordering::SeqCst), 3);

        let (sm, count) = secrets_manager(|_| Some((503, ""))).await;
        let e = sm.get_secret("prod/app").await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Transient);
        assert_eq!(
            e.message,
            format!(
                "unavailable (HTTP 503 Service Unavailable, no error code) (tried {GET_SECRET_ATTEMPTS} times)"
            )
        );
        assert_eq!(count.load(Ordering::SeqCst), GET_SECRET_ATTEMPTS as usize);
    }
}
