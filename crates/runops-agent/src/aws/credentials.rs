//! The standard AWS credential chain of the agent. The order is the one of the AWS CLI
//! and most SDKs (Python, Java, Go, JavaScript, PHP):
//!
//! 1. environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (EKS IRSA), through
//!    STS `AssumeRoleWithWebIdentity`;
//! 3. the shared profile (`AWS_PROFILE`, default `default`): static keys in the
//!    credentials file (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`), then
//!    `credential_process`, then static keys in the config file (`AWS_CONFIG_FILE`,
//!    `~/.aws/config`);
//! 4. the container endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS task roles)
//!    or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity and others), with the
//!    token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` / `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//! 5. the instance role (IMDSv2).
//!
//! (The Rust SDK asks the profile before web identity; it only matters when both are
//! configured.) A source that is configured but fails ends the search with its error, as
//! in the SDKs, instead of silently using a later source. Temporary credentials are
//! cached until shortly before they expire. Every error is an [`AwsError`] whose kind
//! says whether a retry can help.
//!
//! These are the *agent's* credentials: they are used for its own calls (Secrets Manager,
//! S3 logs) and never reach a task's child process (see [`crate::env`]).

use super::{AwsEnv, AwsError, classify};
use crate::limits::{AWS_CREDENTIALS_REFRESH_MARGIN, AWS_IMDS_TIMEOUT};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
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
    /// Where `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is asked ([`CONTAINER_HOST`]; tests
    /// move it, nothing else can listen on that address).
    container_host: String,
    /// How long a `credential_process` may run ([`PROCESS_TIMEOUT`]; shorter in tests).
    process_timeout: Duration,
}

