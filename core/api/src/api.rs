//! The HTTP API: JSON under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`. Handlers are
//! thin: they authenticate, call the domain, and convert to response types. Every error
//! answers `{"error": {"code", "message"}}` (see [`error::ApiError`]).

mod channels;
mod customers;
pub mod error;
pub mod extract;
pub mod openapi;
mod rules;
mod settings;
mod system;
mod tickets;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::Core;
use error::ApiError;

/// Builds the application router over a running core. Tests drive it without a socket; the
/// server binds it to a listener.
pub fn app(core: Core) -> Router {
    let limit = core.limits().max_body_bytes;
    let api = Router::new()
        .route("/tickets", post(tickets::create).get(tickets::list))
        .route("/tickets/{id}", get(tickets::get).patch(tickets::update))
        .route("/tickets/{id}/reply", post(tickets::reply))
        .route("/tickets/{id}/notes", post(tickets::note))
        .route("/tickets/{id}/messages", get(tickets::messages).post(tickets::inbound))
        .route("/tickets/{id}/events", get(tickets::events))
        .route("/tickets/{id}/messages/{message}/source", get(system::message_source))
        .route("/workspace", get(settings::workspace).patch(settings::update_workspace))
        .route("/customers", post(customers::create).get(customers::list))
        .route("/customers/{id}", get(customers::get).patch(customers::update))
        .route("/customers/{id}/identities", post(customers::add_identity))
        .route("/customers/{id}/merge", post(customers::merge))
        .route("/customers/{id}/timeline", get(customers::timeline))
        .route("/organizations", post(settings::create_organization).get(settings::list_organizations))
        .route("/organizations/{id}", get(settings::get_organization).put(settings::update_organization))
        .route("/tiers", post(settings::create_tier).get(settings::list_tiers))
        .route("/tiers/{id}", get(settings::get_tier).put(settings::update_tier))
        .route("/agents", post(settings::create_agent).get(settings::list_agents))
        .route("/agents/{id}", get(settings::get_agent).put(settings::update_agent))
        .route("/teams", post(settings::create_team).get(settings::list_teams))
        .route("/teams/{id}", get(settings::get_team).put(settings::update_team))
        .route("/tokens", post(settings::create_token).get(settings::list_tokens))
        .route("/tokens/{id}", axum::routing::delete(settings::revoke_token))
        .route("/search", get(system::search))
        .route("/events", get(system::events))
        .route("/events/poisoned", get(system::poisoned_events))
        .route("/events/dispatcher", get(system::dispatcher))
        .route("/attachments/{id}", get(system::attachment))
        .route("/me", get(system::me))
        .route(
            "/plugins",
            get(channels::plugins)
                .post(channels::upload)
                .layer(DefaultBodyLimit::max(crate::plugin::MAX_UPLOAD_BYTES + 1)),
        )
        .route("/plugins/{key}", get(channels::plugin))
        .route("/plugins/{key}/rollback", post(channels::rollback))
        .route("/channels", post(channels::install).get(channels::list))
        .route("/channels/{id}", get(channels::get).patch(channels::update))
        .route("/channels/{id}/resume", post(channels::resume))
        .route("/channels/{id}/payloads", get(channels::payloads))
        .route("/channels/{id}/payloads/{payload}/retry", post(channels::retry))
        .route("/automations", post(channels::install_automation).get(channels::automations))
        .route("/automations/{id}", get(channels::automation).patch(channels::update_automation))
        .route("/workflows", post(channels::create_workflow).get(channels::workflows))
        .route("/workflows/dry-run", post(channels::dry_run_draft))
        .route(
            "/workflows/{id}",
            get(channels::workflow).put(channels::update_workflow).delete(channels::delete_workflow),
        )
        .route("/workflows/{id}/dry-run", post(channels::dry_run))
        .route("/workflows/replay", post(rules::replay))
        .route("/templates", get(rules::templates))
        .route("/templates/preview", post(rules::preview))
        .route(
            "/templates/{purpose}/{channel}/{language}",
            axum::routing::put(rules::save_template).delete(rules::delete_template),
        )
        .route(
            "/template-partials/{name}/{language}",
            axum::routing::put(rules::save_partial).delete(rules::delete_partial),
        )
        .route("/template-helpers/{name}", axum::routing::put(rules::save_helper).delete(rules::delete_helper))
        .route("/webhooks", post(rules::save_webhook).get(rules::webhooks))
        .route("/webhooks/{name}", axum::routing::delete(rules::delete_webhook))
        .route("/webhook-deliveries", get(rules::deliveries))
        .route("/surveys", get(rules::surveys))
        .route("/notifications", get(rules::notifications))
        .route("/notifications/{id}/read", post(rules::read_notification))
        .route("/outbox", get(channels::outbox))
        .route("/outbox/{id}/replay", post(channels::replay))
        .route("/openapi.json", get(system::openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/hooks/{id}", any(channels::hook))
        .route("/hooks/{id}/{*rest}", any(channels::hook))
        .route("/survey/{token}", get(rules::survey_page).post(rules::survey_answer))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(core.clone(), observe))
        .with_state(core)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; the API is described at /api/v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method; see /api/v1/openapi.json",
    )
}

/// Records every request in the metrics and the log.
async fn observe(State(core): State<Core>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await.into_response();
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    core.metrics().observe_request(method.as_str(), &route, status, elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, micros = elapsed.as_micros() as u64, "request");
    response
}
