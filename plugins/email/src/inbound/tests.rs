use plugdesk_sdk::InboundMessage;
use serde_json::{Value, json};

use super::*;

// The parser's fixtures: real mail in the shapes common clients write.
const GMAIL: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/gmail.eml");
const OUTLOOK: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/outlook.eml");
const APPLE: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/apple.eml");
const AUTOREPLY: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/autoreply.eml");
const BOUNCE: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/bounce.eml");
const NEWSLETTER: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/newsletter.eml");
const REPLY_CHAIN: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/reply_chain.eml");
const THUNDERBIRD: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/thunderbird.eml");
const ENCODED_SUBJECT: &[u8] = include_bytes!("../../../email-parse/tests/fixtures/encoded_subject.eml");

fn settings(extra: &[(&str, Value)]) -> Settings {
    let mut pairs = vec![("address".to_owned(), json!("support@plugdesk.example"))];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Settings::from_lookup(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).unwrap()
}

/// Converts `raw` and returns the result with what was logged.
fn run(raw: &[u8], settings: &Settings) -> (Converted, Vec<(Level, String)>) {
    run_envelope(raw, None, settings)
}

/// As [`run`], with the envelope sender a piped message came with.
fn run_envelope(raw: &[u8], envelope: Option<&str>, settings: &Settings) -> (Converted, Vec<(Level, String)>) {
    let mut logged = Vec::new();
    let converted = convert(raw.to_vec(), envelope, settings, &mut |level, line| logged.push((level, line.to_owned())));
    (converted, logged)
}

/// Converts `raw` with the default settings, which must give a message.
fn message(raw: &[u8]) -> InboundMessage {
    message_with(raw, &settings(&[]))
}

fn message_with(raw: &[u8], settings: &Settings) -> InboundMessage {
    match run(raw, settings).0 {
        Converted::Message(m) => *m,
        Converted::Skipped(skip) => panic!("skipped: {skip:?}"),
    }
}

fn replace(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let at = haystack.windows(from.len()).position(|w| w == from).unwrap_or_else(|| panic!("{from:?} not found"));
    [&haystack[..at], to.as_bytes(), &haystack[at + from.len()..]].concat()
}

#[test]
fn gmail_reply_splits_new_part_from_quote_and_threads() {
    let m = message(GMAIL);
    assert_eq!(m.external_id, "CAKx7Yq3s9d0_Z8pQ2mGxV4hT5wX+b1nR6cJ8eL0aF3uD7yE9iA@mail.gmail.com");
    assert_eq!((m.sender.kind.as_str(), m.sender.address.as_str()), ("email", "lena.schaefer@gmail.com"));
    assert_eq!(m.sender_name.as_deref(), Some("Lena Schäfer"));
    assert_eq!(m.subject.as_deref(), Some("Re: [Ticket #4712] Lieferung verspätet"));
    assert_eq!(m.ticket_number, Some(4712));
    assert_eq!(m.text, "Hallo,\n\ndas Paket ist heute angekommen. Danke für Ihre Hilfe! 🙂\n\nGrüße\nLena");
    let quoted = m.quoted.as_deref().unwrap_or_default();
    assert!(quoted.starts_with("Am Di., 24. Nov. 2026 um 17:30 Uhr schrieb Plugdesk Support <"), "{quoted}");
    assert!(quoted.ends_with("> Ihr Plugdesk-Team\n>"), "{quoted}");
    assert_eq!(m.replies_to, ["t4712.2@plugdesk.example", "t4712.1@plugdesk.example"]);
    assert_eq!(m.conversation.as_deref(), Some("t4712.1@plugdesk.example"));
    assert!(m.html.as_deref().unwrap_or_default().contains("gmail_quote"));
    assert_eq!(m.raw.as_deref(), Some(GMAIL));
    assert!(!m.automatic);
    assert!(m.delivery_failure.is_none());
    assert!(m.attachments.is_empty());
}

