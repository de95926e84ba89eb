//! What the agent's own AWS calls share: the settings read from the agent's environment
//! ([`AwsEnv`]: region, endpoint overrides), the standard [`credentials`] chain and the
//! [`sigv4`] request signer. Used by the `aws` secrets provider (Secrets Manager) and the
//! S3 log store.

pub mod credentials;
pub mod sigv4;

use std::collections::HashMap;

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
        let path = match self.get("AWS_CONFIG_FILE") {
            Some(f) => std::path::PathBuf::from(f),
            None => std::path::Path::new(self.get("HOME")?)
                .join(".aws")
                .join("config"),
        };
        let text = std::fs::read_to_string(path).ok()?;
        let profile = self.get("AWS_PROFILE").unwrap_or("default");
        credentials::ini_section(&text, profile)?
            .into_iter()
            .find(|(k, _)| k == "region")
            .map(|(_, v)| v)
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
