//! The language a customer writes in, read off their messages.
//!
//! Every inbound message's text is run through a trigram detector (`whatlang`, 69 languages);
//! the result is stored on the message (`language`, `language_script`,
//! `language_confidence`). A customer whose language nobody set (`language_origin =
//! 'default'`) takes the language of their first message whose detection is reliable, and
//! the templates then answer in it. A language detected that way (`'detected'`) changes only
//! when a later message is long and its detection very confident ([`Detected::overrides`]);
//! one set by a person or the API (`'given'`) never changes by itself.

/// Fewer letters than this say too little about a language: no detection.
const MIN_LETTERS: usize = 12;

/// The most text looked at, in bytes: the first paragraphs tell the language as well as the
/// whole message, and detection stays cheap for long mail.
const MAX_BYTES: usize = 4096;

/// A detected language changes a customer's earlier detected one only from a message with at
/// least this many letters…
const OVERRIDE_LETTERS: usize = 80;

/// …and at least this confidence.
const OVERRIDE_CONFIDENCE: f64 = 0.9;

/// What the detector says of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// ISO 639-1 code (`de`, `en`) where the language has one, else ISO 639-3.
    pub code: &'static str,
    /// The script (`Latin`, `Cyrillic`, `Mandarin`…).
    pub script: String,
    /// 0 to 1.
    pub confidence: f64,
    /// Whether the detector trusts its answer (long enough, one language clearly ahead).
    pub reliable: bool,
    /// Letters in the text looked at.
    pub letters: usize,
}

impl Detected {
    /// Whether this detection may replace a customer's language that was itself detected.
    pub fn overrides(&self) -> bool {
        self.reliable && self.confidence >= OVERRIDE_CONFIDENCE && self.letters >= OVERRIDE_LETTERS
    }
}

/// Detects the language of `text`; `None` when it is too short or has no letters to tell by.
pub fn detect(text: &str) -> Option<Detected> {
    let mut end = text.len().min(MAX_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    if letters < MIN_LETTERS {
        return None;
    }
    let info = whatlang::detect(text)?;
    Some(Detected {
        code: iso_639_1(info.lang().code()),
        script: info.script().name().to_owned(),
        confidence: info.confidence(),
        reliable: info.is_reliable(),
        letters,
    })
}

/// The two-letter code of a language the detector names by its three-letter one.
fn iso_639_1(code3: &'static str) -> &'static str {
    match code3 {
        "eng" => "en",
        "deu" => "de",
        "fra" => "fr",
        "spa" => "es",
        "ita" => "it",
        "nld" => "nl",
        "por" => "pt",
        "pol" => "pl",
        "ces" => "cs",
        "slk" => "sk",
        "slv" => "sl",
        "hrv" => "hr",
        "srp" => "sr",
        "hun" => "hu",
        "ron" => "ro",
        "bul" => "bg",
        "rus" => "ru",
        "ukr" => "uk",
        "bel" => "be",
        "ell" => "el",
        "tur" => "tr",
        "swe" => "sv",
        "dan" => "da",
        "nob" => "nb",
        "fin" => "fi",
        "est" => "et",
        "lav" => "lv",
        "lit" => "lt",
        "cmn" => "zh",
        "jpn" => "ja",
        "kor" => "ko",
        "ara" => "ar",
        "heb" => "he",
        "pes" => "fa",
        "hin" => "hi",
        "ben" => "bn",
        "tha" => "th",
        "vie" => "vi",
        "ind" => "id",
        "epo" => "eo",
        "cat" => "ca",
        "afr" => "af",
        "aze" => "az",
        "kat" => "ka",
        "hye" => "hy",
        "urd" => "ur",
        "tam" => "ta",
        "tel" => "te",
        "mar" => "mr",
        "guj" => "gu",
        "kan" => "kn",
        "mal" => "ml",
        "pan" => "pa",
        "nep" => "ne",
        "sin" => "si",
        "khm" => "km",
        "amh" => "am",
        "yid" => "yi",
        "lat" => "la",
        "tgl" => "tl",
        "zul" => "zu",
        "sna" => "sn",
        "aka" => "ak",
        "uzb" => "uz",
        "tuk" => "tk",
        "jav" => "jv",
        "mkd" => "mk",
        "ori" => "or",
        "mya" => "my",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_and_english_customer_mail_is_told_apart_reliably() {
        let de =
            detect("Hallo, mein Paket ist seit einer Woche nicht angekommen. Können Sie bitte nachsehen, wo es ist?")
                .expect("detected");
        assert_eq!((de.code, de.script.as_str()), ("de", "Latin"));
        assert!(de.reliable && de.confidence > 0.5, "{de:?}");
        let en = detect("Hello, my parcel has not arrived for a week now. Could you please check where it is?")
            .expect("detected");
        assert_eq!((en.code, en.script.as_str()), ("en", "Latin"));
        assert!(en.reliable, "{en:?}");
    }

    #[test]
    fn other_scripts_come_with_their_script_and_two_letter_code() {
        let el = detect("Καλημέρα σας, η παραγγελία μου δεν έχει φτάσει ακόμα. Μπορείτε να ελέγξετε πού βρίσκεται;")
            .expect("detected");
        assert_eq!((el.code, el.script.as_str()), ("el", "Greek"));
        let fr = detect("Bonjour, mon colis n'est toujours pas arrivé. Pouvez-vous vérifier où il se trouve ?")
            .expect("detected");
        assert_eq!(fr.code, "fr");
    }

    #[test]
    fn too_little_text_detects_nothing() {
        assert_eq!(detect("Danke!"), None);
        assert_eq!(detect("1234 5678 !!! ---"), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn only_a_long_confident_message_overrides_an_earlier_detection() {
        let short = detect("Thank you, that works now for me.").expect("detected");
        assert!(!short.overrides(), "{short:?}");
        let long = detect(
            "Thank you very much for the quick answer. The parcel arrived this morning and everything \
             was in it, so the ticket can be closed now. Have a nice weekend!",
        )
        .expect("detected");
        assert!(long.overrides(), "{long:?}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        // Byte 4096 falls inside the 2,048th `ü`: the text looked at ends before it.
        let text = format!("x{}", "ü".repeat(MAX_BYTES));
        assert!(detect(&text).is_none_or(|d| d.letters == 2048));
    }
}
