//! Reading a header section: fields, folding, limits, and the broken header blocks that
//! relays and pasted forwards produce, tolerated as mail clients do.
//!
//! The rules, each of which records a [`ProblemKind::MalformedHeader`] saying what was done:
//!
//! 1. **A broken fold** (any header section, parts included). An unindented line that is no
//!    `Name:` field, after a field, is read as a continuation of that field (unfolded with one
//!    space) when a field line follows it within [`MAX_BROKEN_FOLD_LINES`] lines and before the
//!    blank line — filtering gateways break long fields that way. Otherwise it starts the body,
//!    as before; so does such a line before any field.
//! 2. **Lines before the headers** (the message only). When the first line is no field (a
//!    forwarded message pasted into a pipe starts with `---------- Forwarded message ---------`
//!    or a sentence), and a header block starts within the first [`MAX_LEADING_LINES`] lines —
//!    two or more field lines in a row, folds between them allowed, one of them From, Subject,
//!    Date, To or Message-ID — the headers are read from there and the lines before them become
//!    the start of the text (`Section::leading`). Without such a block the whole message is
//!    the body, as before, and the problem says so.
//! 3. **Headers after a stray blank line** (the message only, at most once). When the header
//!    block ended in a blank line right after an unfinished field — one that ended in a
//!    continuation line, or in `;` or `,`, or had no value at all, as a fold whose
//!    whitespace-only line lost its whitespace leaves it — and the lines after that blank line
//!    are, up to another blank line (which must be there, within 64 lines), only fields of
//!    [`KNOWN_FIELDS`] (RFC 5322 and MIME names) and their folds, none of which the first block
//!    has, and either the first block has no Content-Type or the second has one (together: the
//!    first has none), the second block is read as headers too, and the body starts after it.

use std::ops::Range;

use crate::charset;
use crate::model::{Header, Limits, ProblemKind, Problems};

/// A header section read from the start of an entity.
#[derive(Default)]
pub(crate) struct Section {
    /// The fields, in order.
    pub headers: Vec<Header>,
    /// Where the body starts.
    pub body_start: usize,
    /// The values that are not UTF-8, by index into `headers`, as they were: their text there
    /// is Windows-1252 until the charset of the message is known, and then decoded again.
    pub raw_values: Vec<(usize, Vec<u8>)>,
    /// Lines before the header block that are no header fields (a pasted forward's heading).
    pub leading: Range<usize>,
    /// Whether a blank line ended the section.
    blank_end: bool,
    /// Whether the last field looked unfinished: it ended in a continuation line, or in `;` or
    /// `,`, or had no value at all.
    unfinished: bool,
}

/// The first field named `name` (case-insensitive).
pub(crate) fn get<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

/// The longest prefix of `bytes` no longer than `max` that does not end inside a UTF-8 sequence.
pub(crate) fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    // `bytes[max]` is the first byte left out: when it continues a sequence, leave out the
    // whole sequence, from its lead byte on.
    let mut cut = max;
    while cut > 0 && max - cut < 3 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if bytes[cut] >= 0xC0 { cut } else { max }
}

/// Whether `line` starts with a field name and a colon (obsolete whitespace before it allowed):
/// the colon's index.
fn field_name_len(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(colon)
}

/// The line starting at `pos` (without its line break) and where the next one starts.
fn line_at(raw: &[u8], pos: usize) -> (&[u8], usize) {
    let (line, next) = match raw[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => (&raw[pos..pos + i], pos + i + 1),
        None => (&raw[pos..], raw.len()),
    };
    (line.strip_suffix(b"\r").unwrap_or(line), next)
}

/// The lines of `raw` from `pos` on: (start, line).
fn lines_from(raw: &[u8], mut pos: usize) -> impl Iterator<Item = (usize, &[u8])> {
    std::iter::from_fn(move || {
        if pos >= raw.len() {
            return None;
        }
        let start = pos;
        let (line, next) = line_at(raw, pos);
        pos = next;
        Some((start, line))
    })
}

