//! Whole-message tests of `parse`, bad and hostile input above all.

use crate::*;
use std::time::{Duration, Instant};

fn parse_str(raw: &str) -> Parsed {
    parse(raw.as_bytes(), &Limits::default())
}

fn messages(p: &Parsed) -> Vec<&str> {
    p.problems.iter().map(|p| p.message.as_str()).collect()
}

/// A deterministic stream of bytes (xorshift), for garbage that is the same on every run.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn empty_input() {
    let p = parse(b"", &Limits::default());
    assert_eq!(p, Parsed::default());
    let p = parse(b"\r\n\r\n", &Limits::default());
    assert_eq!((p.headers.len(), p.text.as_deref(), p.problems.len()), (0, None, 0));
}

#[test]
fn simple_message_crlf_and_lf_alike() {
    let lf = "From: Anna <anna@x.de>\nTo: b@y.de\nSubject: Hallo\nDate: Tue, 24 Nov 2026 10:00:00 +0100\n\
              Message-ID: <m1@x.de>\n\nZeile 1\nZeile 2\n";
    let crlf = lf.replace('\n', "\r\n");
    let a = parse_str(lf);
    let b = parse_str(&crlf);
    assert_eq!(a, b);
    assert_eq!(a.text.as_deref(), Some("Zeile 1\nZeile 2"));
    assert_eq!(a.subject.as_deref(), Some("Hallo"));
    assert_eq!(a.date.as_ref().and_then(|d| d.unix), Some(1_795_510_800));
    assert_eq!(a.header("SUBJECT"), Some("Hallo"));
    assert_eq!(a.headers_all("to").collect::<Vec<_>>(), vec!["b@y.de"]);
    assert!(a.problems.is_empty());
}

#[test]
fn mbox_from_line_is_skipped_only_before_the_headers() {
    let p = parse_str("From anna@x.de Tue Nov 24 10:00:00 2026\nSubject: s\n\nbody");
    assert_eq!((p.headers.len(), p.subject.as_deref(), p.text.as_deref()), (1, Some("s"), Some("body")));
    let p = parse_str("Content-Type: multipart/mixed; boundary=b\n\n--b\nFrom here on: text\n--b--\n");
    assert_eq!(p.text.as_deref(), Some("From here on: text"));
    assert_eq!(messages(&p), vec!["part 1: header line 1 is no header field; it and what follows read as the body"]);
    let p = parse_str("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nFrom here on, text\n--b--\n");
    assert_eq!(p.text.as_deref(), Some("From here on, text"));
}

#[test]
fn truncated_multipart_keeps_what_is_there() {
    let raw = "Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nFirst part\n\
               --b1\nContent-Type: text/plain\n\nSecond part, cut off in the mid";
    let p = parse_str(raw);
    assert_eq!(p.text.as_deref(), Some("First part\n\nSecond part, cut off in the mid"));
    assert_eq!(messages(&p), vec!["message truncated: multipart boundary \"b1\" never closed"]);
    assert_eq!(p.problems[0].kind, ProblemKind::Truncated);
}

#[test]
fn missing_boundaries() {
    let p = parse_str("Content-Type: multipart/mixed\n\nJust text");
    assert_eq!(p.text.as_deref(), Some("Just text"));
    assert_eq!(messages(&p), vec!["multipart/mixed without a boundary; read as plain text"]);
    let p = parse_str("Content-Type: multipart/mixed; boundary=zz\n\nNo delimiter anywhere");
    assert_eq!(p.text.as_deref(), Some("No delimiter anywhere"));
    assert_eq!(messages(&p), vec!["multipart boundary \"zz\" not found; the body read as plain text"]);
}

#[test]
fn huge_header_line_is_cut() {
    let mut raw = b"X-Spam: ".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 102_400 - 8));
    raw.extend_from_slice(b"\r\nSubject: still read\r\n\r\nbody");
    let p = parse(&raw, &Limits::default());
    assert_eq!(p.subject.as_deref(), Some("still read"));
    assert_eq!(p.text.as_deref(), Some("body"));
    assert_eq!(p.header("X-Spam").map(str::len), Some(16 * 1024 - 8));
    assert_eq!(messages(&p), vec!["header line of 102400 bytes cut at 16384"]);
}

