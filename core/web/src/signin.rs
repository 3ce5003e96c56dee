//! Signing in and out: the sign-in form (throttled per account and per address), the one-time
//! links that set a password (the admin's setup link, invitations), sign-out here or
//! everywhere, and the language switch.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use plugdesk_core::account::{self, LinkPurpose};

use crate::error::{WebError, WebResult};
use crate::form::Fields;
use crate::i18n::Lang;
use crate::page::{self, MainAttrs, Section};
use crate::session::{self, Ctx, LANG_COOKIE};
use crate::{Web, WebState};

/// Failed sign-ins one account may have within a minute (over all nodes); the next attempt is
/// refused even with the right password, so guessing costs a minute per ten tries.
pub(crate) const ACCOUNT_FAILURES: usize = 10;
/// Failed sign-ins one address may have within a minute over all accounts: higher than per
/// account, since a whole office may sign in from one address.
pub(crate) const ADDRESS_FAILURES: usize = 30;

/// What the sign-in form shows besides its fields.
struct SigninView<'a> {
    email: &'a str,
    error: Option<String>,
}

fn signin_page(ctx: &Ctx, view: SigninView<'_>) -> axum::response::Html<String> {
    let l = ctx.lang;
    let body = html! {
        div.card {
            h1 { (l.t("signin_title")) }
            @if let Some(e) = &view.error { p.error role="alert" { (e) } }
            form #signin method="post" action="/signin" {
                (page::csrf(ctx))
                label for="email" { (l.t("email")) }
                input #email type="email" name="email" autocomplete="username" required value=(view.email) autofocus;
                label for="password" { (l.t("password")) }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { (l.t("signin_submit")) }
            }
            (language_links(l))
        }
    };
    page::page(ctx, l.t("signin_title"), Section::None, MainAttrs::default(), body)
}

/// Links to the sign-in page in the other language (before sign-in there is no header).
fn language_links(l: Lang) -> maud::Markup {
    html! {
        form.language-choice method="post" action="/language" {
            @for other in Lang::ALL {
                @if other != l {
                    button type="submit" name="lang" value=(other.code()) lang=(other.code()) { (other.t("language_name")) }
                }
            }
        }
    }
}

/// `GET /signin`.
pub(crate) async fn form(ctx: Ctx) -> Response {
    if ctx.session.is_some() {
        return Redirect::to("/").into_response();
    }
    signin_page(&ctx, SigninView { email: "", error: None }).into_response()
}

/// The client's address as the server loop saw it (`unknown` when driven without a socket).
fn client_address(addr: Option<&axum::Extension<ConnectInfo<SocketAddr>>>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |axum::Extension(ConnectInfo(a))| a.ip().to_string())
}

/// `POST /signin`.
pub(crate) async fn submit(
    State(web): WebState,
    ctx: Ctx,
    addr: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    fields: Fields,
) -> WebResult<Response> {
    let l = ctx.lang;
    let email = fields.get("email").unwrap_or("").to_lowercase();
    let password = fields.raw("password").unwrap_or("").to_owned();
    let address = client_address(addr.as_ref());
    let (account_key, address_key) = (format!("a:{email}"), format!("ip:{address}"));
    let keys = [(account_key.as_str(), ACCOUNT_FAILURES), (address_key.as_str(), ADDRESS_FAILURES)];
    let db = web.core.db();
    if let Some(wait_ms) = account::signin_wait(db, &keys, plugdesk_core::now_ms()).await? {
        let secs = (wait_ms as u64).div_ceil(1000).max(1);
        let error = Some(l.f("signin_throttled", &[("seconds", &secs.to_string())]));
        let mut res = signin_page(&ctx, SigninView { email: &email, error }).into_response();
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return Ok(res);
    }
    let candidates = account::credentials(web.core.db(), &email).await?;
    let found = tokio::task::spawn_blocking(move || {
        if candidates.is_empty() {
            // The same work as for a known address, so timing does not tell which exist.
            account::verify_password(&password, account::decoy_hash());
            return None;
        }
        candidates.into_iter().find(|c| account::verify_password(&password, &c.password_hash))
    })
    .await
    .map_err(|e| WebError::Internal(format!("password check: {e}")))?;
    let Some(who) = found else {
        account::signin_failed(db, &[&account_key, &address_key], plugdesk_core::now_ms()).await?;
        let mut res = signin_page(&ctx, SigninView { email: &email, error: Some(l.t("signin_wrong").to_owned()) })
            .into_response();
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(res);
    };
    let started = account::start_session(web.core.db(), who.workspace_id, who.agent_id).await?;
    Ok(session::signed_in(&started.secret, ctx.secure, "/"))
}

/// The form that sets a password through a one-time link.
fn password_page(
    ctx: &Ctx,
    title: &str,
    greeting: &str,
    action: &str,
    error: Option<String>,
) -> axum::response::Html<String> {
    let l = ctx.lang;
    let body = html! {
        div.card {
            h1 { (title) }
            p { (greeting) }
            @if let Some(e) = &error { p.error role="alert" { (e) } }
            form #password method="post" action=(action) {
                (page::csrf(ctx))
                label for="password" { (l.t("new_password")) }
                input #password type="password" name="password" autocomplete="new-password" required minlength=(account::MIN_PASSWORD_CHARS) aria-describedby="password-rule";
                p #password-rule .hint { (l.f("password_rule", &[("min", &account::MIN_PASSWORD_CHARS.to_string())])) }
                label for="password_confirm" { (l.t("confirm_password")) }
                input #password_confirm type="password" name="password_confirm" autocomplete="new-password" required;
                button type="submit" { (l.t("password_submit")) }
            }
        }
    };
    page::page(ctx, title, Section::None, MainAttrs::default(), body)
}

