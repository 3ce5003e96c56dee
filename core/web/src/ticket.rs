//! The ticket page: the conversation across channels, the customer at a glance, the ticket's
//! fields and history, SLA clocks, and the composer (reply or note, text modules, drafts kept
//! on the server, a send that never goes out twice and never over a message the agent has
//! not seen).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::{Markup, html};
use plugdesk_core::account;
use plugdesk_core::ticket::{self, MessageInput, MessageKind, MessageView, Status, TicketPatch};
use serde::Deserialize;
use serde_json::json;

use crate::error::{WebError, WebResult};
use crate::form::Fields;
use crate::i18n::Lang;
use crate::page::{self, MainAttrs, Section};
use crate::session::Ctx;
use crate::{Web, WebState};

/// Seconds a reply waits, with an undo, before it is sent: long enough to catch a slip, short
/// enough not to hold an agent up. Chat channels send at once (the customer is waiting live).
const UNDO_SECONDS: u32 = 5;

/// What the page keeps of the agent's unsent work when it is shown again after a refusal.
#[derive(Default)]
struct Kept {
    body: Option<String>,
    kind: Option<String>,
    /// Messages the agent had not seen when they sent.
    conflict: Vec<i64>,
    error: Option<String>,
    /// The fields form as the agent submitted it, shown again when it was refused.
    fields: Option<Fields>,
    /// What others changed on the ticket since the agent loaded the fields form.
    changed: Vec<plugdesk_core::event::Event>,
}

fn actor(s: &account::Session) -> String {
    format!("agent:{}", s.agent_id)
}

fn is_chat(channel: &str) -> bool {
    !matches!(channel, "email" | "webform" | "sms" | "api")
}

/// `GET /tickets/{id}`.
pub(crate) async fn page(State(web): WebState, ctx: Ctx, Path(id): Path<i64>) -> WebResult<Response> {
    render(&web, &ctx, id, Kept::default()).await
}