#[test]
fn outlook_reply_in_windows_1252_splits_at_the_header_block() {
    let m = message(OUTLOOK);
    assert_eq!(m.sender.address, "Joerg.Mueller@mueller-bau.de");
    assert_eq!(m.sender_name.as_deref(), Some("Jörg Müller"));
    assert!(m.text.starts_with("Hallo Frau Berg,\n\nder Drucker im 2. OG funktioniert wieder – vielen Dank"));
    assert!(m.text.contains("49,90 €") && m.text.ends_with("Jörg Müller\nMüller Bau GmbH"), "{}", m.text);
    let quoted = m.quoted.as_deref().unwrap_or_default();
    assert!(quoted.starts_with("Von: Anna Berg <support@plugdesk.example>\nGesendet: Montag"), "{quoted}");
    // "Ticket #4711:" is no tag: only a bracketed one counts.
    assert_eq!(m.ticket_number, None);
    assert_eq!(m.replies_to, ["t4711.1@plugdesk.example"]);
    assert_eq!(m.conversation.as_deref(), Some("t4711.1@plugdesk.example"));
}

#[test]
fn thunderbird_signature_is_kept_apart_and_the_pdf_attached() {
    let m = message(THUNDERBIRD);
    assert!(m.text.starts_with("Guten Tag,\n\nanbei die Rechnung für März über 1.250,00 €."), "{}", m.text);
    assert!(m.text.ends_with("Mit freundlichen Grüßen"), "{}", m.text);
    assert_eq!(m.quoted.as_deref(), Some("-- \nKarl Weiß\nWeiß & Söhne GmbH\nTel. +49 30 1234567"));
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(
        (m.attachments[0].filename.as_str(), m.attachments[0].content_type.as_str()),
        ("Rechnung März.pdf", "application/pdf")
    );
    assert_eq!((m.replies_to.len(), m.conversation.as_deref()), (0, Some(m.external_id.as_str())));
}

#[test]
fn reply_chain_orders_replies_to_and_finds_the_root() {
    let m = message(REPLY_CHAIN);
    assert_eq!(m.external_id, "1a2b3c4d.5e6f@beispiel-firma.de");
    assert_eq!(m.sender.address, "M.Koch@beispiel-firma.de");
    assert_eq!(
        m.replies_to,
        [
            "t4717.3@plugdesk.example",
            "AM0PR07MB6187ABC@am0pr07mb6187.eurprd07.prod.outlook.com",
            "t4717.1@plugdesk.example"
        ]
    );
    assert_eq!(m.conversation.as_deref(), Some("t4717.1@plugdesk.example"));
    assert_eq!(m.text, "Der VPN-Zugang klappt jetzt auch von zu Hause.\n\nDanke und Gruß\nMartin");
    let quoted = m.quoted.as_deref().unwrap_or_default();
    assert!(quoted.starts_with("-- \nMartin Koch · IT\nBeispiel Firma AG\n\nOn Thu, 26 Nov 2026 at 16:40"), "{quoted}");
    assert!(quoted.ends_with(">> Der VPN-Client meldet \"Zertifikat ungültig\"."));
}

#[test]
fn encoded_subject_with_a_tag_names_the_ticket() {
    let raw = replace(ENCODED_SUBJECT, "Subject: =?ISO", "Subject: =?UTF-8?Q?AW=3A_=5B#1042=5D_?= =?ISO");
    let m = message(&raw);
    assert_eq!(m.subject.as_deref(), Some("AW: [#1042] Grüße aus Köln – 🌧 Wetter und Schöne Tage =?UTF-8?Q?broken"));
    assert_eq!(m.ticket_number, Some(1042));
    assert_eq!(m.sender_name.as_deref(), Some("Müller, Jörg"));
    assert_eq!(m.text, "Привет из Кельна!");
    // Without the tag, no ticket number.
    assert_eq!(message(ENCODED_SUBJECT).ticket_number, None);
}

