//! Extractors that turn every rejection into our JSON error format: a body that is not JSON,
//! JSON of the wrong shape or with unknown fields, a body over the size limit, a bad path or
//! query, a missing or unknown token.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::Core;
use crate::auth::Principal;

/// A JSON body; rejections answer in our error format.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Core> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Core) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection, state.limits().max_body_bytes)),
        }
    }
}

fn json_rejection(r: JsonRejection, limit: usize) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
            format!(
                "request body does not match the expected shape: {}",
                e.body_text().trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "request body is not valid JSON: {}",
                e.body_text().trim_start_matches("Failed to parse the request body as JSON: ")
            ),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        ),
        other => ApiError::new(other.status(), "bad_request", other.body_text()),
    }
}

/// Path parameters; a malformed id is a 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Core> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Core) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_path",
                format!("{}; ids are whole numbers", e.body_text()),
            )),
            Err(e) => Err(ApiError::new(e.status(), "bad_path", e.body_text())),
        }
    }
}

/// Query parameters; unknown or malformed ones are a 400 naming them.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Core> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Core) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
            }
            Err(e) => Err(ApiError::new(e.status(), "bad_query", e.body_text())),
        }
    }
}

/// The authenticated caller (`Authorization: Bearer <token>`).
pub struct Auth(pub Principal);

impl FromRequestParts<Core> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, core: &Core) -> Result<Self, Self::Rejection> {
        let header =
            parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing Authorization header; send Authorization: Bearer <token>",
                )
            })?;
        let token = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization header must be Bearer <token>")
        })?;
        let principal = core.tokens().authenticate(core.db(), token).await?;
        if let Err(wait) = core.limiter().check(principal.token_id) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests with this API token; slow down and retry after the Retry-After seconds",
            )
            .retry_after(wait.as_secs_f64().ceil() as u64));
        }
        Ok(Auth(principal))
    }
}