#[test]
fn invalid_base64_keeps_the_decoded_start() {
    let good = "QUJD".repeat(30); // 120 characters, "ABC" × 30
    let raw = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n\
         {good}!!!!\n--b\nContent-Type: application/octet-stream; name=x.bin\nContent-Transfer-Encoding: base64\n\n\
         {good}\n{good}*\n--b--\n"
    );
    let p = parse_str(&raw);
    assert_eq!(p.text.as_deref(), Some("ABC".repeat(30).as_str()));
    assert_eq!(p.attachments[0].data.len(), 180);
    assert_eq!(
        messages(&p),
        vec![
            "part 1: invalid base64 at byte 120; kept the text decoded so far",
            "part 2: invalid base64 at byte 241; kept the data decoded so far",
        ]
    );
}

#[test]
fn unknown_charset_reads_as_utf8() {
    let p = parse_str("Content-Type: text/plain; charset=x-foo\n\ncaf\u{e9} ok");
    assert_eq!(p.text.as_deref(), Some("café ok"));
    assert_eq!(messages(&p), vec!["body: unknown charset \"x-foo\"; read as UTF-8 with replacement"]);
    let p = parse(b"Content-Type: text/plain; charset=\"x-foo\"\n\nbad \xff byte", &Limits::default());
    assert_eq!(p.text.as_deref(), Some("bad \u{fffd} byte"));
    let p = parse_str("Subject: =?x-foo?Q?Hallo?=\n\n");
    assert_eq!(p.subject.as_deref(), Some("Hallo"));
    assert_eq!(messages(&p), vec!["unknown charset \"x-foo\" in Subject; read as UTF-8 with replacement"]);
}

#[test]
fn unknown_transfer_encoding_keeps_data() {
    let p = parse_str("Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n");
    assert_eq!(p.text.as_deref(), Some("begin 644 a"));
    assert_eq!(messages(&p), vec!["body: unknown transfer encoding \"x-uuencode\"; kept the text as it is"]);
}

#[test]
fn eight_bit_headers_and_bodies_without_charset() {
    let raw = b"Subject: Gr\xfc\xdfe\nFrom: J\xf6rg <j@x.de>\n\nK\xe4se f\xfcr 5 \x80";
    let p = parse(raw, &Limits::default());
    assert_eq!(p.subject.as_deref(), Some("Grüße"));
    assert_eq!(p.from[0].name.as_deref(), Some("Jörg"));
    assert_eq!(p.text.as_deref(), Some("Käse für 5 €"));
    assert_eq!(
        messages(&p),
        // The headers are read in what the body was detected as: no problem of their own.
        vec!["body: 8-bit text without a charset; read as windows-1252"]
    );
    assert!(p.problems.iter().all(|p| p.kind == ProblemKind::CharsetMismatch));
}

/// Regression guard: charset detection reads some 7 MB/s, so a message of many mislabelled parts
/// could otherwise make parsing a hundred times slower than reading it.
#[test]
fn many_undeclared_8bit_parts_stay_within_the_detection_budget() {
    let gbk = encoding_rs::GBK.encode(&"您好，我的订单还没有收到，请帮我查一下物流信息。".repeat(400)).0.into_owned();
    let mut raw = b"Content-Type: multipart/mixed; boundary=p\n\n".to_vec();
    for _ in 0..30 {
        raw.extend_from_slice(b"--p\nContent-Type: text/plain\n\n");
        raw.extend_from_slice(&gbk);
        raw.push(b'\n');
    }
    raw.extend_from_slice(b"--p--\n");
    let start = Instant::now();
    let p = parse(&raw, &Limits::default());
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    let read_as = |charset: &str| {
        let message = format!("8-bit text without a charset; read as {charset}");
        p.problems.iter().filter(|p| p.message.ends_with(&message)).count()
    };
    // 16 samples of 16 KiB: then no more detection, and Windows-1252 as before.
    assert_eq!((read_as("GBK"), read_as("windows-1252")), (16, 14));
}