/// Default IMDS address (overridable with `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The IMDSv2 session token's lifetime we ask for.
const IMDS_TOKEN_TTL_SECS: &str = "21600";
/// The ECS agent's credentials endpoint that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
/// is relative to (fixed by the protocol).
const CONTAINER_HOST: &str = "http://169.254.170.2";
/// Timeout of one container credentials request: the endpoint is on the node itself and
/// answers in milliseconds; 5 s covers a loaded node without holding a task for long.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from the container endpoint (the JSON is well under 4 KiB).
const CONTAINER_MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a `credential_process` may run: helpers answer in about a second; one that
/// has not answered in 60 s is hung and the task waiting for its secrets must not hang.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest stdout or stderr kept from a `credential_process` (its JSON is well under
/// 4 KiB); more is read and dropped so the helper never blocks on a full pipe.
const PROCESS_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How much of a failed helper's stderr goes into the error message (its last bytes).
const PROCESS_STDERR_SHOWN_BYTES: usize = 1000;
/// Profile settings of other credential sources the agent does not implement: refused
/// with a message rather than ignored (which would fall through to another identity).
const UNSUPPORTED_PROFILE_KEYS: &[&str] = &[
    "role_arn",
    "source_profile",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

impl CredentialChain {
    pub fn new(env: AwsEnv, http: reqwest::Client) -> CredentialChain {
        CredentialChain {
            env,
            http,
            cached: Mutex::new(None),
            container_host: CONTAINER_HOST.to_string(),
            process_timeout: PROCESS_TIMEOUT,
        }
    }

    /// Current credentials, from the cache while they are valid.
    pub async fn get(&self) -> Result<AwsCredentials, AwsError> {
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

    /// Forgets the cached credentials, after AWS refused them: the next call asks the
    /// sources again (a rotated key, a replaced role, a refreshed helper).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn resolve(&self) -> Result<AwsCredentials, AwsError> {
        if let Some(c) = from_env(&self.env)? {
            return Ok(c);
        }
        if let Some(c) = self.assume_web_identity_role().await? {
            return Ok(c);
        }
        if let Some(c) = self.profile_credentials().await? {
            return Ok(c);
        }
        if let Some(c) = self.container_credentials().await? {
            return Ok(c);
        }
        match self.instance_role().await {
            Ok(c) => Ok(c),
            Err(imds) => Err(AwsError::misconfigured(format!(
                "no AWS credentials found for the agent: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or a profile (AWS_PROFILE) with keys or credential_process in {} or {}, or AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / AWS_CONTAINER_CREDENTIALS_FULL_URI (ECS, EKS Pod Identity), or run on an instance with a role (instance metadata: {imds})",
                shown(self.env.credentials_file(), "~/.aws/credentials"),
                shown(self.env.config_file(), "~/.aws/config"),
            ))),
        }
    }

    /// STS `AssumeRoleWithWebIdentity` with the token file (EKS IRSA and the like).
    async fn assume_web_identity_role(&self) -> Result<Option<AwsCredentials>, AwsError> {
        let (Some(file), Some(role)) = (
            self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.env.get("AWS_ROLE_ARN"),
        ) else {
            return Ok(None);
        };
        let token = tokio::fs::read_to_string(file).await.map_err(|e| {
            AwsError::misconfigured(format!(
                "web identity: cannot read the token file {file} (AWS_WEB_IDENTITY_TOKEN_FILE): {e}"
            ))
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
        let source = format!("web identity (STS at {endpoint}, role {role})");
        let resp = self
            .http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| AwsError::from_transport(&e, &endpoint).context(&source))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| AwsError::from_transport(&e, &endpoint).context(&source))?;
        if !status.is_success() {
            let code = xml_tag(&text, "Code").unwrap_or_default();
            let hint = match classify(status, &code) {
                super::AwsErrorKind::Denied => {
                    "; check the role's trust policy for this token's issuer and subject, and that the token is current"
                }
                super::AwsErrorKind::Transient => "; retried later",
                super::AwsErrorKind::Misconfigured => "; check AWS_ROLE_ARN and the STS endpoint",
            };
            let code = if code.is_empty() {
                "no error code".to_string()
            } else {
                code
            };
            return Err(AwsError::new(
                classify(status, &code),
                format!("{source}: STS refused the token (HTTP {status}, {code}){hint}"),
            ));
        }
        let get = |t: &str| {
            xml_tag(&text, t).ok_or_else(|| {
                AwsError::misconfigured(format!("{source}: the STS answer lacks {t}"))
            })
        };
        Ok(Some(AwsCredentials {
            access_key_id: get("AccessKeyId")?,
            secret_access_key: get("SecretAccessKey")?,
            session_token: Some(get("SessionToken")?),
            expires_at: get("Expiration")?.parse().ok(),
        }))
    }

    /// The profile's credentials: static keys of the credentials file, then
    /// `credential_process` (credentials file, then config file), then static keys of the
    /// config file — the AWS CLI's order. `None` when the profile has none of them.
    async fn profile_credentials(&self) -> Result<Option<AwsCredentials>, AwsError> {
        let named = self.env.get("AWS_PROFILE");
        let profile = named.unwrap_or("default");
        let creds_path = self.env.credentials_file();
        let config_path = self.env.config_file();
        let creds = read_profile(creds_path.as_deref(), profile)?;
        let config = read_profile(config_path.as_deref(), profile)?;
        if creds.is_none() && config.is_none() {
            if named.is_some() {
                return Err(AwsError::misconfigured(format!(
                    "AWS profile `{profile}` (AWS_PROFILE) is not in {} nor in {}; add it or fix AWS_PROFILE",
                    shown(creds_path, "~/.aws/credentials"),
                    shown(config_path, "~/.aws/config"),
                )));
            }
            return Ok(None);
        }
        if let Some(p) = &creds
            && let Some(c) = p.static_keys(profile)?
        {
            return Ok(Some(c));
        }
        for p in creds.iter().chain(config.iter()) {
            if let Some(command) = p.get("credential_process") {
                return self
                    .credential_process(command, profile, &p.path)
                    .await
                    .map(Some);
            }
        }
        if let Some(p) = &config
            && let Some(c) = p.static_keys(profile)?
        {
            return Ok(Some(c));
        }
        for p in creds.iter().chain(config.iter()) {
            if let Some(key) = UNSUPPORTED_PROFILE_KEYS.iter().find(|k| p.get(k).is_some()) {
                return Err(AwsError::misconfigured(format!(
                    "AWS profile `{profile}` in {} uses `{key}`, which the agent does not support; give the profile aws_access_key_id/aws_secret_access_key or a credential_process (for example `aws configure export-credentials --profile NAME --format process`)",
                    p.path.display()
                )));
            }
        }
        Ok(None)
    }

    /// Runs the profile's `credential_process` (split into words like `sh` does, run
    /// without a shell) and reads the documented JSON from its stdout. Its stdout holds
    /// the secret key, so no message ever shows it; a failure shows its stderr.
    async fn credential_process(
        &self,
        command: &str,
        profile: &str,
        path: &Path,
    ) -> Result<AwsCredentials, AwsError> {
        let setting = format!(
            "credential_process of AWS profile `{profile}` ({})",
            path.display()
        );
        let argv = crate::runners::argv::split_words(command).map_err(|e| {
            AwsError::misconfigured(format!("{setting} cannot be split into words: {e}"))
        })?;
        let Some(program) = argv.first() else {
            return Err(AwsError::misconfigured(format!(
                "{setting} is empty; set it to the command that prints the credentials"
            )));
        };
        // Only the program is named: its arguments may hold a secret (a token, a PIN).
        let source = format!(
            "credential_process `{program}` of AWS profile `{profile}` ({})",
            path.display()
        );
        let mut child = tokio::process::Command::new(program)
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                AwsError::misconfigured(format!(
                    "{source} cannot be started: {e}; check the program's path and that the agent's user may run it"
                ))
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
            (out, err, child.wait().await)
        };
        let (out, err, status) = match tokio::time::timeout(self.process_timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                let _ = child.kill().await;
                return Err(AwsError::transient(format!(
                    "{source} did not finish within {} s and was stopped; check that it does not wait for input",
                    self.process_timeout.as_secs_f32()
                )));
            }
        };
        let status = status
            .map_err(|e| AwsError::misconfigured(format!("{source}: cannot wait for it: {e}")))?;
        if !status.success() {
            let (err, _) = err;
            let text = String::from_utf8_lossy(&err);
            let text = text.trim();
            let tail = match text.char_indices().rev().nth(PROCESS_STDERR_SHOWN_BYTES) {
                Some((i, _)) => format!("…{}", &text[i..]),
                None => text.to_string(),
            };
            let said = if tail.is_empty() {
                "it printed nothing on stderr".to_string()
            } else {
                format!("stderr: {}", tail.replace('\n', " | "))
            };
            return Err(AwsError::misconfigured(format!(
                "{source} failed ({status}; {said}); run it as the agent's user to see why"
            )));
        }
        let (out, overflow) = out;
        if overflow {
            return Err(AwsError::misconfigured(format!(
                "{source} printed more than {PROCESS_MAX_OUTPUT_BYTES} bytes; it must print only the credentials JSON"
            )));
        }
        parse_process_output(&out, &source)
    }

    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on [`CONTAINER_HOST`]) or
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (on an allowed host), with the authorization
    /// token, answering `{AccessKeyId, SecretAccessKey, Token, Expiration}`.
    async fn container_credentials(&self) -> Result<Option<AwsCredentials>, AwsError> {
        let (var, url) = if let Some(rel) = self.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            if !rel.starts_with('/') {
                return Err(AwsError::misconfigured(
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path starting with `/` (it is asked at http://169.254.170.2)",
                ));
            }
            let full = format!("{}{rel}", self.container_host);
            let url = reqwest::Url::parse(&full).map_err(|e| {
                AwsError::misconfigured(format!(
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI does not make a URL ({e})"
                ))
            })?;
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", url)
        } else if let Some(full) = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                container_full_uri(full)?,
            )
        } else {
            return Ok(None);
        };
        // Only scheme, host and port: the path may be a per-task capability.
        let origin = url.origin().ascii_serialization();
        let source = format!("container credentials at {origin} ({var})");
        let mut req = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .timeout(CONTAINER_TIMEOUT);
        if let Some(token) = container_token(&self.env).await? {
            req = req.header("authorization", token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AwsError::from_transport(&e, &origin).context(&source))?;
        let status = resp.status();
        let body = read_answer(resp, CONTAINER_MAX_ANSWER_BYTES)
            .await
            .map_err(|e| AwsError::from_transport(&e, &origin).context(&source))?
            .ok_or_else(|| {
                AwsError::misconfigured(format!(
                    "{source} answered more than {CONTAINER_MAX_ANSWER_BYTES} bytes; is the URI right?"
                ))
            })?;
        if !status.is_success() {
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                super::AwsErrorKind::Transient
            } else if status.as_u16() == 401 || status.as_u16() == 403 {
                super::AwsErrorKind::Denied
            } else {
                super::AwsErrorKind::Misconfigured
            };
            let hint = match kind {
                super::AwsErrorKind::Denied => {
                    "; check AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (or AWS_CONTAINER_AUTHORIZATION_TOKEN)"
                }
                super::AwsErrorKind::Transient => "; retried later",
                super::AwsErrorKind::Misconfigured => "; check the URI variable",
            };
            return Err(AwsError::new(
                kind,
                format!("{source} refused the request (HTTP {status}){hint}"),
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            AwsError::misconfigured(format!(
                "{source} answered something that is not JSON ({e})"
            ))
        })?;
        let field = |k: &str| {
            json.get(k)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| AwsError::misconfigured(format!("{source}: the answer lacks {k}")))
        };
        let expires_at = match json.get("Expiration").and_then(|v| v.as_str()) {
            Some(t) => Some(t.parse::<DateTime<Utc>>().map_err(|_| {
                AwsError::misconfigured(format!(
                    "{source}: the answer's Expiration `{t}` is not an ISO 8601 time"
                ))
            })?),
            None => None,
        };
        Ok(Some(AwsCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: json
                .get("Token")
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            expires_at,
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

fn shown(path: Option<PathBuf>, default: &str) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| default.to_string())
}

