//! HTML made readable as plain text, for messages that come only as HTML.

/// Turns an HTML body into readable text: `script`, `style`, `head` and the like are dropped;
/// block elements and `<br>` become line breaks (paragraphs and headings a blank line); list
/// items become `- ` lines; a link becomes `text (url)` when its text is not the address
/// already; `blockquote` lines get `> `; entities are decoded, numeric ones included; other
/// whitespace collapses as a browser would collapse it.
///
/// ```
/// let html = "<p>Hello&nbsp;<b>Anna</b>,</p><ul><li>one</li><li>two &amp; three</li></ul>\
///             <p>See <a href=\"https://x.de/faq\">the FAQ</a>.</p>";
/// assert_eq!(email_parse::html_to_text(html), "Hello Anna,\n\n- one\n- two & three\n\nSee the FAQ (https://x.de/faq).");
/// ```
pub fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut w = Writer::default();
    let mut i = 0;
    while i < bytes.len() {
        let Some(lt) = bytes[i..].iter().position(|&b| b == b'<').map(|p| p + i) else {
            w.text(&html[i..]);
            break;
        };
        if lt > i {
            w.text(&html[i..lt]);
        }
        i = lt;
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        if bytes[i + 1..].starts_with(b"!--") {
            i = find(bytes, b"-->", i + 4).map_or(bytes.len(), |p| p + 3);
        } else if next == b'!' || next == b'?' {
            i = find(bytes, b">", i).map_or(bytes.len(), |p| p + 1);
        } else if next == b'/' || next.is_ascii_alphabetic() {
            let (tag, end) = read_tag(html, i);
            i = end;
            if let Some(skip_to) = w.tag(&tag, html, i) {
                i = skip_to;
            }
        } else {
            w.text("<");
            i += 1;
        }
    }
    w.finish()
}

/// A start or end tag, with the attributes the text needs.
#[derive(Default)]
struct Tag {
    /// Lowercase name.
    name: String,
    end: bool,
    href: Option<String>,
    /// Outlook's `class=MsoNormal` paragraphs are lines, not paragraphs.
    mso_line: bool,
    /// `style="display: none"`: not shown (newsletters hide their preview text so).
    hidden: bool,
}

/// Reads the tag at `start` (a `<`): the tag and where it ends (past its `>`).
fn read_tag(html: &str, start: usize) -> (Tag, usize) {
    let b = html.as_bytes();
    let mut i = start + 1;
    let mut tag = Tag::default();
    if b.get(i) == Some(&b'/') {
        tag.end = true;
        i += 1;
    }
    let name_start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b':' | b'-' | b'_')) {
        i += 1;
    }
    tag.name = html[name_start..i].to_ascii_lowercase();
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (tag, b.len());
        }
        if b[i] == b'>' {
            return (tag, i + 1);
        }
        let attr_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let attr = &html[attr_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            if attr_start == i {
                i += 1;
            }
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = b[i + 1..].iter().position(|&c| c == q).map_or(b.len(), |p| p + i + 1);
                let v = &html[i + 1..end];
                i = (end + 1).min(b.len());
                v
            }
            _ => {
                let s = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                &html[s..i]
            }
        };
        if attr.eq_ignore_ascii_case("href") {
            tag.href = Some(decode_entities(value.trim()));
        } else if attr.eq_ignore_ascii_case("style") {
            let style: String = value.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
            tag.hidden = style.split(';').any(|d| d == "display:none" || d == "display:none!important");
        } else if attr.eq_ignore_ascii_case("class") {
            tag.mso_line = value.split_whitespace().any(|c| c.eq_ignore_ascii_case("MsoNormal"));
        }
    }
}

