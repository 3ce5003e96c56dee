use super::*;
use crate::testing::Scripted;

const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 STARTTLS LITERAL+ ID] Plugdesk test server ready\r\n";

/// The script of a greeting and a LOGIN (tag A0001) that announces `caps`.
fn login_script(chunk: usize, caps: &str) -> Scripted {
    Scripted::new(chunk)
        .server(GREETING)
        .secret("A0001 LOGIN \"support@example.com\" {{secret_quoted:imap_password}}\r\n")
        .server(format!("A0001 OK [CAPABILITY {caps}] Logged in\r\n"))
}

fn logged_in(script: Scripted) -> ImapClient<Scripted> {
    let mut client = ImapClient::connect(script, ImapConfig::default()).unwrap();
    client.login("support@example.com", "imap_password").unwrap();
    client
}

const SELECT_OK: &str = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
    * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n\
    * 3 EXISTS\r\n\
    * 0 RECENT\r\n\
    * OK [UIDVALIDITY 1700000000] UIDs valid\r\n\
    * OK [UIDNEXT 14] Predicted next UID\r\n\
    A0002 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n";

#[test]
fn greeting_capability_login_select() {
    for chunk in [1, 3, 7, 64, 4096] {
        let script = login_script(chunk, "IMAP4rev1 MOVE UIDPLUS")
            .client("A0002 SELECT INBOX\r\n")
            .server(SELECT_OK)
            .client("A0003 LOGOUT\r\n")
            .server("* BYE Logging out\r\nA0003 OK Logout completed.\r\n");
        let mut client = ImapClient::connect(script, ImapConfig::default()).unwrap();
        assert!(client.has_capability("starttls"));
        client.login("support@example.com", "imap_password").unwrap();
        assert!(client.is_authenticated());
        assert!(client.has_capability("MOVE") && !client.has_capability("STARTTLS"));
        let info = client.select("INBOX").unwrap();
        assert_eq!(info, MailboxInfo { uid_validity: 1_700_000_000, uid_next: Some(14), exists: 3, read_only: false });
        let transport = client.logout().unwrap();
        assert!(transport.finished(), "chunk {chunk}: {:?}", transport.remaining());
    }
}

#[test]
fn greeting_bye_and_preauth() {
    let err = ImapClient::connect(Scripted::new(5).server("* BYE Too many connections\r\n"), ImapConfig::default())
        .err()
        .unwrap();
    assert_eq!(err, ImapError::Bye { command: "greeting".into(), text: "Too many connections".into() });
    assert_eq!(err.to_string(), "IMAP greeting: the server said BYE: Too many connections");
    let client =
        ImapClient::connect(Scripted::new(5).server("* PREAUTH welcome back\r\n"), ImapConfig::default()).unwrap();
    assert!(client.is_authenticated());
    let err = ImapClient::connect(Scripted::new(5).server("220 smtp.example.com ESMTP\r\n"), ImapConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, ImapError::Protocol { .. }), "{err}");
    let err = ImapClient::connect(Scripted::new(5).close(), ImapConfig::default()).err().unwrap();
    assert_eq!(err, ImapError::Closed { command: "greeting".into() });
}

#[test]
fn starttls_then_capability_again() {
    let script = Scripted::new(4)
        .server("* OK ready\r\n")
        .client("A0001 CAPABILITY\r\n")
        .server("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\nA0001 OK done\r\n")
        .client("A0002 STARTTLS\r\n")
        .server("A0002 OK Begin TLS negotiation now.\r\n")
        .tls()
        .client("A0003 CAPABILITY\r\n")
        .server("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nA0003 OK done\r\n");
    let mut client = ImapClient::connect(script, ImapConfig::default()).unwrap();
    client.starttls().unwrap();
    assert!(!client.has_capability("STARTTLS"));
    assert!(!client.has_capability("LOGINDISABLED"));
    assert!(client.has_capability("AUTH=PLAIN"));
    assert!(client.into_transport().tls);

    let script = Scripted::new(4)
        .server("* OK ready\r\n")
        .client("A0001 CAPABILITY\r\n")
        .server("* CAPABILITY IMAP4rev1 LOGINDISABLED\r\nA0001 OK done\r\n");
    let mut client = ImapClient::connect(script, ImapConfig::default()).unwrap();
    let err = client.starttls().unwrap_err();
    assert!(matches!(err, ImapError::Unsupported { ref command, .. } if command == "STARTTLS"), "{err}");
    let err = client.login("support@example.com", "imap_password").unwrap_err();
    assert!(err.to_string().contains("LOGINDISABLED"), "{err}");
}

