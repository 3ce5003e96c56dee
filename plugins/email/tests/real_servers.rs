//! The e-mail channel against real servers: Dovecot (IMAP) and an SMTP sink, started from the
//! repository's mail fixture (`tests/mail`) — first the protocol core, then the plugin's poll
//! and send flows as the host runs them. A fixture that cannot start fails the test with the
//! reason; every server is stopped when its test ends, pass or fail.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use email::compose::{Address, Outgoing, compose};
use email::imap::{Cursor, ImapClient, ImapConfig, Resume};
use email::settings::Settings;
use email::smtp::{SmtpClient, SmtpConfig, SmtpError};
use email::{Level, Transport, mailbox, outbound};
use email_parse::{Limits, parse};
use plugdesk_sdk::{Identity, OutboundMessage, PollOutcome, SendError};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the fixture's setup once per test binary.
fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/mail/setup.sh"))
            .output()
            .map_err(|e| format!("cannot run tests/mail/setup.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/mail/setup.sh failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("mail fixture unavailable: {e}");
    }
}

/// A running fixture; stopped (SIGTERM to the fixture process) and cleaned up on drop.
struct Fixture {
    dir: PathBuf,
    child: Child,
    _stdout: BufReader<ChildStdout>,
    imap: u16,
    smtp: u16,
    user: String,
    password: String,
}

fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        Some(&s[..s.find('"')?])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

impl Fixture {
    fn start(name: &str, extra: &[&str]) -> Fixture {
        setup();
        let dir = PathBuf::from(format!("/dev/shm/plugdesk-email-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/mail/mailserver.py"))
            .args(["serve", "--dir"])
            .arg(&dir)
            .args(["--ports", "auto"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tests/mail/mailserver.py: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        if read.is_err() || !line.starts_with('{') {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = std::fs::remove_dir_all(&dir);
            panic!("the mail fixture did not start: stdout {line:?} ({read:?}), stderr: {err}");
        }
        let port = |key: &str| -> u16 {
            json_field(&line, key).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no {key} in {line}"))
        };
        let (imap, smtp) = (port("imap"), port("smtp"));
        let user = json_field(&line, "user").unwrap_or_default().to_owned();
        let password = json_field(&line, "password").unwrap_or_default().to_owned();
        Fixture { dir, child, _stdout: stdout, imap, smtp, user, password }
    }

    fn mailserver(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(repo_root().join("tests/mail/mailserver.py"))
            .args(args)
            .args(["--dir", self.dir.to_str().expect("utf-8 path")])
            .output()
            .expect("run mailserver.py");
        assert!(out.status.success(), "mailserver.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn deliver(&self, messages: &[&[u8]]) {
        let mut paths = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let path = self.dir.join(format!("to-deliver-{i}.eml"));
            std::fs::write(&path, m).expect("write message");
            paths.push(path.to_string_lossy().into_owned());
        }
        let mut args = vec!["deliver"];
        args.extend(paths.iter().map(String::as_str));
        self.mailserver(&args);
    }

    fn transport(&self, port: u16) -> TcpTransport {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // The protocol tests name the secret `mail_password`; the plugin's flows use the
        // channel's secret names.
        let secrets = ["mail_password", "imap_password", "smtp_password"]
            .into_iter()
            .map(|name| (name.to_owned(), self.password.clone()))
            .collect::<HashMap<_, _>>();
        TcpTransport { stream, secrets }
    }

    fn imap(&self) -> ImapClient<TcpTransport> {
        let mut client = ImapClient::connect(self.transport(self.imap), ImapConfig::default()).expect("IMAP greeting");
        client.login(&self.user, "mail_password").expect("IMAP LOGIN");
        client
    }

    fn smtp(&self) -> SmtpClient<TcpTransport> {
        let mut client = SmtpClient::connect(self.transport(self.smtp), SmtpConfig::default()).expect("SMTP greeting");
        client.ehlo("client.plugdesk.test").expect("EHLO");
        client.auth_login(&self.user, "mail_password").expect("AUTH LOGIN");
        client
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain TCP connection whose `write_secret` fills placeholders from a map, as the host does.
struct TcpTransport {
    stream: TcpStream,
    secrets: HashMap<String, String>,
}

impl Transport for TcpTransport {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.stream.write_all(data).map_err(|e| e.to_string())
    }

    fn write_secret(&mut self, template: &str) -> Result<(), String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{secret") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").ok_or("unclosed placeholder")? + start;
            let (kind, name) = rest[start + 2..end].split_once(':').ok_or("malformed placeholder")?;
            // As the host does it: `secret_sasl_plain:NAME:USER` is base64 of NUL USER NUL secret.
            let (name, user) =
                if kind == "secret_sasl_plain" { name.split_once(':').unwrap_or((name, "")) } else { (name, "") };
            let secret = self.secrets.get(name).ok_or_else(|| format!("no secret {name}"))?;
            match kind {
                "secret" => out.push_str(secret),
                "secret_base64" => out.push_str(&email::base64_encode(secret.as_bytes())),
                "secret_sasl_plain" => out.push_str(&email::base64_encode(format!("\0{user}\0{secret}").as_bytes())),
                "secret_quoted" => {
                    out.push('"');
                    out.push_str(&secret.replace('\\', "\\\\").replace('"', "\\\""));
                    out.push('"');
                }
                other => return Err(format!("unknown placeholder {other}")),
            }
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        self.write(out.as_bytes())
    }

    fn read(&mut self, max: usize, timeout_ms: u32) -> Result<Vec<u8>, String> {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(u64::from(timeout_ms.max(1)))))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0; max];
        let n = self.stream.read(&mut buf).map_err(|e| e.to_string())?;
        buf.truncate(n);
        Ok(buf)
    }

    fn start_tls(&mut self) -> Result<(), String> {
        Err("the test transport has no TLS".to_owned())
    }
}

