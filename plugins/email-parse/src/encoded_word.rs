//! RFC 2047 encoded-words (`=?charset?Q?…?=`, `=?charset?B?…?=`) in header values.

use crate::charset::{self, Detection, Note};
use crate::transfer::{self, Base64Error};

/// Decodes the RFC 2047 encoded-words in a header value, in any charset encoding_rs knows (and
/// UTF-7, IBM850; unknown ones are read as UTF-8 with replacement characters), as leniently as
/// Thunderbird and Gmail read them:
///
/// - whitespace between two adjacent encoded-words is dropped, as the RFC says, and none is
///   needed between them (`=?utf-8?Q?a?==?utf-8?Q?b?=`) or before one (`Re:=?utf-8?Q?x?=`);
/// - adjacent words in the same charset are joined before decoding, so a character split across
///   two of them comes out whole; each word in another charset is decoded in its own;
/// - the encoded text may hold spaces (`=?utf-8?Q?J=C3=B6rg M=C3=BCller?=`, as some mailers
///   write) and even `?` — a word ends at the first `?=` — but not the start of another word;
/// - `q`/`b` in either case, base64 with or without padding, `_` as a space in Q;
/// - a word whose charset label does not fit its bytes is recovered as body text is (see the
///   crate's charset rules): UTF-8 under a Latin-1 label, Shift_JIS under ISO-2022-JP, …
///
/// Words are decoded wherever they stand, as mail clients do; malformed words are left as they
/// are. Control characters that encoded text carries (line breaks, …) become spaces.
///
/// ```
/// assert_eq!(email_parse::decode_header("=?ISO-8859-1?Q?Gr=FC=DFe_?= =?UTF-8?B?8J+Riw==?= aus Berlin"),
///            "Grüße 👋 aus Berlin");
/// assert_eq!(email_parse::decode_header("Re:=?utf-8?q?J=C3=B6rg M=C3=BCller?="), "Re:Jörg Müller");
/// ```
pub fn decode_header(value: &str) -> String {
    decode_words(value, &mut |_| {}, &mut Detection::default())
}

/// [`decode_header`], calling `note` with each word whose charset was unknown or mislabelled, and
/// detecting charsets within the parse's budget.
pub(crate) fn decode_words(value: &str, note: &mut dyn FnMut(Note), detection: &mut Detection) -> String {
    if !value.contains("=?") {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut pending: Option<(String, Vec<u8>)> = None;
    let mut copied = 0;
    let mut search = 0;
    let mut ends = Ends { from: 0, found: value.find("?=") };
    while let Some(found) = value[search..].find("=?") {
        let start = search + found;
        let Some((end, label, bytes)) = word_at(value, start, &mut ends) else {
            search = start + 2;
            continue;
        };
        let gap = &value[copied..start];
        let joins = pending.as_ref().is_some_and(|(l, _)| l.eq_ignore_ascii_case(label));
        if pending.is_some() && gap.chars().all(char::is_whitespace) {
            if !joins {
                flush(&mut out, &mut pending, note, detection);
            }
        } else {
            flush(&mut out, &mut pending, note, detection);
            out.push_str(gap);
        }
        match &mut pending {
            Some((_, acc)) => acc.extend_from_slice(&bytes),
            None => pending = Some((label.to_owned(), bytes)),
        }
        copied = end;
        search = end;
    }
    flush(&mut out, &mut pending, note, detection);
    out.push_str(&value[copied..]);
    out
}

/// Decodes the collected bytes of adjacent same-charset words (so that a character split across
/// two words comes out whole) and appends them.
fn flush(
    out: &mut String,
    pending: &mut Option<(String, Vec<u8>)>,
    note: &mut dyn FnMut(Note),
    detection: &mut Detection,
) {
    let Some((label, bytes)) = pending.take() else { return };
    let decoded = charset::decode(Some(&label), &bytes, detection);
    if let Some(n) = decoded.note {
        note(n);
    }
    out.extend(decoded.text.chars().map(|c| if c.is_control() { ' ' } else { c }));
}

/// The next `?=` in a value, remembered: words are read left to right, so a search starts where
/// the last one ended, and a value full of `=?` without `?=` is scanned once, not once per `=?`.
struct Ends {
    /// Where the last search started.
    from: usize,
    /// What it found.
    found: Option<usize>,
}

impl Ends {
    /// The first `?=` at or after `from`.
    fn at_or_after(&mut self, value: &str, from: usize) -> Option<usize> {
        if from < self.from || self.found.is_some_and(|p| p < from) {
            self.from = from;
            self.found = value[from..].find("?=").map(|i| from + i);
        }
        self.found
    }
}

/// The longest charset label read (RFC 2978 names are at most 40 characters).
const MAX_LABEL: usize = 64;

/// Reads the encoded-word starting at `start` (which holds `=?`): its end, charset and bytes.
fn word_at<'v>(value: &'v str, start: usize, ends: &mut Ends) -> Option<(usize, &'v str, Vec<u8>)> {
    let rest = &value[start + 2..];
    // Bounded, like every search here: a search per `=?` to the end of the value would make
    // a value of many `=?` quadratic.
    let q1 = rest.bytes().take(MAX_LABEL + 1).position(|b| b == b'?')?;
    let label = &rest[..q1];
    if label.is_empty() || label.bytes().any(|b| b.is_ascii_whitespace() || b == b'=') {
        return None;
    }
    let after = &rest[q1 + 1..];
    let mut chars = after.bytes();
    let encoding = chars.next()?.to_ascii_uppercase();
    if chars.next()? != b'?' {
        return None;
    }
    let text_start = start + 2 + q1 + 1 + 2;
    // The first `?=` ends the word (`=?utf-8?Q?Was??=` is "Was?"). Another word's start before
    // it means this one never ended: it stays as it is, and the next one is read on its own.
    let q2 = ends.at_or_after(value, text_start)? - text_start;
    let text = &value[text_start..text_start + q2];
    if text.contains("=?") {
        return None;
    }
    let bytes = match encoding {
        b'Q' => q_decode(text.as_bytes()),
        b'B' => match transfer::base64(text.as_bytes()) {
            (bytes, None | Some(Base64Error::Incomplete)) => bytes,
            (_, Some(Base64Error::InvalidAt(_))) => return None,
        },
        _ => return None,
    };
    let end = text_start + q2 + 2;
    Some((end, label, bytes))
}

