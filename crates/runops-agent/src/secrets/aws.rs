//! The `aws` provider: AWS Secrets Manager `GetSecretValue(secret_path)` (a name or an
//! ARN) whose `SecretString` is a JSON object. The agent's own credentials come from the
//! standard chain ([`crate::aws::credentials`]); the region from `AWS_REGION` /
//! `AWS_DEFAULT_REGION` / the profile; `AWS_ENDPOINT_URL_SECRETS_MANAGER` or
//! `AWS_ENDPOINT_URL` point it at another endpoint (a VPC endpoint, an emulator).

use super::env_var::parse_secret_object;
use super::{Secrets, SecretsProvider, http};
use crate::aws::AwsEnv;
use crate::aws::credentials::CredentialChain;
use crate::aws::sigv4::{SignRequest, sha256_hex, sign};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;

/// Reads secrets from AWS Secrets Manager.
pub struct AwsSecretsManager {
    env: AwsEnv,
    creds: CredentialChain,
    http: reqwest::Client,
}

impl AwsSecretsManager {
    pub fn new(env: AwsEnv) -> AwsSecretsManager {
        let http = http::client();
        AwsSecretsManager {
            creds: CredentialChain::new(env.clone(), http.clone()),
            env,
            http,
        }
    }

    async fn get_secret_value(&self, id: &str) -> Result<Secrets, String> {
        let region = self
            .env
            .region()
            .ok_or("no AWS region is set for the agent; set AWS_REGION (or AWS_DEFAULT_REGION)")?;
        let endpoint = self
            .env
            .endpoint("secrets manager", "SECRETS_MANAGER")
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        let url = reqwest::Url::parse(&format!("{endpoint}/")).map_err(|e| {
            format!("the endpoint `{endpoint}` is not a URL ({e}); fix AWS_ENDPOINT_URL")
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
            .map_err(|e| http::transport_error(&e, &endpoint))?;
        let status = resp.status();
        let bytes = http::read_body(resp, &endpoint).await?;
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
                "" => format!("refused with HTTP {status}"),
                other => format!("refused ({other})"),
            };
            return Err(what);
        }
        let text = json
            .get("SecretString")
            .and_then(|s| s.as_str())
            .ok_or("has no SecretString (binary secrets are not supported; store a JSON object)")?;
        parse_secret_object(text)
    }
}

#[async_trait]
impl SecretsProvider for AwsSecretsManager {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let id = offer.secret_path.as_deref().map(str::trim).unwrap_or("");
        if id.is_empty() {
            return Err(TaskFailure::invalid_config(
                "the target uses secret provider `aws` but has no secret_path; set it to the secret's name or ARN in AWS Secrets Manager",
            ));
        }
        self.get_secret_value(id)
            .await
            .map_err(|e| TaskFailure::secrets(format!("aws secrets manager, secret `{id}`: {e}")))
    }
}
