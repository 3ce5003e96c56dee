//! The e-mail channel end to end, against real mail servers: a private Dovecot (IMAP, IMAPS)
//! and an aiosmtpd submission sink started by `tests/mail/mailserver.py` on 127.0.0.1, the
//! bundled `email` plugin in the real sandbox, the real `plugdesk` binary. The host's TLS
//! trusts the fixture's self-signed certificate through `tls_ca_file`, so IMAPS and SMTP
//! STARTTLS run as in production. `bash tests/mail/setup.sh` installs the servers (the test
//! command runs it).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Scratch, Server};

static MAILBOXES: AtomicU32 = AtomicU32::new(0);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mail/mailserver.py")
}

/// A private Dovecot + SMTP sink; stopped (SIGTERM, by PID) when dropped.
struct Mail {
    child: Child,
    info: Value,
    dir: PathBuf,
}

impl Mail {
    fn start() -> Mail {
        let n = MAILBOXES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("plugdesk-mail-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new("python3")
            .arg(script())
            .args(["serve", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/mail/mailserver.py (run bash tests/mail/setup.sh once)");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("read the servers' line");
        // Keep reading what it prints later, so that it never writes into a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("mailserver.py did not start ({e}): {line:?}; run bash tests/mail/setup.sh once")
        });
        Mail { child, info, dir }
    }

    fn port(&self, name: &str) -> u64 {
        self.info[name].as_u64().expect("port")
    }

    fn cert(&self) -> String {
        self.info["cert"].as_str().expect("cert").to_owned()
    }

    /// Puts messages into the support mailbox through Dovecot (`doveadm save`).
    fn deliver(&self, messages: &[&[u8]]) {
        let mut paths = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let n = MAILBOXES.fetch_add(1, Ordering::SeqCst);
            let p = self.dir.join(format!("in-{n}-{i}.eml"));
            std::fs::write(&p, m).expect("write message");
            paths.push(p);
        }
        let out = Command::new("python3")
            .arg(script())
            .args(["deliver", "--dir"])
            .arg(&self.dir)
            .args(&paths)
            .output()
            .expect("run mailserver.py deliver");
        assert!(out.status.success(), "deliver: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// What the SMTP sink accepted, oldest first: (index entry, raw message).
    fn sent(&self) -> Vec<(Value, Vec<u8>)> {
        let out = PathBuf::from(self.info["smtp_out"].as_str().expect("smtp_out"));
        let index: Value = std::fs::read(out.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!([]));
        let entries = index.as_array().cloned().or_else(|| index["messages"].as_array().cloned()).unwrap_or_default();
        entries
            .into_iter()
            .filter(|e| e["accepted"] == true)
            .map(|e| {
                let raw = std::fs::read(out.join(e["file"].as_str().expect("file"))).expect("read sent message");
                (e, raw)
            })
            .collect()
    }

    fn script_smtp(&self, replies: &[&str]) {
        std::fs::write(self.info["smtp_script"].as_str().expect("script"), serde_json::to_vec(replies).expect("json"))
            .expect("write smtp-script.json");
    }

    fn maildir(&self) -> PathBuf {
        PathBuf::from(self.info["maildir"].as_str().expect("maildir"))
    }
}

impl Drop for Mail {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).stderr(Stdio::null()).status();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server whose plugins trust the mail fixture's certificate, polling fast.
async fn server(mail: &Mail) -> Server {
    let scratch = Scratch::new();
    let config =
        format!("tls_ca_file = {:?}\n[outbox]\nretry_base_ms = 100\ntick_ms = 50\npoll_tick_ms = 50\n", mail.cert());
    scratch.config(&config);
    let token = scratch.init("default");
    Server::serve(scratch, token).await
}

/// Installs the e-mail channel: IMAPS in, SMTP with STARTTLS and AUTH out.
async fn install(s: &Server, mail: &Mail, password: &str) -> i64 {
    let (imaps, smtp) = (mail.port("imaps"), mail.port("smtp"));
    let (status, ch) = s
        .post(
            "/api/v1/channels",
            json!({
                "plugin": "email", "name": "Support mailbox", "poll_interval_ms": 200,
                "settings": {
                    "address": "support@plugdesk.test", "from_name": "Plugdesk Support",
                    "imap_host": "127.0.0.1", "imap_port": imaps, "imap_security": "tls",
                    "smtp_host": "127.0.0.1", "smtp_port": smtp, "smtp_security": "starttls",
                    "smtp_user": "support@plugdesk.test",
                },
                "secrets": { "imap_password": password, "smtp_password": "plugdesk-test-password", "inbound_token": "pipe-token" },
                "grants": ["secrets", "kv", format!("tcp:127.0.0.1:{imaps}"), format!("tcp:127.0.0.1:{smtp}")],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    ch["id"].as_i64().expect("id")
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// A header's value in a raw message (first occurrence, unfolded).
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Decodes RFC 2047 `=?UTF-8?B?…?=` words (what the composer writes for non-ASCII subjects).
fn decode_words(value: &str) -> String {
    use base64::Engine as _;
    value
        .split_whitespace()
        .map(|w| match w.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")) {
            Some(b64) => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64"))
                .expect("utf-8"),
            None => format!("{w} "),
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

async fn tickets(s: &Server) -> Vec<Value> {
    let (_, v) = s.get("/api/v1/tickets?channel=email").await;
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn messages(s: &Server, ticket: i64) -> Vec<Value> {
    let (_, v) = s.get(&format!("/api/v1/tickets/{ticket}/messages")).await;
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_messages(s: &Server, ticket: i64, n: usize) -> Vec<Value> {
    let v = s
        .wait_for(&format!("/api/v1/tickets/{ticket}/messages"), Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|m| m.len() >= n)
        })
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_sent(mail: &Mail, n: usize) -> Vec<(Value, Vec<u8>)> {
    for _ in 0..400 {
        let sent = mail.sent();
        if sent.len() >= n {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the SMTP sink did not receive {n} messages; it has {}", mail.sent().len());
}

const FIRST: &str = "From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <Juergen.Mueller@Kunde.example>
To: Plugdesk Support <support@plugdesk.test>
Subject: =?ISO-8859-1?Q?Lieferung_f=FCr_Bestellung_4711_fehlt?=
Date: Tue, 24 Nov 2026 10:00:00 +0100
Message-ID: <b7e4c2a1-0001@kunde.example>
User-Agent: Mozilla Thunderbird
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1; format=flowed
Content-Transfer-Encoding: quoted-printable

Guten Tag,

meine Bestellung 4711 ist noch nicht angekommen. K=F6nnen Sie bitte nachsehen?

Gr=FC=DFe
J=FCrgen M=FCller
";

#[tokio::test]
async fn mail_becomes_a_ticket_replies_thread_and_loops_stop() {
    let mail = Mail::start();
    let s = server(&mail).await;
    let channel = install(&s, &mail, "plugdesk-test-password").await;

    // A customer writes from Thunderbird, in ISO-8859-1.
    mail.deliver(&[&crlf(FIRST)]);
    let v = s
        .wait_for("/api/v1/tickets?channel=email", Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    let ticket = v["items"][0].clone();
    let (id, number) = (ticket["id"].as_i64().expect("id"), ticket["number"].as_i64().expect("number"));
    assert_eq!(ticket["subject"], "Lieferung für Bestellung 4711 fehlt", "{ticket}");
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", ticket["customer_id"])).await;
    assert_eq!(customer["name"], "Jürgen Müller", "{customer}");
    assert!(customer.to_string().contains("juergen.mueller@kunde.example"), "{customer}");
    let first = &messages(&s, id).await[0];
    assert!(first["body"].as_str().unwrap_or("").contains("Können Sie bitte nachsehen?"), "{first}");
    assert_eq!(
        (first["external_id"].as_str(), first["has_source"].as_bool()),
        (Some("b7e4c2a1-0001@kunde.example"), Some(true))
    );
    // The source is kept byte for byte.
    let source = reqwest::Client::new()
        .get(format!("{}/api/v1/tickets/{id}/messages/{}/source", s.base, first["id"]))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("source");
    assert_eq!(source.headers()["content-type"], "message/rfc822");
    assert_eq!(source.bytes().await.expect("bytes").as_ref(), crlf(FIRST).as_slice());

    // The agent answers; the reply leaves by SMTP (STARTTLS, AUTH) threaded under the mail.
    let (status, reply) = s
        .post(
            &format!("/api/v1/tickets/{id}/reply"),
            json!({ "body": "Hallo Herr Müller,\n\ndas Paket ist unterwegs: Sendungsnummer 00340434." }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let sent = wait_sent(&mail, 1).await;
    let (entry, raw) = &sent[0];
    assert_eq!(
        (entry["tls"].as_bool(), entry["auth_user"].as_str()),
        (Some(true), Some("support@plugdesk.test")),
        "{entry}"
    );
    assert_eq!(entry["rcpt_tos"], json!(["juergen.mueller@kunde.example"]), "{entry}");
    assert_eq!(header(raw, "In-Reply-To").as_deref(), Some("<b7e4c2a1-0001@kunde.example>"));
    assert!(header(raw, "References").is_some_and(|r| r.contains("<b7e4c2a1-0001@kunde.example>")));
    let our_id = header(raw, "Message-ID").expect("Message-ID");
    assert!(our_id.ends_with("@plugdesk.test>"), "{our_id}");
    let subject = decode_words(&header(raw, "Subject").expect("Subject"));
    assert_eq!(subject, format!("Re: [#{number}] Lieferung für Bestellung 4711 fehlt"));
    assert!(subject.contains(&format!("[#{number}]")), "{subject}");
    assert!(header(raw, "Auto-Submitted").is_none(), "an agent's reply is not automatic");
    let m = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(10), |v| {
            v["items"][1]["delivery_status"] == "sent"
        })
        .await;
    assert_eq!(format!("<{}>", m["items"][1]["external_id"].as_str().unwrap_or("")), our_id);

    // The customer answers from Gmail: threaded by In-Reply-To alone (no tag in the subject),
    // the quote kept apart.
    let answer = format!(
        "From: Juergen Mueller <juergen.mueller@kunde.example>\nTo: support@plugdesk.test\nSubject: Re: Lieferung\nMessage-ID: <CAF=answer-1@mail.gmail.example>\nIn-Reply-To: {our_id}\nReferences: <b7e4c2a1-0001@kunde.example> {our_id}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\nDanke, die Sendungsnummer hilft mir weiter.\n\nAm Di., 24. Nov. 2026 um 10:05 Uhr schrieb Plugdesk Support <support@plugdesk.test>:\n> Hallo Herr Müller,\n> das Paket ist unterwegs.\n"
    );
    mail.deliver(&[&crlf(&answer)]);
    let all = wait_messages(&s, id, 3).await;
    assert_eq!(all[2]["direction"], "inbound");
    assert_eq!(
        all[2]["body"].as_str().map(str::trim),
        Some("Danke, die Sendungsnummer hilft mir weiter."),
        "{}",
        all[2]
    );
    assert!(all[2]["body_quoted"].as_str().is_some_and(|q| q.contains("schrieb")), "{}", all[2]);
    assert_eq!(tickets(&s).await.len(), 1);

    // A subject tag threads a message without headers, but only from the ticket's customer.
    let tagged = |from: &str, mid: &str| {
        crlf(&format!(
            "From: {from}\nTo: support@plugdesk.test\nSubject: Nachtrag [#{number}]\nMessage-ID: <{mid}>\n\nNoch eine Frage.\n"
        ))
    };
    mail.deliver(&[
        &tagged("juergen.mueller@kunde.example", "tag-1@kunde.example"),
        &tagged("mallory@evil.example", "tag-2@evil.example"),
    ]);
    s.wait_for("/api/v1/tickets?channel=email", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|t| t.len() == 2)
    })
    .await;
    let all = wait_messages(&s, id, 4).await;
    assert_eq!(all[3]["external_id"], "tag-1@kunde.example");

    // Our own message coming back into the mailbox (a copy, a forward loop) is not imported;
    // a marker mail after it shows the poll went past it.
    let own = sent[0].1.clone();
    let marker = crlf(
        "From: marker@kunde.example\nTo: support@plugdesk.test\nSubject: Marker\nMessage-ID: <marker@kunde.example>\n\nmarker\n",
    );
    mail.deliver(&[&own, &marker]);
    s.wait_for("/api/v1/tickets?channel=email", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|t| t.len() == 3)
    })
    .await;
    assert_eq!(messages(&s, id).await.len(), 4, "our own mail was re-imported");

    // An out-of-office answer lands on the ticket marked automatic, and a workflow that
    // answers every message holds its reply back (RFC 3834), so no mail goes out.
    let (status, wf) = s
        .post(
            "/api/v1/workflows",
            json!({ "name": "Echo", "source": "// on: message.received\nreply(\"Danke für Ihre Nachricht.\");\n" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let ooo = format!(
        "From: juergen.mueller@kunde.example\nTo: support@plugdesk.test\nSubject: Automatische Antwort: [#{number}] Lieferung\nMessage-ID: <ooo-1@kunde.example>\nIn-Reply-To: {our_id}\nAuto-Submitted: auto-replied\nX-Autoreply: yes\n\nIch bin bis Montag nicht im Büro.\n"
    );
    mail.deliver(&[&crlf(&ooo)]);
    let all = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|m| {
                m.iter().any(|m| m["body"].as_str().is_some_and(|b| b.starts_with("Automatic reply held back")))
            })
        })
        .await;
    let items = all["items"].as_array().expect("items");
    let ooo_msg =
        items.iter().find(|m| m["external_id"] == "ooo-1@kunde.example").expect("the auto-reply is on the ticket");
    assert_eq!(ooo_msg["automatic"], true, "{ooo_msg}");
    assert!(items.iter().all(|m| m["direction"] != "outbound" || m["author_kind"] != "automation"), "{all}");
    assert_eq!(mail.sent().len(), 1, "nothing automatic was mailed");

    // A bounce for a second reply marks that reply failed and opens no ticket.
    let (_, second) = s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Noch ein Hinweis." })).await;
    let sent = wait_sent(&mail, 2).await;
    let second_id = header(&sent[1].1, "Message-ID").expect("Message-ID");
    let dsn = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.kunde.example>\nTo: support@plugdesk.test\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <dsn-1@mx.kunde.example>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.kunde.example\n\nFinal-Recipient: rfc822; juergen.mueller@kunde.example\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n\n--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {second_id}\nFrom: support@plugdesk.test\nSubject: Re: [#{number}] Lieferung\n\n--B--\n"
    );
    mail.deliver(&[&crlf(&dsn)]);
    let m = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(20), |v| {
            v["items"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == second["id"] && m["delivery_status"] == "failed"))
        })
        .await;
    let failed =
        m["items"].as_array().and_then(|m| m.iter().find(|m| m["id"] == second["id"]).cloned()).expect("reply");
    assert!(
        failed["delivery_error"]
            .as_str()
            .is_some_and(|e| e.contains("5.1.1") && e.contains("juergen.mueller@kunde.example")),
        "{failed}"
    );
    assert_eq!(tickets(&s).await.len(), 3, "a bounce opens no ticket");

    // Handled mail is marked seen in the mailbox (at the poll after the one that handed it over).
    let mut seen = false;
    for _ in 0..100 {
        let cur =
            std::fs::read_dir(mail.maildir().join("cur")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        seen = cur.iter().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read(e.path()).is_ok_and(|b| String::from_utf8_lossy(&b).contains("b7e4c2a1-0001@kunde.example"))
                && name.rsplit_once(":2,").is_some_and(|(_, flags)| flags.contains('S'))
        });
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the first mail is not marked \\Seen in the mailbox");
    let (_, ch) = s.get(&format!("/api/v1/channels/{channel}")).await;
    assert!(ch["last_error"].is_null(), "{ch}");
    s.stop();
}

#[tokio::test]
async fn piped_mail_bad_input_login_failures_and_smtp_errors() {
    let mail = Mail::start();
    let s = server(&mail).await;
    // A wrong IMAP password: the channel says why, and nothing is imported until it is fixed.
    let channel = install(&s, &mail, "wrong-password").await;
    let ch = s
        .wait_for(&format!("/api/v1/channels/{channel}"), Duration::from_secs(20), |v| v["last_error"].is_string())
        .await;
    let err = ch["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("imap") && err.to_lowercase().contains("login"), "{err}");
    assert!(ch["cursor"].is_null(), "{ch}");

    // `plugdesk mail-in` (an MTA's pipe) with broken messages: each becomes a ticket with what
    // could be read.
    let pipe = |raw: &[u8]| mail_in(&s, channel, raw, &[]);
    let broken: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated",
            crlf(
                "From: a@kunde.example\nSubject: Abgeschnitten\nMessage-ID: <t1@kunde.example>\nContent-Type: multipart/mixed; boundary=\"X\"\n\n--X\nContent-Type: text/plain\n\nDer Anfang ist lesbar.\n--X\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK",
            ),
        ),
        (
            "long header",
            crlf(&format!(
                "From: b@kunde.example\nSubject: Lange Zeile\nMessage-ID: <t2@kunde.example>\nX-Long: {}\n\nText nach langer Kopfzeile.\n",
                "a".repeat(100_000)
            )),
        ),
        (
            "invalid base64",
            crlf(
                "From: c@kunde.example\nSubject: Kaputt\nMessage-ID: <t3@kunde.example>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nSGFsbG8gV2VsdA=!!==@@\n",
            ),
        ),
        (
            "unknown charset",
            crlf(
                "From: d@kunde.example\nSubject: Zeichensatz\nMessage-ID: <t4@kunde.example>\nContent-Type: text/plain; charset=x-unknown-42\n\nLesbarer Text.\n",
            ),
        ),
        ("mime bomb", {
            let mut m = String::from("From: e@kunde.example\nSubject: Bombe\nMessage-ID: <t5@kunde.example>\n");
            for i in 0..1000 {
                m.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"));
            }
            m.push_str("Content-Type: text/plain\n\ninnen\n");
            crlf(&m)
        }),
    ];
    for (what, raw) in &broken {
        let (code, out, err) = pipe(raw);
        assert_eq!(code, Some(0), "{what}: {out} {err}");
    }
    let all = tickets(&s).await;
    assert_eq!(all.len(), 5, "{all:?}");
    let subjects: Vec<&str> = all.iter().filter_map(|t| t["subject"].as_str()).collect();
    for want in ["Abgeschnitten", "Lange Zeile", "Kaputt", "Zeichensatz", "Bombe"] {
        assert!(subjects.contains(&want), "{want} missing from {subjects:?}");
    }
    let truncated = all.iter().find(|t| t["subject"] == "Abgeschnitten").expect("truncated");
    let m = &messages(&s, truncated["id"].as_i64().expect("id")).await[0];
    assert!(m["body"].as_str().is_some_and(|b| b.contains("Der Anfang ist lesbar.")), "{m}");
    assert_eq!(m["has_source"], true);
    // The same message piped twice is stored once.
    assert_eq!(pipe(&broken[0].1).0, Some(0));
    assert_eq!(tickets(&s).await.len(), 5);
    // Over the body limit: refused before anything is stored, with the reason.
    let huge = [b"From: f@kunde.example\r\nSubject: Riesig\r\n\r\n".as_slice(), &vec![b'A'; 17 << 20]].concat();
    let (code, _, err) = pipe(&huge);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("max_body_bytes"), "{err}");
    // An unknown channel is a configuration error.
    let (code, _, err) = s
        .scratch
        .command(&["mail-in", "--instance", "999"])
        .stdin(Stdio::null())
        .output()
        .map(|o| (o.status.code(), (), String::from_utf8_lossy(&o.stderr).into_owned()))
        .expect("mail-in");
    assert_eq!(code, Some(78), "{err}");

    // The right password: the mailbox is imported from the start.
    mail.deliver(&[&crlf(FIRST)]);
    let (status, ch) = s.patch(&format!("/api/v1/channels/{channel}"), json!({ "secrets": { "imap_password": "plugdesk-test-password", "smtp_password": "plugdesk-test-password", "inbound_token": "pipe-token" } })).await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    let v = s
        .wait_for("/api/v1/tickets?channel=email", Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 6)
        })
        .await;
    let ticket = v["items"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["subject"] == "Lieferung für Bestellung 4711 fehlt").cloned())
        .expect("imported");
    let (id, number) = (ticket["id"].as_i64().expect("id"), ticket["number"].as_i64().expect("number"));

    // SMTP answers 451, then 550: the reply is retried, then failed with the server's words.
    mail.script_smtp(&["451", "550"]);
    let (_, reply) = s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Wir kümmern uns." })).await;
    let m = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(20), |v| {
            v["items"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == reply["id"] && m["delivery_status"] == "failed"))
        })
        .await;
    let failed = m["items"].as_array().and_then(|m| m.iter().find(|m| m["id"] == reply["id"]).cloned()).expect("reply");
    assert!(failed["delivery_error"].as_str().is_some_and(|e| e.contains("550")), "{failed}");
    assert!(mail.sent().is_empty());