fn three_messages() -> Vec<Vec<u8>> {
    let mut german = b"From: =?ISO-8859-1?Q?J=FCrgen_M=FCller?= <juergen@example.de>\r\n\
        To: support@plugdesk.test\r\n\
        Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=\r\n\
        Date: Fri, 20 Feb 2026 09:15:00 +0100\r\n\
        Message-ID: <de-1@example.de>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=ISO-8859-1\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    german.extend_from_slice(b"Sehr geehrte Damen und Herren,\r\nmein Drucker druckt nicht. Gr\xfc\xdfe\r\n");
    vec![
        b"From: Anna Schmidt <anna@example.com>\r\nTo: support@plugdesk.test\r\nSubject: Login klappt nicht\r\n\
          Date: Fri, 20 Feb 2026 08:00:00 +0000\r\nMessage-ID: <a-1@example.com>\r\n\r\nIch komme nicht rein.\r\n"
            .to_vec(),
        german,
        b"From: Bob <bob@example.org>\r\nTo: support@plugdesk.test\r\nSubject: Re: [#1042] Invoice\r\n\
          Date: Fri, 20 Feb 2026 10:00:00 +0000\r\nMessage-ID: <b-2@example.org>\r\nIn-Reply-To: <t1042.m1@plugdesk.test>\r\n\
          MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"xyz\"\r\n\r\n\
          --xyz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThanks!\r\n\
          --xyz\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Thanks!</p>\r\n--xyz--\r\n"
            .to_vec(),
    ]
}

