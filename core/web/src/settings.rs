//! The agent's notifications (the bell), and the first admin page: agents and invitations
//! (the rest of the settings area grows here).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use plugdesk_core::account::{self, LinkPurpose};
use plugdesk_core::agent::{AgentSpec, Presence};
use plugdesk_core::auth::Role;
use plugdesk_core::outbox::{Notice, NoticeSent};

use crate::WebState;
use crate::error::{WebError, WebResult};
use crate::form::Fields;
use crate::page::{self, MainAttrs, Section};
use crate::session::Ctx;

/// `GET /notifications`: the bell's list, newest first.
pub(crate) async fn notifications(State(web): WebState, ctx: Ctx) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let all = plugdesk_core::survey::notifications(&web.core, s.workspace_id, s.agent_id, false).await?;
    let items = all["items"].as_array().cloned().unwrap_or_default();
    // Seen now: the bell goes quiet (the list still marks what was new on this visit).
    plugdesk_core::survey::mark_all_read(&web.core, s.workspace_id, s.agent_id).await?;
    let body = html! {
        h1 { (l.t("nav_notifications")) }
        @if items.is_empty() { p { (l.t("notifications_none")) } }
        ul.notifications {
            @for n in &items {
                li.unread[n["read_at"].is_null()] {
                    (page::time_text(n["created_at"].as_str().unwrap_or("")))
                    " "
                    @let text = notification_text(l, n);
                    @if let Some(t) = n["ticket_id"].as_i64() {
                        a href={ "/tickets/" (t) } { (text) }
                    } @else {
                        (text)
                    }
                }
            }
        }
    };
    Ok(page::page(&ctx, l.t("nav_notifications"), Section::Notifications, MainAttrs::default(), body).into_response())
}

/// A notification in the agent's language: workflows' own text as it is, the system's from
/// the catalogue.
fn notification_text(l: crate::i18n::Lang, n: &serde_json::Value) -> String {
    let body = n["body"].as_str().unwrap_or("");
    match n["kind"].as_str().unwrap_or("workflow") {
        "assigned" => l.f("notify_assigned", &[("subject", body)]),
        "sla_warning" => l.f("notify_sla_warning", &[("clock", l.t(&format!("clock_{body}")))]),
        "sla_breached" => l.f("notify_sla_breached", &[("clock", l.t(&format!("clock_{body}")))]),
        "unhappy" if body.is_empty() => l.t("notify_unhappy").to_owned(),
        "unhappy" => format!("{} “{body}”", l.t("notify_unhappy")),
        _ => body.to_owned(),
    }
}

/// The agents page, with the link of an invitation just made.
async fn agents_page(
    web: &crate::Web,
    ctx: &Ctx,
    invited: Option<Invited>,
    error: Option<String>,
) -> WebResult<Response> {
    let s = ctx.admin()?;
    let l = ctx.lang;
    let agents = plugdesk_core::agent::list(web.core.db(), s.workspace_id).await?;
    let body = html! {
        h1 { (l.t("agents_title")) }
        @if let Some(i) = &invited {
            div.flash role="status" {
                p { (l.f("invite_created", &[("name", &i.name)])) }
                code #invite-link { (i.link) }
                p.hint { (l.t("invite_once")) }
                @match &i.mailed {
                    NoticeSent::Sent => p #invite-mailed { (l.f("invite_mailed", &[("email", &i.email)])) },
                    NoticeSent::NoChannel => p #invite-mailed .hint { (l.t("invite_not_mailed_no_channel")) },
                    NoticeSent::Refused(why) => p #invite-mailed .warning { (l.f("invite_not_mailed", &[("email", &i.email), ("reason", why)])) },
                }
            }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        table.agents {
            caption.visually-hidden { (l.t("agents_title")) }
            thead { tr {
                th scope="col" { (l.t("agent_name")) }
                th scope="col" { (l.t("email")) }
                th scope="col" { (l.t("agent_role")) }
                th scope="col" { (l.t("filter_level")) }
                th scope="col" { (l.t("agent_open")) }
                th scope="col" { (l.t("agent_active")) }
            } }
            tbody {
                @for a in &agents {
                    tr {
                        td { (a.name) }
                        td { (a.email) }
                        td { (l.t(if a.role == Role::Admin { "role_admin" } else { "role_agent" })) }
                        td { (l.t(&format!("level_{}", a.level))) }
                        td { (a.open_tickets) " / " (a.capacity) }
                        td { (l.t(if a.active { "yes" } else { "no" })) }
                    }
                }
            }
        }
        h2 #invite-title { (l.t("invite_title_admin")) }
        form #invite method="post" action="/settings/agents/invite" aria-labelledby="invite-title" {
            (page::csrf(ctx))
            label for="invite-name" { (l.t("agent_name")) }
            input #invite-name name="name" required maxlength="100";
            label for="invite-email" { (l.t("email")) }
            input #invite-email type="email" name="email" required;
            label for="invite-role" { (l.t("agent_role")) }
            select #invite-role name="role" {
                option value="agent" { (l.t("role_agent")) }
                option value="admin" { (l.t("role_admin")) }
            }
            label for="invite-level" { (l.t("filter_level")) }
            select #invite-level name="level" {
                option value="1" { (l.t("level_1")) }
                option value="2" { (l.t("level_2")) }
            }
            button type="submit" { (l.t("invite_submit")) }
        }
    };
    let mut res = page::page(ctx, l.t("agents_title"), Section::Settings, MainAttrs::default(), body).into_response();
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

