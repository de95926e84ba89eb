//! HashiCorp Vault (and OpenBao): the `hashicorp/kv` provider (KV v1 and v2) and the
//! `hashicorp/db` provider (database secrets engine dynamic credentials), sharing one
//! [`VaultClient`] per agent.
//!
//! Settings (agent environment): `VAULT_ADDR` (with or without a port; `https://` when no
//! scheme is given), `VAULT_NAMESPACE`, `VAULT_AUTH_METHOD` = `token` (`VAULT_TOKEN`,
//! the default), `approle` (`VAULT_ROLE_ID`, `VAULT_SECRET_ID`) or `kubernetes`
//! (`VAULT_ROLE`, the service-account token in `VAULT_K8S_TOKEN_PATH`); when it is not set
//! the method follows from which of those variables are set; `VAULT_AUTH_PATH`
//! overrides the login path (default `/v1/auth/<method>/login`); `VAULT_REVOKE_LEASES=true`
//! revokes dynamic credentials when the task ends.
//!
//! The token from a login is kept and reused until it nears expiry (then renewed, or a new
//! login made); an answer `403` to a token from a login triggers one new login and retry.
//!
//! KV paths resolve the way the `vault kv` CLI does: a leading `/v1/` is ignored, the
//! mount and its version are asked from Vault (`sys/internal/ui/mounts`), and `data/` is
//! added for v2 mounts when the path lacks it. When that endpoint is not allowed, a path
//! containing `/data/` is read as v2 and anything else as v1 with a v2 fallback.

use super::env_var::parse_secret_object;
use super::{Secrets, SecretsProvider, http};
use crate::config::VAULT_TOKEN_RENEW_MARGIN;
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;
use tokio::sync::Mutex;

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
    addr: Result<String, String>,
    namespace: Option<String>,
    auth: Result<VaultAuth, String>,
    /// e.g. `/v1/auth/approle/login`.
    login_path: String,
    revoke_leases: bool,
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

