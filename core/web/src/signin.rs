//! Signing in and out: the sign-in form (throttled per account and per address), the one-time
//! links that set a password (the admin's setup link, invitations), sign-out here or
//! everywhere, and the language switch.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Failed sign-ins one account may have within [`WINDOW`]; the next attempt is refused even
/// with the right password, so guessing costs a minute per ten tries.
pub(crate) const ACCOUNT_FAILURES: usize = 10;
/// Failed sign-ins one address may have within [`WINDOW`] over all accounts: higher than per
/// account, since a whole office may sign in from one address.
pub(crate) const ADDRESS_FAILURES: usize = 30;
/// The window the failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Keys kept at most; past it the oldest-looking entries are dropped (bounded memory under a
/// spray of addresses).
const MAX_KEYS: usize = 100_000;

/// Recent failed sign-ins per account and per address, in memory. Each node counts its own:
/// with several nodes behind a balancer an attacker gets that many times the rate, still
/// bounded.
#[derive(Default)]
pub(crate) struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    /// How long until `account` and `address` may try again, if either is over its limit.
    fn blocked(&self, account: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        for (key, limit) in [(format!("a:{account}"), ACCOUNT_FAILURES), (format!("ip:{address}"), ADDRESS_FAILURES)] {
            if let Some(q) = map.get_mut(&key) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    q.pop_front();
                }
                if q.len() >= limit
                    && let Some(oldest) = q.front()
                {
                    let left = WINDOW.saturating_sub(now.duration_since(*oldest));
                    wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
                }
            }
        }
        wait
    }

    /// Counts a failure against both.
    fn fail(&self, account: &str, address: &str) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        for key in [format!("a:{account}"), format!("ip:{address}")] {
            let q = map.entry(key).or_default();
            q.push_back(now);
            let keep = ACCOUNT_FAILURES.max(ADDRESS_FAILURES);
            while q.len() > keep {
                q.pop_front();
            }
        }
    }
}

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
    if let Some(wait) = web.throttle.blocked(&email, &address) {
        let secs = wait.as_secs().max(1);
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
        web.throttle.fail(&email, &address);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_attempt_of_an_account_is_refused() {
        let t = Throttle::default();
        for _ in 0..ACCOUNT_FAILURES {
            assert!(t.blocked("anna@example.com", "10.0.0.1").is_none());
            t.fail("anna@example.com", "10.0.0.1");
        }
        let wait = t.blocked("anna@example.com", "10.0.0.2").expect("blocked from any address");
        assert!(wait <= WINDOW && wait > Duration::from_secs(50), "{wait:?}");
        assert!(t.blocked("bert@example.com", "10.0.0.3").is_none(), "another account from another address");
    }

    #[test]
    fn an_address_spraying_accounts_is_refused_after_its_own_limit() {
        let t = Throttle::default();
        for i in 0..ADDRESS_FAILURES {
            t.fail(&format!("user{i}@example.com"), "10.0.0.9");
        }
        assert!(t.blocked("new@example.com", "10.0.0.9").is_some());
        assert!(t.blocked("new@example.com", "10.0.0.8").is_none());
    }
}
