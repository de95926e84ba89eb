//! What the agent's own AWS calls share: the settings read from the agent's environment
//! ([`AwsEnv`]: region, endpoint overrides), the standard [`credentials`] chain and the
//! [`sigv4`] request signer, and the [`AwsError`] every AWS call returns (so callers
//! retry only what can succeed on a second try). Used by the `aws` secrets provider
//! (Secrets Manager) and the S3 log store.

pub mod credentials;
pub mod sigv4;

use std::collections::HashMap;
use std::fmt;

/// What kind of failure an AWS call (or a credential source) had; it decides whether a
/// retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The credentials were refused or lack a permission (`AccessDenied`, an invalid or
    /// expired key, a wrong container token): the same request fails again.
    Denied,
    /// A timeout, an unreachable endpoint, a 5xx or throttling: worth a bounded retry.
    Transient,
    /// A setting is wrong or missing (no credentials, a bad URL or file, an unknown
    /// secret, a credential helper that fails): only the operator can fix it.
    Misconfigured,
}

/// A failed AWS call: its [`AwsErrorKind`] and a lower-case sentence naming the source
/// and what to do. Never holds a secret (no key, token or secret value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub kind: AwsErrorKind,
    pub message: String,
}

impl AwsError {
    pub fn new(kind: AwsErrorKind, message: impl Into<String>) -> AwsError {
        AwsError {
            kind,
            message: message.into(),
        }
    }

    pub fn denied(message: impl Into<String>) -> AwsError {
        AwsError::new(AwsErrorKind::Denied, message)
    }

    pub fn transient(message: impl Into<String>) -> AwsError {
        AwsError::new(AwsErrorKind::Transient, message)
    }

    pub fn misconfigured(message: impl Into<String>) -> AwsError {
        AwsError::new(AwsErrorKind::Misconfigured, message)
    }

    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == AwsErrorKind::Transient
    }

    /// A failed request (no answer): transient, except a request that could not even be
    /// built (a bad URL or header), which is a setting.
    pub fn from_transport(e: &reqwest::Error, url: &str) -> AwsError {
        let text = crate::secrets::http::transport_error(e, url);
        if e.is_builder() {
            AwsError::misconfigured(text)
        } else {
            AwsError::transient(text)
        }
    }

    /// The same error with `prefix: ` before its message.
    pub fn context(self, prefix: impl fmt::Display) -> AwsError {
        AwsError {
            kind: self.kind,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AwsError {}

/// Error codes AWS services answer when a retry later can succeed (throttling and
/// server-side trouble), across Secrets Manager, S3 and STS.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
    "IDPCommunicationError",
];

/// Error codes that mean the credentials or their permissions were refused.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "InvalidIdentityToken",
    "IDPRejectedClaim",
    "AuthFailure",
    "NotAuthorized",
];

/// The kind of an AWS error answer from its HTTP status and error code (`__type` of the
/// JSON protocols, `<Code>` of the XML ones): the code decides when it is known, then
/// the status (429 and 5xx transient, 401 and 403 denied, other 4xx a setting).
pub fn classify(status: reqwest::StatusCode, code: &str) -> AwsErrorKind {
    if TRANSIENT_CODES.contains(&code) {
        AwsErrorKind::Transient
    } else if DENIED_CODES.contains(&code) {
        AwsErrorKind::Denied
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        AwsErrorKind::Transient
    } else if status == reqwest::StatusCode::FORBIDDEN
        || status == reqwest::StatusCode::UNAUTHORIZED
    {
        AwsErrorKind::Denied
    } else {
        AwsErrorKind::Misconfigured
    }
}

/// A snapshot of the agent's AWS-related environment, taken at start.
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    vars: HashMap<String, String>,
}

impl AwsEnv {
    /// The variables the AWS settings use (`AWS_*` and `HOME`), from the process.
    pub fn from_process_env() -> AwsEnv {
        AwsEnv::from_pairs(std::env::vars().filter(|(k, _)| k.starts_with("AWS_") || k == "HOME"))
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> AwsEnv {
        AwsEnv {
            vars: pairs
                .into_iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .collect(),
        }
    }

    /// A non-empty variable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|v| v.trim())
    }

    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region` in `~/.aws/config`.
    pub fn region(&self) -> Option<String> {
        if let Some(r) = self
            .get("AWS_REGION")
            .or_else(|| self.get("AWS_DEFAULT_REGION"))
        {
            return Some(r.to_string());
        }
        let text = std::fs::read_to_string(self.config_file()?).ok()?;
        let profile = self.get("AWS_PROFILE").unwrap_or("default");
        credentials::ini_section(&text, profile)?
            .into_iter()
            .find(|(k, _)| k == "region")
            .map(|(_, v)| v)
    }

    /// The shared config file: `AWS_CONFIG_FILE`, else `~/.aws/config`.
    pub fn config_file(&self) -> Option<std::path::PathBuf> {
        match self.get("AWS_CONFIG_FILE") {
            Some(f) => Some(f.into()),
            None => Some(
                std::path::Path::new(self.get("HOME")?)
                    .join(".aws")
                    .join("config"),
            ),
        }
    }

    /// The shared credentials file: `AWS_SHARED_CREDENTIALS_FILE`, else
    /// `~/.aws/credentials`.
    pub fn credentials_file(&self) -> Option<std::path::PathBuf> {
        match self.get("AWS_SHARED_CREDENTIALS_FILE") {
            Some(f) => Some(f.into()),
            None => Some(
                std::path::Path::new(self.get("HOME")?)
                    .join(".aws")
                    .join("credentials"),
            ),
        }
    }

    /// The endpoint override for a service: `AWS_ENDPOINT_URL_<SERVICE>` (e.g.
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`), then `AWS_ENDPOINT_URL`. `service` is only
    /// used in messages.
    pub fn endpoint(&self, _service: &str, env_suffix: &str) -> Option<String> {
        self.get(&format!("AWS_ENDPOINT_URL_{env_suffix}"))
            .or_else(|| self.get("AWS_ENDPOINT_URL"))
            .map(|u| u.trim_end_matches('/').to_string())
    }
}