fn is_true(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// `vault.example.com` → `https://vault.example.com`; a trailing `/` or `/v1` goes.
fn normalize_addr(addr: &str) -> Result<String, String> {
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
fn normalize_login_path(p: &str) -> String {
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

struct CachedToken {
    token: String,
    /// `None`: does not expire (or a static `VAULT_TOKEN`).
    expires: Option<Instant>,
    renewable: bool,
    /// From a login (so a new login can replace it), not a static token.
    from_login: bool,
}

/// One Vault server as the agent sees it: its settings and the cached token.
pub struct VaultClient {
    settings: VaultSettings,
    http: reqwest::Client,
    token: Mutex<Option<CachedToken>>,
}

/// An answer of Vault: status and JSON body (`Null` when there is none).
struct Answer {
    status: u16,
    body: Value,
}

impl VaultClient {
    pub fn new(settings: VaultSettings) -> VaultClient {
        VaultClient {
            settings,
            http: http::client(),
            token: Mutex::new(None),
        }
    }

    fn addr(&self) -> Result<&str, String> {
        self.settings.addr.as_deref().map_err(|e| e.clone())
    }

    /// One HTTP call without a token (logins) or with `token`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let addr = self.addr()?;
        let url = format!("{addr}{path}");
        let mut req = self.http.request(method, &url);
        if let Some(t) = token {
            req = req.header("x-vault-token", t);
        }
        if let Some(ns) = &self.settings.namespace {
            req = req.header("x-vault-namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| http::transport_error(&e, addr))?;
        let status = resp.status().as_u16();
        let bytes = http::read_body(resp, addr).await?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The login request of the configured method: (path, body).
    async fn login_request(&self) -> Result<Option<Value>, String> {
        let auth = self.settings.auth.as_ref().map_err(|e| e.clone())?;
        Ok(match auth {
            VaultAuth::Token(_) => None,
            VaultAuth::AppRole { role_id, secret_id } => {
                Some(json!({ "role_id": role_id, "secret_id": secret_id }))
            }
            VaultAuth::Kubernetes { role, jwt_file } => {
                let jwt = tokio::fs::read_to_string(jwt_file).await.map_err(|e| {
                    format!(
                        "cannot read the Kubernetes service-account token {} (VAULT_K8S_TOKEN_PATH): {e}",
                        jwt_file.display()
                    )
                })?;
                Some(json!({ "role": role, "jwt": jwt.trim() }))
            }
        })
    }

    async fn login(&self) -> Result<CachedToken, String> {
        let auth = self.settings.auth.as_ref().map_err(|e| e.clone())?;
        let Some(body) = self.login_request().await? else {
            let VaultAuth::Token(t) = auth else {
                return Err("no login request for this auth method".into());
            };
            return Ok(CachedToken {
                token: t.clone(),
                expires: None,
                renewable: false,
                from_login: false,
            });
        };
        let path = &self.settings.login_path;
        let a = self
            .send(reqwest::Method::POST, path, None, Some(&body))
            .await?;
        if a.status != 200 {
            return Err(format!(
                "login at {path} refused (HTTP {}{}); check the agent's Vault credentials and VAULT_AUTH_PATH",
                a.status,
                vault_errors(&a.body)
            ));
        }
        token_from_auth(&a.body)
            .ok_or_else(|| format!("the login answer of {path} has no auth.client_token"))
    }

    /// A valid token: the cached one, renewed or replaced when it nears expiry.
    async fn token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let near = t
                .expires
                .is_some_and(|e| e <= Instant::now() + VAULT_TOKEN_RENEW_MARGIN);
            if !near {
                return Ok(t.token.clone());
            }
            if t.renewable {
                let token = t.token.clone();
                if let Ok(a) = self
                    .send(
                        reqwest::Method::POST,
                        "/v1/auth/token/renew-self",
                        Some(&token),
                        Some(&json!({})),
                    )
                    .await
                    && a.status == 200
                    && let Some(renewed) = token_from_auth(&a.body)
                    && renewed
                        .expires
                        .is_none_or(|e| e > Instant::now() + VAULT_TOKEN_RENEW_MARGIN)
                {
                    let token = renewed.token.clone();
                    *cached = Some(renewed);
                    return Ok(token);
                }
            }
        }
        let fresh = self.login().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// A call with the agent's token; a `403` to a token from a login gets one new login.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let token = self.token().await?;
        let a = self.send(method.clone(), path, Some(&token), body).await?;
        if a.status == 403 {
            let mut cached = self.token.lock().await;
            let relogin = cached
                .as_ref()
                .is_some_and(|t| t.from_login && t.token == token);
            if relogin {
                *cached = None;
                drop(cached);
                let token = self.token().await?;
                return self.send(method, path, Some(&token), body).await;
            }
        }
        Ok(a)
    }

    /// GET of `/v1/<path>`: the answer's `data`, or a sentence for a refusal.
    async fn read(&self, path: &str) -> Result<Option<Value>, String> {
        let a = self
            .call(reqwest::Method::GET, &format!("/v1/{path}"), None)
            .await?;
        match a.status {
            200 => Ok(Some(a.body.get("data").cloned().unwrap_or(Value::Null))),
            404 => Ok(None),
            403 => Err(format!(
                "access denied{}; check the agent's Vault token and its policy for this path",
                vault_errors(&a.body)
            )),
            s => Err(format!("refused with HTTP {s}{}", vault_errors(&a.body))),
        }
    }

    /// The mount of `path` and whether it is KV v2, when Vault tells.
    async fn kv_mount(&self, path: &str) -> Option<(String, bool)> {
        // No new login on a refusal here: the answer only guides the path resolution.
        let token = self.token().await.ok()?;
        let a = self
            .send(
                reqwest::Method::GET,
                &format!("/v1/sys/internal/ui/mounts/{path}"),
                Some(&token),
                None,
            )
            .await
            .ok()?;
        if a.status != 200 {
            return None;
        }
        let data = a.body.get("data")?;
        let mount = data.get("path")?.as_str()?.to_string();
        let v2 = data
            .get("options")
            .and_then(|o| o.get("version"))
            .and_then(|v| v.as_str())
            == Some("2");
        Some((mount, v2))
    }

    /// Reads a KV secret at `path` (v1 or v2), as its object of values.
    pub async fn read_kv(&self, path: &str) -> Result<Value, String> {
        let p = normalize_secret_path(path);
        if p.is_empty() {
            return Err("the path is empty".into());
        }
        let not_found = || format!("not found at {}", self.addr().unwrap_or_default());
        match self.kv_mount(&p).await {
            Some((mount, v2)) => {
                let rel = p.strip_prefix(&mount).unwrap_or(&p);
                if v2 {
                    let rel = rel.strip_prefix("data/").unwrap_or(rel);
                    let data = self.read(&format!("{mount}data/{rel}")).await?;
                    data.and_then(|d| d.get("data").cloned())
                        .filter(|d| !d.is_null())
                        .ok_or_else(not_found)
                } else {
                    self.read(&p).await?.ok_or_else(not_found)
                }
            }
            None if p.contains("/data/") => self
                .read(&p)
                .await?
                .and_then(|d| d.get("data").cloned())
                .filter(|d| !d.is_null())
                .ok_or_else(not_found),
            None => {
                if let Some(d) = self.read(&p).await? {
                    return Ok(unwrap_v2(d));
                }
                // A v2 path given without `data/`: insert it after the mount's first segment.
                let Some((mount, rel)) = p.split_once('/') else {
                    return Err(not_found());
                };
                self.read(&format!("{mount}/data/{rel}"))
                    .await?
                    .and_then(|d| d.get("data").cloned())
                    .filter(|d| !d.is_null())
                    .ok_or_else(not_found)
            }
        }
    }

    /// Reads dynamic credentials at `path` (`database/creds/ROLE`): (data, lease id).
    pub async fn read_creds(&self, path: &str) -> Result<(Value, Option<String>), String> {
        let p = normalize_secret_path(path);
        let a = self
            .call(reqwest::Method::GET, &format!("/v1/{p}"), None)
            .await?;
        match a.status {
            200 => Ok((
                a.body.get("data").cloned().unwrap_or(Value::Null),
                a.body
                    .get("lease_id")
                    .and_then(|l| l.as_str())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            )),
            404 => Err(format!(
                "not found at {} (no such role or engine)",
                self.addr().unwrap_or_default()
            )),
            403 => Err(format!(
                "access denied{}; check the agent's Vault token and its policy for this path",
                vault_errors(&a.body)
            )),
            s => Err(format!("refused with HTTP {s}{}", vault_errors(&a.body))),
        }
    }

    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), String> {
        let a = self
            .call(
                reqwest::Method::PUT,
                "/v1/sys/leases/revoke",
                Some(&json!({ "lease_id": lease_id })),
            )
            .await?;
        if a.status == 204 || a.status == 200 {
            Ok(())
        } else {
            Err(format!("HTTP {}{}", a.status, vault_errors(&a.body)))
        }
    }
}

/// A KV v1 read of a v2 secret returns `{data: {...}, metadata: {...}}`: keep the data.
fn unwrap_v2(d: Value) -> Value {
    match (&d.get("data"), &d.get("metadata")) {
        (Some(Value::Object(_)), Some(Value::Object(_))) => d["data"].clone(),
        _ => d,
    }
}

fn token_from_auth(body: &Value) -> Option<CachedToken> {
    let auth = body.get("auth")?;
    let token = auth.get("client_token")?.as_str()?.to_string();
    let ttl = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(CachedToken {
        token,
        expires: (ttl > 0).then(|| Instant::now() + std::time::Duration::from_secs(ttl)),
        renewable: auth
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        from_login: true,
    })
}

/// ` (first error of Vault)` or nothing; Vault's errors never hold secret values.
fn vault_errors(body: &Value) -> String {
    body.get("errors")
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .map(|e| format!(" ({})", e.lines().next().unwrap_or(e)))
        .unwrap_or_default()
}

fn object_to_secrets(v: &Value) -> Result<Secrets, String> {
    if !v.is_object() {
        return Err("is not a JSON object".into());
    }
    parse_secret_object(&v.to_string())
}

fn secret_path(offer: &TaskOffer, provider: &str, example: &str) -> Result<String, TaskFailure> {
    match offer.secret_path.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(TaskFailure::invalid_config(format!(
            "the target uses secret provider `{provider}` but has no secret_path; set it to the secret's path in Vault ({example})"
        ))),
    }
}

/// `hashicorp/kv`: a KV v1 or v2 secret.
pub struct VaultKvProvider {
    client: Arc<VaultClient>,
}

impl VaultKvProvider {
    pub fn new(client: Arc<VaultClient>) -> VaultKvProvider {
        VaultKvProvider { client }
    }
}

#[async_trait]
impl SecretsProvider for VaultKvProvider {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::HashicorpKv.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let path = secret_path(offer, "hashicorp/kv", "secret/data/my-app")?;
        self.client
            .read_kv(&path)
            .await
            .and_then(|v| object_to_secrets(&v))
            .map_err(|e| TaskFailure::secrets(format!("hashicorp/kv, secret `{path}`: {e}")))
    }
}