    // A reply to a closed ticket opens a follow-up when the workspace says so.
    let (status, ws) = s.patch("/api/v1/workspace", json!({ "closed_ticket_reply": "follow_up" })).await;
    assert_eq!((status, ws["closed_ticket_reply"].as_str()), (StatusCode::OK, Some("follow_up")), "{ws}");
    support::assert_error(
        &s.patch("/api/v1/workspace", json!({ "closed_ticket_reply": "maybe" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "reopen",
    );
    let (status, t) = s.patch(&format!("/api/v1/tickets/{id}"), json!({ "status": "closed" })).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    mail.deliver(&[&crlf(&format!("From: juergen.mueller@kunde.example\nTo: support@plugdesk.test\nSubject: Re: [#{number}] Lieferung\nMessage-ID: <late-1@kunde.example>\nIn-Reply-To: <b7e4c2a1-0001@kunde.example>\n\nEs ist doch nicht angekommen.\n"))]);
    let v = s
        .wait_for("/api/v1/tickets?channel=email", Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 7)
        })
        .await;
    let follow = v["items"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["attributes"]["follow_up_of"] == number).cloned())
        .expect("follow-up ticket");
    assert!(follow["tags"].as_array().is_some_and(|t| t.contains(&json!("follow-up"))), "{follow}");
    let (_, closed) = s.get(&format!("/api/v1/tickets/{id}")).await;
    assert_eq!(closed["status"], "closed");
    // Back to `reopen`: an answer to the closed follow-up opens it again, no new ticket.
    let (status, _) = s.patch("/api/v1/workspace", json!({ "closed_ticket_reply": "reopen" })).await;
    assert_eq!(status, StatusCode::OK);
    let follow_id = follow["id"].as_i64().expect("id");
    let (status, t) = s.patch(&format!("/api/v1/tickets/{follow_id}"), json!({ "status": "closed" })).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    mail.deliver(&[&crlf("From: juergen.mueller@kunde.example\nTo: support@plugdesk.test\nSubject: Re: Lieferung\nMessage-ID: <late-2@kunde.example>\nIn-Reply-To: <late-1@kunde.example>\n\nImmer noch nichts.\n")]);
    let t =
        s.wait_for(&format!("/api/v1/tickets/{follow_id}"), Duration::from_secs(20), |t| t["status"] == "open").await;
    assert_eq!(t["reopen_count"], 1, "{t}");
    assert_eq!(tickets(&s).await.len(), 7);
    s.stop();
}

