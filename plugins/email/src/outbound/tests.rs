use email_parse::{Limits, parse};
use plugdesk_sdk::{Attachment, Identity};
use serde_json::{Value, json};

use super::*;
use crate::testing::Scripted;

fn settings(extra: &[(&str, Value)]) -> Settings {
    let mut pairs = vec![
        ("address".to_owned(), json!("support@plugdesk.example")),
        ("from_name".to_owned(), json!("Plugdesk Support")),
        ("smtp_host".to_owned(), json!("smtp.plugdesk.example")),
    ];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Settings::from_lookup(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).unwrap()
}

fn outbound() -> OutboundMessage {
    OutboundMessage {
        id: "77".into(),
        ticket_number: 1042,
        recipients: vec![
            Identity { kind: "phone".into(), address: "+4930123".into() },
            Identity { kind: "email".into(), address: "juergen@example.de".into() },
        ],
        recipient_name: Some("Jürgen Müller".into()),
        conversation: Some("de-1@example.de".into()),
        subject: Some("Drucker druckt nicht".into()),
        text: "Hallo Herr Müller,\nbitte neu starten.".into(),
        html: Some("<p>Hallo Herr Müller,</p>".into()),
        attachments: vec![Attachment {
            filename: "Anleitung.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4".to_vec(),
        }],
        in_reply_to: Some("<de-2@Example.DE>".into()),
        references: vec!["de-1@example.de".into(), "wf-123".into(), "de-2@example.de".into()],
        automatic: false,
    }
}

#[test]
fn subject_gets_the_tag_and_re() {
    assert_eq!(reply_subject(Some("Drucker"), 1042, true), "Re: [#1042] Drucker");
    assert_eq!(reply_subject(Some("Drucker"), 1042, false), "[#1042] Drucker");
    assert_eq!(reply_subject(Some("Re: Drucker"), 1042, true), "Re: [#1042] Drucker");
    assert_eq!(reply_subject(Some("AW: Drucker"), 1042, true), "AW: [#1042] Drucker");
    assert_eq!(reply_subject(Some("RE:Drucker"), 1042, true), "RE: [#1042] Drucker");
    assert_eq!(reply_subject(Some("re: [#1042] Drucker"), 1042, true), "re: [#1042] Drucker");
    assert_eq!(reply_subject(Some("[#1042] Drucker"), 1042, true), "Re: [#1042] Drucker");
    assert_eq!(reply_subject(Some("[#1042] Drucker"), 1042, false), "[#1042] Drucker");
    assert_eq!(reply_subject(Some("Drucker [Ticket#7]"), 1042, false), "Drucker [Ticket#7]");
    assert_eq!(reply_subject(Some("Grüße"), 5, true), "Re: [#5] Grüße");
    assert_eq!(reply_subject(Some("Ärger"), 5, false), "[#5] Ärger");
    assert_eq!(reply_subject(None, 1042, true), "[#1042]");
    assert_eq!(reply_subject(Some("  "), 1042, false), "[#1042]");
    // A notice about no ticket (number 0) keeps its subject.
    assert_eq!(reply_subject(Some("You are invited to Plugdesk"), 0, false), "You are invited to Plugdesk");
    assert_eq!(reply_subject(Some("Re:"), 1042, true), "Re: [#1042]");
    // A tag glued to a word is no tag.
    assert_eq!(reply_subject(Some("abc[#1]"), 2, false), "[#2] abc[#1]");
}

#[test]
fn message_id_is_deterministic_and_safe() {
    assert_eq!(message_id_local(1042, "77"), "plugdesk.1042.77");
    assert_eq!(message_id_local(1, "a-b_c.d"), "plugdesk.1.a-b_c.d");
    assert_eq!(message_id_local(1, "a b@c=d"), "plugdesk.1.a=20b=40c=3Dd");
    assert_ne!(message_id_local(1, "a b"), message_id_local(1, "a=20b"));
}

