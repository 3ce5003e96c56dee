//! Turning a message's source into the message the host stores: one conversion for mail
//! fetched over IMAP and mail piped in by the mail server.

use email_parse::{Limits, Parsed, bounce, is_automatic, parse, split_quoted};
// The SDK does not re-export the record yet; it is the WIT type all the same.
use plugdesk_sdk::DeliveryFailure;
use plugdesk_sdk::{Attachment, InboundMessage};

use crate::Level;
use crate::codec::fnv1a64;
use crate::settings::Settings;
use crate::thread::{normalize_id, thread_keys, ticket_tag};

/// The longest text (and quoted text) handed over, in bytes: the core refuses bodies over its
/// `max_message_bytes` (1 MiB by default) and the message would be lost to the ticket; the
/// notes the channel adds fit in the rest.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024 - 8 * 1024;

/// The longest subject handed over, in characters (the core's `max_subject_chars` default).
pub const MAX_SUBJECT_CHARS: usize = 500;

/// The local part of every Message-ID the channel writes starts with this.
pub const OWN_ID_PREFIX: &str = "plugdesk.";

/// The domain of ids made up for mail without a Message-ID.
const NO_ID_DOMAIN: &str = "no-message-id.plugdesk";

/// The most one call hands the host, in bytes (raw, texts and attachments counted as the host
/// counts them): the host refuses a call's output over 24 MiB by default, and a refused poll
/// would be tried again, and refused, at every poll.
pub const OUTPUT_BUDGET: usize = 20 * 1024 * 1024;

const MIB: usize = 1024 * 1024;

/// What a message's source becomes.
#[derive(Debug, Clone)]
pub enum Converted {
    /// A message for the host.
    Message(Box<InboundMessage>),
    /// Nothing: the message is not for the host, and why.
    Skipped(Skip),
}

/// Why a message is not handed to the host. Only one reason is left: every other message
/// becomes a ticket, a message on one or a note, so no mail is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The channel sent it (its Message-ID is one of ours): a copy in the mailbox, or a loop.
    /// It is stored already, as the reply it is.
    OwnMessage,
}

impl Skip {
    /// The reason in a few words, as the pipe's answer gives it.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::OwnMessage => "own message",
        }
    }
}

/// The address given to a message in which no sender address can be found. The `.invalid`
/// top-level domain is reserved for addresses that cannot work (RFC 2606): the host files such
/// a message under one "Unknown sender" customer, flags the ticket `unknown-sender` for an
/// agent and never answers it automatically.
pub const UNKNOWN_SENDER: &str = "unknown-sender@unknown.invalid";

/// The display name of [`UNKNOWN_SENDER`].
pub const UNKNOWN_SENDER_NAME: &str = "Unknown sender";

/// Converts a whole message (`raw`: its source as it arrived). `envelope` is the envelope
/// sender the mail server handed over with a piped message (`plugdesk mail-in --sender`), the
/// last place the sender is looked for (see [`sender`]).
///
/// The external id is the normalised Message-ID (a made-up stable one from a hash of the bytes
/// when there is none); the conversation is the thread's root; `text` is the new part of the
/// reply and `quoted` the history and signature below it. Attachments over the channel's limit
/// are left out with a note in the text, and then, or when the source is over its limit, the
/// source is not kept. A bounce about one of our messages carries a [`DeliveryFailure`].
/// Problems reading the message are logged; what could be read is kept.
pub fn convert(
    raw: Vec<u8>,
    envelope: Option<&str>,
    settings: &Settings,
    log: &mut dyn FnMut(Level, &str),
) -> Converted {
    let parsed = parse(&raw, &parse_limits());
    build(parsed, Source::Whole(raw), envelope, settings, log)
}

/// Converts a message too large to fetch from its header section alone: the message names its
/// sender and subject and says it was not imported.
pub fn convert_too_large(
    header: Vec<u8>,
    size: usize,
    limit: usize,
    settings: &Settings,
    log: &mut dyn FnMut(Level, &str),
) -> Converted {
    let parsed = parse(&header, &parse_limits());
    build(parsed, Source::HeaderOnly { header, size, limit }, None, settings, log)
}

/// The parser keeps every attachment: the channel decides itself which ones are too large, so
/// that it can name them in its note.
fn parse_limits() -> Limits {
    Limits { max_attachment_bytes: usize::MAX, ..Limits::default() }
}

