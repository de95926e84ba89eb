//! The one error type of the HTTP layer: every failure becomes a status code and a
//! JSON [`ApiErrorBody`] with a message a user can act on.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runops_proto::api::ApiErrorBody;

use crate::store::StoreError;

/// The hint of every authentication failure.
pub const LOGIN_HINT: &str =
    "pass a token with `runops login --url URL --token TOKEN` or RUNOPS_TOKEN";

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
            error: self.error,
            hint: self.hint,
        })
        .unwrap_or_default();
        if let (Some(stored), Some(obj)) = (self.stored, body.as_object_mut()) {
            obj.insert("stored".into(), stored.into());
        }
        (self.status, Json(body)).into_response()
    }
}
