//! Messages in the shapes real mail clients and servers produce, parsed end to end.

use email_parse::{
    Address, Bounce, Limits, Parsed, ProblemKind, bounce, html_to_text, is_automatic, parse, split_quoted,
};

const OUTLOOK: &[u8] = include_bytes!("fixtures/outlook.eml");
const GMAIL: &[u8] = include_bytes!("fixtures/gmail.eml");
const APPLE: &[u8] = include_bytes!("fixtures/apple.eml");
const THUNDERBIRD: &[u8] = include_bytes!("fixtures/thunderbird.eml");
const NEWSLETTER: &[u8] = include_bytes!("fixtures/newsletter.eml");
const AUTOREPLY: &[u8] = include_bytes!("fixtures/autoreply.eml");
const BOUNCE: &[u8] = include_bytes!("fixtures/bounce.eml");
const REPLY_CHAIN: &[u8] = include_bytes!("fixtures/reply_chain.eml");
const ENCODED_SUBJECT: &[u8] = include_bytes!("fixtures/encoded_subject.eml");

const ALL: [(&str, &[u8]); 9] = [
    ("outlook", OUTLOOK),
    ("gmail", GMAIL),
    ("apple", APPLE),
    ("thunderbird", THUNDERBIRD),
    ("newsletter", NEWSLETTER),
    ("autoreply", AUTOREPLY),
    ("bounce", BOUNCE),
    ("reply_chain", REPLY_CHAIN),
    ("encoded_subject", ENCODED_SUBJECT),
];

fn load(raw: &[u8]) -> Parsed {
    let parsed = parse(raw, &Limits::default());
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed
}

fn addr(name: Option<&str>, email: &str) -> Address {
    Address { name: name.map(str::to_owned), email: email.to_owned() }
}

#[test]
fn outlook_reply_in_german() {
    let p = load(OUTLOOK);
    assert_eq!(p.subject.as_deref(), Some("AW: Ticket #4711: Drucker druckt nicht"));
    assert_eq!(p.from, vec![addr(Some("Jörg Müller"), "Joerg.Mueller@mueller-bau.de")]);
    assert_eq!(p.to, vec![addr(Some("Support Plugdesk"), "support@plugdesk.example")]);
    assert_eq!(p.cc, vec![addr(Some("Anna Berg"), "anna.berg@plugdesk.example")]);
    assert_eq!(
        p.message_id.as_deref(),
        Some("AM0PR07MB61873F2A9C1D4E5B8A7F6C5D4E3F2A1B0@AM0PR07MB6187.eurprd07.prod.outlook.com")
    );
    assert_eq!(p.in_reply_to, ["t4711.1@plugdesk.example"]);
    assert_eq!(p.references, ["t4711.1@plugdesk.example"]);
    assert_eq!(
        p.date.as_ref().map(|d| (d.raw.as_str(), d.unix)),
        Some(("Tue, 24 Nov 2026 10:15:42 +0000", Some(1_795_515_342)))
    );
    assert_eq!(p.header("Thread-Topic"), Some("Ticket #4711: Drucker druckt nicht"));
    assert_eq!(p.header("X-MS-Has-Attach"), Some(""));
    let new_part = "Hallo Frau Berg,\n\nder Drucker im 2. OG funktioniert wieder – vielen Dank für die schnelle Hilfe! \
                    Die Rechnung über 49,90 € geht direkt an unsere Buchhaltung.\n\n\
                    Mit freundlichen Grüßen\nJörg Müller\nMüller Bau GmbH";
    let quoted = "Von: Anna Berg <support@plugdesk.example>\nGesendet: Montag, 23. November 2026 16:02\n\
                  An: Jörg Müller <Joerg.Mueller@mueller-bau.de>\nBetreff: Ticket #4711: Drucker druckt nicht\n\n\
                  Sehr geehrter Herr Müller,\n\nbitte schalten Sie den Drucker einmal aus und nach 30 Sekunden wieder ein.\n\n\
                  Viele Grüße\nAnna Berg\nPlugdesk Support";
    let text = p.text.as_deref().unwrap_or_default();
    assert_eq!(text, format!("{new_part}\n\n{quoted}"));
    // The Windows-1252 HTML reads as the same text.
    let html = p.html.as_deref().unwrap_or_default();
    assert!(html.starts_with("<html xmlns:v="));
    assert!(html.contains("<b>Gesendet:</b> Montag"));
    assert_eq!(html_to_text(html), text);
    let split = split_quoted(text);
    assert_eq!(split.new_part, new_part);
    assert_eq!(split.quoted.as_deref(), Some(quoted));
    assert_eq!(split.signature, None);
    assert!(p.attachments.is_empty());
    assert_eq!(is_automatic(&p), None);
    assert_eq!(bounce(&p), None);
}

