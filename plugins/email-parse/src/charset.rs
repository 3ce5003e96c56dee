//! Turning bytes in a named charset into text, and recovering text whose charset was
//! mislabelled or not declared at all.

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, REPLACEMENT, UTF_8, WINDOWS_1252};

use crate::model::ProblemKind;

/// A charset this crate can decode: one of the WHATWG encodings encoding_rs implements, or one
/// of the few that mail still carries and encoding_rs leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charset {
    /// An encoding of the WHATWG Encoding Standard.
    Web(&'static Encoding),
    /// UTF-7 (RFC 2152), which old Outlook versions and some webmails still send.
    Utf7,
    /// IBM code page 850 (DOS Latin-1), from mail written by DOS-era software.
    Cp850,
}

impl Charset {
    /// The charset's name, as problem messages say it.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Web(e) => e.name(),
            Charset::Utf7 => "UTF-7",
            Charset::Cp850 => "IBM850",
        }
    }

    /// Whether every byte is one character: text in such a charset never fails to decode, so
    /// only its look tells that the label was wrong.
    fn is_single_byte(self) -> bool {
        match self {
            Charset::Web(e) => e.is_single_byte(),
            Charset::Utf7 => false,
            Charset::Cp850 => true,
        }
    }
}

/// Finds the charset for a MIME charset name: the WHATWG labels encoding_rs knows (which include
/// `latin1`, `iso8859-1`, `cp1252`, `koi8-r`, `shift_jis`, `x-gbk`, `ks_c_5601-1987`,
/// `tis-620`, `macintosh`, `us-ascii`, …), plus the spellings mail software uses that are not
/// among them. An RFC 2231 language suffix (`utf-8*de`) is ignored.
pub(crate) fn lookup(label: &str) -> Option<Charset> {
    let label = label.split('*').next().unwrap_or(label).trim().trim_matches('"');
    if label.is_empty() {
        return None;
    }
    let found = match Encoding::for_label(label.as_bytes()) {
        Some(e) => e,
        None => {
            let lower = label.to_ascii_lowercase();
            let alias = match lower.as_str() {
                "latin-1" | "iso-latin-1" | "iso_latin_1" | "8859-1" | "iso8859_1" => "iso-8859-1",
                "latin-9" | "latin9" | "iso8859_15" | "8859-15" => "iso-8859-15",
                "cp-1252" | "windows1252" | "win-1252" => "windows-1252",
                "cp-1251" | "windows1251" | "win-1251" => "windows-1251",
                "cp-1250" | "windows1250" | "win-1250" => "windows-1250",
                "utf_8" | "utf-8-bom" => "utf-8",
                "sjis" | "shift-jis" | "x-sjis-open" | "cp932" | "ms932" => "shift_jis",
                // GB2312 text is GBK text: GBK is its superset, as WHATWG reads it.
                "cp936" | "ms936" | "iso-gb2312" | "cn-gb" | "x-euc-cn" | "euc-cn" | "gb2312-80" => "gbk",
                // KS C 5601 is the character set of EUC-KR; WHATWG's label is `ks_c_5601-1987`.
                "cp949" | "ms949" | "uhc" | "ks_c_5601" | "ks_c_5601-1989" | "ksc5601" => "euc-kr",
                "cp950" | "ms950" | "big5-hkscs" => "big5",
                "cp874" | "x-windows-874" | "tis620" => "windows-874",
                "mac-roman" | "macroman" => "macintosh",
                "utf-7" | "unicode-1-1-utf-7" | "x-unicode-2-0-utf-7" | "csunicode11utf7" => {
                    return Some(Charset::Utf7);
                }
                "ibm850" | "cp850" | "cp-850" | "850" | "csibm850" => return Some(Charset::Cp850),
                _ => {
                    // `iso_8859-2`, `ISO8859_2`, `x-iso-8859-2` and the like.
                    let normal = lower.trim_start_matches("x-").replace('_', "-");
                    return Encoding::for_label(normal.as_bytes()).filter(|&e| e != REPLACEMENT).map(Charset::Web);
                }
            };
            Encoding::for_label(alias.as_bytes())?
        }
    };
    // The "replacement" encoding decodes everything to one U+FFFD: for mail, unknown is better.
    if found == REPLACEMENT { None } else { Some(Charset::Web(found)) }
}