#[test]
fn login_refused_and_bad_arguments() {
    let script = Scripted::new(9)
        .server(GREETING)
        .secret("A0001 LOGIN \"sup\\\"port\\\\x\" {{secret_quoted:pw}}\r\n")
        .server("A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
    let mut client = ImapClient::connect(script, ImapConfig::default()).unwrap();
    let err = client.login("sup\"port\\x", "pw").unwrap_err();
    assert_eq!(err.to_string(), "IMAP LOGIN refused (NO): [AUTHENTICATIONFAILED] Authentication failed.");
    assert!(matches!(client.login("a\r\nb", "pw"), Err(ImapError::InvalidArgument { .. })));
    assert!(matches!(client.login("a", "pw}}{{secret:other"), Err(ImapError::InvalidArgument { .. })));
}

#[test]
fn no_on_select() {
    let script = login_script(6, "IMAP4rev1")
        .client("A0002 SELECT \"Archiv/Gel&APY-scht\"\r\n")
        .server("A0002 NO Mailbox doesn't exist: Archiv/Gel&APY-scht (0.001 + 0.000 secs).\r\n");
    let mut client = logged_in(script);
    let err = client.select("Archiv/Gelöscht").unwrap_err();
    assert_eq!(
        err,
        ImapError::No {
            command: "SELECT".into(),
            text: "Mailbox doesn't exist: Archiv/Gel&APY-scht (0.001 + 0.000 secs).".into()
        }
    );
    assert!(client.selected().is_none());
}

#[test]
fn select_without_uidvalidity_is_refused() {
    let script = login_script(6, "IMAP4rev1")
        .client("A0002 EXAMINE INBOX\r\n")
        .server("* 2 EXISTS\r\nA0002 OK [READ-ONLY] done\r\n");
    let mut client = logged_in(script);
    let err = client.examine("inbox").unwrap_err();
    assert!(err.to_string().contains("UIDVALIDITY"), "{err}");
}

const MSG1: &str = "From: Anna <anna@example.com>\r\nSubject: Hallo\r\n\r\nErste Nachricht\r\n";
const MSG2: &str = "From: Bob <bob@example.com>\r\nSubject: Drucker\r\n\r\nDer Drucker {5}\r\n) druckt nicht.\r\n";

fn selected(chunk: usize, caps: &str) -> Scripted {
    login_script(chunk, caps).client("A0002 SELECT INBOX\r\n").server(SELECT_OK)
}

#[test]
fn fetch_batch_literals_in_odd_chunks_with_interleaved_updates() {
    for chunk in [1, 2, 5, 13, 100, 65536] {
        let body = format!(
            "* 11 EXPUNGE\r\n\
             * 1 FETCH (UID 11 FLAGS (\\Seen) RFC822.SIZE {} BODY[] {{{}}}\r\n{MSG1})\r\n\
             * 3 EXISTS\r\n\
             * 2 FETCH (FLAGS (\\Seen $Important) UID 13)\r\n\
             * 2 FETCH (UID 13 RFC822.SIZE {} FLAGS () BODY[] {{{}+}}\r\n{MSG2} INTERNALDATE \"01-Jan-2026 10:00:00 +0000\")\r\n\
             * 3 FETCH (UID 14 FLAGS (\\Recent))\r\n\
             * 1 FETCH (UID 11 FLAGS (\\Seen \\Answered))\r\n\
             A0005 OK Fetch completed.\r\n",
            MSG1.len(),
            MSG1.len(),
            MSG2.len(),
            MSG2.len()
        );
        let script = selected(chunk, "IMAP4rev1")
            .client("A0003 UID SEARCH UID 10:*\r\n")
            .server("* SEARCH 11 13\r\nA0003 OK Search completed\r\n")
            .client("A0004 UID FETCH 11,13 (UID RFC822.SIZE)\r\n")
            .server(format!(
                "* 1 FETCH (UID 11 RFC822.SIZE {})\r\n* 2 FETCH (UID 13 RFC822.SIZE {})\r\nA0004 OK done\r\n",
                MSG1.len(),
                MSG2.len()
            ))
            .client("A0005 UID FETCH 11,13 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
            .server(body);
        let mut client = logged_in(script);
        client.select("INBOX").unwrap();
        let messages = client.fetch_batch(10, 100, 1 << 20).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].uid, 11);
        assert_eq!(messages[0].raw, MSG1.as_bytes());
        // A flag update after the body replaces its flags.
        assert_eq!(messages[0].flags, ["\\Seen", "\\Answered"]);
        assert_eq!(messages[1].uid, 13);
        assert_eq!(messages[1].raw, MSG2.as_bytes(), "chunk {chunk}");
        // The flag update that came before the body is replaced by the body's own FLAGS ().
        assert!(messages[1].flags.is_empty());
        assert_eq!(client.selected().map(|s| s.exists), Some(3));
        let cursor = Cursor { uid_validity: 1_700_000_000, last_uid: 9 }.advanced(&messages);
        assert_eq!(cursor.to_string(), "v:1700000000:13");
        assert!(client.into_transport().finished());
    }
}