#[test]
fn gmail_reply_with_german_quote_header() {
    let p = load(GMAIL);
    assert_eq!(p.subject.as_deref(), Some("Re: [Ticket #4712] Lieferung verspätet"));
    assert_eq!(p.from, vec![addr(Some("Lena Schäfer"), "lena.schaefer@gmail.com")]);
    assert_eq!(p.message_id.as_deref(), Some("CAKx7Yq3s9d0_Z8pQ2mGxV4hT5wX+b1nR6cJ8eL0aF3uD7yE9iA@mail.gmail.com"));
    assert_eq!(p.in_reply_to, ["t4712.2@plugdesk.example"]);
    assert_eq!(p.references, ["t4712.1@plugdesk.example", "t4712.2@plugdesk.example"]);
    assert_eq!(p.date.as_ref().and_then(|d| d.unix), Some(1_795_594_323));
    let new_part = "Hallo,\n\ndas Paket ist heute angekommen. Danke für Ihre Hilfe! 🙂\n\nGrüße\nLena";
    let quoted = "Am Di., 24. Nov. 2026 um 17:30 Uhr schrieb Plugdesk Support <\nsupport@plugdesk.example>:\n\n\
                  > Guten Tag Frau Schäfer,\n>\n> Ihre Lieferung wurde heute verschickt, die Sendungsnummer lautet\n\
                  > 00340434161094042557.\n>\n> Viele Grüße\n> Ihr Plugdesk-Team\n>";
    let text = p.text.as_deref().unwrap_or_default();
    assert_eq!(text, format!("{new_part}\n\n{quoted}"));
    let split = split_quoted(text);
    assert_eq!((split.new_part.as_str(), split.quoted.as_deref()), (new_part, Some(quoted)));
    // The HTML version: the blockquote comes out quoted, and splits the same way.
    let from_html = html_to_text(p.html.as_deref().unwrap_or_default());
    assert_eq!(
        from_html,
        format!(
            "{new_part}\n\nAm Di., 24. Nov. 2026 um 17:30 Uhr schrieb Plugdesk Support <support@plugdesk.example>:\n\n\
             > Guten Tag Frau Schäfer,\n>\n> Ihre Lieferung wurde heute verschickt, die Sendungsnummer lautet \
             00340434161094042557.\n>\n> Viele Grüße\n> Ihr Plugdesk-Team"
        )
    );
    assert_eq!(split_quoted(&from_html).new_part, new_part);
    assert!(p.attachments.is_empty());
}

#[test]
fn apple_mail_with_inline_image_and_flowed_text() {
    let p = load(APPLE);
    assert_eq!(p.subject.as_deref(), Some("Re: Seriennummer"));
    assert_eq!(p.from, vec![addr(Some("Tom Richter"), "tom.richter@icloud.com")]);
    assert_eq!(p.message_id.as_deref(), Some("8E2F6A41-3C7B-4D9A-B1E5-0A9F8C7D6E5B@icloud.com"));
    assert_eq!(p.date.as_ref().and_then(|d| d.unix), Some(1_795_516_937));
    // format=flowed; delsp=yes: the wrapped lines are joined again.
    let new_part = "Hallo zusammen,\n\nanbei ein Foto vom Typenschild. Die Seriennummer ist schwer zu lesen, es sollte \
                    aber reichen: SN 4711-0815-AB.\n\n\n\nBeste Grüße\nTom";
    let quoted = "On 24. Nov 2026, at 10:00, Plugdesk Support <support@plugdesk.example> wrote:\n\n\
                  > Könnten Sie uns die Seriennummer des Geräts schicken?";
    assert_eq!(p.text.as_deref(), Some(format!("{new_part}\n\n{quoted}").as_str()));
    let split = split_quoted(p.text.as_deref().unwrap_or_default());
    assert_eq!((split.new_part.as_str(), split.quoted.as_deref()), (new_part, Some(quoted)));
    // The HTML sits in multipart/related with the image it shows.
    assert!(p.html.as_deref().unwrap_or_default().contains("src=\"cid:F1E2D3C4-B5A6-4978-8695-A4B3C2D1E0F9\""));
    assert_eq!(p.attachments.len(), 1);
    let image = &p.attachments[0];
    assert_eq!(image.filename.as_deref(), Some("IMG_2041.jpeg"));
    assert_eq!(image.content_type, "image/jpeg");
    assert_eq!(image.content_id.as_deref(), Some("F1E2D3C4-B5A6-4978-8695-A4B3C2D1E0F9"));
    assert!(image.inline);
    assert_eq!(image.data.len(), 160);
    assert_eq!((&image.data[..4], &image.data[158..]), (&[0xFF, 0xD8, 0xFF, 0xE0][..], &[0xFF, 0xD9][..]));
}

