//! Builds outbound messages (RFC 5322 with MIME): headers with RFC 2047 encoded words where
//! text is not ASCII, a quoted-printable UTF-8 text part, an optional HTML alternative, and
//! base64 attachments with RFC 2231 file names. Lines end in CRLF and stay within 78
//! characters where the content allows, and always within 998.

use std::fmt::Write as _;

use chrono::DateTime;
pub use email_parse::Address;

use crate::codec::{base64_encode, base64_lines, fnv1a64, quoted_printable_encode};

/// A file attached to an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingAttachment {
    /// The file name shown to the recipient (any characters; directory parts are the
    /// caller's business).
    pub filename: String,
    /// The MIME type, e.g. `application/pdf`; one that is not `type/subtype` is sent as
    /// `application/octet-stream`.
    pub content_type: String,
    /// The content.
    pub data: Vec<u8>,
}

/// An outgoing message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outgoing {
    /// The sender (`From`).
    pub from: Address,
    /// The recipients (`To`).
    pub to: Vec<Address>,
    /// The copy recipients (`Cc`).
    pub cc: Vec<Address>,
    /// Where replies should go (`Reply-To`), if not to `from`.
    pub reply_to: Option<Address>,
    /// The subject, any text.
    pub subject: String,
    /// The plain-text body (`\n` or `\r\n` line breaks).
    pub text: String,
    /// An HTML version of the body, sent as a `multipart/alternative` with the text.
    pub html: Option<String>,
    /// Files to attach.
    pub attachments: Vec<OutgoingAttachment>,
    /// The Message-ID this message answers, with or without angle brackets.
    pub in_reply_to: Option<String>,
    /// The Message-IDs of the thread, oldest first, with or without angle brackets.
    pub references: Vec<String>,
    /// Whether the message is an automatic one (an acknowledgement, an auto-reply): it then
    /// says `Auto-Submitted: auto-replied` and `X-Auto-Response-Suppress: All`, so that
    /// other robots do not answer it.
    pub automatic: bool,
    /// When it was written, in Unix seconds (the `Date` header, in UTC).
    pub date_unix: i64,
    /// The domain part of the Message-ID, e.g. the helpdesk's domain.
    pub message_id_domain: String,
    /// The unique local part of the Message-ID, chosen by the caller (e.g. a ticket and
    /// message number or a random token).
    pub message_id_local: String,
}

/// Builds the message: returns its Message-ID (without angle brackets, as
/// [`email_parse::Parsed::message_id`] has it) and its bytes, ready for SMTP DATA.
///
/// Fails when an address, a Message-ID part or a thread id cannot be written in a header
/// (line breaks, angle brackets, spaces, no `@`).
pub fn compose(msg: &Outgoing) -> Result<(String, Vec<u8>), String> {
    let local = &msg.message_id_local;
    let domain = &msg.message_id_domain;
    check_id_part("Message-ID local part", local)?;
    check_id_part("Message-ID domain", domain)?;
    let message_id = format!("{local}@{domain}");

    let mut head = String::new();
    head.push_str(&format!("Date: {}\r\n", rfc5322_date(msg.date_unix)));
    head.push_str(&address_header("From", std::slice::from_ref(&msg.from))?);
    if msg.to.is_empty() && msg.cc.is_empty() {
        return Err("the message has no recipient (To and Cc are empty)".to_owned());
    }
    if !msg.to.is_empty() {
        head.push_str(&address_header("To", &msg.to)?);
    }
    if !msg.cc.is_empty() {
        head.push_str(&address_header("Cc", &msg.cc)?);
    }
    if let Some(reply_to) = &msg.reply_to {
        head.push_str(&address_header("Reply-To", std::slice::from_ref(reply_to))?);
    }
    head.push_str(&subject_header(&msg.subject));
    head.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    if let Some(id) = &msg.in_reply_to {
        head.push_str(&format!("In-Reply-To: <{}>\r\n", thread_id(id)?));
    }
    if !msg.references.is_empty() {
        let ids =
            msg.references.iter().map(|r| thread_id(r).map(|id| format!("<{id}>"))).collect::<Result<Vec<_>, _>>()?;
        head.push_str(&fold(&format!("References: {}", ids.join(" "))));
    }
    if msg.automatic {
        head.push_str("Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n");
    }
    head.push_str("MIME-Version: 1.0\r\n");

    // Boundaries derived from the Message-ID: the same message always gets the same bytes.
    let seed = fnv1a64(message_id.as_bytes());
    let text_part = Part {
        headers: "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
            .to_owned(),
        body: quoted_printable_encode(&msg.text),
    };
    let mut body_part = text_part;
    if let Some(html) = &msg.html {
        let html_part = Part {
            headers: "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
                .to_owned(),
            body: quoted_printable_encode(html),
        };
        body_part = multipart("alternative", vec![body_part, html_part], seed, 1);
    }
    let top = if msg.attachments.is_empty() {
        body_part
    } else {
        let mut parts = vec![body_part];
        for a in &msg.attachments {
            parts.push(attachment_part(a));
        }
        multipart("mixed", parts, seed, 2)
    };
    head.push_str(&top.headers);
    head.push_str("\r\n");
    head.push_str(&top.body);
    Ok((message_id, head.into_bytes()))
}