#[test]
fn fetch_batch_quoted_body_and_limits() {
    let script = selected(11, "IMAP4rev1")
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 1 2 3\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 1:2 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 1 RFC822.SIZE 60)\r\n* 2 FETCH (UID 2 RFC822.SIZE 50)\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server("* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] \"Subject: \\\"x\\\"\")\r\nA0005 OK done\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    // Two messages asked for, but 60 + 50 bytes exceed the 100 allowed: only the first.
    let messages = client.fetch_batch(0, 2, 100).unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].raw, b"Subject: \"x\"");
}

#[test]
fn fetch_batch_nothing_new() {
    // `14:*` matches the highest UID (13) when there is nothing newer: filtered out.
    let script =
        selected(3, "IMAP4rev1").client("A0003 UID SEARCH UID 14:*\r\n").server("* SEARCH 13\r\nA0003 OK done\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    assert!(client.fetch_batch(14, 10, 1000).unwrap().is_empty());
}

#[test]
fn bye_mid_fetch_returns_nothing() {
    let script = selected(9, "IMAP4rev1")
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 11 13\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 11,13 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 11 RFC822.SIZE 66)\r\n* 2 FETCH (UID 13 RFC822.SIZE 76)\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 11,13 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server(format!("* 1 FETCH (UID 11 BODY[] {{{}}}\r\n{MSG1})\r\n", MSG1.len()))
        .server("* BYE Server shutting down\r\n")
        .close();
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    let err = client.fetch_batch(1, 10, 1 << 20).unwrap_err();
    assert_eq!(err, ImapError::Bye { command: "UID FETCH".into(), text: "Server shutting down".into() });
}

#[test]
fn connection_dropped_inside_literal() {
    let script = selected(9, "IMAP4rev1")
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 11\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 11 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 11 RFC822.SIZE 66)\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 11 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server(format!("* 1 FETCH (UID 11 BODY[] {{{}}}\r\n{}", MSG1.len(), &MSG1[..20]))
        .close();
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    let err = client.fetch_batch(1, 10, 1 << 20).unwrap_err();
    assert_eq!(err, ImapError::Closed { command: "UID FETCH".into() });
}

#[test]
fn no_mid_fetch_is_an_error() {
    let script = selected(9, "IMAP4rev1")
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 11\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 11 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 11 RFC822.SIZE 66)\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 11 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server("* 1 FETCH (UID 11 BODY[] {3}\r\nabc)\r\nA0005 NO Some messages could not be fetched\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    let err = client.fetch_batch(1, 10, 1 << 20).unwrap_err();
    assert_eq!(err.to_string(), "IMAP UID FETCH refused (NO): Some messages could not be fetched");
}