/// The "Q" encoding: `_` is a space, `=XX` a byte; anything else stands for itself.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hi = text.get(i + 1).copied().and_then(transfer::hex_value);
                let lo = text.get(i + 2).copied().and_then(transfer::hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'=');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknowns(value: &str) -> (String, Vec<String>) {
        let mut seen = Vec::new();
        let text = decode_words(
            value,
            &mut |n| {
                if let Note::Unknown(l) = n {
                    seen.push(l)
                }
            },
            &mut Detection::default(),
        );
        (text, seen)
    }

    #[test]
    fn q_and_b_in_any_charset() {
        assert_eq!(decode_header("=?iso-8859-1?q?J=F6rg_M=FCller?="), "Jörg Müller");
        assert_eq!(decode_header("=?UTF-8?B?R3LDvMOfZQ==?="), "Grüße");
        assert_eq!(decode_header("=?KOI8-R?B?8NLJ18XU?="), "Привет");
        assert_eq!(decode_header("=?ISO-8859-15?Q?=A4?="), "€");
        assert_eq!(decode_header("=?utf-8*de?Q?Hallo?="), "Hallo");
        assert_eq!(decode_header("=?utf-8?q??="), "");
    }

    #[test]
    fn adjacent_words_join_but_text_keeps_its_spaces() {
        assert_eq!(decode_header("=?UTF-8?Q?a?= =?UTF-8?Q?b?=\t =?ISO-8859-1?Q?c?="), "abc");
        assert_eq!(decode_header("Re: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus Berlin"), "Re: Grüße aus Berlin");
        assert_eq!(decode_header("x =?UTF-8?Q?a?= y =?UTF-8?Q?b?="), "x a y b");
        // A character split across two words comes out whole.
        assert_eq!(decode_header("=?UTF-8?B?R3LD?= =?UTF-8?B?vA==?="), "Grü");
        assert_eq!(decode_header("Re:=?UTF-8?Q?=C3=A4?="), "Re:ä");
    }

    #[test]
    fn malformed_words_stay() {
        for v in [
            "=?UTF-8?Q?no end",
            "=?UTF-8?X?abc?=",
            "=??Q?abc?=",
            "=?UTF-8?B?!!!!?=",
            "plain = ? text",
            "=?",
            "=?UTF-8",
            "=?UTF-8?Q",
            "=?UTF-8?Q?never ends =?",
        ] {
            assert_eq!(decode_header(v), v);
        }
        assert_eq!(decode_header("=?UTF-8?Q?a=ZZ?="), "a=ZZ");
    }

    #[test]
    fn unknown_charset_is_reported_and_read_as_utf8() {
        assert_eq!(unknowns("=?x-foo?Q?caf=C3=A9?="), ("café".to_owned(), vec!["x-foo".to_owned()]));
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(decode_header("=?UTF-8?Q?a=0D=0Ab?="), "a  b");
    }

    /// What Thunderbird and Gmail accept that strict RFC 2047 does not.
    #[test]
    fn lenient_words() {
        // Spaces inside the encoded text.
        assert_eq!(decode_header("=?utf-8?Q?J=C3=B6rg M=C3=BCller?="), "Jörg Müller");
        assert_eq!(decode_header("=?UTF-8?Q?a b?="), "a b");
        assert_eq!(decode_header("=?utf-8?B?SsO2cmcg TcO8bGxlcg==?="), "Jörg Müller");
        // No whitespace between words, or between text and a word.
        assert_eq!(decode_header("=?utf-8?Q?a?==?utf-8?Q?b?="), "ab");
        assert_eq!(decode_header("Re:=?utf-8?Q?x?="), "Re:x");
        assert_eq!(decode_header("Re:=?utf-8?Q?x?=and more"), "Re:xand more");
        // Lowercase encodings, base64 without padding, `_` as a space.
        assert_eq!(decode_header("=?utf-8?b?R3LDvMOfZQ?="), "Grüße");
        assert_eq!(decode_header("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="), "Grüße aus Köln");
        // A `?` in Q text: the first `?=` ends the word.
        assert_eq!(decode_header("=?utf-8?Q?Was??= ja"), "Was? ja");
        // A word that never ends stays, and the next one is still decoded.
        assert_eq!(decode_header("=?utf-8?Q?kein Ende =?utf-8?Q?=C3=A4?="), "=?utf-8?Q?kein Ende ä");
    }

    /// Regression guard: with spaces allowed in words, a search for each word's end that ran to
    /// the end of the value made a value of many unended `=?` quadratic.
    #[test]
    fn many_unended_words_take_linear_time() {
        let start = std::time::Instant::now();
        for value in ["=?utf-8?Q?a ".repeat(20_000), format!("{}?=", "=?".repeat(100_000))] {
            assert!(decode_header(&value) == value, "a value without a word changed");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "took {:?}", start.elapsed());
    }

    #[test]
    fn adjacent_words_in_different_charsets() {
        // Each decoded in its own charset, the whitespace between them dropped.
        assert_eq!(
            decode_header("=?iso-8859-1?Q?J=F6rg?= =?koi8-r?B?8NLJ18XU?= =?utf-8?Q?_=E2=82=AC?="),
            "JörgПривет €"
        );
        // A multi-byte character split across two words of the same charset, joined first: a
        // three-byte € and a Shift_JIS character split after the lead byte.
        assert_eq!(decode_header("=?UTF-8?Q?5_=E2=82?= =?UTF-8?Q?=AC?="), "5 €");
        assert_eq!(decode_header("=?shift_jis?B?kw==?= =?shift_jis?B?+pZ7?="), "日本");
        // But words in different charsets are never joined.
        assert_eq!(decode_header("=?UTF-8?Q?=C3=A4?= =?iso-8859-1?Q?=E4?="), "ää");
    }

    #[test]
    fn mislabelled_words_are_recovered() {
        let mut notes = Vec::new();
        let text =
            decode_words("=?iso-8859-1?Q?J=C3=B6rg_M=C3=BCller?=", &mut |n| notes.push(n), &mut Detection::default());
        assert_eq!(text, "Jörg Müller");
        assert_eq!(notes, vec![Note::Mismatch { declared: "iso-8859-1".to_owned(), read_as: "UTF-8" }]);
        assert_eq!(decode_header("=?unicode-1-1-utf-7?Q?J+APY-rg?="), "Jörg");
    }
}
