//! Mail no person wrote: auto-replies, bulk mail, mailing lists, and bounces.

use crate::address::{message_id, parse_list};
use crate::charset::Detection;
use crate::header;
use crate::model::{Header, Limits, Parsed, Problems};
use crate::params;

/// Tells whether a message was sent automatically, and why: a helpdesk must not answer those
/// (mail loops) and may file them differently. Returns the first reason found:
///
/// - `Auto-Submitted` other than `no` (RFC 3834);
/// - `Precedence: bulk`, `junk`, `list` or `auto_reply`;
/// - `X-Auto-Response-Suppress` (set by Exchange on its automatic mail);
/// - `X-Autoreply` or `X-Autorespond`;
/// - `List-Id` or `List-Unsubscribe`: a mailing list or newsletter;
/// - an empty `Return-Path: <>` (bounces and other notices, RFC 5321);
/// - a `From`, `Sender` or `Return-Path` of `MAILER-DAEMON`, `postmaster` or a no-reply address.
pub fn is_automatic(parsed: &Parsed) -> Option<String> {
    for value in parsed.headers_all("Auto-Submitted") {
        let token = value.split([';', '(']).next().unwrap_or("").trim();
        if !token.is_empty() && !token.eq_ignore_ascii_case("no") {
            return Some(format!("Auto-Submitted: {value}"));
        }
    }
    for value in parsed.headers_all("Precedence") {
        let token = value.split([';', '(']).next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(token.as_str(), "bulk" | "junk" | "list" | "auto_reply" | "auto-reply") {
            return Some(format!("Precedence: {value}"));
        }
    }
    if let Some(value) = parsed.header("X-Auto-Response-Suppress").filter(|v| !v.is_empty()) {
        return Some(format!("X-Auto-Response-Suppress: {value}"));
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if let Some(value) = parsed.header(name) {
            let v = value.trim().to_ascii_lowercase();
            if !matches!(v.as_str(), "no" | "false" | "0") {
                return Some(format!("{name}: {value}"));
            }
        }
    }
    if let Some(value) = parsed.header("List-Id") {
        return Some(format!("mailing list (List-Id: {value})"));
    }
    if parsed.header("List-Unsubscribe").is_some() {
        return Some("mailing list (List-Unsubscribe)".to_owned());
    }
    if parsed.headers_all("Return-Path").any(|v| v.trim().trim_matches(['<', '>']).trim().is_empty()) {
        return Some("empty Return-Path: a bounce or an automatic notice".to_owned());
    }
    for name in ["From", "Sender", "Return-Path"] {
        let addresses = match name {
            "From" => parsed.from.clone(),
            // Only the addresses count: no charset detection for the names.
            _ => parsed.headers_all(name).flat_map(|v| parse_list(v, &mut |_| {}, &mut Detection::none())).collect(),
        };
        if let Some(a) = addresses.iter().find(|a| automatic_sender(&a.email)) {
            return Some(format!("automatic sender in {name}: {}", a.email));
        }
    }
    None
}

/// `MAILER-DAEMON`, `postmaster`, `noreply`, `no-reply`, `do-not-reply` and the like.
fn automatic_sender(email: &str) -> bool {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l).to_ascii_lowercase();
    let local = local.split('+').next().unwrap_or("");
    matches!(local, "mailer-daemon" | "mailerdaemon" | "postmaster")
        || ["noreply", "no-reply", "no_reply", "no.reply", "donotreply", "do-not-reply", "do_not_reply", "do.not.reply"]
            .iter()
            .any(|p| local.contains(p))
}

/// What a delivery status notification (a bounce) says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bounce {
    /// The `Message-ID` of the message that could not be delivered, from the returned copy or
    /// its headers, without angle brackets.
    pub original_message_id: Option<String>,
    /// The recipient it failed for (`Final-Recipient`, else `Original-Recipient`), without the
    /// address type.
    pub recipient: Option<String>,
    /// The `Action`: `failed`, `delayed`, `delivered`, `relayed` or `expanded`, lowercased.
    pub action: Option<String>,
    /// The `Status` code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The `Diagnostic-Code` text, without its type, e.g. `550 5.1.1 User unknown`.
    pub diagnostic: Option<String>,
}