#[test]
fn lines_before_the_headers_start_the_text_even_of_an_html_body() {
    let raw = "-- weitergeleitet --\n\nFrom: a@x.de\nSubject: s\nContent-Type: text/html\n\n<p>Hallo</p>";
    let p = parse_str(raw);
    assert_eq!(p.subject.as_deref(), Some("s"));
    assert_eq!(p.text.as_deref(), Some("-- weitergeleitet --\n\nHallo"));
    assert_eq!(p.html.as_deref(), Some("<p>Hallo</p>"));
    assert_eq!(
        messages(&p),
        vec!["the message starts with 2 lines before its header fields; kept as the start of the text"]
    );
    // Without a body.
    let p = parse_str("-- weitergeleitet --\nFrom: a@x.de\nSubject: s\n");
    assert_eq!(p.text.as_deref(), Some("-- weitergeleitet --"));
}

#[test]
fn a_byte_order_mark_before_the_headers_is_skipped() {
    let p = parse_str("\u{feff}From: a@x.de\nSubject: s\n\nbody");
    assert_eq!((p.from.len(), p.subject.as_deref(), p.text.as_deref()), (1, Some("s"), Some("body")));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

#[test]
fn raw_8bit_headers_take_the_first_text_parts_charset() {
    let cp1251 = |text: &str| encoding_rs::WINDOWS_1251.encode(text).0.into_owned();
    let raw = [
        b"Subject: ".as_slice(),
        &cp1251("Счет на оплату"),
        b"\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=windows-1251\n\n",
        &cp1251("Добрый день"),
        b"\n--b--\n",
    ]
    .concat();
    let p = parse(&raw, &Limits::default());
    assert_eq!(p.subject.as_deref(), Some("Счет на оплату"));
    assert_eq!(p.text.as_deref(), Some("Добрый день"));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

#[test]
fn raw_utf8_headers_need_no_charset() {
    let raw = "Subject: Grüße, 日本\nFrom: Jörg <j@x.de>\nContent-Type: text/plain; charset=iso-8859-1\n\nK\u{e4}se";
    let p = parse_str(raw);
    assert_eq!(p.subject.as_deref(), Some("Grüße, 日本"));
    assert_eq!(p.from[0].name.as_deref(), Some("Jörg"));
    // The body's UTF-8 bytes under a Latin-1 label: read as UTF-8, and said so.
    assert_eq!(p.text.as_deref(), Some("Käse"));
    assert_eq!(messages(&p), vec!["body: declared charset \"iso-8859-1\" does not fit the bytes; read as UTF-8"]);
}

#[test]
fn raw_header_bytes_under_a_utf8_body_are_detected() {
    // A UTF-8 body says nothing about bytes that are not UTF-8: detection decides.
    let big5 = encoding_rs::BIG5.encode("請問發票什麼時候會寄出").0.into_owned();
    let raw = [b"Subject: ".as_slice(), &big5, b"\nContent-Type: text/plain; charset=utf-8\n\nok"].concat();
    let p = parse(&raw, &Limits::default());
    assert_eq!(p.subject.as_deref(), Some("請問發票什麼時候會寄出"));
    assert_eq!(messages(&p), vec!["8-bit text in header fields without a charset; read as Big5"]);
    assert_eq!(p.problems[0].kind, ProblemKind::CharsetMismatch);
}

#[test]
fn deep_nesting_stops_at_the_limit() {
    let depth = 1000;
    let mut raw = String::new();
    for i in 0..depth {
        raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"));
    }
    raw.push_str("Content-Type: text/plain\n\ninnermost\n");
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\n"));
    }
    let start = Instant::now();
    let p = parse_str(&raw);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert_eq!(messages(&p), vec!["nesting deeper than 20 levels; inner parts kept as attachments"]);
    assert_eq!(p.problems[0].kind, ProblemKind::TooDeep);
    assert_eq!(p.attachments.len(), 1);
    assert_eq!(p.attachments[0].content_type, "multipart/mixed");
    assert!(p.attachments[0].data.starts_with(b"--b20\n"));
    assert_eq!(p.text, None);
}

#[test]
fn ten_thousand_parts_stop_at_the_limit() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=p\n\n");
    for i in 0..10_000 {
        raw.push_str(&format!("--p\nContent-Type: application/octet-stream; name=f{i}.bin\n\n{i}\n"));
    }
    raw.push_str("--p--\n");
    let start = Instant::now();
    let p = parse_str(&raw);
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    // The message itself is part 1; 499 of its parts fit under the limit.
    assert_eq!(p.attachments.len(), 499);
    assert_eq!(p.attachments[498].filename.as_deref(), Some("f498.bin"));
    assert_eq!(messages(&p), vec!["more than 500 parts; the rest ignored"]);
}

