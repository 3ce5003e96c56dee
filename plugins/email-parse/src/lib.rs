//! A tolerant parser for Internet mail (RFC 5322 and MIME), for Plugdesk's e-mail channel.
//!
//! [`parse`] never fails: whatever the bytes, it returns what could be read — headers, decoded
//! subject, addresses, message ids, date, the best plain-text body, the HTML body,
//! attachments — and a list of [`Problem`]s saying what could not be read and what was done
//! about it. Every input is treated as hostile: [`Limits`] bound the work and the output.
//!
//! Around it, the helpers a helpdesk needs to turn mail into tickets:
//! [`split_quoted`] separates the new part of a reply from the quoted history and the
//! signature; [`is_automatic`] tells auto-replies, bulk mail and mailing lists from mail a
//! person wrote; [`bounce`] reads delivery status notifications (RFC 3464).
//!
//! ```
//! let raw = b"From: =?UTF-8?Q?J=C3=B6rg?= <Joerg@Example.DE>\r\n\
//!             Subject: Re: Rechnung\r\n\
//!             In-Reply-To: <t-1@helpdesk.example>\r\n\
//!             Content-Type: text/plain; charset=utf-8\r\n\
//!             \r\n\
//!             Danke!\r\n\
//!             \r\n\
//!             Am 24.11.2026 um 10:00 schrieb Support <support@helpdesk.example>:\r\n\
//!             > Ihre Rechnung liegt bei.\r\n";
//! let mail = email_parse::parse(raw, &email_parse::Limits::default());
//! assert_eq!(mail.from[0].name.as_deref(), Some("Jörg"));
//! assert_eq!(mail.from[0].email, "Joerg@example.de");
//! assert_eq!(mail.in_reply_to, ["t-1@helpdesk.example"]);
//! let split = email_parse::split_quoted(mail.text.as_deref().unwrap_or(""));
//! assert_eq!(split.new_part, "Danke!");
//! assert!(mail.problems.is_empty());
//! ```
//!
//! The crate is pure Rust without threads, files or clocks, so it builds for `wasm32-wasip2`.

#![deny(missing_docs)]

mod address;
mod auto;
mod charset;
mod date;
mod encoded_word;
mod header;
mod html;
mod mime;
mod model;
mod params;
mod quote;
#[cfg(test)]
mod tests;
mod text;
mod transfer;

pub use auto::{Bounce, bounce, is_automatic};
pub use date::parse_date;
pub use encoded_word::decode_header;
pub use html::html_to_text;
pub use model::{Address, Attachment, Header, Limits, MessageDate, Parsed, Problem, ProblemKind};
pub use quote::{Split, split_quoted};

use charset::{Charset, Detection, Note};
use model::Problems;

