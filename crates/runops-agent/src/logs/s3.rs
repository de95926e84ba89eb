//! Self-hosted log storage: after a task, the agent uploads its full redacted log to the
//! user's own S3 bucket (or an S3-compatible store) at `PREFIX/ORG/TASK_ID.log`, and the
//! task records `s3://bucket/key`.
//!
//! Settings (agent environment): `LOGS_S3_BUCKET` (turns it on), `LOGS_S3_PREFIX`,
//! `LOGS_S3_REGION` (else `AWS_REGION`...), `LOGS_S3_ENDPOINT` (S3-compatible stores;
//! requests are path-style), and the agent's standard AWS credentials.
//!
//! The log is read from the spool a part at a time ([`S3_PART_BYTES`]): one `PUT` when it
//! fits in a part, a multipart upload otherwise, so it is never held whole in memory.
//! Uploads that fail transiently (timeouts, 5xx, throttling) are retried with back-off;
//! refused credentials and wrong settings (`AccessDenied`, `NoSuchBucket`) are not. When
//! an upload fails, the task's log says so
//! and a hard link to the log is kept in `<data_dir>/s3-pending/`, retried every
//! [`S3_RETRY_INTERVAL`] until it is stored.

use crate::aws::credentials::{CredentialChain, xml_tag};
use crate::aws::sigv4::{SignRequest, sha256_hex, sign, uri_encode};
use crate::aws::{AwsEnv, AwsError, AwsErrorKind, classify};
use crate::backoff::Backoff;
use crate::limits::{S3_PART_BYTES, S3_REQUEST_TIMEOUT, S3_RETRY_INTERVAL, S3_UPLOAD_ATTEMPTS};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use tokio::io::AsyncReadExt;

/// The org used in keys before the agent has connected (it never uploads before that).
const UNKNOWN_ORG: &str = "unknown-org";

/// Where logs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub region: String,
    /// `scheme://host[:port]`, without a trailing `/`.
    pub endpoint: String,
}

impl S3Settings {
    /// `None` when `LOGS_S3_BUCKET` is not set (logs stay with the server only).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        aws: &AwsEnv,
    ) -> Result<Option<S3Settings>, String> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(bucket) = get("LOGS_S3_BUCKET") else {
            return Ok(None);
        };
        if bucket.contains('/') {
            return Err(format!(
                "LOGS_S3_BUCKET `{bucket}` must be a bucket name only; put the folder in LOGS_S3_PREFIX"
            ));
        }
        let region = get("LOGS_S3_REGION")
            .or_else(|| aws.region())
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = get("LOGS_S3_ENDPOINT")
            .or_else(|| aws.endpoint("s3", "S3"))
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&endpoint)
            .map_err(|e| format!("LOGS_S3_ENDPOINT `{endpoint}` is not a URL ({e})"))?;
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(format!(
                "LOGS_S3_ENDPOINT `{endpoint}` must be scheme://host[:port] only"
            ));
        }
        Ok(Some(S3Settings {
            bucket,
            prefix: get("LOGS_S3_PREFIX")
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
            region,
            endpoint,
        }))
    }
}

/// Uploads task logs to one bucket with the agent's credentials.
pub struct S3LogStore {
    settings: S3Settings,
    creds: CredentialChain,
    http: reqwest::Client,
    org: RwLock<String>,
    pending_dir: PathBuf,
}

