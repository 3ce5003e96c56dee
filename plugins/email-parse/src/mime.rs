//! The MIME tree: multiparts, transfer encodings, charsets, and sorting each part into the
//! body (text, HTML) or the attachments.

use crate::address::message_id;
use crate::charset::{self, Charset, Detection};
use crate::encoded_word::decode_words;
use crate::header::{self, utf8_cut};
use crate::html;
use crate::model::{Attachment, Header, Limits, ProblemKind, Problems};
use crate::params::{self, Valued};
use crate::text;
use crate::transfer::{self, Base64Error};

/// The body text found in a subtree: `text/plain` and `text/html` parts, in order.
#[derive(Default)]
pub(crate) struct Bodies {
    pub text: Vec<String>,
    pub html: Vec<String>,
}

impl Bodies {
    fn append(&mut self, other: Bodies) {
        self.text.extend(other.text);
        self.html.extend(other.html);
    }
}

/// Walks the MIME tree within the limits, collecting attachments and problems.
pub(crate) struct Walker<'l> {
    limits: &'l Limits,
    pub problems: Problems,
    pub attachments: Vec<Attachment>,
    /// Parts seen so far, containers included.
    parts: usize,
    /// What may still be kept of decoded content.
    budget: usize,
    /// Whether the depth limit was reported.
    too_deep: bool,
    /// Whether the part limit was reached.
    too_many: bool,
    /// The charset the first text part was read in (`Some(None)`: it was ASCII, or UTF-8 without
    /// a label), which raw 8-bit header values fall back to.
    pub first_text_charset: Option<Option<Charset>>,
    /// The charset detection budget of the parse, bodies first.
    pub detection: Detection,
}

/// Where a problem happened, as problem messages say it.
fn place(section: &str) -> String {
    if section.is_empty() { String::new() } else { format!("part {section}: ") }
}

/// The section number of the `n`th (1-based) child of `section`.
fn child_section(section: &str, n: usize) -> String {
    if section.is_empty() { n.to_string() } else { format!("{section}.{n}") }
}