#[test]
fn parts_limit_counts_nested_parts_once() {
    let limits = Limits { max_parts: 4, ..Limits::default() };
    let raw = "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/mixed; boundary=i\n\n\
               --i\n\na\n--i\n\nb\n--i\n\nc\n--i--\n--o\n\nd\n--o\n\ne\n--o--\n";
    let p = parse(raw.as_bytes(), &limits);
    assert_eq!(p.text.as_deref(), Some("a\n\nb"));
    assert_eq!(messages(&p), vec!["more than 4 parts; the rest ignored"]);
}

#[test]
fn attachment_over_the_limit_is_dropped() {
    let limits = Limits { max_attachment_bytes: 1000, ..Limits::default() };
    let big = "A".repeat(2000);
    let raw = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nSee attachments.\n\
         --b\nContent-Type: application/zip\nContent-Disposition: attachment; filename=\"big.zip\"\n\n{big}\n\
         --b\nContent-Type: application/octet-stream\n\n{big}\n\
         --b\nContent-Type: text/csv; name=small.csv\n\na;b\n--b--\n"
    );
    let p = parse(raw.as_bytes(), &limits);
    assert_eq!(p.text.as_deref(), Some("See attachments."));
    assert_eq!(p.attachments.len(), 1);
    assert_eq!(p.attachments[0].filename.as_deref(), Some("small.csv"));
    assert_eq!(
        messages(&p),
        vec![
            "part 2: attachment \"big.zip\" of 2000 bytes dropped: over the 1000-byte limit",
            "part 3: attachment (application/octet-stream) of 2000 bytes dropped: over the 1000-byte limit",
        ]
    );
    assert_eq!(p.problems[0].kind, ProblemKind::AttachmentTooLarge);
}

#[test]
fn total_limit_cuts_input_and_content() {
    let limits = Limits { max_total_bytes: 100, ..Limits::default() };
    let raw = format!("Subject: s\n\n{}", "x".repeat(200));
    let p = parse(raw.as_bytes(), &limits);
    assert_eq!(p.text.as_deref().map(str::len), Some(100 - 12));
    assert_eq!(messages(&p), vec!["message of 212 bytes cut at 100"]);

    // Text in a single-byte charset grows when decoded: the content budget can run out first.
    let mut raw =
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=windows-1252\n\n"
            .to_vec();
    raw.extend([0x80; 100]);
    raw.extend_from_slice(b"\n--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n");
    raw.extend_from_slice(&[b'A'; 60]);
    raw.extend_from_slice(b"\n--b--\n");
    let limits = Limits { max_total_bytes: 340, ..Limits::default() };
    assert!(raw.len() <= 340);
    let p = parse(&raw, &limits);
    assert_eq!(p.text.as_deref(), Some("€".repeat(100).as_str()));
    assert!(p.attachments.is_empty());
    assert_eq!(
        messages(&p),
        vec!["part 2: attachment (image/png) of 45 bytes dropped: the message's content is over the 340-byte limit"]
    );
    assert_eq!(p.problems[0].kind, ProblemKind::MessageTooLarge);
}

#[test]
fn binary_garbage_is_survived() {
    for seed in 1..20 {
        let raw = garbage(64 * 1024, seed);
        let p = parse(&raw, &Limits::default());
        assert!(p.problems.len() <= crate::model::MAX_PROBLEMS + 1);
        let _ = (is_automatic(&p), bounce(&p), split_quoted(p.text.as_deref().unwrap_or("")));
    }
    let p = parse(&[0u8; 1000], &Limits::default());
    assert!(p.headers.is_empty());
}

#[test]
fn problems_are_capped() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
    for _ in 0..300 {
        raw.push_str("--b\nContent-Type: text/plain; charset=x-none\n\nx\n");
    }
    raw.push_str("--b--\n");
    let p = parse_str(&raw);
    assert_eq!(p.problems.len(), 101);
    assert_eq!(p.problems[100].message, "200 more problems not listed");
    assert_eq!(p.problems[100].kind, ProblemKind::TooManyProblems);
}

