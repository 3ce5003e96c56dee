//! `/api/v1/tickets`: create, read, list, change, and the conversation (replies, notes, the
//! customer's messages) of a ticket.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::ticket::{self, ListQuery, MessageInput, MessageKind, NewTicket, TicketPatch};

pub(super) async fn create(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<NewTicket>,
) -> ApiResult<impl IntoResponse> {
    let created = core.writer().create(p.workspace_id, &p.actor(), input, core.limits()).await?;
    if created.created {
        core.metrics().count_tickets_created(1);
    }
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(created.ticket)))
}

pub(super) async fn get(State(core): State<Core>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(ticket::get(core.db(), p.workspace_id, id).await?))
}

pub(super) async fn list(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(ticket::list(core.db(), p.workspace_id, &q).await?))
}

pub(super) async fn update(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(patch): Json<TicketPatch>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(ticket::update(&core, p.workspace_id, id, &p.actor(), &patch).await?))
}

async fn add(
    core: Core,
    p: crate::auth::Principal,
    id: i64,
    kind: MessageKind,
    input: MessageInput,
) -> ApiResult<impl IntoResponse> {
    let (msg, created) =
        ticket::add_message(&core, p.workspace_id, id, kind, Some(p.agent_id), &p.actor(), &input).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(msg)))
}

pub(super) async fn reply(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<MessageInput>,
) -> ApiResult<impl IntoResponse> {
    add(core, p, id, MessageKind::Reply, input).await
}

pub(super) async fn note(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<MessageInput>,
) -> ApiResult<impl IntoResponse> {
    add(core, p, id, MessageKind::Note, input).await
}

pub(super) async fn inbound(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<MessageInput>,
) -> ApiResult<impl IntoResponse> {
    add(core, p, id, MessageKind::Inbound, input).await
}

pub(super) async fn messages(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(serde_json::json!({ "items": ticket::messages(core.db(), p.workspace_id, id, None).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u64>,
}

pub(super) async fn events(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<impl IntoResponse> {
    ticket::find(core.db(), p.workspace_id, id).await?;
    let items = crate::event::feed(
        core.db(),
        p.workspace_id,
        q.after.unwrap_or(0),
        Some(id),
        q.limit.unwrap_or(100).clamp(1, 1000),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({ "items": items })))
}