#[test]
fn reply_is_composed_with_threading_headers() {
    let s = settings(&[("reply_to", json!("help@plugdesk.example"))]);
    let (id, bytes) = compose_reply(&outbound(), "juergen@example.de", &s, 1_771_581_845_123).unwrap();
    assert_eq!(id, "plugdesk.1042.77@plugdesk.example");
    let again = compose_reply(&outbound(), "juergen@example.de", &s, 1_771_581_845_999).unwrap();
    assert_eq!(again, (id.clone(), bytes.clone()), "the same bytes on every retry within the second");
    let p = parse(&bytes, &Limits::default());
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(p.subject.as_deref(), Some("Re: [#1042] Drucker druckt nicht"));
    assert_eq!(p.from[0].name.as_deref(), Some("Plugdesk Support"));
    assert_eq!(p.from[0].email, "support@plugdesk.example");
    assert_eq!(p.to[0].name.as_deref(), Some("Jürgen Müller"));
    assert_eq!(p.reply_to[0].email, "help@plugdesk.example");
    assert_eq!(p.in_reply_to, ["de-2@example.de"]);
    // Ids of other channels are no Message-IDs and are left out.
    assert_eq!(p.references, ["de-1@example.de", "de-2@example.de"]);
    assert_eq!(p.header("Date"), Some("Fri, 20 Feb 2026 10:04:05 +0000"));
    assert_eq!(p.header("Auto-Submitted"), None);
    assert_eq!(p.text.as_deref(), Some("Hallo Herr Müller,\nbitte neu starten."));
    assert_eq!(p.html.as_deref(), Some("<p>Hallo Herr Müller,</p>"));
    assert_eq!(p.attachments.len(), 1);
    assert_eq!(p.attachments[0].filename.as_deref(), Some("Anleitung.pdf"));
    assert_eq!(email_parse::is_automatic(&p), None);
}

#[test]
fn automatic_reply_says_so() {
    let mut message = outbound();
    message.automatic = true;
    message.in_reply_to = None;
    message.references = vec![];
    let (_, bytes) = compose_reply(&message, "juergen@example.de", &settings(&[]), 0).unwrap();
    let p = parse(&bytes, &Limits::default());
    assert_eq!(p.header("Auto-Submitted"), Some("auto-replied"));
    assert_eq!(p.header("X-Auto-Response-Suppress"), Some("All"));
    assert!(email_parse::is_automatic(&p).is_some());
    assert_eq!(p.subject.as_deref(), Some("[#1042] Drucker druckt nicht"), "no Re: without In-Reply-To");
    assert_eq!(p.header("In-Reply-To"), None);
}

#[test]
fn unsendable_recipient_is_permanent() {
    let err = compose_reply(&outbound(), "not an address", &settings(&[]), 0).unwrap_err();
    assert!(matches!(&err, SendError::Permanent(m) if m.contains("cannot be written")), "{err:?}");
}

#[test]
fn loop_cap_counts_the_last_hour() {
    let now = 10_000_000;
    let check = loop_check(&[], now, 2);
    assert_eq!(check, LoopCheck { recent: vec![], allowed: true });
    let check = loop_check(&[now - 10, now - 3_600_000, now - 20], now, 2);
    assert_eq!(check, LoopCheck { recent: vec![now - 20, now - 10], allowed: false });
    let check = loop_check(&[now - 10, now - 3_599_999], now, 3);
    assert_eq!(check, LoopCheck { recent: vec![now - 3_599_999, now - 10], allowed: true });
    assert!(!loop_check(&[], now, 0).allowed, "a limit of 0 sends no automatic mail");
    // Recipients share a fixed number of buckets; a bucket keeps only the last hour.
    assert_eq!(loop_key(" Anna@Example.COM"), loop_key("anna@example.com"));
    let keys: std::collections::BTreeSet<String> =
        (0..10_000).map(|i| loop_key(&format!("c{i}@example.com"))).collect();
    assert_eq!(keys.len() as u64, LOOP_BUCKETS);
    let stored = record_send(LoopBucket::new(), "Anna@Example.com", now);
    let bucket = decode_bucket(Some(&stored));
    assert_eq!(bucket.get("anna@example.com"), Some(&vec![now]));
    let later = now + 3_600_000;
    let stored = record_send(bucket, "bob@example.com", later);
    let bucket = decode_bucket(Some(&stored));
    assert_eq!(bucket.keys().collect::<Vec<_>>(), ["bob@example.com"], "anna's hour is over: dropped");
    assert_eq!(decode_bucket(Some(b"garbage")), LoopBucket::new());
    assert_eq!(decode_bucket(None), LoopBucket::new());
    let refusal = loop_refusal(10, "anna@example.com", 10);
    assert!(
        matches!(&refusal, SendError::Permanent(m) if m == "loop protection: 10 automatic mails to anna@example.com in the last hour (limit 10)"),
        "{refusal:?}"
    );
}

