//! Telling the new part of a reply from the quoted history and the signature.

/// A reply's text in three pieces. Together they hold all of the text: only the blank lines and
/// trailing whitespace between the pieces are left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// What the sender wrote this time.
    pub new_part: String,
    /// The quoted history: from the reply header (`On … wrote:`, `-----Original Message-----`,
    /// `Von: … Gesendet: …`) or the first `>` line on.
    pub quoted: Option<String>,
    /// The sender's signature: from the `-- ` line on, or a closing `Sent from my iPhone`.
    pub signature: Option<String>,
}

/// Splits a reply's plain text into the new part, the quoted history and the signature.
///
/// The history starts at a reply header of a common client — Gmail and Thunderbird
/// (`On Tue, 24 Nov 2026 at 10:00, Anna <a@x.de> wrote:`, `Am 24.11.2026 um 10:00 schrieb
/// Anna <a@x.de>:`, also wrapped across two lines), Apple Mail (`On 24. Nov 2026, at 10:00, Anna
/// <a@x.de> wrote:`), Outlook (`-----Original Message-----`, `-----Ursprüngliche Nachricht-----`,
/// a block of `From:`/`Sent:`/`To:`/`Subject:` or `Von:`/`Gesendet:`/`An:`/`Betreff:` lines) — or
/// at `>` lines that run to the end. A quote at the top with the answer below it (bottom
/// posting) is recognised too; text that alternates between quotes and answers is left whole.
///
/// ```
/// let split = email_parse::split_quoted("Thanks!\n\n-- \nAnna\n\nOn Tue, 24 Nov 2026 at 10:00, Support <s@x.de> wrote:\n> Hi");
/// assert_eq!(split.new_part, "Thanks!");
/// assert_eq!(split.signature.as_deref(), Some("-- \nAnna"));
/// assert_eq!(split.quoted.as_deref(), Some("On Tue, 24 Nov 2026 at 10:00, Support <s@x.de> wrote:\n> Hi"));
/// ```
pub fn split_quoted(text: &str) -> Split {
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let len = lines.len();
    let all_blank = |from: usize, to: usize| lines[from..to].iter().all(|l| l.trim().is_empty());
    // A quote at the top, then the answer, with no further quote: bottom posting.
    let bottom = |q: usize, end: usize| end < len && all_blank(0, q) && !lines[end..].iter().any(|l| is_marked(l));
    // The quoted range, and the range that holds the new part and the signature.
    let (quote, new) = match find_quote(&lines) {
        None => (None, 0..len),
        Some((q, Kind::Outlook)) => (Some(q..len), 0..q),
        Some((q, Kind::Attribution(n))) => {
            let end = block_end(&lines, q + n);
            if bottom(q, end) {
                (Some(q..end), end..len)
            } else if all_blank(0, q) && end < len {
                (None, 0..len)
            } else {
                (Some(q..len), 0..q)
            }
        }
        Some((q, Kind::Marked)) => {
            let end = block_end(&lines, q);
            if end == len {
                (Some(q..len), 0..q)
            } else if bottom(q, end) {
                (Some(q..end), end..len)
            } else {
                (None, 0..len)
            }
        }
    };
    let sig = signature_start(&lines[new.clone()]).map(|s| new.start + s);
    let new_end = sig.unwrap_or(new.end);
    Split {
        new_part: tidy(&lines[new.start..new_end]).unwrap_or_default(),
        quoted: quote.and_then(|r| tidy(&lines[r])),
        signature: sig.and_then(|s| tidy(&lines[s..new.end])),
    }
}

/// Lines joined, without leading blank lines or trailing whitespace; `None` when nothing is left.
fn tidy(lines: &[&str]) -> Option<String> {
    let first = lines.iter().position(|l| !l.trim().is_empty())?;
    let joined = lines[first..].join("\n");
    Some(joined.trim_end().to_owned())
}

/// How the quoted history starts.
enum Kind {
    /// A reply header of this many lines, then (usually) `>` lines.
    Attribution(usize),
    /// An Outlook-style separator or header block; the history runs to the end, unmarked.
    Outlook,
    /// `>` lines without a header.
    Marked,
}