/// Whether a label says nothing about 8-bit bytes: ASCII (which WHATWG reads as Windows-1252,
/// but mail that carries it with 8-bit bytes has in fact no trustworthy label), or the
/// `unknown-8bit` of RFC 1428 and its spellings. Such text is read as undeclared.
fn says_nothing(label: &str) -> bool {
    let lower = label.trim().trim_matches('"').to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "us-ascii"
            | "ascii"
            | "us_ascii"
            | "ansi_x3.4-1968"
            | "iso646-us"
            | "default"
            | "us"
            | "iso-ir-6"
            | "csascii"
            | "unknown-8bit"
            | "x-unknown"
            | "unknown"
    )
}

/// Decodes `bytes` in `charset`, without BOM sniffing but dropping a BOM of the same encoding;
/// also says whether some bytes were no text in it (and became U+FFFD).
pub(crate) fn decode_with(charset: Charset, bytes: &[u8]) -> (String, bool) {
    match charset {
        Charset::Web(encoding) if encoding == UTF_8 => {
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            match std::str::from_utf8(bytes) {
                Ok(s) => (s.to_owned(), false),
                Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
            }
        }
        Charset::Web(encoding) => {
            let (text, errors) = encoding.decode_without_bom_handling(bytes);
            (text.into_owned(), errors)
        }
        Charset::Utf7 => utf7(bytes),
        Charset::Cp850 => (bytes.iter().map(|&b| cp850(b)).collect(), false),
    }
}

/// [`decode_with`], for callers that do not care about errors.
pub(crate) fn decode_lossy(charset: Charset, bytes: &[u8]) -> String {
    decode_with(charset, bytes).0
}

/// Reads bytes whose charset is not declared, without detection: UTF-8 when they are valid
/// UTF-8, else Windows-1252 (the usual case of undeclared 8-bit mail, and a superset of
/// ISO-8859-1). For short strings where detection has too little to go on.
pub(crate) fn decode_guess(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.strip_prefix('\u{feff}').unwrap_or(s).to_owned(),
        Err(_) => decode_lossy(Charset::Web(WINDOWS_1252), bytes),
    }
}

/// How much of a text chardetng looks at, from just before its first non-ASCII byte: its guess
/// is settled long before. chardetng reads some 7 MB/s, so this is about 2 ms.
const DETECTION_SAMPLE: usize = 16 * 1024;

/// How many bytes chardetng may look at while one message is parsed, all texts together
/// (about 35 ms): a hostile message of 500 mislabelled parts or a thousand mislabelled
/// encoded-words must not make parsing a hundred times slower. Past it, text is read without
/// detection: undeclared 8-bit text as Windows-1252, mislabelled text in its label.
const DETECTION_BUDGET: usize = 256 * 1024;

/// What is left of the [`DETECTION_BUDGET`] of one parse.
#[derive(Debug)]
pub(crate) struct Detection {
    left: usize,
}

impl Default for Detection {
    fn default() -> Self {
        Detection { left: DETECTION_BUDGET }
    }
}

impl Detection {
    /// No detection at all, for callers that only want addresses, not names.
    pub fn none() -> Detection {
        Detection { left: 0 }
    }

    /// chardetng's guess for 8-bit bytes that are not UTF-8; `None` when the budget is spent.
    pub fn guess(&mut self, bytes: &[u8]) -> Option<&'static Encoding> {
        // ASCII before the first 8-bit byte tells little, and cannot end inside a character.
        let first = bytes.iter().position(|&b| !b.is_ascii())?;
        let from = first.saturating_sub(64);
        let sample = &bytes[from..bytes.len().min(from + DETECTION_SAMPLE)];
        if self.left == 0 {
            return None;
        }
        self.left = self.left.saturating_sub(sample.len());
        let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
        detector.feed(sample, true);
        Some(detector.guess(None, Utf8Detection::Deny))
    }
}

