//! Address lists (`From`, `To`, …) and message-id lists (`References`, …).

use crate::charset::Detection;
use crate::encoded_word::decode_words;
use crate::model::Address;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A run of ordinary characters (addr-specs like `a.b@c.d` are one atom).
    Atom(String),
    /// A quoted string, unescaped.
    Quoted(String),
    /// A comment's text.
    Comment(String),
    /// What stood between `<` and `>`.
    Angle(String),
    Comma,
    Semicolon,
    Colon,
}

/// A token and whether whitespace (or a comment) stood right before it.
type Spaced = (Tok, bool);

fn tokenize(s: &str) -> Vec<Spaced> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut space = false;
    let mut i = 0;
    while i < bytes.len() {
        let tok = match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' => {
                space = true;
                i += 1;
                continue;
            }
            b',' => Tok::Comma,
            b';' => Tok::Semicolon,
            b':' => Tok::Colon,
            b'"' => match quoted_end(bytes, i + 1) {
                Some(end) => {
                    let tok = Tok::Quoted(unescape(&s[i + 1..end]));
                    out.push((tok, space));
                    space = false;
                    i = end + 1;
                    continue;
                }
                // An unclosed quote: read on as if it were not there.
                None => {
                    i += 1;
                    continue;
                }
            },
            b'(' => match comment_end(bytes, i) {
                Some(end) => {
                    out.push((Tok::Comment(unescape(&s[i + 1..end])), space));
                    space = true;
                    i = end + 1;
                    continue;
                }
                None => {
                    i += 1;
                    continue;
                }
            },
            b'<' => {
                let mut j = i + 1;
                let mut quoted = false;
                while j < bytes.len() && (bytes[j] != b'>' || quoted) {
                    if bytes[j] == b'"' {
                        quoted = !quoted;
                    }
                    j += 1;
                }
                out.push((Tok::Angle(s[i + 1..j].to_owned()), space));
                space = false;
                i = j + 1;
                continue;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' | b':' | b'"' | b'(' | b'<')
                {
                    i += 1;
                }
                out.push((Tok::Atom(s[start..i].to_owned()), space));
                space = false;
                continue;
            }
        };
        out.push((tok, space));
        space = false;
        i += 1;
    }
    out
}

/// Where the quoted string whose text starts at `from` ends (its closing quote), if it does.
fn quoted_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut j = from;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// Where the comment opening at `open` ends (its closing parenthesis), nesting counted.
fn comment_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = open;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// Drops the backslashes of quoted pairs.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads an address list: quoted display names, comments, groups (flattened), RFC 2047 names,
/// bare addresses, `;` used as a separator. Calls `bad` with each entry that is no address.
/// Display names are decoded within `detection`'s budget.
pub(crate) fn parse_list(value: &str, bad: &mut dyn FnMut(&str), detection: &mut Detection) -> Vec<Address> {
    let mut out = Vec::new();
    let mut current: Vec<Spaced> = Vec::new();
    let mut in_group = false;
    for (tok, space) in tokenize(value) {
        match tok {
            Tok::Comma => finish(&mut current, &mut out, bad, detection),
            Tok::Semicolon => {
                finish(&mut current, &mut out, bad, detection);
                in_group = false;
            }
            Tok::Colon if !in_group && !current.iter().any(|(t, _)| matches!(t, Tok::Angle(_))) => {
                // A group's name: its members follow, up to `;`.
                current.clear();
                in_group = true;
            }
            Tok::Colon => current.push((Tok::Atom(":".into()), space)),
            tok => current.push((tok, space)),
        }
    }
    finish(&mut current, &mut out, bad, detection);
    out
}

