//! An IMAP4rev1 client (RFC 3501) over a [`Transport`], for fetching a helpdesk mailbox.
//!
//! The flow of a poll: [`ImapClient::connect`] (greeting), [`ImapClient::starttls`] when the
//! connection is not TLS yet, [`ImapClient::login`], [`ImapClient::select`], then
//! [`Cursor::resume`] to learn where to start, [`ImapClient::fetch_next`] while it says there
//! is more, [`ImapClient::mark_seen`] / [`ImapClient::move_to`] for what was taken in, and
//! [`ImapClient::logout`].
//!
//! Responses are read incrementally from a buffer: whole lines (bounded by
//! [`ImapConfig::max_line`]), literals `{n}` / `{n+}` of exactly `n` bytes (bounded by
//! [`ImapConfig::max_literal`]), whatever sizes the chunks arrive in. Untagged responses that
//! arrive in the middle of a command (`EXISTS`, `EXPUNGE`, flag updates) are taken into account.

use std::fmt;

use crate::Transport;

/// Bounds and timeouts of an [`ImapClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapConfig {
    /// The longest response line (without literals) accepted, in bytes. Default 64 KiB.
    pub max_line: usize,
    /// The largest literal accepted (and so the largest message fetched). Default 40 MiB.
    pub max_literal: usize,
    /// The longest `SEARCH` response line accepted, which lists every UID found in one line.
    /// Default 8 MiB (about a million UIDs).
    pub max_search_line: usize,
    /// The most untagged responses accepted for one command. Default 1,000,000.
    pub max_responses: usize,
    /// How long one read may wait, in milliseconds. Default 60,000.
    pub timeout_ms: u32,
    /// How many bytes one read asks the transport for. Default 64 KiB.
    pub read_chunk: usize,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            max_line: 64 * 1024,
            max_literal: 40 * 1024 * 1024,
            max_search_line: 8 * 1024 * 1024,
            max_responses: 1_000_000,
            timeout_ms: 60_000,
            read_chunk: 64 * 1024,
        }
    }
}

/// Why an IMAP command failed. Every variant names the command (e.g. `SELECT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapError {
    /// The transport failed (connect, read, write, TLS), with its message.
    Io {
        /// The command under way.
        command: String,
        /// The transport's message.
        message: String,
    },
    /// The server closed the connection without a word.
    Closed {
        /// The command under way.
        command: String,
    },
    /// The server answered `NO`: the command was refused.
    No {
        /// The command refused.
        command: String,
        /// The server's text.
        text: String,
    },
    /// The server answered `BAD`: it did not understand the command.
    Bad {
        /// The command refused.
        command: String,
        /// The server's text.
        text: String,
    },
    /// The server said `BYE` and is closing the connection.
    Bye {
        /// The command under way.
        command: String,
        /// The server's text.
        text: String,
    },
    /// The server sent something that is not IMAP, or more than the limits allow.
    Protocol {
        /// The command under way.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// The server does not offer what the command needs (e.g. STARTTLS, or LOGIN is disabled).
    Unsupported {
        /// The command.
        command: String,
        /// What is missing.
        detail: String,
    },
    /// An argument cannot be sent (e.g. a user name with a line break).
    InvalidArgument {
        /// The command.
        command: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl fmt::Display for ImapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapError::Io { command, message } => write!(f, "IMAP {command}: connection error: {message}"),
            ImapError::Closed { command } => write!(f, "IMAP {command}: the server closed the connection"),
            ImapError::No { command, text } => write!(f, "IMAP {command} refused (NO): {text}"),
            ImapError::Bad { command, text } => write!(f, "IMAP {command} rejected (BAD): {text}"),
            ImapError::Bye { command, text } => write!(f, "IMAP {command}: the server said BYE: {text}"),
            ImapError::Protocol { command, detail } => write!(f, "IMAP {command}: protocol error: {detail}"),
            ImapError::Unsupported { command, detail } => write!(f, "IMAP {command}: not supported: {detail}"),
            ImapError::InvalidArgument { command, detail } => write!(f, "IMAP {command}: invalid argument: {detail}"),
        }
    }
}

impl std::error::Error for ImapError {}

/// What the server said about a selected mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxInfo {
    /// `UIDVALIDITY`: when it changes, every UID known before is void.
    pub uid_validity: u32,
    /// `UIDNEXT`: the UID the next message will get, when the server said (it may not).
    pub uid_next: Option<u32>,
    /// `EXISTS`: how many messages the mailbox holds.
    pub exists: u32,
    /// Whether the mailbox was opened read-only (`EXAMINE`, or `[READ-ONLY]`).
    pub read_only: bool,
}

/// One fetched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    /// Its UID in the selected mailbox.
    pub uid: u32,
    /// The whole message as stored, exactly as many bytes as the server announced.
    pub raw: Vec<u8>,
    /// Its flags, e.g. `\Seen`, as the server last reported them.
    pub flags: Vec<String>,
}