async fn render(web: &Web, ctx: &Ctx, id: i64, kept: Kept) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let db = web.core.db();
    let t = ticket::get(db, s.workspace_id, id).await?;
    let messages = ticket::messages(db, s.workspace_id, id, None).await?;
    let customer = plugdesk_core::customer::get(db, s.workspace_id, t.customer_id).await?;
    let agents = plugdesk_core::agent::list(db, s.workspace_id).await?;
    let teams = plugdesk_core::agent::list_teams(db, s.workspace_id).await?;
    let others = ticket::list(
        db,
        s.workspace_id,
        &ticket::ListQuery { customer_id: Some(t.customer_id), limit: Some(10), ..Default::default() },
    )
    .await?;
    let history = plugdesk_core::event::feed(db, s.workspace_id, 0, Some(id), 200).await?;
    let version = plugdesk_core::event::latest_for_ticket(db, s.workspace_id, id).await?;
    let draft = account::draft(db, s.agent_id, id).await?;
    let answers = plugdesk_core::survey::for_customer(db, s.workspace_id, t.customer_id, 5).await?;
    let merged = ticket::merge::merged_into(db, s.workspace_id, id).await?;
    let model = ticket::find(db, s.workspace_id, id).await?;
    let routes = ticket::outbox::routes(db, &web.core, &model).await?;
    let route = match routes.first() {
        None => Route::Nowhere,
        Some(r) if Some(r.channel_id) == model.channel_id => Route::Own,
        Some(_) => Route::Email,
    };
    let last = messages.last().map_or(0, |m| m.id);
    if let Some(m) = messages.iter().rev().find(|m| m.direction == "inbound") {
        account::mark_read(db, s.agent_id, id, m.id).await?;
    }
    let names: HashMap<i64, &str> = agents.iter().map(|a| (a.id, a.name.as_str())).collect();
    let status = Status::parse(&t.status)?;
    // The signature of the channel the reply leaves through (mail for a form's answer).
    let kind = if route == Route::Email { "email" } else { plugdesk_core::template::channel_kind(&t.channel) };
    let signature = account::signature(db, s.agent_id, kind).await?;
    // A reply that is not begun yet starts with the agent's signature below an empty line.
    let body_text = kept
        .body
        .clone()
        .or(draft)
        .unwrap_or_else(|| signature.map(|sig| format!("\n\n-- \n{sig}")).unwrap_or_default());
    let note_first = kept.kind.as_deref() == Some("note");
    let undo = if is_chat(&t.channel) { 0 } else { UNDO_SECONDS };
    let request_id = crate::session::random_token();
    let markup = html! {
        div.ticket {
            section.conversation aria-labelledby="subject" {
                div.ticket-head {
                    h1 #subject { (t.subject) }
                    p.meta {
                        "#" (t.number) " · " span.channel { (t.channel) } " · "
                        span.status.(t.status) { (l.t(&format!("status_{}", t.status))) } " · "
                        span.priority.(t.priority) { (l.t(&format!("priority_{}", t.priority))) } " · "
                        (l.t(&format!("level_{}", t.level)))
                    }
                    @if let Some((into, number)) = merged {
                        p #merged .warning role="note" {
                            (l.t("merged_into")) " " a href={ "/tickets/" (into) } { "#" (number) }
                        }
                    }
                    p #presence aria-live="polite" {}
                    div.quick {
                        form #assign-me method="post" action={ "/tickets/" (id) "/assign-me" } {
                            (page::csrf(ctx))
                            button type="submit" disabled[t.assignee_id == Some(s.agent_id)] { (l.t("assign_me")) }
                        }
                        @if merged.is_none() {
                            form #merge-ticket method="post" action={ "/tickets/" (id) "/merge" } {
                                (page::csrf(ctx))
                                label for="merge-into" { (l.t("merge_ticket_into")) }
                                input #merge-into name="into" inputmode="numeric" required size="6";
                                button type="submit" { (l.t("merge_ticket")) }
                            }
                        }
                        form #escalate method="post" action={ "/tickets/" (id) "/escalate" } {
                            (page::csrf(ctx))
                            label.visually-hidden for="handover" { (l.t("handover_note")) }
                            input #handover name="note" placeholder=(l.t("handover_note"));
                            button type="submit" disabled[t.level == 2] { (l.t("escalate")) }
                        }
                    }
                }
                @if !kept.conflict.is_empty() {
                    div #conflict role="alert" {
                        p { (l.t("conflict_intro")) }
                        ul {
                            @for m in messages.iter().filter(|m| kept.conflict.contains(&m.id)) {
                                li { (author(l, m, &customer.name, &names)) ": " (m.body.chars().take(200).collect::<String>()) }
                            }
                        }
                    }
                }
                @if let Some(e) = &kept.error { p.error role="alert" { (e) } }
                @if !kept.changed.is_empty() {
                    div #stale role="alert" {
                        p { (l.t("stale_intro")) }
                        ul {
                            @for e in &kept.changed {
                                li { span.actor { (actor_name(l, &e.actor, &names)) } ": " (changes_text(e)) }
                            }
                        }
                    }
                }
                ol #conversation aria-label=(l.t("conversation")) {
                    @for m in &messages { (message(l, &ctx.csrf, m, &customer.name, &names)) }
                }
                (composer(ctx, &t, Form { id, last, body: &body_text, note_first, undo, request_id: &request_id, route, routes: &routes, max_attachment: web.core.limits().max_attachment_bytes }))
            }
            aside #customer aria-labelledby="customer-title" {
                h2 #customer-title { (customer.name) }
                p { a #timeline-link href={ "/customers/" (customer.id) } { (l.t("timeline_link")) } }
                dl {
                    dt { (l.t("customer_number")) } dd #customer-number { (customer.id) }
                    dt { (l.t("customer_tier")) } dd { span.tier { (customer.tier) } }
                    dt { (l.t("customer_language")) } dd { (customer.language) }
                    @for i in &customer.identities {
                        dt { (i.kind) } dd { (i.address) }
                    }
                }
                details.customer-edit {
                    summary { (l.t("customer_edit")) }
                    form #customer-edit method="post" action={ "/customers/" (customer.id) } {
                        (page::csrf(ctx))
                        input type="hidden" name="back" value={ "/tickets/" (id) };
                        label for="c-name" { (l.t("agent_name")) }
                        input #c-name name="name" value=(customer.name) required;
                        label for="c-language" { (l.t("customer_language")) }
                        input #c-language name="language" value=(customer.language) size="5";
                        button type="submit" { (l.t("save")) }
                    }
                    form #customer-merge method="get" action={ "/customers/" (customer.id) "/merge" } {
                        input type="hidden" name="back" value={ "/tickets/" (id) };
                        label for="c-into" { (l.t("merge_into")) }
                        input #c-into name="into" inputmode="numeric" required size="6";
                        button type="submit" { (l.t("merge_check")) }
                    }
                }
                h3 { (l.t("customer_tickets")) }
                ul.other-tickets {
                    @for o in &others.items {
                        li {
                            a href={ "/tickets/" (o.id) } aria-current=[(o.id == id).then_some("page")] { "#" (o.number) " " (o.subject) }
                            " " span.status.(o.status) { (l.t(&format!("status_{}", o.status))) }
                        }
                    }
                }
                @if !answers.is_empty() {
                    h3 { (l.t("csat_answers")) }
                    ul #csat .csat {
                        @for a in &answers {
                            li.unhappy[a.rating <= 2] {
                                span.rating aria-label=(l.f("csat_rating", &[("rating", &a.rating.to_string())])) {
                                    (a.rating) "/5"
                                }
                                " " a href={ "/tickets/" (a.ticket_id) } { "#" (a.number) } " " (page::time(a.answered_at))
                                @if let Some(c) = &a.comment { blockquote { (c) } }
                            }
                        }
                    }
                }
                h2 { (l.t("fields")) }
                (fields_form(ctx, &t, status, FieldsForm { agents: &agents, teams: &teams, version, kept: kept.fields.as_ref() }))
                h2 { (l.t("sla")) }
                ul.clocks {
                    @for c in t.sla.iter().flatten() {
                        li.breached[c.breached] {
                            (l.t(&format!("clock_{}", c.kind))) ": " (page::time_text(&c.due_at))
                            @if c.paused { " (" (l.t("clock_paused")) ")" }
                            @if c.breached { " – " strong { (l.t("sla_breached")) } }
                        }
                    }
                    @if t.sla.as_ref().is_none_or(Vec::is_empty) { li { (l.t("clock_none")) } }
                }
                details.history {
                    summary { (l.t("history")) }
                    ol {
                        @for e in history.iter().rev() {
                            li {
                                (page::time(e.created_at)) " " strong { (e.kind) } " " span.actor { (actor_name(l, &e.actor, &names)) }
                                @if let Some((other, number)) = linked_ticket(e) {
                                    " " a href={ "/tickets/" (other) } { "#" (number) }
                                }
                                @if e.kind == "ticket.updated" && e.changes.as_object().is_some_and(|o| !o.is_empty()) {
                                    " " span.changes { (changes_text(e)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let title = format!("#{} {}", t.number, t.subject);
    let mut res = page::page(ctx, &title, Section::Ticket, MainAttrs { ticket_id: Some(id) }, markup).into_response();
    if !kept.conflict.is_empty() || !kept.changed.is_empty() {
        *res.status_mut() = StatusCode::CONFLICT;
    } else if kept.error.is_some() {
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

fn short_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "–".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The other ticket a merge or split event names, with its number.
fn linked_ticket(e: &plugdesk_core::event::Event) -> Option<(i64, i64)> {
    let (id, number) = match e.kind.as_str() {
        "ticket.merged" | "ticket.split" => ("into_id", "into_number"),
        "ticket.merged_in" | "ticket.split_from" => ("from_id", "from_number"),
        _ => return None,
    };
    Some((e.changes[id].as_i64()?, e.changes[number].as_i64()?))
}

/// Whether an event changed what the fields form shows (a message or a delivery did not).
fn changes_fields(e: &plugdesk_core::event::Event) -> bool {
    match e.kind.as_str() {
        "ticket.updated" => e.changes.as_object().is_some_and(|o| !o.is_empty()),
        "ticket.merged" | "ticket.merged_in" => true,
        _ => false,
    }
}

/// A `ticket.updated` event's changes as `field: before → after` pairs; other events by kind.
fn changes_text(e: &plugdesk_core::event::Event) -> String {
    match e.changes.as_object().filter(|_| e.kind == "ticket.updated") {
        Some(obj) => obj
            .iter()
            .map(|(field, c)| format!("{field}: {} → {}", short_json(&c["before"]), short_json(&c["after"])))
            .collect::<Vec<_>>()
            .join("; "),
        None => e.kind.clone(),
    }
}

fn actor_name(l: Lang, actor: &str, names: &HashMap<i64, &str>) -> String {
    if let Some(id) = actor.strip_prefix("agent:").and_then(|i| i.parse::<i64>().ok()) {
        return names.get(&id).map_or_else(|| actor.to_owned(), |n| (*n).to_owned());
    }
    if let Some(w) = actor.strip_prefix("workflow:") {
        return l.f("by_workflow", &[("name", w)]);
    }
    actor.to_owned()
}

fn author(l: Lang, m: &MessageView, customer: &str, names: &HashMap<i64, &str>) -> String {
    match m.author_kind.as_str() {
        "customer" => customer.to_owned(),
        "agent" => {
            m.author_id.and_then(|a| names.get(&a)).map_or_else(|| l.t("author_agent").to_owned(), |n| (*n).to_owned())
        }
        _ => l.t("author_system").to_owned(),
    }
}

fn message(l: Lang, csrf: &str, m: &MessageView, customer: &str, names: &HashMap<i64, &str>) -> Markup {
    html! {
        li.message.(m.direction) #{ "message-" (m.id) } data-message-id=(m.id) {
            div.message-head {
                span.author { (author(l, m, customer, names)) }
                @if m.direction == "internal" { " " span.badge.note { (l.t("internal_note")) } }
                @if m.automatic { " " span.badge { (l.t("automatic")) } }
                " · " span.channel { (m.channel) } " · " (page::time_text(&m.created_at))
                @if let Some(d) = &m.delivery_status {
                    " · " span.delivery.(d) { (l.t(&format!("delivery_{d}"))) }
                    @if let Some(e) = &m.delivery_error { " " span.delivery-error { (e) } }
                }
                @if m.delivery_status.as_deref() == Some("failed") {
                    form.inline.retry method="post" action={ "/tickets/" (m.ticket_id) "/messages/" (m.id) "/retry" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { (l.t("delivery_retry")) }
                    }
                }
            }
            @if let Some(subj) = &m.subject { p.message-subject { (subj) } }
            // Plain text only, escaped: a customer's HTML never reaches the page as markup.
            div.body { (m.body) }
            @if let Some(q) = &m.body_quoted {
                details.quoted { summary { (l.t("quoted")) } div.body { (q) } }
            }
            @if !m.attachments.is_empty() {
                ul.attachments {
                    @for a in &m.attachments {
                        li {
                            @if inline_image(&a.content_type) {
                                img src={ "/attachments/" (a.id) } alt=(a.filename) loading="lazy";
                            }
                            a href={ "/attachments/" (a.id) } download=(a.filename) { (a.filename) } " (" (a.size / 1024) " KB)"
                        }
                    }
                }
            }
            div.message-actions {
                @if m.has_source {
                    a.source href={ "/tickets/" (m.ticket_id) "/messages/" (m.id) "/source" } { (l.t("source")) }
                }
                @if m.direction == "inbound" {
                    form.inline.split method="post" action={ "/tickets/" (m.ticket_id) "/messages/" (m.id) "/split" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" title=(l.t("split_hint")) { (l.t("split")) }
                    }
                }
            }
        }
    }
}

/// Images shown in the page; SVG is not among them (it can carry script).
fn inline_image(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// Which way a reply leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through the ticket's own channel.
    Own,
    /// Through the workspace's e-mail channel (the ticket's channel cannot answer).
    Email,
    /// No channel can reach the customer.
    Nowhere,
}

/// What the composer shows.
struct Form<'a> {
    id: i64,
    /// The last message the page shows.
    last: i64,
    body: &'a str,
    note_first: bool,
    undo: u32,
    request_id: &'a str,
    route: Route,
    /// Every channel the reply may leave through, the default first.
    routes: &'a [ticket::outbox::ReplyRoute],
    /// Largest file the composer takes, in bytes.
    max_attachment: usize,
}

fn composer(ctx: &Ctx, t: &ticket::Ticket, f: Form<'_>) -> Markup {
    let l = ctx.lang;
    let Form { id, last, body, note_first, undo, request_id, route, routes, max_attachment } = f;
    html! {
        form #composer method="post" action={ "/tickets/" (id) "/messages" } enctype="multipart/form-data" data-undo-seconds=(undo) data-max-attachment-bytes=(max_attachment) {
            h2.visually-hidden { (l.t("composer")) }
            (page::csrf(ctx))
            input type="hidden" name="seen" value=(last);
            input type="hidden" name="request_id" value=(request_id);
            div.composer-bar {
                label for="kind" { (l.t("composer_kind")) }
                select #kind name="kind" {
                    option value="reply" selected[!note_first] { (l.f("composer_reply", &[("channel", &t.channel)])) }
                    option value="note" selected[note_first] { (l.t("composer_note")) }
                }
                label for="module-search" { (l.t("modules")) }
                input #module-search type="search" autocomplete="off" placeholder=(l.t("modules_hint")) aria-controls="module-results";
            }
            @match route {
                Route::Nowhere => p #route .warning role="note" { (l.t("route_nowhere")) },
                Route::Email => p #route .hint { (l.t("route_email")) },
                Route::Own => {},
            }
            @if routes.len() > 1 {
                div.composer-bar {
                    label for="via" { (l.t("reply_via")) }
                    select #via name="via" {
                        @for r in routes { option value=(r.channel_id) { (r.name) " (" (r.plugin_key) ")" } }
                    }
                }
            }
            ul #module-results aria-label=(l.t("modules")) {}
            label.visually-hidden for="body" { (l.t("composer_body")) }
            // A leading newline, because HTML drops the first one after <textarea>: a reply that
            // begins with an empty line (above the signature) keeps it.
            textarea #body name="body" rows="8" required { "\n" (body) }
            div.composer-files {
                label for="attachments" { (l.t("attachments")) }
                input #attachments type="file" name="attachment" multiple aria-describedby="attachments-hint";
                span #attachments-hint .hint { (l.f("attachments_hint", &[("mb", &(max_attachment / (1024 * 1024)).to_string())])) }
            }
            div.composer-foot {
                @if t.channel == "sms" { span #sms-count {} }
                span #draft-status role="status" {}
                label for="then" { (l.t("then")) }
                select #then name="then" {
                    option value="keep" { (l.t("then_keep")) }
                    option value="pending" { (l.t("then_pending")) }
                    option value="resolved" { (l.t("then_resolved")) }
                }
                button #send type="submit" { (l.t("send")) }
                span #send-status role="status" {}
            }
        }
    }
}

/// What the fields form shows besides the ticket.
struct FieldsForm<'a> {
    agents: &'a [plugdesk_core::agent::Agent],
    teams: &'a [plugdesk_core::agent::Team],
    /// The ticket's newest event when the page was made; a save against an older one is stale.
    version: i64,
    /// The agent's own choices from a refused save, shown instead of the stored values.
    kept: Option<&'a Fields>,
}

fn fields_form(ctx: &Ctx, t: &ticket::Ticket, status: Status, f: FieldsForm<'_>) -> Markup {
    let l = ctx.lang;
    let mut allowed = vec![status];
    allowed.extend_from_slice(status.next());
    // The agent's choice where a refused save brought one back, otherwise the stored value.
    let pick = |name: &str, stored: String| -> String {
        f.kept.and_then(|k| k.raw(name)).map_or(stored, |v| v.trim().to_owned())
    };
    let (st, prio, level) = (
        pick("status", status.as_str().into()),
        pick("priority", t.priority.clone()),
        pick("level", t.level.to_string()),
    );
    let assignee = pick("assignee", t.assignee_id.map(|a| a.to_string()).unwrap_or_default());
    let team = pick("team", t.team_id.map(|a| a.to_string()).unwrap_or_default());
    let category = pick("category", t.category.clone().unwrap_or_default());
    let tags = pick("tags", t.tags.join(", "));
    let attributes = pick("attributes", attributes_text(&t.attributes));
    html! {
        form #fields method="post" action={ "/tickets/" (t.id) "/fields" } {
            (page::csrf(ctx))
            input type="hidden" name="version" value=(f.version);
            label for="f-status" { (l.t("col_status")) }
            select #f-status name="status" {
                @for s in &allowed { option value=(s.as_str()) selected[s.as_str() == st] { (l.t(&format!("status_{}", s.as_str()))) } }
            }
            label for="f-priority" { (l.t("col_priority")) }
            select #f-priority name="priority" {
                @for p in ["low", "normal", "high", "urgent"] { option value=(p) selected[prio == p] { (l.t(&format!("priority_{p}"))) } }
            }
            label for="f-level" { (l.t("filter_level")) }
            select #f-level name="level" {
                option value="1" selected[level == "1"] { (l.t("level_1")) }
                option value="2" selected[level == "2"] { (l.t("level_2")) }
            }
            label for="f-assignee" { (l.t("col_assignee")) }
            select #f-assignee name="assignee" {
                option value="" { "–" }
                @for a in f.agents.iter().filter(|a| a.active) { option value=(a.id) selected[assignee == a.id.to_string()] { (a.name) } }
            }
            label for="f-team" { (l.t("team")) }
            select #f-team name="team" {
                option value="" { "–" }
                @for tm in f.teams { option value=(tm.id) selected[team == tm.id.to_string()] { (tm.name) } }
            }
            label for="f-category" { (l.t("filter_category")) }
            input #f-category name="category" value=(category);
            label for="f-tags" { (l.t("tags")) }
            input #f-tags name="tags" value=(tags) aria-describedby="tags-hint";
            p #tags-hint .hint { (l.t("tags_hint")) }
            label for="f-attributes" { (l.t("attributes")) }
            textarea #f-attributes name="attributes" rows="3" aria-describedby="attributes-hint" { (attributes) }
            p #attributes-hint .hint { (l.t("attributes_hint")) }
            button type="submit" { (l.t("save")) }
        }
    }
}