impl S3LogStore {
    pub fn new(settings: S3Settings, aws: AwsEnv, data_dir: &Path) -> S3LogStore {
        let http = reqwest::Client::builder()
            .connect_timeout(crate::limits::SECRETS_CONNECT_TIMEOUT)
            .timeout(S3_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        S3LogStore {
            creds: CredentialChain::new(aws, http.clone()),
            settings,
            http,
            org: RwLock::new(UNKNOWN_ORG.to_string()),
            pending_dir: data_dir.join("s3-pending"),
        }
    }

    /// The store configured by the agent's environment, if any.
    pub fn from_process_env(data_dir: &Path) -> anyhow::Result<Option<S3LogStore>> {
        let aws = AwsEnv::from_process_env();
        let settings = S3Settings::from_vars(|k| std::env::var(k).ok(), &aws)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(settings.map(|s| S3LogStore::new(s, aws, data_dir)))
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The agent's organisation (from the server at connect): part of every key.
    pub fn set_org(&self, org: &str) {
        if let Ok(mut o) = self.org.write() {
            *o = org.to_string();
        }
    }

    /// `PREFIX/ORG/TASK_ID.log`.
    pub fn key(&self, task_id: i64) -> String {
        let org = self
            .org
            .read()
            .map(|o| o.clone())
            .unwrap_or_else(|_| UNKNOWN_ORG.to_string());
        let org = org.replace('/', "_");
        if self.settings.prefix.is_empty() {
            format!("{org}/{task_id}.log")
        } else {
            format!("{}/{org}/{task_id}.log", self.settings.prefix)
        }
    }

    /// `s3://bucket/key`.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// Uploads a task's finished log, retrying transient failures with back-off; the
    /// `s3://` location on success, the last error otherwise.
    pub async fn upload_task_log(&self, task_id: i64, log: &Path) -> Result<String, String> {
        let key = self.key(task_id);
        let mut backoff = Backoff::new();
        let mut attempt = 1;
        loop {
            match self.upload_file(log, &key).await {
                Ok(()) => return Ok(self.location(&key)),
                Err(e) if !e.is_transient() => return Err(e.message),
                Err(e) if attempt >= S3_UPLOAD_ATTEMPTS => {
                    return Err(format!("{e} (tried {S3_UPLOAD_ATTEMPTS} times)"));
                }
                Err(e) => {
                    tracing::warn!(task_id, attempt, "the S3 log upload failed, retrying: {e}");
                    attempt += 1;
                    backoff.wait().await;
                }
            }
        }
    }

    /// Keeps a log whose upload failed for the background retries (a hard link, so the
    /// spool can be removed once the server has the result).
    pub async fn keep_for_retry(&self, task_id: i64, log: &Path) -> std::io::Result<()> {
        let dir = self.pending_dir.clone();
        tokio::task::spawn_blocking(move || super::spool::create_private_dir(&dir))
            .await
            .map_err(std::io::Error::other)??;
        let target = self.pending_dir.join(format!("{task_id}.log"));
        let _ = tokio::fs::remove_file(&target).await;
        if tokio::fs::hard_link(log, &target).await.is_err() {
            tokio::fs::copy(log, &target).await?;
        }
        // Private like everything in the data dir.
        let mut key = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(self.pending_dir.join(format!("{task_id}.key")))
            .await?;
        tokio::io::AsyncWriteExt::write_all(&mut key, self.key(task_id).as_bytes()).await?;
        // A failed background write (a full disk) shows only at the flush.
        tokio::io::AsyncWriteExt::flush(&mut key).await
    }

    /// Tries every pending log once; returns how many were stored.
    pub async fn retry_pending(&self) -> usize {
        let Ok(mut rd) = tokio::fs::read_dir(&self.pending_dir).await else {
            return 0;
        };
        let mut stored = 0;
        while let Ok(Some(entry)) = rd.next_entry().await {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            let key_file = path.with_extension("key");
            let Ok(key) = tokio::fs::read_to_string(&key_file).await else {
                continue;
            };
            match self.upload_file(&path, key.trim()).await {
                Ok(()) => {
                    tracing::info!(location = %self.location(key.trim()), "stored a log whose earlier S3 upload failed");
                    let _ = tokio::fs::remove_file(&path).await;
                    let _ = tokio::fs::remove_file(&key_file).await;
                    stored += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "the S3 log upload failed again, will retry: {e}")
                }
            }
        }
        stored
    }

    /// Retries the pending logs forever, every [`S3_RETRY_INTERVAL`].
    pub async fn run_retries(self: std::sync::Arc<Self>) {
        loop {
            self.retry_pending().await;
            tokio::time::sleep(S3_RETRY_INTERVAL).await;
        }
    }

    fn object_url(&self, key: &str, query: &str) -> Result<reqwest::Url, AwsError> {
        let mut url = format!(
            "{}/{}/{}",
            self.settings.endpoint,
            uri_encode(&self.settings.bucket, true),
            uri_encode(key, false)
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        reqwest::Url::parse(&url)
            .map_err(|e| AwsError::misconfigured(format!("bad S3 URL {url}: {e}")))
    }

    /// One signed request; the answer's headers and body on 2xx, a classified error
    /// otherwise (refused credentials are forgotten, so the next upload asks the chain).
    async fn request(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
        body: Vec<u8>,
    ) -> Result<(reqwest::header::HeaderMap, String), AwsError> {
        let result = self.request_once(method, url, body).await;
        if let Err(e) = &result
            && e.kind == AwsErrorKind::Denied
        {
            self.creds.invalidate().await;
        }
        result
    }

    async fn request_once(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
        body: Vec<u8>,
    ) -> Result<(reqwest::header::HeaderMap, String), AwsError> {
        let creds = self.creds.get().await?;
        let signed = sign(
            &SignRequest {
                method: method.as_str(),
                url,
                headers: &[],
                payload_sha256: &sha256_hex(&body),
                region: &self.settings.region,
                service: "s3",
            },
            &creds,
            chrono::Utc::now(),
        );
        let mut req = self.http.request(method, url.clone()).body(body);
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let where_ = format!("{}/{}", self.settings.endpoint, self.settings.bucket);
        let resp = req
            .send()
            .await
            .map_err(|e| AwsError::from_transport(&e, &where_))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| AwsError::from_transport(&e, &where_))?;
        if !status.is_success() {
            let code = xml_tag(&text, "Code").unwrap_or_else(|| "no error code".into());
            let hint = match code.as_str() {
                "NoSuchBucket" => "; create the bucket or fix LOGS_S3_BUCKET",
                "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    "; check the agent's AWS credentials and its s3:PutObject permission on the prefix"
                }
                _ => "",
            };
            return Err(AwsError::new(
                classify(status, &code),
                format!("S3 refused the upload to {where_} (HTTP {status}, {code}){hint}"),
            ));
        }
        Ok((headers, text))
    }