/// A message larger than [`ImapConfig::max_literal`]: only its header section was fetched, so
/// that it can still be named and reported instead of holding up the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// Its UID in the selected mailbox.
    pub uid: u32,
    /// Its size as the server announced it (`RFC822.SIZE`).
    pub size: usize,
    /// Its header section (`BODY.PEEK[HEADER]`), ending with the blank line.
    pub header: Vec<u8>,
}

/// What [`ImapClient::fetch_next`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The messages fetched whole, ascending by UID.
    pub messages: Vec<FetchedMessage>,
    /// The next message, when it is too large to fetch whole (the batch then holds only it).
    pub too_large: Option<TooLarge>,
    /// Whether more messages wait after this batch: it was cut by a limit.
    pub more: bool,
}

impl Batch {
    /// The highest UID in the batch; 0 when it is empty.
    pub fn last_uid(&self) -> u32 {
        let whole = self.messages.iter().map(|m| m.uid).max().unwrap_or(0);
        whole.max(self.too_large.as_ref().map_or(0, |t| t.uid))
    }
}

/// Where fetching stopped: the mailbox's `UIDVALIDITY` and the highest UID taken in. Stored
/// as text, `v:UIDVALIDITY:LASTUID` (see [`Cursor::parse`] and its `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The `UIDVALIDITY` the UID belongs to.
    pub uid_validity: u32,
    /// The highest UID taken in (0: none yet).
    pub last_uid: u32,
}

/// Where to go on fetching, as [`Cursor::resume`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The mailbox is the one the cursor knows: fetch from `from_uid` on.
    Continue {
        /// The first UID to fetch.
        from_uid: u32,
    },
    /// `UIDVALIDITY` changed (the mailbox was recreated or renumbered): every UID known is
    /// void, so fetching starts over from UID 1. The caller should log `reason` and rely on
    /// Message-IDs to skip mail it already has.
    Restart {
        /// Always 1.
        from_uid: u32,
        /// Why, for a person: the old and new `UIDVALIDITY`.
        reason: String,
    },
}

impl Resume {
    /// The first UID to fetch.
    pub fn from_uid(&self) -> u32 {
        match self {
            Resume::Continue { from_uid } | Resume::Restart { from_uid, .. } => *from_uid,
        }
    }
}

impl Cursor {
    /// Reads a cursor written by its `Display` (`v:UIDVALIDITY:LASTUID`).
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let mut parts = text.trim().split(':');
        let (Some("v"), Some(validity), Some(last), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("cursor {text:?} is not of the form v:UIDVALIDITY:LASTUID"));
        };
        let uid_validity = validity.parse().map_err(|_| format!("cursor {text:?}: bad UIDVALIDITY {validity:?}"))?;
        let last_uid = last.parse().map_err(|_| format!("cursor {text:?}: bad last UID {last:?}"))?;
        Ok(Cursor { uid_validity, last_uid })
    }

    /// Where to go on in a mailbox whose current `UIDVALIDITY` is `uid_validity`: after
    /// `last_uid` when it is unchanged, from 1 when it changed. `None` (no cursor yet) starts
    /// from 1 as a [`Resume::Continue`].
    pub fn resume(cursor: Option<&Cursor>, uid_validity: u32) -> Resume {
        match cursor {
            None => Resume::Continue { from_uid: 1 },
            Some(c) if c.uid_validity == uid_validity => {
                Resume::Continue { from_uid: c.last_uid.saturating_add(1).max(1) }
            }
            Some(c) => Resume::Restart {
                from_uid: 1,
                reason: format!(
                    "UIDVALIDITY changed from {} to {}: the mailbox was renumbered, fetching starts over from UID 1",
                    c.uid_validity, uid_validity
                ),
            },
        }
    }

    /// The cursor after taking in `messages` (the highest UID among them and this one).
    pub fn advanced(&self, messages: &[FetchedMessage]) -> Cursor {
        self.advanced_to(messages.iter().map(|m| m.uid).max().unwrap_or(0))
    }

    /// The cursor after taking in everything up to `uid` (this one if it is further already).
    pub fn advanced_to(&self, uid: u32) -> Cursor {
        Cursor { uid_validity: self.uid_validity, last_uid: uid.max(self.last_uid) }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v:{}:{}", self.uid_validity, self.last_uid)
    }
}

/// A parsed value of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// An atom or number, e.g. `UID`, `\Seen`, `BODY[]`.
    Atom(String),
    /// A quoted string or literal.
    Str(Vec<u8>),
    /// `NIL`.
    Nil,
    /// A parenthesized list.
    List(Vec<Value>),
}

impl Value {
    fn atom(&self) -> Option<&str> {
        match self {
            Value::Atom(a) => Some(a),
            _ => None,
        }
    }
}

/// A response whose literals have been read; `raw` holds the lines with their CRLFs and the
/// literal bytes in place.
struct Raw {
    raw: Vec<u8>,
}

/// The status of a tagged response or of an untagged `OK`/`NO`/`BAD`/`BYE`/`PREAUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    No,
    Bad,
    Bye,
    Preauth,
}

/// The untagged responses a command met, as far as this client uses them.
#[derive(Debug, Default)]
struct Untagged {
    capabilities: Option<Vec<String>>,
    exists: Option<u32>,
    uid_validity: Option<u32>,
    uid_next: Option<u32>,
    read_only: bool,
    search: Vec<u32>,
    fetches: Vec<Fetch>,
}