/// Where `needle` (lowercase ASCII) next occurs in `hay` from `from`, ignoring ASCII case.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let p = hay[i..hay.len() - needle.len() + 1].iter().position(|b| b.to_ascii_lowercase() == first)? + i;
        if hay[p..p + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// Elements that have no content and no end tag.
fn is_void(name: &str) -> bool {
    matches!(
        name,
        "br" | "img"
            | "hr"
            | "meta"
            | "input"
            | "link"
            | "wbr"
            | "col"
            | "area"
            | "base"
            | "source"
            | "embed"
            | "track"
    )
}

/// Where the element `name` whose content starts at `from` ends (past its end tag), counting
/// nested elements of the same name; `None` when it is never closed.
fn element_end(b: &[u8], name: &str, from: usize) -> Option<usize> {
    let name = name.as_bytes();
    let mut depth = 1usize;
    let mut i = from;
    while let Some(lt) = b[i..].iter().position(|&c| c == b'<').map(|p| p + i) {
        let close = b.get(lt + 1) == Some(&b'/');
        let start = lt + 1 + usize::from(close);
        let is_name = b.len() >= start + name.len()
            && b[start..start + name.len()].eq_ignore_ascii_case(name)
            && !b.get(start + name.len()).is_some_and(|c| c.is_ascii_alphanumeric());
        if is_name {
            if close {
                depth -= 1;
                if depth == 0 {
                    return Some(find(b, b">", lt).map_or(b.len(), |e| e + 1));
                }
            } else {
                depth += 1;
            }
        }
        i = lt + 1;
    }
    None
}

/// How an element breaks the flow of text.
enum Flow {
    /// A line of its own.
    Line,
    /// A paragraph: a blank line before and after.
    Paragraph,
}

fn flow(name: &str) -> Option<Flow> {
    Some(match name {
        "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "blockquote" | "pre" | "hr" | "dl" | "figure" => {
            Flow::Paragraph
        }
        "div" | "li" | "tr" | "dt" | "dd" | "section" | "article" | "header" | "footer" | "nav" | "aside"
        | "address" | "center" | "form" | "main" | "caption" | "fieldset" | "figcaption" | "ul" | "ol" | "body"
        | "html" => Flow::Line,
        _ => return None,
    })
}

/// How many nested open blocks are remembered (for empty-line detection); deeper ones are not.
const MAX_OPEN: usize = 256;

/// A block element that is open.
struct Open {
    name: String,
    /// The output length at its start.
    len: usize,
    /// The count of no-break spaces at its start.
    nbsp: usize,
    /// The line breaks around it.
    breaks: u8,
}

/// Builds the text, collapsing whitespace and line breaks lazily.
#[derive(Default)]
struct Writer {
    out: String,
    /// Line breaks owed before the next text (2 = a blank line).
    breaks: u8,
    /// A space owed before the next text.
    space: bool,
    /// Nothing written on the current line yet.
    line_empty: bool,
    quote: usize,
    pre: usize,
    lists: usize,
    /// The open link: its href and where its text starts.
    link: Option<(String, usize)>,
    /// The open blocks.
    open: Vec<Open>,
    /// The quote depth of the pending blank line.
    gap_quote: usize,
    /// A `head` was found never closed.
    unclosed_head: bool,
    /// A hidden element was found never closed.
    unclosed_hidden: bool,
    nbsp: usize,
}

impl Writer {
    fn brk(&mut self, n: u8) {
        self.note_gap();
        self.breaks = self.breaks.max(n);
        self.space = false;
    }

    /// A `<br>`: one more line break, up to a blank line.
    fn line_break(&mut self) {
        self.note_gap();
        self.breaks = (self.breaks + 1).min(2);
        self.space = false;
    }

    /// Remembers the shallowest quote depth a pending blank line lies in.
    fn note_gap(&mut self) {
        self.gap_quote = if self.breaks == 0 { self.quote } else { self.gap_quote.min(self.quote) };
    }

