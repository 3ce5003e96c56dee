//! The web layer's errors. A handler returns a [`WebError`]; its response carries an
//! [`ErrorPage`] that the session guard renders in the request's language (the error itself
//! does not know the language). Signed-out visitors are sent to the sign-in page instead.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use plugdesk_core::Error;

/// What went wrong, in the terms of a page.
#[derive(Debug)]
pub(crate) enum WebError {
    /// Nobody is signed in: go to the sign-in page.
    SignedOut,
    /// Signed in, but this needs an admin.
    Forbidden,
    /// No such record in the agent's workspace (or in another one: we never say which).
    NotFound,
    /// A state-changing request that failed the CSRF checks.
    CrossSite,
    /// A body over the limit.
    TooLarge,
    /// Refused input, with the domain's message.
    Invalid(String),
    /// A conflict with stored data, with the domain's message.
    Conflict(String),
    /// Too many requests; retry after this many seconds.
    Throttled(u64),
    /// A bug or the database; logged, not shown.
    Internal(String),
}

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(_) => WebError::NotFound,
            Error::Forbidden(_) => WebError::Forbidden,
            Error::Unauthorized(_) => WebError::SignedOut,
            Error::Invalid { message, .. } => WebError::Invalid(message),
            e @ (Error::Transition { .. } | Error::Script { .. }) => WebError::Invalid(e.to_string()),
            Error::Conflict(m) => WebError::Conflict(m),
            Error::Busy(_) => WebError::Throttled(1),
            other => WebError::Internal(other.to_string()),
        }
    }
}

/// What the guard renders: a catalogue key for the title and the text, and the domain's own
/// message where there is one.
#[derive(Debug, Clone)]
pub(crate) struct ErrorPage {
    /// Catalogue key of the explanation.
    pub(crate) key: &'static str,
    /// The server's message about the input, shown as it is.
    pub(crate) detail: Option<String>,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, key, detail) = match self {
            WebError::SignedOut => {
                return (StatusCode::SEE_OTHER, [(header::LOCATION, "/signin")]).into_response();
            }
            WebError::Forbidden => (StatusCode::FORBIDDEN, "error_forbidden", None),
            WebError::NotFound => (StatusCode::NOT_FOUND, "error_not_found", None),
            WebError::CrossSite => (StatusCode::FORBIDDEN, "error_cross_site", None),
            WebError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "error_too_large", None),
            WebError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, "error_invalid", Some(m)),
            WebError::Conflict(m) => (StatusCode::CONFLICT, "error_conflict", Some(m)),
            WebError::Throttled(secs) => {
                let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
                res.headers_mut().insert(header::RETRY_AFTER, secs.into());
                res.extensions_mut().insert(ErrorPage { key: "error_busy", detail: None });
                return res;
            }
            WebError::Internal(m) => {
                tracing::error!(error = %m, "web request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "error_internal", None)
            }
        };
        let mut res = status.into_response();
        res.extensions_mut().insert(ErrorPage { key, detail });
        res
    }
}

/// A handler's result.
pub(crate) type WebResult<T> = Result<T, WebError>;
