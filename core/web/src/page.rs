//! The frame every page shares: the document head (styles, scripts, CSRF token, the texts the
//! scripts need), the header with navigation, the bell, the language switch and sign-out, the
//! keyboard-shortcut dialog; the error page; and small formatting helpers.

use axum::http::StatusCode;
use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::assets;
use crate::error::ErrorPage;
use crate::i18n::Lang;
use crate::session::Ctx;

/// Which part of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Inbox,
    Ticket,
    Notifications,
    Settings,
    None,
}

/// A whole page: head, header (when signed in), `main` with `body`.
pub(crate) fn page(ctx: &Ctx, title: &str, section: Section, main_attrs: MainAttrs, body: Markup) -> Html<String> {
    let l = ctx.lang;
    let signed_in = ctx.session.is_some();
    let markup = html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – Plugdesk" }
                link rel="stylesheet" href=(assets::url("app.css"));
                @if signed_in {
                    meta name="csrf-token" content=(ctx.csrf);
                    meta name="pd-assets" content=(assets::module_map());
                    script type="module" src=(assets::url("app.js")) {}
                }
            }
            body {
                a.skip href="#main" { (l.t("skip_to_content")) }
                @if let Some(s) = &ctx.session {
                    header.top {
                        nav aria-label=(l.t("nav_main")) {
                            a.brand href="/" aria-current=[(section == Section::Inbox).then_some("page")] { (l.t("nav_inbox")) }
                            @if s.role == plugdesk_core::auth::Role::Admin {
                                a href="/settings/agents" aria-current=[(section == Section::Settings).then_some("page")] { (l.t("nav_settings")) }
                            }
                        }
                        div.tools {
                            a #bell href="/notifications" aria-current=[(section == Section::Notifications).then_some("page")] {
                                span { (l.t("nav_notifications")) }
                                " "
                                span #bell-count .badge {}
                            }
                            a.me href="/me" { (s.name) }
                            form #language method="post" action="/language" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                label.visually-hidden for="lang-select" { (l.t("language")) }
                                select #lang-select name="lang" {
                                    @for other in Lang::ALL {
                                        option value=(other.code()) selected[other == l] { (other.t("language_name")) }
                                    }
                                }
                                button type="submit" { (l.t("language_apply")) }
                            }
                            form #signout method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                button type="submit" { (l.t("signout")) }
                            }
                        }
                    }
                }
                main #main data-ticket-id=[main_attrs.ticket_id] {
                    (body)
                }
                @if signed_in {
                    (shortcuts(l))
                    script type="application/json" #pd-i18n { (PreEscaped(json_for_script(&l.script_texts()))) }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// Attributes of `main` the scripts read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MainAttrs {
    /// The ticket a ticket page shows.
    pub(crate) ticket_id: Option<i64>,
}

/// JSON placed inside a `<script type="application/json">` block: `<` escaped, so no text
/// can close the element.
fn json_for_script(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// The keyboard-shortcut dialog (`?` opens it).
fn shortcuts(l: Lang) -> Markup {
    let keys = [
        ("j / k", "key_move"),
        ("Enter", "key_open"),
        ("r", "key_reply"),
        ("n", "key_note"),
        ("a", "key_assign"),
        ("e", "key_escalate"),
        ("/", "key_search"),
        ("?", "key_help"),
        ("Esc", "key_close"),
    ];
    html! {
        dialog #shortcuts aria-labelledby="shortcuts-title" {
            h2 #shortcuts-title { (l.t("shortcuts_title")) }
            dl {
                @for (k, text) in keys {
                    dt { kbd { (k) } }
                    dd { (l.t(text)) }
                }
            }
            form method="dialog" { button type="submit" { (l.t("close")) } }
        }
    }
}

/// The page of an error, in the request's language.
pub(crate) fn error(ctx: &Ctx, status: StatusCode, e: &ErrorPage) -> Html<String> {
    let l = ctx.lang;
    let body = html! {
        h1 { (l.t(e.key)) }
        @if let Some(d) = &e.detail { p.error role="alert" { (d) } }
        p { a href="/" { (l.t("back_to_inbox")) } }
    };
    let _ = status;
    page(ctx, l.t(e.key), Section::None, MainAttrs::default(), body)
}

/// A stored time (Unix ms) as `time` element: machine-readable in `datetime`, shown in UTC
/// until the page's script writes it in the agent's own time zone and language.
pub(crate) fn time(ms: i64) -> Markup {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (at.format("%Y-%m-%d %H:%M UTC"))
        }
    }
}

/// An RFC 3339 time from the API types as `time` element.
pub(crate) fn time_text(rfc3339: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => time(t.timestamp_millis()),
        Err(_) => html! { (rfc3339) },
    }
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_its_element() {
        assert_eq!(json_for_script(r#"{"a":"</script><b>"}"#), r#"{"a":"\u003c/script>\u003cb>"}"#);
    }
}