/// What went differently from the label while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// The declared charset is not known; the text was read as UTF-8 with replacement.
    Unknown(String),
    /// The declared charset did not fit the bytes; they were read as `read_as`.
    Mismatch { declared: String, read_as: &'static str },
    /// No charset (or ASCII) was declared for 8-bit bytes that are not UTF-8; they were read as
    /// `read_as`, which detection chose.
    Undeclared { read_as: &'static str },
}

impl Note {
    /// The kind of problem it is.
    pub fn kind(&self) -> ProblemKind {
        match self {
            Note::Unknown(_) => ProblemKind::UnknownCharset,
            Note::Mismatch { .. } | Note::Undeclared { .. } => ProblemKind::CharsetMismatch,
        }
    }

    /// The problem's message, after the place (`body: `, `part 2: `, …) and what was decoded.
    pub fn describe(&self, what: &str) -> String {
        match self {
            Note::Unknown(label) => format!("unknown charset \"{label}\"{what}; read as UTF-8 with replacement"),
            Note::Mismatch { declared, read_as } => {
                format!("declared charset \"{declared}\"{what} does not fit the bytes; read as {read_as}")
            }
            Note::Undeclared { read_as } => format!("8-bit text{what} without a charset; read as {read_as}"),
        }
    }
}

/// The outcome of decoding text in a declared charset.
pub(crate) struct Decoded {
    /// The text.
    pub text: String,
    /// What went differently from the label, if anything.
    pub note: Option<Note>,
    /// The charset the text was read in, when a label or detection chose it (not when ASCII or
    /// undeclared UTF-8 made the choice moot).
    pub charset: Option<Charset>,
}

/// Decodes text declared as `charset` (`None`: not declared), recovering from wrong labels:
///
/// - Undeclared, or declared as ASCII or `unknown-8bit`: UTF-8 when the bytes are valid UTF-8
///   (or mostly: see [`mostly_utf8`]); else chardetng's guess, or Windows-1252 when the guess
///   does not decode them either.
/// - Declared, when decoding hits bytes that are no text in the charset (they would become
///   U+FFFD): UTF-8 when valid, else chardetng's guess when it decodes them without errors.
/// - Declared as a single-byte charset, when the bytes are valid UTF-8 with non-ASCII
///   characters: UTF-8. Real Latin-1 or Cyrillic text is practically never valid UTF-8, while
///   UTF-8 read as Latin-1 is the `Ã¤`/`â€` mojibake everyone has seen.
///
/// Detection runs only on non-ASCII bytes that are not UTF-8 and have no label they fit.
pub(crate) fn decode(label: Option<&str>, bytes: &[u8], detection: &mut Detection) -> Decoded {
    let label = label.map(|l| l.trim().trim_matches('"')).filter(|l| !l.is_empty());
    let Some(label) = label.filter(|l| !says_nothing(l)) else {
        // An ASCII or unknown-8bit label over 8-bit bytes is a mismatch; no label is undeclared.
        let note = |read_as: Charset| match label {
            Some(ascii) => Note::Mismatch { declared: ascii.to_owned(), read_as: read_as.name() },
            None => Note::Undeclared { read_as: read_as.name() },
        };
        if let Ok(s) = std::str::from_utf8(bytes) {
            let note = (label.is_some() && !bytes.is_ascii()).then(|| note(Charset::Web(UTF_8)));
            return Decoded { text: s.strip_prefix('\u{feff}').unwrap_or(s).to_owned(), note, charset: None };
        }
        if mostly_utf8(bytes) {
            let utf8 = Charset::Web(UTF_8);
            return Decoded { text: decode_lossy(utf8, bytes), note: Some(note(utf8)), charset: Some(utf8) };
        }
        let guessed = detection.guess(bytes).map(|e| (Charset::Web(e), decode_with(Charset::Web(e), bytes)));
        let (charset, text) = match guessed {
            Some((guess, (text, false))) => (guess, text),
            _ => (Charset::Web(WINDOWS_1252), decode_lossy(Charset::Web(WINDOWS_1252), bytes)),
        };
        return Decoded { text, note: Some(note(charset)), charset: Some(charset) };
    };
    let Some(declared) = lookup(label) else {
        return Decoded {
            text: String::from_utf8_lossy(bytes).into_owned(),
            note: Some(Note::Unknown(label.to_owned())),
            charset: None,
        };
    };
    let (text, errors) = decode_with(declared, bytes);
    let utf8 = || std::str::from_utf8(bytes).ok();
    let mismatch = |read_as: Charset| Some(Note::Mismatch { declared: label.to_owned(), read_as: read_as.name() });
    // A stray byte in UTF-8 text (a Latin-1 quote pasted in, a message cut short) is no reason
    // to read all of it otherwise: only text that is mostly not UTF-8 was mislabelled.
    if errors && !(declared == Charset::Web(UTF_8) && mostly_utf8(bytes)) {
        if let Some(s) = utf8() {
            let charset = Charset::Web(UTF_8);
            return Decoded { text: s.to_owned(), note: mismatch(charset), charset: Some(charset) };
        }
        if let Some(guess) = detection.guess(bytes).map(Charset::Web)
            && guess != declared
            && let (guessed, false) = decode_with(guess, bytes)
        {
            return Decoded { text: guessed, note: mismatch(guess), charset: Some(guess) };
        }
    } else if declared.is_single_byte()
        && !bytes.is_ascii()
        && let Some(s) = utf8()
    {
        let charset = Charset::Web(UTF_8);
        return Decoded { text: s.to_owned(), note: mismatch(charset), charset: Some(charset) };
    }
    Decoded { text, note: None, charset: Some(declared) }
}

/// Whether bytes that are not valid UTF-8 are still mostly UTF-8: more well-formed multi-byte
/// sequences than invalid ones. Latin-1 or GBK text has next to no well-formed ones.
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut valid, mut invalid) = (0usize, 0usize);
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                valid += s.bytes().filter(|&b| b >= 0xC0).count();
                break;
            }
            Err(e) => {
                valid += rest[..e.valid_up_to()].iter().filter(|&&b| b >= 0xC0).count();
                // A sequence cut at the end is a message cut short, not another charset.
                let Some(n) = e.error_len() else { break };
                invalid += 1;
                rest = &rest[e.valid_up_to() + n..];
            }
        }
    }
    valid > invalid
}