/// Parses a message (RFC 5322 with MIME), CRLF or LF line endings. Never fails and never
/// panics: what cannot be read is skipped, cut or kept raw, and `problems` says so.
///
/// - Headers are unfolded. Broken header blocks are read as mail clients read them: folds a
///   relay broke, lines before the headers (a pasted forward), header fields after a stray
///   blank line — the rules are those of the `header` module, each reported as a
///   [`ProblemKind::MalformedHeader`].
/// - Raw 8-bit header values (no encoding declared) are UTF-8 when valid; else read in the
///   charset the body text was read in, when that fits them; else in the charset chardetng
///   detects; else Windows-1252.
/// - Text in a charset that does not fit its bytes (`iso-8859-1` over UTF-8, Shift_JIS labelled
///   `ISO-2022-JP`), or 8-bit text without a charset, is read in the charset that fits — UTF-8,
///   or chardetng's guess — and a [`ProblemKind::CharsetMismatch`] says "declared X, read as
///   Y". Detection runs only then, never on ASCII or UTF-8 mail.
/// - `subject` and display names have RFC 2047 encoded-words decoded; addresses are parsed
///   (quoted names, comments, groups, bare addresses) with domains lowercased.
/// - The MIME tree is walked within [`Limits`]: base64 and quoted-printable are decoded,
///   text is converted from its charset. `text/plain` parts (and `text/html` ones) without a
///   file name or `attachment` disposition are the body — in `multipart/alternative` the last
///   (richest) version of each kind; everything else is an [`Attachment`], attached messages
///   (`message/rfc822`) included, unopened.
/// - `text` is the plain text, or when there is none, the HTML made readable (see
///   [`html_to_text`]).
pub fn parse(raw: &[u8], limits: &Limits) -> Parsed {
    let mut problems = Problems::default();
    let raw = if raw.len() > limits.max_total_bytes {
        problems.push(
            ProblemKind::MessageTooLarge,
            format!("message of {} bytes cut at {}", raw.len(), limits.max_total_bytes),
        );
        &raw[..limits.max_total_bytes]
    } else {
        raw
    };
    // A byte order mark, as editors that saved a message to a file put before it.
    let bom = if raw.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
    // An mbox "From " line before the headers, as stored mail has it.
    let start = if raw[bom..].starts_with(b"From ") {
        raw.iter().position(|&b| b == b'\n').map_or(raw.len(), |i| i + 1)
    } else {
        bom
    };
    let head = header::read_message(&raw[start..], limits, &mut problems);
    let mut headers = head.headers;
    let body = &raw[(start + head.body_start).min(raw.len())..];

    // The body first: raw 8-bit header values are read in the charset its text was read in.
    let mut walker = mime::Walker::new(limits, Problems::default());
    let bodies = walker.entity(&headers, body, 0, "", "text/plain");
    if !head.raw_values.is_empty() {
        let body_charset = walker.first_text_charset.flatten().or_else(|| {
            header::get(&headers, "content-type")
                .and_then(|v| params::parse(v).param("charset").and_then(charset::lookup))
        });
        redecode_raw_values(&mut headers, &head.raw_values, body_charset, limits, &mut walker.detection, &mut problems);
    }

    let mut parsed = Parsed::default();
    if let Some(subject) = header::get(&headers, "subject") {
        let mut notes = Vec::new();
        parsed.subject = Some(encoded_word::decode_words(subject, &mut |n| notes.push(n), &mut walker.detection));
        for note in notes {
            problems.push(note.kind(), note.describe(" in Subject"));
        }
    }
    let addresses = |name: &str, problems: &mut Problems, detection: &mut Detection| {
        let mut list = Vec::new();
        for value in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            let mut bad = |bad: &str| {
                problems.push(ProblemKind::InvalidAddress, format!("{name}: \"{bad}\" is no address; ignored"));
            };
            list.extend(address::parse_list(&value.value, &mut bad, detection));
        }
        list
    };
    parsed.from = addresses("From", &mut problems, &mut walker.detection);
    parsed.to = addresses("To", &mut problems, &mut walker.detection);
    parsed.cc = addresses("Cc", &mut problems, &mut walker.detection);
    parsed.reply_to = addresses("Reply-To", &mut problems, &mut walker.detection);
    parsed.message_id = header::get(&headers, "message-id").and_then(address::message_id);
    parsed.in_reply_to = header::get(&headers, "in-reply-to").map(address::message_ids).unwrap_or_default();
    parsed.references = header::get(&headers, "references").map(address::message_ids).unwrap_or_default();
    parsed.date =
        header::get(&headers, "date").map(|raw| MessageDate { raw: raw.to_owned(), unix: date::parse_date(raw) });

    let texts: Vec<&str> =
        bodies.text.iter().map(|t| t.trim_end().trim_start_matches('\n')).filter(|t| !t.is_empty()).collect();
    // Joining parts adds line breaks, and text made from HTML may outgrow it: cut to the limit.
    let within = |mut t: String| {
        t.truncate(header::utf8_cut(t.as_bytes(), limits.max_total_bytes));
        t
    };
    parsed.html = Some(within(bodies.html.join("\n"))).filter(|h| !h.trim().is_empty());
    let text = if texts.is_empty() { parsed.html.as_deref().map(html_to_text) } else { Some(texts.join("\n\n")) };
    // The lines before a header block (a pasted forward's heading) start the text.
    let leading = text::normalize_newlines(charset::decode_guess(&raw[start..][head.leading]));
    let text = match (leading.trim(), text) {
        ("", text) => text,
        (leading, Some(text)) if !text.trim().is_empty() => Some(format!("{leading}\n\n{text}")),
        (leading, _) => Some(leading.to_owned()),
    };
    parsed.text = text.map(within).filter(|t| !t.trim().is_empty());
    parsed.attachments = walker.attachments;
    problems.append(walker.problems);
    parsed.problems = problems.finish();
    parsed.headers = headers;
    parsed
}

/// Decodes the header values that are not UTF-8 (no encoding declared, 8-bit bytes) again, now
/// that the message's charset is known: in the charset the body text was read in — the first
/// text part's (the message's own when it is text), as declared or, when the label did not fit
/// or was missing, as detected from the body's many more bytes; else the top-level
/// Content-Type's — when that decodes all of them; else in chardetng's guess for all of them
/// together; else as Windows-1252, as they were read so far.
fn redecode_raw_values(
    headers: &mut [Header],
    raw_values: &[(usize, Vec<u8>)],
    body_charset: Option<Charset>,
    limits: &Limits,
    detection: &mut Detection,
    problems: &mut Problems,
) {
    let decodes_all = |charset: Charset| raw_values.iter().all(|(_, bytes)| !charset::decode_with(charset, bytes).1);
    // UTF-8 cannot be it: the values would not be here.
    let charset = match body_charset.filter(|&c| c != Charset::Web(encoding_rs::UTF_8) && decodes_all(c)) {
        Some(charset) => charset,
        None => {
            let all: Vec<u8> = raw_values.iter().flat_map(|(_, bytes)| bytes.iter().copied().chain([b' '])).collect();
            let guess = detection.guess(&all).map(Charset::Web).filter(|&g| decodes_all(g));
            let charset = guess.unwrap_or(Charset::Web(encoding_rs::WINDOWS_1252));
            let note = Note::Undeclared { read_as: charset.name() };
            problems.push(note.kind(), note.describe(" in header fields"));
            charset
        }
    };
    for (i, bytes) in raw_values {
        if let Some(header) = headers.get_mut(*i) {
            header.value = header::cut_value(charset::decode_lossy(charset, bytes), limits);
        }
    }
}
