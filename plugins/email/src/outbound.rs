//! Replies going out: the message composed from the host's outbound message (subject tag,
//! deterministic Message-ID, threading headers), the loop protection for automatic mail, and
//! the SMTP submission with its errors sorted into retryable and permanent.

use plugdesk_sdk::{OutboundMessage, SendError};

use crate::Transport;
use crate::compose::{Address, Outgoing, OutgoingAttachment, compose};
use crate::inbound::OWN_ID_PREFIX;
use crate::settings::{Security, Settings, SmtpSettings};
use crate::smtp::{SmtpClient, SmtpConfig, SmtpError};
use crate::thread::{normalize_id, ticket_tag};

/// How long one SMTP read may wait, in milliseconds: below the host's time budget for a `send`
/// call (30 s by default), so that a silent server ends in an error the channel can name
/// rather than in the host cutting the call off.
pub const SMTP_TIMEOUT_MS: u32 = 25_000;

/// The window of the loop protection, in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// The most `References` written: the first (the thread's root) and the latest ones.
const MAX_REFERENCES: usize = 20;

/// The subject of a reply: the ticket's tag `[#N]` in front when the subject has no tag yet
/// (after a leading `Re:`/`AW:`), and `Re: ` in front of a reply unless it starts with
/// `Re:`, `RE:` or `AW:` already. An empty subject is the tag alone. Ticket number 0 (a notice
/// about no ticket) leaves the subject as it is.
pub fn reply_subject(subject: Option<&str>, ticket_number: u64, is_reply: bool) -> String {
    let tag = format!("[#{ticket_number}]");
    let subject = subject.map(str::trim).unwrap_or("");
    // Number 0: a notice about no ticket (an agent's invitation) keeps its subject as it is.
    if ticket_number == 0 {
        return subject.to_owned();
    }
    if subject.is_empty() {
        return tag;
    }
    let (prefix, rest) = match split_reply_prefix(subject) {
        Some((prefix, rest)) => (Some(prefix), rest),
        None => (is_reply.then_some("Re:"), subject),
    };
    let rest = match (ticket_tag(subject), rest.is_empty()) {
        (Some(_), _) => rest.to_owned(),
        (None, true) => tag,
        (None, false) => format!("{tag} {rest}"),
    };
    match prefix {
        Some(prefix) => format!("{prefix} {rest}"),
        None => rest,
    }
}

/// A leading `Re:` / `AW:` (any case) and the rest after it.
fn split_reply_prefix(subject: &str) -> Option<(&str, &str)> {
    let head = subject.get(..3)?;
    (head.eq_ignore_ascii_case("re:") || head.eq_ignore_ascii_case("aw:")).then(|| (head, subject[3..].trim_start()))
}

