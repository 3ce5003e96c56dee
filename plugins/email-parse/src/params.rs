//! `Content-Type` and `Content-Disposition` values: `value; name=param; …`, with RFC 2231
//! extended parameters (`name*=charset'lang'%XX…`) and continuations (`name*0*=…; name*1=…`).

use crate::charset;
use crate::transfer::hex_value;

/// A header value with parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Valued {
    /// The value before the first `;`, trimmed and lowercased.
    pub value: String,
    /// The parameters: lowercase names, decoded values, RFC 2231 ones in place of plain ones.
    params: Vec<(String, String)>,
}

impl Valued {
    /// The parameter named `name` (lowercase).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The most parameters read from one header; real ones have a handful.
const MAX_PARAMS: usize = 64;

/// A parameter as written: name (lowercase), value (unquoted).
struct RawParam {
    name: String,
    value: String,
}

/// Reads `value; a=b; c="d; e"; …`. Malformed parameters are skipped.
pub(crate) fn parse(header: &str) -> Valued {
    let mut rest = header;
    let value_end = rest.find(';').unwrap_or(rest.len());
    let value = strip_comments(&rest[..value_end]).trim().to_ascii_lowercase();
    rest = &rest[value_end..];
    let mut raw = Vec::new();
    while let Some(after) = rest.strip_prefix(';')
        && raw.len() < MAX_PARAMS
    {
        rest = after.trim_start();
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim().to_ascii_lowercase();
        rest = &rest[name_end..];
        let Some(after_eq) = rest.strip_prefix('=') else { continue };
        let (param_value, after_value) = read_value(after_eq.trim_start());
        rest = after_value;
        // Skip anything up to the next `;` (a comment, junk after a quoted string).
        rest = &rest[rest.find(';').unwrap_or(rest.len())..];
        if !name.is_empty() && !name.contains(char::is_whitespace) {
            raw.push(RawParam { name, value: param_value });
        }
    }
    Valued { value, params: assemble(raw) }
}

/// Reads a quoted string (with backslash escapes; unclosed: to the end) or a token (to the next
/// `;`, trimmed). Returns it and the rest.
fn read_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => return (out, &quoted[i + 1..]),
                c => out.push(c),
            }
        }
        (out, "")
    } else {
        let end = s.find(';').unwrap_or(s.len());
        (strip_comments(&s[..end]).trim().to_owned(), &s[end..])
    }
}

/// Removes `(comments)` outside quoted strings.
fn strip_comments(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('(') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.into()
}

/// One section of an RFC 2231 parameter: its index, whether it is percent-encoded, its value.
type Piece = (u32, bool, String);

/// Joins RFC 2231 continuations and decodes extended values; those win over plain parameters
/// of the same name.
fn assemble(raw: Vec<RawParam>) -> Vec<(String, String)> {
    let mut plain: Vec<(String, String)> = Vec::new();
    let mut pieces: Vec<(String, Vec<Piece>)> = Vec::new();
    for RawParam { name, value } in raw {
        let Some(star) = name.find('*') else {
            if !plain.iter().any(|(n, _)| *n == name) {
                plain.push((name, value));
            }
            continue;
        };
        let base = name[..star].to_owned();
        let tail = &name[star + 1..];
        let (index, extended) = if tail.is_empty() {
            (0, true)
        } else {
            let (digits, extended) = match tail.strip_suffix('*') {
                Some(d) => (d, true),
                None => (tail, false),
            };
            match digits.parse::<u32>() {
                Ok(i) if digits.len() <= 4 => (i, extended),
                _ => continue,
            }
        };
        match pieces.iter_mut().find(|(b, _)| *b == base) {
            Some((_, list)) => list.push((index, extended, value)),
            None => pieces.push((base, vec![(index, extended, value)])),
        }
    }
    for (base, mut list) in pieces {
        list.sort_by_key(|(i, _, _)| *i);
        list.dedup_by_key(|(i, _, _)| *i);
        let mut bytes = Vec::new();
        let mut label = None;
        for (n, (_, extended, value)) in list.iter().enumerate() {
            if !extended {
                bytes.extend_from_slice(value.as_bytes());
                continue;
            }
            let mut encoded = value.as_str();
            if n == 0 {
                let mut parts = value.splitn(3, '\'');
                if let (Some(cs), Some(_lang), Some(text)) = (parts.next(), parts.next(), parts.next()) {
                    label = Some(cs.to_owned());
                    encoded = text;
                }
            }
            percent_decode(encoded.as_bytes(), &mut bytes);
        }
        let text = match label.as_deref().and_then(charset::lookup) {
            Some(known) => charset::decode_lossy(known, &bytes),
            None => charset::decode_guess(&bytes),
        };
        match plain.iter_mut().find(|(n, _)| *n == base) {
            Some(slot) => slot.1 = text,
            None => plain.push((base, text)),
        }
    }
    plain
}

/// `%XX` to a byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (s.get(i + 1).copied().and_then(hex_value), s.get(i + 2).copied().and_then(hex_value))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_and_plain_params() {
        let v = parse("Multipart/Alternative;\t boundary=\"b1; x\"; CHARSET=utf-8 (comment); x");
        assert_eq!(v.value, "multipart/alternative");
        assert_eq!(v.param("boundary"), Some("b1; x"));
        assert_eq!(v.param("charset"), Some("utf-8"));
        assert_eq!(v.param("x"), None);
        let v = parse("attachment; filename=\"a \\\"b\\\".pdf\"; filename=second");
        assert_eq!(v.param("filename"), Some("a \"b\".pdf"));
        let v = parse("attachment; filename=Rechnung März.pdf");
        assert_eq!(v.param("filename"), Some("Rechnung März.pdf"));
        let v = parse("text/plain; name=\"unclosed");
        assert_eq!(v.param("name"), Some("unclosed"));
        assert_eq!(parse("").value, "");
        assert_eq!(parse("text/plain (comment)").value, "text/plain");
    }

    #[test]
    fn rfc2231_extended_and_continued() {
        let v = parse("attachment; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf; filename=\"Rechnung Maerz.pdf\"");
        assert_eq!(v.param("filename"), Some("Rechnung März.pdf"));
        let v = parse("attachment; filename*0*=ISO-8859-1'de'Gr%FC; filename*1=\"%sse \"; filename*2*=%E4.txt");
        assert_eq!(v.param("filename"), Some("Grü%sse ä.txt"));
        let v = parse("attachment; filename*1=\"b.txt\"; filename*0=\"a\"");
        assert_eq!(v.param("filename"), Some("ab.txt"));
        let v = parse("attachment; filename*=\"utf-8''%E2%82%AC%zz\"");
        assert_eq!(v.param("filename"), Some("€%zz"));
        let v = parse("attachment; filename*=%C3%A4");
        assert_eq!(v.param("filename"), Some("ä"));
        let v = parse("attachment; filename*=x-foo''%E4");
        assert_eq!(v.param("filename"), Some("ä"));
        let v = parse("attachment; filename*99999=a");
        assert_eq!(v.param("filename"), None);
    }
}