#[test]
fn imap_fetch_mark_seen_and_move() {
    let fx = Fixture::start("fetch", &[]);
    let messages = three_messages();
    fx.deliver(&messages.iter().map(Vec::as_slice).collect::<Vec<_>>());

    let mut client = fx.imap();
    let info = client.select("INBOX").expect("SELECT");
    assert_eq!(info.exists, 3);
    assert!(info.uid_validity > 0);
    let fetched = client.fetch_batch(1, 100, 10 << 20).expect("fetch");
    assert_eq!(fetched.len(), 3);
    assert!(fetched.windows(2).all(|w| w[0].uid < w[1].uid), "UIDs ascending");
    let parsed: Vec<_> = fetched.iter().map(|m| parse(&m.raw, &Limits::default())).collect();
    assert_eq!(parsed[0].subject.as_deref(), Some("Login klappt nicht"));
    assert_eq!(parsed[1].subject.as_deref(), Some("Grüße aus Köln"));
    assert_eq!(parsed[1].from[0].name.as_deref(), Some("Jürgen Müller"));
    assert!(parsed[1].text.as_deref().unwrap_or("").contains("Grüße"));
    assert_eq!(parsed[2].html.as_deref(), Some("<p>Thanks!</p>"));
    assert_eq!(email::thread::thread_keys(&parsed[2]), ["t1042.m1@plugdesk.test"]);
    assert_eq!(email::thread::ticket_tag(parsed[2].subject.as_deref().unwrap_or("")), Some(1042));
    assert!(fetched.iter().all(|m| !m.flags.iter().any(|f| f == "\\Seen")), "BODY.PEEK leaves mail unseen");

    let uids: Vec<u32> = fetched.iter().map(|m| m.uid).collect();
    client.mark_seen(&uids).expect("mark seen");
    client.create("Erledigt").expect("CREATE");
    client.move_to(&uids[..1], "Erledigt").expect("move");
    let again = client.fetch_batch(1, 100, 10 << 20).expect("fetch again");
    assert_eq!(again.iter().map(|m| m.uid).collect::<Vec<_>>(), &uids[1..]);
    assert!(again.iter().all(|m| m.flags.iter().any(|f| f == "\\Seen")));
    let done = client.examine("Erledigt").expect("EXAMINE");
    assert_eq!(done.exists, 1);
    let moved = client.fetch_batch(1, 10, 1 << 20).expect("fetch moved");
    assert_eq!(parse(&moved[0].raw, &Limits::default()).message_id.as_deref(), Some("a-1@example.com"));
    client.logout().expect("LOGOUT");
}

#[test]
fn imap_cursor_resumes_with_new_mail_only() {
    let fx = Fixture::start("cursor", &[]);
    let messages = three_messages();
    fx.deliver(&[&messages[0], &messages[1]]);
    let mut client = fx.imap();
    let info = client.select("INBOX").expect("SELECT");
    let start = Cursor::resume(None, info.uid_validity);
    let first = client.fetch_batch(start.from_uid(), 100, 10 << 20).expect("fetch");
    assert_eq!(first.len(), 2);
    let cursor = Cursor { uid_validity: info.uid_validity, last_uid: 0 }.advanced(&first);
    let stored = cursor.to_string();
    client.logout().expect("LOGOUT");

    fx.deliver(&[&messages[2]]);
    let mut client = fx.imap();
    let info = client.select("INBOX").expect("SELECT");
    let cursor = Cursor::parse(&stored).expect("cursor");
    let resume = Cursor::resume(Some(&cursor), info.uid_validity);
    assert_eq!(resume, Resume::Continue { from_uid: cursor.last_uid + 1 });
    let new = client.fetch_batch(resume.from_uid(), 100, 10 << 20).expect("fetch new");
    assert_eq!(new.len(), 1);
    assert_eq!(parse(&new[0].raw, &Limits::default()).message_id.as_deref(), Some("b-2@example.org"));
    let cursor = cursor.advanced(&new);
    assert!(client.fetch_batch(cursor.last_uid + 1, 100, 10 << 20).expect("fetch none").is_empty());
    // A cursor from another UIDVALIDITY starts over.
    let foreign = Cursor { uid_validity: info.uid_validity.wrapping_add(1), last_uid: cursor.last_uid };
    let resume = Cursor::resume(Some(&foreign), info.uid_validity);
    assert!(matches!(resume, Resume::Restart { from_uid: 1, .. }));
    assert_eq!(client.fetch_batch(resume.from_uid(), 100, 10 << 20).expect("refetch").len(), 3);
    client.logout().expect("LOGOUT");
}