#[test]
fn autoreply_is_automatic() {
    let m = message(AUTOREPLY);
    assert!(m.automatic);
    assert!(m.delivery_failure.is_none());
    assert_eq!(m.replies_to, ["t4716.1@plugdesk.example"]);
    assert!(m.text.starts_with("Vielen Dank für Ihre Nachricht."));
}

#[test]
fn bounce_reports_the_failed_message() {
    let m = message(BOUNCE);
    let failure = m.delivery_failure.as_ref().expect("a delivery failure");
    assert_eq!(failure.external_id, "t4714.3@plugdesk.example");
    assert_eq!(failure.recipient.as_deref(), Some("kunde@beispiel-firma.de"));
    assert_eq!(failure.reason, "5.1.1 550 5.1.1 <kunde@beispiel-firma.de>: Recipient address rejected: User unknown");
    assert!(m.automatic);
    assert_eq!(m.sender.address, "MAILER-DAEMON@mx1.plugdesk.example");
    assert_eq!(m.external_id, "20261124100000.4F1A2B3C4D@mx1.plugdesk.example");
    assert_eq!(m.attachments.len(), 2, "the report and the returned message are kept");

    // A delay is no failure, but still a machine's mail.
    let delayed = message(&replace(BOUNCE, "Action: failed", "Action: delayed"));
    assert!(delayed.delivery_failure.is_none());
    assert!(delayed.automatic);
    // Without an action the report counts as a failure.
    let bare = message(&replace(BOUNCE, "Action: failed\n", ""));
    assert_eq!(bare.delivery_failure.map(|f| f.external_id).as_deref(), Some("t4714.3@plugdesk.example"));
}

#[test]
fn newsletter_is_automatic_and_html_only_mail_gets_readable_text() {
    let m = message(NEWSLETTER);
    assert!(m.automatic);
    assert!(m.text.starts_with("Neuigkeiten im November\n\nLiebe Kundinnen und Kunden,"), "{}", m.text);
    assert!(m.html.as_deref().unwrap_or_default().starts_with("<!DOCTYPE html>"));
    assert_eq!(m.quoted, None);
}

#[test]
fn own_mail_is_skipped_and_logged() {
    let own = b"From: Support <support@plugdesk.example>\r\nTo: anna@example.com\r\n\
        Message-ID: <plugdesk.1042.77@Plugdesk.Example>\r\nSubject: [#1042] x\r\n\r\nHello\r\n";
    let (converted, logged) = run(own, &settings(&[]));
    assert!(matches!(converted, Converted::Skipped(Skip::OwnMessage)), "{converted:?}");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].0, Level::Info);
    assert!(logged[0].1.contains("plugdesk.1042.77@plugdesk.example"), "{logged:?}");
    // Our prefix at another domain, or another prefix at our domain, is someone else's mail.
    let other = replace(own, "@Plugdesk.Example>", "@elsewhere.example>");
    assert!(matches!(run(&other, &settings(&[])).0, Converted::Message(_)));
    let other = replace(own, "<plugdesk.", "<helpdesk.");
    assert!(matches!(run(&other, &settings(&[])).0, Converted::Message(_)));
    // The domain is message_id_domain when set.
    let s = settings(&[("message_id_domain", json!("mail.plugdesk.example"))]);
    assert!(matches!(run(own, &s).0, Converted::Message(_)));
    let mine = replace(own, "@Plugdesk.Example>", "@mail.plugdesk.example>");
    assert!(matches!(run(&mine, &s).0, Converted::Skipped(Skip::OwnMessage)));
}

