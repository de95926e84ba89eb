//! The standard AWS credential chain of the agent, in the SDKs' order: environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), shared profile
//! (`~/.aws/credentials`, `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`), web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, i.e. EKS IRSA, through STS
//! `AssumeRoleWithWebIdentity`), and the instance role (IMDSv2). Temporary credentials
//! are cached until shortly before they expire.
//!
//! These are the *agent's* credentials: they are used for its own calls (Secrets Manager,
//! S3 logs) and never reach a task's child process (see [`crate::env`]).

use super::AwsEnv;
use crate::config::{AWS_CREDENTIALS_REFRESH_MARGIN, AWS_IMDS_TIMEOUT};
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

/// A set of AWS credentials. `Debug` never shows the secret key or the session token.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// `None` for long-lived keys.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The credential chain with its cache.
pub struct CredentialChain {
    env: AwsEnv,
    http: reqwest::Client,
    cached: Mutex<Option<AwsCredentials>>,
}

/// Default IMDS address (overridable with `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The IMDSv2 session token's lifetime we ask for.
const IMDS_TOKEN_TTL_SECS: &str = "21600";

impl CredentialChain {
    pub fn new(env: AwsEnv, http: reqwest::Client) -> CredentialChain {
        CredentialChain {
            env,
            http,
            cached: Mutex::new(None),
        }
    }

    /// Current credentials, from the cache while they are valid. The error is a sentence
    /// naming every source that was tried and why it did not give credentials.
    pub async fn get(&self) -> Result<AwsCredentials, String> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expires_at.is_none_or(|t| {
                t - chrono::Duration::from_std(AWS_CREDENTIALS_REFRESH_MARGIN).unwrap_or_default()
                    > Utc::now()
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let creds = self.resolve().await?;
        *cached = Some(creds.clone());
        Ok(creds)
    }

    async fn resolve(&self) -> Result<AwsCredentials, String> {
        if let Some(c) = from_env(&self.env)? {
            return Ok(c);
        }
        if let Some(c) = from_profile(&self.env)? {
            return Ok(c);
        }
        if let Some(c) = self.assume_web_identity_role().await? {
            return Ok(c);
        }
        match self.instance_role().await {
            Ok(c) => Ok(c),
            Err(imds) => Err(format!(
                "no AWS credentials found for the agent: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in {} (AWS_PROFILE), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or run on an instance with a role (instance metadata: {imds})",
                credentials_file(&self.env)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.aws/credentials".into())
            )),
        }
    }

    /// STS `AssumeRoleWithWebIdentity` with the token file (EKS IRSA and the like).
    async fn assume_web_identity_role(&self) -> Result<Option<AwsCredentials>, String> {
        let (Some(file), Some(role)) = (
            self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.env.get("AWS_ROLE_ARN"),
        ) else {
            return Ok(None);
        };
        let token = tokio::fs::read_to_string(file).await.map_err(|e| {
            format!(
                "cannot read the web identity token file {file} (AWS_WEB_IDENTITY_TOKEN_FILE): {e}"
            )
        })?;
        let session = self
            .env
            .get("AWS_ROLE_SESSION_NAME")
            .unwrap_or("runops-agent");
        let endpoint = self
            .env
            .endpoint("sts", "STS")
            .unwrap_or_else(|| match self.env.region() {
                Some(r) => format!("https://sts.{r}.amazonaws.com"),
                None => "https://sts.amazonaws.com".to_string(),
            });
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", session),
            ("WebIdentityToken", token.trim()),
        ];
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", super::sigv4::uri_encode(v, true)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach STS at {endpoint} to assume {role}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = xml_tag(&text, "Code").unwrap_or("unknown error");
            return Err(format!(
                "STS refused to assume role {role} with the web identity token ({status}, {code})"
            ));
        }
        let get = |t: &str| {
            xml_tag(&text, t)
                .map(str::to_string)
                .ok_or_else(|| format!("the STS answer for role {role} lacks {t}"))
        };
        Ok(Some(AwsCredentials {
            access_key_id: get("AccessKeyId")?,
            secret_access_key: get("SecretAccessKey")?,
            session_token: Some(get("SessionToken")?),
            expires_at: get("Expiration")?.parse().ok(),
        }))
    }

    /// The instance role through IMDSv2 (token, role name, credentials).
    async fn instance_role(&self) -> Result<AwsCredentials, String> {
        if self
            .env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err("disabled by AWS_EC2_METADATA_DISABLED".into());
        }
        let base = self
            .env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or(IMDS_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        let unreachable = |e: reqwest::Error| format!("not reachable at {base}: {e}");
        let token = self
            .http
            .put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_SECS)
            .timeout(AWS_IMDS_TIMEOUT)
            .send()
            .await
            .map_err(unreachable)?
            .error_for_status()
            .map_err(|e| format!("no session token: {e}"))?
            .text()
            .await
            .map_err(unreachable)?;
        let get = |path: String| {
            self.http
                .get(format!("{base}{path}"))
                .header("x-aws-ec2-metadata-token", token.clone())
                .timeout(AWS_IMDS_TIMEOUT)
                .send()
        };
        let roles = get("/latest/meta-data/iam/security-credentials/".into())
            .await
            .map_err(unreachable)?
            .error_for_status()
            .map_err(|e| format!("the instance has no role: {e}"))?
            .text()
            .await
            .map_err(unreachable)?;
        let role = roles
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or("the instance has no role")?
            .to_string();
        let creds: serde_json::Value =
            get(format!("/latest/meta-data/iam/security-credentials/{role}"))
                .await
                .map_err(unreachable)?
                .json()
                .await
                .map_err(|e| format!("unreadable credentials of role {role}: {e}"))?;
        let field = |k: &str| {
            creds
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("the credentials of role {role} lack {k}"))
        };
        Ok(AwsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("Token")?),
            expires_at: field("Expiration")?.parse().ok(),
        })
    }
}