/// The items of one `FETCH` response.
#[derive(Debug, Default)]
struct Fetch {
    uid: Option<u32>,
    flags: Option<Vec<String>>,
    size: Option<u32>,
    body: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
}

/// An IMAP client session over a transport.
pub struct ImapClient<T: Transport> {
    transport: T,
    config: ImapConfig,
    buf: Vec<u8>,
    start: usize,
    tag: u32,
    line_limit: usize,
    capabilities: Vec<String>,
    authenticated: bool,
    selected: Option<MailboxInfo>,
}

/// Quotes `s` as an IMAP quoted string, or says why it cannot be sent as one.
fn quote(command: &str, s: &str) -> Result<String, ImapError> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(ImapError::InvalidArgument {
            command: command.to_owned(),
            detail: format!("{s:?} holds a line break or NUL"),
        });
    }
    Ok(crate::compose::quote_string(s))
}

/// A mailbox name as a command argument: modified UTF-7 (RFC 3501 5.1.3) when not ASCII, quoted.
fn mailbox_arg(command: &str, name: &str) -> Result<String, ImapError> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok("INBOX".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err(ImapError::InvalidArgument {
            command: command.to_owned(),
            detail: format!("mailbox name {name:?} holds a control character"),
        });
    }
    let mut encoded = String::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&crate::base64_encode(&bytes).trim_end_matches('=').replace('/', ","));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut encoded);
            if c == '&' {
                encoded.push_str("&-");
            } else {
                encoded.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut encoded);
    quote(command, &encoded)
}

/// A UID set from sorted UIDs, runs written as `a:b`.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted: Vec<u32> = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            out.push_str(&sorted[i].to_string());
        } else {
            out.push_str(&format!("{}:{}", sorted[i], sorted[j]));
        }
        i = j + 1;
    }
    out
}

/// The size of the literal a line announces at its end (`{n}` or `{n+}`), if any.
fn literal_size(line: &[u8]) -> Option<Result<usize, String>> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&b| b == b'{')?;
    let digits = &rest[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 12 {
        return Some(Err(format!("literal size {} is absurd", String::from_utf8_lossy(digits))));
    }
    let n = std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
    Some(Ok(n))
}

/// Reads values from a response.
struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(data: &'a [u8]) -> Self {
        Parser { data, pos: 0, depth: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        matches!(self.peek(), None | Some(b'\r') | Some(b'\n'))
    }

    /// An atom: up to a space, parenthesis or line end; `[...]` sections are kept in it.
    fn atom(&mut self) -> String {
        let start = self.pos;
        let mut brackets = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'[' => brackets += 1,
                b']' => brackets = brackets.saturating_sub(1),
                b' ' | b'(' | b')' if brackets == 0 => break,
                b'\r' | b'\n' => break,
                _ => {}
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.data[start..self.pos]).into_owned()
    }

    /// The rest of the current line, as text.
    fn rest_of_line(&mut self) -> String {
        let start = self.pos;
        while !self.at_end() {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.data[start..self.pos]).trim().to_owned()
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_spaces();
        match self.peek() {
            None | Some(b'\r') | Some(b'\n') => Err("response ended where a value was expected".to_owned()),
            Some(b'(') => {
                self.depth += 1;
                if self.depth > 32 {
                    return Err("lists nested too deeply".to_owned());
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.peek() {
                        Some(b')') => {
                            self.pos += 1;
                            break;
                        }
                        None => return Err("unclosed list".to_owned()),
                        _ => items.push(self.value()?),
                    }
                }
                self.depth -= 1;
                Ok(Value::List(items))
            }
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.peek() {
                        None | Some(b'\r') | Some(b'\n') => return Err("unterminated quoted string".to_owned()),
                        Some(b'"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'\\') => {
                            self.pos += 1;
                            match self.peek() {
                                Some(b) if b != b'\r' && b != b'\n' => out.push(b),
                                _ => return Err("unterminated quoted string".to_owned()),
                            }
                            self.pos += 1;
                        }
                        Some(b) => {
                            out.push(b);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Value::Str(out))
            }
            Some(b'{') => {
                let close = self.data[self.pos..].iter().position(|&b| b == b'}').ok_or("unclosed literal size")?;
                let header = &self.data[self.pos..=self.pos + close];
                let n = match literal_size(header) {
                    Some(Ok(n)) => n,
                    _ => return Err("malformed literal size".to_owned()),
                };
                self.pos += close + 1;
                if self.data.get(self.pos..self.pos + 2) != Some(b"\r\n") {
                    return Err("literal size not at the end of a line".to_owned());
                }
                self.pos += 2;
                let body = self.data.get(self.pos..self.pos + n).ok_or("literal shorter than announced")?;
                self.pos += n;
                Ok(Value::Str(body.to_vec()))
            }
            Some(_) => {
                let atom = self.atom();
                if atom.is_empty() {
                    self.pos += 1;
                    return Err("unexpected character".to_owned());
                }
                if atom.eq_ignore_ascii_case("NIL") { Ok(Value::Nil) } else { Ok(Value::Atom(atom)) }
            }
        }
    }
}