#[test]
fn thunderbird_latin9_with_rfc2231_attachment() {
    let p = load(THUNDERBIRD);
    assert_eq!(p.subject.as_deref(), Some("Rechnung März"));
    assert_eq!(p.from, vec![addr(Some("Karl Weiß"), "karl@weiss-soehne.de")]);
    assert_eq!(p.to, vec![addr(None, "support@plugdesk.example")]);
    assert_eq!(p.date.as_ref().and_then(|d| d.unix), Some(1_795_698_235));
    let text = p.text.as_deref().unwrap_or_default();
    assert_eq!(
        text,
        "Guten Tag,\n\nanbei die Rechnung für März über 1.250,00 €. Bitte überweisen Sie den Betrag bis zum 15. \
         April.\n\nMit freundlichen Grüßen\n-- \nKarl Weiß\nWeiß & Söhne GmbH\nTel. +49 30 1234567"
    );
    let split = split_quoted(text);
    assert_eq!(
        split.new_part,
        "Guten Tag,\n\nanbei die Rechnung für März über 1.250,00 €. Bitte überweisen Sie den Betrag bis zum 15. \
         April.\n\nMit freundlichen Grüßen"
    );
    assert_eq!(split.signature.as_deref(), Some("-- \nKarl Weiß\nWeiß & Söhne GmbH\nTel. +49 30 1234567"));
    assert_eq!(split.quoted, None);
    assert_eq!(p.html, None);
    assert_eq!(p.attachments.len(), 1);
    let pdf = &p.attachments[0];
    assert_eq!(pdf.filename.as_deref(), Some("Rechnung März.pdf"));
    assert_eq!(pdf.content_type, "application/pdf");
    assert!(!pdf.inline);
    assert_eq!(pdf.data.len(), 233);
    assert!(pdf.data.starts_with(b"%PDF-1.4\n") && pdf.data.ends_with(b"%%EOF\n"));
}

#[test]
fn html_only_newsletter() {
    let p = load(NEWSLETTER);
    assert_eq!(p.subject.as_deref(), Some("Neuigkeiten im November 🚀"));
    assert_eq!(p.to, vec![addr(None, "kunde@beispiel-firma.de")]);
    assert_eq!(
        p.text.as_deref(),
        Some(
            "Neuigkeiten im November\n\nLiebe Kundinnen und Kunden,\n\ndas ist neu in Plugdesk 3.2:\n\n\
             - Workflows – Tickets automatisch zuweisen\n- Vorlagen für häufige Antworten\n\
             - Schnellere Suche (bis zu 3× so schnell)\n\n\
             Alle Neuerungen lesen (https://plugdesk.example/news/2026-11?utm_source=newsletter&utm_medium=email)\n\n\
             Fragen? Schreiben Sie an hallo@plugdesk.example.\n\n\
             Plugdesk GmbH · Beispielstraße 1 · 10115 Berlin\n\
             Abmelden (https://plugdesk.example/unsubscribe?u=8f3a) | Datenschutz (https://plugdesk.example/privacy)"
        )
    );
    assert!(p.html.as_deref().unwrap_or_default().starts_with("<!DOCTYPE html>"));
    assert_eq!(is_automatic(&p).as_deref(), Some("Precedence: bulk"));
    // Without Precedence, the list headers still tell.
    let raw = String::from_utf8_lossy(NEWSLETTER).replace("Precedence: bulk\r\n", "");
    let p = parse(raw.as_bytes(), &Limits::default());
    assert_eq!(
        is_automatic(&p).as_deref(),
        Some("mailing list (List-Id: Plugdesk Neuigkeiten <news.plugdesk.example>)")
    );
    let raw = raw.replace("List-Id: Plugdesk Neuigkeiten <news.plugdesk.example>\r\n", "");
    let p = parse(raw.as_bytes(), &Limits::default());
    assert_eq!(is_automatic(&p).as_deref(), Some("mailing list (List-Unsubscribe)"));
}

