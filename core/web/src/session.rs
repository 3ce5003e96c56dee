//! Who is asking, in which language, and whether a state-changing request may pass: the
//! session cookie, the CSRF checks (a strict same-origin check *and* a token), and the request
//! context ([`Ctx`]) handlers take.
//!
//! Before sign-in there is no session to hold a CSRF token, so the sign-in, setup and
//! invitation forms use a random token in a cookie of their own (`pd_pre`), the form carrying
//! the same value (double submit); the Origin check applies all the same.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plugdesk_core::account::{self, Session, SessionLimits};
use rand::RngCore;

use crate::error::{ErrorPage, WebError};
use crate::i18n::Lang;
use crate::{Web, changes_state, page};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "pd_session";
/// The pre-session CSRF cookie of the sign-in forms.
pub(crate) const PRE_COOKIE: &str = "pd_pre";
/// The language cookie (before sign-in; signed in, the agent's setting wins).
pub(crate) const LANG_COOKIE: &str = "pd_lang";
/// The header scripts send the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// What every handler knows about the request.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The UI language.
    pub(crate) lang: Lang,
    /// The signed-in agent, if any.
    pub(crate) session: Option<Session>,
    /// The token this request's forms must carry.
    pub(crate) csrf: String,
    /// Whether cookies get `Secure` (the public URL is https).
    pub(crate) secure: bool,
    /// A fresh pre-session token to set as a cookie with the response.
    pub(crate) new_pre: Option<String>,
}

impl Ctx {
    /// The signed-in agent.
    ///
    /// # Errors
    /// [`WebError::SignedOut`] when nobody is.
    pub(crate) fn agent(&self) -> Result<&Session, WebError> {
        self.session.as_ref().ok_or(WebError::SignedOut)
    }

    /// The signed-in admin.
    ///
    /// # Errors
    /// [`WebError::SignedOut`], or [`WebError::Forbidden`] for an agent.
    pub(crate) fn admin(&self) -> Result<&Session, WebError> {
        let s = self.agent()?;
        if s.role != plugdesk_core::auth::Role::Admin {
            return Err(WebError::Forbidden);
        }
        Ok(s)
    }
}

impl FromRequestParts<Web> for Ctx {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &Web) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Ctx>().cloned().ok_or(WebError::Internal("request context missing".into()))
    }
}

/// A cookie's value from the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, whole site; `Secure` under https; a session
/// cookie (gone with the browser) unless `max_age` is given.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("pd_invalid=; Path=/"))
}

/// A random token (256 bits, hex).
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Whether the request comes from a page of this site: its `Origin` (or, without one, its
/// `Referer`) must be this server's own scheme and host. A request with neither is refused —
/// every browser sends `Origin` with a cross-site POST, so only a non-browser client lacks
/// both, and it can send one.
pub(crate) fn same_origin(headers: &HeaderMap, secure: bool) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let own = format!("{}://{host}", if secure { "https" } else { "http" });
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok()) {
        return origin == own;
    }
    match headers.get(header::REFERER).and_then(|h| h.to_str().ok()) {
        Some(r) => r == own || r.starts_with(&format!("{own}/")),
        None => false,
    }
}

/// The language: the agent's choice, else the cookie, else the browser's `Accept-Language`.
fn language(headers: &HeaderMap, session: Option<&Session>) -> Lang {
    if let Some(l) = session.and_then(|s| s.language.as_deref()).and_then(Lang::parse) {
        return l;
    }
    if let Some(l) = cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
        return l;
    }
    Lang::from_accept_language(headers.get(header::ACCEPT_LANGUAGE).and_then(|h| h.to_str().ok()).unwrap_or(""))
}

/// Finds the session, the language and the CSRF token, checks state-changing requests, and
/// renders error pages in the request's language. Runs before every web handler.
pub(crate) async fn guard(State(web): State<Web>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/assets/") {
        // Static files need no session (and cost no database read).
        return next.run(req).await;
    }
    let secure = web.core.public_url().starts_with("https://");
    let limits = SessionLimits::default();
    let session = match cookie(req.headers(), SESSION_COOKIE) {
        Some(secret) if !secret.is_empty() => match account::session(web.core.db(), secret, limits).await {
            Ok(s) => s,
            Err(e) => return WebError::from(e).into_response(),
        },
        _ => None,
    };
    let lang = language(req.headers(), session.as_ref());
    let pre = cookie(req.headers(), PRE_COOKIE).filter(|v| v.len() == 64).map(str::to_owned);
    let (csrf, new_pre) = match (&session, pre) {
        (Some(s), _) => (s.csrf.clone(), None),
        (None, Some(p)) => (p, None),
        (None, None) => {
            let t = random_token();
            (t.clone(), Some(t))
        }
    };
    let ctx = Ctx { lang, session, csrf, secure, new_pre };
    let limits = (crate::max_form_bytes(&web.core), crate::max_upload_bytes(&web.core));
    let (req, refused) = if changes_state(req.method()) { check(req, &ctx, limits).await } else { (Some(req), None) };
    let mut res = match (req, refused) {
        (_, Some(e)) => e.into_response(),
        (Some(mut req), None) => {
            req.extensions_mut().insert(ctx.clone());
            next.run(req).await
        }
        (None, None) => WebError::Internal("request lost".into()).into_response(),
    };
    if let Some(t) = &ctx.new_pre {
        res.headers_mut().append(header::SET_COOKIE, set_cookie(PRE_COOKIE, t, secure, None));
    }
    if let Some(page) = res.extensions_mut().remove::<ErrorPage>() {
        let status = res.status();
        let mut rendered = page::error(&ctx, status, &page).into_response();
        *rendered.status_mut() = status;
        for (name, value) in res.headers() {
            if name == header::SET_COOKIE || name == header::RETRY_AFTER || name == header::LOCATION {
                rendered.headers_mut().append(name.clone(), value.clone());
            }
        }
        return rendered;
    }
    res
}

