//! The inbox: the views with their counts, filters, search, the rows, and bulk changes.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use plugdesk_core::inbox::{self, Row, Sort, View};
use plugdesk_core::ticket::{Status, TicketPatch};
use serde::Deserialize;

use crate::WebState;
use crate::error::{WebError, WebResult};
use crate::form::Fields;
use crate::i18n::Lang;
use crate::page::{self, MainAttrs, Section};
use crate::session::Ctx;

/// The inbox's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Params {
    view: Option<String>,
    channel: Option<String>,
    tier: Option<String>,
    tag: Option<String>,
    category: Option<String>,
    level: Option<String>,
    sort: Option<String>,
    q: Option<String>,
    /// A message to show after a bulk change.
    done: Option<String>,
}

impl Params {
    fn query(&self) -> WebResult<inbox::Query> {
        let blank = |s: &Option<String>| s.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(inbox::Query {
            view: match blank(&self.view) {
                Some(v) => View::parse(&v)?,
                None => View::Open,
            },
            channel: blank(&self.channel),
            tier: blank(&self.tier),
            tag: blank(&self.tag),
            category: blank(&self.category),
            level: match blank(&self.level) {
                Some(l) => Some(l.parse().map_err(|_| WebError::Invalid(format!("level {l:?} must be 1 or 2")))?),
                None => None,
            },
            sort: match blank(&self.sort) {
                Some(s) => Sort::parse(&s)?,
                None => Sort::SlaDue,
            },
            search: blank(&self.q),
        })
    }

    /// The query string that reproduces this view (for the live refresh and links).
    fn encode(&self, view: Option<View>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let v = view.map(|v| v.as_str().to_owned()).or_else(|| self.view.clone());
        for (k, val) in [
            ("view", v.as_ref()),
            ("channel", self.channel.as_ref()),
            ("tier", self.tier.as_ref()),
            ("tag", self.tag.as_ref()),
            ("category", self.category.as_ref()),
            ("level", self.level.as_ref()),
            ("sort", self.sort.as_ref()),
            ("q", if view.is_some() { None } else { self.q.as_ref() }),
        ] {
            if let Some(val) = val.filter(|s| !s.trim().is_empty()) {
                out.append_pair(k, val);
            }
        }
        out.finish()
    }
}

/// `GET /`: the inbox when signed in, the sign-in page otherwise.
pub(crate) async fn home(state: WebState, ctx: Ctx, q: Query<Params>) -> WebResult<Response> {
    if ctx.session.is_none() {
        return Ok(Redirect::to("/signin").into_response());
    }
    page(state, ctx, q).await
}

/// `GET /inbox`.
pub(crate) async fn page(State(web): WebState, ctx: Ctx, Query(params): Query<Params>) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let q = params.query()?;
    let db = web.core.db();
    let rows = inbox::rows(db, s.workspace_id, s.agent_id, &q).await?;
    let counts = inbox::counts(db, s.workspace_id, s.agent_id).await?;
    let tiers = plugdesk_core::tier::list(db, s.workspace_id).await?;
    let channels = inbox::channels(db, s.workspace_id).await?;
    let saved = plugdesk_core::account::saved_views(db, s.agent_id).await?;
    let current = params.encode(None);
    let title = l.t(&format!("view_{}", q.view.as_str())).to_owned();
    let rows_url = format!("/inbox/rows?{}", params.encode(None));
    let body = html! {
        div.inbox {
            nav #views aria-label=(l.t("views")) {
                ul {
                    @for (v, n) in &counts {
                        li {
                            a data-view=(v.as_str()) href={ "/inbox?" (params.encode(Some(*v))) }
                                aria-current=[(*v == q.view).then_some("page")] {
                                span.name { (l.t(&format!("view_{}", v.as_str()))) }
                                " "
                                span.count data-count=(v.as_str()) { (inbox::count_text(*n)) }
                            }
                        }
                    }
                }
                h2.views-title { (l.t("saved_views")) }
                ul #saved-views {
                    @for v in &saved {
                        li {
                            a href={ "/inbox?" (v.query) } aria-current=[(v.query == current).then_some("page")] { (v.name) }
                            form.inline method="post" action={ "/inbox/views/" (v.id) "/delete" } {
                                (page::csrf(&ctx))
                                button.link type="submit" aria-label=(l.f("saved_view_delete", &[("name", &v.name)])) { "×" }
                            }
                        }
                    }
                }
                form #save-view method="post" action="/inbox/views" {
                    (page::csrf(&ctx))
                    input type="hidden" name="query" value=(current);
                    label for="view-name" { (l.t("saved_view_name")) }
                    input #view-name name="name" required maxlength="60";
                    button type="submit" { (l.t("saved_view_save")) }
                }
            }
            section.list aria-labelledby="inbox-title" {
                div.list-head {
                    h1 #inbox-title { (title) }
                    form #search method="get" action="/inbox" role="search" {
                        input type="hidden" name="view" value=(q.view.as_str());
                        label.visually-hidden for="q" { (l.t("search_label")) }
                        input #q type="search" name="q" value=[params.q.as_deref()] placeholder=(l.t("search_placeholder"));
                        button type="submit" { (l.t("search")) }
                    }
                }
                @if let Some(done) = params.done.as_deref() {
                    p.flash role="status" { (l.f("bulk_done", &[("count", done)])) }
                }
                (filters(l, &params, &q, &tiers, &channels))
                form #bulk method="post" action="/inbox/bulk" {
                    (page::csrf(&ctx))
                    input type="hidden" name="back" value={ "/inbox?" (params.encode(None)) };
                    div.bulk-bar {
                        label for="bulk-action" { (l.t("bulk_label")) }
                        select #bulk-action name="action" {
                            option value="assign_me" { (l.t("bulk_assign_me")) }
                            option value="status" { (l.t("bulk_status")) }
                            option value="tag" { (l.t("bulk_tag")) }
                        }
                        label.visually-hidden for="bulk-value" { (l.t("bulk_value")) }
                        input #bulk-value name="value" placeholder=(l.t("bulk_value_hint"));
                        button #bulk-apply type="submit" { (l.t("bulk_apply")) }
                    }
                    table #tickets {
                        caption.visually-hidden { (title) }
                        thead {
                            tr {
                                th scope="col" {
                                    input #select-all type="checkbox" aria-label=(l.t("select_all"));
                                }
                                th scope="col" { (l.t("col_channel")) }
                                th scope="col" { (l.t("col_customer")) }
                                th scope="col" { (l.t("col_subject")) }
                                th scope="col" { (l.t("col_status")) }
                                th scope="col" { (l.t("col_priority")) }
                                th scope="col" { (l.t("col_assignee")) }
                                th scope="col" { (l.t("col_sla")) }
                            }
                        }
                        tbody data-rows-url=(rows_url) {
                            (row_list(l, &rows, q.view))
                        }
                    }
                }
            }
        }
    };
    Ok(page::page(&ctx, &title, Section::Inbox, MainAttrs::default(), body).into_response())
}