const MESSAGE: &[u8] = b"Subject: x\r\n\r\nhi";

fn smtp_script() -> Scripted {
    Scripted::new(7)
        .server("220 smtp.plugdesk.example ESMTP\r\n")
        .client("EHLO plugdesk.example\r\n")
        .server("250-smtp.plugdesk.example\r\n250-STARTTLS\r\n250 SIZE 100000\r\n")
        .client("STARTTLS\r\n")
        .server("220 go ahead\r\n")
        .tls()
        .client("EHLO plugdesk.example\r\n")
        .server("250-smtp.plugdesk.example\r\n250-AUTH LOGIN\r\n250 SIZE 100000\r\n")
        .client("AUTH LOGIN\r\n")
        .server("334 VXNlcm5hbWU6\r\n")
        .client(format!("{}\r\n", crate::base64_encode(b"support@plugdesk.example")))
        .server("334 UGFzc3dvcmQ6\r\n")
        .secret("{{secret_base64:smtp_password}}\r\n")
        .server("235 ok\r\n")
        .client("MAIL FROM:<support@plugdesk.example> SIZE=18\r\n")
        .server("250 ok\r\n")
        .client("RCPT TO:<juergen@example.de>\r\n")
}

fn submit_with(script: Scripted, s: &Settings) -> Result<(), SendError> {
    let smtp = s.smtp.clone().unwrap();
    submit(
        &smtp,
        s,
        |tls| if tls { Err("no TLS in the script".into()) } else { Ok(script) },
        "juergen@example.de",
        MESSAGE,
    )
}

#[test]
fn submission_with_starttls_and_auth() {
    let script = smtp_script()
        .server("250 ok\r\n")
        .client("DATA\r\n")
        .server("354 go\r\n")
        .client("Subject: x\r\n\r\nhi\r\n.\r\n")
        .server("250 queued\r\n")
        .client("QUIT\r\n")
        .close();
    let s = settings(&[("smtp_user", json!("support@plugdesk.example"))]);
    submit_with(script, &s).unwrap();
}

#[test]
fn submission_errors_are_sorted_and_name_the_server() {
    let s = settings(&[("smtp_user", json!("support@plugdesk.example"))]);
    let refused = submit_with(smtp_script().server("550 5.1.1 no such user\r\n").client("RSET\r\n").close(), &s);
    let Err(SendError::Permanent(m)) = refused else { panic!("{refused:?}") };
    assert_eq!(
        m,
        "smtp smtp.plugdesk.example:587: SMTP RCPT TO:<juergen@example.de>: rejected: 550 5.1.1 no such user"
    );
    let later = submit_with(smtp_script().server("451 4.3.0 try later\r\n").client("RSET\r\n").close(), &s);
    let Err(SendError::Retryable(m)) = later else { panic!("{later:?}") };
    assert!(m.starts_with("smtp smtp.plugdesk.example:587: ") && m.ends_with("451 4.3.0 try later"), "{m}");
    let dropped = submit_with(smtp_script().close(), &s);
    assert!(matches!(&dropped, Err(SendError::Retryable(m)) if m.contains("closed the connection")), "{dropped:?}");
    let tls = settings(&[("smtp_security", json!("tls"))]);
    let unreachable = submit_with(Scripted::new(1), &tls);
    let Err(SendError::Retryable(m)) = unreachable else { panic!("{unreachable:?}") };
    assert_eq!(m, "smtp smtp.plugdesk.example:465: cannot connect: no TLS in the script");
    // A server without STARTTLS when it is asked for will not change by retrying.
    let plain = Scripted::new(64)
        .server("220 hi\r\n")
        .client("EHLO plugdesk.example\r\n")
        .server("250 smtp.plugdesk.example\r\n");
    let unsupported = submit_with(plain, &settings(&[]));
    assert!(matches!(&unsupported, Err(SendError::Permanent(m)) if m.contains("STARTTLS")), "{unsupported:?}");
}
