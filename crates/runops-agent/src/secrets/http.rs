//! The HTTP client the network providers share, and the words for transport errors.

use crate::limits::{MAX_SECRET_RESPONSE_BYTES, SECRETS_CONNECT_TIMEOUT, SECRETS_REQUEST_TIMEOUT};

/// A client with the secrets timeouts, so an unreachable or hung manager fails fast.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(SECRETS_CONNECT_TIMEOUT)
        .timeout(SECRETS_REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// "unreachable at URL (...)" or "timed out after N s at URL" for a failed request.
pub fn transport_error(e: &reqwest::Error, url: &str) -> String {
    if e.is_timeout() {
        format!(
            "timed out after {} s at {url}",
            SECRETS_REQUEST_TIMEOUT.as_secs()
        )
    } else {
        let mut cause = String::new();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        if cause.is_empty() {
            format!("unreachable at {url}")
        } else {
            format!("unreachable at {url} ({cause})")
        }
    }
}

/// The body of an answer, at most [`MAX_SECRET_RESPONSE_BYTES`].
pub async fn read_body(resp: reqwest::Response, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = resp;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_SECRET_RESPONSE_BYTES {
                    return Err(format!(
                        "answered with more than {MAX_SECRET_RESPONSE_BYTES} bytes at {url}"
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(&e, url)),
        }
    }
}