/// A TCP relay to the IMAP server that cuts its first connection after `cut` bytes from the
/// server: a mailbox dropping the connection in the middle of a fetch.
fn cutting_relay(target: u16, cut: usize) -> u16 {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
            let budget = if n == 0 { cut } else { usize::MAX };
            let (mut c_in, mut s_out) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let n = n.min(budget - sent);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= budget {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[tokio::test]
async fn a_connection_dropped_mid_fetch_loses_and_repeats_nothing() {
    let mail = Mail::start();
    let s = server(&mail).await;
    let messages: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            crlf(&format!(
                "From: kunde{i}@kunde.example\nTo: support@plugdesk.test\nSubject: Anfrage {i}\nMessage-ID: <drop-{i}@kunde.example>\n\n{}\n",
                format!("Zeile {i} der Anfrage mit etwas Text. ").repeat(40)
            ))
        })
        .collect();
    mail.deliver(&messages.iter().map(Vec::as_slice).collect::<Vec<_>>());
    // The first connection breaks after 20 KB of the server's answers: inside the fetch.
    let relay = cutting_relay(mail.port("imap") as u16, 20_000);
    let (status, ch) = s
        .post(
            "/api/v1/channels",
            json!({
                "plugin": "email", "poll_interval_ms": 300,
                "settings": { "address": "support@plugdesk.test", "imap_host": "127.0.0.1", "imap_port": relay, "imap_security": "none", "batch_messages": 25 },
                "secrets": { "imap_password": "plugdesk-test-password" },
                "grants": ["secrets", "kv", format!("tcp:127.0.0.1:{relay}")],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let channel = ch["id"].as_i64().expect("id");
    // The failed poll is reported on the channel and moves nothing; later polls import all 40,
    // each once, in batches of 25.
    let v = s
        .wait_for("/api/v1/tickets?channel=email&limit=100", Duration::from_secs(30), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 40)
        })
        .await;
    let mut subjects: Vec<String> =
        v["items"].as_array().expect("items").iter().filter_map(|t| t["subject"].as_str().map(str::to_owned)).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 40);
    let (_, payloads) = s.get(&format!("/api/v1/channels/{channel}/payloads")).await;
    let polls = payloads["items"].as_array().expect("payloads");
    assert_eq!(polls.len(), 2, "two batches stored: {payloads}");
    assert!(polls.iter().all(|p| p["status"] == "processed"), "{payloads}");
    let (_, ch) = s.get(&format!("/api/v1/channels/{channel}")).await;
    assert!(ch["cursor"].as_str().is_some_and(|c| c.ends_with(":40")), "{ch}");
    assert!(ch["stats"]["errors"].as_u64().is_some_and(|n| n >= 1), "{ch}");
    let error = ch["stats"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("imap 127.0.0.1:{relay}")), "{ch}");
    // Two more polls (the channel counts its calls) bring nothing again.
    let calls = ch["stats"]["calls"].as_u64().expect("calls");
    s.wait_for(&format!("/api/v1/channels/{channel}"), Duration::from_secs(10), |c| {
        c["stats"]["calls"].as_u64().is_some_and(|n| n >= calls + 2)
    })
    .await;
    assert_eq!(tickets(&s).await.len(), 40, "nothing imported twice");
    s.stop();
}