/// The local part of a reply's Message-ID: `plugdesk.{ticket}.{message id}`, the same on every
/// retry so that receivers drop a duplicate. Characters a Message-ID cannot hold are written as
/// `=XX` (and `=` itself), so that distinct ids stay distinct.
pub fn message_id_local(ticket_number: u64, message_id: &str) -> String {
    let mut out = format!("{OWN_ID_PREFIX}{ticket_number}.");
    for b in message_id.bytes() {
        if b.is_ascii_alphanumeric() || b"._-+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// An external id usable as a Message-ID in `In-Reply-To`/`References`: another channel's id
/// (a webform's, a chat's) is not one and is left out.
fn mail_id(id: &str) -> Option<String> {
    let id = normalize_id(id)?;
    let (local, domain) = id.rsplit_once('@')?;
    let fits = !local.is_empty()
        && !domain.is_empty()
        && id.len() <= 900
        && !id.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    fits.then_some(id)
}

/// The message to send for `message` to `recipient`, written at `now_ms`.
///
/// # Errors
/// [`SendError::Permanent`] when it cannot be written (an address or id that a header cannot hold).
pub fn compose_reply(
    message: &OutboundMessage,
    recipient: &str,
    settings: &Settings,
    now_ms: i64,
) -> Result<(String, Vec<u8>), SendError> {
    let mut references: Vec<String> = message.references.iter().filter_map(|r| mail_id(r)).collect();
    references.dedup();
    if references.len() > MAX_REFERENCES {
        let first = references[0].clone();
        references.drain(..references.len() - (MAX_REFERENCES - 1));
        references.insert(0, first);
    }
    let outgoing = Outgoing {
        from: Address { name: settings.from_name.clone(), email: settings.address.clone() },
        to: vec![Address { name: message.recipient_name.clone(), email: recipient.to_owned() }],
        cc: vec![],
        reply_to: settings.reply_to.clone().map(|email| Address { name: settings.from_name.clone(), email }),
        subject: reply_subject(message.subject.as_deref(), message.ticket_number, message.in_reply_to.is_some()),
        text: message.text.clone(),
        html: message.html.clone(),
        attachments: message
            .attachments
            .iter()
            .map(|a| OutgoingAttachment {
                filename: a.filename.clone(),
                content_type: a.content_type.clone(),
                data: a.data.clone(),
            })
            .collect(),
        in_reply_to: message.in_reply_to.as_deref().and_then(mail_id),
        references,
        automatic: message.automatic,
        date_unix: now_ms.div_euclid(1000),
        message_id_domain: settings.message_id_domain.clone(),
        message_id_local: message_id_local(message.ticket_number, &message.id),
    };
    let (id, bytes) = compose(&outgoing)
        .map_err(|e| SendError::Permanent(format!("the reply cannot be written as an e-mail: {e}")))?;
    Ok((normalize_id(&id).unwrap_or(id), bytes))
}

/// The loop protection's verdict for one more automatic mail to a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopCheck {
    /// The send times within the last hour, oldest first (what to keep).
    pub recent: Vec<i64>,
    /// Whether one more automatic mail is allowed.
    pub allowed: bool,
}

/// Decides whether one more automatic mail may go to a recipient that got automatic mail at
/// `times` (Unix ms), at `now_ms`, when at most `limit` may go per hour.
pub fn loop_check(times: &[i64], now_ms: i64, limit: u32) -> LoopCheck {
    let mut recent: Vec<i64> = times.iter().copied().filter(|&t| now_ms - t < HOUR_MS).collect();
    recent.sort_unstable();
    let allowed = recent.len() < limit as usize;
    LoopCheck { recent, allowed }
}

/// How many key-value entries the loop protection spreads recipients over: a fixed number,
/// so that the channel's store (at most 1,024 keys) never fills up with recipients.
pub const LOOP_BUCKETS: u64 = 128;

/// A bucket of recipients' automatic send times: address (lowercased) → times (Unix ms).
pub type LoopBucket = std::collections::BTreeMap<String, Vec<i64>>;

/// The recipient's address as the loop protection counts it (trimmed, lowercased).
pub fn loop_address(recipient: &str) -> String {
    recipient.trim().to_lowercase()
}

/// The key-value key of the bucket holding a recipient's automatic send times
/// (`auto:NN`, by a hash of the address).
pub fn loop_key(recipient: &str) -> String {
    format!("auto:{:02x}", crate::codec::fnv1a64(loop_address(recipient).as_bytes()) % LOOP_BUCKETS)
}

/// Reads a stored bucket; anything unreadable counts as empty.
pub fn decode_bucket(stored: Option<&[u8]>) -> LoopBucket {
    stored.and_then(|bytes| serde_json::from_slice(bytes).ok()).unwrap_or_default()
}

/// The bucket to store after one more automatic mail to `recipient` at `now_ms`: every entry
/// pruned to the last hour (recipients with none left are dropped), so a bucket stays small.
pub fn record_send(mut bucket: LoopBucket, recipient: &str, now_ms: i64) -> Vec<u8> {
    bucket.entry(loop_address(recipient)).or_default().push(now_ms);
    bucket.retain(|_, times| {
        times.retain(|&t| now_ms - t < HOUR_MS);
        !times.is_empty()
    });
    serde_json::to_vec(&bucket).unwrap_or_default()
}

/// The refusal of the loop protection.
pub fn loop_refusal(count: usize, recipient: &str, limit: u32) -> SendError {
    SendError::Permanent(format!(
        "loop protection: {count} automatic mails to {recipient} in the last hour (limit {limit})"
    ))
}

/// Submits `message` from the support address to `recipient` over SMTP: connect (TLS as
/// `smtp_security` says), EHLO with the Message-ID domain, STARTTLS when configured, AUTH
/// LOGIN with the secret `smtp_password` when `smtp_user` is set, MAIL FROM, RCPT TO, DATA.
/// `connect(tls)` opens the connection.
///
/// # Errors
/// [`SendError::Retryable`] for 4xx replies, timeouts and connection failures,
/// [`SendError::Permanent`] for 5xx replies and what the server lacks; each names the server
/// and what it said.
pub fn submit<T: Transport>(
    smtp: &SmtpSettings,
    settings: &Settings,
    connect: impl FnOnce(bool) -> Result<T, String>,
    recipient: &str,
    message: &[u8],
) -> Result<(), SendError> {
    let server = format!("smtp {}:{}", smtp.host, smtp.port);
    let fail = |e: SmtpError| {
        let text = format!("{server}: {e}");
        if e.is_retryable() { SendError::Retryable(text) } else { SendError::Permanent(text) }
    };
    let transport = connect(smtp.security == Security::Tls)
        .map_err(|e| SendError::Retryable(format!("{server}: cannot connect: {e}")))?;
    let config = SmtpConfig { timeout_ms: SMTP_TIMEOUT_MS, ..SmtpConfig::default() };
    let mut client = SmtpClient::connect(transport, config).map_err(fail)?;
    client.ehlo(&settings.message_id_domain).map_err(fail)?;
    if smtp.security == Security::StartTls {
        client.starttls().map_err(fail)?;
    }
    if let Some(user) = &smtp.user {
        client.authenticate(user, "smtp_password").map_err(fail)?;
    }
    client.send(&settings.address, &[recipient.to_owned()], message).map_err(fail)?;
    // The message is accepted: a failing QUIT must not make the host send it again.
    let _ = client.quit();
    Ok(())
}

#[cfg(test)]
mod tests;