#[test]
fn mail_without_any_sender_address_is_filed_under_the_unknown_sender_never_dropped() {
    for from in ["From: Support Team\r\n", "From: undisclosed-recipients:;\r\n", "From: a@localhost\r\n", ""] {
        let raw = format!("{from}Message-ID: <x1@example.com>\r\nReturn-Path: <>\r\nSubject: hi\r\n\r\nHello\r\n");
        let (converted, logged) = run(raw.as_bytes(), &settings(&[]));
        let Converted::Message(m) = converted else { panic!("{from:?}: {converted:?}") };
        assert_eq!(m.sender.address, UNKNOWN_SENDER, "{from:?}");
        assert_eq!(m.sender_name.as_deref(), Some(UNKNOWN_SENDER_NAME));
        assert!(m.text.starts_with("Hello\n\n[No sender address could be found in this message (From: "), "{}", m.text);
        assert_eq!(m.subject.as_deref(), Some("hi"));
        assert!(logged.iter().any(|(l, m)| *l == Level::Warn && m.contains("x1@example.com")), "{logged:?}");
    }
    // The note names what From said, decoded.
    let m = message(b"From: =?utf-8?Q?J=C3=B6rg?=\r\nSubject: x\r\n\r\nHallo\r\n");
    assert!(m.text.contains("(From: \"J\u{f6}rg\")"), "{}", m.text);
}

#[test]
fn sender_is_looked_for_in_from_reply_to_sender_return_path_then_the_envelope() {
    let body = "Subject: hi\r\n\r\nHello\r\n";
    let found = |headers: &str, envelope: Option<&str>| {
        let raw = format!("{headers}{body}");
        match run_envelope(raw.as_bytes(), envelope, &settings(&[])).0 {
            Converted::Message(m) => (m.sender.address.clone(), m.sender_name.clone()),
            Converted::Skipped(s) => panic!("{headers:?}: skipped {s:?}"),
        }
    };
    let name = |n: &str| Some(n.to_owned());
    // From wins, with its name.
    assert_eq!(
        found("From: Anna <Anna@Example.COM>\r\nReply-To: b@example.com\r\n", Some("e@example.com")),
        ("Anna@example.com".into(), name("Anna"))
    );
    // A From without an address: Reply-To's address, From's name.
    assert_eq!(
        found("From: Anna Schmidt\r\nReply-To: <anna@example.org>\r\n", None),
        ("anna@example.org".into(), name("Anna Schmidt"))
    );
    assert_eq!(
        found("From: Support\r\nReply-To: Bea <bea@example.org>\r\n", None),
        ("bea@example.org".into(), name("Bea"))
    );
    // Then Sender, then Return-Path (a source route names the mailbox after the colon).
    assert_eq!(
        found("From: x\r\nSender: Relay <relay@lists.example>\r\nReturn-Path: <rp@example.net>\r\n", None).0,
        "relay@lists.example"
    );
    assert_eq!(found("Return-Path: <@hop.example:rp@Example.NET>\r\n", None), ("rp@example.net".into(), None));
    // Last the envelope sender, as Postfix passes ${sender}.
    assert_eq!(found("From: nobody\r\nReturn-Path: <>\r\n", Some("envelope@example.com")).0, "envelope@example.com");
    assert_eq!(found("", Some("<env@example.com>")).0, "env@example.com");
    // An unusable envelope (a bounce's empty one) leaves the unknown sender.
    assert_eq!(found("From: nobody\r\n", Some("")).0, UNKNOWN_SENDER);
    assert_eq!(found("From: nobody\r\n", Some("MAILER-DAEMON")).0, UNKNOWN_SENDER);
}

#[test]
fn missing_message_id_gets_a_stable_made_up_one() {
    let raw = b"From: Anna <anna@example.com>\r\nSubject: Hallo\r\n\r\nIch komme nicht rein.\r\n";
    let first = message(raw);
    let second = message(raw);
    assert_eq!(first.external_id, second.external_id);
    assert!(first.external_id.ends_with("@no-message-id.plugdesk"), "{}", first.external_id);
    assert_eq!(first.external_id.len(), 16 + "@no-message-id.plugdesk".len());
    assert_eq!(first.conversation.as_deref(), Some(first.external_id.as_str()));
    let other = message(b"From: Anna <anna@example.com>\r\nSubject: Hallo\r\n\r\nNoch eine Frage.\r\n");
    assert_ne!(other.external_id, first.external_id);
}