#[test]
fn imap_batch_fetch_of_2000_messages() {
    let fx = Fixture::start("batch", &[]);
    let filled = fx.mailserver(&["fill", "--count", "2000"]);
    assert!(filled.contains("\"filled\": 2000"), "{filled}");
    let mut client = fx.imap();
    let info = client.select("INBOX").expect("SELECT");
    assert_eq!(info.exists, 2000);
    let started = Instant::now();
    let mut cursor = Cursor { uid_validity: info.uid_validity, last_uid: 0 };
    let (mut count, mut bytes, mut batches, mut problems, mut with_attachments) = (0usize, 0usize, 0, 0, 0);
    loop {
        let batch = client.fetch_batch(cursor.last_uid + 1, 500, 40 << 20).expect("fetch batch");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 500);
        assert!(batch.windows(2).all(|w| w[0].uid < w[1].uid));
        assert!(batch[0].uid > cursor.last_uid);
        for m in &batch {
            bytes += m.raw.len();
            let parsed = parse(&m.raw, &Limits::default());
            problems += parsed.problems.len();
            with_attachments += usize::from(!parsed.attachments.is_empty());
            assert!(parsed.subject.is_some() && !parsed.from.is_empty());
        }
        count += batch.len();
        batches += 1;
        cursor = cursor.advanced(&batch);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(count, 2000);
    assert_eq!(batches, 4);
    assert_eq!(problems, 0);
    assert!(with_attachments > 0);
    println!(
        "fetched and parsed {count} messages ({:.1} MB) in {batches} batches in {elapsed:.2} s: {:.0} msg/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        count as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed
    );
    client.logout().expect("LOGOUT");
}

fn outgoing(local: &str) -> Outgoing {
    Outgoing {
        from: Address { name: Some("Plugdesk Support".into()), email: "support@plugdesk.test".into() },
        to: vec![Address { name: Some("Jürgen Müller".into()), email: "juergen@example.de".into() }],
        subject: "Re: [#1042] Grüße aus Köln".into(),
        text: "Hallo Herr Müller,\n.\n.ein Punkt am Zeilenanfang\nIhr Support".into(),
        html: Some("<p>Hallo Herr Müller</p>".into()),
        in_reply_to: Some("de-1@example.de".into()),
        references: vec!["de-1@example.de".into()],
        date_unix: 1_771_581_845,
        message_id_domain: "plugdesk.test".into(),
        message_id_local: local.into(),
        ..Default::default()
    }
}

