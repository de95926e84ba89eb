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
//!
//! Files: [`settings`] (the agent's Vault settings), [`client`] (the client and its
//! token), and here the two providers.

mod client;
mod settings;

pub use client::*;
pub use settings::*;

use super::{Secrets, SecretsProvider};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

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
    use serde_json::json;

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