fn from_env(env: &AwsEnv) -> Result<Option<AwsCredentials>, AwsError> {
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
        (Some(_), None) => Err(AwsError::misconfigured(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both",
        )),
        (None, Some(_)) => Err(AwsError::misconfigured(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both",
        )),
        (None, None) => Ok(None),
    }
}

/// One profile's settings in one shared file.
struct ProfileSection {
    path: PathBuf,
    pairs: Vec<(String, String)>,
}

impl ProfileSection {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`); half a pair
    /// is an error.
    fn static_keys(&self, profile: &str) -> Result<Option<AwsCredentials>, AwsError> {
        match (
            self.get("aws_access_key_id"),
            self.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: self.get("aws_session_token").map(str::to_string),
                expires_at: None,
            })),
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(AwsError::misconfigured(format!(
                "AWS profile `{profile}` in {} has only one of aws_access_key_id and aws_secret_access_key; set both",
                self.path.display()
            ))),
        }
    }
}

/// The profile's section of a shared file; `None` when the file or the section does not
/// exist (the chain goes on).
fn read_profile(path: Option<&Path>, profile: &str) -> Result<Option<ProfileSection>, AwsError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AwsError::misconfigured(format!(
                "cannot read the AWS file {} for profile `{profile}`: {e}",
                path.display()
            )));
        }
    };
    Ok(ini_section(&text, profile).map(|pairs| ProfileSection {
        path: path.to_path_buf(),
        pairs,
    }))
}

/// The body of an answer; `None` when it is longer than `max` bytes.
async fn read_answer(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Reads all of `r`, keeping at most [`PROCESS_MAX_OUTPUT_BYTES`]; `true` when more came.
async fn read_bounded(r: Option<impl tokio::io::AsyncRead + Unpin>) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut overflow = false;
    let Some(mut r) = r else {
        return (kept, overflow);
    };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, overflow),
            Ok(n) => {
                let room = PROCESS_MAX_OUTPUT_BYTES - kept.len();
                if n > room {
                    overflow = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The documented `credential_process` output: `{"Version": 1, "AccessKeyId",
/// "SecretAccessKey", "SessionToken"?, "Expiration"?}`. Messages name fields, never
/// their values (except Version and Expiration, which are not secret).
fn parse_process_output(out: &[u8], source: &str) -> Result<AwsCredentials, AwsError> {
    const SHAPE: &str = r#"{"Version": 1, "AccessKeyId": "…", "SecretAccessKey": "…", "SessionToken": "…", "Expiration": "2030-01-01T00:00:00Z"}"#;
    // Parsing into a `Value` first: serde's typed errors would quote the offending value.
    let json: serde_json::Value = serde_json::from_slice(out).map_err(|e| {
        AwsError::misconfigured(format!(
            "{source} did not print JSON ({e}); it must print {SHAPE}"
        ))
    })?;
    match json.get("Version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) if v.is_number() => {
            return Err(AwsError::misconfigured(format!(
                "{source} printed Version {v}; only Version 1 is defined"
            )));
        }
        _ => {
            return Err(AwsError::misconfigured(format!(
                "{source} printed no numeric Version; it must print {SHAPE}"
            )));
        }
    }
    let text = |k: &str| -> Result<Option<String>, AwsError> {
        match json.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(AwsError::misconfigured(format!(
                "{source} printed a {k} that is not a non-empty string"
            ))),
        }
    };
    let required = |k: &str| {
        text(k)?.ok_or_else(|| {
            AwsError::misconfigured(format!("{source} printed no {k}; it must print {SHAPE}"))
        })
    };
    let expires_at = match text("Expiration")? {
        Some(t) => {
            let at = t.parse::<DateTime<Utc>>().map_err(|_| {
                AwsError::misconfigured(format!(
                    "{source} printed Expiration `{t}`, which is not an ISO 8601 time such as 2030-01-01T00:00:00Z"
                ))
            })?;
            if at <= Utc::now() {
                return Err(AwsError::misconfigured(format!(
                    "{source} printed credentials that expired at {t}; it must print current ones"
                )));
            }
            Some(at)
        }
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: required("AccessKeyId")?,
        secret_access_key: required("SecretAccessKey")?,
        session_token: text("SessionToken")?,
        expires_at,
    })
}