#[test]
fn out_of_office_reply() {
    let p = load(AUTOREPLY);
    assert_eq!(p.subject.as_deref(), Some("Automatische Antwort: Ticket #4716: Angebot"));
    assert_eq!(p.in_reply_to, ["t4716.1@plugdesk.example"]);
    assert_eq!(
        p.text.as_deref(),
        Some(
            "Vielen Dank für Ihre Nachricht.\n\nIch bin bis einschließlich 4. Dezember 2026 nicht im Büro und habe \
             keinen Zugriff auf meine E-Mails. In dringenden Fällen wenden Sie sich bitte an \
             zentrale@beispiel-firma.de.\n\nMit freundlichen Grüßen\nPetra Lange"
        )
    );
    assert_eq!(is_automatic(&p).as_deref(), Some("Auto-Submitted: auto-replied"));
    let raw = String::from_utf8_lossy(AUTOREPLY).replace("Auto-Submitted: auto-replied\r\n", "");
    let p = parse(raw.as_bytes(), &Limits::default());
    assert_eq!(is_automatic(&p).as_deref(), Some("X-Auto-Response-Suppress: All"));
    assert_eq!(bounce(&p), None);
}

#[test]
fn bounce_from_mailer_daemon() {
    let p = load(BOUNCE);
    assert_eq!(p.subject.as_deref(), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(p.from, vec![addr(Some("Mail Delivery System"), "MAILER-DAEMON@mx1.plugdesk.example")]);
    assert_eq!(p.date.as_ref().and_then(|d| d.unix), Some(1_795_514_400));
    let text = p.text.as_deref().unwrap_or_default();
    assert!(text.starts_with("This is the mail system at host mx1.plugdesk.example.\n\nI'm sorry"));
    assert!(text.ends_with("Recipient address rejected: User unknown\n    (in reply to RCPT TO command)"));
    let kinds: Vec<_> =
        p.attachments.iter().map(|a| (a.filename.as_deref(), a.content_type.as_str(), a.data.len())).collect();
    assert_eq!(
        kinds,
        vec![
            (None, "message/delivery-status", 448),
            (Some("Ihre Anfrage #4714 – Rückfrage.eml"), "message/rfc822", 614),
        ]
    );
    assert_eq!(
        bounce(&p),
        Some(Bounce {
            original_message_id: Some("t4714.3@plugdesk.example".to_owned()),
            recipient: Some("kunde@beispiel-firma.de".to_owned()),
            action: Some("failed".to_owned()),
            status: Some("5.1.1".to_owned()),
            diagnostic: Some(
                "550 5.1.1 <kunde@beispiel-firma.de>: Recipient address rejected: User unknown".to_owned()
            ),
        })
    );
    // The attached original can be read in turn.
    let original = parse(&p.attachments[1].data, &Limits::default());
    assert_eq!(original.subject.as_deref(), Some("Ihre Anfrage #4714 – Rückfrage"));
    assert_eq!(original.text.as_deref(), Some("Guten Tag,\n\nwir haben eine Rückfrage zu Ihrer Anfrage."));
    // Each sign of an automatic message is enough on its own.
    assert_eq!(is_automatic(&p).as_deref(), Some("Auto-Submitted: auto-replied"));
    let raw = String::from_utf8_lossy(BOUNCE).replace("Auto-Submitted: auto-replied\n", "");
    let p = parse(raw.as_bytes(), &Limits::default());
    assert_eq!(is_automatic(&p).as_deref(), Some("empty Return-Path: a bounce or an automatic notice"));
    let raw = raw.replace("Return-Path: <>\n", "");
    let p = parse(raw.as_bytes(), &Limits::default());
    assert_eq!(is_automatic(&p).as_deref(), Some("automatic sender in From: MAILER-DAEMON@mx1.plugdesk.example"));
}

#[test]
fn reply_chain_threading_and_addresses() {
    let p = load(REPLY_CHAIN);
    assert_eq!(p.subject.as_deref(), Some("Re: AW: Re: VPN-Zugang"));
    assert_eq!(p.from, vec![addr(Some("Koch, Martin (IT)"), "M.Koch@beispiel-firma.de")]);
    assert_eq!(
        p.to,
        vec![
            addr(Some("Plugdesk Support"), "support@plugdesk.example"),
            addr(None, "anna.berg@plugdesk.example"),
            addr(Some("Jörg"), "joerg@mueller-bau.de"),
        ]
    );
    assert_eq!(p.cc, vec![]);
    assert_eq!(p.reply_to, vec![addr(Some("IT Helpdesk"), "it-helpdesk@beispiel-firma.de")]);
    assert_eq!(p.message_id.as_deref(), Some("1a2b3c4d.5e6f@beispiel-firma.de"));
    assert_eq!(p.in_reply_to, ["t4717.3@plugdesk.example"]);
    assert_eq!(
        p.references,
        [
            "t4717.1@plugdesk.example",
            "AM0PR07MB6187ABC@AM0PR07MB6187.eurprd07.prod.outlook.com",
            "t4717.3@plugdesk.example"
        ]
    );
    assert_eq!(p.date.as_ref().map(|d| (d.raw.as_str(), d.unix)), Some(("27 Nov 26 08:05 +0100", Some(1_795_763_100))));
    let split = split_quoted(p.text.as_deref().unwrap_or_default());
    assert_eq!(split.new_part, "Der VPN-Zugang klappt jetzt auch von zu Hause.\n\nDanke und Gruß\nMartin");
    assert_eq!(split.signature.as_deref(), Some("-- \nMartin Koch · IT\nBeispiel Firma AG"));
    assert_eq!(
        split.quoted.as_deref(),
        Some(
            "On Thu, 26 Nov 2026 at 16:40, Plugdesk Support <support@plugdesk.example> wrote:\n\
             > Bitte versuchen Sie es noch einmal mit dem neuen Profil.\n>\n\
             > On Thu, 26 Nov 2026 at 09:12, Martin Koch <m.koch@beispiel-firma.de> wrote:\n\
             >> Der VPN-Client meldet \"Zertifikat ungültig\"."
        )
    );
}

#[test]
fn encoded_words_in_many_charsets() {
    let p = load(ENCODED_SUBJECT);
    // ISO-8859-1 Q, then UTF-8 B words (joined without the space between them), plain text,
    // a lowercase utf-8 q word, and a malformed word left as written.
    assert_eq!(p.subject.as_deref(), Some("Grüße aus Köln – 🌧 Wetter und Schöne Tage =?UTF-8?Q?broken"));
    assert_eq!(p.from, vec![addr(Some("Müller, Jörg"), "joerg@mueller-bau.de")]);
    assert_eq!(p.to, vec![addr(Some("Анна Кузнецова"), "anna@example.ru")]);
    assert_eq!(p.date.as_ref().and_then(|d| d.unix), Some(1_795_822_200));
    assert_eq!(p.text.as_deref(), Some("Привет из Кельна!"));
}

#[test]
fn line_endings_do_not_matter() {
    for (name, raw) in ALL {
        let a = parse(raw, &Limits::default());
        let lf = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        // Fixtures that are not UTF-8 are compared in their own bytes.
        let (lf, crlf) = if std::str::from_utf8(raw).is_ok() {
            (lf.clone().into_bytes(), lf.replace('\n', "\r\n").into_bytes())
        } else {
            let lf_bytes: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
            let crlf_bytes =
                lf_bytes.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
            (lf_bytes, crlf_bytes)
        };
        for variant in [lf, crlf] {
            let b = parse(&variant, &Limits::default());
            assert_eq!(
                (&a.subject, &a.from, &a.to, &a.text, &a.html),
                (&b.subject, &b.from, &b.to, &b.text, &b.html),
                "{name}"
            );
            let names = |p: &Parsed| p.attachments.iter().map(|x| x.filename.clone()).collect::<Vec<_>>();
            assert_eq!(names(&a), names(&b), "{name}");
            assert!(b.problems.is_empty(), "{name}: {:?}", b.problems);
        }
    }
}

#[test]
fn fixtures_are_not_automatic_unless_they_are() {
    let automatic: Vec<&str> =
        ALL.iter().filter(|(_, raw)| is_automatic(&load(raw)).is_some()).map(|(n, _)| *n).collect();
    assert_eq!(automatic, ["newsletter", "autoreply", "bounce"]);
    let bounces: Vec<&str> = ALL.iter().filter(|(_, raw)| bounce(&load(raw)).is_some()).map(|(n, _)| *n).collect();
    assert_eq!(bounces, ["bounce"]);
}

/// Parses a fixture that has problems, and returns them as (kind, message) pairs.
fn load_with_problems(raw: &[u8]) -> (Parsed, Vec<(ProblemKind, String)>) {
    let parsed = parse(raw, &Limits::default());
    let problems = parsed.problems.iter().map(|p| (p.kind, p.message.clone())).collect();
    (parsed, problems)
}

#[test]
fn a_fold_broken_by_a_filtering_gateway() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/broken_fold.eml"));
    assert_eq!(
        p.subject.as_deref(),
        Some("[EXTERN] Wartungsvertrag 2027: Angebot und Termine fuer die Jahresinspektion")
    );
    assert_eq!(p.to, vec![addr(None, "support@plugdesk.example"), addr(None, "technik@plugdesk.example")]);
    assert_eq!(p.message_id.as_deref(), Some("20261125091158.AB12@beispiel-gmbh.de"));
    assert!(p.text.as_deref().is_some_and(|t| t.starts_with("Guten Morgen,")));
    assert_eq!(
        problems,
        vec![
            (
                ProblemKind::MalformedHeader,
                "header line 7 is no header field, but header fields follow; read as a continuation of To".to_owned()
            ),
            (
                ProblemKind::MalformedHeader,
                "header line 9 is no header field, but header fields follow; read as a continuation of Subject"
                    .to_owned()
            ),
        ]
    );
}