/// Custom attributes as `key: value` lines (strings bare, other values as JSON).
fn attributes_text(attributes: &serde_json::Value) -> String {
    attributes
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}: {}", short_json(v))).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// `key: value` lines back into an attributes object: a value that reads as JSON (a number,
/// `true`, a list) keeps its type, anything else is a string; an empty value drops the key.
fn parse_attributes(text: &str) -> Result<serde_json::Value, String> {
    let mut out = serde_json::Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: {line:?} is not `name: value`", n + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("line {}: the name before `:` is empty", n + 1));
        }
        if value.is_empty() || value == "–" {
            continue;
        }
        let parsed = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) if !v.is_string() => v,
            _ => serde_json::Value::String(value.to_owned()),
        };
        out.insert(key.to_owned(), parsed);
    }
    Ok(serde_json::Value::Object(out))
}

/// `POST /tickets/{id}/messages`: a reply or a note, sent once per `request_id`, refused (with
/// the agent's text kept) when someone else wrote since the page was loaded.
pub(crate) async fn send(State(web): WebState, ctx: Ctx, Path(id): Path<i64>, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?.clone();
    let l = ctx.lang;
    let body = fields.raw("body").unwrap_or("").replace("\r\n", "\n");
    let kind = match fields.get("kind") {
        Some("note") => MessageKind::Note,
        _ => MessageKind::Reply,
    };
    let keep = |error: Option<String>, conflict: Vec<i64>| Kept {
        body: Some(body.clone()),
        kind: fields.get("kind").map(str::to_owned),
        conflict,
        error,
        ..Kept::default()
    };
    let request_id =
        fields.get("request_id").filter(|r| r.len() <= 128 && r.chars().all(|c| c.is_ascii_alphanumeric()));
    let Some(request_id) = request_id else {
        return render(&web, &ctx, id, keep(Some(l.t("error_stale_form").into()), vec![])).await;
    };
    let external_id = format!("web-{request_id}");
    let db = web.core.db();
    let messages = ticket::messages(db, s.workspace_id, id, None).await?;
    // Sent already (a double click, a retried request): show the ticket, send nothing.
    if messages.iter().any(|m| m.external_id.as_deref() == Some(external_id.as_str())) {
        return Ok(Redirect::to(&format!("/tickets/{id}")).into_response());
    }
    let seen: i64 = fields.get("seen").and_then(|v| v.parse().ok()).unwrap_or(0);
    let unseen: Vec<i64> = messages
        .iter()
        // What the customer or another agent wrote; automatic answers and the agent's own
        // messages are no reason to stop.
        .filter(|m| m.id > seen && !m.automatic && m.author_kind != "system")
        .filter(|m| !(m.author_kind == "agent" && m.author_id == Some(s.agent_id)))
        .map(|m| m.id)
        .collect();
    if !unseen.is_empty() && kind == MessageKind::Reply {
        return render(&web, &ctx, id, keep(None, unseen)).await;
    }
    if body.trim().is_empty() {
        return render(&web, &ctx, id, keep(Some(l.t("error_empty_body").into()), vec![])).await;
    }
    let via = match fields.get("via") {
        Some(v) => Some(v.parse::<i64>().map_err(|_| WebError::Invalid(format!("via {v:?} is no channel id")))?),
        None => None,
    };
    let attachments = fields
        .1
        .iter()
        .map(|u| ticket::AttachmentInput {
            filename: u.filename.clone(),
            content_type: u.content_type.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&u.bytes),
        })
        .collect();
    let input = MessageInput {
        body: body.clone(),
        external_id: Some(external_id),
        reply_channel_id: via.filter(|_| kind == MessageKind::Reply),
        attachments,
        ..Default::default()
    };
    let (msg, _) =
        match ticket::add_message(&web.core, s.workspace_id, id, kind, Some(s.agent_id), &actor(&s), &input).await {
            Ok(r) => r,
            Err(plugdesk_core::Error::Invalid { message, .. }) => {
                return render(&web, &ctx, id, keep(Some(message), vec![])).await;
            }
            Err(e) => return Err(e.into()),
        };
    account::clear_draft(db, s.agent_id, id).await?;
    let then = match fields.get("then") {
        Some("pending") => Some(Status::Pending),
        Some("resolved") => Some(Status::Resolved),
        _ => None,
    };
    if let Some(status) = then {
        let patch = TicketPatch { status: Some(status), ..Default::default() };
        if let Err(e) = ticket::update(&web.core, s.workspace_id, id, &actor(&s), &patch).await {
            // The message went out; say why the status did not change.
            let kept = Kept { error: Some(e.to_string()), ..Kept::default() };
            return render(&web, &ctx, id, kept).await;
        }
    }
    Ok(Redirect::to(&format!("/tickets/{id}#message-{}", msg.id)).into_response())
}