#[test]
fn alternative_prefers_plain_and_keeps_html() {
    let raw = "Content-Type: multipart/alternative; boundary=a\n\n--a\nContent-Type: text/plain\n\nPlain\n\
               --a\nContent-Type: text/html\n\n<p>Rich</p>\n--a--\n";
    let p = parse_str(raw);
    assert_eq!((p.text.as_deref(), p.html.as_deref()), (Some("Plain"), Some("<p>Rich</p>")));
    // An empty plain version gives way to the HTML one.
    let raw = raw.replace("\n\nPlain\n", "\n\n\n");
    assert_eq!(parse_str(&raw).text.as_deref(), Some("Rich"));
}

#[test]
fn attached_messages_and_digests() {
    let raw = "Content-Type: multipart/mixed; boundary=m\n\n--m\n\nForwarding this.\n\
               --m\nContent-Type: message/rfc822\n\nSubject: Old/new: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\n\nInner text\n\
               --m\nContent-Type: message/rfc822\n\nFrom: a@x.de\n\nNo subject\n--m--\n";
    let p = parse_str(raw);
    assert_eq!(p.text.as_deref(), Some("Forwarding this."));
    assert_eq!(p.attachments.len(), 2);
    assert_eq!(p.attachments[0].filename.as_deref(), Some("Old_new: Grüße.eml"));
    assert_eq!(p.attachments[0].content_type, "message/rfc822");
    assert!(p.attachments[0].data.ends_with(b"Inner text"));
    assert_eq!(p.attachments[1].filename, None);

    let digest =
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: One\n\n1\n--d\n\nSubject: Two\n\n2\n--d--\n";
    let p = parse_str(digest);
    let names: Vec<_> = p.attachments.iter().map(|a| a.filename.as_deref()).collect();
    assert_eq!(names, vec![Some("One.eml"), Some("Two.eml")]);
}

#[test]
fn attachment_names_and_inline_parts() {
    let raw = "Content-Type: multipart/related; boundary=r\n\n\
               --r\nContent-Type: text/html; charset=utf-8\n\n<img src=\"cid:logo@x\">Hi\n\
               --r\nContent-Type: image/png; name=\"=?UTF-8?B?TMO2d2UucG5n?=\"\nContent-ID: <logo@x>\n\
               Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n\
               --r\nContent-Type: text/plain; name=notes.txt\nContent-Disposition: inline\n\nnotes\n\
               --r\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"C:\\\\Temp\\\\a.pdf\"\n\n%PDF\n\
               --r--\n";
    let p = parse_str(raw);
    assert_eq!(p.text.as_deref(), Some("Hi"));
    let got: Vec<_> = p
        .attachments
        .iter()
        .map(|a| (a.filename.as_deref(), a.content_type.as_str(), a.content_id.as_deref(), a.inline, a.data.len()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("Löwe.png"), "image/png", Some("logo@x"), true, 8),
            (Some("notes.txt"), "text/plain", None, true, 5),
            (Some("a.pdf"), "application/pdf", None, false, 4),
        ]
    );
}

#[test]
fn html_charset_from_meta_when_undeclared() {
    let raw = b"Content-Type: text/html\n\n<meta charset=\"iso-8859-15\"><p>5 \xa4</p>";
    let p = parse(raw, &Limits::default());
    assert_eq!(p.text.as_deref(), Some("5 €"));
}

#[test]
fn headers_without_blank_line_and_odd_content_types() {
    let p = parse_str("Subject: x\nThis line is body\nmore");
    assert_eq!(p.text.as_deref(), Some("This line is body\nmore"));
    assert_eq!(p.problems[0].kind, ProblemKind::MalformedHeader);
    let p = parse_str("Content-Type: text\n\nshort type");
    assert_eq!(p.text.as_deref(), Some("short type"));
    let p = parse_str("Content-Type: nonsense\n\nabc");
    assert_eq!(p.attachments[0].content_type, "application/octet-stream");
}

#[test]
fn quoted_printable_and_flowed_bodies() {
    let raw = "Content-Type: text/plain; charset=utf-8; format=flowed\nContent-Transfer-Encoding: quoted-printable\n\n\
               Ein langer Absatz, der =\nweich umbricht und =C3=BCber=20\nmehrere Zeilen flie=c3=9ft.\n";
    assert_eq!(
        parse_str(raw).text.as_deref(),
        Some("Ein langer Absatz, der weich umbricht und über mehrere Zeilen fließt.")
    );
}