    /// Uploads `path` to `key`: one PUT, or a multipart upload for logs over a part.
    pub async fn upload_file(&self, path: &Path, key: &str) -> Result<(), AwsError> {
        let mut file = tokio::fs::File::open(path).await.map_err(|e| {
            AwsError::misconfigured(format!("cannot open the log {}: {e}", path.display()))
        })?;
        let first = read_part(&mut file, path).await?;
        if first.len() < S3_PART_BYTES {
            let url = self.object_url(key, "")?;
            self.request(reqwest::Method::PUT, &url, first).await?;
            return Ok(());
        }
        let url = self.object_url(key, "uploads")?;
        let (_, text) = self
            .request(reqwest::Method::POST, &url, Vec::new())
            .await?;
        let upload_id = xml_tag(&text, "UploadId").ok_or_else(|| {
            AwsError::transient("S3 answered the multipart upload without an UploadId")
        })?;
        let result = self
            .upload_parts(&mut file, path, key, &upload_id, first)
            .await;
        if result.is_err() {
            // Leave no half upload behind (they cost storage until a lifecycle rule runs).
            let q = format!("uploadId={}", uri_encode(&upload_id, true));
            if let Ok(url) = self.object_url(key, &q) {
                let _ = self
                    .request(reqwest::Method::DELETE, &url, Vec::new())
                    .await;
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        file: &mut tokio::fs::File,
        path: &Path,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
    ) -> Result<(), AwsError> {
        let id = uri_encode(upload_id, true);
        let mut etags = Vec::new();
        let mut part = first;
        let mut number = 1u32;
        while !part.is_empty() {
            let url = self.object_url(key, &format!("partNumber={number}&uploadId={id}"))?;
            let (headers, _) = self.request(reqwest::Method::PUT, &url, part).await?;
            let etag = headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| AwsError::transient("S3 answered a part upload without an ETag"))?
                .to_string();
            etags.push((number, etag));
            number += 1;
            part = read_part(file, path).await?;
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in &etags {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let url = self.object_url(key, &format!("uploadId={id}"))?;
        let (_, text) = self
            .request(reqwest::Method::POST, &url, body.into_bytes())
            .await?;
        // S3 may answer 200 with an error document for the completion.
        if text.contains("<Error>") {
            let code = xml_tag(&text, "Code").unwrap_or_else(|| "no error code".into());
            return Err(AwsError::new(
                classify(reqwest::StatusCode::OK, &code),
                format!("S3 refused to complete the multipart upload ({code})"),
            ));
        }
        Ok(())
    }
}

/// Up to [`S3_PART_BYTES`] of `file`; shorter only at its end.
async fn read_part(file: &mut tokio::fs::File, path: &Path) -> Result<Vec<u8>, AwsError> {
    let mut buf = Vec::with_capacity(S3_PART_BYTES);
    (&mut *file)
        .take(S3_PART_BYTES as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| {
            AwsError::misconfigured(format!("cannot read the log {}: {e}", path.display()))
        })?;
    Ok(buf)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<S3Settings>, String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Settings::from_vars(|k| m.get(k).cloned(), &AwsEnv::default())
    }

    #[test]
    fn settings_need_a_bucket_and_default_to_aws() {
        assert_eq!(settings(&[]).unwrap(), None);
        let s = settings(&[
            ("LOGS_S3_BUCKET", "logs"),
            ("LOGS_S3_PREFIX", "/runops/"),
            ("LOGS_S3_REGION", "eu-west-3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.prefix, "runops");
        assert_eq!(s.endpoint, "https://s3.eu-west-3.amazonaws.com");
        let e = settings(&[("LOGS_S3_BUCKET", "logs/x")]).unwrap_err();
        assert!(e.contains("LOGS_S3_PREFIX"), "{e}");
        let e = settings(&[
            ("LOGS_S3_BUCKET", "b"),
            ("LOGS_S3_ENDPOINT", "http://h:9000/path"),
        ])
        .unwrap_err();
        assert!(e.contains("scheme://host[:port] only"), "{e}");
    }

    #[test]
    fn keys_are_prefix_org_task_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&[
            ("LOGS_S3_BUCKET", "b"),
            ("LOGS_S3_PREFIX", "p/q"),
            ("LOGS_S3_ENDPOINT", "http://127.0.0.1:9"),
        ])
        .unwrap()
        .unwrap();
        let store = S3LogStore::new(s, AwsEnv::default(), dir.path());
        store.set_org("acme");
        assert_eq!(store.key(42), "p/q/acme/42.log");
        assert_eq!(store.location(&store.key(42)), "s3://b/p/q/acme/42.log");
        assert_eq!(
            store
                .object_url("p/q/acme/42.log", "uploads")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/b/p/q/acme/42.log?uploads"
        );
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An S3 stand-in answering every request with `status` and an error document
    /// `code`; returns a store pointed at it and the request count.
    async fn refusing_s3(
        status: u16,
        code: &'static str,
    ) -> (S3LogStore, Arc<AtomicUsize>, tempfile::TempDir) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let app = axum::Router::new().fallback(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    format!("<Error><Code>{code}</Code><Message>m</Message></Error>"),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let aws = AwsEnv::from_pairs(
            [
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let settings = S3Settings {
            bucket: "b".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint,
        };
        (S3LogStore::new(settings, aws, dir.path()), count, dir)
    }

    #[tokio::test]
    async fn refusals_are_not_retried_and_server_trouble_is() {
        for (status, code, retried) in [
            (403, "AccessDenied", false),
            (404, "NoSuchBucket", false),
            (503, "SlowDown", true),
        ] {
            let (store, count, dir) = refusing_s3(status, code).await;
            let log = dir.path().join("task.log");
            std::fs::write(&log, "a line\n").unwrap();
            let e = store.upload_task_log(1, &log).await.unwrap_err();
            assert!(
                e.contains("S3 refused the upload to http://127.0.0.1:"),
                "{e}"
            );
            assert!(e.contains(code), "{e}");
            let expected = if retried {
                S3_UPLOAD_ATTEMPTS as usize
            } else {
                1
            };
            assert_eq!(count.load(Ordering::SeqCst), expected, "{code}: {e}");
            assert_eq!(e.contains("tried"), retried, "{e}");
        }
    }
}
