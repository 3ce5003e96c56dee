//! Helpers for threading incoming mail into tickets: the Message-IDs a message answers, and
//! a ticket tag such as `[#1042]` in its subject.

use email_parse::Parsed;

/// The most thread keys returned; a hostile `References` header may list thousands.
pub const MAX_THREAD_KEYS: usize = 50;

/// Normalises a Message-ID for lookups: surrounding space and angle brackets removed, the
/// domain part (after the last `@`) lowercased. `None` when nothing is left.
pub fn normalize_id(id: &str) -> Option<String> {
    let bare = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
    if bare.is_empty() || bare.len() > 998 {
        return None;
    }
    Some(match bare.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => bare.to_owned(),
    })
}

/// The Message-IDs a message refers to, most relevant first: `In-Reply-To`, then
/// `References` newest first; normalised ([`normalize_id`]), without duplicates, at most
/// [`MAX_THREAD_KEYS`].
pub fn thread_keys(parsed: &Parsed) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let candidates = parsed.in_reply_to.iter().chain(parsed.references.iter().rev());
    for id in candidates {
        if keys.len() >= MAX_THREAD_KEYS {
            break;
        }
        if let Some(id) = normalize_id(id)
            && !keys.contains(&id)
        {
            keys.push(id);
        }
    }
    keys
}

/// The ticket number of a tag in a subject: `[#1042]`, `[Ticket#1042]`, `[ Ticket #1042 ]`
/// (any case, spaces allowed inside the brackets). A tag glued to a word on either side
/// (`abc[#1]`, `[#1]x`) does not count. The first tag wins.
pub fn ticket_tag(subject: &str) -> Option<u64> {
    let bytes = subject.as_bytes();
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'[') {
        let open = from + i;
        from = open + 1;
        if open > 0 && is_word_char(subject, open, true) {
            continue;
        }
        if let Some((number, close)) = read_tag(&bytes[open + 1..]) {
            let end = open + 1 + close + 1;
            if end < bytes.len() && is_word_char(subject, end, false) {
                continue;
            }
            return Some(number);
        }
    }
    None
}

/// Whether the character before `index` (`before`) or at `index` is part of a word.
fn is_word_char(s: &str, index: usize, before: bool) -> bool {
    let c = if before { s[..index].chars().next_back() } else { s[index..].chars().next() };
    c.is_some_and(char::is_alphanumeric)
}

/// Reads `[ Ticket ] # digits ]` after the `[`: the number and the index of the `]`.
fn read_tag(rest: &[u8]) -> Option<(u64, usize)> {
    let mut i = 0;
    let skip = |i: &mut usize| {
        while rest.get(*i) == Some(&b' ') {
            *i += 1;
        }
    };
    skip(&mut i);
    if rest.len() >= i + 6 && rest[i..i + 6].eq_ignore_ascii_case(b"ticket") {
        i += 6;
        skip(&mut i);
    }
    if rest.get(i) != Some(&b'#') {
        return None;
    }
    i += 1;
    skip(&mut i);
    let start = i;
    while rest.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == start || i - start > 18 {
        return None;
    }
    let number = std::str::from_utf8(&rest[start..i]).ok()?.parse().ok()?;
    skip(&mut i);
    (rest.get(i) == Some(&b']')).then_some((number, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_tags() {
        assert_eq!(ticket_tag("Re: [#1042] Drucker"), Some(1042));
        assert_eq!(ticket_tag("AW: [Ticket#7] x"), Some(7));
        assert_eq!(ticket_tag("[ ticket # 99 ]"), Some(99));
        assert_eq!(ticket_tag("Re:[#5]"), Some(5));
        assert_eq!(ticket_tag("(#5) [#abc] [#] [Ticket 5] [#12]"), Some(12));
        assert_eq!(ticket_tag("abc[#1042] x"), None);
        assert_eq!(ticket_tag("[#1042]abc"), None);
        assert_eq!(ticket_tag("Grüße[#3]"), None);
        assert_eq!(ticket_tag("[#1234567890123456789]"), None);
        assert_eq!(ticket_tag("no tag #1042"), None);
        assert_eq!(ticket_tag(""), None);
    }

    #[test]
    fn keys_in_order() {
        let raw = b"Message-ID: <m3@x.example>\r\nIn-Reply-To: <m2@X.Example>\r\n\
            References: <m0@x.example> <m1@x.example>\r\n <m2@x.example>\r\n\r\nhi\r\n";
        let parsed = email_parse::parse(raw, &email_parse::Limits::default());
        assert_eq!(thread_keys(&parsed), ["m2@x.example", "m1@x.example", "m0@x.example"]);
        assert_eq!(normalize_id(" <A@B.C> ").as_deref(), Some("A@b.c"));
        assert_eq!(normalize_id("<>"), None);
        let many: String = (0..500).map(|i| format!("<r{i}@x> ")).collect();
        let raw = format!("References: {many}\r\n\r\nx");
        let parsed = email_parse::parse(raw.as_bytes(), &email_parse::Limits::default());
        let keys = thread_keys(&parsed);
        assert_eq!(keys.len(), MAX_THREAD_KEYS);
        assert_eq!(keys[0], "r499@x");
    }
}
