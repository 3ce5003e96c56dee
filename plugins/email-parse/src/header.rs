//! Reading a header section: fields, folding, limits.

use crate::charset;
use crate::model::{Header, Limits, ProblemKind, Problems};

/// A header section read from the start of an entity.
pub(crate) struct Section {
    /// The fields, in order.
    pub headers: Vec<Header>,
    /// Where the body starts.
    pub body_start: usize,
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

/// Whether `line` starts with a field name and a colon (obsolete whitespace before it allowed).
fn field_name_len(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(colon)
}

/// Reads the header section at the start of `raw`, up to the blank line (or the first line that
/// is no header field, which then starts the body). `place` prefixes problem messages
/// (`"part 2: "`, or empty for the message itself).
pub(crate) fn read(raw: &[u8], limits: &Limits, problems: &mut Problems, place: &str) -> Section {
    let mut headers = Vec::new();
    let mut field: Option<Field> = None;
    let mut pos = 0;
    let mut line_no = 0usize;
    let mut too_many = false;
    let max_line = limits.max_header_line.max(1);
    let body_start = loop {
        if pos >= raw.len() {
            break raw.len();
        }
        let (line, next) = match raw[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (&raw[pos..pos + i], pos + i + 1),
            None => (&raw[pos..], raw.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_no += 1;
        if line.is_empty() {
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
        if matches!(line[0], b' ' | b'\t') {
            match &mut field {
                Some(f) => f.append(line, max_line),
                // The rest of a field past the limit.
                None if too_many => {}
                None => problems.push(
                    ProblemKind::MalformedHeader,
                    format!("{place}header line {line_no} continues no field; ignored"),
                ),
            }
        } else if field_name_len(line).is_some() {
            if let Some(done) = field.take() {
                done.finish(&mut headers, limits, problems, place);
            }
            if headers.len() < limits.max_headers {
                field = Some(Field::new(line));
            } else if !too_many {
                too_many = true;
                problems.push(
                    ProblemKind::TooManyHeaders,
                    format!("{place}more than {} header fields; the rest ignored", limits.max_headers),
                );
            }
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
        done.finish(&mut headers, limits, problems, place);
    }
    Section { headers, body_start }
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

    /// Unfolds a continuation line onto the field (keeping its leading whitespace), within `max`.
    fn append(&mut self, line: &[u8], max: usize) {
        self.full_len += line.len();
        let room = max.saturating_sub(self.bytes.len());
        if room > 0 {
            let take = utf8_cut(line, room);
            self.bytes.extend_from_slice(&line[..take]);
        }
    }

    fn finish(self, headers: &mut Vec<Header>, limits: &Limits, problems: &mut Problems, place: &str) {
        let Some(colon) = field_name_len(&self.bytes) else { return };
        let name = String::from_utf8_lossy(self.bytes[..colon].trim_ascii_end()).into_owned();
        if self.full_len > self.bytes.len() && self.full_len > limits.max_header_line {
            problems.push(
                ProblemKind::HeaderLineTooLong,
                format!("{place}header field {name} of {} bytes cut at {}", self.full_len, limits.max_header_line),
            );
        }
        // Decoding can grow the text (an invalid byte becomes a three-byte U+FFFD, a Latin-1
        // byte two): cut again so a value never exceeds the line limit.
        let mut value = charset::decode_guess(&self.bytes[colon + 1..]).trim().to_owned();
        value.truncate(utf8_cut(value.as_bytes(), limits.max_header_line.max(1)));
        headers.push(Header { name, value });
    }
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
}
