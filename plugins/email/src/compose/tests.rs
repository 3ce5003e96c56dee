use super::*;
use email_parse::{Limits, is_automatic, parse};

fn addr(name: Option<&str>, email: &str) -> Address {
    Address { name: name.map(str::to_owned), email: email.to_owned() }
}

fn sample() -> Outgoing {
    Outgoing {
        from: addr(Some("Plugdesk Support – Müller & Söhne"), "support@helpdesk.example"),
        to: vec![addr(Some("Jörg Größer"), "joerg@example.de"), addr(None, "team@example.com")],
        cc: vec![addr(Some("Smith, John (IT)"), "john@example.com"), addr(Some("Ann O'Neil"), "ann@example.com")],
        reply_to: Some(addr(Some("Plugdesk"), "reply+t1042@helpdesk.example")),
        subject: "Re: [#1042] Ärger mit der Rechnung – Übersicht für März und noch viel mehr Text, damit gefaltet wird"
            .to_owned(),
        text: "Hallo Jörg,\n\nanbei die Übersicht.\n.Punkt am Anfang\nZeile mit = und Leerzeichen am Ende \n\nGrüße\nIhr Support-Team\n"
            .to_owned(),
        html: Some("<p>Hallo Jörg,</p><p>anbei die <b>Übersicht</b>.</p>".to_owned()),
        attachments: vec![
            OutgoingAttachment {
                filename: "Übersicht März.pdf".to_owned(),
                content_type: "application/pdf".to_owned(),
                data: (0..5000u32).map(|i| (i * 7 % 256) as u8).collect(),
            },
            OutgoingAttachment {
                filename: "notes \"v2\".txt".to_owned(),
                content_type: "text/plain".to_owned(),
                data: b"plain\r\nnotes\r\n".to_vec(),
            },
            OutgoingAttachment {
                filename: format!("{}.bin", "Sehr langer Dateiname mit Umlauten äöü ".repeat(4)),
                content_type: "not a type".to_owned(),
                data: vec![0, 1, 2, 255],
            },
        ],
        in_reply_to: Some("<abc.123@mail.example.de>".to_owned()),
        references: (0..12).map(|i| format!("<ref{i}.ticket-1042@helpdesk.example>")).collect(),
        automatic: true,
        date_unix: 1_771_581_845, // 2026-02-20 10:04:05 UTC, a Friday
        message_id_domain: "helpdesk.example".to_owned(),
        message_id_local: "t1042.m7.q9z".to_owned(),
    }
}

fn check_lines(raw: &[u8]) {
    let text = std::str::from_utf8(raw).unwrap();
    assert!(text.ends_with("\r\n"));
    for line in text.split("\r\n") {
        assert!(!line.contains('\n') && !line.contains('\r'), "bare line break in {line:?}");
        assert!(line.len() <= 78 || !line.contains(' ') && line.len() <= 998, "line of {} chars: {line}", line.len());
    }
}