/// A MIME part: its header lines (each ending in CRLF) and its encoded body.
struct Part {
    headers: String,
    body: String,
}

/// Wraps parts in a multipart of the given subtype, with a boundary found in none of them.
fn multipart(subtype: &str, parts: Vec<Part>, seed: u64, salt: u64) -> Part {
    let mut n = salt;
    let boundary = loop {
        let candidate = format!("=_plugdesk_{:016x}_{n}", seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        if !parts.iter().any(|p| p.body.contains(&candidate) || p.headers.contains(&candidate)) {
            break candidate;
        }
        n += 16;
    };
    let mut body = String::new();
    for part in parts {
        let _ = write!(body, "--{boundary}\r\n{}\r\n{}", part.headers, part.body);
        if !part.body.ends_with("\r\n") && !part.body.is_empty() {
            body.push_str("\r\n");
        }
    }
    let _ = write!(body, "--{boundary}--\r\n");
    Part { headers: format!("Content-Type: multipart/{subtype};\r\n boundary=\"{boundary}\"\r\n"), body }
}

fn attachment_part(a: &OutgoingAttachment) -> Part {
    let content_type = sanitize_content_type(&a.content_type);
    let filename: String = a.filename.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
    let mut headers = String::new();
    if filename.is_ascii() && filename.len() <= 200 {
        let quoted = quote_string(&filename);
        headers.push_str(&format!("Content-Type: {content_type};\r\n name={quoted}\r\n"));
        headers.push_str(&format!("Content-Disposition: attachment;\r\n filename={quoted}\r\n"));
    } else {
        // RFC 2231 (with continuations when long) for the disposition, which readers prefer,
        // and RFC 2047 in `name` for old ones.
        let words = encode_words(&filename).join(" ");
        if words.len() <= 70 {
            headers.push_str(&format!("Content-Type: {content_type};\r\n name=\"{words}\"\r\n"));
        } else {
            headers.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        let encoded = percent_encode(&filename);
        let segments = split_percent(&encoded, 50);
        headers.push_str("Content-Disposition: attachment");
        if segments.len() == 1 {
            let _ = write!(headers, ";\r\n filename*=utf-8''{encoded}");
        } else {
            for (i, seg) in segments.iter().enumerate() {
                let prefix = if i == 0 { "utf-8''" } else { "" };
                let _ = write!(headers, ";\r\n filename*{i}*={prefix}{seg}");
            }
        }
        headers.push_str("\r\n");
    }
    headers.push_str("Content-Transfer-Encoding: base64\r\n");
    Part { headers, body: base64_lines(&a.data) }
}

/// `type/subtype` lowercased, or `application/octet-stream` when it is not one.
fn sanitize_content_type(ct: &str) -> String {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    match ct.trim().split_once('/') {
        Some((t, s)) if token(t) && token(s) => ct.trim().to_ascii_lowercase(),
        _ => "application/octet-stream".to_owned(),
    }
}

/// RFC 2231 value encoding: attribute characters as they are, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Cuts a percent-encoded string into pieces of at most `max` characters, never inside `%XX`.
fn split_percent(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut cut = max;
        // Step back if the cut would fall inside a %XX escape.
        for back in 1..=2 {
            if rest.as_bytes().get(cut - back) == Some(&b'%') {
                cut -= back;
                break;
            }
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// Rejects a Message-ID part that would break the header.
fn check_id_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 200
        || s.chars().any(|c| c.is_control() || c.is_whitespace() || "<>@\"\\,;".contains(c))
    {
        return Err(format!("{what} {s:?} is empty, too long or holds a space, control character or one of <>@\",;\\"));
    }
    Ok(())
}

/// A thread id as given (with or without angle brackets), checked, without brackets.
fn thread_id(id: &str) -> Result<String, String> {
    let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
    if bare.is_empty()
        || bare.len() > 900
        || bare.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(format!("message id {id:?} cannot be written in a header"));
    }
    Ok(bare.to_owned())
}

/// Folds a header line (without its CRLF) before spaces so that lines keep to 78 characters
/// where a space allows; returns it with CRLF. Unfolding gives the line back exactly.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    let mut first = true;
    while rest.len() > 78 {
        // The last space at or before column 78 (and not at the very start), else the first after.
        let min = if first { rest.find(':').map_or(1, |c| c + 2) } else { 1 };
        let window = &rest.as_bytes()[..=78.min(rest.len() - 1)];
        let cut = window
            .iter()
            .rposition(|&b| b == b' ')
            .filter(|&i| i >= min)
            .or_else(|| rest.as_bytes().iter().skip(79).position(|&b| b == b' ').map(|i| i + 79));
        let Some(cut) = cut else { break };
        out.push_str(&rest[..cut]);
        out.push_str("\r\n");
        rest = &rest[cut..];
        first = false;
    }
    out.push_str(rest);
    out.push_str("\r\n");
    out
}

/// RFC 2047 encoded words (UTF-8, B encoding) for `text`, each of at most 39 bytes of text
/// (64 characters, so that one fits on a line after a header name) and holding whole characters.
fn encode_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 39 {
            words.push(format!("=?UTF-8?B?{}?=", base64_encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64_encode(chunk.as_bytes())));
    }
    words
}

