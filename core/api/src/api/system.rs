//! Health, readiness, metrics, search, the event feed, attachments, `me` and the OpenAPI
//! document.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, Path, Query};
use crate::Core;

pub(super) async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(core): State<Core>) -> impl IntoResponse {
    match core.db().ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({ "status": "ready" }))).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the database is not reachable").into_response()
        }
    }
}

/// The counters name every workspace's channels and workflows: operator data. Without a
/// `metrics_token` in the configuration `/metrics` does not exist; with one, Prometheus sends
/// it as a bearer token.
pub(super) async fn metrics(State(core): State<Core>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    let Some(expected) = core.metrics_token() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "/metrics is off; set metrics_token in plugdesk.toml to let Prometheus scrape it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| crate::auth::same_secret(g, expected)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs Authorization: Bearer <metrics_token from plugdesk.toml>",
        ));
    }
    let mut text = core.metrics().render();
    text.push_str(&core.channels().render_metrics());
    text.push_str(&core.workflows().render_metrics());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    q: String,
    limit: Option<u64>,
}

pub(super) async fn search(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let hits = crate::search::search(core.db(), p.workspace_id, &q.q, q.limit.unwrap_or(20).clamp(1, 100)).await?;
    Ok(axum::Json(json!({ "items": hits })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedQuery {
    after: Option<i64>,
    limit: Option<u64>,
}

pub(super) async fn events(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<FeedQuery>,
) -> ApiResult<impl IntoResponse> {
    let after = q.after.unwrap_or(0);
    let items =
        crate::event::feed(core.db(), p.workspace_id, after, None, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let next = items.last().map(|e| e.id).unwrap_or(after);
    Ok(axum::Json(json!({ "items": items, "next_after": next })))
}

pub(super) async fn poisoned_events(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    p.require_admin("reading poisoned events")?;
    Ok(axum::Json(crate::dispatch::poisoned(&core, p.workspace_id).await?))
}

pub(super) async fn dispatcher(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    p.require_admin("reading the dispatcher's state")?;
    Ok(axum::Json(crate::dispatch::status(&core, p.workspace_id).await?))
}

pub(super) async fn attachment(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    let (content_type, data) = crate::ticket::attachment(core.db(), p.workspace_id, id).await?;
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, "attachment".to_owned())], data))
}

pub(super) async fn message_source(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((ticket_id, message_id)): Path<(i64, i64)>,
) -> ApiResult<impl IntoResponse> {
    let data = crate::ticket::source(core.db(), p.workspace_id, ticket_id, message_id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"message-{message_id}.eml\"")),
        ],
        data,
    ))
}

pub(super) async fn me(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    let a = crate::agent::get(core.db(), p.workspace_id, p.agent_id).await?;
    Ok(axum::Json(json!({ "workspace_id": p.workspace_id, "agent": a, "role": p.role, "token_id": p.token_id })))
}

pub(super) async fn openapi() -> impl IntoResponse {
    axum::Json(super::openapi::document())
}
