//! Property tests: whatever the bytes, parsing finishes, does not panic, and stays within its
//! limits; the helpers hold their promises on any text.

use email_parse::{Limits, Parsed, bounce, decode_header, html_to_text, is_automatic, parse, parse_date, split_quoted};
use proptest::prelude::*;

const FIXTURES: [&[u8]; 19] = [
    include_bytes!("fixtures/outlook.eml"),
    include_bytes!("fixtures/gmail.eml"),
    include_bytes!("fixtures/apple.eml"),
    include_bytes!("fixtures/thunderbird.eml"),
    include_bytes!("fixtures/newsletter.eml"),
    include_bytes!("fixtures/autoreply.eml"),
    include_bytes!("fixtures/bounce.eml"),
    include_bytes!("fixtures/reply_chain.eml"),
    include_bytes!("fixtures/encoded_subject.eml"),
    include_bytes!("fixtures/broken_fold.eml"),
    include_bytes!("fixtures/forwarded_paste.eml"),
    include_bytes!("fixtures/stray_blank_line.eml"),
    include_bytes!("fixtures/latin1_raw_subject.eml"),
    include_bytes!("fixtures/koi8r_raw_subject.eml"),
    include_bytes!("fixtures/sjis_raw_subject.eml"),
    include_bytes!("fixtures/sjis_as_iso2022jp.eml"),
    include_bytes!("fixtures/gbk_undeclared.eml"),
    include_bytes!("fixtures/big5_undeclared.eml"),
    include_bytes!("fixtures/utf8_as_latin1.eml"),
];

/// Pieces of MIME syntax to splice into messages, where parsers are likeliest to stumble.
const TOKENS: [&[u8]; 20] = [
    b"\r\n",
    b"\n\n",
    b"--",
    b"=?utf-8?b?",
    b"=?iso-8859-1?q?=FC",
    b"?=",
    b"\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"--x--",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"=\r\n",
    b"=F",
    b"<\"(",
    b";filename*0*=utf-8''%",
    b"&#x1F600",
    b"<blockquote><li><a href=",
    b"\xff\xfe\xc3",
    b"\r\n\t",
    b"> ",
    b"Content-Type: message/rfc822\r\n\r\n",
];

/// Runs everything on the message and checks the output against the limits.
fn check(raw: &[u8], limits: &Limits) -> Parsed {
    let p = parse(raw, limits);
    assert!(p.headers.len() <= limits.max_headers);
    assert!(p.headers.iter().all(|h| h.value.len() <= limits.max_header_line.max(1)));
    assert!(p.attachments.len() <= limits.max_parts);
    assert!(p.attachments.iter().all(|a| a.data.len() <= limits.max_attachment_bytes));
    let total: usize = p.attachments.iter().map(|a| a.data.len()).sum();
    assert!(total <= limits.max_total_bytes);
    assert!(p.text.as_ref().is_none_or(|t| t.len() <= limits.max_total_bytes));
    assert!(p.html.as_ref().is_none_or(|t| t.len() <= limits.max_total_bytes));
    assert!(p.problems.len() <= 101);
    let _ = (is_automatic(&p), bounce(&p));
    let split = split_quoted(p.text.as_deref().unwrap_or(""));
    assert!(split.new_part.len() <= p.text.as_ref().map_or(0, String::len));
    p
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0usize..6, 1usize..30, 1usize..300, 0usize..30, 0usize..5000, 0usize..20_000).prop_map(
        |(max_depth, max_parts, max_header_line, max_headers, max_attachment_bytes, max_total_bytes)| Limits {
            max_depth,
            max_parts,
            max_header_line,
            max_headers,
            max_attachment_bytes,
            max_total_bytes,
        },
    )
}

/// A fixture changed by a few random edits.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..6, any::<usize>(), any::<u8>(), 0usize..64);
    (0..FIXTURES.len(), proptest::collection::vec(edit, 1..8)).prop_map(|(i, edits)| {
        let mut raw = FIXTURES[i].to_vec();
        for (kind, pos, byte, len) in edits {
            let at = if raw.is_empty() { 0 } else { pos % raw.len() };
            let end = (at + len).min(raw.len());
            match kind {
                0 if !raw.is_empty() => raw[at] = byte,
                1 => {
                    raw.drain(at..end);
                }
                2 => {
                    let token = TOKENS[byte as usize % TOKENS.len()];
                    raw.splice(at..at, token.iter().copied());
                }
                3 => raw.truncate(at),
                4 => {
                    let copy = raw[at..end].to_vec();
                    raw.splice(at..at, copy);
                }
                _ if !raw.is_empty() => raw[at] = b'\n',
                _ => {}
            }
        }
        raw
    })
}

fn text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        any::<char>().prop_map(String::from),
        Just("\n".to_owned()),
        Just("> ".to_owned()),
        Just("-- \n".to_owned()),
        Just("On Tue, 24 Nov 2026, Anna <a@x.de> wrote:\n".to_owned()),
        Just("Von: a\nGesendet: b\nAn: c\n".to_owned()),
        Just("<p>".to_owned()),
        Just("&amp;".to_owned()),
        Just("=?utf-8?q?a?=".to_owned()),
    ];
    proptest::collection::vec(pieces, 0..80).prop_map(|v| v.concat())
}

proptest! {
    // 2,000 cases each; PROPTEST_CASES=N runs N for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&raw, &Limits::default());
    }

    #[test]
    fn mutated_fixtures(raw in mutated()) {
        check(&raw, &Limits::default());
    }

    #[test]
    fn mutated_fixtures_under_small_limits(raw in mutated(), limits in small_limits()) {
        check(&raw, &limits);
    }

    #[test]
    fn split_keeps_all_but_whitespace(t in text()) {
        let s = split_quoted(&t);
        let visible = |x: &str| x.chars().filter(|c| !c.is_whitespace()).count();
        let kept = visible(&s.new_part)
            + s.quoted.as_deref().map_or(0, visible)
            + s.signature.as_deref().map_or(0, visible);
        prop_assert_eq!(kept, visible(&t));
    }

    #[test]
    fn helpers_take_any_text(t in text()) {
        let _ = (html_to_text(&t), decode_header(&t), parse_date(&t));
    }
}