#[test]
fn round_trip_through_the_parser() {
    let msg = sample();
    let (id, raw) = compose(&msg).unwrap();
    assert_eq!(id, "t1042.m7.q9z@helpdesk.example");
    check_lines(&raw);
    let parsed = parse(&raw, &Limits::default());
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    assert_eq!(parsed.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(parsed.subject.as_deref(), Some(msg.subject.as_str()));
    assert_eq!(parsed.from, vec![msg.from.clone()]);
    assert_eq!(parsed.to, msg.to);
    assert_eq!(parsed.cc, msg.cc);
    assert_eq!(parsed.reply_to, vec![msg.reply_to.clone().unwrap()]);
    // The parser drops the line break that ends a body; everything else survives.
    assert_eq!(parsed.text.as_deref(), Some(msg.text.trim_end_matches('\n')));
    assert_eq!(parsed.html.as_deref(), msg.html.as_deref());
    assert_eq!(parsed.attachments.len(), 3);
    for (got, want) in parsed.attachments.iter().zip(&msg.attachments) {
        assert_eq!(got.filename.as_deref(), Some(want.filename.as_str()));
        assert_eq!(got.data, want.data);
    }
    assert_eq!(parsed.attachments[0].content_type, "application/pdf");
    assert_eq!(parsed.attachments[2].content_type, "application/octet-stream");
    assert_eq!(parsed.in_reply_to, ["abc.123@mail.example.de"]);
    let refs: Vec<String> = (0..12).map(|i| format!("ref{i}.ticket-1042@helpdesk.example")).collect();
    assert_eq!(parsed.references, refs);
    assert_eq!(parsed.header("Date"), Some("Fri, 20 Feb 2026 10:04:05 +0000"));
    assert_eq!(parsed.date.as_ref().and_then(|d| d.unix), Some(msg.date_unix));
    assert!(is_automatic(&parsed).is_some());
    assert_eq!(parsed.header("X-Auto-Response-Suppress"), Some("All"));
    assert_eq!(parsed.header("MIME-Version"), Some("1.0"));
}

#[test]
fn plain_message_without_extras() {
    let msg = Outgoing {
        from: addr(None, "support@helpdesk.example"),
        to: vec![addr(Some("Anna"), "anna@example.com")],
        subject: "Your request".to_owned(),
        text: "Thanks, we are on it.".to_owned(),
        date_unix: 0,
        message_id_domain: "helpdesk.example".to_owned(),
        message_id_local: "a1".to_owned(),
        ..Default::default()
    };
    let (_, raw) = compose(&msg).unwrap();
    check_lines(&raw);
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.starts_with("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\nFrom: support@helpdesk.example\r\nTo: Anna <anna@example.com>\r\nSubject: Your request\r\n"), "{text}");
    assert!(!text.contains("multipart") && !text.contains("Auto-Submitted") && !text.contains("In-Reply-To"));
    let parsed = parse(&raw, &Limits::default());
    assert_eq!(parsed.text.as_deref(), Some("Thanks, we are on it."));
    assert!(is_automatic(&parsed).is_none());
}

#[test]
fn refuses_header_injection() {
    let mut msg = sample();
    msg.to[0].email = "a@b.c>\r\nBcc: x@y.z".to_owned();
    assert!(compose(&msg).is_err());
    let mut msg = sample();
    msg.message_id_local = "a b".to_owned();
    assert!(compose(&msg).is_err());
    let mut msg = sample();
    msg.in_reply_to = Some("<a@b>\r\nX: y".to_owned());
    assert!(compose(&msg).is_err());
    let mut msg = sample();
    msg.to.clear();
    msg.cc.clear();
    assert!(compose(&msg).is_err());
    // A subject with a line break is encoded, not injected.
    let mut msg = sample();
    msg.subject = "Hi\r\nBcc: x@y.z".to_owned();
    let (_, raw) = compose(&msg).unwrap();
    let parsed = parse(&raw, &Limits::default());
    assert_eq!(parsed.header("Bcc"), None);
}

#[test]
fn long_ascii_subject_folds_and_reads_back() {
    let mut msg = sample();
    msg.subject = "word ".repeat(40).trim_end().to_owned();
    let (_, raw) = compose(&msg).unwrap();
    check_lines(&raw);
    assert_eq!(parse(&raw, &Limits::default()).subject.as_deref(), Some(msg.subject.as_str()));
}

#[test]
fn dates() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    assert_eq!(rfc5322_date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 +0000");
    assert_eq!(rfc5322_date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 +0000");
    assert_eq!(rfc5322_date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
}

#[test]
fn dates_across_calendar_edges() {
    // 2100 is not a leap year; the year's last second and the next year's first.
    assert_eq!(rfc5322_date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 +0000");
    assert_eq!(rfc5322_date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 +0000");
    assert_eq!(rfc5322_date(1_798_761_599), "Thu, 31 Dec 2026 23:59:59 +0000");
    assert_eq!(rfc5322_date(1_798_761_600), "Fri, 01 Jan 2027 00:00:00 +0000");
    // Long before 1970, and the last second with a four-digit year.
    assert_eq!(rfc5322_date(-2_208_988_800), "Mon, 01 Jan 1900 00:00:00 +0000");
    assert_eq!(rfc5322_date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 +0000");
    // Out of range: the epoch, not a panic.
    assert_eq!(rfc5322_date(i64::MAX), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(rfc5322_date(i64::MIN), "Thu, 01 Jan 1970 00:00:00 +0000");
}

#[test]
fn boundaries_avoid_content() {
    let mut msg = sample();
    msg.html = Some("<p>--=_plugdesk_ =_plugdesk_</p>".to_owned());
    let (_, raw) = compose(&msg).unwrap();
    let parsed = parse(&raw, &Limits::default());
    assert_eq!(parsed.html, msg.html);
    assert_eq!(parsed.attachments.len(), 3);
}