/// Reads one mailbox from its tokens (and empties them).
fn finish(tokens: &mut Vec<Spaced>, out: &mut Vec<Address>, bad: &mut dyn FnMut(&str), detection: &mut Detection) {
    let toks = std::mem::take(tokens);
    if toks.is_empty() {
        return;
    }
    let comment = toks.iter().find_map(|(t, _)| match t {
        Tok::Comment(c) if !c.trim().is_empty() => Some(c.as_str()),
        _ => None,
    });
    let angle = toks.iter().position(|(t, _)| matches!(t, Tok::Angle(_)));
    let (email, words) = match angle {
        Some(i) => {
            let Tok::Angle(inner) = &toks[i].0 else { return };
            let words: Vec<String> = toks[..i].iter().filter_map(|(t, _)| word(t)).collect();
            (clean_email(inner), words)
        }
        None => {
            // Chunks of words written together: `"john doe"@x.de` is one.
            let mut chunks: Vec<String> = Vec::new();
            let mut name_words: Vec<String> = Vec::new();
            for (t, space) in &toks {
                let Some(w) = word(t) else { continue };
                let text = match t {
                    Tok::Quoted(q) if !space && chunks.last().is_some() || q.contains([' ', '@', ',']) => {
                        format!("\"{q}\"")
                    }
                    _ => w.clone(),
                };
                match chunks.last_mut() {
                    Some(last) if !space => last.push_str(&text),
                    _ => chunks.push(text),
                }
                name_words.push(w);
            }
            match chunks.iter().position(|c| c.contains('@')) {
                Some(i) => {
                    let email = clean_email(&chunks[i]);
                    let words = chunks.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c.clone()).collect();
                    (email, words)
                }
                None if chunks.len() == 1 && !matches!(toks[0].0, Tok::Quoted(_)) => {
                    (clean_email(&chunks[0]), Vec::new())
                }
                None => {
                    let text = name_words.join(" ");
                    if !text.trim().is_empty() {
                        bad(text.trim());
                    }
                    return;
                }
            }
        }
    };
    if email.is_empty() {
        if !words.is_empty() {
            bad(&words.join(" "));
        }
        return;
    }
    let name = clean_name(&words.join(" "), detection).or_else(|| comment.and_then(|c| clean_name(c, detection)));
    let name = name.filter(|n| !n.eq_ignore_ascii_case(&email));
    out.push(Address { name, email });
}

/// The text of a word token.
fn word(t: &Tok) -> Option<String> {
    match t {
        Tok::Atom(a) => Some(a.clone()),
        Tok::Quoted(q) => Some(q.clone()),
        _ => None,
    }
}

/// A display name: RFC 2047 decoded, whitespace collapsed, stray quotes dropped.
fn clean_name(raw: &str, detection: &mut Detection) -> Option<String> {
    let decoded = decode_words(raw, &mut |_| {}, detection);
    let collapsed = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut name = collapsed.as_str();
    for (open, close) in [('\'', '\''), ('"', '"')] {
        if name.len() >= 2 && name.starts_with(open) && name.ends_with(close) {
            name = name[1..name.len() - 1].trim();
        }
    }
    (!name.is_empty()).then(|| name.to_owned())
}

/// An address from `<…>` or a bare addr-spec: no whitespace or comments, no source route, no
/// `mailto:`, domain lowercased.
fn clean_email(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut depth = 0usize;
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                s.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            c if depth > 0 || (!quoted && (c.is_whitespace() || c == '<' || c == '>')) => {}
            c => s.push(c),
        }
    }
    let mut email = s.as_str();
    if email.starts_with('@')
        && let Some(colon) = email.find(':')
    {
        email = &email[colon + 1..];
    }
    if email.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("mailto:")) {
        email = &email[7..];
    }
    let email = email.trim_end_matches('.');
    match email.rfind('@') {
        Some(at) => {
            let local = &email[..at];
            let local = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
                Some(inner)
                    if !inner.is_empty() && inner.chars().all(|c| c.is_alphanumeric() || "._-+".contains(c)) =>
                {
                    inner
                }
                _ => local,
            };
            format!("{local}@{}", email[at + 1..].to_lowercase())
        }
        None => email.to_owned(),
    }
}