/// What was read of a message.
enum Source {
    /// All of it.
    Whole(Vec<u8>),
    /// Only the header, as the message is `size` bytes, over the fetch `limit`.
    HeaderOnly { header: Vec<u8>, size: usize, limit: usize },
}

fn build(
    parsed: Parsed,
    source: Source,
    envelope: Option<&str>,
    settings: &Settings,
    log: &mut dyn FnMut(Level, &str),
) -> Converted {
    let bytes = match &source {
        Source::Whole(raw) => raw,
        Source::HeaderOnly { header, .. } => header,
    };
    let id = parsed
        .message_id
        .as_deref()
        .and_then(normalize_id)
        .unwrap_or_else(|| format!("{:016x}@{NO_ID_DOMAIN}", fnv1a64(bytes)));
    if is_own(&id, &settings.message_id_domain) {
        log(Level::Info, &format!("skipped message {id}: the channel sent it itself"));
        return Converted::Skipped(Skip::OwnMessage);
    }
    let mut notes: Vec<String> = Vec::new();
    let (address, name) = match sender(&parsed, envelope) {
        Some(found) => found,
        None => {
            let from = parsed.header("From").map(email_parse::decode_header).unwrap_or_default();
            let from = if from.trim().is_empty() { "none".to_owned() } else { format!("\"{}\"", from.trim()) };
            log(
                Level::Warn,
                &format!(
                    "message {id}: no sender address in From ({from}), Reply-To, Sender, Return-Path or the envelope; filed under \"{UNKNOWN_SENDER_NAME}\""
                ),
            );
            notes.push(format!(
                "[No sender address could be found in this message (From: {from}); it cannot be answered by e-mail.]"
            ));
            (UNKNOWN_SENDER.to_owned(), Some(UNKNOWN_SENDER_NAME.to_owned()))
        }
    };
    if !parsed.problems.is_empty() {
        let listed: Vec<String> = parsed.problems.iter().take(5).map(ToString::to_string).collect();
        let more = parsed.problems.len().saturating_sub(listed.len());
        let more = if more > 0 { format!("; and {more} more") } else { String::new() };
        // A charset recovered by detection or a header block read past a broken fold is
        // everyday mail from old mailers and gateways: read in full, worth a note, no warning.
        let recovered = parsed.problems.iter().all(|p| {
            matches!(p.kind, email_parse::ProblemKind::CharsetMismatch | email_parse::ProblemKind::MalformedHeader)
        });
        log(
            if recovered { Level::Info } else { Level::Warn },
            &format!("message {id}: problems reading it: {}{more}; imported what could be read", listed.join("; ")),
        );
    }

    let replies_to = thread_keys(&parsed);
    let root = parsed.references.first().or(parsed.in_reply_to.first()).and_then(|r| normalize_id(r));
    let report = bounce(&parsed);
    let delivery_failure = report.as_ref().and_then(|b| {
        let failed = b.action.as_deref().is_none_or(|a| a == "failed");
        let original = b.original_message_id.as_deref().and_then(normalize_id)?;
        failed.then(|| {
            let reason = [b.status.as_deref(), b.diagnostic.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            let reason = if reason.is_empty() { "delivery failed".to_owned() } else { reason.join(" ") };
            DeliveryFailure { external_id: original, recipient: b.recipient.clone(), reason }
        })
    });
    // Every delivery report is a machine's, whether it says failed, delayed or delivered.
    let automatic = report.is_some() || is_automatic(&parsed).is_some();

    let full = parsed.text.as_deref().unwrap_or("").trim();
    let split = split_quoted(full);
    // A message that is all quote (a forward, or text the splitter took for a quote) keeps its
    // whole text as the text: the new part must never come out empty when there is text.
    let (text, quoted) = if split.new_part.trim().is_empty() {
        (full.to_owned(), None)
    } else {
        let rest: Vec<String> = [split.signature, split.quoted].into_iter().flatten().collect();
        (split.new_part, Some(rest.join("\n\n")).filter(|r| !r.trim().is_empty()))
    };
    let mut text = cut(text, MAX_TEXT_BYTES, &mut notes, "The text");
    let quoted = quoted.map(|q| cut(q, MAX_TEXT_BYTES, &mut Vec::new(), ""));
    let html = match parsed.html {
        Some(html) if html.len() > MAX_TEXT_BYTES => {
            notes.push(format!("[The HTML version ({}) was too large and was left out.]", size_text(html.len())));
            None
        }
        other => other,
    };

    let mut attachments = Vec::new();
    let mut dropped_attachment = false;
    for (i, a) in parsed.attachments.into_iter().enumerate() {
        let filename = a.filename.clone().filter(|f| !f.trim().is_empty()).unwrap_or_else(|| fallback_name(i, &a));
        if a.data.len() > settings.max_attachment_bytes {
            notes.push(format!(
                "[Attachment \"{filename}\" ({}) was larger than the limit of {} and was not imported.]",
                size_text(a.data.len()),
                size_text(settings.max_attachment_bytes)
            ));
            dropped_attachment = true;
            continue;
        }
        attachments.push(Attachment { filename, content_type: a.content_type, data: a.data });
    }

    let raw = match source {
        Source::HeaderOnly { size, limit, .. } => {
            notes.push(format!(
                "[This message ({}) was larger than the limit of {} for fetching and was not imported; it is kept \
                 in the mailbox.]",
                size_text(size),
                size_text(limit)
            ));
            None
        }
        Source::Whole(_) if settings.max_raw_bytes == 0 => None,
        Source::Whole(raw) if dropped_attachment || raw.len() > settings.max_raw_bytes => {
            notes.push(format!("[The message source ({}) was too large to keep.]", size_text(raw.len())));
            None
        }
        Source::Whole(raw) => Some(raw),
    };

    append_notes(&mut text, notes);
    if text.trim().is_empty() && html.as_deref().is_none_or(|h| h.trim().is_empty()) {
        text = "[The message has no text.]".to_owned();
    }

    let subject = parsed.subject.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(|s| {
        if s.chars().count() > MAX_SUBJECT_CHARS {
            let mut cut: String = s.chars().take(MAX_SUBJECT_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            s.to_owned()
        }
    });
    let mut message = InboundMessage::new(id.clone(), "email", &address, text);
    message.conversation = Some(root.unwrap_or(id));
    message.sender_name = name;
    message.ticket_number = subject.as_deref().and_then(ticket_tag);
    message.subject = subject;
    message.quoted = quoted;
    message.html = html;
    message.attachments = attachments;
    message.automatic = automatic;
    message.replies_to = replies_to;
    message.raw = raw;
    message.delivery_failure = delivery_failure;
    fit(&mut message, OUTPUT_BUDGET);
    Converted::Message(Box::new(message))
}

/// What a message counts against the host's output cap: its texts, source and attachments.
pub fn output_size(m: &InboundMessage) -> usize {
    m.text.len()
        + m.html.as_ref().map_or(0, String::len)
        + m.quoted.as_ref().map_or(0, String::len)
        + m.raw.as_ref().map_or(0, Vec::len)
        + m.attachments.iter().map(|a| a.data.len()).sum::<usize>()
}

/// Makes a message fit into `budget` bytes of output: first its source goes, then its largest
/// attachments, each with a note in the text.
pub fn fit(m: &mut InboundMessage, budget: usize) {
    let mut notes = Vec::new();
    if output_size(m) > budget
        && let Some(raw) = m.raw.take()
    {
        notes.push(format!("[The message source ({}) was too large to keep.]", size_text(raw.len())));
    }
    while output_size(m) > budget {
        let Some((i, _)) = m.attachments.iter().enumerate().max_by_key(|(_, a)| a.data.len()) else { break };
        let a = m.attachments.remove(i);
        notes.push(format!(
            "[Attachment \"{}\" ({}) did not fit into the limit of {} for one message and was not imported.]",
            a.filename,
            size_text(a.data.len()),
            size_text(budget)
        ));
    }
    append_notes(&mut m.text, notes);
}

/// The most notes added to a text: a message of hundreds of parts must not outgrow the
/// host's text limit through its notes.
const MAX_NOTES: usize = 20;

/// Adds the channel's notes at the end of `text`, after a blank line, one per line.
fn append_notes(text: &mut String, mut notes: Vec<String>) {
    if notes.is_empty() {
        return;
    }
    if notes.len() > MAX_NOTES {
        let more = notes.len() - (MAX_NOTES - 1);
        notes.truncate(MAX_NOTES - 1);
        notes.push(format!("[{more} more notes like these were left out.]"));
    }
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(&notes.join("\n"));
}

/// Whether `id` is a Message-ID the channel wrote: `plugdesk.…@` its Message-ID domain.
pub fn is_own(id: &str, message_id_domain: &str) -> bool {
    id.rsplit_once('@').is_some_and(|(local, domain)| {
        local.starts_with(OWN_ID_PREFIX) && domain.eq_ignore_ascii_case(message_id_domain)
    })
}

/// Who sent the message, looked for as mail clients and helpdesks do: the first usable
/// address of `From`, then `Reply-To`, `Sender`, `Return-Path`, and last the envelope sender
/// the mail server handed over. The display name comes with the address it belongs to, or,
/// when `From` has a name but no usable address, from `From`. `None` when no address anywhere
/// is usable (the empty `Return-Path: <>` of a bounce is none).
fn sender(parsed: &Parsed, envelope: Option<&str>) -> Option<(String, Option<String>)> {
    let named =
        |a: &email_parse::Address| a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
    // A From of a name alone (`From: Anna Schmidt`) has no address for the parser to list.
    let from_name = parsed.from.iter().find_map(named).or_else(|| {
        let raw = email_parse::decode_header(parsed.header("From")?);
        let name = raw.trim().trim_matches('"').trim();
        (!name.is_empty() && !name.contains(['@', '<', '>', ':', ';'])).then(|| name.to_owned())
    });
    let listed = [&parsed.from, &parsed.reply_to]
        .into_iter()
        .flatten()
        .find_map(|a| usable(&a.email).map(|address| (address, named(a).or_else(|| from_name.clone()))));
    listed.or_else(|| {
        let header = |name| parsed.header(name).and_then(bare_address);
        header("Sender")
            .or_else(|| header("Return-Path"))
            .or_else(|| envelope.and_then(bare_address))
            .map(|address| (address, from_name.clone()))
    })
}

/// `address` normalised (`local@domain`, domain lowercased) when it can be a customer's, as the
/// core checks e-mail identities: one `@`, a dotted domain, no spaces or brackets.
fn usable(address: &str) -> Option<String> {
    let address = address.trim();
    let (local, domain) = address.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    ok.then(|| format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The address in a one-mailbox header value (`Sender`, `Return-Path`) or an envelope sender:
/// what is between the last `<` and `>`, else the word with an `@`.
fn bare_address(value: &str) -> Option<String> {
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split_whitespace().find(|w| w.contains('@')).unwrap_or(""),
    };
    // A source route (`<@relay:user@host>`) names the mailbox after the colon.
    let inner = inner.rsplit(':').next().unwrap_or(inner);
    usable(inner.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace()))
}

/// A name for an attachment that has none, after its type.
fn fallback_name(index: usize, a: &email_parse::Attachment) -> String {
    let ext = match a.content_type.as_str() {
        "message/rfc822" | "message/global" => "eml",
        "message/delivery-status" | "text/rfc822-headers" | "text/plain" => "txt",
        "text/html" => "html",
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        _ => "bin",
    };
    let kind = if a.inline && a.content_type.starts_with("image/") { "image" } else { "attachment" };
    format!("{kind}-{}.{ext}", index + 1)
}

/// `text` cut to at most `max` bytes on a character boundary, with a note when `what` names it.
fn cut(mut text: String, max: usize, notes: &mut Vec<String>, what: &str) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if !what.is_empty() {
            notes.push(format!("[{what} was longer than {} and was cut here.]", size_text(max)));
        }
        text.truncate(end);
    }
    text
}

/// A size for a person: `10 MB`, `2.5 MB` (MiB, one decimal when not whole), or `300 KB`
/// below a tenth of a MB.
fn size_text(bytes: usize) -> String {
    let bytes = bytes as u64;
    let tenths = (bytes * 10 + MIB as u64 / 2) / MIB as u64;
    if tenths == 0 {
        return format!("{} KB", bytes.div_ceil(1024));
    }
    if tenths.is_multiple_of(10) {
        format!("{} MB", tenths / 10)
    } else {
        format!("{}.{} MB", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests;
