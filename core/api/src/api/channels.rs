//! `/api/v1/plugins`, `/api/v1/channels`, `/api/v1/outbox` and the public webhook endpoint
//! `/hooks/{channel}`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::error::ApiResult;
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::channel::{self, Answer, ChannelPatch, HookRequest, NewChannel, Refusal};

/// `GET /api/v1/plugins`: the installation-wide plugins and the workspace's own.
pub(super) async fn plugins(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": core.channels().list(core.db(), p.workspace_id).await? })))
}

pub(super) async fn plugin(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(core.channels().view_for(core.db(), p.workspace_id, &id).await?))
}

/// `POST /api/v1/plugins`: the body is the component itself. The plugin belongs to the
/// caller's workspace (see `plugin::Scope`).
pub(super) async fn upload(
    State(core): State<Core>,
    Auth(p): Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("uploading plugins")?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the plugin component as the body with Content-Type: application/wasm",
        ));
    }
    let view = core.channels().upload(core.db(), p.workspace_id, body.to_vec()).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

pub(super) async fn rollback(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("rolling plugins back")?;
    Ok(axum::Json(core.channels().rollback(core.db(), p.workspace_id, &id).await?))
}

pub(super) async fn update(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(patch): Json<ChannelPatch>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing channels")?;
    Ok(axum::Json(channel::update(&core, p.workspace_id, id, &patch).await?))
}

pub(super) async fn install_automation(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<crate::automation::NewAutomation>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("installing automations")?;
    Ok((StatusCode::CREATED, axum::Json(crate::automation::install(&core, p.workspace_id, &input).await?)))
}

pub(super) async fn automations(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": crate::automation::list(&core, p.workspace_id).await? })))
}

pub(super) async fn automation(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::automation::get(&core, p.workspace_id, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutomationPatch {
    enabled: bool,
}

pub(super) async fn update_automation(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(patch): Json<AutomationPatch>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing automations")?;
    Ok(axum::Json(crate::automation::set_enabled(&core, p.workspace_id, id, patch.enabled).await?))
}

pub(super) async fn create_workflow(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<crate::workflow::WorkflowInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing workflows")?;
    Ok((StatusCode::CREATED, axum::Json(crate::workflow::create(&core, p.workspace_id, &input).await?)))
}

pub(super) async fn workflows(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": crate::workflow::list(&core, p.workspace_id).await? })))
}

pub(super) async fn workflow(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::workflow::get(&core, p.workspace_id, id).await?))
}

pub(super) async fn update_workflow(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<crate::workflow::WorkflowInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing workflows")?;
    Ok(axum::Json(crate::workflow::update(&core, p.workspace_id, id, &input).await?))
}

pub(super) async fn delete_workflow(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing workflows")?;
    crate::workflow::delete(&core, p.workspace_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn dry_run(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(input): Json<crate::workflow::DryRun>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::workflow::dry_run(&core, p.workspace_id, Some(id), &input).await?))
}

pub(super) async fn dry_run_draft(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<crate::workflow::DryRun>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::workflow::dry_run(&core, p.workspace_id, None, &input).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboxQuery {
    status: Option<String>,
}

pub(super) async fn outbox(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<OutboxQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": crate::outbox::list(&core, p.workspace_id, q.status.as_deref()).await? })))
}

pub(super) async fn replay(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::outbox::replay(&core, p.workspace_id, id).await?))
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
    let answer = channel::retry(&core, p.workspace_id, id, payload).await?;
    let raw = answer.body();
    let body =
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap_or_else(|_| json!(String::from_utf8_lossy(&raw)));
    Ok(axum::Json(json!({ "status": hook_status(&answer).as_u16(), "body": body })))
}