/// The password form of a one-time link, with the agent greeted and `error` shown.
fn link_page(
    ctx: &Ctx,
    holder: &account::LinkHolder,
    token: &str,
    purpose: LinkPurpose,
    error: Option<String>,
) -> Response {
    let l = ctx.lang;
    let (title, action) = match purpose {
        LinkPurpose::Setup => (l.t("setup_title"), format!("/setup/{token}")),
        LinkPurpose::Invite => (l.t("invite_title"), format!("/invite/{token}")),
    };
    let greeting = l.f("link_greeting", &[("name", &holder.name), ("email", &holder.email)]);
    let refused = error.is_some();
    let mut res = password_page(ctx, title, &greeting, &action, error).into_response();
    if refused {
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    res
}

async fn link_form(web: &Web, ctx: &Ctx, token: &str, purpose: LinkPurpose) -> WebResult<Response> {
    let holder = account::link_holder(web.core.db(), token, purpose).await?;
    Ok(link_page(ctx, &holder, token, purpose, None))
}

async fn link_submit(web: &Web, ctx: &Ctx, token: &str, purpose: LinkPurpose, fields: &Fields) -> WebResult<Response> {
    let l = ctx.lang;
    let holder = account::link_holder(web.core.db(), token, purpose).await?;
    let password = fields.raw("password").unwrap_or("").to_owned();
    let again = fields.raw("password_confirm").unwrap_or("");
    let problem = if password != again {
        Some(l.t("password_mismatch").to_owned())
    } else if account::check_password(&password).is_err() {
        Some(l.f("password_rule", &[("min", &account::MIN_PASSWORD_CHARS.to_string())]))
    } else {
        None
    };
    if problem.is_some() {
        return Ok(link_page(ctx, &holder, token, purpose, problem));
    }
    let hash = tokio::task::spawn_blocking(move || account::hash_password(&password))
        .await
        .map_err(|e| WebError::Internal(format!("password hash: {e}")))??;
    let holder = account::redeem_link(web.core.db(), token, purpose, &hash).await?;
    let started = account::start_session(web.core.db(), holder.workspace_id, holder.agent_id).await?;
    Ok(session::signed_in(&started.secret, ctx.secure, "/"))
}

/// `GET /setup/{token}`.
pub(crate) async fn setup_form(State(web): WebState, ctx: Ctx, Path(token): Path<String>) -> WebResult<Response> {
    link_form(&web, &ctx, &token, LinkPurpose::Setup).await
}

/// `POST /setup/{token}`.
pub(crate) async fn setup_submit(
    State(web): WebState,
    ctx: Ctx,
    Path(token): Path<String>,
    fields: Fields,
) -> WebResult<Response> {
    link_submit(&web, &ctx, &token, LinkPurpose::Setup, &fields).await
}

/// `GET /invite/{token}`.
pub(crate) async fn invite_form(State(web): WebState, ctx: Ctx, Path(token): Path<String>) -> WebResult<Response> {
    link_form(&web, &ctx, &token, LinkPurpose::Invite).await
}

/// `POST /invite/{token}`.
pub(crate) async fn invite_submit(
    State(web): WebState,
    ctx: Ctx,
    Path(token): Path<String>,
    fields: Fields,
) -> WebResult<Response> {
    link_submit(&web, &ctx, &token, LinkPurpose::Invite, &fields).await
}

fn signed_out(secure: bool) -> Response {
    let mut res = Redirect::to("/signin").into_response();
    res.headers_mut().append(header::SET_COOKIE, session::set_cookie(session::SESSION_COOKIE, "", secure, Some(0)));
    res
}

/// `POST /signout`.
pub(crate) async fn signout(State(web): WebState, ctx: Ctx) -> WebResult<Response> {
    if let Some(s) = &ctx.session {
        account::end_session(web.core.db(), s.id).await?;
    }
    Ok(signed_out(ctx.secure))
}

/// `POST /signout/everywhere`.
pub(crate) async fn signout_everywhere(State(web): WebState, ctx: Ctx) -> WebResult<Response> {
    let s = ctx.agent()?;
    account::end_all_sessions(web.core.db(), s.agent_id).await?;
    Ok(signed_out(ctx.secure))
}

/// `POST /language`: remembers the choice (for the agent, and in a cookie) and goes back.
pub(crate) async fn language(
    State(web): WebState,
    ctx: Ctx,
    headers: HeaderMap,
    fields: Fields,
) -> WebResult<Response> {
    let lang = fields.get("lang").and_then(Lang::parse).ok_or_else(|| WebError::Invalid("lang".into()))?;
    if let Some(s) = &ctx.session {
        account::set_language(web.core.db(), s.agent_id, lang.code()).await?;
    }
    // Back to the page the switch was on; only a path of this site.
    let back = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/".to_owned());
    let mut res = Redirect::to(&back).into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(LANG_COOKIE, lang.code(), ctx.secure, Some(365 * 24 * 3600)));
    Ok(res)
}
