use serde_json::{Value, json};

use super::*;
use crate::testing::Scripted;

const CUSTOMER: &str =
    "From: Anna <anna@example.com>\r\nMessage-ID: <a-1@example.com>\r\nSubject: Login\r\n\r\nHilfe\r\n";
const OWN: &str = "From: support@plugdesk.example\r\nMessage-ID: <plugdesk.1.2@plugdesk.example>\r\n\r\nCopy\r\n";

const SELECT: &str = "* 2 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n* OK [UIDNEXT 12] next\r\n\
    A0002 OK [READ-WRITE] Select completed\r\n";

fn settings(extra: &[(&str, Value)]) -> Settings {
    let mut pairs =
        vec![("address".to_owned(), json!("support@plugdesk.example")), ("imap_host".to_owned(), json!("imap.test"))];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Settings::from_lookup(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).unwrap()
}

/// Greeting, LOGIN (A0001) and SELECT INBOX (A0002).
fn selected() -> Scripted {
    Scripted::new(13)
        .server("* OK [CAPABILITY IMAP4rev1 MOVE] ready\r\n")
        .secret("A0001 LOGIN \"support@plugdesk.example\" {{secret_quoted:imap_password}}\r\n")
        .server("A0001 OK logged in\r\n")
        .client("A0002 SELECT INBOX\r\n")
        .server(SELECT)
}

/// The fetch of UIDs 10 and 11 (CUSTOMER, OWN) from `tag` on, and LOGOUT.
fn fetch_two(script: Scripted, from: u32, tag: u32) -> Scripted {
    let t = |n: u32| format!("A{:04}", tag + n);
    script
        .client(format!("{} UID SEARCH UID {from}:*\r\n", t(0)))
        .server(format!("* SEARCH 10 11\r\n{} OK done\r\n", t(0)))
        .client(format!("{} UID FETCH 10:11 (UID RFC822.SIZE)\r\n", t(1)))
        .server(format!(
            "* 1 FETCH (UID 10 RFC822.SIZE {})\r\n* 2 FETCH (UID 11 RFC822.SIZE {})\r\n{} OK done\r\n",
            CUSTOMER.len(),
            OWN.len(),
            t(1)
        ))
        .client(format!("{} UID FETCH 10:11 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n", t(2)))
        .server(format!(
            "* 1 FETCH (UID 10 FLAGS () BODY[] {{{}}}\r\n{CUSTOMER})\r\n* 2 FETCH (UID 11 FLAGS () BODY[] {{{}}}\r\n{OWN})\r\n\
             {} OK done\r\n",
            CUSTOMER.len(),
            OWN.len(),
            t(2)
        ))
        .client(format!("{} LOGOUT\r\n", t(3)))
        .server(format!("* BYE bye\r\n{} OK done\r\n", t(3)))
}

fn poll_with(
    script: Scripted,
    s: &Settings,
    cursor: Option<&str>,
) -> (Result<PollOutcome, String>, Vec<(Level, String)>, bool) {
    let mut logged = Vec::new();
    let mut finished = false;
    let imap = s.imap.clone().unwrap();
    let result = {
        let connect = |tls: bool| {
            assert!(tls, "imap_security defaults to tls");
            Ok(Recorder { script, finished: &mut finished })
        };
        poll(&imap, s, cursor, connect, &mut |l, m| logged.push((l, m.to_owned())))
    };
    (result, logged, finished)
}

/// A scripted transport that reports, when dropped, whether its script was played to the end.
struct Recorder<'a> {
    script: Scripted,
    finished: &'a mut bool,
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        *self.finished = self.script.finished();
    }
}

impl Transport for Recorder<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.script.write(data)
    }
    fn write_secret(&mut self, template: &str) -> Result<(), String> {
        self.script.write_secret(template)
    }
    fn read(&mut self, max: usize, timeout_ms: u32) -> Result<Vec<u8>, String> {
        self.script.read(max, timeout_ms)
    }
    fn start_tls(&mut self) -> Result<(), String> {
        self.script.start_tls()
    }
}