/// A field line: a name and a colon, not indented.
fn is_field_line(line: &[u8]) -> bool {
    !line.is_empty() && !matches!(line[0], b' ' | b'\t') && field_name_len(line).is_some()
}

/// The field name of a field line, lowercased.
fn field_name(line: &[u8]) -> Option<String> {
    let colon = field_name_len(line)?;
    Some(String::from_utf8_lossy(line[..colon].trim_ascii_end()).to_ascii_lowercase())
}

/// How many unindented non-field lines in a row may be read as a broken fold: gateways break
/// one long field into a few lines, never into a paragraph.
const MAX_BROKEN_FOLD_LINES: usize = 5;

/// Where the next field line starts, when one follows the non-field line that ends at `pos`
/// before the blank line, with at most [`MAX_BROKEN_FOLD_LINES`] non-field lines in all.
fn field_line_ahead(raw: &[u8], pos: usize) -> Option<usize> {
    for (start, line) in lines_from(raw, pos).take(MAX_BROKEN_FOLD_LINES) {
        if line.is_empty() {
            return None;
        }
        if is_field_line(line) {
            return Some(start);
        }
    }
    None
}

/// Reads the header section at the start of `raw`, up to the blank line (or the first line that
/// is no header field and no broken fold, which then starts the body). `place` prefixes problem
/// messages (`"part 2: "`, or empty for the message itself).
pub(crate) fn read(raw: &[u8], limits: &Limits, problems: &mut Problems, place: &str) -> Section {
    let mut section = Section::default();
    let mut field: Option<Field> = None;
    let mut pos = 0;
    let mut line_no = 0usize;
    let mut too_many = false;
    // Lines before this position are a broken fold: a field line follows them.
    let mut fold_until = 0;
    let max_line = limits.max_header_line.max(1);
    section.body_start = loop {
        if pos >= raw.len() {
            break raw.len();
        }
        let (line, next) = line_at(raw, pos);
        line_no += 1;
        if line.is_empty() {
            section.blank_end = true;
            break next;
        }
        let line = if line.len() > max_line {
            problems.push(
                ProblemKind::HeaderLineTooLong,
                format!("{place}header line of {} bytes cut at {}", line.len(), limits.max_header_line),
            );
            &line[..utf8_cut(line, max_line)]
        } else {
            line
        };
        section.unfinished = false;
        if matches!(line[0], b' ' | b'\t') {
            match &mut field {
                Some(f) => {
                    f.append(line, max_line);
                    section.unfinished = true;
                }
                // The rest of a field past the limit.
                None if too_many => {}
                None => problems.push(
                    ProblemKind::MalformedHeader,
                    format!("{place}header line {line_no} continues no field; ignored"),
                ),
            }
        } else if field_name_len(line).is_some() {
            if let Some(done) = field.take() {
                done.finish(&mut section, limits, problems, place);
            }
            if section.headers.len() < limits.max_headers {
                field = Some(Field::new(line));
                let value = line[field_name_len(line).map_or(0, |c| c + 1)..].trim_ascii();
                section.unfinished = value.is_empty() || matches!(value.last(), Some(b';' | b','));
            } else if !too_many {
                too_many = true;
                problems.push(
                    ProblemKind::TooManyHeaders,
                    format!("{place}more than {} header fields; the rest ignored", limits.max_headers),
                );
            }
        } else if let Some(f) = field
            .as_mut()
            .filter(|_| next <= fold_until || field_line_ahead(raw, next).inspect(|&at| fold_until = at).is_some())
        {
            // A fold a gateway broke: the line lost its leading whitespace.
            f.append(&[b" ", line].concat(), max_line);
            section.unfinished = true;
            problems.push(
                ProblemKind::MalformedHeader,
                format!(
                    "{place}header line {line_no} is no header field, but header fields follow; \
                     read as a continuation of {}",
                    f.name()
                ),
            );
        } else {
            problems.push(
                ProblemKind::MalformedHeader,
                format!("{place}header line {line_no} is no header field; it and what follows read as the body"),
            );
            break pos;
        }
        pos = next;
    };
    if let Some(done) = field.take() {
        done.finish(&mut section, limits, problems, place);
    }
    section
}