fn filters(
    l: Lang,
    params: &Params,
    q: &inbox::Query,
    tiers: &[plugdesk_core::entity::tier::Model],
    channels: &[String],
) -> Markup {
    html! {
        form #filters method="get" action="/inbox" {
            input type="hidden" name="view" value=(q.view.as_str());
            @if let Some(text) = params.q.as_deref() { input type="hidden" name="q" value=(text); }
            label for="f-channel" { (l.t("filter_channel")) }
            select #f-channel name="channel" {
                option value="" { (l.t("filter_any")) }
                @for c in channels { option value=(c) selected[q.channel.as_deref() == Some(c.as_str())] { (c) } }
            }
            label for="f-tier" { (l.t("filter_tier")) }
            select #f-tier name="tier" {
                option value="" { (l.t("filter_any")) }
                @for t in tiers { option value=(t.key) selected[q.tier.as_deref() == Some(t.key.as_str())] { (t.name) } }
            }
            label for="f-level" { (l.t("filter_level")) }
            select #f-level name="level" {
                option value="" { (l.t("filter_any")) }
                option value="1" selected[q.level == Some(1)] { (l.t("level_1")) }
                option value="2" selected[q.level == Some(2)] { (l.t("level_2")) }
            }
            label for="f-tag" { (l.t("filter_tag")) }
            input #f-tag name="tag" value=[q.tag.as_deref()] size="10";
            label for="f-category" { (l.t("filter_category")) }
            input #f-category name="category" value=[q.category.as_deref()] size="10";
            label for="f-sort" { (l.t("sort")) }
            select #f-sort name="sort" {
                @for s in [Sort::SlaDue, Sort::Newest, Sort::LastCustomerMessage] {
                    option value=(s.as_str()) selected[q.sort == s] { (l.t(&format!("sort_{}", s.as_str()))) }
                }
            }
            button type="submit" { (l.t("filter_apply")) }
        }
    }
}

/// The rows of the table (also what `/inbox/rows` answers).
fn row_list(l: Lang, rows: &[Row], view: View) -> Markup {
    let now = plugdesk_core::now_ms();
    html! {
        @if rows.is_empty() {
            tr.empty { td colspan="8" { (l.t(&format!("view_empty_{}", view.as_str()))) } }
        }
        @for r in rows {
            tr.ticket.unread[r.unread] data-ticket-id=(r.id) {
                td { input type="checkbox" name="ticket" value=(r.id) aria-label=(l.f("select_ticket", &[("number", &r.number.to_string())])); }
                td { span.channel { (r.channel) } }
                td {
                    span.customer { (r.customer) }
                    " "
                    span.tier data-tier=(r.tier_key) { (r.tier) }
                }
                td.subject-cell {
                    @if r.unread { span.visually-hidden { (l.t("unread")) " " } }
                    a.subject href={ "/tickets/" (r.id) } { "#" (r.number) " " (r.subject) }
                    span.preview { (r.preview) }
                }
                td { span.status.(r.status) { (l.t(&format!("status_{}", r.status))) } }
                td { span.priority.(r.priority) { (l.t(&format!("priority_{}", r.priority))) } }
                td { span.assignee { (r.assignee.as_deref().unwrap_or("–")) } }
                td { (sla_badge(l, r.due_at, r.breached, now)) }
            }
        }
    }
}