/// A message with a small text attachment and a large one of `big` bytes.
fn with_attachments(big: usize) -> Vec<u8> {
    let small = crate::base64_encode(b"small file");
    let large = crate::codec::base64_lines(&vec![7u8; big]);
    format!(
        "From: Anna <anna@example.com>\r\nMessage-ID: <att-1@example.com>\r\nSubject: Logs\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Anbei die Logs.\r\n--b\r\nContent-Type: text/plain; name=\"small.txt\"\r\n\
         Content-Disposition: attachment; filename=\"small.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{small}\r\n\
         --b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=\"logs.zip\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{large}--b--\r\n"
    )
    .into_bytes()
}

#[test]
fn oversize_attachment_is_left_out_with_a_note_and_no_source() {
    let raw = with_attachments(2_621_440);
    let s = settings(&[("max_attachment_bytes", json!(1 << 20))]);
    let m = message_with(&raw, &s);
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(
        (m.attachments[0].filename.as_str(), m.attachments[0].data.as_slice()),
        ("small.txt", &b"small file"[..])
    );
    let source = size_text(raw.len());
    assert_eq!(
        m.text,
        format!(
            "Anbei die Logs.\n\n[Attachment \"logs.zip\" (2.5 MB) was larger than the limit of 1 MB and was not \
             imported.]\n[The message source ({source}) was too large to keep.]"
        )
    );
    assert_eq!(m.raw, None);
    // Within the limits: everything kept.
    let m = message(&raw);
    assert_eq!(m.attachments.len(), 2);
    assert_eq!(m.text, "Anbei die Logs.");
    assert_eq!(m.raw.as_deref(), Some(raw.as_slice()));
}

#[test]
fn source_over_its_limit_is_not_kept() {
    let raw = with_attachments(2000);
    let m = message_with(&raw, &settings(&[("max_raw_bytes", json!(1000))]));
    assert_eq!(m.raw, None);
    assert_eq!(m.attachments.len(), 2);
    let note = format!("\n\n[The message source ({}) was too large to keep.]", size_text(raw.len()));
    assert!(m.text.ends_with(&note), "{}", m.text);
    assert!(note.contains(" KB)"), "{note}");
    // 0 keeps no source, and says nothing about it.
    let m = message_with(&raw, &settings(&[("max_raw_bytes", json!(0))]));
    assert_eq!((m.raw, m.text.as_str()), (None, "Anbei die Logs."));
}

#[test]
fn inline_images_are_attachments() {
    let m = message(APPLE);
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].filename, "IMG_2041.jpeg");
    assert_eq!(m.attachments[0].content_type, "image/jpeg");
    assert!(m.text.ends_with("SN 4711-0815-AB.\n\n\n\nBeste Grüße\nTom"), "{}", m.text);
}

#[test]
fn german_iso_8859_1_body_survives() {
    let mut raw = b"From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@Example.DE>\r\nTo: support@plugdesk.example\r\n\
        Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=\r\nMessage-ID: <de-1@example.de>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(b"Sehr geehrte Damen und Herren,\r\nmein Drucker druckt nicht. Gr\xfc\xdfe\r\n");
    let m = message(&raw);
    assert_eq!(m.text, "Sehr geehrte Damen und Herren,\nmein Drucker druckt nicht. Grüße");
    assert_eq!(m.subject.as_deref(), Some("Grüße aus Köln"));
    assert_eq!(m.sender_name.as_deref(), Some("Jürgen Müller"));
    assert_eq!(m.sender.address, "juergen@example.de");
    assert_eq!(m.raw.as_deref(), Some(raw.as_slice()), "the source is kept byte for byte");
}