/// A mail of `attachment` bytes of PDF (base64 in the message), from `from`.
fn mail_with_attachment(from: &str, subject: &str, attachment: usize) -> Vec<u8> {
    use base64::Engine as _;
    let data: Vec<u8> = (0..attachment).map(|i| (i * 7 % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut body = String::with_capacity(b64.len() + b64.len() / 38 + 1024);
    for chunk in b64.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(chunk).expect("ascii"));
        body.push_str("\r\n");
    }
    format!(
        "From: {from}\r\nTo: support@plugdesk.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@kunde.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei die Unterlagen.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}--b--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_mail_becomes_a_ticket_with_a_note_and_the_mailbox_moves_on() {
    let mail = Mail::start();
    let s = server(&mail).await;
    // 30 MB (a 22 MB attachment): over what a poll fetches whole; 14 MB (an 11 MB attachment):
    // fetched, but the attachment is over the 10 MiB limit; then an ordinary mail.
    mail.deliver(&[
        &mail_with_attachment("gross@kunde.example", "riesig", 22 << 20),
        &mail_with_attachment("mittel@kunde.example", "mittel", 11 << 20),
        &crlf("From: klein@kunde.example\nTo: support@plugdesk.test\nSubject: klein\nMessage-ID: <klein@kunde.example>\n\nNur Text.\n"),
    ]);
    install(&s, &mail, "plugdesk-test-password").await;
    let v = s
        .wait_for("/api/v1/tickets?channel=email", Duration::from_secs(60), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 3)
        })
        .await;
    let by_subject = |subject: &str| {
        v["items"].as_array().and_then(|t| t.iter().find(|t| t["subject"] == subject).cloned()).expect(subject)
    };
    let huge = &messages(&s, by_subject("riesig")["id"].as_i64().expect("id")).await[0];
    let body = huge["body"].as_str().unwrap_or_default();
    assert!(body.contains("was larger than the limit") && body.contains("for fetching"), "{huge}");
    assert_eq!(huge["attachments"], json!([]), "{huge}");
    let middle = &messages(&s, by_subject("mittel")["id"].as_i64().expect("id")).await[0];
    let body = middle["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("Anbei die Unterlagen."), "{middle}");
    assert!(body.contains("Attachment \"scan.pdf\" (11 MB) was larger than the limit of 10 MB"), "{middle}");
    assert_eq!(middle["has_source"], false, "{middle}");
    let small = &messages(&s, by_subject("klein")["id"].as_i64().expect("id")).await[0];
    assert_eq!(small["body"].as_str().map(str::trim), Some("Nur Text."));
    s.stop();
}