/// Checks `AWS_CONTAINER_CREDENTIALS_FULL_URI` as the AWS SDKs do: `https` anywhere;
/// plain `http` only to a loopback address, the ECS endpoint `169.254.170.2` or the EKS
/// Pod Identity agent (`169.254.170.23`, `fd00:ec2::23`), where no one else can listen.
pub(crate) fn container_full_uri(full: &str) -> Result<reqwest::Url, AwsError> {
    let url = reqwest::Url::parse(full).map_err(|e| {
        AwsError::misconfigured(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL ({e}); set it to http://169.254.170.23/v1/credentials (EKS Pod Identity) or another allowed address"
        ))
    })?;
    // `host_str` keeps IPv6 in brackets; an IP literal is compared as an address, so
    // `127.000.0.1`-style spellings normalised by the URL parser are handled too.
    let host = url.host_str().unwrap_or("");
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    let allowed = match (url.scheme(), ip) {
        ("https", _) => !host.is_empty(),
        ("http", Some(std::net::IpAddr::V4(ip))) => {
            ip.is_loopback()
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        ("http", Some(std::net::IpAddr::V6(ip))) => {
            ip.is_loopback() || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
        }
        ("http", None) => host.eq_ignore_ascii_case("localhost"),
        _ => false,
    };
    if !allowed {
        return Err(AwsError::misconfigured(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI points at {}, which is neither https nor a loopback address, 169.254.170.2 (ECS), 169.254.170.23 or [fd00:ec2::23] (EKS Pod Identity); the AWS SDKs refuse it too, as credentials could be sent to anyone on the network",
            url.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// The container endpoint's `Authorization` value: the token file (read at each request,
/// since the agent rotates it) before the token variable.
async fn container_token(env: &AwsEnv) -> Result<Option<String>, AwsError> {
    let (token, from) = if let Some(file) = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        let t = tokio::fs::read_to_string(file).await.map_err(|e| {
            AwsError::misconfigured(format!(
                "container credentials: cannot read the token file {file} (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE): {e}"
            ))
        })?;
        (t, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    } else if let Some(t) = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
        (t.to_string(), "AWS_CONTAINER_AUTHORIZATION_TOKEN")
    } else {
        return Ok(None);
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(AwsError::misconfigured(format!(
            "container credentials: the token of {from} is empty"
        )));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(AwsError::misconfigured(format!(
            "container credentials: the token of {from} contains a line break or another control character; it must be one line"
        )));
    }
    Ok(Some(token.to_string()))
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

/// The decoded text of the first `<tag>...</tag>` (enough for the flat XML answers of
/// STS and S3): entities are decoded, so a secret key with `+` or `/` sent as `&#43;` or
/// `&#x2F;` comes out as it was issued.
pub(crate) fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml_unescape(xml[start..end].trim()))
}

/// Decodes XML's five predefined entities and numeric character references (`&#43;`,
/// `&#x2F;`). Anything else after `&` is kept as it is (XML answers never hold it).
pub(crate) fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').and_then(|semi| {
            let name = &after[..semi];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let n = if let Some(hex) =
                        name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = name.strip_prefix('#') {
                        dec.parse::<u32>().ok()
                    } else {
                        None
                    };
                    n.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsErrorKind;

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
        assert!(e.message.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
        assert_eq!(e.kind, AwsErrorKind::Misconfigured);
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
            e.message
                .contains("AWS profile `nope` (AWS_PROFILE) is not in"),
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
            e.message
                .starts_with("no AWS credentials found for the agent"),
            "{e}"
        );
        for source in [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "credential_process",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "disabled by AWS_EC2_METADATA_DISABLED",
        ] {
            assert!(e.message.contains(source), "{e}");
        }
        assert_eq!(e.kind, AwsErrorKind::Misconfigured);
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
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>WI</AccessKeyId><SecretAccessKey>wJal&#43;rX&#x2F;K7&amp;q&lt;&gt;&quot;&apos;</SecretAccessKey><SessionToken>WT&#x2b;&#x2B;/==</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
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
            ("WI", Some("WT++/=="))
        );
        assert_eq!(c.secret_access_key, "wJal+rX/K7&q<>\"'");
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

    #[test]
    fn xml_values_decode_predefined_entities_and_character_references() {
        assert_eq!(
            xml_unescape("a&lt;b&gt;c&amp;d&quot;e&apos;f&#43;g&#x2F;h&#X2f;"),
            "a<b>c&d\"e'f+g/h/"
        );
        // Not an entity: kept as it is.
        assert_eq!(
            xml_unescape("x & y &bogus; &#xZZ; &#1114112; &"),
            "x & y &bogus; &#xZZ; &#1114112; &"
        );
        assert_eq!(
            xml_tag("<R><Code>Access&#68;enied</Code></R>", "Code").as_deref(),
            Some("AccessDenied")
        );
    }

    /// A container credentials endpoint as the ECS agent and the EKS Pod Identity agent
    /// run it: `GET` with `Authorization: <token>` (answers 403 to any other token),
    /// `{AccessKeyId, SecretAccessKey, Token, Expiration}`; counts what it answered.
    struct ContainerStandIn {
        base: String,
        state: std::sync::Arc<StandInState>,
    }

    #[derive(Default)]
    struct StandInState {
        token: std::sync::Mutex<String>,
        expiration: std::sync::Mutex<String>,
        fail_with: std::sync::Mutex<Option<u16>>,
        served: std::sync::atomic::AtomicUsize,
        paths: std::sync::Mutex<Vec<String>>,
    }

    impl ContainerStandIn {
        async fn start(token: &str, expiration: DateTime<Utc>) -> ContainerStandIn {
            use axum::http::{HeaderMap, StatusCode, Uri};
            let state = std::sync::Arc::new(StandInState::default());
            *state.token.lock().unwrap() = token.to_string();
            *state.expiration.lock().unwrap() = expiration.to_rfc3339();
            let s = state.clone();
            let app = axum::Router::new().fallback(move |h: HeaderMap, uri: Uri| {
                let s = s.clone();
                async move {
                    if let Some(code) = *s.fail_with.lock().unwrap() {
                        return (StatusCode::from_u16(code).unwrap(), String::new());
                    }
                    let expected = s.token.lock().unwrap().clone();
                    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
                        return (
                            StatusCode::FORBIDDEN,
                            r#"{"code":"AccessDeniedException"}"#.to_string(),
                        );
                    }
                    s.paths.lock().unwrap().push(uri.to_string());
                    s.served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let exp = s.expiration.lock().unwrap().clone();
                    (
                        StatusCode::OK,
                        serde_json::json!({
                            "AccessKeyId": "ASIACONTAINER",
                            "SecretAccessKey": "container/secret+key",
                            "Token": "container-session-token",
                            "Expiration": exp,
                        })
                        .to_string(),
                    )
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            ContainerStandIn { base, state }
        }

        fn served(&self) -> usize {
            self.state.served.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn far_future() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(6)
    }

    #[tokio::test]
    async fn container_full_uri_sends_the_token_file_and_caches_until_expiry() {
        let stand = ContainerStandIn::start("pod-identity-token-1", far_future()).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("eks-pod-identity-token");
        std::fs::write(&token_file, "  pod-identity-token-1\n").unwrap();
        let uri = format!("{}/v1/credentials", stand.base);
        let chain = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token_file.to_str().unwrap(),
                ),
                // The file wins over the variable.
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "stale-token"),
            ]),
            reqwest::Client::new(),
        );
        let c = chain.get().await.unwrap();
        assert_eq!(c.access_key_id, "ASIACONTAINER");
        assert_eq!(c.secret_access_key, "container/secret+key");
        assert_eq!(c.session_token.as_deref(), Some("container-session-token"));
        assert!(c.expires_at.is_some());
        chain.get().await.unwrap();
        assert_eq!(stand.served(), 1, "valid credentials are cached");
        assert_eq!(*stand.state.paths.lock().unwrap(), vec!["/v1/credentials"]);

        // The token file is read for each request: the node agent rotates it.
        *stand.state.token.lock().unwrap() = "pod-identity-token-2".into();
        std::fs::write(&token_file, "pod-identity-token-2").unwrap();
        chain.invalidate().await;
        chain.get().await.unwrap();
        assert_eq!(stand.served(), 2);

        // A token the endpoint refuses: denied, naming the source and what to check.
        *stand.state.token.lock().unwrap() = "another-token".into();
        chain.invalidate().await;
        let e = chain.get().await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Denied, "{e}");
        assert!(
            e.message.starts_with(&format!(
                "container credentials at {} (AWS_CONTAINER_CREDENTIALS_FULL_URI) refused the request (HTTP 403 Forbidden)",
                stand.base
            )),
            "{e}"
        );
        assert!(
            e.message.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            "{e}"
        );
        assert!(!e.message.contains("pod-identity-token"), "{e}");

        // An endpoint in trouble is transient (retried by the callers).
        *stand.state.fail_with.lock().unwrap() = Some(503);
        let e = chain.get().await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Transient, "{e}");
        // A missing token file is a setting to fix.
        *stand.state.fail_with.lock().unwrap() = None;
        std::fs::remove_file(&token_file).unwrap();
        let e = chain.get().await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Misconfigured, "{e}");
        assert!(
            e.message.contains("cannot read the token file")
                && e.message.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn container_relative_uri_is_asked_on_the_ecs_address_with_the_token_variable() {
        // Expires within the refresh margin: asked again at every use.
        let stand =
            ContainerStandIn::start("ecs-token", Utc::now() + chrono::Duration::seconds(60)).await;
        let mut chain = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "/v2/credentials/4f1b-task",
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ecs-token"),
                // RELATIVE_URI wins, as in the SDKs.
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://10.9.9.9/never",
                ),
            ]),
            reqwest::Client::new(),
        );
        assert_eq!(chain.container_host, "http://169.254.170.2");
        chain.container_host = stand.base.clone();
        assert_eq!(chain.get().await.unwrap().access_key_id, "ASIACONTAINER");
        chain.get().await.unwrap();
        assert_eq!(
            stand.served(),
            2,
            "credentials near expiry are fetched again"
        );
        assert_eq!(
            *stand.state.paths.lock().unwrap(),
            vec!["/v2/credentials/4f1b-task", "/v2/credentials/4f1b-task"]
        );
        let e = CredentialChain::new(
            env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/creds")]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap_err();
        assert!(
            e.message.contains("must be a path starting with `/`"),
            "{e}"
        );
    }

    #[test]
    fn container_full_uri_hosts_are_those_the_sdks_allow() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/creds",
            "http://localhost:9/creds",
            "http://[::1]:9/creds",
            "http://169.254.170.2/v2/credentials/x",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://credentials.example.com/role",
        ] {
            assert!(container_full_uri(ok).is_ok(), "{ok} should be allowed");
        }
        for bad in [
            "http://10.0.0.5/creds",
            "http://169.254.169.254/latest/meta-data",
            "http://example.com/creds",
            "http://[fd00:ec2::24]/creds",
            "ftp://127.0.0.1/creds",
            "/v1/credentials",
        ] {
            let e = container_full_uri(bad).unwrap_err();
            assert_eq!(e.kind, AwsErrorKind::Misconfigured, "{bad}");
            assert!(
                e.message.starts_with("AWS_CONTAINER_CREDENTIALS_FULL_URI "),
                "{e}"
            );
        }
        let e = container_full_uri("http://10.0.0.5/creds").unwrap_err();
        assert!(
            e.message.contains(
                "points at http://10.0.0.5, which is neither https nor a loopback address"
            ),
            "{e}"
        );
    }

    /// `sh SCRIPT ARGS…` as a profile's `credential_process` in a config file (run through
    /// `sh` so that no test execs a file another thread may still hold open for writing).
    fn process_chain(dir: &Path, name: &str, script: &str, args: &str) -> CredentialChain {
        let file = dir.join(format!("{name}.sh"));
        std::fs::write(&file, script).unwrap();
        let config = dir.join(format!("{name}.config"));
        std::fs::write(
            &config,
            format!(
                "[default]\nregion = eu-west-1\n\n[profile {name}]\ncredential_process = sh \"{}\" {args}\n",
                file.display()
            ),
        )
        .unwrap();
        CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_PROFILE", name),
            ]),
            reqwest::Client::new(),
        )
    }

    #[tokio::test]
    async fn credential_process_runs_without_a_shell_and_is_cached_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let script = format!(
            "echo run >> '{}'\nprintf '%s|%s' \"$1\" \"$2\" > '{}/args'\nprintf '%s' '{{\"Version\": 1, \"AccessKeyId\": \"ASIAPROCESS\", \"SecretAccessKey\": \"proc+secret/key\", \"SessionToken\": \"proc-token\", \"Expiration\": \"2099-01-01T00:00:00Z\"}}'\n",
            runs.display(),
            dir.path().display()
        );
        let chain = process_chain(dir.path(), "ci", &script, r#"'two words $HOME' "a;b|c""#);
        let c = chain.get().await.unwrap();
        assert_eq!(c.access_key_id, "ASIAPROCESS");
        assert_eq!(c.secret_access_key, "proc+secret/key");
        assert_eq!(c.session_token.as_deref(), Some("proc-token"));
        assert!(c.expires_at.is_some());
        chain.get().await.unwrap();
        assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "cached");
        // Words split as `sh` would, nothing expanded or interpreted.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("args")).unwrap(),
            "two words $HOME|a;b|c"
        );
        // Without Expiration the credentials are long-lived: still one run.
        let chain = process_chain(
            dir.path(),
            "forever",
            &format!(
                "echo run >> '{}.2'\necho '{{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC\", \"SecretAccessKey\": \"s\"}}'\n",
                runs.display()
            ),
            "",
        );
        assert_eq!(chain.get().await.unwrap().session_token, None);
        chain.get().await.unwrap();
        let twice = std::fs::read_to_string(format!("{}.2", runs.display())).unwrap();
        assert_eq!(twice, "run\n");
    }

    #[tokio::test]
    async fn credential_process_failures_are_clear_and_never_show_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = |name: &'static str, script: &'static str| async move {
            process_chain(d, name, script, "").get().await.unwrap_err()
        };
        let e = err(
            "exit",
            "echo '{\"Version\": 1, \"AccessKeyId\": \"AKIA\", \"SecretAccessKey\": \"LEAKED-SECRET\"}'\necho 'error: the SSO session has expired' >&2\nexit 3\n",
        )
        .await;
        assert_eq!(e.kind, AwsErrorKind::Misconfigured);
        assert!(
            e.message
                .starts_with("credential_process `sh` of AWS profile `exit` ("),
            "{e}"
        );
        assert!(e.message.contains("exit status: 3"), "{e}");
        assert!(
            e.message
                .contains("stderr: error: the SSO session has expired"),
            "{e}"
        );
        assert!(!e.message.contains("LEAKED"), "{e}");
        let e = err("notjson", "echo 'AKIAEXAMPLE LEAKED-SECRET'\n").await;
        assert!(e.message.contains("did not print JSON"), "{e}");
        assert!(e.message.contains(r#"{"Version": 1, "AccessKeyId""#), "{e}");
        assert!(!e.message.contains("LEAKED"), "{e}");
        let e = err(
            "version",
            "echo '{\"Version\": 2, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"LEAKED\"}'\n",
        )
        .await;
        assert!(
            e.message.contains("printed Version 2; only Version 1"),
            "{e}"
        );
        let e = err(
            "nosecret",
            "echo '{\"Version\": 1, \"AccessKeyId\": \"A\"}'\n",
        )
        .await;
        assert!(e.message.contains("printed no SecretAccessKey"), "{e}");
        let e = err(
            "badtype",
            "echo '{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": 987654321}'\n",
        )
        .await;
        assert!(
            e.message
                .contains("SecretAccessKey that is not a non-empty string"),
            "{e}"
        );
        assert!(!e.message.contains("987654321"), "{e}");
        let e = err(
            "expired",
            "echo '{\"Version\": 1, \"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\", \"Expiration\": \"2001-01-01T00:00:00Z\"}'\n",
        )
        .await;
        assert!(e.message.contains("expired at 2001-01-01T00:00:00Z"), "{e}");

        let mut chain = process_chain(d, "hung", "sleep 30\n", "");
        chain.process_timeout = Duration::from_millis(300);
        let e = chain.get().await.unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Transient, "{e}");
        assert!(
            e.message
                .contains("did not finish within 0.3 s and was stopped"),
            "{e}"
        );

        for (name, setting, expected) in [
            (
                "missing",
                "/nonexistent/helper --flag",
                "credential_process `/nonexistent/helper` of AWS profile `missing`",
            ),
            (
                "quote",
                "helper 'unterminated",
                "cannot be split into words",
            ),
        ] {
            let config = d.join(format!("{name}.config"));
            std::fs::write(
                &config,
                format!("[profile {name}]\ncredential_process = {setting}\n"),
            )
            .unwrap();
            let e = CredentialChain::new(
                env(&[
                    ("HOME", "/nonexistent-home"),
                    ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                    ("AWS_PROFILE", name),
                ]),
                reqwest::Client::new(),
            )
            .get()
            .await
            .unwrap_err();
            assert!(e.message.contains(expected), "{e}");
            assert_eq!(e.kind, AwsErrorKind::Misconfigured);
        }
        let config = d.join("sso.config");
        std::fs::write(
            &config,
            "[profile sso]\nsso_session = corp\nregion = us-east-1\n",
        )
        .unwrap();
        let e = CredentialChain::new(
            env(&[
                ("HOME", "/nonexistent-home"),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_PROFILE", "sso"),
            ]),
            reqwest::Client::new(),
        )
        .get()
        .await
        .unwrap_err();
        assert!(
            e.message
                .contains("uses `sso_session`, which the agent does not support"),
            "{e}"
        );
    }

    /// Every source configured at once, then one fewer each time: the SDKs' order.
    #[tokio::test]
    async fn sources_are_tried_in_the_order_of_the_aws_sdks() {
        use axum::routing::{get, post, put};
        let app = axum::Router::new()
            .route(
                "/",
                post(|| async {
                    "<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>w</SecretAccessKey><SessionToken>t</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResponse>"
                }),
            )
            .route(
                "/creds",
                get(|| async {
                    r#"{"AccessKeyId":"ASIACONTAINER","SecretAccessKey":"c","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#
                }),
            )
            .route("/latest/api/token", put(|| async { "imds-token" }))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(|| async { "role" }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/role",
                get(|| async {
                    r#"{"AccessKeyId":"ASIAIMDS","SecretAccessKey":"i","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "jwt").unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[profile app]\ncredential_process = printf '{\"Version\":1,\"AccessKeyId\":\"ASIAPROCESS\",\"SecretAccessKey\":\"p\"}'\naws_access_key_id = AKIACONFIG\naws_secret_access_key = k\n",
        )
        .unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::write(
            &credentials,
            "[app]\naws_access_key_id = AKIAFILE\naws_secret_access_key = f\n",
        )
        .unwrap();
        let creds_uri = format!("{base}/creds");
        let all = vec![
            ("HOME", "/nonexistent-home".to_string()),
            ("AWS_ENDPOINT_URL_STS", base.clone()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.clone()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.to_str().unwrap().to_string(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.to_str().unwrap().to_string(),
            ),
            ("AWS_CONFIG_FILE", config.to_str().unwrap().to_string()),
            ("AWS_PROFILE", "app".to_string()),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds_uri),
        ];
        let key_without = |drop: &[&str]| {
            let pairs: Vec<(String, String)> = all
                .iter()
                .filter(|(k, _)| !drop.contains(k))
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            async move {
                CredentialChain::new(AwsEnv::from_pairs(pairs), reqwest::Client::new())
                    .get()
                    .await
                    .unwrap()
                    .access_key_id
            }
        };
        assert_eq!(key_without(&[]).await, "ASIAWEB");
        assert_eq!(key_without(&["AWS_ROLE_ARN"]).await, "AKIAFILE");
        assert_eq!(
            key_without(&["AWS_ROLE_ARN", "AWS_SHARED_CREDENTIALS_FILE"]).await,
            "ASIAPROCESS"
        );
        assert_eq!(
            key_without(&["AWS_ROLE_ARN", "AWS_CONFIG_FILE"]).await,
            "AKIAFILE"
        );
        assert_eq!(
            key_without(&["AWS_ROLE_ARN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"]).await,
            "ASIACONTAINER",
            "the default profile is absent from both files"
        );
        assert_eq!(
            key_without(&[
                "AWS_ROLE_ARN",
                "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"
            ])
            .await,
            "ASIAIMDS"
        );
    }
}