/// The SLA countdown: the next due time, amber within the hour, red when breached.
pub(crate) fn sla_badge(l: Lang, due_at: Option<i64>, breached: bool, now: i64) -> Markup {
    let class = if breached || due_at.is_some_and(|d| d <= now) {
        "sla breached"
    } else if due_at.is_some_and(|d| d - now <= inbox::DUE_SOON_MS) {
        "sla warning"
    } else {
        "sla"
    };
    html! {
        @match due_at {
            Some(d) => span class=(class) data-due=(d) { (relative(l, d - now)) },
            None if breached => span class=(class) { (l.t("sla_breached")) },
            None => span.sla { "–" },
        }
    }
}

/// "in 42 min" / "12 min overdue".
fn relative(l: Lang, ms: i64) -> String {
    let minutes = (ms.abs() / 60_000).to_string();
    if ms >= 0 { l.f("sla_in", &[("minutes", &minutes)]) } else { l.f("sla_overdue", &[("minutes", &minutes)]) }
}

/// `GET /inbox/rows`: the rows only, for the live refresh.
pub(crate) async fn rows(State(web): WebState, ctx: Ctx, Query(params): Query<Params>) -> WebResult<Html<String>> {
    let s = ctx.agent()?;
    let q = params.query()?;
    let rows = inbox::rows(web.core.db(), s.workspace_id, s.agent_id, &q).await?;
    Ok(Html(row_list(ctx.lang, &rows, q.view).into_string()))
}

/// `GET /inbox/counts`.
pub(crate) async fn counts(State(web): WebState, ctx: Ctx) -> WebResult<Json<serde_json::Value>> {
    let s = ctx.agent()?;
    let counts = inbox::counts(web.core.db(), s.workspace_id, s.agent_id).await?;
    Ok(Json(counts_json(counts)))
}

/// The counts as the page shows them (`"99+"` at the cap), by view name.
pub(crate) fn counts_json(counts: Vec<(View, i64)>) -> serde_json::Value {
    serde_json::Value::Object(
        counts.into_iter().map(|(v, n)| (v.as_str().to_owned(), inbox::count_text(n).into())).collect(),
    )
}

/// `POST /inbox/bulk`: one change to the checked tickets, all or none.
pub(crate) async fn bulk(State(web): WebState, ctx: Ctx, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let ids: Vec<i64> = fields
        .all("ticket")
        .iter()
        .map(|v| v.parse().map_err(|_| WebError::Invalid(format!("ticket {v:?} is no ticket id"))))
        .collect::<WebResult<_>>()?;
    if ids.is_empty() {
        return Err(WebError::Invalid(ctx.lang.t("bulk_none").to_owned()));
    }
    let value = fields.get("value");
    let patch = match fields.get("action") {
        Some("assign_me") => TicketPatch { assignee_id: Some(Some(s.agent_id)), ..Default::default() },
        Some("status") => {
            let status = Status::parse(value.unwrap_or(""))?;
            TicketPatch { status: Some(status), ..Default::default() }
        }
        Some("tag") => {
            let tag = value.ok_or_else(|| WebError::Invalid(ctx.lang.t("bulk_tag_missing").to_owned()))?;
            TicketPatch { add_tags: Some(vec![tag.to_owned()]), ..Default::default() }
        }
        other => return Err(WebError::Invalid(format!("unknown bulk action {other:?}"))),
    };
    let changed =
        plugdesk_core::ticket::update_many(&web.core, s.workspace_id, &ids, &format!("agent:{}", s.agent_id), &patch)
            .await?;
    let back = fields.get("back").filter(|b| b.starts_with("/inbox") && !b.starts_with("//")).unwrap_or("/inbox");
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}done={changed}")).into_response())
}

/// `POST /inbox/views`: saves the current filters and sort under a name of the agent's.
pub(crate) async fn save_view(State(web): WebState, ctx: Ctx, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let raw = fields.raw("query").unwrap_or("");
    let uri: axum::http::Uri =
        format!("/inbox?{raw}").parse().map_err(|_| WebError::Invalid(format!("{raw:?} is no inbox query")))?;
    let Query(params) = Query::<Params>::try_from_uri(&uri).map_err(|e| WebError::Invalid(e.body_text()))?;
    // Only what the inbox understands is kept, written the way the inbox writes it.
    params.query()?;
    let query = params.encode(None);
    let name = fields.get("name").unwrap_or("");
    plugdesk_core::account::save_view(web.core.db(), s.workspace_id, s.agent_id, name, &query).await?;
    Ok(Redirect::to(&format!("/inbox?{query}")).into_response())
}

/// `POST /inbox/views/{id}/delete`.
pub(crate) async fn delete_view(
    State(web): WebState,
    ctx: Ctx,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    plugdesk_core::account::delete_view(web.core.db(), s.agent_id, id).await?;
    Ok(Redirect::to("/inbox").into_response())
}
