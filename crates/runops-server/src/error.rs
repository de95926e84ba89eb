//! The one error type of the HTTP layer: every failure becomes a status code and a
//! JSON [`ApiErrorBody`] with a message a user can act on.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runops_proto::api::ApiErrorBody;

use crate::store::StoreError;

/// Longest client value an error quotes: longer ones are shortened by [`echo`] (and, as
/// a last guard, by [`clip_message`] on every answer), so a 10 KB name or a huge
/// JSON string never comes back whole.
pub const MAX_ECHO_CHARS: usize = 200;

/// Characters of a shortened value kept before the ellipsis: enough to recognise it.
const ECHO_HEAD_CHARS: usize = 60;

/// Longest error or hint text sent; no message of ours comes close, with its quoted
/// values already shortened.
pub const MAX_MESSAGE_CHARS: usize = 2 * MAX_ECHO_CHARS;

/// A client value as an error may quote it: unchanged up to [`MAX_ECHO_CHARS`]
/// characters, else its start and its length.
pub fn echo(value: &str) -> std::borrow::Cow<'_, str> {
    let n = value.chars().count();
    if n <= MAX_ECHO_CHARS {
        return value.into();
    }
    let head: String = value.chars().take(ECHO_HEAD_CHARS).collect();
    format!("{head}… ({n} characters)").into()
}

/// The last guard on every error and hint: each whitespace-free run (a quoted value,
/// serde's `"..."`) is shortened by [`echo`], and the whole text is cut at
/// [`MAX_MESSAGE_CHARS`].
pub fn clip_message(msg: String) -> String {
    if msg.chars().count() <= MAX_ECHO_CHARS {
        return msg;
    }
    let mut out = String::with_capacity(MAX_MESSAGE_CHARS);
    let mut word = String::new();
    let flush = |out: &mut String, word: &mut String| {
        out.push_str(&echo(word));
        word.clear();
    };
    for c in msg.chars() {
        if c.is_whitespace() {
            flush(&mut out, &mut word);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut out, &mut word);
    if out.chars().count() > MAX_MESSAGE_CHARS {
        let mut cut: String = out.chars().take(MAX_ECHO_CHARS).collect();
        cut.push_str("… (message cut)");
        return cut;
    }
    out
}

/// The hint of every authentication failure.
pub const LOGIN_HINT: &str =
    "pass a token with `runops login --url URL --token TOKEN` or RUNOPS_TOKEN";

/// The hint of an error that names none. Every error answer carries `{code, error,
/// hint}` (the API contract, `docs/openapi.json`), so a client always has a next step
/// to show; errors that know a better one say it with [`ApiError::hint`].
pub fn default_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => LOGIN_HINT,
        403 => "ask an admin of your organisation if you need this",
        404 => "check the name or id in the URL",
        405 => "see `GET /v1/openapi.json` for the methods each route takes",
        409 => "read the current state again, then retry if it still applies",
        413 => "send less at once",
        415 => "send `content-type: application/json`",
        429 | 503 => "try again in a moment",
        s if s >= 500 => "try again; if it keeps failing, the server log says why",
        _ => {
            "correct what the error names and send it again; `GET /v1/openapi.json` describes every field"
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub error: String,
    pub hint: Option<String>,
    /// Stored log size, for `log_gap` / `log_incomplete` (the body then also reads
    /// as a `LogAck`).
    pub stored: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            error: error.into(),
            hint: None,
            stored: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }

    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", error)
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", error)
    }

    pub fn conflict(code: &'static str, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, error)
    }

    pub fn unauthorized(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error).hint(LOGIN_HINT)
    }

    pub fn forbidden(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", error)
    }

    pub fn too_large(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", error)
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; see the server log",
        )
    }

    pub fn task_not_found(id: i64) -> ApiError {
        ApiError::not_found(format!("task {id} not found"))
            .hint("run `runops tasks list` to see your tasks")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(msg) => ApiError::conflict("conflict", msg),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "the database is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the server cannot reach its database right now",
                )
                .hint("retry in a moment: the server reconnects by itself once its database answers (`/readyz` says when)")
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::to_value(ApiErrorBody {
            code: self.code.to_string(),
            error: clip_message(self.error),
            hint: Some(clip_message(
                self.hint
                    .unwrap_or_else(|| default_hint(self.status).to_string()),
            )),
        })
        .unwrap_or_default();
        if let (Some(stored), Some(obj)) = (self.stored, body.as_object_mut()) {
            obj.insert("stored".into(), stored.into());
        }
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_never_come_back_whole() {
        let long = "x".repeat(10_000);
        assert_eq!(echo("short"), "short");
        let e = echo(&long);
        assert!(
            e.chars().count() < MAX_ECHO_CHARS && e.contains("10000 characters"),
            "{e}"
        );
        let m = clip_message(format!("target `{long}` not found"));
        assert!(
            m.starts_with("target `xxx") && m.ends_with("not found") && !m.contains(&long[..201]),
            "{m}"
        );
        let spaced = "ab ".repeat(5_000);
        let m = clip_message(format!("invalid: {spaced}"));
        assert!(m.chars().count() <= MAX_ECHO_CHARS + 20, "{m}");
        let ok = "a normal message with `a-value` in it".to_string();
        assert_eq!(clip_message(ok.clone()), ok);
    }

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_other_failures_a_500() {
        let down = ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
        );
        assert!(down.hint.is_some_and(|h| h.contains("retry")));
        // A local SQLite read that waited out its busy timeout (another process
        // holding the database) is the same: retry later.
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let busy = ApiError::from(StoreError::Sqlite(busy));
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        let broken = ApiError::from(StoreError::Corrupt("bad row".into()));
        assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