#[test]
fn a_forwarded_message_pasted_into_a_pipe() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/forwarded_paste.eml"));
    assert_eq!(p.subject.as_deref(), Some("Rücksendung Bestellung 88231"));
    assert_eq!(p.from, vec![addr(Some("Lena Schäfer"), "lena.schaefer@example.net")]);
    assert_eq!(p.to, vec![addr(None, "shop@plugdesk.example")]);
    assert_eq!(
        p.text.as_deref(),
        Some(
            "---------- Forwarded message ---------\n\nHallo,\n\nich möchte die Bestellung 88231 zurücksenden. \
             Wie bekomme ich das Etikett?\n\nLena"
        )
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, ProblemKind::MalformedHeader);
}

#[test]
fn header_fields_after_a_stray_blank_line() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/stray_blank_line.eml"));
    assert_eq!(p.subject.as_deref(), Some("Fattura 2026/118 non ricevuta"));
    assert_eq!(p.message_id.as_deref(), Some("c0ffee.118@example.org"));
    assert_eq!(p.to, vec![addr(None, "support@plugdesk.example")]);
    assert_eq!(
        p.text.as_deref(),
        Some(
            "Buongiorno,\n\nnon abbiamo ancora ricevuto la fattura 2026/118. Potete inviarla di nuovo?\n\nGrazie,\nMarco"
        )
    );
    assert_eq!(
        problems,
        vec![(
            ProblemKind::MalformedHeader,
            "header fields after the blank line that ended an unfinished field \
             (Subject, Message-ID, Content-Type, Content-Transfer-Encoding) read as headers too"
                .to_owned()
        )]
    );
}