fn is_marked(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

/// Where the run of `>` and blank lines starting at `from` ends.
fn block_end(lines: &[&str], from: usize) -> usize {
    let mut end = from.min(lines.len());
    while end < lines.len() && (is_marked(lines[end]) || lines[end].trim().is_empty()) {
        end += 1;
    }
    end
}

fn find_quote(lines: &[&str]) -> Option<(usize, Kind)> {
    for i in 0..lines.len() {
        let t = lines[i].trim();
        if t.is_empty() {
            continue;
        }
        if is_marked(t) {
            // A header line just above, in a language or form not known here.
            let above = (1..=2).map_while(|k| i.checked_sub(k)).find(|&j| !lines[j].trim().is_empty());
            if let Some(j) = above
                && i - j <= 2
                && looks_like_header(lines[j].trim())
            {
                return Some((j, Kind::Attribution(i - j)));
            }
            return Some((i, Kind::Marked));
        }
        if is_separator(t) || header_block(lines, i) {
            return Some((i, Kind::Outlook));
        }
        if t.len() >= 10 && t.bytes().all(|b| b == b'_') {
            let next = (i + 1..lines.len().min(i + 4)).find(|&j| !lines[j].trim().is_empty());
            if next.is_some_and(|j| header_block(lines, j)) {
                return Some((i, Kind::Outlook));
            }
        }
        if is_attribution(t) {
            return Some((i, Kind::Attribution(1)));
        }
        if let Some(next) = lines.get(i + 1).map(|l| l.trim())
            && !next.is_empty()
            && starts_attribution(t)
            && is_attribution(&format!("{t} {next}"))
        {
            return Some((i, Kind::Attribution(2)));
        }
    }
    None
}

/// `On … wrote:`, `Am … schrieb …:` and their kin, on one (joined) line.
fn is_attribution(t: &str) -> bool {
    if t.len() > 400 || !t.ends_with(':') {
        return false;
    }
    let lower = t.to_lowercase();
    (lower.starts_with("on ") && lower.ends_with("wrote:"))
        || (lower.starts_with("am ") && lower.contains(" schrieb"))
        || lower.contains(" schrieb am ")
        || (lower.starts_with("le ") && (lower.ends_with("a écrit :") || lower.ends_with("a écrit:")))
        || (lower.starts_with("el ") && lower.ends_with("escribió:"))
        || (lower.ends_with(" wrote:") && (lower.contains('@') || lower.contains(|c: char| c.is_ascii_digit())))
}

fn starts_attribution(t: &str) -> bool {
    let lower = t.get(..3).unwrap_or("").to_ascii_lowercase();
    matches!(lower.as_str(), "on " | "am " | "le " | "el ")
}

/// A line ending in `:` that names a date or an address: a reply header of some client.
fn looks_like_header(t: &str) -> bool {
    t.len() <= 300 && t.ends_with(':') && (t.contains('@') || t.contains(|c: char| c.is_ascii_digit()))
}

/// `-----Original Message-----` and its translations.
fn is_separator(t: &str) -> bool {
    if !t.starts_with("---") {
        return false;
    }
    let core = t.trim_matches(|c: char| c == '-' || c == ' ').to_lowercase();
    matches!(
        core.as_str(),
        "original message"
            | "ursprüngliche nachricht"
            | "original-nachricht"
            | "originalnachricht"
            | "message d'origine"
            | "mensaje original"
            | "messaggio originale"
            | "oorspronkelijk bericht"
    )
}

/// The value of a `Name: value` line with `name` among `names` (case-insensitive, bold stars
/// of plain-text conversions ignored).
fn field_named(line: &str, names: &[&str]) -> bool {
    let t = line.trim().trim_start_matches('*');
    let Some(colon) = t.find(':') else { return false };
    let name = t[..colon].trim();
    names.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// An Outlook header block: `From:`/`Von:`, then within a few lines a date and a recipient or
/// subject line.
fn header_block(lines: &[&str], i: usize) -> bool {
    if !field_named(lines[i], &["From", "Von", "De", "Van", "Da"]) {
        return false;
    }
    let (mut date, mut other) = (false, false);
    for line in lines.iter().skip(i + 1).take(6) {
        date |= field_named(line, &["Sent", "Date", "Gesendet", "Datum", "Envoyé", "Enviado", "Verzonden", "Inviato"]);
        other |= field_named(line, &["To", "An", "Subject", "Betreff", "Cc", "À", "Para", "Aan", "Onderwerp", "Objet"]);
    }
    date && other
}

/// Where the signature starts in `lines`: the last `-- ` line (or `--`, when few lines follow),
/// else a closing "Sent from my …" line.
fn signature_start(lines: &[&str]) -> Option<usize> {
    if let Some(i) = lines.iter().rposition(|l| *l == "-- ") {
        return Some(i);
    }
    if let Some(i) = lines.iter().rposition(|l| l.trim_end() == "--")
        && lines.len() - i <= 15
    {
        return Some(i);
    }
    let last = lines.iter().rposition(|l| !l.trim().is_empty())?;
    let t = lines[last].trim().to_lowercase();
    let mobile = ["sent from my ", "sent from mail for ", "get outlook for ", "von meinem ", "gesendet von meinem "];
    (mobile.iter().any(|p| t.starts_with(p)) && t.len() < 100).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, Option<String>, Option<String>) {
        let s = split_quoted(text);
        (s.new_part, s.quoted, s.signature)
    }

    fn non_ws(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// Nothing but whitespace is lost.
    fn keeps_everything(text: &str) {
        let s = split_quoted(text);
        let mut pieces = [Some(s.new_part.clone()), s.quoted.clone(), s.signature.clone()]
            .into_iter()
            .flatten()
            .map(|p| non_ws(&p))
            .collect::<Vec<_>>();
        pieces.sort();
        let all = non_ws(text);
        assert_eq!(pieces.iter().map(String::len).sum::<usize>(), all.len(), "{text:?}");
        for p in pieces {
            assert!(all.contains(&p), "{p:?} not in {text:?}");
        }
    }

    #[test]
    fn gmail_english_and_german() {
        let text =
            "Works now, thanks.\n\nOn Tue, 24 Nov 2026 at 10:00, Anna <a@x.de> wrote:\n\n> Try again?\n>\n> Anna\n";
        let (new, quoted, sig) = split(text);
        assert_eq!(new, "Works now, thanks.");
        assert_eq!(
            quoted.as_deref(),
            Some("On Tue, 24 Nov 2026 at 10:00, Anna <a@x.de> wrote:\n\n> Try again?\n>\n> Anna")
        );
        assert_eq!(sig, None);
        keeps_everything(text);

        let text = "Danke!\n\nAm Di., 24. Nov. 2026 um 10:00 Uhr schrieb Anna Berg <\nanna@x.de>:\n\n> Hallo\n";
        let (new, quoted, _) = split(text);
        assert_eq!(new, "Danke!");
        assert!(quoted.unwrap_or_default().starts_with("Am Di., 24. Nov. 2026"));
        keeps_everything(text);
    }

    #[test]
    fn headers_wrapped_across_two_lines() {
        let text = "Fine.\n\nOn Tue, 24 Nov 2026 at 10:00, Anna Berg <\nanna@x.de> wrote:\n\n> Is it?\n";
        let (new, quoted, _) = split(text);
        assert_eq!((new.as_str(), quoted.as_deref()), ("Fine.", Some(&text[7..text.len() - 1])));
        let text = "Gut.\n\nAm 24.11.2026 um 10:00 schrieb Anna Berg\n<anna@x.de>:\n> Passt?";
        let (new, quoted, _) = split(text);
        assert_eq!((new.as_str(), quoted.as_deref()), ("Gut.", Some(&text[6..])));
        // A line that merely starts like a header does not pull in the next.
        assert_eq!(split("On Monday we meet.\nSee you then:").1, None);
    }

    #[test]
    fn thunderbird_and_apple() {
        let (new, quoted, _) = split("Ja.\n\nAm 24.11.2026 um 10:00 schrieb Anna <a@x.de>:\n> Passt das?\n");
        assert_eq!(
            (new.as_str(), quoted.as_deref()),
            ("Ja.", Some("Am 24.11.2026 um 10:00 schrieb Anna <a@x.de>:\n> Passt das?"))
        );
        let (new, quoted, _) = split("Ja.\n\n> Am 24.11.2026 um 10:00 schrieb Anna:\n> \n> Passt das?\n");
        assert_eq!(
            (new.as_str(), quoted.as_deref()),
            ("Ja.", Some("> Am 24.11.2026 um 10:00 schrieb Anna:\n> \n> Passt das?"))
        );
        let (new, quoted, _) = split("Yes.\n\nOn 24. Nov 2026, at 10:00, Anna <a@x.de> wrote:\n\n> Okay?");
        assert_eq!((new.as_str(), quoted.is_some()), ("Yes.", true));
        let (new, quoted, _) = split("Ja.\n\nAm 24.11.2026 um 10:00 schrieb Anna:\n\n> Passt das?");
        assert_eq!((new.as_str(), quoted.is_some()), ("Ja.", true));
    }

    #[test]
    fn outlook_blocks() {
        let text = "Passt.\n\nViele Grüße\nJörg\n\nVon: Anna Berg <anna@x.de>\nGesendet: Dienstag, 24. November 2026 10:00\nAn: Jörg <j@y.de>\nBetreff: Termin\n\nHallo Jörg,\n";
        let (new, quoted, _) = split(text);
        assert_eq!(new, "Passt.\n\nViele Grüße\nJörg");
        assert!(quoted.unwrap_or_default().starts_with("Von: Anna Berg"));
        keeps_everything(text);

        let (new, quoted, _) = split("OK\n-----Original Message-----\nFrom: a\nSent: b\nTo: c\n\nold");
        assert_eq!(
            (new.as_str(), quoted.as_deref()),
            ("OK", Some("-----Original Message-----\nFrom: a\nSent: b\nTo: c\n\nold"))
        );
        let (new, quoted, _) = split("OK\n\n-----Ursprüngliche Nachricht-----\nalt");
        assert_eq!((new.as_str(), quoted.as_deref()), ("OK", Some("-----Ursprüngliche Nachricht-----\nalt")));
        let (new, quoted, _) =
            split("OK\n\n________________________________\nFrom: A <a@x>\nSent: Tuesday\nTo: B\nSubject: S\n\nold");
        assert_eq!(new, "OK");
        assert!(quoted.unwrap_or_default().starts_with("_____"));
        // A lone "From:" line is no header block.
        assert_eq!(split("From: the team\nHello").1, None);
    }

    #[test]
    fn signatures() {
        let (new, quoted, sig) = split("Hi\n\n-- \nAnna Berg\nACME\n");
        assert_eq!((new.as_str(), quoted, sig.as_deref()), ("Hi", None, Some("-- \nAnna Berg\nACME")));
        assert_eq!(split("Hi\n--\nAnna").2.as_deref(), Some("--\nAnna"));
        assert_eq!(split("Hi\n\nVon meinem iPhone gesendet").2.as_deref(), Some("Von meinem iPhone gesendet"));
        assert_eq!(split("Hi\n\nSent from my iPhone\n\n> old").2.as_deref(), Some("Sent from my iPhone"));
        let long = format!("Hi\n--\n{}", "line\n".repeat(20));
        assert_eq!(split(&long).2, None);
    }

    #[test]
    fn bottom_posting_and_interleaving() {
        let text = "> Can you check?\n\nDone.\n-- \nAnna";
        let (new, quoted, sig) = split(text);
        assert_eq!(
            (new.as_str(), quoted.as_deref(), sig.as_deref()),
            ("Done.", Some("> Can you check?"), Some("-- \nAnna"))
        );
        keeps_everything(text);
        let text = "On Tue, 24 Nov 2026, Anna wrote:\n> Q1\n\nA1\n";
        assert_eq!(split(text).0, "A1");
        let text = "> Q1\nA1\n> Q2\nA2\n";
        assert_eq!(split(text), (text.trim_end().to_owned(), None, None));
        keeps_everything(text);
    }

    #[test]
    fn unknown_header_language_above_quote() {
        let text = "Tak!\n\nDen 24. nov. 2026 kl. 10.00 skrev Anna <a@x.dk>:\n> Hej";
        let (new, quoted, _) = split(text);
        assert_eq!(new, "Tak!");
        assert!(quoted.unwrap_or_default().starts_with("Den 24."));
    }

    #[test]
    fn plain_text_without_quotes() {
        assert_eq!(split(""), (String::new(), None, None));
        assert_eq!(split("Just text.\nOn Monday we meet."), ("Just text.\nOn Monday we meet.".to_owned(), None, None));
        assert_eq!(split("\r\nHallo\r\n"), ("Hallo".to_owned(), None, None));
    }
}
