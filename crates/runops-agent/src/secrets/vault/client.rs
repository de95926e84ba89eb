//! [`VaultClient`]: one Vault server as the agent sees it, with its cached token (login,
//! renewal, one new login on a `403`), KV reads and database credentials.

use super::settings::*;
use crate::limits::VAULT_TOKEN_RENEW_MARGIN;
use crate::secrets::env_var::parse_secret_object;
use crate::secrets::{Secrets, http};
use serde_json::{Value, json};
use std::time::Instant;
use tokio::sync::Mutex;

pub(crate) struct CachedToken {
    pub(crate) token: String,
    /// `None`: does not expire (or a static `VAULT_TOKEN`).
    pub(crate) expires: Option<Instant>,
    pub(crate) renewable: bool,
    /// From a login (so a new login can replace it), not a static token.
    pub(crate) from_login: bool,
}

/// One Vault server as the agent sees it: its settings and the cached token.
pub struct VaultClient {
    pub(crate) settings: VaultSettings,
    pub(crate) http: reqwest::Client,
    pub(crate) token: Mutex<Option<CachedToken>>,
}

/// An answer of Vault: status and JSON body (`Null` when there is none).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl VaultClient {
    pub fn new(settings: VaultSettings) -> VaultClient {
        VaultClient {
            settings,
            http: http::client(),
            token: Mutex::new(None),
        }
    }

    pub(crate) fn addr(&self) -> Result<&str, String> {
        self.settings.addr.as_deref().map_err(|e| e.clone())
    }

    /// One HTTP call without a token (logins) or with `token`.
    pub(crate) async fn send(
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
    pub(crate) async fn login_request(&self) -> Result<Option<Value>, String> {
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

    pub(crate) async fn login(&self) -> Result<CachedToken, String> {
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
    pub(crate) async fn token(&self) -> Result<String, String> {
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
    pub(crate) async fn call(
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
    pub(crate) async fn read(&self, path: &str) -> Result<Option<Value>, String> {
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
    pub(crate) async fn kv_mount(&self, path: &str) -> Option<(String, bool)> {
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
pub(crate) fn unwrap_v2(d: Value) -> Value {
    match (&d.get("data"), &d.get("metadata")) {
        (Some(Value::Object(_)), Some(Value::Object(_))) => d["data"].clone(),
        _ => d,
    }
}

pub(crate) fn token_from_auth(body: &Value) -> Option<CachedToken> {
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
pub(crate) fn vault_errors(body: &Value) -> String {
    body.get("errors")
        .and_then(|e| e.as_array())
        .and_then(|e| e.first())
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .map(|e| format!(" ({})", e.lines().next().unwrap_or(e)))
        .unwrap_or_default()
}

pub(crate) fn object_to_secrets(v: &Value) -> Result<Secrets, String> {
    if !v.is_object() {
        return Err("is not a JSON object".into());
    }
    parse_secret_object(&v.to_string())
}