fn from_env(env: &AwsEnv) -> Result<Option<AwsCredentials>, String> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: env.get("AWS_SESSION_TOKEN").map(str::to_string),
            expires_at: None,
        })),
        (Some(_), None) => {
            Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both".into())
        }
        (None, Some(_)) => {
            Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both".into())
        }
        (None, None) => Ok(None),
    }
}

fn credentials_file(env: &AwsEnv) -> Option<std::path::PathBuf> {
    if let Some(f) = env.get("AWS_SHARED_CREDENTIALS_FILE") {
        return Some(f.into());
    }
    env.get("HOME")
        .map(|h| std::path::Path::new(h).join(".aws").join("credentials"))
}

/// The profile's keys from the shared credentials file. A missing file is no error (the
/// chain goes on) unless a profile was asked for by name.
fn from_profile(env: &AwsEnv) -> Result<Option<AwsCredentials>, String> {
    let named = env.get("AWS_PROFILE");
    let profile = named.unwrap_or("default");
    let Some(path) = credentials_file(env) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the AWS credentials file {} for profile `{profile}`: {e}",
                path.display()
            ));
        }
    };
    let section = ini_section(&text, profile);
    let Some(section) = section else {
        if named.is_some() {
            return Err(format!(
                "AWS profile `{profile}` (AWS_PROFILE) is not in {}",
                path.display()
            ));
        }
        return Ok(None);
    };
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: get("aws_session_token"),
            expires_at: None,
        })),
        _ => Err(format!(
            "AWS profile `{profile}` in {} lacks aws_access_key_id or aws_secret_access_key",
            path.display()
        )),
    }
}

/// The `key = value` pairs of `[name]` (or `[profile name]`, as in `~/.aws/config`).
pub(crate) fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut found = None::<Vec<(String, String)>>;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let header = header.trim();
            let header = header.strip_prefix("profile ").unwrap_or(header).trim();
            inside = header == name;
            if inside && found.is_none() {
                found = Some(Vec::new());
            }
            continue;
        }
        if inside
            && let Some((k, v)) = line.split_once('=')
            && let Some(section) = found.as_mut()
        {
            section.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    found
}

/// The text of the first `<tag>...</tag>` (enough for the flat XML answers of STS and S3).
pub(crate) fn xml_tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> AwsEnv {
        AwsEnv::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[tokio::test]
    async fn environment_keys_come_first() {
        let chain = CredentialChain::new(
            env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "SECRET"),
                ("AWS_SESSION_TOKEN", "TOK"),
            ]),
            reqwest::Client::new(),
        );
        let c = chain.get().await.unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.session_token.as_deref(), Some("TOK"));
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[tokio::test]
    async fn half_set_environment_keys_are_a_clear_error() {
        let chain = CredentialChain::new(
            env(&[("AWS_ACCESS_KEY_ID", "AKID")]),
            reqwest::Client::new(),
        );
        let e = chain.get().await.unwrap_err();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
    }

    #[tokio::test]
    async fn named_profile_is_read_from_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[ops]\naws_access_key_id=OPS\naws_secret_access_key=OS\naws_session_token = T\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = CredentialChain::new(
            env(&[("AWS_SHARED_CREDENTIALS_FILE", f), ("AWS_PROFILE", "ops")]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap();
        assert_eq!(c.access_key_id, "OPS");
        assert_eq!(c.session_token.as_deref(), Some("T"));
        let c = CredentialChain::new(
            env(&[("AWS_SHARED_CREDENTIALS_FILE", f)]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap();
        assert_eq!(c.access_key_id, "D");
        let e = CredentialChain::new(
            env(&[("AWS_SHARED_CREDENTIALS_FILE", f), ("AWS_PROFILE", "nope")]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap_err();
        assert!(
            e.contains("AWS profile `nope` (AWS_PROFILE) is not in"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn nothing_configured_names_every_source() {
        let e = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap_err();
        assert!(
            e.starts_with("no AWS credentials found for the agent"),
            "{e}"
        );
        assert!(e.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{e}");
        assert!(e.contains("disabled by AWS_EC2_METADATA_DISABLED"), "{e}");
    }

    /// A fake STS and IMDS on loopback: the requests the chain makes, and their parsing.
    #[tokio::test]
    async fn web_identity_and_imds_are_asked_as_aws_documents() {
        use axum::routing::{get, post, put};
        let app = axum::Router::new()
            .route(
                "/",
                post(|body: String| async move {
                    assert!(body.contains("Action=AssumeRoleWithWebIdentity"), "{body}");
                    assert!(body.contains("WebIdentityToken=jwt-from-file"), "{body}");
                    assert!(body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"), "{body}");
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>WI</AccessKeyId><SecretAccessKey>WS</SecretAccessKey><SessionToken>WT</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                }),
            )
            .route("/latest/api/token", put(|| async { "imds-token" }))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(|| async { "my-role\n" }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/my-role",
                get(|h: axum::http::HeaderMap| async move {
                    assert_eq!(h["x-aws-ec2-metadata-token"], "imds-token");
                    r#"{"AccessKeyId":"IM","SecretAccessKey":"IS","Token":"IT","Expiration":"2099-01-01T00:00:00Z"}"#
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "jwt-from-file\n").unwrap();
        let c = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
                ("AWS_ENDPOINT_URL_STS", &base),
            ]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("WI", Some("WT"))
        );
        assert!(c.expires_at.is_some());
        let c = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &base),
            ]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("IM", Some("IT"))
        );
    }
}