/// How many lines at the start of a message may stand before its header block.
const MAX_LEADING_LINES: usize = 10;

/// Fields of which one must be in a header block found after leading lines.
const MESSAGE_FIELDS: [&str; 5] = ["from", "subject", "date", "to", "message-id"];

/// The RFC 5322 and MIME fields that may be read as headers after a blank line.
const KNOWN_FIELDS: [&str; 21] = [
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "comments",
    "keywords",
    "return-path",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-description",
    "content-language",
];

/// Where a header block starts within the first [`MAX_LEADING_LINES`] lines: two or more
/// field lines in a row (folds between them allowed), one of them a [`MESSAGE_FIELDS`] one.
fn header_block_start(raw: &[u8]) -> Option<usize> {
    let lines: Vec<(usize, &[u8])> = lines_from(raw, 0).take(MAX_LEADING_LINES + 64).collect();
    (1..lines.len().min(MAX_LEADING_LINES)).find_map(|i| {
        let mut fields = 0;
        let mut message_field = false;
        for (_, line) in &lines[i..] {
            if is_field_line(line) {
                fields += 1;
                message_field |= field_name(line).is_some_and(|n| MESSAGE_FIELDS.contains(&n.as_str()));
            } else if fields == 0 || !matches!(line.first(), Some(b' ' | b'\t')) {
                break;
            }
        }
        (fields >= 2 && message_field).then_some(lines[i].0)
    })
}

/// The names of the fields of a second header block starting at `pos` (after a blank line):
/// only [`KNOWN_FIELDS`] and their folds, up to another blank line, which must be there.
fn second_block(raw: &[u8], pos: usize) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for (_, line) in lines_from(raw, pos).take(64) {
        if line.is_empty() {
            return (!names.is_empty()).then_some(names);
        }
        if matches!(line[0], b' ' | b'\t') && !names.is_empty() {
            continue;
        }
        let name = field_name(line).filter(|n| is_field_line(line) && KNOWN_FIELDS.contains(&n.as_str()))?;
        names.push(name);
    }
    None
}

/// Reads the header section of a message (not of a part), tolerating what broken relays and
/// pasted forwards make of it. See the module documentation for the rules.
pub(crate) fn read_message(raw: &[u8], limits: &Limits, problems: &mut Problems) -> Section {
    let (first, _) = if raw.is_empty() { (raw, 0) } else { line_at(raw, 0) };
    let mut skip = 0;
    // An indented first line continues no field: `read` says so and goes on, as before.
    if !first.is_empty() && !matches!(first[0], b' ' | b'\t') && !is_field_line(first) {
        match header_block_start(raw) {
            Some(at) => {
                let lines = lines_from(raw, 0).take_while(|&(start, _)| start < at).count();
                problems.push(
                    ProblemKind::MalformedHeader,
                    format!(
                        "the message starts with {lines} line{} before its header fields; \
                         kept as the start of the text",
                        if lines == 1 { "" } else { "s" }
                    ),
                );
                skip = at;
            }
            None => {
                problems.push(
                    ProblemKind::MalformedHeader,
                    format!(
                        "the message has no header fields (none in its first {MAX_LEADING_LINES} lines); \
                         all of it read as the body"
                    ),
                );
                return Section::default();
            }
        }
    }
    let mut section = read(&raw[skip..], limits, problems, "");
    section.body_start += skip;
    section.leading = 0..skip;
    if !(section.blank_end && section.unfinished) {
        return section;
    }
    let Some(names) = second_block(raw, section.body_start) else { return section };
    let has = |name: &str| section.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    if names.iter().any(|n| has(n)) || (has("content-type") && !names.iter().any(|n| n == "content-type")) {
        return section;
    }
    let second = read(&raw[section.body_start..], limits, problems, "");
    let offset = section.headers.len();
    let listed: Vec<&str> = second.headers.iter().map(|h| h.name.as_str()).collect();
    problems.push(
        ProblemKind::MalformedHeader,
        format!(
            "header fields after the blank line that ended an unfinished field ({}) read as headers too",
            listed.join(", ")
        ),
    );
    let room = limits.max_headers.saturating_sub(offset);
    section.raw_values.extend(second.raw_values.into_iter().filter(|(i, _)| *i < room).map(|(i, v)| (i + offset, v)));
    section.headers.extend(second.headers.into_iter().take(room));
    section.body_start += second.body_start;
    section
}