#[test]
fn raw_latin1_headers_under_a_latin1_body() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/latin1_raw_subject.eml"));
    assert_eq!(p.subject.as_deref(), Some("Drucker im 2. OG: Papierstau, schöne Grüße"));
    assert_eq!(p.from, vec![addr(Some("Jörg Müller"), "joerg@mueller-bau.de")]);
    assert_eq!(p.header("Subject"), Some("Drucker im 2. OG: Papierstau, schöne Grüße"));
    assert_eq!(p.text.as_deref(), Some("Der Drucker zeigt seit heute früh einen Papierstau an."));
    assert_eq!(problems, vec![]);
}

#[test]
fn raw_koi8r_headers_under_a_koi8r_body() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/koi8r_raw_subject.eml"));
    assert_eq!(p.subject.as_deref(), Some("Не работает принтер в офисе"));
    assert_eq!(p.from, vec![addr(Some("Иван Петров"), "ivan@example.ru")]);
    assert_eq!(p.text.as_deref(), Some("Здравствуйте! Принтер в офисе не печатает со вчерашнего дня."));
    assert_eq!(problems, vec![]);
}

#[test]
fn raw_shift_jis_headers_without_any_charset_are_detected() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/sjis_raw_subject.eml"));
    assert_eq!(p.subject.as_deref(), Some("注文番号の確認についてのお問い合わせ"));
    assert_eq!(p.from, vec![addr(Some("山田太郎"), "yamada@example.jp")]);
    assert_eq!(p.text.as_deref(), Some("Order 4711, please check."));
    assert_eq!(
        problems,
        vec![(
            ProblemKind::CharsetMismatch,
            "8-bit text in header fields without a charset; read as Shift_JIS".to_owned()
        )]
    );
}