#[test]
fn smtp_send_composed_message() {
    let fx = Fixture::start("smtp", &["--smtp-auth-without-tls"]);
    let (id, raw) = compose(&outgoing("t1042.m2")).expect("compose");
    let mut client = fx.smtp();
    let report = client.send("support@plugdesk.test", &["juergen@example.de".to_owned()], &raw).expect("send");
    assert_eq!(report.accepted, ["juergen@example.de"]);
    assert!(report.rejected.is_empty());
    client.quit().expect("QUIT");
    let stored = std::fs::read(fx.dir.join("smtp-out/0001.eml")).expect("smtp-out/0001.eml");
    assert_eq!(stored, raw, "the sink stores the message byte for byte");
    let parsed = parse(&stored, &Limits::default());
    assert_eq!(parsed.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(parsed.subject.as_deref(), Some("Re: [#1042] Grüße aus Köln"));
    assert_eq!(parsed.text.as_deref(), Some("Hallo Herr Müller,\n.\n.ein Punkt am Zeilenanfang\nIhr Support"));
    assert_eq!(parsed.to[0].name.as_deref(), Some("Jürgen Müller"));
    let index = std::fs::read_to_string(fx.dir.join("smtp-out/index.json")).expect("index");
    assert!(index.contains("\"auth_user\": \"support@plugdesk.test\""), "{index}");
}

#[test]
fn smtp_scripted_temporary_then_permanent_failure() {
    let fx = Fixture::start("smtpfail", &["--smtp-auth-without-tls"]);
    std::fs::write(fx.dir.join("smtp-script.json"), "[\"451\", \"550\"]").expect("script");
    let (_, raw) = compose(&outgoing("t1042.m3")).expect("compose");
    let to = ["juergen@example.de".to_owned()];
    let mut client = fx.smtp();
    let first = client.send("support@plugdesk.test", &to, &raw).unwrap_err();
    assert!(matches!(first, SmtpError::Retryable { code: 451, .. }), "{first}");
    println!("{first}");
    let second = client.send("support@plugdesk.test", &to, &raw).unwrap_err();
    assert!(matches!(second, SmtpError::Permanent { code: 550, .. }), "{second}");
    println!("{second}");
    let third = client.send("support@plugdesk.test", &to, &raw).expect("third send");
    assert_eq!(third.accepted, to);
    client.quit().expect("QUIT");
    let left = std::fs::read_to_string(fx.dir.join("smtp-script.json")).expect("script left");
    assert_eq!(left.trim(), "[]");
}

/// The channel's settings for this fixture (plain connections, as the fixture's TLS certificate
/// is one the test transport does not speak), with `extra` on top.
fn channel_settings(fx: &Fixture, extra: &[(&str, Value)]) -> Settings {
    let mut pairs: Vec<(String, Value)> = vec![
        ("address".into(), json!(fx.user)),
        ("from_name".into(), json!("Plugdesk Support")),
        ("imap_host".into(), json!("127.0.0.1")),
        ("imap_port".into(), json!(fx.imap)),
        ("imap_security".into(), json!("none")),
        ("smtp_host".into(), json!("127.0.0.1")),
        ("smtp_port".into(), json!(fx.smtp)),
        ("smtp_security".into(), json!("none")),
        ("smtp_user".into(), json!(fx.user)),
    ];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Settings::from_lookup(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).expect("settings")
}

/// One poll as the plugin runs it, with what it logged.
fn poll(fx: &Fixture, settings: &Settings, cursor: Option<&str>) -> (PollOutcome, Vec<String>) {
    let imap = settings.imap.as_ref().expect("imap settings");
    let mut logged = Vec::new();
    let connect = |tls: bool| if tls { Err("no TLS here".to_owned()) } else { Ok(fx.transport(fx.imap)) };
    let outcome = mailbox::poll(imap, settings, cursor, connect, &mut |level: Level, line: &str| {
        logged.push(format!("{level:?}: {line}"))
    })
    .unwrap_or_else(|e| panic!("poll failed: {e}"));
    (outcome, logged)
}

/// The UIDs and whether each is seen, in `mailbox`.
fn seen_flags(fx: &Fixture, mailbox: &str) -> Vec<(u32, bool)> {
    let mut client = fx.imap();
    client.examine(mailbox).expect("EXAMINE");
    let all = client.fetch_batch(1, 10_000, 1 << 30).expect("fetch");
    client.logout().expect("LOGOUT");
    all.iter().map(|m| (m.uid, m.flags.iter().any(|f| f == "\\Seen"))).collect()
}

#[test]
fn plugin_poll_takes_mail_in_batches_and_marks_it_seen_at_the_next_poll() {
    let fx = Fixture::start("plugin-poll", &[]);
    let mut messages = three_messages();
    messages.push(
        b"From: support@plugdesk.test\r\nTo: anna@example.com\r\nMessage-ID: <plugdesk.7.42@plugdesk.test>\r\n\
          Subject: [#7] Copy of our reply\r\n\r\nSent by the channel.\r\n"
            .to_vec(),
    );
    fx.deliver(&messages.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let settings = channel_settings(&fx, &[("batch_messages", json!(2))]);

    let (first, _) = poll(&fx, &settings, None);
    let ids: Vec<&str> = first.messages.iter().map(|m| m.external_id.as_str()).collect();
    assert_eq!(ids, ["a-1@example.com", "de-1@example.de"]);
    assert!(first.more, "two of four: the batch was cut");
    let german = &first.messages[1];
    assert_eq!(german.subject.as_deref(), Some("Grüße aus Köln"));
    assert_eq!(german.text, "Sehr geehrte Damen und Herren,\nmein Drucker druckt nicht. Grüße");
    assert_eq!(german.raw.as_deref(), Some(messages[1].as_slice()));
    assert!(seen_flags(&fx, "INBOX").iter().all(|(_, seen)| !seen), "nothing is marked before the host stored it");

    let (second, logged) = poll(&fx, &settings, first.cursor.as_deref());
    assert_eq!(second.messages.len(), 1, "our own copy is skipped: {logged:?}");
    let bob = &second.messages[0];
    assert_eq!((bob.external_id.as_str(), bob.ticket_number), ("b-2@example.org", Some(1042)));
    assert_eq!(bob.replies_to, ["t1042.m1@plugdesk.test"]);
    assert!(logged.iter().any(|l| l.starts_with("Info: skipped message plugdesk.7.42@plugdesk.test")), "{logged:?}");
    assert!(!second.more);
    let flags = seen_flags(&fx, "INBOX");
    assert_eq!(flags.iter().map(|(_, seen)| *seen).collect::<Vec<_>>(), [true, true, false, false]);

    let (third, _) = poll(&fx, &settings, second.cursor.as_deref());
    assert!(third.messages.is_empty() && !third.more);
    assert_eq!(third.cursor, second.cursor, "past the skipped message, nothing new");
    assert!(seen_flags(&fx, "INBOX").iter().all(|(_, seen)| *seen));
}

#[test]
fn plugin_poll_moves_mail_into_a_mailbox_it_creates() {
    let fx = Fixture::start("plugin-move", &[]);
    let messages = three_messages();
    fx.deliver(&messages.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let settings = channel_settings(&fx, &[("imap_after", json!("move")), ("imap_move_to", json!("Erledigt/2026"))]);
    let (first, _) = poll(&fx, &settings, None);
    assert_eq!(first.messages.len(), 3);
    let (second, _) = poll(&fx, &settings, first.cursor.as_deref());
    assert!(second.messages.is_empty());
    assert!(seen_flags(&fx, "INBOX").is_empty(), "moved out of the inbox");
    assert_eq!(seen_flags(&fx, "Erledigt/2026").len(), 3);
    // New mail after the move is found after the cursor as before.
    fx.deliver(&[b"From: carla@example.net\r\nMessage-ID: <c-1@example.net>\r\nSubject: Neu\r\n\r\nHallo\r\n"]);
    let (third, _) = poll(&fx, &settings, second.cursor.as_deref());
    assert_eq!(third.messages.iter().map(|m| m.external_id.as_str()).collect::<Vec<_>>(), ["c-1@example.net"]);
}

#[test]
fn plugin_polls_2000_messages_in_batches() {
    let fx = Fixture::start("plugin-batch", &[]);
    let filled = fx.mailserver(&["fill", "--count", "2000"]);
    assert!(filled.contains("\"filled\": 2000"), "{filled}");
    let settings = channel_settings(&fx, &[("imap_after", json!("keep"))]);
    let started = Instant::now();
    let (mut cursor, mut count, mut polls, mut bytes) = (None, 0usize, 0, 0usize);
    loop {
        let (outcome, logged) = poll(&fx, &settings, cursor.as_deref());
        assert!(logged.iter().all(|l| !l.starts_with("Warn")), "{logged:?}");
        assert!(outcome.messages.len() <= 200);
        count += outcome.messages.len();
        bytes += outcome.messages.iter().map(|m| m.raw.as_ref().map_or(0, Vec::len)).sum::<usize>();
        polls += 1;
        cursor = outcome.cursor;
        if !outcome.more {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(count, 2000);
    assert_eq!(polls, 10);
    println!(
        "polled and converted {count} messages ({:.1} MB) in {polls} polls in {elapsed:.2} s: {:.0} msg/s",
        bytes as f64 / 1e6,
        count as f64 / elapsed
    );
}

fn reply(automatic: bool) -> OutboundMessage {
    OutboundMessage {
        id: "77".into(),
        ticket_number: 1042,
        recipients: vec![Identity { kind: "email".into(), address: "juergen@example.de".into() }],
        recipient_name: Some("Jürgen Müller".into()),
        conversation: Some("de-1@example.de".into()),
        subject: Some("Grüße aus Köln".into()),
        text: "Hallo Herr Müller,\n.\nIhr Support".into(),
        html: None,
        attachments: vec![],
        in_reply_to: Some("de-1@example.de".into()),
        references: vec!["de-1@example.de".into()],
        automatic,
    }
}

/// Composes and submits `message` as the plugin's `send` does; returns the Message-ID.
fn send(fx: &Fixture, settings: &Settings, message: &OutboundMessage) -> Result<String, SendError> {
    let smtp = settings.smtp.as_ref().expect("smtp settings");
    let recipient = message.recipient("email").expect("an e-mail recipient");
    let (id, bytes) = outbound::compose_reply(message, recipient, settings, 1_771_581_845_000)?;
    let connect = |tls: bool| if tls { Err("no TLS here".to_owned()) } else { Ok(fx.transport(fx.smtp)) };
    outbound::submit(smtp, settings, connect, recipient, &bytes)?;
    Ok(id)
}

#[test]
fn plugin_send_reaches_the_server_and_sorts_its_refusals() {
    let fx = Fixture::start("plugin-send", &["--smtp-auth-without-tls"]);
    let settings = channel_settings(&fx, &[]);
    let id = send(&fx, &settings, &reply(true)).expect("send");
    assert_eq!(id, "plugdesk.1042.77@plugdesk.test");
    let stored = std::fs::read(fx.dir.join("smtp-out/0001.eml")).expect("smtp-out/0001.eml");
    let parsed = parse(&stored, &Limits::default());
    assert_eq!(parsed.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(parsed.subject.as_deref(), Some("Re: [#1042] Grüße aus Köln"));
    assert_eq!(parsed.in_reply_to, ["de-1@example.de"]);
    assert_eq!(parsed.header("Auto-Submitted"), Some("auto-replied"));
    assert_eq!(parsed.text.as_deref(), Some("Hallo Herr Müller,\n.\nIhr Support"));
    let index = std::fs::read_to_string(fx.dir.join("smtp-out/index.json")).expect("index");
    assert!(index.contains("\"auth_user\": \"support@plugdesk.test\""), "{index}");
    assert!(index.contains("\"mail_from\": \"support@plugdesk.test\""), "{index}");
    assert!(index.contains("\"helo\": \"plugdesk.test\""), "{index}");

    std::fs::write(fx.dir.join("smtp-script.json"), "[\"451\", \"550\"]").expect("script");
    let later = send(&fx, &settings, &reply(false)).unwrap_err();
    let SendError::Retryable(m) = &later else { panic!("{later:?}") };
    assert!(m.starts_with(&format!("smtp 127.0.0.1:{}: SMTP DATA: temporary failure: 451", fx.smtp)), "{m}");
    let refused = send(&fx, &settings, &reply(false)).unwrap_err();
    let SendError::Permanent(m) = &refused else { panic!("{refused:?}") };
    assert!(m.starts_with(&format!("smtp 127.0.0.1:{}: SMTP DATA: rejected: 550", fx.smtp)), "{m}");
    // The retry of the first goes through with the same Message-ID.
    assert_eq!(send(&fx, &settings, &reply(false)).expect("retry"), id);
}