/// The CSRF checks of a state-changing request: same origin, and the token in the
/// `X-CSRF-Token` header or the form's `csrf` field. Reads a form body (urlencoded, or
/// multipart when it carries files) to find the field and puts it back for the handler.
/// `limits` are the largest form and the largest form with files.
async fn check(req: Request, ctx: &Ctx, limits: (usize, usize)) -> (Option<Request>, Option<WebError>) {
    if !same_origin(req.headers(), ctx.secure) {
        return (None, Some(WebError::CrossSite));
    }
    if let Some(t) = req.headers().get(CSRF_HEADER).and_then(|h| h.to_str().ok()) {
        let ok = plugdesk_core::auth::same_secret(t, &ctx.csrf);
        return if ok { (Some(req), None) } else { (None, Some(WebError::CrossSite)) };
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    // Files are taken by the composer only (a reply's attachments), nowhere else.
    let multipart = content_type.starts_with("multipart/form-data") && req.uri().path().ends_with("/messages");
    if !content_type.starts_with("application/x-www-form-urlencoded") && !multipart {
        return (None, Some(WebError::CrossSite));
    }
    let (parts, body) = req.into_parts();
    let limit = if multipart { limits.1 } else { limits.0 };
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return (None, Some(WebError::TooLarge)),
    };
    let given = if multipart {
        multipart_field(&content_type, &bytes, "csrf")
    } else {
        form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned())
    };
    match given {
        Some(t) if plugdesk_core::auth::same_secret(&t, &ctx.csrf) => {
            (Some(Request::from_parts(parts, Body::from(bytes))), None)
        }
        _ => (None, Some(WebError::CrossSite)),
    }
}

/// The text of the first field `name` of a multipart body (RFC 7578); `None` when it is
/// missing or the body is not readable. Only the token is looked for here; the handler reads
/// the whole form.
fn multipart_field(content_type: &str, bytes: &[u8], name: &str) -> Option<String> {
    let boundary = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    if boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{name}\"");
    let mut rest = bytes;
    loop {
        let at = find(rest, delimiter.as_bytes())?;
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            return None;
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let body = &rest[head_end + 4..];
        let disposition = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        if disposition.split(';').any(|p| p.trim() == wanted) {
            let end = find(body, format!("\r\n{delimiter}").as_bytes())?;
            return String::from_utf8(body[..end].to_vec()).ok();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The response that signs an agent in: the session cookie, and a redirect to `to`.
pub(crate) fn signed_in(secret: &str, secure: bool, to: &str) -> Response {
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    res.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, secret, secure, None));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_in_a_multipart_form_and_nowhere_else() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nt0ken\r\n--XyZ\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nname=\"csrf\"\r\n--XyZ--\r\n";
        assert_eq!(multipart_field(ct, body, "csrf").as_deref(), Some("t0ken"));
        assert_eq!(multipart_field(ct, body, "kind"), None);
        // A file's content that looks like the field is not the field.
        let only_file = b"--XyZ\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.txt\"\r\n\r\nname=\"csrf\"\r\n--XyZ--\r\n";
        assert_eq!(multipart_field(ct, only_file, "csrf"), None);
        assert_eq!(multipart_field("multipart/form-data", body, "csrf"), None, "no boundary");
        assert_eq!(multipart_field(ct, b"--XyZ\r\nbroken", "csrf"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("v"));
        }
        h
    }

    #[test]
    fn only_the_own_origin_passes() {
        let own = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert!(same_origin(&own, false));
        assert!(!same_origin(&own, true), "https expected, http origin");
        let evil = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]);
        assert!(!same_origin(&evil, false));
        let lookalike = headers(&[("host", "127.0.0.1:8080"), ("referer", "http://127.0.0.1:8080.evil.example/x")]);
        assert!(!same_origin(&lookalike, false));
        let referer = headers(&[("host", "127.0.0.1:8080"), ("referer", "http://127.0.0.1:8080/tickets/1")]);
        assert!(same_origin(&referer, false));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")]), false), "neither header");
    }

    #[test]
    fn cookies_are_found_among_others_and_set_with_the_flags() {
        let h = headers(&[("cookie", "a=1; pd_session=abc; pd_lang=de")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LANG_COOKIE), Some("de"));
        assert_eq!(cookie(&h, "missing"), None);
        let c = set_cookie(SESSION_COOKIE, "x", true, None);
        assert_eq!(c.to_str().expect("ascii"), "pd_session=x; Path=/; HttpOnly; SameSite=Lax; Secure");
    }
}
