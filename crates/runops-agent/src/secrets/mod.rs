//! Secrets providers: where a task's credentials come from.
//!
//! A target names a provider (`secret_provider`, `env-var` by default when it has a
//! `secret_path`) and a path inside it. Each provider is one module implementing
//! [`SecretsProvider`]; [`SecretsRegistry`] finds it by name, so the pipeline never
//! knows a concrete provider. [`mapping`] applies the target's `secret_mapping`.

pub mod aws;
pub mod env_var;
pub mod filesystem;
pub mod http;
pub mod mapping;
pub mod runops;
pub mod vault;

use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::SecretProvider;
use runops_proto::agent::TaskOffer;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Key → value of every secret a task sees.
pub type Secrets = BTreeMap<String, String>;

/// The provider used when a target has a `secret_path` but no `secret_provider`.
pub const DEFAULT_PROVIDER: &str = SecretProvider::DEFAULT.as_str();

/// Fetches the secrets of one task from one kind of secrets manager.
#[async_trait]
pub trait SecretsProvider: Send + Sync {
    /// The name targets use in `secret_provider`.
    fn name(&self) -> &'static str;

    /// Fetches the secrets at `offer.secret_path` (or wherever the offer says).
    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure>;

    /// Called once the task of a successful [`SecretsProvider::fetch`] (or a failed
    /// one) has ended, to give back what the fetch took (a Vault lease). Never fails the
    /// task: problems are logged.
    async fn release(&self, _offer: &TaskOffer) {}
}

/// The providers of this agent, by name.
#[derive(Clone, Default)]
pub struct SecretsRegistry {
    providers: HashMap<&'static str, Arc<dyn SecretsProvider>>,
}

impl SecretsRegistry {
    /// Every provider this agent supports (one for each [`SecretProvider`]), reading
    /// the agent's own environment.
    pub fn with_defaults() -> SecretsRegistry {
        let vault = Arc::new(vault::VaultClient::new(
            vault::VaultSettings::from_process_env(),
        ));
        let mut reg = SecretsRegistry::default();
        for &p in SecretProvider::ALL {
            reg.register(match p {
                SecretProvider::EnvVar => Arc::new(env_var::EnvVarProvider::from_process_env()),
                SecretProvider::Filesystem => {
                    Arc::new(filesystem::FilesystemProvider::from_process_env())
                }
                SecretProvider::Aws => Arc::new(aws::AwsSecretsManager::new(
                    crate::aws::AwsEnv::from_process_env(),
                )),
                SecretProvider::HashicorpKv => Arc::new(vault::VaultKvProvider::new(vault.clone())),
                SecretProvider::HashicorpDb => Arc::new(vault::VaultDbProvider::new(vault.clone())),
                SecretProvider::Runops => Arc::new(runops::RunopsProvider),
            });
        }
        reg
    }

    pub fn register(&mut self, provider: Arc<dyn SecretsProvider>) {
        self.providers.insert(provider.name(), provider);
    }

    /// The names of the providers registered, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.providers.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// Fetches the secrets of `offer`: none when it names neither a provider nor a path.
    pub async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let name = match offer.secret_provider.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => p,
            _ if offer
                .secret_path
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty()) =>
            {
                DEFAULT_PROVIDER
            }
            _ => return Ok(Secrets::new()),
        };
        let provider = self.providers.get(name).ok_or_else(|| {
            if name.parse::<SecretProvider>().is_ok() {
                TaskFailure::invalid_config(format!(
                    "secret provider `{name}` is not available in this agent yet"
                ))
            } else {
                let mut known: Vec<&str> = self.providers.keys().copied().collect();
                known.extend(SecretProvider::NAMES);
                known.sort_unstable();
                known.dedup();
                TaskFailure::invalid_config(format!(
                    "unknown secret provider `{name}` (known: {})",
                    known.join(", ")
                ))
            }
        })?;
        provider.fetch(offer).await
    }

    /// Lets the task's provider give back what its fetch took (see
    /// [`SecretsProvider::release`]).
    pub async fn release(&self, offer: &TaskOffer) {
        let name = match offer.secret_provider.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => p,
            _ => DEFAULT_PROVIDER,
        };
        if let Some(p) = self.providers.get(name) {
            p.release(offer).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use runops_proto::FailureReason;

    pub(crate) fn offer(provider: Option<&str>, path: Option<&str>) -> TaskOffer {
        TaskOffer {
            task_id: 7,
            target: "demo".into(),
            kind: "bash".into(),
            script: "echo hi".into(),
            message: None,
            secret_provider: provider.map(str::to_string),
            secret_path: path.map(str::to_string),
            secret_mapping: None,
            redact: "all".into(),
            redact_keys: Vec::new(),
            public_keys: Vec::new(),
            custom_command: None,
            timeout_secs: 60,
            user_email: "ana@example.com".into(),
            user_groups: vec![],
            user_jwt: None,
            user_jwt_proof: None,
            created_at_ms: None,
            config: None,
            start_deadline_ms: 5000,
        }
    }

    fn registry() -> SecretsRegistry {
        let mut reg = SecretsRegistry::default();
        let env = [("MY_TARGET".to_string(), r#""A": "b""#.to_string())];
        reg.register(Arc::new(env_var::EnvVarProvider::from_vars(env)));
        reg
    }

    #[tokio::test]
    async fn no_path_and_no_provider_means_no_secrets() {
        let s = registry().fetch(&offer(None, None)).await.unwrap();
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn path_without_provider_reads_env_var() {
        let s = registry()
            .fetch(&offer(None, Some("MY_TARGET")))
            .await
            .unwrap();
        assert_eq!(s.get("A").map(String::as_str), Some("b"));
    }

    #[tokio::test]
    async fn planned_provider_fails_as_invalid_config() {
        let e = registry()
            .fetch(&offer(Some("aws"), Some("x")))
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::InvalidConfig);
        assert_eq!(
            e.message,
            "secret provider `aws` is not available in this agent yet"
        );
        let e = registry()
            .fetch(&offer(Some("gopass"), Some("x")))
            .await
            .unwrap_err();
        assert!(
            e.message.contains("unknown secret provider `gopass`"),
            "{e}"
        );
        assert!(e.message.contains("env-var"), "{e}");
    }

    /// The agent has a provider for exactly the names the server accepts
    /// ([`SecretProvider`], which the server's validation parses them with).
    #[test]
    fn the_default_registry_has_every_provider_and_nothing_else() {
        let reg = SecretsRegistry::with_defaults();
        for p in SecretProvider::ALL {
            assert!(reg.providers.contains_key(p.as_str()), "{p}");
        }
        for name in reg.providers.keys() {
            assert!(name.parse::<SecretProvider>().is_ok(), "{name}");
        }
        assert_eq!(reg.providers.len(), SecretProvider::ALL.len());
    }
}