/// A field being read, with its continuation lines unfolded onto it.
struct Field {
    bytes: Vec<u8>,
    /// The unfolded length, counting what was cut.
    full_len: usize,
}

impl Field {
    fn new(line: &[u8]) -> Field {
        Field { bytes: line.to_vec(), full_len: line.len() }
    }

    /// The field's name, for problem messages.
    fn name(&self) -> String {
        let colon = field_name_len(&self.bytes).unwrap_or(0);
        String::from_utf8_lossy(self.bytes[..colon].trim_ascii_end()).into_owned()
    }

    /// Unfolds a continuation line onto the field (keeping its leading whitespace), within `max`.
    fn append(&mut self, line: &[u8], max: usize) {
        self.full_len += line.len();
        let room = max.saturating_sub(self.bytes.len());
        if room > 0 {
            let take = utf8_cut(line, room);
            self.bytes.extend_from_slice(&line[..take]);
        }
    }

    fn finish(self, section: &mut Section, limits: &Limits, problems: &mut Problems, place: &str) {
        let Some(colon) = field_name_len(&self.bytes) else { return };
        let name = String::from_utf8_lossy(self.bytes[..colon].trim_ascii_end()).into_owned();
        if self.full_len > self.bytes.len() && self.full_len > limits.max_header_line {
            problems.push(
                ProblemKind::HeaderLineTooLong,
                format!("{place}header field {name} of {} bytes cut at {}", self.full_len, limits.max_header_line),
            );
        }
        let raw = self.bytes[colon + 1..].trim_ascii();
        let value = match std::str::from_utf8(raw) {
            Ok(s) => s.strip_prefix('\u{feff}').unwrap_or(s).to_owned(),
            Err(_) => {
                // Until the message's charset is known (see `Section::raw_values`).
                section.raw_values.push((section.headers.len(), raw.to_vec()));
                charset::decode_guess(raw)
            }
        };
        section.headers.push(Header { name, value: cut_value(value, limits) });
    }
}

