//! An SMTP submission client (RFC 5321, RFC 6409) over a [`Transport`].
//!
//! The flow: [`SmtpClient::connect`] (greeting), [`SmtpClient::ehlo`], [`SmtpClient::starttls`]
//! when the connection is not TLS yet (it says EHLO again), [`SmtpClient::authenticate`] (AUTH PLAIN or LOGIN),
//! [`SmtpClient::send`] for each message, [`SmtpClient::quit`].
//!
//! Every failure is an [`SmtpError`] that says whether trying again later may help: a 4xx
//! reply or a dropped connection is [`SmtpError::Retryable`], a 5xx reply is
//! [`SmtpError::Permanent`].

use std::fmt;

use crate::Transport;
use crate::codec::base64_encode;

/// Bounds and timeouts of an [`SmtpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The longest reply line accepted, in bytes. Default 4 KiB (RFC 5321 allows 512).
    pub max_line: usize,
    /// The most lines of one reply. Default 200.
    pub max_reply_lines: usize,
    /// How long one read may wait for a reply, in milliseconds. Default 300,000 (RFC 5321
    /// 4.5.3.2 asks for up to 10 minutes after the final dot; 5 are plenty for submission).
    pub timeout_ms: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig { max_line: 4096, max_reply_lines: 200, timeout_ms: 300_000 }
    }
}

/// Why an SMTP command failed. Every variant names the command (e.g. `RCPT TO:<a@b.c>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpError {
    /// A 4xx reply, or the connection failed or dropped (code 0): trying again later may work.
    Retryable {
        /// The command.
        command: String,
        /// The reply code; 0 when there was no reply.
        code: u16,
        /// The server's text (lines joined by a space), or what happened to the connection.
        text: String,
    },
    /// A 5xx reply: trying again will fail the same way.
    Permanent {
        /// The command.
        command: String,
        /// The reply code.
        code: u16,
        /// The server's text (lines joined by a space).
        text: String,
    },
    /// The server sent something that is not SMTP, or more than the limits allow.
    Protocol {
        /// The command.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// The server lacks what is needed (STARTTLS, AUTH LOGIN, SMTPUTF8), or the message is
    /// larger than its announced SIZE. Not worth retrying without a change of setup.
    Unsupported {
        /// The command.
        command: String,
        /// What is missing.
        detail: String,
    },
    /// An argument cannot be sent (an address with a line break, no recipients, …).
    InvalidArgument {
        /// The command.
        command: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl SmtpError {
    /// Whether trying again later may succeed: 4xx replies, dropped connections and protocol
    /// trouble (a broken server may recover).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SmtpError::Retryable { .. } | SmtpError::Protocol { .. })
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpError::Retryable { command, code: 0, text } => write!(f, "SMTP {command}: temporary failure: {text}"),
            SmtpError::Retryable { command, code, text } => {
                write!(f, "SMTP {command}: temporary failure: {code} {text}")
            }
            SmtpError::Permanent { command, code, text } => write!(f, "SMTP {command}: rejected: {code} {text}"),
            SmtpError::Protocol { command, detail } => write!(f, "SMTP {command}: protocol error: {detail}"),
            SmtpError::Unsupported { command, detail } => write!(f, "SMTP {command}: not supported: {detail}"),
            SmtpError::InvalidArgument { command, detail } => write!(f, "SMTP {command}: invalid argument: {detail}"),
        }
    }
}

impl std::error::Error for SmtpError {}

/// A server reply: its code and its lines' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The lines joined by a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// What the server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `STARTTLS`.
    pub starttls: bool,
    /// The `AUTH` mechanisms, uppercased (e.g. `PLAIN`, `LOGIN`).
    pub auth: Vec<String>,
    /// `SIZE n`: the largest message accepted; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    /// `8BITMIME`.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// Every extension line as sent, e.g. `PIPELINING`.
    pub all: Vec<String>,
}

impl Extensions {
    /// Reads the lines after the first of an EHLO reply.
    pub fn parse(lines: &[String]) -> Extensions {
        let mut ext = Extensions::default();
        for line in lines.iter().skip(1).take(100) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => ext.starttls = true,
                "AUTH" => ext.auth.extend(words.take(20).map(str::to_ascii_uppercase)),
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                _ => {}
            }
            ext.all.push(line.clone());
        }
        ext
    }
}

