//! Plugdesk's web application for agents: sign-in and sessions, the inbox, the ticket page and
//! live updates, served by `plugdesk serve` at `/` beside the JSON API under `/api/v1`.
//!
//! Pages are rendered on the server (maud, escaped by default) and made lively by a few small
//! ES modules of our own (`assets/`): no framework, nothing to boot. Every handler calls the
//! same domain and core functions as the API, so every rule (status flow, limits,
//! transactions, workspace confinement) holds in both. No SQL and no runtime here.

mod assets;
mod customer;
mod error;
mod form;
mod i18n;
mod inbox;
mod live;
mod page;
mod session;
mod settings;
mod signin;
mod ticket;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use plugdesk_core::Core;

/// What the pages share: the core, who is looking at which ticket, and the sign-in throttle.
#[derive(Clone)]
pub(crate) struct Web {
    pub(crate) core: Core,
    /// Every node's events, once each (see [`live::relay`]).
    pub(crate) events: tokio::sync::broadcast::Sender<plugdesk_core::event::Event>,
    pub(crate) presence: Arc<live::Presence>,
}

/// Largest form the pages accept: a reply with its text (the message limit) plus the fields.
fn max_form_bytes(core: &Core) -> usize {
    core.limits().max_message_bytes + 64 * 1024
}

/// The largest form with files (a reply with attachments): the API's request size.
fn max_upload_bytes(core: &Core) -> usize {
    core.limits().max_body_bytes.max(max_form_bytes(core))
}

/// The web application's routes, to be merged beside the JSON API's.
pub fn router(core: Core) -> Router {
    let limit = max_form_bytes(&core);
    let upload_limit = max_upload_bytes(&core);
    let presence = Arc::new(live::Presence::default());
    let web = Web { events: live::relay(&core, presence.clone()), core, presence };
    Router::new()
        .route("/", get(inbox::home))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/setup/{token}", get(signin::setup_form).post(signin::setup_submit))
        .route("/invite/{token}", get(signin::invite_form).post(signin::invite_submit))
        .route("/signout", post(signin::signout))
        .route("/signout/everywhere", post(signin::signout_everywhere))
        .route("/language", post(signin::language))
        .route("/inbox", get(inbox::page))
        .route("/inbox/rows", get(inbox::rows))
        .route("/inbox/counts", get(inbox::counts))
        .route("/inbox/bulk", post(inbox::bulk))
        .route("/inbox/views", post(inbox::save_view))
        .route("/inbox/views/{id}/delete", post(inbox::delete_view))
        .route("/tickets/{id}", get(ticket::page))
        // A reply may carry files: up to the API's request size.
        .route("/tickets/{id}/messages", post(ticket::send).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/tickets/{id}/fields", post(ticket::fields))
        .route("/tickets/{id}/assign-me", post(ticket::assign_me))
        .route("/tickets/{id}/escalate", post(ticket::escalate))
        .route("/tickets/{id}/merge", post(ticket::merge))
        .route("/tickets/{id}/draft", put(ticket::draft))
        .route("/tickets/{id}/modules", get(ticket::modules))
        .route("/tickets/{id}/modules/render", post(ticket::render_module))
        .route("/tickets/{id}/presence", post(live::presence))
        .route("/tickets/{id}/messages/{message}/source", get(ticket::source))
        .route("/tickets/{id}/messages/{message}/retry", post(ticket::retry))
        .route("/tickets/{id}/messages/{message}/split", post(ticket::split))
        .route("/attachments/{id}", get(ticket::attachment))
        .route("/customers/{id}", get(customer::timeline).post(customer::update))
        .route("/customers/{id}/merge", get(customer::confirm).post(customer::merge))
        .route("/live", get(live::stream))
        .route("/notifications", get(settings::notifications))
        .route("/me", get(settings::me))
        .route("/me/signature", post(settings::save_signature))
        .route("/settings/agents", get(settings::agents))
        .route("/settings/agents/invite", post(settings::invite))
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn_with_state(web.clone(), session::guard))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}

/// The headers every page carries: no inline script, no framing, no sniffing, no referrer
/// leaving the site.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages hold a ticket's conversation: never kept by a shared cache or the back button.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Whether a method changes state (and so needs the CSRF checks).
fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Used by handlers that only need the state.
type WebState = State<Web>;