#[test]
fn first_poll_takes_everything_and_moves_past_skipped_mail() {
    let (result, logged, finished) = poll_with(fetch_two(selected(), 1, 3), &settings(&[]), None);
    let outcome = result.unwrap();
    assert!(finished);
    assert_eq!(outcome.messages.len(), 1, "our own message is skipped");
    assert_eq!(outcome.messages[0].external_id, "a-1@example.com");
    assert_eq!(outcome.cursor.as_deref(), Some("v:7:11"), "past the skipped one too");
    assert!(!outcome.more);
    assert!(logged.iter().any(|(l, m)| *l == Level::Info && m.contains("plugdesk.1.2@plugdesk.example")));
}

#[test]
fn next_poll_marks_what_was_handed_over_seen_first() {
    let script = selected()
        .client("A0003 UID SEARCH UID 1:9 UNSEEN\r\n")
        .server("* SEARCH 8 9\r\nA0003 OK done\r\n")
        .client("A0004 UID STORE 8:9 +FLAGS.SILENT (\\Seen)\r\n")
        .server("A0004 OK done\r\n");
    let (result, _, finished) = poll_with(fetch_two(script, 10, 5), &settings(&[]), Some("v:7:9"));
    assert_eq!(result.unwrap().cursor.as_deref(), Some("v:7:11"));
    assert!(finished);
}

#[test]
fn move_creates_the_target_when_missing() {
    let script = selected()
        .client("A0003 UID SEARCH UID 1:9\r\n")
        .server("* SEARCH 9\r\nA0003 OK done\r\n")
        .client("A0004 UID MOVE 9 \"Erledigt\"\r\n")
        .server("A0004 NO [TRYCREATE] Mailbox doesn't exist: Erledigt\r\n")
        .client("A0005 CREATE \"Erledigt\"\r\n")
        .server("A0005 OK created\r\n")
        .client("A0006 UID MOVE 9 \"Erledigt\"\r\n")
        .server("* OK [COPYUID 3 9 1] moved\r\n* 1 EXPUNGE\r\nA0006 OK done\r\n");
    let s = settings(&[("imap_after", json!("move")), ("imap_move_to", json!("Erledigt"))]);
    let (result, _, finished) = poll_with(fetch_two(script, 10, 7), &s, Some("v:7:9"));
    assert_eq!(result.unwrap().messages.len(), 1);
    assert!(finished);
}

#[test]
fn keep_touches_nothing_and_a_new_uidvalidity_starts_over() {
    let s = settings(&[("imap_after", json!("keep"))]);
    let (result, _, finished) = poll_with(fetch_two(selected(), 10, 3), &s, Some("v:7:9"));
    assert_eq!(result.unwrap().cursor.as_deref(), Some("v:7:11"));
    assert!(finished);
    // The mailbox was renumbered: nothing is marked, fetching starts at UID 1.
    let (result, logged, finished) = poll_with(fetch_two(selected(), 1, 3), &settings(&[]), Some("v:6:500"));
    assert_eq!(result.unwrap().cursor.as_deref(), Some("v:7:11"));
    assert!(finished);
    assert!(logged.iter().any(|(_, m)| m.contains("UIDVALIDITY changed from 6 to 7")), "{logged:?}");
}