/// `POST /tickets/{id}/fields`.
pub(crate) async fn fields(State(web): WebState, ctx: Ctx, Path(id): Path<i64>, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?.clone();
    let parse_id = |name: &str| -> WebResult<Option<i64>> {
        match fields.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| WebError::Invalid(format!("{name} {v:?} is no id"))),
        }
    };
    let mut patch = TicketPatch {
        status: fields.get("status").map(Status::parse).transpose()?,
        priority: fields.get("priority").map(ticket::Priority::parse).transpose()?,
        level: match fields.get("level") {
            Some(v) => Some(v.parse().map_err(|_| WebError::Invalid(format!("level {v:?} must be 1 or 2")))?),
            None => None,
        },
        assignee_id: Some(parse_id("assignee")?),
        team_id: Some(parse_id("team")?),
        category: Some(fields.get("category").map(str::to_owned)),
        ..Default::default()
    };
    if let Some(tags) = fields.raw("tags") {
        patch.tags = Some(tags.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect());
    }
    if let Some(text) = fields.raw("attributes") {
        match parse_attributes(text) {
            Ok(a) => patch.attributes = Some(a),
            Err(e) => {
                let kept = Kept {
                    error: Some(format!("{}: {e}", ctx.lang.t("attributes"))),
                    fields: Some(fields),
                    ..Kept::default()
                };
                return render(&web, &ctx, id, kept).await;
            }
        }
    }
    // The ticket changed since this form was made (by anyone: a colleague, a workflow, the
    // agent in another tab): show what, keep the agent's choices, save nothing until they send
    // the form again.
    let version: i64 = fields.get("version").and_then(|v| v.parse().ok()).unwrap_or(0);
    let me = actor(&s);
    let changed: Vec<_> = plugdesk_core::event::feed(web.core.db(), s.workspace_id, version, Some(id), 50)
        .await?
        .into_iter()
        .filter(changes_fields)
        .collect();
    if !changed.is_empty() {
        let kept = Kept { fields: Some(fields), changed, ..Kept::default() };
        return render(&web, &ctx, id, kept).await;
    }
    match ticket::update(&web.core, s.workspace_id, id, &me, &patch).await {
        Ok(_) => Ok(Redirect::to(&format!("/tickets/{id}")).into_response()),
        Err(e @ (plugdesk_core::Error::Invalid { .. } | plugdesk_core::Error::Transition { .. })) => {
            render(&web, &ctx, id, Kept { error: Some(e.to_string()), fields: Some(fields), ..Kept::default() }).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /tickets/{id}/assign-me`.
pub(crate) async fn assign_me(State(web): WebState, ctx: Ctx, Path(id): Path<i64>) -> WebResult<Response> {
    let s = ctx.agent()?;
    let patch = TicketPatch { assignee_id: Some(Some(s.agent_id)), ..Default::default() };
    ticket::update(&web.core, s.workspace_id, id, &actor(s), &patch).await?;
    Ok(Redirect::to(&format!("/tickets/{id}")).into_response())
}

/// `POST /tickets/{id}/escalate`: to the back office, with the handover note as an internal
/// note, in that order.
pub(crate) async fn escalate(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    fields: Fields,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    let patch = TicketPatch { level: Some(2), ..Default::default() };
    ticket::update(&web.core, s.workspace_id, id, &actor(s), &patch).await?;
    if let Some(note) = fields.get("note") {
        let input = MessageInput { body: note.to_owned(), ..Default::default() };
        ticket::add_message(&web.core, s.workspace_id, id, MessageKind::Note, Some(s.agent_id), &actor(s), &input)
            .await?;
    }
    Ok(Redirect::to(&format!("/tickets/{id}")).into_response())
}

#[derive(Deserialize)]
pub(crate) struct DraftInput {
    body: String,
}

/// `PUT /tickets/{id}/draft`.
pub(crate) async fn draft(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    Json(input): Json<DraftInput>,
) -> WebResult<StatusCode> {
    let s = ctx.agent()?;
    let max = web.core.limits().max_message_bytes;
    account::save_draft(web.core.db(), s.workspace_id, s.agent_id, id, &input.body, max).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct ModuleQuery {
    #[serde(default)]
    q: String,
}

/// `GET /tickets/{id}/modules?q=`: the workspace's templates for this ticket's channel and
/// customer's language whose purpose or text contains the query.
pub(crate) async fn modules(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    axum::extract::Query(q): axum::extract::Query<ModuleQuery>,
) -> WebResult<Json<serde_json::Value>> {
    let s = ctx.agent()?;
    let t = ticket::get(web.core.db(), s.workspace_id, id).await?;
    let customer = plugdesk_core::customer::get(web.core.db(), s.workspace_id, t.customer_id).await?;
    let all = plugdesk_core::template::list(&web.core, s.workspace_id).await?;
    let kind = plugdesk_core::template::channel_kind(&t.channel);
    let needle = q.q.trim().to_lowercase();
    let mut items: Vec<serde_json::Value> = Vec::new();
    for tpl in all["templates"].as_array().into_iter().flatten() {
        let (purpose, channel, language) = (
            tpl["purpose"].as_str().unwrap_or(""),
            tpl["channel"].as_str().unwrap_or(""),
            tpl["language"].as_str().unwrap_or(""),
        );
        if channel != kind || language != customer.language {
            continue;
        }
        let text = tpl["text"].as_str().unwrap_or("");
        if !needle.is_empty()
            && !purpose.to_lowercase().contains(&needle)
            && !purpose.replace('_', " ").contains(&needle)
            && !text.to_lowercase().contains(&needle)
        {
            continue;
        }
        let preview: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(100).collect();
        items.push(json!({
            "key": format!("{purpose}/{channel}/{language}"),
            "name": purpose.replace('_', " "),
            "preview": preview,
        }));
        if items.len() >= 20 {
            break;
        }
    }
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
pub(crate) struct RenderInput {
    key: String,
}

/// `POST /tickets/{id}/modules/render`: a text module rendered for this ticket.
pub(crate) async fn render_module(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    Json(input): Json<RenderInput>,
) -> WebResult<Json<serde_json::Value>> {
    let s = ctx.agent()?;
    let mut parts = input.key.splitn(3, '/');
    let (Some(purpose), Some(channel), Some(language)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(WebError::Invalid(format!("text module {:?} is not purpose/channel/language", input.key)));
    };
    let preview = plugdesk_core::template::PreviewInput {
        ticket_id: id,
        purpose: purpose.to_owned(),
        channel: Some(channel.to_owned()),
        language: Some(language.to_owned()),
        draft: None,
    };
    let rendered = plugdesk_core::template::preview(&web.core, s.workspace_id, &preview).await?;
    Ok(Json(json!({ "text": rendered["text"] })))
}

/// `GET /attachments/{id}`: a file of the agent's workspace, as a download (never rendered as
/// a page of ours: its own strict CSP, and no sniffing).
pub(crate) async fn attachment(State(web): WebState, ctx: Ctx, Path(id): Path<i64>) -> WebResult<Response> {
    let s = ctx.agent()?;
    let (content_type, bytes) = ticket::attachment(web.core.db(), s.workspace_id, id).await?;
    let shown = if inline_image(&content_type) { content_type.as_str() } else { "application/octet-stream" };
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(shown).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    Ok(res)
}

/// `GET /tickets/{id}/messages/{message}/source`: the original as it arrived, as text.
pub(crate) async fn source(
    State(web): WebState,
    ctx: Ctx,
    Path((id, message)): Path<(i64, i64)>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    let bytes = ticket::source(web.core.db(), s.workspace_id, id, message).await?;
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    Ok(res)
}

/// `POST /tickets/{id}/messages/{message}/retry`: a reply whose delivery failed goes out again.
pub(crate) async fn retry(
    State(web): WebState,
    ctx: Ctx,
    Path((id, message)): Path<(i64, i64)>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    plugdesk_core::outbox::replay_message(&web.core, s.workspace_id, id, message).await?;
    Ok(Redirect::to(&format!("/tickets/{id}#message-{message}")).into_response())
}

/// `POST /tickets/{id}/merge`: this ticket into the ticket numbered `into` (same customer).
pub(crate) async fn merge(State(web): WebState, ctx: Ctx, Path(id): Path<i64>, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let number: i64 = fields
        .get("into")
        .map(|v| v.trim_start_matches('#'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| WebError::Invalid(ctx.lang.t("merge_ticket_number").to_owned()))?;
    let target = ticket::merge::id_by_number(web.core.db(), s.workspace_id, number).await?;
    ticket::merge::merge(&web.core, s.workspace_id, id, target, &actor(s)).await?;
    Ok(Redirect::to(&format!("/tickets/{target}")).into_response())
}

/// `POST /tickets/{id}/messages/{message}/split`: a customer's message starts a ticket of its
/// own; the agent lands on it.
pub(crate) async fn split(
    State(web): WebState,
    ctx: Ctx,
    Path((id, message)): Path<(i64, i64)>,
) -> WebResult<Response> {
    let s = ctx.agent()?;
    let created = ticket::merge::split(&web.core, s.workspace_id, id, message, &actor(s)).await?;
    Ok(Redirect::to(&format!("/tickets/{}", created.ticket.id)).into_response())
}
