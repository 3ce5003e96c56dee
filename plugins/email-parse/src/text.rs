//! Plain-text bodies: line endings and `format=flowed` (RFC 3676).

/// Turns CRLF and lone CR line endings into LF.
pub(crate) fn normalize_newlines(s: String) -> String {
    if !s.contains('\r') {
        return s;
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Unwraps `format=flowed` text: a line ending in a space continues on the next line of the same
/// quote depth; space-stuffing is undone; with `delsp=yes` the space at the wrap goes too. Quote
/// marks come out as `>` per level and one space.
pub(crate) fn unflow(text: &str, delsp: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut current: Option<(usize, String)> = None;
    let ends_with_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    for line in body.split('\n') {
        let depth = line.bytes().take_while(|&b| b == b'>').count();
        let mut content = &line[depth..];
        if let Some(unstuffed) = content.strip_prefix(' ') {
            content = unstuffed;
        }
        let flowed = content.ends_with(' ') && content != "-- ";
        let piece = if flowed && delsp { &content[..content.len() - 1] } else { content };
        match &mut current {
            Some((d, buf)) if *d == depth => buf.push_str(piece),
            _ => {
                if let Some(done) = current.take() {
                    emit(&mut out, done);
                }
                current = Some((depth, piece.to_owned()));
            }
        }
        if !flowed && let Some(done) = current.take() {
            emit(&mut out, done);
        }
    }
    if let Some(done) = current.take() {
        emit(&mut out, done);
    }
    if !ends_with_newline && out.ends_with('\n') {
        out.pop();
    }
    out
}

fn emit(out: &mut String, (depth, text): (usize, String)) {
    for _ in 0..depth {
        out.push('>');
    }
    if depth > 0 && !text.is_empty() {
        out.push(' ');
    }
    out.push_str(&text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines() {
        assert_eq!(normalize_newlines("a\r\nb\rc\n".into()), "a\nb\nc\n");
        assert_eq!(normalize_newlines("a\nb".into()), "a\nb");
    }

    #[test]
    fn flowed_paragraphs_join() {
        let text = "This is a long \nparagraph that \nflows.\nNew line.\n\n-- \nSig\n";
        assert_eq!(unflow(text, false), "This is a long paragraph that flows.\nNew line.\n\n-- \nSig\n");
        assert_eq!(unflow("Lang\u{ad}\nWort", false), "Lang\u{ad}\nWort");
        assert_eq!(unflow("Donau \ndampf \nschiff", true), "Donaudampfschiff");
    }

    #[test]
    fn flowed_quotes_and_stuffing() {
        let text = "> quoted \n> text\n>> deeper \n>> still\n>\n From here\n";
        assert_eq!(unflow(text, false), "> quoted text\n>> deeper still\n>\nFrom here\n");
        // A flowed line followed by one of another depth ends its paragraph.
        assert_eq!(unflow("> a \nb", false), "> a \nb");
    }
}