/// The message ids in a `Message-ID`, `In-Reply-To` or `References` value, without angle
/// brackets or whitespace, duplicates dropped. Ids written without brackets are taken when no
/// bracketed one is there.
pub(crate) fn message_ids(value: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: String| {
        if !id.is_empty() && !ids.contains(&id) {
            ids.push(id);
        }
    };
    let mut chars = value.chars();
    let mut any_angle = false;
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                let mut depth = 1;
                for c in chars.by_ref() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '"' => {
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            '<' => {
                any_angle = true;
                let id: String = chars.by_ref().take_while(|&c| c != '>').filter(|c| !c.is_whitespace()).collect();
                push(id);
            }
            _ => {}
        }
    }
    if !any_angle {
        for word in value.split(|c: char| c.is_whitespace() || c == ',') {
            let word = word.trim_matches(['<', '>']);
            if word.contains('@') {
                push(word.to_owned());
            }
        }
    }
    ids
}

/// The id in a `Message-ID` value: the first bracketed one, or the whole value when it is one
/// word.
pub(crate) fn message_id(value: &str) -> Option<String> {
    if let Some(id) = message_ids(value).into_iter().next() {
        return Some(id);
    }
    let v = value.trim();
    (!v.is_empty() && !v.contains(char::is_whitespace)).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(value: &str) -> Vec<(Option<String>, String)> {
        parse_list(value, &mut |_| {}, &mut Detection::default()).into_iter().map(|a| (a.name, a.email)).collect()
    }

    fn a(name: Option<&str>, email: &str) -> (Option<String>, String) {
        (name.map(str::to_owned), email.to_owned())
    }

    #[test]
    fn common_forms() {
        assert_eq!(addrs("Anna Berg <anna@Example.DE>"), vec![a(Some("Anna Berg"), "anna@example.de")]);
        assert_eq!(addrs("\"Berg, Anna\" <Anna.Berg@X.de>"), vec![a(Some("Berg, Anna"), "Anna.Berg@x.de")]);
        assert_eq!(addrs("anna@x.de"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("<anna@x.de>"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("anna@x.de (Anna Berg)"), vec![a(Some("Anna Berg"), "anna@x.de")]);
        assert_eq!(addrs("Anna (Sales) <anna@x.de>"), vec![a(Some("Anna"), "anna@x.de")]);
        assert_eq!(
            addrs("a@x.de, \"B\" <b@y.de>;c@z.de ,, "),
            vec![a(None, "a@x.de"), a(Some("B"), "b@y.de"), a(None, "c@z.de")]
        );
        assert_eq!(addrs("'Anna Berg' <anna@x.de>"), vec![a(Some("Anna Berg"), "anna@x.de")]);
        assert_eq!(addrs("anna@x.de <anna@x.de>"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("\"Quote \\\"Q\\\" Inc\" <q@x.de>"), vec![a(Some("Quote \"Q\" Inc"), "q@x.de")]);
        assert_eq!(addrs(""), vec![]);
    }

    #[test]
    fn encoded_names() {
        assert_eq!(
            addrs("=?UTF-8?Q?J=C3=B6rg?= =?UTF-8?Q?_M=C3=BCller?= <jm@x.de>"),
            vec![a(Some("Jörg Müller"), "jm@x.de")]
        );
        assert_eq!(
            addrs("\"=?ISO-8859-1?Q?M=FCller=2C_J=F6rg?=\" <jm@x.de>"),
            vec![a(Some("Müller, Jörg"), "jm@x.de")]
        );
    }

    /// Encoded-words inside quoted display names, which RFC 2047 forbids and every client reads.
    #[test]
    fn encoded_words_in_quoted_names() {
        assert_eq!(addrs("\"=?utf-8?B?SsO2cmcgTcO8bGxlcg==?=\" <jm@x.de>"), vec![a(Some("Jörg Müller"), "jm@x.de")]);
        // With spaces inside the word, lowercase q, and text around it.
        assert_eq!(
            addrs("\"=?utf-8?q?J=C3=B6rg M=C3=BCller?= (Vertrieb)\" <jm@x.de>"),
            vec![a(Some("Jörg Müller (Vertrieb)"), "jm@x.de")]
        );
        assert_eq!(
            addrs("\"Support =?iso-8859-1?Q?M=FCller?=\" <s@x.de>, \"=?koi8-r?B?8NLJ18XU?=\" <p@x.ru>"),
            vec![a(Some("Support Müller"), "s@x.de"), a(Some("Привет"), "p@x.ru")]
        );
        // Unquoted, with a space inside the word, and without whitespace before the address.
        assert_eq!(addrs("=?utf-8?Q?J=C3=B6rg M=C3=BCller?=<jm@x.de>"), vec![a(Some("Jörg Müller"), "jm@x.de")]);
        // Adjacent words in two charsets, the second one's bytes really UTF-8.
        assert_eq!(
            addrs("\"=?iso-8859-1?Q?J=F6rg?= =?iso-8859-2?Q?_M=C3=BCller?=\" <jm@x.de>"),
            vec![a(Some("Jörg Müller"), "jm@x.de")]
        );
    }

    #[test]
    fn groups() {
        assert_eq!(addrs("undisclosed-recipients:;"), vec![]);
        assert_eq!(
            addrs("Team: a@x.de, Bob <b@x.de>; c@y.de"),
            vec![a(None, "a@x.de"), a(Some("Bob"), "b@x.de"), a(None, "c@y.de")]
        );
    }

    #[test]
    fn odd_but_seen() {
        assert_eq!(addrs("<@relay.x:anna@x.de>"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("<mailto:anna@X.de>"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("<joÿþÃerg@x.de>"), vec![a(None, "joÿþÃerg@x.de")]);
        assert_eq!(addrs("\"john doe\"@X.de"), vec![a(None, "\"john doe\"@x.de")]);
        assert_eq!(addrs("<\"anna\"@x.de>"), vec![a(None, "anna@x.de")]);
        assert_eq!(addrs("Anna anna@x.de"), vec![a(Some("Anna"), "anna@x.de")]);
        assert_eq!(addrs("MAILER-DAEMON"), vec![a(None, "MAILER-DAEMON")]);
        assert_eq!(addrs("Anna <anna@x.de"), vec![a(Some("Anna"), "anna@x.de")]);
        assert_eq!(addrs("\"unclosed <a@x.de>"), vec![a(Some("unclosed"), "a@x.de")]);
        assert_eq!(addrs("Anna Ärger <ä@Bücher.DE>"), vec![a(Some("Anna Ärger"), "ä@bücher.de")]);
        let mut bad = Vec::new();
        assert!(
            parse_list("Anna Berg, \"Only Name\"", &mut |b| bad.push(b.to_owned()), &mut Detection::default())
                .is_empty()
        );
        assert_eq!(bad, vec!["Anna Berg", "Only Name"]);
    }

    #[test]
    fn ids() {
        assert_eq!(message_ids("<a@x> <b@y>\r\n\t<a@x>"), vec!["a@x", "b@y"]);
        assert_eq!(message_ids("<a@x> (Anna's message of <c@z>)"), vec!["a@x"]);
        assert_eq!(message_ids("Anna's message of \"Tue <1>\" <a@x>"), vec!["a@x"]);
        assert_eq!(message_ids("<a @x>"), vec!["a@x"]);
        assert_eq!(message_ids("a@x, b@y"), vec!["a@x", "b@y"]);
        assert_eq!(message_ids("<>"), Vec::<String>::new());
        assert_eq!(message_id("<CAF+abc=def@mail.gmail.com>").as_deref(), Some("CAF+abc=def@mail.gmail.com"));
        assert_eq!(message_id("12345.x").as_deref(), Some("12345.x"));
        assert_eq!(message_id("two words"), None);
    }
}