/// Reads `[CODE args]` at the start of a status text: the code (uppercased) and its arguments.
fn response_code(text: &str) -> Option<(String, String)> {
    let inner = text.strip_prefix('[')?;
    let end = inner.find(']')?;
    let inner = &inner[..end];
    let (code, args) = inner.split_once(' ').unwrap_or((inner, ""));
    Some((code.to_ascii_uppercase(), args.trim().to_owned()))
}

fn parse_status(word: &str) -> Option<Status> {
    match word.to_ascii_uppercase().as_str() {
        "OK" => Some(Status::Ok),
        "NO" => Some(Status::No),
        "BAD" => Some(Status::Bad),
        "BYE" => Some(Status::Bye),
        "PREAUTH" => Some(Status::Preauth),
        _ => None,
    }
}

impl<T: Transport> ImapClient<T> {
    /// Reads the server's greeting on a fresh connection. `OK` and `PREAUTH` (already logged
    /// in) are accepted; `BYE` is an error carrying the server's text.
    pub fn connect(transport: T, config: ImapConfig) -> Result<Self, ImapError> {
        let mut client = ImapClient {
            transport,
            config,
            buf: Vec::new(),
            start: 0,
            tag: 0,
            line_limit: config.max_line,
            capabilities: Vec::new(),
            authenticated: false,
            selected: None,
        };
        let command = "greeting";
        let raw = client.read_response(command)?;
        let mut p = Parser::new(&raw.raw);
        if p.atom() != "*" {
            return Err(client.protocol(command, format!("expected an untagged greeting, got {}", show(&raw.raw))));
        }
        p.skip_spaces();
        let status = parse_status(&p.atom());
        p.skip_spaces();
        let text = p.rest_of_line();
        match status {
            Some(Status::Ok) => {}
            Some(Status::Preauth) => client.authenticated = true,
            Some(Status::Bye) => return Err(ImapError::Bye { command: command.to_owned(), text }),
            _ => return Err(client.protocol(command, format!("unexpected greeting {}", show(&raw.raw)))),
        }
        if let Some((code, args)) = response_code(&text)
            && code == "CAPABILITY"
        {
            client.capabilities = args.split_whitespace().map(str::to_ascii_uppercase).collect();
        }
        Ok(client)
    }