    /// Handles a tag; returns where to go on when the element's content is to be skipped.
    fn tag(&mut self, tag: &Tag, html: &str, after: usize) -> Option<usize> {
        let name = tag.name.as_str();
        if !tag.end {
            let skip_until: &[u8] = match name {
                "script" => b"</script",
                "style" => b"</style",
                "title" => b"</title",
                "template" => b"</template",
                "xml" => b"</xml",
                "head" => b"</head",
                _ => b"",
            };
            // Once a search for an end found none, it would find none again: searching anew for
            // every such tag would make hostile HTML cost quadratic time.
            let head_again = name == "head" && self.unclosed_head;
            if !skip_until.is_empty() && !head_again {
                let b = html.as_bytes();
                let mut close = find(b, skip_until, after);
                if close.is_none() && name == "head" {
                    close = find(b, b"<body", after);
                }
                return match close {
                    Some(p) if b[p + 1] == b'/' => Some(find(b, b">", p).map_or(b.len(), |e| e + 1)),
                    Some(p) => Some(p),
                    // A head that is never closed: read on; what is in it is skipped element by element.
                    None if name == "head" => {
                        self.unclosed_head = true;
                        None
                    }
                    None => Some(b.len()),
                };
            }
        }
        if tag.hidden && !tag.end && !is_void(name) && !self.unclosed_hidden {
            match element_end(html.as_bytes(), name, after) {
                Some(end) => return Some(end),
                None => self.unclosed_hidden = true,
            }
        }
        match (name, tag.end) {
            ("br", _) => self.line_break(),
            ("a", false) => {
                self.close_link();
                if let Some(href) = &tag.href {
                    self.link = Some((href.clone(), self.out.len()));
                }
            }
            ("a", true) => self.close_link(),
            ("li", false) => {
                self.brk(1);
                let indent = "  ".repeat(self.lists.saturating_sub(1).min(8));
                self.raw(&format!("{indent}- "));
            }
            ("ul" | "ol", false) => {
                self.brk(if self.lists == 0 { 2 } else { 1 });
                self.lists += 1;
            }
            ("ul" | "ol", true) => {
                self.lists = self.lists.saturating_sub(1);
                self.brk(if self.lists == 0 { 2 } else { 1 });
            }
            ("blockquote", false) => {
                self.brk(2);
                self.quote += 1;
            }
            ("blockquote", true) => {
                self.brk(2);
                self.quote = self.quote.saturating_sub(1);
            }
            ("pre", false) => {
                self.brk(2);
                self.pre += 1;
            }
            ("pre", true) => {
                self.brk(2);
                self.pre = self.pre.saturating_sub(1);
            }
            ("td" | "th", _) => {
                if !self.line_empty {
                    self.space = true;
                }
            }
            (name, false) => {
                let kind = flow(name)?;
                let n = match kind {
                    Flow::Paragraph if !tag.mso_line => 2,
                    _ => 1,
                };
                self.brk(n);
                if self.open.len() < MAX_OPEN {
                    self.open.push(Open { name: name.to_owned(), len: self.out.len(), nbsp: self.nbsp, breaks: n });
                }
            }
            (name, true) => {
                let kind = flow(name)?;
                let mut n = match kind {
                    Flow::Paragraph => 2,
                    Flow::Line => 1,
                };
                if let Some(at) = self.open.iter().rposition(|o| o.name == name) {
                    let open = &self.open[at];
                    n = open.breaks;
                    // A block holding only no-break spaces is an empty line, as a browser shows it.
                    if self.out.len() == open.len && self.nbsp > open.nbsp {
                        self.line_break();
                    }
                    self.open.truncate(at);
                }
                self.brk(n);
            }
        }
        None
    }

    fn close_link(&mut self) {
        let Some((href, start)) = self.link.take() else { return };
        let text = self.out.get(start..).unwrap_or("").trim();
        let lower = href.to_ascii_lowercase();
        if text.is_empty()
            || href.is_empty()
            || href.starts_with('#')
            || lower.starts_with("javascript:")
            || lower.starts_with("cid:")
        {
            return;
        }
        let bare = |s: &str| {
            let s = s.trim().trim_end_matches('/');
            let l = s.to_ascii_lowercase();
            let cut =
                ["mailto:", "tel:", "https://", "http://"].iter().find(|p| l.starts_with(**p)).map_or(0, |p| p.len());
            s[cut..].to_ascii_lowercase()
        };
        if bare(text) == bare(&href) {
            return;
        }
        self.space = true;
        self.raw(&format!("({href})"));
    }