/// Reads a delivery status notification (RFC 3464: a `multipart/report` with
/// `report-type=delivery-status`): the per-recipient fields of its `message/delivery-status`
/// part — for the first recipient whose action is `failed`, else the first one — and the
/// `Message-ID` of the returned message (`message/rfc822` or `text/rfc822-headers`). `None`
/// for anything else, including other reports (read receipts).
pub fn bounce(parsed: &Parsed) -> Option<Bounce> {
    if let Some(ct) = parsed.header("Content-Type").map(params::parse)
        && ct.value == "multipart/report"
        && let Some(kind) = ct.param("report-type")
        && !kind.eq_ignore_ascii_case("delivery-status")
        && !kind.eq_ignore_ascii_case("global-delivery-status")
    {
        return None;
    }
    let report = parsed
        .attachments
        .iter()
        .find(|a| a.content_type == "message/delivery-status" || a.content_type == "message/global-delivery-status")?;
    let blocks = field_blocks(&report.data);
    let recipients = blocks.get(1..).unwrap_or(&[]);
    let failed = |b: &&Vec<Header>| header::get(b, "action").is_some_and(|a| a.trim().eq_ignore_ascii_case("failed"));
    let chosen = recipients.iter().find(failed).or_else(|| recipients.first());
    let mut out = Bounce::default();
    if let Some(fields) = chosen {
        out.recipient = header::get(fields, "final-recipient")
            .or_else(|| header::get(fields, "original-recipient"))
            .map(without_type)
            .map(|r| r.trim_matches(['<', '>']).to_owned())
            .filter(|r| !r.is_empty());
        out.action = header::get(fields, "action").map(|a| a.trim().to_ascii_lowercase()).filter(|a| !a.is_empty());
        out.status = header::get(fields, "status").and_then(|s| s.split_whitespace().next()).map(str::to_owned);
        out.diagnostic = header::get(fields, "diagnostic-code")
            .map(|d| without_type(d).split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|d| !d.is_empty());
    }
    out.original_message_id = parsed
        .attachments
        .iter()
        .filter(|a| {
            matches!(
                a.content_type.as_str(),
                "message/rfc822" | "text/rfc822-headers" | "message/global" | "message/global-headers"
            )
        })
        .find_map(|a| {
            let mut ignored = Problems::default();
            let head = header::read(&a.data, &Limits::default(), &mut ignored, "");
            header::get(&head.headers, "message-id").and_then(message_id)
        });
    Some(out)
}

/// `rfc822; anna@x.de` → `anna@x.de`; `smtp; 550 …` → `550 …`.
fn without_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((_, rest)) => rest.trim(),
        None => value.trim(),
    }
}