/// `hashicorp/db`: dynamic database credentials; the other connection keys come from the
/// target's config.
pub struct VaultDbProvider {
    client: Arc<VaultClient>,
    /// Leases to revoke when their task ends, by task id.
    leases: StdMutex<HashMap<i64, String>>,
}

impl VaultDbProvider {
    pub fn new(client: Arc<VaultClient>) -> VaultDbProvider {
        VaultDbProvider {
            client,
            leases: StdMutex::new(HashMap::new()),
        }
    }
}

/// The keys the username and password become for a target type.
pub fn credential_keys(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "postgres" | "postgres-csv" => ("PG_USER", "PG_PASS"),
        "mysql" | "mysql-csv" => ("MYSQL_USER", "MYSQL_PASS"),
        "sql-server" => ("MSSQL_USER", "MSSQL_PASS"),
        // Other types get neutral names; map them with secret_mapping.
        _ => ("DB_USER", "DB_PASS"),
    }
}

/// The target config key that asks for the lease's revocation (besides `VAULT_REVOKE_LEASES`).
pub const REVOKE_LEASE_CONFIG_KEY: &str = "VAULT_REVOKE_LEASE";

#[async_trait]
impl SecretsProvider for VaultDbProvider {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::HashicorpDb.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let path = secret_path(offer, "hashicorp/db", "database/creds/my-role")?;
        let fail = |e: String| TaskFailure::secrets(format!("hashicorp/db, secret `{path}`: {e}"));
        let (data, lease) = self.client.read_creds(&path).await.map_err(fail)?;
        let field = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    fail(format!(
                        "the answer has no `{k}`; is this a database secrets engine creds path?"
                    ))
                })
        };
        let (user_key, pass_key) = credential_keys(&offer.kind);
        let mut secrets: Secrets = offer.config.clone().unwrap_or_default();
        secrets.insert(user_key.to_string(), field("username")?);
        secrets.insert(pass_key.to_string(), field("password")?);
        let revoke = self.client.settings.revoke_leases
            || secrets
                .get(REVOKE_LEASE_CONFIG_KEY)
                .is_some_and(|v| is_true(v));
        if revoke
            && let Some(lease) = lease
            && let Ok(mut leases) = self.leases.lock()
        {
            leases.insert(offer.task_id, lease);
        }
        Ok(secrets)
    }

    async fn release(&self, offer: &TaskOffer) {
        let lease = self
            .leases
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&offer.task_id));
        if let Some(lease) = lease {
            match self.client.revoke_lease(&lease).await {
                Ok(()) => {
                    tracing::info!(task_id = offer.task_id, lease_id = %lease, "revoked the task's database lease")
                }
                Err(e) => {
                    tracing::warn!(task_id = offer.task_id, lease_id = %lease, "cannot revoke the task's database lease (it expires with its TTL): {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    fn settings(pairs: &[(&str, &str)]) -> VaultSettings {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VaultSettings::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn addresses_and_paths_are_normalised() {
        assert_eq!(
            normalize_addr("vault.example.com").unwrap(),
            "https://vault.example.com"
        );
        assert_eq!(
            normalize_addr("http://127.0.0.1:8200/").unwrap(),
            "http://127.0.0.1:8200"
        );
        assert_eq!(
            normalize_addr("https://v:8200/v1/").unwrap(),
            "https://v:8200"
        );
        assert!(normalize_addr("http://[::1").is_err());
        assert_eq!(
            normalize_secret_path("/v1/secret/data/app"),
            "secret/data/app"
        );
        assert_eq!(normalize_secret_path("v1/kv/app/"), "kv/app");
        assert_eq!(normalize_secret_path("secret/app"), "secret/app");
        assert_eq!(
            normalize_login_path("kubernetes-prod"),
            "/v1/auth/kubernetes-prod/login"
        );
        assert_eq!(
            normalize_login_path("/v1/auth/k8s/login"),
            "/v1/auth/k8s/login"
        );
        assert_eq!(
            normalize_login_path("auth/approle"),
            "/v1/auth/approle/login"
        );
    }

    #[test]
    fn settings_report_missing_variables_by_name() {
        let s = settings(&[
            ("VAULT_ADDR", "http://127.0.0.1:1"),
            ("VAULT_AUTH_METHOD", "approle"),
            ("VAULT_ROLE_ID", "r"),
        ]);
        assert_eq!(
            s.auth.unwrap_err(),
            "VAULT_SECRET_ID is not set on the agent (VAULT_AUTH_METHOD is `approle`)"
        );
        let s = settings(&[]);
        assert!(s.addr.unwrap_err().starts_with("VAULT_ADDR is not set"));
        assert!(s.auth.unwrap_err().starts_with("VAULT_TOKEN is not set"));
        let s = settings(&[("VAULT_ROLE", "runops")]);
        assert!(
            matches!(s.auth, Ok(VaultAuth::Kubernetes { .. })),
            "{:?}",
            s.auth
        );
        assert_eq!(s.login_path, "/v1/auth/kubernetes/login");
        let s = settings(&[("VAULT_ROLE_ID", "r"), ("VAULT_SECRET_ID", "s")]);
        assert!(
            matches!(s.auth, Ok(VaultAuth::AppRole { .. })),
            "{:?}",
            s.auth
        );
        assert_eq!(s.login_path, "/v1/auth/approle/login");
        let s = settings(&[("VAULT_AUTH_METHOD", "ldap")]);
        assert!(s.auth.unwrap_err().contains("`ldap` is not supported"));
    }

    #[test]
    fn credential_keys_follow_the_target_type() {
        assert_eq!(credential_keys("postgres-csv"), ("PG_USER", "PG_PASS"));
        assert_eq!(credential_keys("mysql"), ("MYSQL_USER", "MYSQL_PASS"));
        assert_eq!(credential_keys("sql-server"), ("MSSQL_USER", "MSSQL_PASS"));
        assert_eq!(credential_keys("bash"), ("DB_USER", "DB_PASS"));
    }

    /// A fake Vault that records the Kubernetes login it receives and then serves a KV
    /// v2 secret only to the token it issued: the request building of kubernetes auth,
    /// the namespace header and the token reuse.
    #[tokio::test]
    async fn kubernetes_login_sends_role_and_service_account_jwt_and_token_is_reused() {
        let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = logins.clone();
        let app = axum::Router::new()
            .route(
                "/v1/auth/kubernetes/login",
                post(move |h: axum::http::HeaderMap, body: String| {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(h["x-vault-namespace"], "team-a");
                        let v: Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(v, json!({"role": "runops", "jwt": "sa-jwt"}));
                        axum::Json(json!({"auth": {"client_token": "issued", "lease_duration": 3600, "renewable": true}}))
                    }
                }),
            )
            .route(
                "/v1/sys/internal/ui/mounts/{*rest}",
                get(|| async { axum::Json(json!({"data": {"path": "secret/", "options": {"version": "2"}}})) }),
            )
            .route(
                "/v1/secret/data/app",
                get(|h: axum::http::HeaderMap| async move {
                    if h.get("x-vault-token").and_then(|t| t.to_str().ok()) != Some("issued") {
                        return (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({"errors": ["permission denied"]})));
                    }
                    (axum::http::StatusCode::OK, axum::Json(json!({"data": {"data": {"K": "v"}, "metadata": {}}})))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let jwt = dir.path().join("token");
        std::fs::write(&jwt, "sa-jwt\n").unwrap();
        let client = Arc::new(VaultClient::new(settings(&[
            ("VAULT_ADDR", &addr),
            ("VAULT_NAMESPACE", "team-a"),
            ("VAULT_AUTH_METHOD", "kubernetes"),
            ("VAULT_ROLE", "runops"),
            ("VAULT_K8S_TOKEN_PATH", jwt.to_str().unwrap()),
        ])));
        let kv = VaultKvProvider::new(client);
        let mut offer = crate::secrets::tests::offer(Some("hashicorp/kv"), Some("/v1/secret/app"));
        for _ in 0..3 {
            let s = kv.fetch(&offer).await.unwrap();
            assert_eq!(s["K"], "v");
        }
        assert_eq!(
            logins.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the token is reused"
        );
        offer.secret_path = Some("secret/data/app".into());
        assert_eq!(kv.fetch(&offer).await.unwrap()["K"], "v");
    }

    /// A fake Vault whose first token is about to expire and cannot be renewed, and whose
    /// second token is then revoked: each time the agent logs in again by itself.
    #[tokio::test]
    async fn expiring_or_revoked_login_tokens_are_replaced_by_a_new_login() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Fake {
            logins: AtomicUsize,
            renewals: AtomicUsize,
            revoked_second: std::sync::atomic::AtomicBool,
        }
        let fake = Arc::new(Fake::default());
        let f1 = fake.clone();
        let f2 = fake.clone();
        let f3 = fake.clone();
        let app = axum::Router::new()
            .route(
                "/v1/auth/approle/login",
                post(move |body: String| {
                    let f = f1.clone();
                    async move {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(v, json!({"role_id": "rid", "secret_id": "sid"}));
                        let n = f.logins.fetch_add(1, Ordering::SeqCst) + 1;
                        // The first token expires within the renew margin.
                        let ttl = if n == 1 { 10 } else { 3600 };
                        axum::Json(json!({"auth": {"client_token": format!("t{n}"), "lease_duration": ttl, "renewable": true}}))
                    }
                }),
            )
            .route(
                "/v1/auth/token/renew-self",
                post(move || {
                    let f = f2.clone();
                    async move {
                        f.renewals.fetch_add(1, Ordering::SeqCst);
                        (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({"errors": ["permission denied"]})))
                    }
                }),
            )
            .route(
                "/v1/kv1/app",
                get(move |h: axum::http::HeaderMap| {
                    let f = f3.clone();
                    async move {
                        let token = h["x-vault-token"].to_str().unwrap().to_string();
                        let ok = match token.as_str() {
                            "t2" => !f.revoked_second.load(Ordering::SeqCst),
                            "t3" => true,
                            _ => false,
                        };
                        if ok {
                            (axum::http::StatusCode::OK, axum::Json(json!({"data": {"K": "v"}})))
                        } else {
                            (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({"errors": ["permission denied"]})))
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = VaultClient::new(settings(&[
            ("VAULT_ADDR", &addr),
            ("VAULT_AUTH_METHOD", "approle"),
            ("VAULT_ROLE_ID", "rid"),
            ("VAULT_SECRET_ID", "sid"),
        ]));
        // Login (t1), nearly expired at the next use: renewal refused, so a new login (t2).
        assert_eq!(client.token().await.unwrap(), "t1");
        assert_eq!(client.read_kv("kv1/app").await.unwrap(), json!({"K": "v"}));
        assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
        assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
        // t2 is revoked on the server: the 403 brings a new login (t3) and a retry.
        fake.revoked_second.store(true, Ordering::SeqCst);
        assert_eq!(client.read_kv("kv1/app").await.unwrap(), json!({"K": "v"}));
        assert_eq!(fake.logins.load(Ordering::SeqCst), 3);
        // t3 is valid for an hour: reused.
        assert_eq!(client.read_kv("kv1/app").await.unwrap(), json!({"K": "v"}));
        assert_eq!(fake.logins.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unreachable_vault_fails_fast_as_secrets() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Arc::new(VaultClient::new(settings(&[
            ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
            ("VAULT_TOKEN", "t"),
        ])));
        let e = VaultKvProvider::new(client)
            .fetch(&crate::secrets::tests::offer(
                Some("hashicorp/kv"),
                Some("secret/app"),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.reason, runops_proto::FailureReason::Secrets);
        assert!(
            e.message
                .starts_with("hashicorp/kv, secret `secret/app`: unreachable at http://127.0.0.1:"),
            "{e}"
        );
    }
}