    /// Writes text as a browser lays it out: whitespace collapsed, except in `pre`.
    fn text(&mut self, s: &str) {
        if s.contains('&') {
            let decoded = decode_entities(s);
            self.chars(&decoded);
        } else {
            self.chars(s);
        }
    }

    fn chars(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '\n' if self.pre > 0 => self.line_break(),
                '\r' if self.pre > 0 => {}
                ' ' | '\t' if self.pre > 0 => self.put(' '),
                '\u{a0}' => {
                    self.nbsp += 1;
                    if !self.line_empty || self.breaks > 0 {
                        self.space = true;
                    }
                }
                c if c.is_whitespace() => {
                    if !self.line_empty || self.breaks > 0 {
                        self.space = true;
                    }
                }
                // Invisible characters newsletters pad their preview text with.
                '\u{200b}'..='\u{200d}' | '\u{feff}' | '\u{ad}' | '\u{34f}' | '\u{2060}' => {}
                c if c.is_control() => {}
                c => self.put(c),
            }
        }
    }

    /// Writes literal text (a list marker, a link's address) with the owed breaks before it.
    fn raw(&mut self, s: &str) {
        for c in s.chars() {
            self.put(c);
        }
    }

    fn put(&mut self, c: char) {
        if self.breaks > 0 && !self.out.is_empty() {
            self.out.push('\n');
            if self.breaks > 1 {
                // A blank line within a quote keeps its quote marks.
                for _ in 0..self.gap_quote.min(self.quote).min(8) {
                    self.out.push('>');
                }
                self.out.push('\n');
            }
            self.line_empty = true;
            self.space = false;
        }
        self.breaks = 0;
        if self.out.is_empty() {
            self.line_empty = true;
        }
        if self.line_empty {
            for _ in 0..self.quote.min(8) {
                self.out.push_str("> ");
            }
            self.line_empty = false;
            self.space = false;
        }
        if self.space && !self.out.ends_with(' ') {
            self.out.push(' ');
            self.space = false;
        }
        self.out.push(c);
    }

    fn finish(mut self) -> String {
        self.close_link();
        let trimmed = self.out.trim_end();
        self.out.truncate(trimmed.len());
        self.out
    }
}

/// Decodes character references: named ones (those mail uses), `&#NNN;` and `&#xHH;`. An
/// unknown or malformed reference stays as written.
pub(crate) fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        match entity(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character the reference at the start of `s` (an `&`) stands for, and its length.
fn entity(s: &str) -> Option<(char, usize)> {
    let b = s.as_bytes();
    if b.get(1) == Some(&b'#') {
        let (hex, start) = match b.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let digits = b[start..]
            .iter()
            .take(8)
            .take_while(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() })
            .count();
        if digits == 0 {
            return None;
        }
        let n = u32::from_str_radix(&s[start..start + digits], if hex { 16 } else { 10 }).ok()?;
        let mut len = start + digits;
        if b.get(len) == Some(&b';') {
            len += 1;
        }
        return Some((numeric_char(n), len));
    }
    let name_len = b[1..].iter().take(32).take_while(|c| c.is_ascii_alphanumeric()).count();
    if name_len == 0 {
        return None;
    }
    let name = &s[1..1 + name_len];
    let c = named(name)?;
    if b.get(1 + name_len) == Some(&b';') {
        Some((c, name_len + 2))
    } else if matches!(name, "amp" | "lt" | "gt" | "quot" | "nbsp" | "copy" | "reg") {
        Some((c, name_len + 1))
    } else {
        None
    }
}

