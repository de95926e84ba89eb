//! Request extractors whose every rejection is an [`ApiError`] naming the problem
//! (axum's own rejections answer plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use bytes::BytesMut;
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

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        collect_sized(req, MAX_LOG_CHUNK_BYTES)
            .await
            .map(LogChunkBody)
    }
}

/// The body of `req`, at most `limit` bytes, read into one buffer sized from its
/// `content-length`: a 1 MiB log chunk arrives in many frames, and growing a buffer
/// frame by frame copied it again at each doubling (`memmove` and fresh-page faults
/// were a fifth of the server's time while storing a log, BENCHMARKS.md issue 20).
async fn collect_sized(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::too_large(format!(
            "request body is larger than the limit of {limit} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut frames = req.into_body().into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = frames.next().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if first.as_ref().map_or(0, Bytes::len) + buf.len() + frame.len() > limit {
            return Err(too_large());
        }
        match first.take() {
            // A body in one frame is kept as it came.
            None if buf.is_empty() => first = Some(frame),
            held => {
                if buf.is_empty() {
                    let size = declared.map_or(0, |n| n as usize).min(limit);
                    buf.reserve(size.max(held.as_ref().map_or(0, Bytes::len) + frame.len()));
                }
                if let Some(held) = held {
                    buf.extend_from_slice(&held);
                }
                buf.extend_from_slice(&frame);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
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
