//! `/api/v1/templates`, `/api/v1/webhooks`, `/api/v1/workflows/replay`, `/api/v1/surveys`,
//! `/api/v1/notifications` and the public survey page `/survey/{token}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use serde_json::json;

use super::channels::{Client, too_many};
use super::error::{ApiError, ApiResult};
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::template::{self, PreviewInput, Target, TemplateInput};

pub(super) async fn templates(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(template::list(&core, p.workspace_id).await?))
}

pub(super) async fn save_template(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((purpose, channel, language)): Path<(String, String, String)>,
    Json(input): Json<TemplateInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    let target = Target::Template(&purpose, &channel, &language);
    Ok(axum::Json(template::save(&core, p.workspace_id, target, &input).await?))
}

pub(super) async fn delete_template(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((purpose, channel, language)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    template::remove(&core, p.workspace_id, Target::Template(&purpose, &channel, &language)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn save_partial(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((name, language)): Path<(String, String)>,
    Json(input): Json<TemplateInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    Ok(axum::Json(template::save(&core, p.workspace_id, Target::Partial(&name, &language), &input).await?))
}

pub(super) async fn delete_partial(
    State(core): State<Core>,
    Auth(p): Auth,
    Path((name, language)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    template::remove(&core, p.workspace_id, Target::Partial(&name, &language)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HelperInput {
    source: String,
}

pub(super) async fn save_helper(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(name): Path<String>,
    Json(input): Json<HelperInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    let input = TemplateInput { subject: None, text: input.source, html: None };
    Ok(axum::Json(template::save(&core, p.workspace_id, Target::Helper(&name), &input).await?))
}

pub(super) async fn delete_helper(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing templates")?;
    template::remove(&core, p.workspace_id, Target::Helper(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn preview(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<PreviewInput>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(template::preview(&core, p.workspace_id, &input).await?))
}

pub(super) async fn replay(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<crate::workflow::Replay>,
) -> ApiResult<impl IntoResponse> {
    // Thousands of script runs over the workspace's history: an admin's tool, not an agent's.
    p.require_admin("replaying workflows")?;
    Ok(axum::Json(crate::workflow::replay(&core, p.workspace_id, &input).await?))
}

pub(super) async fn webhooks(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::webhook::list(&core, p.workspace_id).await?))
}

pub(super) async fn save_webhook(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<crate::webhook::WebhookInput>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing webhooks")?;
    Ok((StatusCode::CREATED, axum::Json(crate::webhook::save(&core, p.workspace_id, &input).await?)))
}

pub(super) async fn delete_webhook(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing webhooks")?;
    crate::webhook::delete(&core, p.workspace_id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn deliveries(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::webhook::deliveries(&core, p.workspace_id).await?))
}

pub(super) async fn surveys(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::survey::list(&core, p.workspace_id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationQuery {
    #[serde(default)]
    unread: Option<bool>,
}

pub(super) async fn notifications(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(q): Query<NotificationQuery>,
) -> ApiResult<impl IntoResponse> {
    let unread = q.unread.unwrap_or(false);
    Ok(axum::Json(crate::survey::notifications(&core, p.workspace_id, p.agent_id, unread).await?))
}

pub(super) async fn read_notification(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    crate::survey::mark_read(&core, p.workspace_id, p.agent_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /survey/{token}`: the public survey page. Limited per client address: the tokens are
/// long, but a page load costs a database read, and guessing should not be cheap.
pub(super) async fn survey_page(
    State(core): State<Core>,
    Client(client): Client,
    Path(token): Path<String>,
) -> ApiResult<axum::response::Response> {
    if let Err(wait) = core.throttles().survey(client) {
        return Ok(too_many(wait, "from this address"));
    }
    Ok(Html(crate::survey::page(&core, &token, None).await?).into_response())
}

/// `POST /survey/{token}`: an answer, from the page's form (`rating=4&comment=…`) or as JSON.
pub(super) async fn survey_answer(
    State(core): State<Core>,
    Client(client): Client,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    if let Err(wait) = core.throttles().survey(client) {
        return Ok(too_many(wait, "from this address"));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m);
    let (answer, form) = if content_type.starts_with("application/json") {
        (serde_json::from_slice::<crate::survey::Answer>(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?, false)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut rating = None;
        let mut comment = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match k.as_ref() {
                "rating" => rating = Some(v.parse::<i32>().map_err(|_| bad(format!("rating {v:?} is not a number")))?),
                "comment" => comment = Some(v.into_owned()),
                _ => {}
            }
        }
        let rating = rating.ok_or_else(|| bad("choose a rating".into()))?;
        (crate::survey::Answer { rating, comment }, true)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or a form",
        ));
    };
    crate::survey::answer(&core, &token, &answer).await?;
    if form {
        Ok(Html(crate::survey::page(&core, &token, Some("Thank you for your answer!")).await?).into_response())
    } else {
        Ok((StatusCode::OK, axum::Json(json!({ "recorded": true }))).into_response())
    }
}
