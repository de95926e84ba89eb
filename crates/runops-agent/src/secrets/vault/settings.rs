//! Where the agent finds Vault and how it logs in ([`VaultSettings`], from the agent's
//! environment), and the normalisation of addresses and paths.

use std::path::PathBuf;

/// Where a pod's service-account token is mounted by Kubernetes.
pub const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How the agent logs in to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    Token(String),
    AppRole { role_id: String, secret_id: String },
    Kubernetes { role: String, jwt_file: PathBuf },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token(..)"),
            VaultAuth::AppRole { role_id, .. } => write!(f, "AppRole({role_id})"),
            VaultAuth::Kubernetes { role, jwt_file } => {
                write!(f, "Kubernetes({role}, {})", jwt_file.display())
            }
        }
    }
}

/// The agent's Vault settings. A mistake in them is reported by the first task that
/// uses Vault (an agent without Vault targets must not fail to start over them).
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub(crate) addr: Result<String, String>,
    pub(crate) namespace: Option<String>,
    pub(crate) auth: Result<VaultAuth, String>,
    /// e.g. `/v1/auth/approle/login`.
    pub(crate) login_path: String,
    pub(crate) revoke_leases: bool,
}

impl VaultSettings {
    pub fn from_process_env() -> VaultSettings {
        VaultSettings::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> VaultSettings {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let addr = match get("VAULT_ADDR") {
            Some(a) => normalize_addr(&a),
            None => Err("VAULT_ADDR is not set on the agent; set it to the Vault server's address (https://vault.example.com:8200)".into()),
        };
        // Without VAULT_AUTH_METHOD, the variables that are set tell (the original agent's
        // deployments set only VAULT_ROLE for Kubernetes auth).
        let method = get("VAULT_AUTH_METHOD").unwrap_or_else(|| {
            if get("VAULT_TOKEN").is_some() {
                "token"
            } else if get("VAULT_ROLE_ID").is_some() {
                "approle"
            } else if get("VAULT_ROLE").is_some() {
                "kubernetes"
            } else {
                "token"
            }
            .into()
        });
        let need = |k: &str| {
            get(k).ok_or_else(|| {
                format!("{k} is not set on the agent (VAULT_AUTH_METHOD is `{method}`)")
            })
        };
        let auth = match method.as_str() {
            "token" => need("VAULT_TOKEN").map(VaultAuth::Token),
            "approle" => need("VAULT_ROLE_ID").and_then(|role_id| {
                Ok(VaultAuth::AppRole {
                    role_id,
                    secret_id: need("VAULT_SECRET_ID")?,
                })
            }),
            "kubernetes" => need("VAULT_ROLE").map(|role| VaultAuth::Kubernetes {
                role,
                jwt_file: get("VAULT_K8S_TOKEN_PATH")
                    .unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.into())
                    .into(),
            }),
            other => Err(format!(
                "VAULT_AUTH_METHOD `{other}` is not supported; use token, approle or kubernetes"
            )),
        };
        let default_mount = if method == "approle" {
            "approle"
        } else {
            "kubernetes"
        };
        let login_path = normalize_login_path(
            get("VAULT_AUTH_PATH")
                .as_deref()
                .unwrap_or(&format!("/v1/auth/{default_mount}/login")),
        );
        VaultSettings {
            addr,
            namespace: get("VAULT_NAMESPACE"),
            auth,
            login_path,
            revoke_leases: get("VAULT_REVOKE_LEASES").is_some_and(|v| is_true(&v)),
        }
    }
}

pub(crate) fn is_true(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// `vault.example.com` → `https://vault.example.com`; a trailing `/` or `/v1` goes.
pub(crate) fn normalize_addr(addr: &str) -> Result<String, String> {
    let with_scheme = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    };
    let trimmed = with_scheme.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    reqwest::Url::parse(trimmed).map_err(|e| format!("VAULT_ADDR `{addr}` is not a URL ({e})"))?;
    Ok(trimmed.to_string())
}

/// `kubernetes-prod` → `/v1/auth/kubernetes-prod/login`; full paths are kept.
pub(crate) fn normalize_login_path(p: &str) -> String {
    let p = p.trim().trim_matches('/');
    let p = p.strip_prefix("v1/").unwrap_or(p);
    let p = if p.starts_with("auth/") {
        p.to_string()
    } else {
        format!("auth/{p}")
    };
    let p = if p.ends_with("/login") {
        p
    } else {
        format!("{p}/login")
    };
    format!("/v1/{p}")
}

/// A secret path as Vault's API wants it after `/v1/`: no leading `/`, no `v1/`.
pub fn normalize_secret_path(p: &str) -> String {
    let p = p.trim().trim_matches('/');
    p.strip_prefix("v1/")
        .unwrap_or(p)
        .trim_matches('/')
        .to_string()
}