#[test]
fn problems_are_logged_and_what_could_be_read_is_kept() {
    let raw = b"From: Anna <anna@example.com>\r\nMessage-ID: <broken-1@example.com>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nDas Ende fehlt.\r\n";
    let (converted, logged) = run(raw, &settings(&[]));
    let Converted::Message(m) = converted else { panic!("{converted:?}") };
    assert_eq!(m.text, "Das Ende fehlt.");
    let warned: Vec<&String> = logged.iter().filter(|(l, _)| *l == Level::Warn).map(|(_, m)| m).collect();
    assert_eq!(warned.len(), 1, "{logged:?}");
    assert!(warned[0].starts_with("message broken-1@example.com: problems reading it: "), "{}", warned[0]);
}

#[test]
fn empty_and_all_quoted_mail_keep_a_text() {
    let m = message(b"From: anna@example.com\r\nMessage-ID: <e@x.de>\r\n\r\n");
    assert_eq!(m.text, "[The message has no text.]");
    assert_eq!((m.subject, m.quoted), (None, None));
    // A forward with nothing written above it: the whole text is the text.
    let forward = b"From: anna@example.com\r\nMessage-ID: <f@x.de>\r\nSubject: WG: Rechnung\r\n\r\n\
        -----Original Message-----\r\nFrom: Shop <shop@example.com>\r\nSent: Monday\r\nTo: anna@example.com\r\n\
        Subject: Rechnung\r\n\r\nIhre Rechnung.\r\n";
    let m = message(forward);
    assert!(m.text.starts_with("-----Original Message-----\nFrom: Shop") && m.text.ends_with("Ihre Rechnung."));
    assert_eq!(m.quoted, None);
}

#[test]
fn long_text_and_subject_are_cut_to_what_the_host_takes() {
    let body = "x".repeat(MAX_TEXT_BYTES + 10);
    let subject = "ü".repeat(600);
    let raw = format!(
        "From: anna@example.com\r\nMessage-ID: <long@x.de>\r\nSubject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    let m = message(raw.as_bytes());
    assert!(m.text.len() <= 1024 * 1024, "{}", m.text.len());
    assert!(m.text.ends_with("\n\n[The text was longer than 1 MB and was cut here.]"));
    let subject = m.subject.unwrap_or_default();
    assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS);
    assert!(subject.ends_with("ü…"));
}

#[test]
fn message_too_large_to_fetch_is_named_from_its_header() {
    let header = b"From: Anna <anna@example.com>\r\nMessage-ID: <huge@example.com>\r\nSubject: Video\r\n\r\n".to_vec();
    let mut logged = Vec::new();
    let converted =
        convert_too_large(header, 20 << 20, 16 << 20, &settings(&[]), &mut |l, m| logged.push((l, m.to_owned())));
    let Converted::Message(m) = converted else { panic!("{converted:?}") };
    assert_eq!((m.external_id.as_str(), m.subject.as_deref()), ("huge@example.com", Some("Video")));
    assert_eq!(
        m.text,
        "[This message (20 MB) was larger than the limit of 16 MB for fetching and was not imported; it is kept in \
         the mailbox.]"
    );
    assert_eq!(m.raw, None);
    assert!(logged.is_empty(), "{logged:?}");
}

#[test]
fn sizes_read_well() {
    assert_eq!(size_text(10 << 20), "10 MB");
    assert_eq!(size_text(2_621_440), "2.5 MB");
    assert_eq!(size_text(300 * 1024), "0.3 MB");
    assert_eq!(size_text(3000), "3 KB");
    assert_eq!(size_text(0), "0 KB");
}

#[test]
fn fit_drops_the_source_then_the_largest_attachments() {
    let mut m = message(&with_attachments(3000));
    let raw_len = m.raw.as_ref().map_or(0, Vec::len);
    let before = output_size(&m);
    assert_eq!(before, m.text.len() + raw_len + 3000 + 10);
    fit(&mut m, before);
    assert!(m.raw.is_some() && m.attachments.len() == 2, "it fits already");
    fit(&mut m, before - 1);
    assert_eq!((m.raw.is_none(), m.attachments.len()), (true, 2));
    assert!(m.text.ends_with(&format!("\n\n[The message source ({}) was too large to keep.]", size_text(raw_len))));
    fit(&mut m, 1000);
    assert_eq!(m.attachments.iter().map(|a| a.filename.as_str()).collect::<Vec<_>>(), ["small.txt"]);
    assert!(
        m.text.ends_with(
            "\n\n[Attachment \"logs.zip\" (3 KB) did not fit into the limit of 1 KB for one message and was not \
             imported.]"
        ),
        "{}",
        m.text
    );
    assert!(output_size(&m) <= 1000);
}

