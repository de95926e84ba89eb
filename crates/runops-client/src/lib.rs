//! Typed HTTP client for the Runops API.
//!
//! One [`Client`] holds the server URL, the bearer token and a pooled `reqwest`
//! client. The URL may be a comma-separated list of replicas of one control plane
//! (`http://a:8080,http://b:8080`): calls go to one of them, and a call that cannot
//! reach it (or gets 502/503/504) moves the client to the next one for the calls that
//! follow (the caller's own retry reaches it). [`user`] has the user-facing calls (targets, tasks, logs, agents, users),
//! [`agent`] the agent protocol. Every failure becomes a [`ClientError`] whose
//! `Display` is the server's own message plus its hint, ready to print.

pub mod agent;
pub mod templates;
pub mod user;
pub mod webhooks;

use runops_proto::api::ApiErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long to wait for a TCP connection to the server before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Redirects followed per request (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Errors of any API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{}{}", .body.error, .body.hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Api { status: u16, body: ApiErrorBody },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the runops server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something that is not the expected JSON.
    #[error("unexpected answer from the runops server at {url} (HTTP {status}): {detail}")]
    Protocol {
        url: String,
        status: u16,
        detail: String,
    },
    /// The client was configured with something unusable (bad URL...).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of an API error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The machine-readable code of an API error (`not_found`, `tags_taken`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// True when the server could not be reached (worth retrying later).
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
            || matches!(self, ClientError::Api { status, .. } if *status >= 500)
            || matches!(self, ClientError::Protocol { status, .. } if *status >= 500)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one Runops server (or one of its replicas) with one token.
#[derive(Clone)]
pub struct Client {
    bases: Arc<Vec<String>>,
    /// Index in `bases` of the replica calls go to.
    current: Arc<AtomicUsize>,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base_url` is the server's root (`http://127.0.0.1:8080`), or several replicas'
    /// roots separated by commas.
    pub fn new(base_url: &str, token: &str) -> Result<Client> {
        let mut bases = Vec::new();
        for part in base_url.split(',') {
            let base = part.trim().trim_end_matches('/').to_string();
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "server URL `{base}` must start with http:// or https://"
                )));
            }
            bases.push(base);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("runops/", env!("CARGO_PKG_VERSION")));
        if bases.iter().all(|b| b.starts_with("http://")) {
            // Plain HTTP only: no TLS, so no certificate store. Loading the system's
            // (~150 files under /etc/ssl/certs, parsed) was half the CPU a CLI
            // command costs. A redirect to https:// is not followed but reported with
            // the URL to log in with (see `error_from`).
            http = http
                .tls_certs_only(std::iter::empty::<reqwest::Certificate>())
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.url().scheme() != "http" {
                        attempt.stop()
                    } else if attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.error("too many redirects")
                    } else {
                        attempt.follow()
                    }
                }));
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            bases: Arc::new(bases),
            current: Arc::new(AtomicUsize::new(0)),
            token: token.trim().to_string(),
            http,
        })
    }

    /// The URL calls go to now (one of the replicas when several were given).
    pub fn base_url(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every URL this client was given.
    pub fn base_urls(&self) -> &[String] {
        &self.bases
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// `failed` (a URL calls went to) did not answer: later calls go to the next
    /// replica. Several calls failing together move it once.
    fn fail_over(&self, failed: &str) {
        let n = self.bases.len();
        if n < 2 {
            return;
        }
        let now = self.current.load(Ordering::Relaxed);
        if self.bases[now % n] == failed {
            let _ = self.current.compare_exchange(
                now,
                (now + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The replica `url` (of a request) belongs to.
    fn base_of(&self, url: &str) -> Option<&str> {
        self.bases
            .iter()
            .find(|b| url.starts_with(b.as_str()))
            .map(String::as_str)
    }

    /// Starts a request with auth; `timeout` bounds the whole exchange when given.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        rb
    }

    /// Sends and checks the status; the response body is left to the caller.
    pub(crate) async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        if matches!(resp.status().as_u16(), 502..=504)
            && let Some(base) = self.base_of(resp.url().as_str())
        {
            self.fail_over(base);
        }
        Err(self.error_from(resp).await)
    }

    /// Sends and decodes a JSON answer.
    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T> {
        let resp = self.send(rb).await?;
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url,
            status,
            detail: format!("invalid JSON: {e}"),
        })
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send_json(self.request(reqwest::Method::GET, path, None))
            .await
    }

    pub(crate) async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T> {
        self.send_json(
            self.request(reqwest::Method::POST, path, timeout)
                .json(body),
        )
        .await
    }

    pub(crate) fn transport(&self, e: reqwest::Error) -> ClientError {
        let url = e
            .url()
            .and_then(|u| self.base_of(u.as_str()))
            .unwrap_or_else(|| self.base_url())
            .to_string();
        self.fail_over(&url);
        ClientError::Transport { url, source: e }
    }

    async fn error_from(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("(no Location header)");
            return ClientError::Protocol {
                url,
                status,
                detail: format!(
                    "it redirects to {to}; if that is the server, use its address \
                     (the CLI: `runops login --url URL --token TOKEN`, or RUNOPS_URL; \
                     an agent: API_URL)"
                ),
            };
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => ClientError::Api { status, body },
            Err(_) => ClientError::Protocol {
                url,
                status,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_replica_urls_are_used_one_at_a_time_and_failed_over_in_turn() {
        let c = Client::new(" http://a:1/ , http://b:2", "t").unwrap();
        assert_eq!(c.base_urls(), ["http://a:1", "http://b:2"]);
        assert_eq!(c.base_url(), "http://a:1");
        // A failure of a replica calls no longer go to moves nothing.
        c.fail_over("http://b:2");
        assert_eq!(c.base_url(), "http://a:1");
        c.fail_over("http://a:1");
        assert_eq!(c.base_url(), "http://b:2");
        // Clones share the choice (the agent's tasks each hold one).
        let clone = c.clone();
        clone.fail_over("http://b:2");
        assert_eq!(c.base_url(), "http://a:1");
        assert_eq!(c.base_of("http://b:2/v1/agent/poll"), Some("http://b:2"));
        let err = Client::new("http://a:1,ftp://b", "t").err().unwrap();
        assert!(err.to_string().contains("ftp://b"), "{err}");
    }

    /// A plain-HTTP server that answers every request with `status` and `location`.
    async fn redirecting_server(status: &'static str, location: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_plain_http_client_reports_a_redirect_to_https_with_the_url_to_use() {
        let url =
            redirecting_server("301 Moved Permanently", "https://runops.example.com/v1/me").await;
        let c = Client::new(&url, "t").unwrap();
        let err = c.whoami().await.unwrap_err();
        assert_eq!(err.status(), Some(301), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("redirects to https://runops.example.com/v1/me"),
            "{msg}"
        );
        assert!(msg.contains("runops login --url"), "{msg}");
        assert!(msg.contains("an agent: API_URL"), "{msg}");
        assert!(
            !err.is_transport(),
            "a redirect is not worth retrying: {err}"
        );
    }

    #[tokio::test]
    async fn a_plain_http_client_stops_after_ten_redirects() {
        let url = redirecting_server("302 Found", "/v1/me").await;
        let c = Client::new(&url, "t").unwrap();
        let err = c.whoami().await.unwrap_err();
        assert!(
            std::error::Error::source(&err)
                .is_some_and(|s| format!("{s:?}").contains("too many redirects")),
            "{err:?}"
        );
    }
}