#[test]
fn shift_jis_labelled_iso_2022_jp() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/sjis_as_iso2022jp.eml"));
    assert_eq!(p.subject.as_deref(), Some("請求書の再発行のお願い"));
    assert_eq!(p.from, vec![addr(Some("佐藤花子"), "sato@example.jp")]);
    assert_eq!(
        p.text.as_deref(),
        Some("お世話になっております。先月分の請求書を再発行していただけますでしょうか。よろしくお願いいたします。")
    );
    assert_eq!(
        problems,
        vec![
            (
                ProblemKind::CharsetMismatch,
                "declared charset \"ISO-2022-JP\" in Subject does not fit the bytes; read as Shift_JIS".to_owned()
            ),
            (
                ProblemKind::CharsetMismatch,
                "body: declared charset \"ISO-2022-JP\" does not fit the bytes; read as Shift_JIS".to_owned()
            ),
        ]
    );
}

#[test]
fn undeclared_gbk_and_big5_bodies() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/gbk_undeclared.eml"));
    assert_eq!(p.text.as_deref(), Some("您好，我的订单还没有收到，请帮我查一下物流信息。谢谢！"));
    assert_eq!(
        problems,
        vec![(ProblemKind::CharsetMismatch, "body: 8-bit text without a charset; read as GBK".to_owned())]
    );
    let (p, problems) = load_with_problems(include_bytes!("fixtures/big5_undeclared.eml"));
    assert_eq!(p.text.as_deref(), Some("您好，請問發票什麼時候會寄出？我們公司需要在月底前收到。謝謝！"));
    assert_eq!(
        problems,
        vec![(ProblemKind::CharsetMismatch, "body: 8-bit text without a charset; read as Big5".to_owned())]
    );
}

#[test]
fn utf8_labelled_latin1() {
    let (p, problems) = load_with_problems(include_bytes!("fixtures/utf8_as_latin1.eml"));
    assert_eq!(p.subject.as_deref(), Some("Återbetalning för order 5521 – när?"));
    assert_eq!(p.from, vec![addr(Some("Björn Åström"), "bjorn@example.se")]);
    assert_eq!(
        p.text.as_deref(),
        Some("Hej! Jag väntar fortfarande på återbetalningen för order 5521. Hälsningar, Björn")
    );
    assert_eq!(
        problems,
        vec![
            (
                ProblemKind::CharsetMismatch,
                "declared charset \"iso-8859-1\" in Subject does not fit the bytes; read as UTF-8".to_owned()
            ),
            (
                ProblemKind::CharsetMismatch,
                "body: declared charset \"iso-8859-1\" does not fit the bytes; read as UTF-8".to_owned()
            ),
        ]
    );
}