/// What happened to a message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The recipients the server took.
    pub accepted: Vec<String>,
    /// The recipients it refused, each with its reply; the message went to the others.
    pub rejected: Vec<(String, SmtpError)>,
    /// The server's text on accepting the message (often with its queue id).
    pub reply: String,
}

/// An SMTP client session over a transport.
pub struct SmtpClient<T: Transport> {
    transport: T,
    config: SmtpConfig,
    buf: Vec<u8>,
    greeting: String,
    helo_name: String,
    extensions: Extensions,
}

/// Rejects an address that cannot stand in `<…>` on a command line.
fn check_address(command: &str, address: &str) -> Result<(), SmtpError> {
    if address.chars().any(|c| c.is_control() || c == '<' || c == '>' || c == ' ') {
        return Err(SmtpError::InvalidArgument {
            command: command.to_owned(),
            detail: format!("address {address:?} holds a space, angle bracket or control character"),
        });
    }
    Ok(())
}

/// Prepares message bytes for DATA: every line break becomes CRLF, a line starting with `.`
/// gets another `.` (RFC 5321 4.5.2), the end is CRLF, then `.` CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        if line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                line_start = true;
            }
            _ => {
                out.push(b);
                line_start = false;
            }
        }
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl<T: Transport> SmtpClient<T> {
    /// Reads the server's greeting on a fresh connection (`220`).
    pub fn connect(transport: T, config: SmtpConfig) -> Result<Self, SmtpError> {
        let mut client = SmtpClient {
            transport,
            config,
            buf: Vec::new(),
            greeting: String::new(),
            helo_name: String::new(),
            extensions: Extensions::default(),
        };
        let reply = client.expect("greeting", 220)?;
        client.greeting = reply.text();
        Ok(client)
    }

    /// The greeting's text.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// What the server announced in its last EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Says `EHLO name` and reads the extensions the server announces.
    pub fn ehlo(&mut self, name: &str) -> Result<&Extensions, SmtpError> {
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == ' ') {
            return Err(SmtpError::InvalidArgument { command: "EHLO".to_owned(), detail: format!("name {name:?}") });
        }
        self.helo_name = name.to_owned();
        let reply = self.command("EHLO", &format!("EHLO {name}\r\n"), 250)?;
        self.extensions = Extensions::parse(&reply.lines);
        Ok(&self.extensions)
    }

    /// Starts TLS (`STARTTLS` → 220, then the transport's `start_tls`), then says EHLO again,
    /// as what the server announced before TLS must be forgotten.
    pub fn starttls(&mut self) -> Result<&Extensions, SmtpError> {
        if !self.extensions.starttls {
            return Err(SmtpError::Unsupported {
                command: "STARTTLS".to_owned(),
                detail: "the server does not offer STARTTLS".to_owned(),
            });
        }
        self.command("STARTTLS", "STARTTLS\r\n", 220)?;
        self.buf.clear();
        self.transport.start_tls().map_err(|text| SmtpError::Retryable {
            command: "STARTTLS".into(),
            code: 0,
            text,
        })?;
        self.extensions = Extensions::default();
        let name = self.helo_name.clone();
        self.ehlo(&name)
    }

    /// Logs in with the mechanism the server offers: AUTH PLAIN when it does, else AUTH LOGIN;
    /// a server with neither is an [`SmtpError::Unsupported`] error naming what it offers
    /// (other mechanisms would need the password inside the plugin).
    pub fn authenticate(&mut self, user: &str, secret_name: &str) -> Result<(), SmtpError> {
        if self.extensions.auth.iter().any(|m| m == "PLAIN") {
            return self.auth_plain(user, secret_name);
        }
        self.auth_login(user, secret_name)
    }

    /// Logs in with AUTH PLAIN (RFC 4616): `NUL user NUL password` in base64, which the host
    /// builds from `{{secret_sasl_plain:NAME:USER}}` through [`Transport::write_secret`], so the
    /// plugin never holds the password.
    pub fn auth_plain(&mut self, user: &str, secret_name: &str) -> Result<(), SmtpError> {
        let command = "AUTH PLAIN";
        self.auth_check(command, "PLAIN", secret_name)?;
        if user.is_empty() || user.contains(['\0', '\r', '\n', '}', ':']) {
            return Err(SmtpError::InvalidArgument {
                command: command.to_owned(),
                detail: format!("user name {user:?} cannot be sent with AUTH PLAIN"),
            });
        }
        self.transport
            .write_secret(&format!("AUTH PLAIN {{{{secret_sasl_plain:{secret_name}:{user}}}}}\r\n"))
            .map_err(|text| SmtpError::Retryable { command: command.to_owned(), code: 0, text })?;
        self.expect(command, 235)?;
        Ok(())
    }

    /// Refuses a mechanism the server does not offer, and a secret name that cannot stand in
    /// a placeholder.
    fn auth_check(&self, command: &str, mechanism: &str, secret_name: &str) -> Result<(), SmtpError> {
        if !self.extensions.auth.iter().any(|m| m == mechanism) {
            let offered =
                if self.extensions.auth.is_empty() { "none".to_owned() } else { self.extensions.auth.join(" ") };
            return Err(SmtpError::Unsupported {
                command: command.to_owned(),
                detail: format!(
                    "the server does not offer {command} (offered: {offered}); other mechanisms would need the password inside the plugin"
                ),
            });
        }
        if secret_name.is_empty() || !secret_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return Err(SmtpError::InvalidArgument {
                command: command.to_owned(),
                detail: format!("secret name {secret_name:?} must be letters, digits, '_', '-' or '.'"),
            });
        }
        Ok(())
    }

    /// Logs in with AUTH LOGIN: the user name in base64, then the password, which the plugin
    /// never holds, written through [`Transport::write_secret`] as `{{secret_base64:NAME}}`.
    pub fn auth_login(&mut self, user: &str, secret_name: &str) -> Result<(), SmtpError> {
        let command = "AUTH LOGIN";
        self.auth_check(command, "LOGIN", secret_name)?;
        self.command(command, "AUTH LOGIN\r\n", 334)?;
        self.command(command, &format!("{}\r\n", base64_encode(user.as_bytes())), 334)?;
        self.transport
            .write_secret(&format!("{{{{secret_base64:{secret_name}}}}}\r\n"))
            .map_err(|text| SmtpError::Retryable { command: command.to_owned(), code: 0, text })?;
        self.expect(command, 235)?;
        Ok(())
    }

    /// Sends one message: `MAIL FROM`, a `RCPT TO` for each recipient, `DATA` with the
    /// message dot-stuffed and its line breaks made CRLF.
    ///
    /// Recipients the server refuses are listed in the report while the message goes to the
    /// others; when it refuses all of them, the transaction is reset and the error is that of
    /// the first (retryable if any refusal was). The announced `SIZE` is respected: a larger
    /// message is refused before anything is sent.
    pub fn send(&mut self, from: &str, recipients: &[String], message: &[u8]) -> Result<SendReport, SmtpError> {
        let mail_cmd = format!("MAIL FROM:<{from}>");
        check_address(&mail_cmd, from)?;
        if recipients.is_empty() {
            return Err(SmtpError::InvalidArgument { command: mail_cmd, detail: "no recipients".to_owned() });
        }
        for r in recipients {
            check_address(&format!("RCPT TO:<{r}>"), r)?;
        }
        let data = dot_stuff(message);
        // The size the server will count: the message with CRLFs (the few stuffed dots included).
        let size = data.len().saturating_sub(3) as u64;
        if let Some(limit) = self.extensions.size
            && limit > 0
            && size > limit
        {
            return Err(SmtpError::Unsupported {
                command: mail_cmd,
                detail: format!("the message has {size} bytes; the server accepts at most {limit} (SIZE)"),
            });
        }
        let non_ascii_address = !from.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        if non_ascii_address && !self.extensions.smtputf8 {
            return Err(SmtpError::Unsupported {
                command: mail_cmd,
                detail: "an address is not ASCII and the server does not offer SMTPUTF8".to_owned(),
            });
        }
        let mut params = String::new();
        if self.extensions.size.is_some() {
            params.push_str(&format!(" SIZE={size}"));
        }
        if !message.is_ascii() && self.extensions.eight_bit_mime {
            params.push_str(" BODY=8BITMIME");
        }
        if non_ascii_address {
            params.push_str(" SMTPUTF8");
        }
        self.command(&mail_cmd, &format!("{mail_cmd}{params}\r\n"), 250)?;
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for r in recipients {
            let cmd = format!("RCPT TO:<{r}>");
            match self.command(&cmd, &format!("{cmd}\r\n"), 250) {
                Ok(_) => accepted.push(r.clone()),
                Err(e @ (SmtpError::Retryable { code: 1.., .. } | SmtpError::Permanent { .. })) => {
                    rejected.push((r.clone(), e))
                }
                Err(e) => return Err(e),
            }
        }
        if accepted.is_empty() {
            // Reset the transaction so the session can go on; its outcome does not matter.
            let _ = self.command("RSET", "RSET\r\n", 250);
            let retryable = rejected.iter().position(|(_, e)| e.is_retryable()).unwrap_or(0);
            return Err(rejected.swap_remove(retryable).1);
        }
        self.command("DATA", "DATA\r\n", 354)?;
        self.transport.write(&data).map_err(|text| SmtpError::Retryable { command: "DATA".into(), code: 0, text })?;
        let reply = self.expect("DATA", 250)?;
        Ok(SendReport { accepted, rejected, reply: reply.text() })
    }

    /// Ends the session (`QUIT` → 221). A server that just closes is fine too.
    pub fn quit(mut self) -> Result<T, SmtpError> {
        match self.command("QUIT", "QUIT\r\n", 221) {
            Ok(_) | Err(SmtpError::Retryable { code: 0, .. }) => Ok(self.transport),
            Err(e) => Err(e),
        }
    }

    /// Writes `line` and reads the reply, which must have the code `want`.
    fn command(&mut self, command: &str, line: &str, want: u16) -> Result<Reply, SmtpError> {
        self.transport.write(line.as_bytes()).map_err(|text| SmtpError::Retryable {
            command: command.to_owned(),
            code: 0,
            text,
        })?;
        self.expect(command, want)
    }

    /// Reads a reply and classifies it: `want` is success, 4xx retryable, 5xx permanent.
    fn expect(&mut self, command: &str, want: u16) -> Result<Reply, SmtpError> {
        let reply = self.read_reply(command)?;
        match reply.code {
            c if c == want => Ok(reply),
            400..=499 => {
                Err(SmtpError::Retryable { command: command.to_owned(), code: reply.code, text: reply.text() })
            }
            500..=599 => {
                Err(SmtpError::Permanent { command: command.to_owned(), code: reply.code, text: reply.text() })
            }
            _ => Err(SmtpError::Protocol {
                command: command.to_owned(),
                detail: format!("expected {want}, got {} {}", reply.code, reply.text()),
            }),
        }
    }

    /// Reads one reply, single- or multi-line (`250-…` lines then `250 …`).
    fn read_reply(&mut self, command: &str) -> Result<Reply, SmtpError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = self.read_line(command)?;
            let protocol = |detail: String| SmtpError::Protocol { command: command.to_owned(), detail };
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
                return Err(protocol(format!("reply {:?} does not start with a code", truncate(&line))));
            }
            let this: u16 = line[..3].parse().map_err(|_| protocol("bad reply code".to_owned()))?;
            if !(200..=599).contains(&this) {
                return Err(protocol(format!("reply code {this} out of range")));
            }
            if code.is_some_and(|c| c != this) {
                return Err(protocol(format!("reply lines with different codes: {:?}", truncate(&line))));
            }
            code = Some(this);
            let (last, text) = match bytes.get(3) {
                None => (true, ""),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(protocol(format!("malformed reply {:?}", truncate(&line)))),
            };
            lines.push(text.trim_end().to_owned());
            if last {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= self.config.max_reply_lines {
                return Err(protocol(format!("reply longer than {} lines", self.config.max_reply_lines)));
            }
        }
    }

    fn read_line(&mut self, command: &str) -> Result<String, SmtpError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i + 1;
                let line: Vec<u8> = self.buf.drain(..end).collect();
                if line.len() > self.config.max_line + 2 {
                    break;
                }
                let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
                return Ok(text);
            }
            searched = self.buf.len();
            if self.buf.len() > self.config.max_line + 2 {
                break;
            }
            let chunk = self.transport.read(8192, self.config.timeout_ms).map_err(|text| SmtpError::Retryable {
                command: command.to_owned(),
                code: 0,
                text,
            })?;
            if chunk.is_empty() {
                return Err(SmtpError::Retryable {
                    command: command.to_owned(),
                    code: 0,
                    text: "the server closed the connection".to_owned(),
                });
            }
            self.buf.extend_from_slice(&chunk);
        }
        Err(SmtpError::Protocol {
            command: command.to_owned(),
            detail: format!("reply line longer than {} bytes", self.config.max_line),
        })
    }
}

/// The start of a line, for error messages.
fn truncate(line: &str) -> String {
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