/// The blocks of fields of a delivery-status body: the per-message block, then one per recipient.
fn field_blocks(data: &[u8]) -> Vec<Vec<Header>> {
    let limits = Limits::default();
    let mut blocks = Vec::new();
    let mut pos = 0;
    while pos < data.len() && blocks.len() < 100 {
        while data[pos..].starts_with(b"\r\n") || data[pos..].starts_with(b"\n") {
            pos += if data[pos] == b'\r' { 2 } else { 1 };
        }
        let mut ignored = Problems::default();
        let section = header::read(&data[pos..], &limits, &mut ignored, "");
        if section.body_start == 0 {
            break;
        }
        if !section.headers.is_empty() {
            blocks.push(section.headers);
        }
        pos += section.body_start;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn auto(raw: &str) -> Option<String> {
        is_automatic(&parse(raw.as_bytes(), &Limits::default()))
    }

    #[test]
    fn automatic_headers() {
        assert_eq!(auto("Auto-Submitted: auto-replied\n\nx").as_deref(), Some("Auto-Submitted: auto-replied"));
        assert_eq!(auto("Auto-Submitted: no\n\nx"), None);
        assert_eq!(auto("Auto-Submitted: No (person)\n\nx"), None);
        assert_eq!(auto("Precedence: Bulk\n\nx").as_deref(), Some("Precedence: Bulk"));
        assert_eq!(auto("Precedence: first-class\n\nx"), None);
        assert_eq!(auto("X-Auto-Response-Suppress: All\n\nx").as_deref(), Some("X-Auto-Response-Suppress: All"));
        assert_eq!(auto("X-Autoreply: yes\n\nx").as_deref(), Some("X-Autoreply: yes"));
        assert_eq!(auto("X-Autorespond: Urlaub\n\nx").as_deref(), Some("X-Autorespond: Urlaub"));
        assert_eq!(auto("List-Id: News <news.x.de>\n\nx").as_deref(), Some("mailing list (List-Id: News <news.x.de>)"));
        assert_eq!(auto("List-Unsubscribe: <mailto:u@x.de>\n\nx").as_deref(), Some("mailing list (List-Unsubscribe)"));
        assert_eq!(auto("Return-Path: <>\n\nx").as_deref(), Some("empty Return-Path: a bounce or an automatic notice"));
    }

    #[test]
    fn automatic_senders() {
        assert_eq!(
            auto("From: Mail Delivery System <MAILER-DAEMON@mx.x.de>\n\nx").as_deref(),
            Some("automatic sender in From: MAILER-DAEMON@mx.x.de")
        );
        assert!(auto("From: Shop <no-reply@shop.de>\n\nx").is_some());
        assert!(auto("From: Shop <donotreply+123@shop.de>\n\nx").is_some());
        assert!(auto("Sender: postmaster@x.de\nFrom: a@x.de\n\nx").is_some());
        assert!(auto("Return-Path: <noreply@x.de>\nFrom: a@x.de\n\nx").is_some());
        assert_eq!(auto("From: Anna <anna@x.de>\nReturn-Path: <anna@x.de>\n\nHallo"), None);
        assert_eq!(auto("From: Reply Team <reply@x.de>\n\nx"), None);
    }

    #[test]
    fn bounce_needs_a_delivery_report() {
        let not = parse(b"Content-Type: text/plain\n\nx", &Limits::default());
        assert_eq!(bounce(&not), None);
        let receipt = "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n\n\
                       --b\n\nread\n--b\nContent-Type: message/delivery-status\n\nAction: failed\n--b--\n";
        assert_eq!(bounce(&parse(receipt.as_bytes(), &Limits::default())), None);
    }

    #[test]
    fn bounce_fields() {
        let raw = "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n\
                   --b\n\nUndeliverable.\n\
                   --b\nContent-Type: message/delivery-status\n\n\
                   Reporting-MTA: dns; mx.x.de\n\n\
                   Final-Recipient: rfc822; ok@y.de\nAction: delivered\nStatus: 2.0.0\n\n\
                   Original-Recipient: rfc822;<gone@y.de>\nAction: Failed\nStatus: 5.1.1 (bad mailbox)\n\
                   Diagnostic-Code: smtp; 550 5.1.1 <gone@y.de>:\n  user unknown\n\
                   --b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <orig@x.de>\nSubject: Hi\n\
                   --b--\n";
        let b = bounce(&parse(raw.as_bytes(), &Limits::default()));
        assert_eq!(
            b,
            Some(Bounce {
                original_message_id: Some("orig@x.de".into()),
                recipient: Some("gone@y.de".into()),
                action: Some("failed".into()),
                status: Some("5.1.1".into()),
                diagnostic: Some("550 5.1.1 <gone@y.de>: user unknown".into()),
            })
        );
    }
}