#[test]
fn failures_name_the_server_and_keep_nothing() {
    let script = selected()
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 10\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 10 (UID RFC822.SIZE)\r\n")
        .server("* 1 FETCH (UID 10 RFC822.SIZE 60)\r\nA0004 OK done\r\n")
        .client("A0005 UID FETCH 10 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server("* 1 FETCH (UID 10 BODY[] {60}\r\nFrom: a@b.c\r\n")
        .close();
    let (result, _, _) = poll_with(script, &settings(&[]), None);
    assert_eq!(result.unwrap_err(), "imap imap.test:993: IMAP UID FETCH: the server closed the connection");
    let refused = Scripted::new(64)
        .server("* OK ready\r\n")
        .secret("A0001 LOGIN \"support@plugdesk.example\" {{secret_quoted:imap_password}}\r\n")
        .server("A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
    let (result, _, _) = poll_with(refused, &settings(&[]), None);
    assert_eq!(
        result.unwrap_err(),
        "imap imap.test:993: IMAP LOGIN refused (NO): [AUTHENTICATIONFAILED] Authentication failed."
    );
    let (result, _, _) = poll_with(Scripted::new(1), &settings(&[]), Some("garbage"));
    assert!(result.unwrap_err().ends_with("reset the channel's cursor to fetch from the start"));
}

#[test]
fn message_too_large_is_taken_in_as_its_header() {
    let header = "From: Anna <anna@example.com>\r\nMessage-ID: <big@example.com>\r\nSubject: Video\r\n\r\n";
    let script = selected()
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 10 11\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 10:11 (UID RFC822.SIZE)\r\n")
        .server(format!(
            "* 1 FETCH (UID 10 RFC822.SIZE {})\r\n* 2 FETCH (UID 11 RFC822.SIZE 60)\r\nA0004 OK done\r\n",
            MAX_FETCH_BYTES + 1
        ))
        .client("A0005 UID FETCH 10 (UID BODY.PEEK[HEADER])\r\n")
        .server(format!("* 1 FETCH (UID 10 BODY[HEADER] {{{}}}\r\n{header})\r\nA0005 OK done\r\n", header.len()))
        .client("A0006 LOGOUT\r\n")
        .server("A0006 OK bye\r\n");
    let (result, logged, finished) = poll_with(script, &settings(&[]), None);
    let outcome = result.unwrap();
    assert!(finished);
    assert_eq!(outcome.cursor.as_deref(), Some("v:7:10"));
    assert!(outcome.more, "UID 11 waits");
    assert_eq!(outcome.messages.len(), 1);
    let m = &outcome.messages[0];
    assert_eq!(
        (m.external_id.as_str(), m.subject.as_deref(), m.raw.as_ref()),
        ("big@example.com", Some("Video"), None)
    );
    assert!(m.text.starts_with("[This message (16 MB) was larger than the limit of 16 MB for fetching"), "{}", m.text);
    assert!(logged.iter().any(|(l, m)| *l == Level::Warn && m.contains("UID 10")));
}

#[test]
fn batch_cut_by_its_budget_says_more() {
    let script = selected()
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH 10 11\r\nA0003 OK done\r\n")
        .client("A0004 UID FETCH 10 (UID RFC822.SIZE)\r\n")
        .server(format!("* 1 FETCH (UID 10 RFC822.SIZE {})\r\nA0004 OK done\r\n", CUSTOMER.len()))
        .client("A0005 UID FETCH 10 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n")
        .server(format!("* 1 FETCH (UID 10 BODY[] {{{}}}\r\n{CUSTOMER})\r\nA0005 OK done\r\n", CUSTOMER.len()))
        .client("A0006 LOGOUT\r\n")
        .server("A0006 OK bye\r\n");
    let (result, _, finished) = poll_with(script, &settings(&[("batch_messages", json!(1))]), None);
    let outcome = result.unwrap();
    assert!(finished);
    assert_eq!((outcome.messages.len(), outcome.cursor.as_deref(), outcome.more), (1, Some("v:7:10"), true));
}

#[test]
fn empty_mailbox_still_gives_a_cursor() {
    let script = selected()
        .client("A0003 UID SEARCH UID 1:*\r\n")
        .server("* SEARCH\r\nA0003 OK done\r\n")
        .client("A0004 LOGOUT\r\n")
        .server("A0004 OK bye\r\n");
    let (result, logged, finished) = poll_with(script, &settings(&[]), None);
    let outcome = result.unwrap();
    assert!(finished && logged.is_empty());
    assert_eq!((outcome.messages.len(), outcome.cursor.as_deref(), outcome.more), (0, Some("v:7:0"), false));
}

#[test]
fn batch_outgrowing_the_output_budget_is_cut_after_what_fits() {
    let fetched = |uid: u32, raw: &str| FetchedMessage { uid, raw: raw.as_bytes().to_vec(), flags: vec![] };
    let other = CUSTOMER.replace("a-1@", "a-2@");
    let batch = vec![fetched(10, CUSTOMER), fetched(11, OWN), fetched(12, &other)];
    let s = settings(&[]);
    let mut log = |_: Level, _: &str| {};
    let all = take(batch.clone(), usize::MAX, &s, &mut log);
    assert_eq!((all.messages.len(), all.skipped, all.last_uid, all.cut), (2, 1, 12, false));
    // Room for one message: the skipped one after it still counts, the next waits.
    let one = output_size(&all.messages[0]);
    let cut = take(batch.clone(), one + 10, &s, &mut log);
    assert_eq!((cut.messages.len(), cut.skipped, cut.last_uid, cut.cut), (1, 1, 11, true));
    // The first message is always taken, however small the budget.
    let first = take(batch, 1, &s, &mut log);
    assert_eq!((first.messages.len(), first.last_uid, first.cut), (1, 11, true));
}
