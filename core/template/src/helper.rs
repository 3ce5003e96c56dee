//! The helpers every template can call besides Handlebars' own (`if`, `each`, `eq`, …):
//! `date`, `money`, `ticket_link`, `customer_name`, `upper`, `lower`, `truncate`, `default`.
//!
//! Each returns a value rather than writing text, so Handlebars escapes it in HTML bodies (and
//! not in text), and it can be used in a subexpression: `{{upper (default customer.name "x")}}`.

mod date;
mod money;

use handlebars::{Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason, ScopedJson};
use serde_json::Value as Json;

use crate::locale::Locale;

/// Handlebars' built-in helpers (handlebars 6 without its optional string helpers).
const HANDLEBARS_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not",
    "len",
];

type HelperFn = fn(&Helper<'_>, &Context, Locale) -> Result<Json, RenderError>;

/// Our helpers: name, function, and whether the output depends on the language.
const HELPERS: &[(&str, HelperFn, bool)] = &[
    ("date", date::helper, true),
    ("money", money::helper, true),
    ("customer_name", customer_name, true),
    ("ticket_link", ticket_link, false),
    ("upper", upper, false),
    ("lower", lower, false),
    ("truncate", truncate, false),
    ("default", default, false),
];

/// Whether `name` is a helper that exists without any script helper: Handlebars' or ours.
pub(crate) fn is_built_in(name: &str) -> bool {
    HANDLEBARS_HELPERS.contains(&name) || HELPERS.iter().any(|(n, ..)| *n == name)
}

/// Registers the helpers that do not depend on the language.
pub(crate) fn register(registry: &mut Handlebars<'static>) {
    for &(name, f, localized) in HELPERS {
        if !localized {
            registry.register_helper(name, Box::new(Simple { f, locale: Locale::En }));
        }
    }
}

/// Registers the language-dependent helpers for one render. They live in the render context
/// because the registries are shared by every language; this costs a few small allocations per
/// render, far below the render itself.
pub(crate) fn register_localized(rc: &mut RenderContext<'_, '_>, locale: Locale) {
    for &(name, f, localized) in HELPERS {
        if localized {
            rc.register_local_helper(name, Box::new(Simple { f, locale }));
        }
    }
}

struct Simple {
    f: HelperFn,
    locale: Locale,
}

impl HelperDef for Simple {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        (self.f)(h, ctx, self.locale).map(ScopedJson::Derived)
    }
}

static NULL: Json = Json::Null;

/// The value of positional parameter `i`; missing parameters and missing data are `null`.
fn arg<'a>(h: &'a Helper<'_>, i: usize) -> &'a Json {
    h.param(i).map_or(&NULL, |p| p.value())
}

/// An error from helper `name`, for the template author.
fn fail(name: &str, message: impl std::fmt::Display) -> RenderError {
    RenderErrorReason::Other(format!("helper `{name}`: {message}")).into()
}

/// A value as text: strings as they are, numbers and booleans written out, `null` empty.
fn text<'a>(name: &str, value: &'a Json) -> Result<std::borrow::Cow<'a, str>, RenderError> {
    match value {
        Json::Null => Ok("".into()),
        Json::String(s) => Ok(s.as_str().into()),
        Json::Number(n) => Ok(n.to_string().into()),
        Json::Bool(b) => Ok(b.to_string().into()),
        Json::Array(_) | Json::Object(_) => {
            Err(fail(name, "expects text, got a list or an object; pass one of its fields"))
        }
    }
}

fn upper(h: &Helper<'_>, _: &Context, _: Locale) -> Result<Json, RenderError> {
    Ok(Json::String(text("upper", arg(h, 0))?.to_uppercase()))
}

fn lower(h: &Helper<'_>, _: &Context, _: Locale) -> Result<Json, RenderError> {
    Ok(Json::String(text("lower", arg(h, 0))?.to_lowercase()))
}

/// `{{truncate text 40}}`: at most 40 characters, the last one `…` when the text was cut;
/// `{{truncate text 40 "..."}}` chooses the mark.
fn truncate(h: &Helper<'_>, _: &Context, _: Locale) -> Result<Json, RenderError> {
    let value = text("truncate", arg(h, 0))?;
    let Some(max) = arg(h, 1).as_u64().and_then(|n| usize::try_from(n).ok()) else {
        return Err(fail("truncate", "needs the number of characters: {{truncate text 40}}"));
    };
    let mark = match arg(h, 2) {
        Json::Null => "…",
        Json::String(s) => s.as_str(),
        _ => return Err(fail("truncate", "the third parameter, the mark, must be text")),
    };
    if value.chars().count() <= max {
        return Ok(Json::String(value.into_owned()));
    }
    let keep = max.saturating_sub(mark.chars().count());
    let mut cut: String = value.chars().take(keep).collect();
    cut.truncate(cut.trim_end().len());
    cut.push_str(mark);
    Ok(Json::String(cut))
}

