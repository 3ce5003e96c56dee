//! Turning bytes in a named charset into text.

use encoding_rs::{Encoding, REPLACEMENT, UTF_8, WINDOWS_1252};

/// Finds the encoding for a MIME charset name: the labels encoding_rs knows (which include
/// `latin1`, `iso8859-1`, `cp1252`, `koi8-r`, `shift_jis`, …), plus a few spellings mail
/// software uses that are not among them. An RFC 2231 language suffix (`utf-8*de`) is ignored.
pub(crate) fn lookup(label: &str) -> Option<&'static Encoding> {
    let label = label.split('*').next().unwrap_or(label).trim().trim_matches('"');
    if label.is_empty() {
        return None;
    }
    let found = Encoding::for_label(label.as_bytes()).or_else(|| {
        let lower = label.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "latin-1" | "iso-latin-1" | "iso_latin_1" | "8859-1" | "iso8859_1" => "iso-8859-1",
            "latin-9" | "latin9" | "iso8859_15" | "8859-15" => "iso-8859-15",
            "cp-1252" | "windows1252" | "win-1252" => "windows-1252",
            "cp-1251" | "windows1251" | "win-1251" => "windows-1251",
            "cp-1250" | "windows1250" | "win-1250" => "windows-1250",
            "utf_8" | "utf-8-bom" => "utf-8",
            "sjis" | "shift-jis" | "x-sjis-open" | "cp932" | "ms932" => "shift_jis",
            "cp936" | "ms936" => "gbk",
            "cp949" | "ms949" | "uhc" => "euc-kr",
            "cp950" | "ms950" => "big5",
            _ => {
                // `iso_8859-2`, `ISO8859_2`, `x-iso-8859-2` and the like.
                let normal = lower.trim_start_matches("x-").replace('_', "-");
                return Encoding::for_label(normal.as_bytes());
            }
        };
        Encoding::for_label(alias.as_bytes())
    })?;
    // The "replacement" encoding decodes everything to one U+FFFD: for mail, unknown is better.
    if found == REPLACEMENT { None } else { Some(found) }
}

/// Decodes `bytes` in `encoding`, without BOM sniffing but dropping a BOM of the same encoding.
pub(crate) fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> String {
    if encoding == UTF_8 {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let (text, _) = encoding.decode_without_bom_handling(bytes);
    text.into_owned()
}

/// Reads bytes whose charset is not declared: UTF-8 when they are valid UTF-8, else
/// Windows-1252 (the usual case of undeclared 8-bit mail, and a superset of ISO-8859-1).
pub(crate) fn decode_guess(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.strip_prefix('\u{feff}').unwrap_or(s).to_owned(),
        Err(_) => decode_with(WINDOWS_1252, bytes),
    }
}

/// The outcome of decoding text in a declared charset.
pub(crate) struct Decoded {
    /// The text.
    pub text: String,
    /// The declared charset, when it was not known (the text was then read as UTF-8 with
    /// replacement characters).
    pub unknown: Option<String>,
}

/// Decodes text declared as `charset` (`None`: not declared). ASCII declarations are not
/// trusted with 8-bit bytes: those are read as UTF-8 when valid, else Windows-1252.
pub(crate) fn decode(charset: Option<&str>, bytes: &[u8]) -> Decoded {
    let Some(label) = charset.map(str::trim).filter(|l| !l.is_empty()) else {
        return Decoded { text: decode_guess(bytes), unknown: None };
    };
    let lower = label.to_ascii_lowercase();
    if matches!(lower.as_str(), "us-ascii" | "ascii" | "us_ascii" | "ansi_x3.4-1968" | "iso646-us" | "default") {
        return Decoded { text: decode_guess(bytes), unknown: None };
    }
    match lookup(label) {
        Some(encoding) => Decoded { text: decode_with(encoding, bytes), unknown: None },
        None => Decoded { text: String::from_utf8_lossy(bytes).into_owned(), unknown: Some(label.to_owned()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_labels_and_aliases() {
        for label in ["latin1", "ISO-8859-1", "iso8859-1", "iso_8859-1", "Latin-1", "cp1252", "windows-1252"] {
            assert_eq!(lookup(label).map(|e| e.name()), Some("windows-1252"), "{label}");
        }
        assert_eq!(lookup("ISO-8859-15").map(|e| e.name()), Some("ISO-8859-15"));
        assert_eq!(lookup("koi8-r").map(|e| e.name()), Some("KOI8-R"));
        assert_eq!(lookup("Shift_JIS").map(|e| e.name()), Some("Shift_JIS"));
        assert_eq!(lookup("sjis").map(|e| e.name()), Some("Shift_JIS"));
        assert_eq!(lookup("utf-8*de").map(|e| e.name()), Some("UTF-8"));
        assert_eq!(lookup("x-iso_8859-2").map(|e| e.name()), Some("ISO-8859-2"));
        assert!(lookup("x-foo").is_none());
        assert!(lookup("iso-2022-kr").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn decodes_declared_and_guessed() {
        assert_eq!(decode(Some("iso-8859-15"), b"5 \xa4").text, "5 €");
        assert_eq!(decode(Some("windows-1252"), b"5 \x80").text, "5 €");
        assert_eq!(decode(Some("koi8-r"), b"\xf0\xd2\xc9\xd7\xc5\xd4").text, "Привет");
        assert_eq!(decode(Some("shift_jis"), b"\x93\xfa\x96\x7b").text, "日本");
        assert_eq!(decode(None, "Grüße".as_bytes()).text, "Grüße");
        assert_eq!(decode(None, b"Gr\xfc\xdfe").text, "Grüße");
        assert_eq!(decode(Some("us-ascii"), "Grüße".as_bytes()).text, "Grüße");
        assert_eq!(decode(Some("utf-8"), b"\xef\xbb\xbfhi").text, "hi");
        let unknown = decode(Some("x-foo"), b"a\xffb");
        assert_eq!(unknown.text, "a\u{fffd}b");
        assert_eq!(unknown.unknown.as_deref(), Some("x-foo"));
    }
}