impl<'l> Walker<'l> {
    pub fn new(limits: &'l Limits, problems: Problems) -> Walker<'l> {
        Walker {
            limits,
            problems,
            attachments: Vec::new(),
            parts: 1,
            budget: limits.max_total_bytes,
            too_deep: false,
            too_many: false,
            first_text_charset: None,
            detection: Detection::default(),
        }
    }

    /// Reads one entity (the message, a part) given its headers and body. `section` is its
    /// IMAP-style number (empty for the message itself); `default_type` is what it is without
    /// a Content-Type (`message/rfc822` within a digest).
    pub fn entity(
        &mut self,
        headers: &[Header],
        body: &[u8],
        depth: usize,
        section: &str,
        default_type: &str,
    ) -> Bodies {
        let content_type = match header::get(headers, "content-type") {
            Some(v) => {
                let mut parsed = params::parse(v);
                if !parsed.value.contains('/') {
                    parsed.value = if parsed.value == "text" || parsed.value.is_empty() {
                        "text/plain"
                    } else {
                        "application/octet-stream"
                    }
                    .to_owned();
                }
                parsed
            }
            None => params::parse(default_type),
        };
        if content_type.value.starts_with("multipart/") {
            let Some(boundary) = content_type.param("boundary").filter(|b| !b.is_empty()) else {
                self.problems.push(
                    ProblemKind::MissingBoundary,
                    format!("{}{} without a boundary; read as plain text", place(section), content_type.value),
                );
                return self.leaf(headers, body, section, &params::parse("text/plain"));
            };
            if depth >= self.limits.max_depth {
                if !self.too_deep {
                    self.too_deep = true;
                    self.problems.push(
                        ProblemKind::TooDeep,
                        format!(
                            "nesting deeper than {} levels; inner parts kept as attachments",
                            self.limits.max_depth
                        ),
                    );
                }
                let (data, _) = self.decode_transfer(headers, body, section, "data");
                self.attach(
                    Attachment { content_type: content_type.value.clone(), data, ..Default::default() },
                    section,
                );
                return Bodies::default();
            }
            let boundary = boundary.to_owned();
            return self.multipart(body, &boundary, &content_type.value, depth, section);
        }
        self.leaf(headers, body, section, &content_type)
    }

    /// Splits a multipart at its boundary and reads each part.
    fn multipart(&mut self, body: &[u8], boundary: &str, kind: &str, depth: usize, section: &str) -> Bodies {
        let delimiter = [b"--", boundary.as_bytes()].concat();
        let child_default = if kind == "multipart/digest" { "message/rfc822" } else { "text/plain" };
        let mut children: Vec<Bodies> = Vec::new();
        let mut start: Option<usize> = None;
        let mut closed = false;
        let mut stopped = false;
        let mut pos = 0;
        while pos < body.len() {
            let (line_end, next) = match body[pos..].iter().position(|&b| b == b'\n') {
                Some(i) => (pos + i, pos + i + 1),
                None => (body.len(), body.len()),
            };
            let line = &body[pos..line_end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mark = line.strip_prefix(delimiter.as_slice()).and_then(|rest| {
                if rest.iter().all(|b| matches!(b, b' ' | b'\t')) {
                    Some(false)
                } else {
                    let close = rest.strip_prefix(b"--")?;
                    close.iter().all(|b| matches!(b, b' ' | b'\t')).then_some(true)
                }
            });
            if let Some(is_close) = mark {
                if let Some(s) = start {
                    // The line break before the delimiter belongs to it.
                    let mut end = pos.saturating_sub(1).max(s);
                    if end > s && body[end - 1] == b'\r' {
                        end -= 1;
                    }
                    match self.child(&body[s..end], children.len() + 1, depth, section, child_default) {
                        Some(b) => children.push(b),
                        None => {
                            stopped = true;
                            break;
                        }
                    }
                }
                if is_close {
                    closed = true;
                    break;
                }
                start = Some(next);
            }
            pos = next;
        }
        if !closed && !stopped {
            match start {
                Some(s) => {
                    self.problems.push(
                        ProblemKind::Truncated,
                        format!("{}message truncated: multipart boundary \"{boundary}\" never closed", place(section)),
                    );
                    if let Some(b) = self.child(&body[s..], children.len() + 1, depth, section, child_default) {
                        children.push(b);
                    }
                }
                None => {
                    self.problems.push(
                        ProblemKind::MissingBoundary,
                        format!(
                            "{}multipart boundary \"{boundary}\" not found; the body read as plain text",
                            place(section)
                        ),
                    );
                    return self.leaf(&[], body, section, &params::parse("text/plain"));
                }
            }
        }
        let mut out = Bodies::default();
        if kind == "multipart/alternative" {
            // The richest version of each kind: later alternatives are the preferred ones.
            if let Some(i) = children.iter().rposition(|c| c.text.iter().any(|t| !t.trim().is_empty())) {
                out.text = std::mem::take(&mut children[i].text);
            }
            if let Some(i) = children.iter().rposition(|c| c.html.iter().any(|t| !t.trim().is_empty())) {
                out.html = std::mem::take(&mut children[i].html);
            }
        } else {
            for child in children {
                out.append(child);
            }
        }
        out
    }

    /// Reads the `n`th part of a multipart; `None` when the part limit is reached.
    fn child(&mut self, raw: &[u8], n: usize, depth: usize, section: &str, default_type: &str) -> Option<Bodies> {
        if self.parts >= self.limits.max_parts {
            if !self.too_many {
                self.too_many = true;
                self.problems.push(
                    ProblemKind::TooManyParts,
                    format!("more than {} parts; the rest ignored", self.limits.max_parts),
                );
            }
            return None;
        }
        self.parts += 1;
        let child = child_section(section, n);
        let head = header::read(raw, self.limits, &mut self.problems, &place(&child));
        let body = &raw[head.body_start.min(raw.len())..];
        Some(self.entity(&head.headers, body, depth + 1, &child, default_type))
    }

    /// Undoes the Content-Transfer-Encoding; `noun` names the content in problem messages.
    fn decode_transfer(&mut self, headers: &[Header], body: &[u8], section: &str, noun: &str) -> (Vec<u8>, bool) {
        let encoding = header::get(headers, "content-transfer-encoding").map(params::parse).map(|v| v.value);
        let at = if section.is_empty() { "body: ".to_owned() } else { place(section) };
        match encoding.as_deref().map(|e| e.trim_matches('"')) {
            None | Some("" | "7bit" | "8bit" | "binary" | "7-bit" | "8-bit") => (body.to_vec(), true),
            Some("quoted-printable") => (transfer::quoted_printable(body), true),
            Some("base64") => {
                let (data, error) = transfer::base64(body);
                match error {
                    None => {}
                    Some(Base64Error::InvalidAt(i)) => self.problems.push(
                        ProblemKind::InvalidBase64,
                        format!("{at}invalid base64 at byte {i}; kept the {noun} decoded so far"),
                    ),
                    Some(Base64Error::Incomplete) => self.problems.push(
                        ProblemKind::InvalidBase64,
                        format!("{at}base64 ends in the middle of a byte; kept the {noun} decoded before it"),
                    ),
                }
                (data, true)
            }
            Some(other) => {
                self.problems.push(
                    ProblemKind::UnknownTransferEncoding,
                    format!("{at}unknown transfer encoding \"{other}\"; kept the {noun} as it is"),
                );
                (body.to_vec(), false)
            }
        }
    }

    /// Reads a part that is not a multipart: body text, or an attachment.
    fn leaf(&mut self, headers: &[Header], body: &[u8], section: &str, content_type: &Valued) -> Bodies {
        let disposition = header::get(headers, "content-disposition").map(params::parse).unwrap_or_default();
        let filename = disposition
            .param("filename")
            .or_else(|| content_type.param("name"))
            .and_then(|raw| clean_filename(&self.decode_header_words(raw, section)));
        let kind = content_type.value.as_str();
        let is_body =
            (kind == "text/plain" || kind == "text/html") && disposition.value != "attachment" && filename.is_none();
        let mut bodies = Bodies::default();
        if is_body {
            let (data, _) = self.decode_transfer(headers, body, section, "text");
            let declared = content_type.param("charset").map(str::to_owned);
            let declared = declared.or_else(|| if kind == "text/html" { html::meta_charset(&data) } else { None });
            let decoded = charset::decode(declared.as_deref(), &data, &mut self.detection);
            if let Some(note) = decoded.note {
                let at = if section.is_empty() { "body: ".to_owned() } else { place(section) };
                self.problems.push(note.kind(), format!("{at}{}", note.describe("")));
            }
            if self.first_text_charset.is_none() {
                self.first_text_charset = Some(decoded.charset);
            }
            let mut text = text::normalize_newlines(decoded.text);
            if kind == "text/plain" && content_type.param("format").is_some_and(|f| f.eq_ignore_ascii_case("flowed")) {
                let delsp = content_type.param("delsp").is_some_and(|d| d.eq_ignore_ascii_case("yes"));
                text = text::unflow(&text, delsp);
            }
            if text.len() > self.budget {
                let cut = utf8_cut(text.as_bytes(), self.budget);
                self.problems.push(
                    ProblemKind::MessageTooLarge,
                    format!(
                        "{}text of {} bytes cut at {cut}: the message's content is over the {}-byte limit",
                        place(section),
                        text.len(),
                        self.limits.max_total_bytes
                    ),
                );
                text.truncate(cut);
            }
            self.budget -= text.len();
            if kind == "text/html" {
                bodies.html.push(text);
            } else {
                bodies.text.push(text);
            }
            return bodies;
        }
        let (data, _) = self.decode_transfer(headers, body, section, "data");
        let content_id = header::get(headers, "content-id").and_then(message_id);
        let inline = match disposition.value.as_str() {
            "inline" => true,
            "" => content_id.is_some(),
            _ => false,
        };
        let filename = match filename {
            Some(f) => Some(f),
            None if kind == "message/rfc822" || kind == "message/global" => self.subject_filename(&data),
            None => None,
        };
        self.attach(Attachment { filename, content_type: kind.to_owned(), content_id, inline, data }, section);
        bodies
    }

    /// Keeps an attachment, unless it is over a limit.
    fn attach(&mut self, attachment: Attachment, section: &str) {
        let size = attachment.data.len();
        let name = match &attachment.filename {
            Some(f) => format!("\"{f}\""),
            None => format!("({})", attachment.content_type),
        };
        if size > self.limits.max_attachment_bytes {
            self.problems.push(
                ProblemKind::AttachmentTooLarge,
                format!(
                    "{}attachment {name} of {size} bytes dropped: over the {}-byte limit",
                    place(section),
                    self.limits.max_attachment_bytes
                ),
            );
            return;
        }
        if size > self.budget {
            self.problems.push(
                ProblemKind::MessageTooLarge,
                format!(
                    "{}attachment {name} of {size} bytes dropped: the message's content is over the {}-byte limit",
                    place(section),
                    self.limits.max_total_bytes
                ),
            );
            return;
        }
        self.budget -= size;
        self.attachments.push(attachment);
    }

    /// An attached message's file name: its subject, plus `.eml`.
    fn subject_filename(&mut self, data: &[u8]) -> Option<String> {
        let mut ignored = Problems::default();
        let head = header::read(data, self.limits, &mut ignored, "");
        let subject = decode_words(header::get(&head.headers, "subject")?, &mut |_| {}, &mut self.detection);
        let name: String = subject
            .chars()
            .map(|c| if matches!(c, '/' | '\\') { '_' } else { c })
            .filter(|c| !c.is_control())
            .collect();
        let name = name.trim();
        (!name.is_empty()).then(|| format!("{name}.eml"))
    }

    /// RFC 2047 decoding of a header value, reporting unknown and mislabelled charsets.
    fn decode_header_words(&mut self, raw: &str, section: &str) -> String {
        let mut notes = Vec::new();
        let text = decode_words(raw, &mut |n| notes.push(n), &mut self.detection);
        for note in notes {
            self.problems.push(note.kind(), format!("{}{}", place(section), note.describe(" in a file name")));
        }
        text
    }
}

/// A file name safe to show and store: no directory part, no control characters.
fn clean_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let trimmed = cleaned.trim();
    (!trimmed.is_empty() && trimmed != "." && trimmed != "..").then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_directories_and_controls() {
        assert_eq!(clean_filename("C:\\Users\\a\\Bericht.pdf").as_deref(), Some("Bericht.pdf"));
        assert_eq!(clean_filename("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean_filename("a\u{0}b\r\n.txt").as_deref(), Some("ab.txt"));
        assert_eq!(clean_filename(".."), None);
        assert_eq!(clean_filename("dir/"), None);
        assert_eq!(clean_filename("  "), None);
    }

    #[test]
    fn sections() {
        assert_eq!(child_section("", 2), "2");
        assert_eq!(child_section("2", 1), "2.1");
        assert_eq!(place(""), "");
        assert_eq!(place("1.2"), "part 1.2: ");
    }
}