/// A numeric reference's character, as browsers read it (C1 codes as Windows-1252).
fn numeric_char(n: u32) -> char {
    const C1: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    match n {
        0 => '\u{fffd}',
        0x80..=0x9f => C1[(n - 0x80) as usize],
        n => char::from_u32(n).unwrap_or('\u{fffd}'),
    }
}

fn named(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ensp" | "emsp" | "thinsp" => ' ',
        "zwnj" | "zwj" | "shy" => '\u{200b}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "lsaquo" => '‹',
        "rsaquo" => '›',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "micro" => 'µ',
        "frac12" => '½',
        "frac14" => '¼',
        "frac34" => '¾',
        "sup2" => '²',
        "sup3" => '³',
        "iexcl" => '¡',
        "iquest" => '¿',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "euml" => 'ë',
        "iuml" => 'ï',
        "aacute" => 'á',
        "eacute" => 'é',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "Aacute" => 'Á',
        "Eacute" => 'É',
        "agrave" => 'à',
        "egrave" => 'è',
        "igrave" => 'ì',
        "ograve" => 'ò',
        "ugrave" => 'ù',
        "Agrave" => 'À',
        "Egrave" => 'È',
        "acirc" => 'â',
        "ecirc" => 'ê',
        "icirc" => 'î',
        "ocirc" => 'ô',
        "ucirc" => 'û',
        "ccedil" => 'ç',
        "Ccedil" => 'Ç',
        "ntilde" => 'ñ',
        "Ntilde" => 'Ñ',
        "atilde" => 'ã',
        "otilde" => 'õ',
        "aring" => 'å',
        "Aring" => 'Å',
        "aelig" => 'æ',
        "AElig" => 'Æ',
        "oslash" => 'ø',
        "Oslash" => 'Ø',
        "yuml" => 'ÿ',
        _ => return None,
    })
}