    /// The capabilities the server announced last (uppercased), e.g. `IMAP4REV1`, `MOVE`.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// Whether the server announced `capability` (case-insensitive).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(capability))
    }

    /// Whether the session is logged in (by [`login`](Self::login) or a `PREAUTH` greeting).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The mailbox selected last, as the server last described it (EXISTS is kept up to date
    /// from untagged responses).
    pub fn selected(&self) -> Option<&MailboxInfo> {
        self.selected.as_ref()
    }

    /// Gives the transport back (e.g. to close it).
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Asks for the capabilities (`CAPABILITY`) and returns them.
    pub fn capability(&mut self) -> Result<&[String], ImapError> {
        let untagged = self.run("CAPABILITY", "CAPABILITY", false)?;
        if let Some(caps) = untagged.capabilities {
            self.capabilities = caps;
        }
        Ok(&self.capabilities)
    }

    /// Starts TLS (`STARTTLS`, then the transport's `start_tls`), then asks for the
    /// capabilities again, as those from before TLS must be forgotten.
    pub fn starttls(&mut self) -> Result<(), ImapError> {
        if self.capabilities.is_empty() {
            self.capability()?;
        }
        if !self.has_capability("STARTTLS") {
            return Err(ImapError::Unsupported {
                command: "STARTTLS".to_owned(),
                detail: "the server does not offer STARTTLS".to_owned(),
            });
        }
        self.run("STARTTLS", "STARTTLS", false)?;
        // Nothing the server sent before TLS may be used after it (RFC 3501 6.2.1).
        self.buf.clear();
        self.start = 0;
        self.transport.start_tls().map_err(|message| ImapError::Io { command: "STARTTLS".to_owned(), message })?;
        self.capabilities.clear();
        self.capability()?;
        Ok(())
    }

    /// Logs in with `LOGIN <user> <password>`; the password is never in the plugin: the
    /// command is written through [`Transport::write_secret`] with `{{secret_quoted:NAME}}`.
    pub fn login(&mut self, user: &str, secret_name: &str) -> Result<(), ImapError> {
        let command = "LOGIN";
        if self.has_capability("LOGINDISABLED") {
            return Err(ImapError::Unsupported {
                command: command.to_owned(),
                detail: "the server disabled LOGIN (LOGINDISABLED); use TLS".to_owned(),
            });
        }
        if secret_name.is_empty() || !secret_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return Err(ImapError::InvalidArgument {
                command: command.to_owned(),
                detail: format!("secret name {secret_name:?} must be letters, digits, '_', '-' or '.'"),
            });
        }
        let args = format!("LOGIN {} {{{{secret_quoted:{secret_name}}}}}", quote(command, user)?);
        let untagged = self.run(command, &args, true)?;
        self.authenticated = true;
        if let Some(caps) = untagged.capabilities {
            self.capabilities = caps;
        }
        Ok(())
    }

    /// Opens `mailbox` read-write (`SELECT`).
    pub fn select(&mut self, mailbox: &str) -> Result<MailboxInfo, ImapError> {
        self.open("SELECT", mailbox)
    }

    /// Opens `mailbox` read-only (`EXAMINE`): fetching does not change it.
    pub fn examine(&mut self, mailbox: &str) -> Result<MailboxInfo, ImapError> {
        self.open("EXAMINE", mailbox)
    }

    fn open(&mut self, command: &str, mailbox: &str) -> Result<MailboxInfo, ImapError> {
        self.selected = None;
        let args = format!("{command} {}", mailbox_arg(command, mailbox)?);
        let (untagged, text) = self.run_with_text(command, &args, false)?;
        let uid_validity = untagged.uid_validity.ok_or_else(|| {
            self.protocol(command, format!("the server gave no UIDVALIDITY for {mailbox:?}; UIDs cannot be trusted"))
        })?;
        let read_only = untagged.read_only
            || command == "EXAMINE"
            || response_code(&text).is_some_and(|(code, _)| code == "READ-ONLY");
        let info =
            MailboxInfo { uid_validity, uid_next: untagged.uid_next, exists: untagged.exists.unwrap_or(0), read_only };
        self.selected = Some(info.clone());
        Ok(info)
    }

    /// Creates `mailbox` (`CREATE`); one that exists already is not an error.
    pub fn create(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let args = format!("CREATE {}", mailbox_arg("CREATE", mailbox)?);
        match self.run_with_text("CREATE", &args, false) {
            Ok(_) => Ok(()),
            Err(ImapError::No { text, .. }) if text.to_ascii_uppercase().contains("[ALREADYEXISTS]") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The UIDs of the selected mailbox from `from_uid` on, ascending (`UID SEARCH UID n:*`).
    pub fn uid_search_since(&mut self, from_uid: u32) -> Result<Vec<u32>, ImapError> {
        let from = from_uid.max(1);
        // `n:*` also matches the highest UID when it is below n, so filter.
        let uids = self.uid_search(&format!("UID {from}:*"))?;
        Ok(uids.into_iter().filter(|&u| u >= from).collect())
    }

    /// The UIDs from `from_uid` to `to_uid` still in the selected mailbox, ascending; with
    /// `unseen_only`, only those without `\Seen` (`UID SEARCH UID a:b [UNSEEN]`).
    pub fn uid_search_range(&mut self, from_uid: u32, to_uid: u32, unseen_only: bool) -> Result<Vec<u32>, ImapError> {
        let (from, to) = (from_uid.max(1), to_uid);
        if to < from {
            return Ok(Vec::new());
        }
        let unseen = if unseen_only { " UNSEEN" } else { "" };
        let uids = self.uid_search(&format!("UID {from}:{to}{unseen}"))?;
        Ok(uids.into_iter().filter(|&u| (from..=to).contains(&u)).collect())
    }

    /// `UID SEARCH criteria`: the UIDs found, ascending, without duplicates.
    fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        // The one response line lists every UID: allow it to be longer than others.
        self.line_limit = self.config.max_search_line.max(self.config.max_line);
        let result = self.run("UID SEARCH", &format!("UID SEARCH {criteria}"), false);
        self.line_limit = self.config.max_line;
        let mut uids = result?.search;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// Fetches the next messages of the selected mailbox from `from_uid` on, as
    /// [`fetch_next`](Self::fetch_next) does; a next message too large to fetch is an error
    /// ([`ImapError::Protocol`]) instead of its header.
    pub fn fetch_batch(
        &mut self,
        from_uid: u32,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<FetchedMessage>, ImapError> {
        let batch = self.fetch_next(from_uid, max_messages, max_bytes)?;
        if let Some(big) = batch.too_large {
            return Err(self.protocol(
                "UID FETCH",
                format!(
                    "message UID {} has {} bytes, more than the limit of {} bytes",
                    big.uid, big.size, self.config.max_literal
                ),
            ));
        }
        Ok(batch.messages)
    }

    /// Fetches the next messages of the selected mailbox from `from_uid` on, ascending by UID:
    /// at most `max_messages`, and no more than `max_bytes` together (but always the first
    /// one). Uses `BODY.PEEK[]`, so nothing is marked seen. An empty batch means there is
    /// nothing new; [`Batch::more`] says whether a limit cut it.
    ///
    /// A message larger than [`ImapConfig::max_literal`] is not fetched whole: when it is the
    /// next one, the batch holds only its header ([`Batch::too_large`]), so that the caller can
    /// report it and move on instead of failing on it at every poll.
    ///
    /// Messages expunged meanwhile are left out. When the server fails in the middle (`BYE`,
    /// `NO`, a dropped connection), the whole batch is an error: nothing partly read is
    /// returned, and as the cursor did not move, the next poll fetches it again.
    pub fn fetch_next(&mut self, from_uid: u32, max_messages: usize, max_bytes: usize) -> Result<Batch, ImapError> {
        let uids = self.uid_search_since(from_uid)?;
        let wanted: Vec<u32> = uids.iter().copied().take(max_messages.max(1)).collect();
        let mut batch = Batch { more: uids.len() > wanted.len(), ..Batch::default() };
        if wanted.is_empty() {
            return Ok(batch);
        }
        // First the sizes, to keep within max_bytes.
        let set = uid_set(&wanted);
        let untagged = self.run("UID FETCH", &format!("UID FETCH {set} (UID RFC822.SIZE)"), false)?;
        let mut sizes: Vec<(u32, u32)> = untagged
            .fetches
            .iter()
            .filter_map(|f| Some((f.uid?, f.size?)))
            .filter(|(uid, _)| wanted.binary_search(uid).is_ok())
            .collect();
        sizes.sort_unstable();
        sizes.dedup_by_key(|(uid, _)| *uid);
        let mut chosen = Vec::new();
        let mut total = 0usize;
        for &(uid, size) in &sizes {
            let size = size as usize;
            if size > self.config.max_literal {
                if chosen.is_empty() {
                    batch.more |= sizes.len() > 1;
                    batch.too_large = self.fetch_header(uid, size)?;
                    return Ok(batch);
                }
                break;
            }
            if !chosen.is_empty() && total.saturating_add(size) > max_bytes {
                break;
            }
            total = total.saturating_add(size);
            chosen.push(uid);
        }
        batch.more |= chosen.len() < sizes.len();
        if chosen.is_empty() {
            return Ok(batch);
        }
        let set = uid_set(&chosen);
        let untagged = self.run("UID FETCH", &format!("UID FETCH {set} (UID FLAGS RFC822.SIZE BODY.PEEK[])"), false)?;
        // Responses are taken in order: the latest flags reported for a UID win.
        let mut bodies: Vec<FetchedMessage> = Vec::new();
        let mut pending_flags: Vec<(u32, Vec<String>)> = Vec::new();
        for fetch in untagged.fetches {
            let Some(uid) = fetch.uid else { continue };
            if chosen.binary_search(&uid).is_err() {
                continue;
            }
            match (fetch.body, fetch.flags) {
                (Some(raw), flags) => {
                    let flags = flags
                        .or_else(|| pending_flags.iter().rev().find(|(u, _)| *u == uid).map(|(_, f)| f.clone()))
                        .unwrap_or_default();
                    bodies.retain(|m| m.uid != uid);
                    bodies.push(FetchedMessage { uid, raw, flags });
                }
                (None, Some(flags)) => match bodies.iter_mut().find(|m| m.uid == uid) {
                    Some(m) => m.flags = flags,
                    None => pending_flags.push((uid, flags)),
                },
                (None, None) => {}
            }
        }
        bodies.sort_by_key(|m| m.uid);
        batch.messages = bodies;
        Ok(batch)
    }

    /// The header section of one message (`BODY.PEEK[HEADER]`); `None` when it is gone.
    fn fetch_header(&mut self, uid: u32, size: usize) -> Result<Option<TooLarge>, ImapError> {
        let untagged = self.run("UID FETCH", &format!("UID FETCH {uid} (UID BODY.PEEK[HEADER])"), false)?;
        let header = untagged.fetches.into_iter().filter(|f| f.uid == Some(uid)).find_map(|f| f.header);
        Ok(header.map(|header| TooLarge { uid, size, header }))
    }

    /// Marks messages seen (`UID STORE … +FLAGS.SILENT (\Seen)`).
    pub fn mark_seen(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        self.run("UID STORE", &format!("UID STORE {} +FLAGS.SILENT (\\Seen)", uid_set(uids)), false)?;
        Ok(())
    }

    /// Moves messages to `mailbox`: `UID MOVE` when the server has `MOVE`; otherwise
    /// `UID COPY`, `UID STORE +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE` (with `UIDPLUS`) or
    /// `EXPUNGE` (without it, which also removes other messages marked deleted).
    pub fn move_to(&mut self, uids: &[u32], mailbox: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let target = mailbox_arg("UID MOVE", mailbox)?;
        if self.has_capability("MOVE") {
            self.run("UID MOVE", &format!("UID MOVE {set} {target}"), false)?;
            return Ok(());
        }
        self.run("UID COPY", &format!("UID COPY {set} {target}"), false)?;
        self.run("UID STORE", &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), false)?;
        if self.has_capability("UIDPLUS") {
            self.run("UID EXPUNGE", &format!("UID EXPUNGE {set}"), false)?;
        } else {
            self.run("EXPUNGE", "EXPUNGE", false)?;
        }
        Ok(())
    }

    /// Does nothing but lets the server report changes (`NOOP`); returns the message count.
    pub fn noop(&mut self) -> Result<u32, ImapError> {
        self.run("NOOP", "NOOP", false)?;
        Ok(self.selected.as_ref().map_or(0, |s| s.exists))
    }

    /// Ends the session (`LOGOUT`); the server's `BYE` is expected.
    pub fn logout(mut self) -> Result<T, ImapError> {
        match self.run("LOGOUT", "LOGOUT", false) {
            Ok(_) | Err(ImapError::Bye { .. }) | Err(ImapError::Closed { .. }) => Ok(self.transport),
            Err(e) => Err(e),
        }
    }

    fn protocol(&self, command: &str, detail: String) -> ImapError {
        ImapError::Protocol { command: command.to_owned(), detail }
    }

    fn io(&self, command: &str, message: String) -> ImapError {
        ImapError::Io { command: command.to_owned(), message }
    }

    fn run(&mut self, command: &str, args: &str, secret: bool) -> Result<Untagged, ImapError> {
        self.run_with_text(command, args, secret).map(|(u, _)| u)
    }

    /// Sends `tag args`, reads responses up to the tagged one, and returns the untagged ones
    /// and the tagged `OK` text.
    fn run_with_text(&mut self, command: &str, args: &str, secret: bool) -> Result<(Untagged, String), ImapError> {
        self.tag += 1;
        let tag = format!("A{:04}", self.tag);
        let line = format!("{tag} {args}\r\n");
        let written = if secret { self.transport.write_secret(&line) } else { self.transport.write(line.as_bytes()) };
        written.map_err(|m| self.io(command, m))?;
        let mut untagged = Untagged::default();
        let mut count = 0usize;
        let mut bye: Option<String> = None;
        loop {
            let raw = match self.read_response(command) {
                Ok(raw) => raw,
                Err(ImapError::Closed { .. }) if bye.is_some() => {
                    return Err(ImapError::Bye { command: command.to_owned(), text: bye.unwrap_or_default() });
                }
                Err(e) => return Err(e),
            };
            count += 1;
            if count > self.config.max_responses {
                return Err(
                    self.protocol(command, format!("more than {} responses to one command", self.config.max_responses))
                );
            }
            let mut p = Parser::new(&raw.raw);
            let first = p.atom();
            p.skip_spaces();
            if first == "*" {
                if let Some(text) = self.untagged(command, &mut p, &mut untagged)? {
                    if command == "LOGOUT" {
                        bye = Some(text);
                        continue;
                    }
                    return Err(ImapError::Bye { command: command.to_owned(), text });
                }
            } else if first == "+" {
                return Err(self.protocol(command, format!("unexpected continuation request {}", show(&raw.raw))));
            } else if first == tag {
                let status = parse_status(&p.atom());
                p.skip_spaces();
                let text = p.rest_of_line();
                return match status {
                    Some(Status::Ok) => {
                        if let Some((code, args)) = response_code(&text)
                            && code == "CAPABILITY"
                        {
                            untagged.capabilities =
                                Some(args.split_whitespace().map(str::to_ascii_uppercase).collect());
                        }
                        Ok((untagged, text))
                    }
                    Some(Status::No) => Err(ImapError::No { command: command.to_owned(), text }),
                    Some(Status::Bad) => Err(ImapError::Bad { command: command.to_owned(), text }),
                    _ => Err(self.protocol(command, format!("unexpected tagged response {}", show(&raw.raw)))),
                };
            } else {
                return Err(self.protocol(command, format!("response with an unknown tag: {}", show(&raw.raw))));
            }
        }
    }

    /// Takes in one untagged response; returns the text of a `BYE`.
    fn untagged(&mut self, command: &str, p: &mut Parser<'_>, out: &mut Untagged) -> Result<Option<String>, ImapError> {
        let word = p.atom();
        p.skip_spaces();
        if let Ok(n) = word.parse::<u32>() {
            let kind = p.atom().to_ascii_uppercase();
            p.skip_spaces();
            match kind.as_str() {
                "EXISTS" => {
                    out.exists = Some(n);
                    if let Some(s) = self.selected.as_mut() {
                        s.exists = n;
                    }
                }
                "EXPUNGE" => {
                    if let Some(s) = self.selected.as_mut() {
                        s.exists = s.exists.saturating_sub(1);
                    }
                }
                "FETCH" => {
                    let items =
                        p.value().map_err(|d| self.protocol(command, format!("malformed FETCH response: {d}")))?;
                    out.fetches.push(self.fetch_items(command, items)?);
                }
                _ => {}
            }
            return Ok(None);
        }
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "CAPABILITY" => {
                out.capabilities = Some(p.rest_of_line().split_whitespace().map(str::to_ascii_uppercase).collect());
            }
            "SEARCH" => {
                let rest = p.rest_of_line();
                for token in rest.split_whitespace() {
                    match token.parse::<u32>() {
                        Ok(uid) => out.search.push(uid),
                        Err(_) if token.starts_with('(') => break, // e.g. (MODSEQ n)
                        Err(_) => {
                            return Err(self.protocol(command, format!("SEARCH result {token:?} is not a number")));
                        }
                    }
                }
            }
            "BYE" => return Ok(Some(p.rest_of_line())),
            "OK" | "NO" | "BAD" => {
                let text = p.rest_of_line();
                if let Some((code, args)) = response_code(&text) {
                    match code.as_str() {
                        "UIDVALIDITY" => out.uid_validity = args.parse().ok(),
                        "UIDNEXT" => out.uid_next = args.parse().ok(),
                        "READ-ONLY" => out.read_only = true,
                        "CAPABILITY" => {
                            out.capabilities = Some(args.split_whitespace().map(str::to_ascii_uppercase).collect())
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn fetch_items(&self, command: &str, items: Value) -> Result<Fetch, ImapError> {
        let Value::List(items) = items else {
            return Err(self.protocol(command, "FETCH data is not a list".to_owned()));
        };
        let mut fetch = Fetch::default();
        let mut it = items.into_iter();
        while let Some(name) = it.next() {
            let Some(name) = name.atom().map(str::to_ascii_uppercase) else {
                return Err(self.protocol(command, "FETCH item name is not an atom".to_owned()));
            };
            let value =
                it.next().ok_or_else(|| self.protocol(command, format!("FETCH item {name} without a value")))?;
            let number = |v: &Value| v.atom().and_then(|a| a.parse::<u32>().ok());
            match name.as_str() {
                "UID" => {
                    fetch.uid = Some(
                        number(&value).ok_or_else(|| self.protocol(command, "FETCH UID is not a number".to_owned()))?,
                    )
                }
                "RFC822.SIZE" => fetch.size = number(&value),
                "FLAGS" => {
                    if let Value::List(flags) = value {
                        fetch.flags = Some(flags.iter().filter_map(|f| f.atom().map(str::to_owned)).collect());
                    }
                }
                "BODY[]" | "RFC822" => match value {
                    Value::Str(bytes) => fetch.body = Some(bytes),
                    Value::Nil => fetch.body = Some(Vec::new()),
                    _ => return Err(self.protocol(command, "FETCH BODY[] is not a string".to_owned())),
                },
                "BODY[HEADER]" | "RFC822.HEADER" => match value {
                    Value::Str(bytes) => fetch.header = Some(bytes),
                    Value::Nil => fetch.header = Some(Vec::new()),
                    _ => return Err(self.protocol(command, "FETCH BODY[HEADER] is not a string".to_owned())),
                },
                _ => {}
            }
        }
        Ok(fetch)
    }

    /// Reads one whole response: a line, and for every literal it announces, exactly that
    /// many bytes and the line that goes on after it.
    fn read_response(&mut self, command: &str) -> Result<Raw, ImapError> {
        let mut raw = Vec::new();
        let mut literals = 0usize;
        loop {
            let line_end = self.read_line(command)?;
            let line = &self.buf[self.start..line_end];
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            let size = literal_size(content);
            raw.extend_from_slice(content);
            raw.extend_from_slice(b"\r\n");
            self.start = line_end;
            match size {
                None => break,
                Some(Err(detail)) => return Err(self.protocol(command, detail)),
                Some(Ok(n)) => {
                    if n > self.config.max_literal {
                        return Err(self.protocol(
                            command,
                            format!("literal of {n} bytes is larger than the limit of {}", self.config.max_literal),
                        ));
                    }
                    literals += 1;
                    if literals > 10_000 {
                        return Err(self.protocol(command, "more than 10000 literals in one response".to_owned()));
                    }
                    if raw.len().saturating_add(n) > self.config.max_literal.saturating_mul(2) {
                        return Err(self.protocol(command, "response larger than twice the literal limit".to_owned()));
                    }
                    self.read_exact_into(command, n, &mut raw)?;
                }
            }
        }
        Ok(Raw { raw })
    }

    /// Reads until the buffer holds a line from `start`; returns the index after its `\n`.
    fn read_line(&mut self, command: &str) -> Result<usize, ImapError> {
        // Relative to `start`, which `fill` moves.
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let end = from + i + 1;
                if end - self.start > self.line_limit + 2 {
                    return Err(self.line_too_long(command));
                }
                return Ok(end);
            }
            searched = self.buf.len() - self.start;
            if self.buf.len() - self.start > self.line_limit + 2 {
                return Err(self.line_too_long(command));
            }
            self.fill(command)?;
        }
    }

    fn line_too_long(&self, command: &str) -> ImapError {
        self.protocol(command, format!("response line longer than {} bytes", self.line_limit))
    }

    /// Moves exactly `n` bytes from the stream to `out`.
    fn read_exact_into(&mut self, command: &str, n: usize, out: &mut Vec<u8>) -> Result<(), ImapError> {
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            if self.start == self.buf.len() {
                self.fill(command)?;
            }
            let take = left.min(self.buf.len() - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            left -= take;
        }
        Ok(())
    }

    /// Reads one more chunk into the buffer, dropping what was consumed.
    fn fill(&mut self, command: &str) -> Result<(), ImapError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let chunk = self
            .transport
            .read(self.config.read_chunk, self.config.timeout_ms)
            .map_err(|m| ImapError::Io { command: command.to_owned(), message: m })?;
        if chunk.is_empty() {
            return Err(ImapError::Closed { command: command.to_owned() });
        }
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }
}

/// The start of a response, for error messages.
fn show(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(raw.len()).min(200);
    format!("{:?}", String::from_utf8_lossy(&raw[..end]))
}

#[cfg(test)]
mod tests;
