//! The customer: their whole timeline across channels and tickets, and, from a ticket's side
//! panel, changing their name and language and merging them into another customer after a
//! confirmation that names what moves.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use plugdesk_core::customer::{self, CustomerPatch};
use plugdesk_core::ticket;
use serde::Deserialize;

use crate::WebState;
use crate::error::{WebError, WebResult};
use crate::form::Fields;
use crate::page::{self, MainAttrs, Section};
use crate::session::Ctx;

/// Timeline entries per page.
const TIMELINE_PAGE: u64 = 100;

#[derive(Deserialize)]
pub(crate) struct TimelineQuery {
    #[serde(default)]
    before: Option<i64>,
}

/// `GET /customers/{id}`: every message of the customer on any ticket and channel, newest
/// first, a hundred at a time.
pub(crate) async fn timeline(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    Query(q): Query<TimelineQuery>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let db = web.core.db();
    let c = customer::get(db, s.workspace_id, id).await?;
    let entries = customer::timeline(db, s.workspace_id, id, q.before, TIMELINE_PAGE).await?;
    let title = l.f("timeline_title", &[("name", &c.name)]);
    let body = html! {
        h1 { (title) }
        p { @for i in &c.identities { span.identity { (i.kind) ": " (i.address) } " " } }
        ol #timeline {
            @for e in &entries {
                li.message.(e.direction) {
                    div.message-head {
                        a href={ "/tickets/" (e.ticket_id) "#message-" (e.message_id) } { "#" (e.ticket_number) " " (e.subject) }
                        " · " span.channel { (e.channel) } " · " (page::time_text(&e.created_at))
                    }
                    div.body { (e.body) }
                }
            }
        }
        @if entries.len() as u64 == TIMELINE_PAGE {
            @if let Some(last) = entries.last() {
                a href={ "/customers/" (id) "?before=" (last.message_id) } { (l.t("timeline_older")) }
            }
        }
    };
    Ok(page::page(&ctx, &title, Section::None, MainAttrs::default(), body).into_response())
}

/// Where to go back to: a ticket page of this site, or the inbox.
fn back(fields: &Fields) -> String {
    fields
        .get("back")
        .filter(|b| b.starts_with("/tickets/") && !b.contains("//"))
        .map_or_else(|| "/".to_owned(), str::to_owned)
}

/// `POST /customers/{id}`: name and language.
pub(crate) async fn update(State(web): WebState, ctx: Ctx, Path(id): Path<i64>, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let patch = CustomerPatch {
        name: fields.get("name").map(str::to_owned),
        language: fields.get("language").map(str::to_owned),
        ..Default::default()
    };
    customer::update(&web.core, s.workspace_id, id, &format!("agent:{}", s.agent_id), &patch).await?;
    Ok(Redirect::to(&back(&fields)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct MergeQuery {
    into: String,
    #[serde(default)]
    back: Option<String>,
}

/// `GET /customers/{id}/merge?into=N`: what a merge would move, and the button that does it.
pub(crate) async fn confirm(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    Query(q): Query<MergeQuery>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let into: i64 = q.into.trim().parse().map_err(|_| WebError::Invalid(l.t("merge_target_invalid").to_owned()))?;
    if into == id {
        return Err(WebError::Invalid(l.t("merge_self").to_owned()));
    }
    let db = web.core.db();
    let source = customer::get(db, s.workspace_id, id).await?;
    let target = customer::get(db, s.workspace_id, into).await?;
    let tickets = ticket::list(
        db,
        s.workspace_id,
        &ticket::ListQuery { customer_id: Some(id), limit: Some(200), ..Default::default() },
    )
    .await?;
    let back = q.back.filter(|b| b.starts_with("/tickets/") && !b.contains("//")).unwrap_or_else(|| "/".into());
    let title = l.f("merge_title", &[("source", &source.name), ("target", &target.name)]);
    let body = html! {
        h1 { (title) }
        p { (l.f("merge_intro", &[("source", &source.name), ("target", &target.name)])) }
        h2 { (l.t("merge_identities")) }
        ul #merge-identities {
            @for i in &source.identities { li { (i.kind) ": " (i.address) } }
        }
        h2 { (l.f("merge_tickets", &[("count", &tickets.items.len().to_string())])) }
        ul #merge-tickets {
            @for t in &tickets.items { li { "#" (t.number) " " (t.subject) } }
        }
        form #merge method="post" action={ "/customers/" (id) "/merge" } {
            (page::csrf(&ctx))
            input type="hidden" name="into" value=(into);
            input type="hidden" name="back" value=(back);
            button type="submit" { (l.t("merge_submit")) }
            " "
            a href=(back) { (l.t("cancel")) }
        }
    };
    Ok(page::page(&ctx, &title, Section::None, MainAttrs::default(), body).into_response())
}

/// `POST /customers/{id}/merge`.
pub(crate) async fn merge(State(web): WebState, ctx: Ctx, Path(id): Path<i64>, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let into: i64 = fields
        .get("into")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| WebError::Invalid(ctx.lang.t("merge_target_invalid").to_owned()))?;
    customer::merge(&web.core, s.workspace_id, id, into, &format!("agent:{}", s.agent_id)).await?;
    Ok(Redirect::to(&back(&fields)).into_response())
}