/// Decodes UTF-7 (RFC 2152): `+` opens a run of modified base64 holding UTF-16, which ends at
/// the first character outside base64 (a `-` there is absorbed); `+-` is a plus sign.
fn utf7(bytes: &[u8]) -> (String, bool) {
    fn b64(b: u8) -> Option<u32> {
        Some(u32::from(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let mut out = String::with_capacity(bytes.len());
    let mut errors = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'+' {
            if b.is_ascii() {
                out.push(char::from(b));
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
                errors = true;
            }
            continue;
        }
        if bytes.get(i) == Some(&b'-') {
            out.push('+');
            i += 1;
            continue;
        }
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut units: Vec<u16> = Vec::new();
        while let Some(v) = bytes.get(i).copied().and_then(b64) {
            acc = (acc << 6 | v) & 0xFF_FFFF;
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push((acc >> bits) as u16);
            }
            i += 1;
        }
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        for c in char::decode_utf16(units) {
            out.push(c.unwrap_or_else(|_| {
                errors = true;
                char::REPLACEMENT_CHARACTER
            }));
        }
    }
    (out, errors)
}

/// IBM code page 850. encoding_rs leaves the DOS code pages out (WHATWG has none), and reading
/// them as Windows-1252 would garble every accented letter, so the upper half is tabled here.
fn cp850(b: u8) -> char {
    const HIGH: [char; 128] = [
        'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
        'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', 'ø', '£', 'Ø', '×', 'ƒ', //
        'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '®', '¬', '½', '¼', '¡', '«', '»', //
        '░', '▒', '▓', '│', '┤', 'Á', 'Â', 'À', '©', '╣', '║', '╗', '╝', '¢', '¥', '┐', //
        '└', '┴', '┬', '├', '─', '┼', 'ã', 'Ã', '╚', '╔', '╩', '╦', '╠', '═', '╬', '¤', //
        'ð', 'Ð', 'Ê', 'Ë', 'È', 'ı', 'Í', 'Î', 'Ï', '┘', '┌', '█', '▄', '¦', 'Ì', '▀', //
        'Ó', 'ß', 'Ô', 'Ò', 'õ', 'Õ', 'µ', 'þ', 'Þ', 'Ú', 'Û', 'Ù', 'ý', 'Ý', '¯', '´', //
        '\u{ad}', '±', '‗', '¾', '¶', '§', '÷', '¸', '°', '¨', '·', '¹', '³', '²', '■', '\u{a0}',
    ];
    if b < 0x80 { char::from(b) } else { HIGH[usize::from(b - 0x80)] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(label: Option<&str>, bytes: &[u8]) -> Decoded {
        decode(label, bytes, &mut Detection::default())
    }

    fn name(label: &str) -> Option<&'static str> {
        lookup(label).map(Charset::name)
    }

    #[test]
    fn known_labels_and_aliases() {
        for label in ["latin1", "ISO-8859-1", "iso8859-1", "iso_8859-1", "Latin-1", "cp1252", "windows-1252"] {
            assert_eq!(name(label), Some("windows-1252"), "{label}");
        }
        assert_eq!(name("ISO-8859-15"), Some("ISO-8859-15"));
        assert_eq!(name("koi8-r"), Some("KOI8-R"));
        assert_eq!(name("Shift_JIS"), Some("Shift_JIS"));
        assert_eq!(name("sjis"), Some("Shift_JIS"));
        assert_eq!(name("utf-8*de"), Some("UTF-8"));
        assert_eq!(name("x-iso_8859-2"), Some("ISO-8859-2"));
        assert!(lookup("x-foo").is_none());
        assert!(lookup("iso-2022-kr").is_none());
        assert!(lookup("x-iso-2022-kr").is_none());
        assert!(lookup("").is_none());
    }

    /// Every alias mail carries that the brief for issue #12 lists, and what it reads as.
    #[test]
    fn mail_aliases() {
        for (label, expected) in [
            ("iso-gb2312", "GBK"),
            ("x-gbk", "GBK"),
            ("gb_2312-80", "GBK"),
            ("chinese", "GBK"),
            ("cn-gb", "GBK"),
            ("x-euc-cn", "GBK"),
            ("GB2312", "GBK"),
            ("ks_c_5601-1987", "EUC-KR"),
            ("KS_C_5601", "EUC-KR"),
            ("windows-874", "windows-874"),
            ("tis-620", "windows-874"),
            ("x-mac-roman", "macintosh"),
            ("macintosh", "macintosh"),
            ("ansi_x3.4-1968", "windows-1252"),
            ("us-ascii", "windows-1252"),
            ("ascii", "windows-1252"),
            ("unicode-1-1-utf-7", "UTF-7"),
            ("utf-7", "UTF-7"),
            ("UTF-7", "UTF-7"),
            ("x-user-defined", "x-user-defined"),
            ("cp-850", "IBM850"),
            ("ibm850", "IBM850"),
            ("cp850", "IBM850"),
            ("big5-hkscs", "Big5"),
        ] {
            assert_eq!(name(label), Some(expected), "{label}");
        }
    }

    #[test]
    fn utf7_and_cp850_decode() {
        assert_eq!(utf7(b"Hi Mom -+Jjo--!"), ("Hi Mom -\u{263a}-!".to_owned(), false));
        assert_eq!(utf7(b"+ZeVnLIqe-"), ("日本語".to_owned(), false));
        assert_eq!(utf7(b"A+-B"), ("A+B".to_owned(), false));
        assert_eq!(utf7(b"J+APY-rg M+APw-ller"), ("Jörg Müller".to_owned(), false));
        assert_eq!(utf7(b"+2D3eAQ-"), ("\u{1f601}".to_owned(), false)); // a surrogate pair
        assert!(utf7(b"+2D0-").1); // a lone surrogate
        assert!(utf7(b"a\xffb").1);
        assert_eq!(dec(Some("utf-7"), b"Gr+APwA3w-e").text, "Grüße");
        assert_eq!(dec(Some("ibm850"), b"Gr\x81\xe1e \x9c").text, "Grüße £");
    }

    #[test]
    fn decodes_declared_and_guessed() {
        assert_eq!(dec(Some("iso-8859-15"), b"5 \xa4").text, "5 €");
        assert_eq!(dec(Some("windows-1252"), b"5 \x80").text, "5 €");
        assert_eq!(dec(Some("koi8-r"), b"\xf0\xd2\xc9\xd7\xc5\xd4").text, "Привет");
        assert_eq!(dec(Some("shift_jis"), b"\x93\xfa\x96\x7b").text, "日本");
        assert_eq!(dec(Some("x-mac-roman"), b"Gr\x9f\xa7e").text, "Grüße");
        assert_eq!(dec(Some("tis-620"), b"\xca\xc7\xd1\xca\xb4\xd5").text, "สวัสดี");
        assert_eq!(dec(Some("ks_c_5601-1987"), b"\xbe\xc8\xb3\xe7").text, "안녕");
        assert_eq!(dec(Some("x-user-defined"), b"a\x80").text, "a\u{f780}");
        assert_eq!(dec(None, "Grüße".as_bytes()).text, "Grüße");
        assert_eq!(dec(None, "Grüße".as_bytes()).note, None);
        let ascii = dec(Some("us-ascii"), "Grüße".as_bytes());
        assert_eq!(ascii.text, "Grüße");
        assert_eq!(ascii.note, Some(Note::Mismatch { declared: "us-ascii".to_owned(), read_as: "UTF-8" }));
        let ascii = dec(Some("ANSI_X3.4-1968"), b"Gr\xfc\xdfe aus K\xf6ln");
        assert_eq!(ascii.text, "Grüße aus Köln");
        assert_eq!(ascii.note, Some(Note::Mismatch { declared: "ANSI_X3.4-1968".to_owned(), read_as: "windows-1252" }));
        assert_eq!(dec(Some("utf-8"), b"\xef\xbb\xbfhi").text, "hi");
        let unknown = dec(Some("x-foo"), b"a\xffb");
        assert_eq!(unknown.text, "a\u{fffd}b");
        assert_eq!(unknown.note, Some(Note::Unknown("x-foo".to_owned())));
        // Plain ASCII and UTF-8 never need detection, whatever the label.
        for label in [None, Some("utf-8"), Some("iso-8859-1"), Some("us-ascii")] {
            assert_eq!(dec(label, b"plain").note, None);
        }
    }

    #[test]
    fn undeclared_8bit_text_is_detected() {
        let d = dec(None, b"K\xe4se f\xfcr 5 \x80, sch\xf6ne Gr\xfc\xdfe");
        assert_eq!(d.text, "Käse für 5 €, schöne Grüße");
        assert_eq!(d.note, Some(Note::Undeclared { read_as: "windows-1252" }));
        let (gbk, _, _) = encoding_rs::GBK.encode("您好，我的订单还没有收到，请帮我查一下物流信息。谢谢！");
        let d = dec(None, &gbk);
        assert_eq!(d.text, "您好，我的订单还没有收到，请帮我查一下物流信息。谢谢！");
        assert_eq!(d.note, Some(Note::Undeclared { read_as: "GBK" }));
        let (big5, _, _) = encoding_rs::BIG5.encode("您好，我的訂單還沒有收到，請幫我查一下物流資訊。謝謝！");
        let d = dec(None, &big5);
        assert_eq!(d.text, "您好，我的訂單還沒有收到，請幫我查一下物流資訊。謝謝！");
        assert_eq!(d.note, Some(Note::Undeclared { read_as: "Big5" }));
    }

    #[test]
    fn mislabelled_text_is_recovered() {
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("お世話になっております。注文の件でご連絡しました。");
        let d = dec(Some("ISO-2022-JP"), &sjis);
        assert_eq!(d.text, "お世話になっております。注文の件でご連絡しました。");
        assert_eq!(d.note, Some(Note::Mismatch { declared: "ISO-2022-JP".to_owned(), read_as: "Shift_JIS" }));
        let d = dec(Some("iso-8859-1"), "Schöne Grüße, Jörg".as_bytes());
        assert_eq!(d.text, "Schöne Grüße, Jörg");
        assert_eq!(d.note, Some(Note::Mismatch { declared: "iso-8859-1".to_owned(), read_as: "UTF-8" }));
        // Latin-1 under a UTF-8 label.
        let d = dec(Some("utf-8"), b"Sch\xf6ne Gr\xfc\xdfe aus K\xf6ln, J\xf6rg M\xfcller");
        assert_eq!(d.text, "Schöne Grüße aus Köln, Jörg Müller");
        assert!(matches!(d.note, Some(Note::Mismatch { .. })));
        let d = dec(Some("unknown-8bit"), b"K\xe4se f\xfcr 5 \x80, sch\xf6ne Gr\xfc\xdfe");
        assert_eq!(d.text, "Käse für 5 €, schöne Grüße");
        assert_eq!(d.note, Some(Note::Mismatch { declared: "unknown-8bit".to_owned(), read_as: "windows-1252" }));
        // UTF-8 with a stray Latin-1 byte stays UTF-8, labelled or not.
        let mixed = b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln, sch\xf6n";
        let d = dec(Some("utf-8"), mixed);
        assert_eq!((d.text.as_str(), d.note), ("Grüße aus Köln, sch\u{fffd}n", None));
        let d = dec(None, mixed);
        assert_eq!(d.text, "Grüße aus Köln, sch\u{fffd}n");
        assert_eq!(d.note, Some(Note::Undeclared { read_as: "UTF-8" }));
        assert!(!mostly_utf8(b"Sch\xf6ne Gr\xfc\xdfe"));
        assert!(mostly_utf8(b"\xc3\xa4\xc3"));
        // A correct label is kept.
        assert_eq!(dec(Some("iso-8859-1"), b"Gr\xfc\xdfe").note, None);
    }

    #[test]
    fn detection_stops_when_its_budget_is_spent() {
        let gbk = encoding_rs::GBK.encode("您好，我的订单还没有收到，请帮我查一下物流信息。谢谢！").0.into_owned();
        let mut detection = Detection::default();
        let mut detected = 0;
        while decode(None, &gbk, &mut detection).note == Some(Note::Undeclared { read_as: "GBK" }) {
            detected += 1;
        }
        assert_eq!(detected, DETECTION_BUDGET.div_ceil(gbk.len()));
        // Then undeclared 8-bit text is Windows-1252, and mislabelled text keeps its label.
        assert_eq!(decode(None, &gbk, &mut detection).note, Some(Note::Undeclared { read_as: "windows-1252" }));
        let sjis = encoding_rs::SHIFT_JIS.encode("お世話になっております").0.into_owned();
        let d = decode(Some("iso-2022-jp"), &sjis, &mut detection);
        assert_eq!((d.note, d.text.contains('\u{fffd}')), (None, true));
        // A sample starts just before the first 8-bit byte.
        let mut long = vec![b'a'; 100_000];
        long.extend_from_slice(&gbk);
        let mut detection = Detection::default();
        assert_eq!(decode(None, &long, &mut detection).note, Some(Note::Undeclared { read_as: "GBK" }));
        assert_eq!(detection.left, DETECTION_BUDGET - 64 - gbk.len());
    }
}