/// `{{default customer.name "there"}}`: the value unless it is missing, `null` or blank text.
fn default(h: &Helper<'_>, _: &Context, _: Locale) -> Result<Json, RenderError> {
    let value = arg(h, 0);
    let blank = match value {
        Json::Null => true,
        Json::String(s) => s.trim().is_empty(),
        _ => false,
    };
    Ok(if blank { arg(h, 1).clone() } else { value.clone() })
}

/// `{{ticket_link ticket}}` (or a ticket number): `{workspace.base_url}/tickets/{number}`.
fn ticket_link(h: &Helper<'_>, ctx: &Context, _: Locale) -> Result<Json, RenderError> {
    let base = match ctx.data().pointer("/workspace/base_url") {
        Some(Json::String(s)) if !s.trim().is_empty() => s.trim().trim_end_matches('/'),
        _ => {
            return Err(fail("ticket_link", "the data has no workspace.base_url; pass the workspace's public address"));
        }
    };
    let value = arg(h, 0);
    let number = match value {
        Json::Object(ticket) => ticket.get("number").unwrap_or(&NULL),
        other => other,
    };
    let number = match number {
        Json::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Json::Number(n) => n.to_string(),
        _ => return Err(fail("ticket_link", "expects a ticket with a number: {{ticket_link ticket}}")),
    };
    Ok(Json::String(format!("{base}/tickets/{}", path_segment(&number))))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a ticket number cannot
/// change the link's path or query.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{{customer_name customer}}`: the customer's name (`name`, else `first_name last_name`),
/// else a neutral word in the template's language; `{{customer_name customer "Sie"}}` chooses
/// the fallback.
fn customer_name(h: &Helper<'_>, _: &Context, locale: Locale) -> Result<Json, RenderError> {
    let field = |c: &serde_json::Map<String, Json>, key: &str| {
        c.get(key).and_then(Json::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let name = match arg(h, 0) {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Object(c) => field(c, "name").or_else(|| {
            let parts: Vec<String> = ["first_name", "last_name"].iter().filter_map(|k| field(c, k)).collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        }),
        _ => None,
    };
    let name = match (name, arg(h, 1)) {
        (Some(name), _) => name,
        (None, Json::String(fallback)) => fallback.clone(),
        (None, _) => locale.customer_fallback().to_owned(),
    };
    Ok(Json::String(name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::TemplateSet;

    /// Renders `source` as a chat template in `language` against `data`.
    pub(crate) fn render(language: &str, source: &str, data: &serde_json::Value) -> Result<String, crate::Error> {
        let mut set = TemplateSet::new("en")?;
        set.add_template("t", "chat", language, crate::TemplateSource::text(source))?;
        Ok(set.render("t", "chat", language, data)?.text)
    }

    fn check(language: &str, source: &str, data: serde_json::Value, expected: &str) {
        match render(language, source, &data) {
            Ok(text) => assert_eq!(text, expected, "{language}: {source}"),
            Err(e) => panic!("{language}: {source}: {e}"),
        }
    }

    #[test]
    fn text_helpers() {
        let data = json!({
            "customer": {"name": "Anna Müller", "first_name": "Anna", "last_name": "Müller"},
            "nameless": {"name": " "},
            "split": {"first_name": "Ben", "last_name": "Okafor"},
            "ticket": {"number": "2026 10/42", "subject": "Paket nicht angekommen"},
            "workspace": {"base_url": "https://help.example.com/"},
            "empty": "",
        });
        let cases = [
            ("en", "{{upper customer.name}}", "ANNA MÜLLER"),
            ("en", "{{lower ticket.subject}}", "paket nicht angekommen"),
            ("en", "{{upper missing}}", ""),
            ("en", "{{truncate ticket.subject 10}}", "Paket nic…"),
            ("en", "{{truncate ticket.subject 11 \"...\"}}", "Paket ni..."),
            ("en", "{{truncate ticket.subject 40}}", "Paket nicht angekommen"),
            ("en", "{{truncate ticket.subject 7}}", "Paket…"),
            ("en", "{{default empty \"none\"}}", "none"),
            ("en", "{{default missing \"none\"}}", "none"),
            ("en", "{{default ticket.subject \"none\"}}", "Paket nicht angekommen"),
            ("en", "{{ticket_link ticket}}", "https://help.example.com/tickets/2026%2010%2F42"),
            ("en", "{{ticket_link 42}}", "https://help.example.com/tickets/42"),
            ("de", "{{customer_name customer}}", "Anna Müller"),
            ("de", "{{customer_name split}}", "Ben Okafor"),
            ("de", "{{customer_name nameless}}", "Kundin/Kunde"),
            ("en", "{{customer_name nameless}}", "customer"),
            ("en", "{{customer_name missing \"there\"}}", "there"),
            ("en", "{{upper (default missing \"x\")}}", "X"),
        ];
        for (language, source, expected) in cases {
            check(language, source, data.clone(), expected);
        }
    }

    #[test]
    fn helper_errors_name_the_helper_and_the_place() {
        let cases = [
            (
                "line\n {{ticket_link ticket}}",
                json!({"ticket": {"number": 1}}),
                "line 2, column 2: helper `ticket_link`: the data has no workspace.base_url",
            ),
            ("{{truncate ticket}}", json!({"ticket": "x"}), "helper `truncate`: needs the number of characters"),
            ("{{upper ticket}}", json!({"ticket": {"a": 1}}), "helper `upper`: expects text"),
        ];
        for (source, data, expected) in cases {
            let e = render("en", source, &data).expect_err(source).to_string();
            assert!(e.contains(expected), "{source}: {e}");
        }
    }

    #[test]
    fn dates_in_german_and_english() {
        let data = json!({
            "rfc": "2026-11-24T14:05:09Z",
            "offset": "2026-11-24T23:30:00-02:00",
            "ms": 1_795_529_109_000_i64,
            "day": "2026-03-01",
            "morning": "2026-05-02T00:15:00Z",
        });
        let cases = [
            ("de", "{{date rfc \"long\"}}", "24. November 2026"),
            ("en", "{{date rfc \"long\"}}", "November 24, 2026"),
            ("de", "{{date rfc}}", "24. November 2026"),
            ("de", "{{date rfc \"short\"}}", "24.11.2026"),
            ("en", "{{date rfc \"short\"}}", "Nov 24, 2026"),
            ("de", "{{date rfc \"datetime\"}}", "24. November 2026, 14:05 Uhr (UTC)"),
            ("en", "{{date rfc \"datetime\"}}", "November 24, 2026, 2:05 PM (UTC)"),
            ("de", "{{date rfc \"datetime\" \"+01:00\"}}", "24. November 2026, 15:05 Uhr"),
            ("en", "{{date rfc \"time\" \"-0530\"}}", "8:35 AM"),
            ("de", "{{date rfc \"iso\"}}", "2026-11-24"),
            ("de", "{{date offset \"datetime\"}}", "25. November 2026, 01:30 Uhr (UTC)"),
            ("de", "{{date ms \"datetime\"}}", "24. November 2026, 14:05 Uhr (UTC)"),
            ("de", "{{date day \"long\"}}", "1. März 2026"),
            ("en", "{{date morning \"datetime\"}}", "May 2, 2026, 12:15 AM (UTC)"),
            ("en", "{{date morning \"datetime\" \"Z\"}}", "May 2, 2026, 12:15 AM"),
            ("en", "{{date missing \"long\"}}", ""),
        ];
        for (language, source, expected) in cases {
            check(language, source, data.clone(), expected);
        }
    }

    #[test]
    fn bad_dates_are_errors() {
        let data = json!({"bad": "tomorrow", "feb": "2026-02-30", "ts": "2026-11-24T14:05:00Z"});
        let cases = [
            ("{{date bad}}", "expects an RFC 3339 timestamp"),
            ("{{date feb}}", "expects an RFC 3339 timestamp"),
            ("{{date ts \"fancy\"}}", "unknown format `fancy`"),
            ("{{date ts \"long\" \"+25:00\"}}", "offset"),
        ];
        for (source, expected) in cases {
            let e = render("en", source, &data).expect_err(source).to_string();
            assert!(e.contains(expected), "{source}: {e}");
        }
    }

    #[test]
    fn money_in_german_and_english() {
        let data = json!({"total": 1234.5, "text": "12.5", "minus": -3.999});
        let cases = [
            ("de", "{{money 12.5 \"EUR\"}}", "12,50 €"),
            ("en", "{{money 12.5 \"EUR\"}}", "€12.50"),
            ("de", "{{money total \"EUR\"}}", "1.234,50 €"),
            ("en", "{{money total \"usd\"}}", "$1,234.50"),
            ("en", "{{money text \"GBP\"}}", "£12.50"),
            ("de", "{{money total \"CHF\"}}", "1.234,50 CHF"),
            ("en", "{{money total \"CHF\"}}", "CHF 1,234.50"),
            ("de", "{{money 1234567 \"JPY\"}}", "1.234.567 ¥"),
            ("en", "{{money minus \"EUR\"}}", "-€4.00"),
            ("de", "{{money minus \"EUR\"}}", "-4,00 €"),
            ("de", "{{money 0.004 \"EUR\"}}", "0,00 €"),
            ("de", "{{money missing \"EUR\"}}", ""),
        ];
        for (language, source, expected) in cases {
            check(language, source, data.clone(), expected);
        }
        for (source, expected) in
            [("{{money 1}}", "needs a currency"), ("{{money \"abc\" \"EUR\"}}", "expects an amount")]
        {
            let e = render("en", source, &data).expect_err(source).to_string();
            assert!(e.contains(expected), "{source}: {e}");
        }
    }
}
