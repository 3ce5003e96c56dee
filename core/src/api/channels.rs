//! `/api/v1/plugins`, `/api/v1/channels` and the public webhook endpoint `/hooks/{channel}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::channel::{self, HookRequest, HookResponse, NewChannel};

pub(super) async fn plugins(State(core): State<Core>, Auth(_): Auth) -> ApiResult<impl IntoResponse> {
    let items: Vec<_> = core
        .channels()
        .descriptors()
        .await
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id, "name": d.name, "version": d.version, "channel_kind": d.channel_kind,
                "capabilities": d.capabilities, "wit_version": plugdesk_host::WIT_VERSION,
                "settings_schema": serde_json::from_str::<serde_json::Value>(&d.settings_schema).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

pub(super) async fn install(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<NewChannel>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("installing channels")?;
    Ok((StatusCode::CREATED, axum::Json(channel::install(&core, p.workspace_id, &input).await?)))
}

pub(super) async fn list(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": channel::list(&core, p.workspace_id).await? })))
}

pub(super) async fn get(State(core): State<Core>, Auth(p): Auth, Path(id): Path<i64>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(channel::get(&core, p.workspace_id, id).await?))
}

pub(super) async fn resume(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("resuming channels")?;
    Ok(axum::Json(channel::resume(&core, p.workspace_id, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PayloadQuery {
    status: Option<String>,
}

pub(super) async fn payloads(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Query(q): Query<PayloadQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": channel::payloads(&core, p.workspace_id, id, q.status.as_deref()).await? })))
}

pub(super) async fn retry(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((id, payload)): Path<(i64, i64)>,
) -> ApiResult<impl IntoResponse> {
    let r = channel::retry(&core, p.workspace_id, id, payload).await?;
    let body = serde_json::from_slice::<serde_json::Value>(&r.body)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.body)));
    Ok(axum::Json(json!({ "status": r.status, "body": body })))
}

fn to_response(r: HookResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response()
}

/// `/hooks/{id}` and `/hooks/{id}/{*rest}`: public; the plugin checks authenticity.
pub(super) async fn hook(
    State(core): State<Core>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult<Response> {
    let id: i64 = params
        .iter()
        .find(|(k, _)| k == "id")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| crate::Error::NotFound("channel"))?;
    let rest = params.iter().find(|(k, _)| k == "rest").map(|(_, v)| format!("/{v}")).unwrap_or_default();
    let request = HookRequest {
        method: method.as_str().to_owned(),
        path: rest,
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    };
    Ok(to_response(channel::receive(&core, id, request).await?))
}
