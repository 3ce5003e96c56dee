//! How long a text is as one SMS, and cutting it to fit.
//!
//! An SMS carries 160 characters of the GSM 03.38 alphabet (the characters of its extension
//! table, `€ [ ] { } | ^ ~ \`, count twice), or 70 UTF-16 units as soon as one character is
//! outside that alphabet. German umlauts and `ß` are in it; typographic quotes, dashes and `…`
//! are not, so they are replaced by their plain forms first (as SMS gateways' "smart encoding"
//! does) rather than silently halving the message.

/// Characters of the GSM 03.38 default alphabet.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of its extension table, sent as an escape plus the character.
const GSM_EXTENDED: &str = "\u{c}^{}\\[~]|€";

/// One message in the GSM alphabet.
pub(crate) const GSM_LIMIT: usize = 160;
/// One message in UCS-2.
pub(crate) const UCS2_LIMIT: usize = 70;

/// The length of a text as an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Length {
    /// Septets (GSM) or UTF-16 units (UCS-2).
    pub(crate) units: usize,
    /// What one message holds in that encoding.
    pub(crate) limit: usize,
    /// `GSM` or `UCS-2`.
    pub(crate) encoding: &'static str,
}

fn gsm_cost(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Replaces typographic characters outside the GSM alphabet by plain ones.
pub(crate) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '‘' | '’' | '‚' | '′' | '`' | '´' => out.push('\''),
            '“' | '”' | '„' | '″' | '«' | '»' => out.push('"'),
            '–' | '—' | '‒' | '−' | '‐' => out.push('-'),
            '…' => out.push_str("..."),
            '\u{a0}' | '\u{2009}' | '\u{202f}' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The length of `text` as an SMS.
pub(crate) fn length(text: &str) -> Length {
    match text.chars().map(gsm_cost).sum::<Option<usize>>() {
        Some(units) => Length { units, limit: GSM_LIMIT, encoding: "GSM" },
        None => Length { units: text.encode_utf16().count(), limit: UCS2_LIMIT, encoding: "UCS-2" },
    }
}

/// `text` cut to one message, ending in `...` (or `…` in UCS-2, where it costs one unit); the
/// flag says whether it was cut.
pub(crate) fn fit(text: &str) -> (String, bool) {
    let len = length(text);
    if len.units <= len.limit {
        return (text.to_owned(), false);
    }
    let (mark, mark_units) = if len.encoding == "GSM" { ("...", 3) } else { ("…", 1) };
    let budget = len.limit - mark_units;
    let mut used = 0;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let cost = if len.encoding == "GSM" { gsm_cost(c).unwrap_or(1) } else { c.len_utf16() };
        if used + cost > budget {
            break;
        }
        used += cost;
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out.push_str(mark);
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let cases = [
            ("Hallo Jürgen, Ihr Paket ist unterwegs.", 38, "GSM"),
            ("Preis: 12,50 €", 15, "GSM"),
            ("{[]}", 8, "GSM"),
            ("Łukasz", 6, "UCS-2"),
            ("ok 👍", 5, "UCS-2"),
        ];
        for (text, units, encoding) in cases {
            let len = length(text);
            assert_eq!((len.units, len.encoding), (units, encoding), "{text}");
        }
    }

    #[test]
    fn fitting() {
        let short = "Danke!";
        assert_eq!(fit(short), (short.to_owned(), false));
        let long = "a".repeat(158) + " bcd";
        let (cut, truncated) = fit(&long);
        assert!(truncated);
        assert_eq!(length(&cut).units, 160);
        assert!(cut.ends_with("a..."), "{cut}");
        let exactly = "€".repeat(80);
        assert_eq!(fit(&exactly), (exactly.clone(), false));
        let (cut, truncated) = fit(&"ł".repeat(71));
        assert!(truncated);
        assert_eq!(length(&cut).units, 70);
        assert_eq!(plain("„Gut“ – sagt er…"), "\"Gut\" - sagt er...");
    }
}
