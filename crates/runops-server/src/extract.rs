//! Request extractors whose every rejection is an [`ApiError`] naming the problem
//! (axum's own rejections answer plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use runops_proto::limits::{MAX_JSON_BODY_BYTES, MAX_LOG_CHUNK_BYTES};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body (`content-type: application/json`), at most `MAX_JSON_BODY_BYTES`.
pub struct ApiJson<T>(pub T);

/// Lower-cases the first letter of axum's messages so they read like ours.
fn sentence(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

fn is_json_content_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
    limit: usize,
) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "request body is larger than the limit of {limit} bytes"
            ))
        } else {
            ApiError::bad_request(format!(
                "cannot read the request body: {}",
                sentence(rej.body_text())
            ))
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match req.headers().get(CONTENT_TYPE).map(|v| v.to_str()) {
            None => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the request has no content type; the body must be JSON",
                )
                .hint("send `content-type: application/json`"));
            }
            Some(Ok(v)) if is_json_content_type(v) => {}
            Some(v) => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "content type `{}` is not JSON; the body must be JSON",
                        crate::error::echo(v.unwrap_or("(not text)"))
                    ),
                )
                .hint("send `content-type: application/json`"));
            }
        }
        let bytes = body_bytes(req, state, MAX_JSON_BODY_BYTES).await?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::bad_request(format!("malformed JSON body: {e}"))
                }
                Category::Data => ApiError::bad_request(format!("invalid request body: {e}")),
            }
        })
    }
}

/// The raw bytes of a log chunk, at most `MAX_LOG_CHUNK_BYTES`.
pub struct LogChunkBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LogChunkBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        body_bytes(req, state, MAX_LOG_CHUNK_BYTES)
            .await
            .map(LogChunkBody)
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|rej| ApiError::bad_request(sentence(rej.body_text())))
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|rej| {
                ApiError::bad_request(format!("bad URL path: {}", sentence(rej.body_text())))
            })
    }
}

/// A task id from the path, with an error naming the bad value.
pub fn parse_task_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "task id `{}` is not a number",
            crate::error::echo(raw)
        ))
    })
}