/// The HTTP status of a webhook answer: the plugin's own, 200 for a request taken, and for a
/// refusal the status its reason calls for.
fn hook_status(answer: &Answer) -> StatusCode {
    match answer {
        Answer::Plugin(r) => StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        Answer::Taken(_) => StatusCode::OK,
        Answer::Refused { why, .. } => match why {
            Refusal::Suspended | Refusal::Disabled | Refusal::PluginUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::PluginFailed => StatusCode::BAD_GATEWAY,
            Refusal::Rejected => StatusCode::UNAUTHORIZED,
            Refusal::InvalidRequest | Refusal::InvalidPayload | Refusal::InvalidMessage => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::NotStored => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// Hook answers may be read by pages on other sites (a chat widget): hooks are public and
/// carry no cookies, so any origin may read them.
fn to_response(answer: Answer) -> Response {
    let status = hook_status(&answer);
    let body = answer.body();
    let content_type = match answer {
        Answer::Plugin(r) => r.content_type,
        _ => "application/json".to_owned(),
    };
    (status, [(header::CONTENT_TYPE, content_type), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".into())], body)
        .into_response()
}

fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

/// The client of a public request: the peer's address, or the one a trusted proxy forwarded
/// (`channels.trusted_proxies`). `None` when the router runs without a socket (in-process
/// tests): such requests are not limited by address.
pub(super) struct Client(pub(super) Option<IpAddr>);

impl FromRequestParts<Core> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, core: &Core) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(Client(core.throttles().client(peer, forwarded)))
    }
}

/// The answer to a client over its rate: 429 with `Retry-After` (whole seconds, at least 1).
pub(super) fn too_many(wait: Duration, what: &str) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let body = json!({ "error": { "code": "rate_limited", "message": format!("too many requests {what}; retry after {seconds} s") } });
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.to_string()), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".into())],
        axum::Json(body),
    )
        .into_response()
}

/// Reads a body up to `limit` bytes; `None` when it is longer (the rest is not read).
async fn read_body(mut body: Body, limit: usize) -> ApiResult<Option<Vec<u8>>> {
    use axum::body::HttpBody;
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("the request body could not be read: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

/// `/hooks/{id}` and `/hooks/{id}/{*rest}`: public; the plugin checks authenticity. CORS
/// preflights are answered here and never reach the plugin. Before anything is read or
/// stored, the client's and the channel's rates are checked (in memory), then the body's
/// size against the channel's limit.
pub(super) async fn hook(
    State(core): State<Core>,
    Client(client): Client,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
    body: Body,
) -> ApiResult<Response> {
    let id: i64 = params
        .iter()
        .find(|(k, _)| k == "id")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| crate::Error::NotFound("channel"))?;
    if method == Method::OPTIONS {
        return Ok(preflight());
    }
    if let Err(wait) = core.throttles().hook_address(client) {
        return Ok(too_many(wait, "from this address"));
    }
    // Known channels only get a bucket (an unknown id is a 404 from the row cache).
    let limit = channel::request_limit(&core, id).await?;
    if let Err(wait) = core.throttles().hook_channel(id) {
        return Ok(too_many(wait, "to this channel"));
    }
    let rest = params.iter().find(|(k, _)| k == "rest").map(|(_, v)| format!("/{v}")).unwrap_or_default();
    let mut request = HookRequest {
        method: method.as_str().to_owned(),
        path: rest,
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: Vec::new(),
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: usize| n > limit) {
        return Ok(to_response(channel::refuse_too_large(&core, id, request, declared).await?));
    }
    match read_body(body, limit).await? {
        Some(bytes) => request.body = bytes,
        None => return Ok(to_response(channel::refuse_too_large(&core, id, request, declared).await?)),
    }
    // Hooks are public: a flood of them must not queue unbounded plugin calls. Refused before
    // anything is stored, so the sender retries (Retry-After) and nothing is lost.
    let Some(_slot) = core.channels().call_slot().await else {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the server is running as many plugin calls as it may; retry in a second",
        )
        .into_response();
        busy.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return Ok(busy);
    };
    Ok(to_response(channel::receive(&core, id, request).await?))
}