#[test]
fn many_notes_are_summed_up() {
    let mut text = "Hallo".to_owned();
    append_notes(&mut text, (0..25).map(|i| format!("[note {i}]")).collect());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + MAX_NOTES);
    assert_eq!((lines[2], lines[MAX_NOTES]), ("[note 0]", "[note 18]"));
    assert_eq!(lines[MAX_NOTES + 1], "[6 more notes like these were left out.]");
    let mut empty = String::new();
    append_notes(&mut empty, vec!["[only]".into()]);
    assert_eq!(empty, "[only]");
}

/// The parser's fixtures of hard mail, each as the host gets it: sender, name, subject (the
/// ticket's) and a piece of text, as a mail client shows them, and never a replacement
/// character.
#[test]
fn hard_mail_becomes_the_message_a_mail_client_shows() {
    let fixture = |name: &str| {
        std::fs::read(format!("{}/../email-parse/tests/fixtures/{name}.eml", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let cases: [(&str, &str, Option<&str>, &str, &str); 10] = [
        (
            "broken_fold",
            "kunde@beispiel-gmbh.de",
            Some("Kundendienst Beispiel GmbH"),
            "[EXTERN] Wartungsvertrag 2027: Angebot und Termine fuer die Jahresinspektion",
            "Guten Morgen,",
        ),
        (
            "forwarded_paste",
            "lena.schaefer@example.net",
            Some("Lena Schäfer"),
            "Rücksendung Bestellung 88231",
            "Wie bekomme ich das Etikett?",
        ),
        (
            "stray_blank_line",
            "marco@example.org",
            Some("Marco Rossi"),
            "Fattura 2026/118 non ricevuta",
            "non abbiamo ancora ricevuto",
        ),
        (
            "latin1_raw_subject",
            "joerg@mueller-bau.de",
            Some("Jörg Müller"),
            "Drucker im 2. OG: Papierstau, schöne Grüße",
            "seit heute früh",
        ),
        ("koi8r_raw_subject", "ivan@example.ru", None, "Не работает принтер в офисе", "Принтер в офисе"),
        ("sjis_raw_subject", "yamada@example.jp", None, "注文番号の確認についてのお問い合わせ", "Order 4711"),
        ("sjis_as_iso2022jp", "sato@example.jp", Some("佐藤花子"), "請求書の再発行のお願い", "請求書"),
        ("gbk_undeclared", "wangwei@example.cn", Some("Wang Wei"), "Order 20261125", "我的订单还没有收到"),
        ("big5_undeclared", "chenmei@example.tw", Some("Chen Mei"), "Invoice question", "請問發票什麼時候會寄出"),
        (
            "utf8_as_latin1",
            "bjorn@example.se",
            Some("Björn Åström"),
            "Återbetalning för order 5521 – när?",
            "Jag väntar fortfarande på",
        ),
    ];
    for (name, sender, display, subject, text) in cases {
        let m = message(&fixture(name));
        assert_eq!(m.sender.address, sender, "{name}");
        if let Some(display) = display {
            assert_eq!(m.sender_name.as_deref(), Some(display), "{name}");
        }
        assert_eq!(m.subject.as_deref(), Some(subject), "{name}");
        assert!(m.text.contains(text), "{name}: {}", m.text);
        let shown = format!("{:?}{}{}", m.sender_name, m.subject.as_deref().unwrap_or(""), m.text);
        assert!(!shown.contains('\u{fffd}'), "{name}: {shown}");
    }
}