#[test]
fn hostile_long_line_is_bounded() {
    let mut long = String::from("* OK ");
    long.push_str(&"x".repeat(100 * 1024));
    long.push_str("\r\n");
    let config = ImapConfig { max_line: 8 * 1024, ..ImapConfig::default() };
    let script = Scripted::new(4096).server(long);
    let err = ImapClient::connect(script, config).err().unwrap();
    assert_eq!(err.to_string(), "IMAP greeting: protocol error: response line longer than 8192 bytes");
    // With the default limit (64 KiB) as well, and without a line end ever coming.
    let script = Scripted::new(1000).server("* OK ".to_owned() + &"y".repeat(100 * 1024));
    let err = ImapClient::connect(script, ImapConfig::default()).err().unwrap();
    assert!(err.to_string().contains("longer than 65536 bytes"), "{err}");
}

#[test]
fn literal_over_the_limit_is_refused() {
    let config = ImapConfig { max_literal: 1000, ..ImapConfig::default() };
    let script = Scripted::new(50)
        .server(GREETING)
        .secret("A0001 LOGIN \"support@example.com\" {{secret_quoted:imap_password}}\r\n")
        .server("A0001 OK done\r\n")
        .client("A0002 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 1\r\nA0002 OK done\r\n")
        .client("A0003 UID FETCH 1 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 1 RFC822.SIZE 10)\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server("* 1 FETCH (UID 1 BODY[] {99999999999}\r\n");
    let mut client = ImapClient::connect(script, config).unwrap();
    client.login("support@example.com", "imap_password").unwrap();
    let err = client.fetch_batch(1, 1, 100).unwrap_err();
    assert!(err.to_string().contains("larger than the limit of 1000"), "{err}");
}

#[test]
fn mark_seen_and_move_with_move() {
    let script = selected(8, "IMAP4rev1 MOVE")
        .client("A0003 UID STORE 3:5,9 +FLAGS.SILENT (\\Seen)\r\n")
        .server("A0003 OK Store completed.\r\n")
        .client("A0004 UID MOVE 4 \"Erledigt\"\r\n")
        .server("* OK [COPYUID 1 4 1] Moved UIDs.\r\n* 2 EXPUNGE\r\nA0004 OK Move completed.\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    client.mark_seen(&[9, 5, 3, 4, 4]).unwrap();
    client.move_to(&[4], "Erledigt").unwrap();
    assert_eq!(client.selected().map(|s| s.exists), Some(2));
    assert!(client.into_transport().finished());
}

#[test]
fn move_without_move_capability() {
    let script = selected(8, "IMAP4rev1 UIDPLUS")
        .client("A0003 UID COPY 4 \"Done\"\r\n")
        .server("A0003 OK [COPYUID 1 4 1] Copy completed.\r\n")
        .client("A0004 UID STORE 4 +FLAGS.SILENT (\\Deleted)\r\n")
        .server("A0004 OK Store completed.\r\n")
        .client("A0005 UID EXPUNGE 4\r\n")
        .server("* 2 EXPUNGE\r\nA0005 OK Expunge completed.\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    client.move_to(&[4], "Done").unwrap();
    assert!(client.into_transport().finished());

    let script = selected(8, "IMAP4rev1")
        .client("A0003 UID COPY 4 \"Done\"\r\n")
        .server("A0003 OK Copy completed.\r\n")
        .client("A0004 UID STORE 4 +FLAGS.SILENT (\\Deleted)\r\n")
        .server("A0004 OK Store completed.\r\n")
        .client("A0005 EXPUNGE\r\n")
        .server("* 2 EXPUNGE\r\nA0005 OK Expunge completed.\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    client.move_to(&[4], "Done").unwrap();
    assert!(client.into_transport().finished());

    let script = selected(8, "IMAP4rev1")
        .client("A0003 UID COPY 4 \"Nowhere\"\r\n")
        .server("A0003 NO [TRYCREATE] Mailbox doesn't exist: Nowhere\r\n");
    let mut client = logged_in(script);
    client.select("INBOX").unwrap();
    let err = client.move_to(&[4], "Nowhere").unwrap_err();
    assert_eq!(err.to_string(), "IMAP UID COPY refused (NO): [TRYCREATE] Mailbox doesn't exist: Nowhere");
}

#[test]
fn create_tolerates_existing() {
    let script = login_script(8, "IMAP4rev1")
        .client("A0002 CREATE \"Done\"\r\n")
        .server("A0002 NO [ALREADYEXISTS] Mailbox already exists\r\n");
    let mut client = logged_in(script);
    client.create("Done").unwrap();
}

#[test]
fn cursor_text_and_uidvalidity_change() {
    let c = Cursor::parse("v:1700000000:42").unwrap();
    assert_eq!(c, Cursor { uid_validity: 1_700_000_000, last_uid: 42 });
    assert_eq!(c.to_string(), "v:1700000000:42");
    assert!(Cursor::parse("1700000000:42").is_err());
    assert!(Cursor::parse("v:x:42").is_err());
    assert!(Cursor::parse("v:1:2:3").is_err());
    assert_eq!(Cursor::resume(Some(&c), 1_700_000_000), Resume::Continue { from_uid: 43 });
    assert_eq!(Cursor::resume(None, 5).from_uid(), 1);
    let restart = Cursor::resume(Some(&c), 1_800_000_000);
    assert_eq!(restart.from_uid(), 1);
    let Resume::Restart { reason, .. } = restart else { panic!("expected a restart") };
    assert!(reason.contains("1700000000") && reason.contains("1800000000"), "{reason}");

    // A SELECT that reports another UIDVALIDITY than the stored cursor's.
    let script = login_script(8, "IMAP4rev1").client("A0002 SELECT INBOX\r\n").server(SELECT_OK);
    let mut client = logged_in(script);
    let info = client.select("INBOX").unwrap();
    let stored = Cursor { uid_validity: 99, last_uid: 500 };
    assert!(matches!(Cursor::resume(Some(&stored), info.uid_validity), Resume::Restart { from_uid: 1, .. }));
}

#[test]
fn uid_sets_and_mailbox_names() {
    assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    assert_eq!(mailbox_arg("X", "Team & Co").unwrap(), "\"Team &- Co\"");
    assert_eq!(mailbox_arg("X", "日本語").unwrap(), "\"&ZeVnLIqe-\"");
    assert!(mailbox_arg("X", "a\nb").is_err());
}

#[test]
fn long_search_result_within_its_own_limit() {
    let uids: Vec<String> = (1..=20_000).map(|u| u.to_string()).collect();
    let script = login_script(4096, "IMAP4rev1")
        .client("A0002 UID SEARCH UID 1:*\r\n")
        .server(format!("* SEARCH {}\r\nA0002 OK done\r\n", uids.join(" ")))
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server(format!("* SEARCH {}\r\n", "1 ".repeat(5_000_000)));
    let mut client = logged_in(script);
    assert_eq!(client.uid_search_since(1).unwrap().len(), 20_000);
    let err = client.uid_search_since(1).unwrap_err();
    assert!(err.to_string().contains("longer than 8388608 bytes"), "{err}");
}

#[test]
fn range_search_and_an_oversize_first_message() {
    let config = ImapConfig { max_literal: 100, ..ImapConfig::default() };
    let script = selected(6, "IMAP4rev1")
        .client("A0003 UID SEARCH UID 1:9 UNSEEN\r\n")
        .server("* SEARCH 4 12\r\nA0003 OK done\r\n")
        .client("A0004 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 5\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 5 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 5 RFC822.SIZE 5000)\r\nA0005 OK done\r\n")
        .client("A0006 UID FETCH 5 (UID BODY.PEEK[HEADER])\r\n")
        .server("* 1 FETCH (UID 5 BODY[HEADER] {14}\r\nSubject: x\r\n\r\n)\r\nA0006 OK done\r\n");
    let mut client = ImapClient::connect(script, config).unwrap();
    client.login("support@example.com", "imap_password").unwrap();
    client.select("INBOX").unwrap();
    // Nothing handed over yet: no command at all.
    assert!(client.uid_search_range(1, 0, true).unwrap().is_empty());
    // A server answering outside the range is not believed.
    assert_eq!(client.uid_search_range(1, 9, true).unwrap(), [4]);
    let err = client.fetch_batch(1, 10, 1000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IMAP UID FETCH: protocol error: message UID 5 has 5000 bytes, more than the limit of 100 bytes"
    );
    assert!(client.into_transport().finished());
}