/// Trims a decoded value and cuts it to the line limit: decoding can grow the text (an invalid
/// byte becomes a three-byte U+FFFD, a Latin-1 byte two), and a value never exceeds the limit.
pub(crate) fn cut_value(value: String, limits: &Limits) -> String {
    let mut value = match value.trim() {
        t if t.len() == value.len() => value,
        t => t.to_owned(),
    };
    value.truncate(utf8_cut(value.as_bytes(), limits.max_header_line.max(1)));
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Problem;

    fn read_all(raw: &[u8], limits: &Limits) -> (Vec<(String, String)>, usize, Vec<Problem>) {
        let mut problems = Problems::default();
        let section = read(raw, limits, &mut problems, "");
        let pairs = section.headers.into_iter().map(|h| (h.name, h.value)).collect();
        (pairs, section.body_start, problems.finish())
    }

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn fields_folding_and_body_start() {
        let raw = b"Subject: Hello\r\n  world\r\nX-Empty:\r\nTo : a@x.de\r\n\r\nbody";
        let (h, start, p) = read_all(raw, &Limits::default());
        assert_eq!(h, vec![pair("Subject", "Hello  world"), pair("X-Empty", ""), pair("To", "a@x.de")]);
        assert_eq!(&raw[start..], b"body");
        assert!(p.is_empty());
    }

    #[test]
    fn lf_endings_and_8bit() {
        let raw = b"Subject: Gr\xfc\xdfe\nFrom: J\xc3\xb6rg <j@x>\n\nbody\n";
        let (h, start, _) = read_all(raw, &Limits::default());
        assert_eq!(h, vec![pair("Subject", "Grüße"), pair("From", "Jörg <j@x>")]);
        assert_eq!(&raw[start..], b"body\n");
    }

    #[test]
    fn no_blank_line_and_no_body() {
        let (h, start, p) = read_all(b"Subject: a\nthis is text\nmore", &Limits::default());
        assert_eq!(h, vec![pair("Subject", "a")]);
        assert_eq!(start, 11);
        assert_eq!(p[0].message, "header line 2 is no header field; it and what follows read as the body");
        let (h, start, p) = read_all(b"Subject: a", &Limits::default());
        assert_eq!((h.len(), start, p.len()), (1, 10, 0));
        let (h, start, _) = read_all(b"", &Limits::default());
        assert_eq!((h.len(), start), (0, 0));
    }

    #[test]
    fn long_lines_and_fields_are_cut() {
        let mut raw = b"X-Long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 102_400 - 8));
        raw.extend_from_slice(b"\nSubject: ok\n\n");
        let (h, _, p) = read_all(&raw, &Limits::default());
        assert_eq!(h[0].1.len(), 16 * 1024 - 8);
        assert_eq!(h[1], pair("Subject", "ok"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].message, "header line of 102400 bytes cut at 16384");

        let limits = Limits { max_header_line: 20, ..Limits::default() };
        let (h, _, p) = read_all(b"References: <a@b>\n <c@d>\n <e@f>\n\n", &limits);
        assert_eq!(h[0].1, "<a@b> <c");
        assert_eq!(p[0].message, "header field References of 29 bytes cut at 20");
    }

    #[test]
    fn too_many_fields() {
        let raw: Vec<u8> = (0..1500).flat_map(|i| format!("X-N: {i}\n folded\n").into_bytes()).collect();
        let (h, _, p) = read_all(&raw, &Limits::default());
        assert_eq!(h.len(), 1000);
        assert_eq!(h[999].1, "999 folded");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].message, "more than 1000 header fields; the rest ignored");
    }

    #[test]
    fn a_value_that_grows_when_decoded_is_cut_to_the_limit() {
        let limits = Limits { max_header_line: 20, ..Limits::default() };
        let mut problems = Problems::default();
        let raw = [b"To: ".as_slice(), &[0xff; 16], b"\r\n\r\n"].concat();
        let section = read(&raw, &limits, &mut problems, "");
        let to = &section.headers[0];
        assert_eq!(to.name, "To");
        assert!(to.value.len() <= 20 && !to.value.is_empty(), "{:?}", to.value);
    }

    #[test]
    fn utf8_cut_backs_off_to_a_boundary() {
        let s = "aä€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(utf8_cut(s, 10), 6);
        assert_eq!(utf8_cut(s, 1), 1);
        assert_eq!(utf8_cut(s, 2), 1);
        assert_eq!(utf8_cut(s, 3), 3);
        assert_eq!(utf8_cut(s, 4), 3);
        assert_eq!(utf8_cut(s, 5), 3);
        assert_eq!(utf8_cut(b"\x80\x80\x80\x80\x80", 2), 2);
    }

    fn read_msg(raw: &[u8]) -> (Vec<(String, String)>, Section, Vec<Problem>) {
        let mut problems = Problems::default();
        let section = read_message(raw, &Limits::default(), &mut problems);
        let pairs = section.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
        (pairs, section, problems.finish())
    }

    #[test]
    fn a_fold_broken_by_a_gateway_is_a_continuation() {
        let raw = b"Subject: Ihre Bestellung 4711 ist\nunterwegs\nFrom: a@x.de\n\nbody";
        let (h, start, p) = read_all(raw, &Limits::default());
        assert_eq!(h, vec![pair("Subject", "Ihre Bestellung 4711 ist unterwegs"), pair("From", "a@x.de")]);
        assert_eq!(&raw[start..], b"body");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::MalformedHeader);
        assert_eq!(
            p[0].message,
            "header line 2 is no header field, but header fields follow; read as a continuation of Subject"
        );
        // Two broken lines in a row, and a regular fold after them.
        let raw = b"To: a@x.de,\nb@x.de,\nc@x.de\n d@x.de\nSubject: s\n\n";
        let (h, _, p) = read_all(raw, &Limits::default());
        assert_eq!(h[0], pair("To", "a@x.de, b@x.de, c@x.de d@x.de"));
        assert_eq!(h[1], pair("Subject", "s"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_non_field_line_without_fields_after_it_starts_the_body() {
        // No field before the blank line: the body, as before.
        let raw = b"Subject: a\nHello,\nhow are you?\n\nNote: later\n";
        let (h, start, p) = read_all(raw, &Limits::default());
        assert_eq!(h, vec![pair("Subject", "a")]);
        assert_eq!(&raw[start..], b"Hello,\nhow are you?\n\nNote: later\n");
        assert_eq!(p[0].message, "header line 2 is no header field; it and what follows read as the body");
        // Too many lines before the next field: a paragraph, not a fold.
        let raw = b"Subject: a\n1\n2\n3\n4\n5\n6\nX-Late: field\n\n";
        let (h, start, _) = read_all(raw, &Limits::default());
        assert_eq!((h.len(), start), (1, 11));
        // No field yet: nothing to continue.
        let (h, start, _) = read_all(b"just text\nSubject: x\n\n", &Limits::default());
        assert_eq!((h.len(), start), (0, 0));
    }

    #[test]
    fn leading_lines_before_the_header_block_are_skipped() {
        let raw =
            b"---------- Forwarded message ---------\nFrom: Anna <a@x.de>\nDate: Tue, 24 Nov 2026 10:00:00 +0100\n\
                    Subject: Rechnung\n\nText";
        let (h, section, p) = read_msg(raw);
        assert_eq!(h.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["From", "Date", "Subject"]);
        assert_eq!(&raw[section.leading.clone()], b"---------- Forwarded message ---------\n");
        assert_eq!(&raw[section.body_start..], b"Text");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::MalformedHeader);
        assert_eq!(
            p[0].message,
            "the message starts with 1 line before its header fields; kept as the start of the text"
        );
        // Plain text and a blank line before it; a fold within the block.
        let raw = b"Hi,\nplease see below.\n\nSubject: a\n b\nTo: c@x.de\n\nbody";
        let (h, section, _) = read_msg(raw);
        assert_eq!(h, vec![pair("Subject", "a b"), pair("To", "c@x.de")]);
        assert_eq!(section.leading, 0..23);
    }

    #[test]
    fn without_a_header_block_the_whole_message_is_the_body() {
        for raw in [
            b"Just some text\nwith lines\n".as_slice(),
            // Only one field line: not a block.
            b"Hello\nSubject: a\n\nbody",
            // Two fields but neither From, Subject, Date, To nor Message-ID.
            b"Hello\nX-A: 1\nX-B: 2\n\nbody",
            // The block starts after the first ten lines.
            b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\nFrom: a@x.de\nSubject: s\n\n",
        ] {
            let (h, section, p) = read_msg(raw);
            assert_eq!((h.len(), section.body_start, section.leading.len()), (0, 0, 0));
            assert_eq!(
                p[0].message,
                "the message has no header fields (none in its first 10 lines); all of it read as the body"
            );
            assert_eq!(p[0].kind, ProblemKind::MalformedHeader);
        }
        let (h, section, p) = read_msg(b"");
        assert_eq!((h.len(), section.body_start, p.len()), (0, 0, 0));
        // An indented first line is ignored as before, and the fields after it read.
        let (h, section, p) = read_msg(b" stray\nSubject: a\n\nbody");
        assert_eq!((h, section.body_start), (vec![pair("Subject", "a")], 19));
        assert_eq!(p[0].message, "header line 1 continues no field; ignored");
    }

    #[test]
    fn headers_after_a_blank_line_that_ended_an_unfinished_field() {
        let raw = b"From: a@x.de\nTo: b@y.de,\n\nSubject: Angebot\nContent-Type: text/plain; charset=utf-8\n\nbody";
        let (h, section, p) = read_msg(raw);
        assert_eq!(h.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["From", "To", "Subject", "Content-Type"]);
        assert_eq!(&raw[section.body_start..], b"body");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProblemKind::MalformedHeader);
        assert_eq!(
            p[0].message,
            "header fields after the blank line that ended an unfinished field (Subject, Content-Type) read as headers too"
        );
        // Ending in a continuation line counts as unfinished too.
        let raw = b"Content-Type: multipart/mixed;\n boundary=b\n\nSubject: x\nContent-Type: text/plain\n\nbody";
        let (h, _, _) = read_msg(raw);
        assert_eq!(h.len(), 1, "the first block has a Content-Type and the second a field of the same name");
        let raw = b"From: a@x.de\nTo:\n\nSubject: x\n\nbody";
        assert_eq!(read_msg(raw).0.len(), 3, "a field without a value is unfinished");
        let raw = b"Received: from a\n by b;\n\nSubject: x\nMessage-ID: <m@x>\n\nbody";
        let (h, section, _) = read_msg(raw);
        assert_eq!(h.len(), 3);
        assert_eq!(&raw[section.body_start..], b"body");
    }

    #[test]
    fn a_body_that_merely_looks_like_headers_stays_the_body() {
        for raw in [
            // The first block was finished.
            b"From: a@x.de\nTo: b@y.de\n\nSubject: Angebot\nDate: today\n\nbody".as_slice(),
            // A value that merely ends in a colon is finished.
            b"From: a@x.de\nX-Subject: Fwd:\n\nTo: c@x.de\nDate: today\n\nbody",
            // Unknown field names.
            b"From: a@x.de\nTo: b@y.de,\n\nSubject: Angebot\nX-Note: 1\n\nbody",
            // A field the first block already has.
            b"From: a@x.de\nSubject: a,\n\nSubject: Angebot\n\nbody",
            // The first block has a Content-Type, the second none.
            b"Content-Type: text/plain;\n\nSubject: Angebot\n\nbody",
            // No blank line after the second block.
            b"From: a@x.de\nTo: b@y.de,\n\nSubject: Angebot",
            // A line of text in it.
            b"From: a@x.de\nTo: b@y.de,\n\nSubject: Angebot\nHallo\n\nbody",
        ] {
            let (_, section, p) = read_msg(raw);
            let blank = raw.windows(2).position(|w| w == b"\n\n").unwrap_or(0) + 2;
            assert_eq!(section.body_start, blank, "{}", String::from_utf8_lossy(raw));
            assert!(p.is_empty());
        }
        // At most once.
        let raw = b"From: a@x.de\nTo: b@y.de,\n\nSubject: s\nCc: c@x.de,\n\nDate: today\n\nbody";
        let (h, section, _) = read_msg(raw);
        assert_eq!(h.len(), 4);
        assert_eq!(&raw[section.body_start..], b"Date: today\n\nbody");
    }

    #[test]
    fn raw_8bit_values_are_kept_for_decoding_later() {
        let (h, section, _) = read_msg(b"Subject: Gr\xfc\xdfe\nTo: J\xc3\xb6rg <j@x>\n\n");
        assert_eq!(h[0], pair("Subject", "Grüße"));
        assert_eq!(section.raw_values, vec![(0, b"Gr\xfc\xdfe".to_vec())]);
    }
}
