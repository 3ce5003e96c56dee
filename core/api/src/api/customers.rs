//! `/api/v1/customers`: the customer record, identities, merge and the cross-channel timeline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::customer::{self, CustomerPatch, IdentityInput, NewCustomer};

pub(super) async fn create(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<NewCustomer>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, axum::Json(customer::create(&core, p.workspace_id, &p.actor(), &input).await?)))
}

pub(super) async fn get(State(core): State<Core>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(customer::get(core.db(), p.workspace_id, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    after: Option<i64>,
    limit: Option<u64>,
}

pub(super) async fn list(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let items = customer::list(core.db(), p.workspace_id, q.after.unwrap_or(0), limit).await?;
    let next = if items.len() as u64 == limit { items.last().map(|c| c.id) } else { None };
    Ok(axum::Json(serde_json::json!({ "items": items, "next_after": next })))
}

pub(super) async fn update(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(patch): Json<CustomerPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(customer::update(&core, p.workspace_id, id, &p.actor(), &patch).await?))
}

pub(super) async fn add_identity(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<IdentityInput>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, axum::Json(customer::add_identity(&core, p.workspace_id, id, &p.actor(), &input).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MergeInput {
    /// The customer that remains.
    into_id: i64,
}

pub(super) async fn merge(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<MergeInput>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(customer::merge(&core, p.workspace_id, id, input.into_id, &p.actor()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineQuery {
    before: Option<i64>,
    limit: Option<u64>,
}

pub(super) async fn timeline(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let items = customer::timeline(core.db(), p.workspace_id, id, q.before, limit).await?;
    let next = if items.len() as u64 == limit { items.last().map(|e| e.message_id) } else { None };
    Ok(axum::Json(serde_json::json!({ "items": items, "next_before": next })))
}