/// `GET /settings/agents` (admins only).
pub(crate) async fn agents(State(web): WebState, ctx: Ctx) -> WebResult<Response> {
    agents_page(&web, &ctx, None, None).await
}

/// `POST /settings/agents/invite`: a new agent and their one-time link, shown once.
pub(crate) async fn invite(State(web): WebState, ctx: Ctx, fields: Fields) -> WebResult<Response> {
    let s = ctx.admin()?;
    let spec = AgentSpec {
        name: fields.get("name").unwrap_or("").to_owned(),
        email: fields.get("email").unwrap_or("").to_owned(),
        role: Role::parse(fields.get("role").unwrap_or("agent"))?,
        level: fields.get("level").and_then(|v| v.parse().ok()).unwrap_or(1),
        skills: Vec::new(),
        capacity: 10,
        presence: Presence::Offline,
        teams: Vec::new(),
        active: true,
    };
    let created = match plugdesk_core::agent::create(web.core.db(), s.workspace_id, &spec).await {
        Ok(a) => a,
        Err(e @ (plugdesk_core::Error::Invalid { .. } | plugdesk_core::Error::Conflict(_))) => {
            return agents_page(&web, &ctx, None, Some(e.to_string())).await;
        }
        Err(e) => return Err(WebError::from(e)),
    };
    let token = account::create_link(web.core.db(), s.workspace_id, created.id, LinkPurpose::Invite).await?;
    let link = account::link_url(web.core.public_url(), LinkPurpose::Invite, &token);
    // Mailed too when the workspace has an e-mail channel; the page says what became of it.
    let l = ctx.lang;
    let notice = Notice {
        to: created.email.clone(),
        to_name: Some(created.name.clone()),
        subject: l.f("invite_mail_subject", &[("inviter", &s.name)]),
        text: l.f("invite_mail_text", &[("name", &created.name), ("inviter", &s.name), ("link", &link)]),
    };
    let mailed = plugdesk_core::outbox::send_notice(&web.core, s.workspace_id, notice).await?;
    let invited = Invited { name: created.name, email: created.email, link, mailed };
    agents_page(&web, &ctx, Some(invited), None).await
}

/// An invitation just made: its link (shown once) and whether it was mailed.
struct Invited {
    name: String,
    email: String,
    link: String,
    mailed: NoticeSent,
}

/// `GET /me`: the agent's own settings: signature, language, signing out everywhere.
pub(crate) async fn me(State(web): WebState, ctx: Ctx) -> WebResult<Response> {
    let s = ctx.agent()?;
    let l = ctx.lang;
    let signatures = account::signatures(web.core.db(), s.agent_id).await?;
    let sig = |channel: &str| signatures.get(channel).cloned().unwrap_or_default();
    let body = html! {
        h1 { (l.t("me_title")) }
        p { (s.name) " · " (s.email) }
        form #signature method="post" action="/me/signature" {
            (page::csrf(&ctx))
            label for="signature-text" { (l.t("signature")) }
            textarea #signature-text name="signature" rows="4" maxlength=(account::MAX_SIGNATURE_CHARS) aria-describedby="signature-hint" { (sig("")) }
            p #signature-hint .hint { (l.t("signature_hint")) }
            @for channel in account::SIGNATURE_CHANNELS {
                label for={ "signature-" (channel) } { (l.t(&format!("signature_{channel}"))) }
                textarea id={ "signature-" (channel) } name={ "signature_" (channel) } rows="3" maxlength=(account::MAX_SIGNATURE_CHARS) aria-describedby="signature-channel-hint" { (sig(channel)) }
            }
            p #signature-channel-hint .hint { (l.t("signature_channel_hint")) }
            button type="submit" { (l.t("save")) }
        }
        h2 { (l.t("sessions")) }
        form #signout-everywhere method="post" action="/signout/everywhere" {
            (page::csrf(&ctx))
            p.hint { (l.t("signout_everywhere_hint")) }
            button type="submit" { (l.t("signout_everywhere")) }
        }
    };
    Ok(page::page(&ctx, l.t("me_title"), Section::None, MainAttrs::default(), body).into_response())
}

/// `POST /me/signature`.
pub(crate) async fn save_signature(State(web): WebState, ctx: Ctx, fields: Fields) -> WebResult<Response> {
    let s = ctx.agent()?;
    let db = web.core.db();
    account::set_signature(db, s.agent_id, None, fields.raw("signature").unwrap_or("")).await?;
    for channel in account::SIGNATURE_CHANNELS {
        if let Some(text) = fields.raw(&format!("signature_{channel}")) {
            account::set_signature(db, s.agent_id, Some(channel), text).await?;
        }
    }
    Ok(axum::response::Redirect::to("/me").into_response())
}