/// The `Subject` header: as it is when it is plain ASCII that reads back the same, else
/// encoded words; folded.
fn subject_header(subject: &str) -> String {
    let plain = subject.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !subject.contains("=?")
        && subject.trim() == subject
        && !subject.contains("  ")
        && subject.split(' ').all(|w| w.len() < 900);
    if plain {
        fold(&format!("Subject: {subject}"))
    } else {
        fold(&format!("Subject: {}", encode_words(subject).join(" ")))
    }
}

/// A quoted string with `"` and `\` escaped (RFC 5322 display names, IMAP strings).
pub(crate) fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A display name as a phrase: atoms as they are, a quoted string when it has specials,
/// encoded words when it is not ASCII.
fn display_name(name: &str) -> String {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~ ".contains(c);
    let printable = name.chars().all(|c| (' '..='~').contains(&c));
    if printable && name.len() < 200 && !name.contains("=?") {
        if name.chars().all(atext) && name.trim() == name && !name.contains("  ") {
            name.to_owned()
        } else {
            quote_string(name)
        }
    } else {
        encode_words(name).join(" ")
    }
}

/// An address header (`From`, `To`, …), folded.
fn address_header(field: &str, addresses: &[Address]) -> Result<String, String> {
    let mut items = Vec::new();
    for a in addresses {
        let email = a.email.trim();
        if !email.contains('@')
            || email.len() > 254
            || email.chars().any(|c| c.is_control() || c.is_whitespace() || "<>(),;:\"[]\\".contains(c))
        {
            return Err(format!("{field}: {email:?} is not an address that can be sent"));
        }
        match a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => items.push(format!("{} <{email}>", display_name(name))),
            None => items.push(email.to_owned()),
        }
    }
    Ok(fold(&format!("{field}: {}", items.join(", "))))
}

/// A Unix time as an RFC 5322 date in UTC, e.g. `Thu, 01 Jan 1970 00:00:00 +0000`.
///
/// A time beyond chrono's range (some 262,000 years from now) is a clock gone wrong; it is
/// written as the epoch rather than failing the message.
pub fn rfc5322_date(unix: i64) -> String {
    // `format`, not `to_rfc2822`: that one panics on years outside 0..=9999.
    DateTime::from_timestamp(unix, 0).unwrap_or_default().format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

#[cfg(test)]
mod tests;
