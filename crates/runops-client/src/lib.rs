//! Typed HTTP client for the Runops API.
//!
//! One [`Client`] holds the server URL, the bearer token and a pooled `reqwest`
//! client. [`user`] has the user-facing calls (targets, tasks, logs, agents, users),
//! [`agent`] the agent protocol. Every failure becomes a [`ClientError`] whose
//! `Display` is the server's own message plus its hint, ready to print.

pub mod agent;
pub mod user;
pub mod webhooks;

use runops_proto::api::ApiErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long to wait for a TCP connection to the server before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A connection to one Runops server with one token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base_url` is the server's root (`http://127.0.0.1:8080`).
    pub fn new(base_url: &str, token: &str) -> Result<Client> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "server URL `{base}` must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("runops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            base,
            token: token.trim().to_string(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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
        ClientError::Transport {
            url: self.base.clone(),
            source: e,
        }
    }

    async fn error_from(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
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