/// The charset a `<meta>` tag declares near the start of an HTML document, if any.
pub(crate) fn meta_charset(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(2048)];
    let at = find(head, b"charset=", 0)?;
    let rest = &head[at + 8..];
    let rest = rest.strip_prefix(b"\"").or_else(|| rest.strip_prefix(b"'")).unwrap_or(rest);
    let len = rest.iter().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')).count();
    (len > 0).then(|| String::from_utf8_lossy(&rest[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_invisible_parts() {
        let html = "<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>\
                    <body><script>alert(1)</script><!-- note --><p>Text</p><style>x</style></body></html>";
        assert_eq!(html_to_text(html), "Text");
        assert_eq!(html_to_text("<head><meta charset=utf-8><p>No close</p>"), "No close");
        assert_eq!(html_to_text("<head><title>x</title><body>Body"), "Body");
        assert_eq!(html_to_text("a<script>never closed"), "a");
        assert_eq!(html_to_text("<?xml version=\"1.0\"?><xml><o:Office/></xml>ok"), "ok");
    }

    #[test]
    fn hidden_elements_are_skipped() {
        let html = "<div style=\"display: none; max-height:0\">Preview <div>nested</div> text</div><p>Shown</p>";
        assert_eq!(html_to_text(html), "Shown");
        assert_eq!(html_to_text("<span style='DISPLAY:NONE'>x</span>y"), "y");
        assert_eq!(html_to_text("<div style=\"display:none\">never closed"), "never closed");
        assert_eq!(html_to_text("a<img style=\"display:none\" src=x>b"), "ab");
    }

    #[test]
    fn hostile_nesting_stays_linear() {
        let many = "<head><div style=\"display:none\">x".repeat(20_000);
        let start = std::time::Instant::now();
        assert_eq!(html_to_text(&many).len(), 20_000 * 2 - 1);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn blocks_and_breaks() {
        assert_eq!(html_to_text("<div>a</div><div>b</div>"), "a\nb");
        assert_eq!(html_to_text("<p>a</p><p>b</p>"), "a\n\nb");
        assert_eq!(html_to_text("a<br>b<br/><br />c<br><br><br><br>d"), "a\nb\n\nc\n\nd");
        assert_eq!(html_to_text("<div dir=\"ltr\">Hallo,<div><br></div><div>Text</div></div>"), "Hallo,\n\nText");
        assert_eq!(html_to_text("<h1>Title</h1>text"), "Title\n\ntext");
        assert_eq!(html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"), "a b\nc");
    }

    #[test]
    fn outlook_paragraphs_are_lines() {
        let html = "<p class=MsoNormal>Hallo Anna,<o:p></o:p></p><p class=MsoNormal><o:p>&nbsp;</o:p></p>\
                    <p class=MsoNormal>Zeile eins<o:p></o:p></p><p class=MsoNormal>Zeile zwei<o:p></o:p></p>";
        assert_eq!(html_to_text(html), "Hallo Anna,\n\nZeile eins\nZeile zwei");
    }

    #[test]
    fn whitespace_collapses_except_in_pre() {
        assert_eq!(html_to_text("  a \n\t b   <b> c </b>d "), "a b c d");
        assert_eq!(html_to_text("<pre>a  b\n  c</pre>d"), "a  b\n  c\n\nd");
    }

    #[test]
    fn lists_links_quotes() {
        assert_eq!(html_to_text("<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"), "- a\n  - b\n- c");
        assert_eq!(html_to_text("<ol><li>x</li></ol>"), "- x");
        assert_eq!(html_to_text("<a href=\"https://x.de/\">https://x.de</a>"), "https://x.de");
        assert_eq!(html_to_text("<a href=\"mailto:a@x.de\">a@x.de</a>"), "a@x.de");
        assert_eq!(html_to_text("<a href='https://x.de/a?b=1&amp;c=2'>Link</a>!"), "Link (https://x.de/a?b=1&c=2)!");
        assert_eq!(html_to_text("<a href=\"#top\">top</a> <a href=x><img src=y></a>"), "top");
        assert_eq!(html_to_text("<a href=u1>one<a href=u2>two</a>"), "one (u1)two (u2)");
        assert_eq!(html_to_text("<a href=u1>unclosed"), "unclosed (u1)");
        assert_eq!(html_to_text("new<blockquote>old<br>older</blockquote>"), "new\n\n> old\n> older");
        assert_eq!(html_to_text("<blockquote>a<br><br>b</blockquote>after"), "> a\n>\n> b\n\nafter");
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities(
                "&lt;a&gt; &amp;amp; &quot;&#228;&#xFC;&#X00DF;&euro;&#128;&hellip;&bogus; &#0; &#xZZ; & &amp"
            ),
            "<a> &amp; \"äüß€€…&bogus; \u{fffd} &#xZZ; & &"
        );
        assert_eq!(decode_entities("&#1114112;&#55296;"), "\u{fffd}\u{fffd}");
        assert_eq!(decode_entities("&auml"), "&auml");
        assert_eq!(html_to_text("Gr&uuml;&szlig;e&nbsp;&nbsp;&zwnj;&#847;x"), "Grüße x");
    }

    #[test]
    fn stray_angle_brackets_and_broken_tags() {
        assert_eq!(html_to_text("a < b > c"), "a < b > c");
        assert_eq!(html_to_text("x <b attr=\"unclosed"), "x");
        assert_eq!(html_to_text("<"), "<");
        assert_eq!(html_to_text("<p"), "");
        assert_eq!(html_to_text("<!--"), "");
        assert_eq!(html_to_text("<style"), "");
    }

    #[test]
    fn meta_charset_sniffing() {
        assert_eq!(meta_charset(b"<meta charset=\"windows-1252\">").as_deref(), Some("windows-1252"));
        assert_eq!(
            meta_charset(b"<meta http-equiv=Content-Type content=\"text/html; charset=iso-8859-1\">").as_deref(),
            Some("iso-8859-1")
        );
        assert_eq!(meta_charset(b"<p>none</p>"), None);
    }
}
