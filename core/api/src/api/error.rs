//! The one error type of the HTTP layer: every failure becomes a status code and a JSON body
//! `{"error": {"code": "…", "message": "…"}}`. Internal details are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// Line and column of a script error.
    at: Option<(usize, usize)>,
    /// Seconds to send as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, at: None, retry_after: None }
    }

    /// Adds a `Retry-After` header (whole seconds, at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Error::Script { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "script_error"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Transition { .. } => (StatusCode::CONFLICT, "invalid_transition"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::Config(_) | Error::Db(_) | Error::Io(_) | Error::Internal(_) => {
                tracing::error!(error = %e, "request failed");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the details are in the server log",
                );
            }
        };
        let field = match &e {
            Error::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        let at = match &e {
            Error::Script { line, column, .. } => Some((*line, *column)),
            _ => None,
        };
        ApiError { status, code, message: e.to_string(), field, at, retry_after: None }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(f) = self.field {
            body["error"]["field"] = json!(f);
        }
        if let Some((line, column)) = self.at {
            body["error"]["line"] = json!(line);
            body["error"]["column"] = json!(column);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