/// Regression (#13): the token `plugdesk mail-in` hands the e-mail channel was stored in clear
/// text with every piped mail. It is masked in the stored request now, and retrying that
/// request still works: the host puts the channel's current token back.
#[tokio::test]
async fn a_piped_mail_is_stored_without_its_token_and_can_still_be_retried() {
    let s = Server::start().await;
    // No mail server: this channel only takes piped mail (its polls fail, which is fine here).
    let channel = pipe_channel(&s).await;
    let raw = crlf("From: ina@kunde.example\nSubject: Gepipt\nMessage-ID: <pipe-1@kunde.example>\n\nHallo per Pipe.\n");
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");

    let (_, payloads) = s.get(&format!("/api/v1/channels/{channel}/payloads")).await;
    let p = payloads["items"][0].clone();
    assert_eq!(p["status"], "processed", "{payloads}");
    let headers: Vec<(String, String)> = serde_json::from_value(p["headers"].clone()).expect("headers");
    assert!(headers.contains(&("x-plugdesk-mail-token".into(), "[masked]".into())), "{p}");
    let leaked = s.scratch.sql("SELECT COUNT(*) FROM inbound_payloads WHERE headers LIKE '%pipe-token-live%'");
    assert_eq!(leaked, "0");

    let (status, retried) = s.post(&format!("/api/v1/channels/{channel}/payloads/{}/retry", p["id"]), json!({})).await;
    assert_eq!((status, retried["status"].as_i64()), (StatusCode::OK, Some(200)), "{retried}");
    assert_eq!(tickets(&s).await.len(), 1, "the same mail again is not a second ticket");

    // A mail posted over HTTP with a wrong token is refused, and stays refused on retry: the
    // channel's token is only put back for requests that had it right.
    let forged = reqwest::Client::new()
        .post(format!("{}/hooks/{channel}", s.base))
        .header("content-type", "message/rfc822")
        .header("x-plugdesk-mail-token", "guess")
        .body(crlf(
            "From: mallory@evil.example\nSubject: Gefälscht\nMessage-ID: <forged-1@evil.example>\n\nGib mir Zugriff.\n",
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let refused: Value = forged.json().await.expect("json");
    let id = refused["error"]["payload_id"].as_i64().expect("payload id");
    let (status, retried) = s.post(&format!("/api/v1/channels/{channel}/payloads/{id}/retry"), json!({})).await;
    assert_eq!((status, retried["status"].as_i64()), (StatusCode::OK, Some(401)), "{retried}");
    assert_eq!(tickets(&s).await.len(), 1, "no forged ticket");
}

/// A server whose workspace runs the default workflow library (acknowledgements…).
async fn library_server() -> Server {
    let scratch = Scratch::new();
    let token = scratch.init_with("default", &[]);
    Server::serve(scratch, token).await
}

/// Installs an e-mail channel that only takes piped mail (no mail server: its polls fail and
/// its replies stay queued, which is fine for what these tests look at).
async fn pipe_channel(s: &Server) -> i64 {
    let (status, ch) = s
        .post(
            "/api/v1/channels",
            json!({
                "plugin": "email", "poll_interval_ms": 3_600_000,
                "settings": {
                    "address": "support@plugdesk.test", "imap_host": "127.0.0.1", "imap_port": 9,
                    "smtp_host": "127.0.0.1", "smtp_port": 9, "smtp_user": "support@plugdesk.test",
                },
                "secrets": { "inbound_token": "pipe-token-live-4711" },
                "grants": ["secrets", "kv"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    ch["id"].as_i64().expect("id")
}

/// Runs `plugdesk mail-in` with `raw` on standard input: (exit code, stdout, stderr).
fn mail_in(s: &Server, channel: i64, raw: &[u8], extra: &[&str]) -> (Option<i32>, String, String) {
    let instance = channel.to_string();
    let mut args = vec!["mail-in", "--instance", instance.as_str()];
    args.extend_from_slice(extra);
    let mut child = s
        .scratch
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mail-in");
    // A refusal may come before all of stdin is read (too large): the pipe may break.
    let _ = child.stdin.take().expect("stdin").write_all(raw);
    let out = child.wait_with_output().expect("mail-in");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one ticket `mail-in`'s answer names, with its messages.
async fn piped_ticket(s: &Server, answer: &str) -> (Value, Vec<Value>) {
    let answer: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let id = answer["tickets"][0].as_i64().unwrap_or_else(|| panic!("no ticket in {answer}"));
    let (status, ticket) = s.get(&format!("/api/v1/tickets/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{ticket}");
    (ticket, messages(s, id).await)
}

/// Waits until the rules have answered ticket `id` (a reply or a held-back note), and returns
/// its messages.
async fn answered(s: &Server, id: i64) -> Vec<Value> {
    let v = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|m| m.iter().any(|m| m["direction"] != "inbound"))
        })
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn mail_without_a_sender_a_foreign_bounce_or_a_broken_header_is_stored_never_dropped() {
    let s = library_server().await;
    let channel = pipe_channel(&s).await;

    // No address anywhere: a ticket from the "Unknown sender", flagged, never answered.
    let raw = crlf(
        "From: Support Team\nSubject: Rechnung fehlt\nMessage-ID: <nosender-1@kunde.example>\n\nWo ist meine Rechnung?\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, msgs) = piped_ticket(&s, &out).await;
    assert_eq!(ticket["subject"], "Rechnung fehlt");
    assert!(ticket["tags"].as_array().is_some_and(|t| t.contains(&json!("unknown-sender"))), "{ticket}");
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", ticket["customer_id"])).await;
    assert_eq!(customer["name"], "Unknown sender", "{customer}");
    let body = msgs[0]["body"].as_str().unwrap_or_default();
    assert!(body.contains("Wo ist meine Rechnung?") && body.contains("No sender address could be found"), "{body}");
    let after = answered(&s, ticket["id"].as_i64().expect("id")).await;
    assert!(after.iter().all(|m| m["direction"] != "outbound"), "an unknown sender is never answered: {after:?}");
    let held = after.iter().find(|m| m["direction"] == "internal").expect("a held-back note");
    assert!(held["body"].as_str().is_some_and(|b| b.contains("the sender of this message is unknown")), "{held}");

    // A name without an address, and a Reply-To: the Reply-To's address with From's name.
    let raw = crlf(
        "From: Anna Schmidt\nReply-To: <anna@kunde.example>\nSubject: Frage\nMessage-ID: <nosender-2@kunde.example>\n\nEine Frage.\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, _) = piped_ticket(&s, &out).await;
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", ticket["customer_id"])).await;
    assert_eq!(
        (customer["name"].as_str(), customer["identities"][0]["address"].as_str()),
        (Some("Anna Schmidt"), Some("anna@kunde.example")),
        "{customer}"
    );

    // Nothing in the headers, the envelope sender from the MTA's pipe (`--sender`).
    let raw = crlf("Subject: Nur Umschlag\nMessage-ID: <nosender-3@kunde.example>\n\nText.\n");
    let (code, out, err) = mail_in(&s, channel, &raw, &["--sender", "envelope@kunde.example"]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, _) = piped_ticket(&s, &out).await;
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", ticket["customer_id"])).await;
    assert_eq!(customer["identities"][0]["address"], "envelope@kunde.example", "{customer}");

    // A delivery report about a message this workspace never sent: kept as an automatic
    // ticket, tagged, never answered (refusing it would bounce the bounce).
    let raw = crlf(
        "From: Mail Delivery System <MAILER-DAEMON@mx.kunde.example>\nTo: support@plugdesk.test\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <dsn-foreign-1@mx.kunde.example>\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"R\"\n\n--R\nContent-Type: text/plain\n\nYour message could not be delivered.\n--R\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.kunde.example\n\nFinal-Recipient: rfc822; gone@kunde.example\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n--R\nContent-Type: text/rfc822-headers\n\nMessage-ID: <never-sent-by-us@elsewhere.example>\nSubject: Something else\n--R--\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, msgs) = piped_ticket(&s, &out).await;
    assert!(ticket["tags"].as_array().is_some_and(|t| t.contains(&json!("delivery-report"))), "{ticket}");
    assert_eq!(msgs[0]["automatic"], true, "{msgs:?}");
    s.settled(Duration::from_secs(20)).await;
    let after = messages(&s, ticket["id"].as_i64().expect("id")).await;
    assert!(after.iter().all(|m| m["direction"] != "outbound"), "a delivery report is never answered: {after:?}");

    // Every message above is stored: none reported success without a ticket.
    assert_eq!(tickets(&s).await.len(), 4);
}

#[tokio::test]
async fn a_german_customer_gets_the_german_acknowledgement_and_names_follow_the_mail() {
    let s = library_server().await;
    let channel = pipe_channel(&s).await;
    // A workflow that reads the detected language of the ticket's messages.
    let (status, wf) = s
        .post(
            "/api/v1/workflows",
            json!({ "name": "Language tag", "source": "// on: ticket.created\nlet first = messages[0];\nif type_of(first.language) == \"string\" { add_tag(\"lang-\" + first.language); }\n" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");

    let raw = crlf(
        "From: lena@kunde.example\nSubject: Frage zur Rechnung\nMessage-ID: <de-1@kunde.example>\nContent-Type: text/plain; charset=utf-8\n\nGuten Tag,\n\nder Betrag auf meiner letzten Rechnung scheint mir zu hoch zu sein. Können Sie das bitte prüfen?\n\nViele Grüße\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, msgs) = piped_ticket(&s, &out).await;
    assert_eq!(msgs[0]["language"]["code"], "de", "{msgs:?}");
    assert_eq!(msgs[0]["language"]["script"], "Latin");
    assert!(msgs[0]["language"]["confidence"].as_f64().is_some_and(|c| c > 0.5), "{msgs:?}");
    let customer_path = format!("/api/v1/customers/{}", ticket["customer_id"]);
    let (_, customer) = s.get(&customer_path).await;
    assert_eq!(
        (customer["language"].as_str(), customer["language_origin"].as_str()),
        (Some("de"), Some("detected")),
        "{customer}"
    );
    assert_eq!((customer["name"].as_str(), customer["name_origin"].as_str()), (Some("lena"), Some("address")));
    let id = ticket["id"].as_i64().expect("id");
    let after = answered(&s, id).await;
    let ack = after.iter().find(|m| m["direction"] == "outbound").expect("an acknowledgement");
    assert!(ack["body"].as_str().is_some_and(|b| b.contains("vielen Dank für Ihre Nachricht")), "{ack}");
    let tagged = s
        .wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(20), |t| {
            t["tags"].as_array().is_some_and(|t| t.contains(&json!("lang-de")))
        })
        .await;
    assert!(tagged["tags"].as_array().is_some_and(|t| t.contains(&json!("lang-de"))));

    // Her next mail carries a display name: the name derived from the address follows it. A
    // short English line does not flip the detected language.
    let raw = crlf(
        "From: Lena Schäfer <lena@kunde.example>\nSubject: Noch etwas\nMessage-ID: <de-2@kunde.example>\nContent-Type: text/plain; charset=utf-8\n\nThanks, see you soon then.\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (_, customer) = s.get(&customer_path).await;
    assert_eq!(
        (customer["name"].as_str(), customer["name_origin"].as_str()),
        (Some("Lena Schäfer"), Some("mail")),
        "{customer}"
    );
    assert_eq!(customer["language"], "de", "{customer}");

    // A name taken from mail stays; a long, confidently English mail moves a detected language.
    let raw = crlf(
        "From: Lena S. <lena@kunde.example>\nSubject: Invoice\nMessage-ID: <de-2b@kunde.example>\n\nHello again, I have moved to London and would like to receive all further letters and invoices in English from now on. Thank you very much for your help!\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (_, customer) = s.get(&customer_path).await;
    assert_eq!(
        (customer["name"].as_str(), customer["language"].as_str(), customer["language_origin"].as_str()),
        (Some("Lena Schäfer"), Some("en"), Some("detected")),
        "{customer}"
    );

    // A name and a language an agent set stay, whatever the mail says.
    let (status, _) = s.patch(&customer_path, json!({ "name": "Frau Dr. Schäfer", "language": "de" })).await;
    assert_eq!(status, StatusCode::OK);
    let raw = crlf(
        "From: L. S. <lena@kunde.example>\nSubject: Again\nMessage-ID: <de-3@kunde.example>\n\nHello again, my parcel still has not arrived and I am getting worried about it now. Could you please look into it today and tell me where it is?\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (_, customer) = s.get(&customer_path).await;
    assert_eq!(
        (customer["name"].as_str(), customer["language"].as_str()),
        (Some("Frau Dr. Schäfer"), Some("de")),
        "{customer}"
    );

    // An English customer gets the English acknowledgement.
    let raw = crlf(
        "From: Sam Miller <sam@client.example>\nSubject: Invoice question\nMessage-ID: <en-1@client.example>\n\nHello, the amount on my last invoice looks too high to me. Could you please check it?\n",
    );
    let (code, out, err) = mail_in(&s, channel, &raw, &[]);
    assert_eq!(code, Some(0), "{out} {err}");
    let (ticket, _) = piped_ticket(&s, &out).await;
    let after = answered(&s, ticket["id"].as_i64().expect("id")).await;
    let ack = after.iter().find(|m| m["direction"] == "outbound").expect("an acknowledgement");
    assert!(ack["body"].as_str().is_some_and(|b| b.contains("Thank you for contacting us")), "{ack}");
}

/// Where CPython keeps its e-mail test messages (`test/test_email/data`): the first Python
/// on the machine that has its test package (`tests/run.sh` installs Debian's when none has).
fn cpython_email_data() -> PathBuf {
    let mut why = Vec::new();
    for python in ["python3", "/usr/bin/python3"] {
        let out = Command::new(python)
            .args(["-c", "import os, test.test_email as t; print(os.path.join(os.path.dirname(t.__file__), 'data'))"])
            .output();
        match out {
            Ok(out) => {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if out.status.success() && dir.is_dir() {
                    return dir;
                }
                why.push(format!("{python}: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            Err(e) => why.push(format!("{python}: {e}")),
        }
    }
    panic!("no Python with its test package (Debian: apt-get install libpython3.11-testsuite): {why:?}")
}

#[tokio::test]
async fn every_cpython_test_message_is_stored_or_refused_with_a_reason() {
    let s = Server::start().await;
    let channel = pipe_channel(&s).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(cpython_email_data())
        .expect("read the data folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("msg_") && n.ends_with(".txt"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 40, "only {} messages found", files.len());
    let mut stored = 0;
    for file in &files {
        let raw = std::fs::read(file).expect("read message");
        let (code, out, err) = mail_in(&s, channel, &raw, &[]);
        let name = file.display();
        match code {
            Some(0) => {
                let answer: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
                let ids =
                    answer["tickets"].as_array().unwrap_or_else(|| panic!("{name}: exit 0 without a ticket: {out}"));
                assert!(!ids.is_empty(), "{name}: exit 0 without a ticket: {out}");
                for id in ids {
                    let (status, t) = s.get(&format!("/api/v1/tickets/{id}")).await;
                    assert_eq!(status, StatusCode::OK, "{name}: {t}");
                }
                stored += 1;
            }
            Some(65) => assert!(
                err.contains("did not take the message") && err.len() > 40,
                "{name}: refused without a reason: {err}"
            ),
            other => panic!("{name}: mail-in exited {other:?}: {out} {err}"),
        }
    }
    // Tolerant reading keeps every one of them.
    assert_eq!(stored, files.len());
}

/// One class of hard mail: its source, and what a mail client shows of it.
struct Case {
    what: &'static str,
    raw: Vec<u8>,
    subject: &'static str,
    sender: &'static str,
    name: Option<&'static str>,
    body: &'static str,
}

/// Mail that mail clients show correctly and a strict reader garbles or drops, one per class.
fn hard_mail() -> Vec<Case> {
    let latin1 = b"From: Bj\xf6rn <bjoern@kunde.example>\r\nSubject: R\xfcckfrage zur Lieferung\r\nMessage-ID: <c-latin1@kunde.example>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe aus K\xf6ln.\r\n".to_vec();
    // Shift_JIS bytes under an ISO-2022-JP label, as some Japanese mailers write.
    let mut sjis = b"From: tanaka@kunde.example\r\nSubject: =?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=\r\nMessage-ID: <c-sjis@kunde.example>\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    sjis.extend_from_slice(b"\x8d\xa1\x93\xfa\x82\xcd\x82\xa2\x82\xa2\x93\x56\x8b\x43\x82\xc5\x82\xb7\x82\xcb\x81\x42\x92\x8d\x95\xb6\x82\xcd\x82\xc7\x82\xa4\x82\xc8\x82\xe8\x82\xdc\x82\xb5\x82\xbd\x82\xa9\x81\x48\r\n");
    vec![
        Case {
            what: "no sender address anywhere",
            raw: crlf(
                "From: Support Team\nSubject: Ohne Absender\nMessage-ID: <c-nosender@kunde.example>\n\nText ohne Absender.\n",
            ),
            subject: "Ohne Absender",
            sender: "unknown-sender@unknown.invalid",
            name: Some("Unknown sender"),
            body: "Text ohne Absender.",
        },
        Case {
            what: "encoded words with spaces, adjacent charsets, in a quoted name, without whitespace",
            raw: crlf(
                "From: \"=?utf-8?Q?J=C3=B6rg M=C3=BCller?=\" <joerg@kunde.example>\nSubject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?= =?iso-8859-1?Q?_aus_K=F6ln?==?utf-8?B?IHVuZCBNw7xuY2hlbg==?=\nMessage-ID: <c-words@kunde.example>\n\nHallo.\n",
            ),
            subject: "Grüße aus Köln und München",
            sender: "joerg@kunde.example",
            name: Some("Jörg Müller"),
            body: "Hallo.",
        },
        Case {
            what: "raw Latin-1 headers under a Latin-1 body",
            raw: latin1,
            subject: "Rückfrage zur Lieferung",
            sender: "bjoern@kunde.example",
            name: Some("Björn"),
            body: "Grüße aus Köln.",
        },
        Case {
            what: "an unindented continuation line from a filtering gateway",
            raw: crlf(
                "From: Eva <eva@kunde.example>\nSubject: Frage zu meiner\nBestellung 4711\nMessage-ID: <c-fold@kunde.example>\nContent-Type: text/plain; charset=utf-8\n\nWo bleibt sie?\n",
            ),
            subject: "Frage zu meiner Bestellung 4711",
            sender: "eva@kunde.example",
            name: Some("Eva"),
            body: "Wo bleibt sie?",
        },
        Case {
            what: "a forwarded message pasted into the pipe, first line no header",
            raw: crlf(
                "---------- Forwarded message ----------\nFrom: Kai <kai@kunde.example>\nSubject: Weitergeleitet\nMessage-ID: <c-forward@kunde.example>\n\nBitte ansehen.\n",
            ),
            subject: "Weitergeleitet",
            sender: "kai@kunde.example",
            name: Some("Kai"),
            body: "Bitte ansehen.",
        },
        Case {
            what: "Shift_JIS labelled ISO-2022-JP",
            raw: sjis,
            subject: "こんにちは",
            sender: "tanaka@kunde.example",
            name: None,
            body: "今日はいい天気ですね。注文はどうなりましたか？",
        },
    ]
}

/// Checks the ticket made of `case`: subject, customer and text as a mail client shows them.
async fn check_case(s: &Server, case: &Case, ticket: &Value) {
    let what = case.what;
    assert_eq!(ticket["subject"], case.subject, "{what}: {ticket}");
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", ticket["customer_id"])).await;
    assert_eq!(customer["identities"][0]["address"], case.sender, "{what}: {customer}");
    if let Some(name) = case.name {
        assert_eq!(customer["name"], name, "{what}: {customer}");
    }
    let first = &messages(s, ticket["id"].as_i64().expect("id")).await[0];
    assert!(first["body"].as_str().is_some_and(|b| b.contains(case.body)), "{what}: {first}");
}

#[tokio::test]
async fn hard_mail_reads_as_a_mail_client_shows_it_through_the_pipe_and_imap() {
    // Through `plugdesk mail-in`.
    let s = Server::start().await;
    let channel = pipe_channel(&s).await;
    for case in hard_mail() {
        let (code, out, err) = mail_in(&s, channel, &case.raw, &[]);
        assert_eq!(code, Some(0), "{}: {out} {err}", case.what);
        let (ticket, _) = piped_ticket(&s, &out).await;
        check_case(&s, &case, &ticket).await;
    }
    drop(s);

    // Through IMAP, from a real Dovecot.
    let mail = Mail::start();
    let s = server(&mail).await;
    install(&s, &mail, "plugdesk-test-password").await;
    let cases = hard_mail();
    let raws: Vec<&[u8]> = cases.iter().map(|c| c.raw.as_slice()).collect();
    mail.deliver(&raws);
    let v = s
        .wait_for("/api/v1/tickets?channel=email", Duration::from_secs(30), |v| {
            v["items"].as_array().is_some_and(|t| t.len() >= cases.len())
        })
        .await;
    let all = v["items"].as_array().cloned().unwrap_or_default();
    for case in &cases {
        let ticket = all.iter().find(|t| t["subject"] == case.subject).unwrap_or_else(|| {
            let subjects: Vec<&Value> = all.iter().map(|t| &t["subject"]).collect();
            panic!("{}: no ticket {:?} among {subjects:?}", case.what, case.subject)
        });
        check_case(&s, case, ticket).await;
    }
}

/// Regression: replies on tickets whose channel cannot answer (API, web form) were stored as
/// sent and went nowhere; they now leave through the workspace's e-mail channel.
#[tokio::test]
async fn a_reply_to_an_api_ticket_reaches_the_customer_through_the_email_channel() {
    let mail = Mail::start();
    let s = server(&mail).await;
    let (status, t) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Rückruf erbeten", "body": "Bitte melden Sie sich.", "customer": { "email": "kunde@example.org", "name": "Kundin" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["id"].as_i64().expect("id");
    // Before an e-mail channel exists nobody can reach the customer: stored, not queued.
    let (_, early) = s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Noch ohne Kanal." })).await;
    assert!(early["delivery_status"].is_null(), "{early}");
    install(&s, &mail, "plugdesk-test-password").await;
    let (status, reply) =
        s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Wir rufen Sie heute an." })).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["delivery_status"], "queued", "{reply}");
    let sent = wait_sent(&mail, 1).await;
    let (_, raw) = sent
        .iter()
        .find(|(_, raw)| String::from_utf8_lossy(raw).contains("Wir rufen Sie heute an."))
        .expect("the reply was sent");
    let to = header(raw, "To").expect("To");
    assert!(to.contains("kunde@example.org"), "{to}");
}

#[tokio::test]
async fn an_invitation_is_mailed_through_the_email_channel_and_its_link_works() {
    let mail = Mail::start();
    let s = server(&mail).await;
    let mut admin = support::admin_browser(&s).await;
    // Without an e-mail channel the page says the link was not mailed.
    let first = invite_agent(&mut admin, "Otto Agent", "otto@example.org").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        first.body.contains("id=\"invite-mailed\"") && first.body.contains("no active e-mail channel"),
        "{}",
        first.body
    );

    install(&s, &mail, "plugdesk-test-password").await;
    let invited = invite_agent(&mut admin, "Berta Agent", "berta@example.org").await;
    assert!(invited.body.contains("The link was also mailed to berta@example.org"), "{}", invited.body);
    let start = invited.body.find("id=\"invite-link\">").expect("the link is shown") + "id=\"invite-link\">".len();
    let link = invited.body[start..start + invited.body[start..].find('<').expect("end")].to_owned();
    let token = link.rsplit('/').next().expect("token").to_owned();

    let sent = wait_sent(&mail, 1).await;
    let (_, raw) = sent.iter().find(|(_, raw)| String::from_utf8_lossy(raw).contains("Berta")).expect("the invitation");
    let to = header(raw, "To").expect("To");
    assert!(to.contains("berta@example.org"), "{to}");
    let subject = decode_words(&header(raw, "Subject").expect("Subject"));
    assert!(subject.contains("invites you") && !subject.contains("[#"), "no ticket tag: {subject}");
    // The link may be folded by quoted-printable soft line breaks.
    let text = String::from_utf8_lossy(raw).replace("=\r\n", "");
    assert!(text.contains(&token), "the mail carries the link: {text}");

    // The mailed link lets Berta choose a password.
    let mut berta = support::Browser::new(&s.base);
    let path = format!("/invite/{token}");
    let form = berta.get(&path).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let done = berta
        .post(
            &path,
            &[("csrf", &form.csrf()), ("password", support::PASSWORD), ("password_confirm", support::PASSWORD)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
}

/// Invites an agent through the admin's page; the page that answers.
async fn invite_agent(admin: &mut support::Browser, name: &str, email: &str) -> support::Page {
    let csrf = admin.get("/settings/agents").await.csrf();
    admin.post("/settings/agents/invite", &[("csrf", &csrf), ("name", name), ("email", email), ("role", "agent")]).await
}
