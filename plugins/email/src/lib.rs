//! The `email` channel: a support mailbox. Customers' mail becomes tickets and their replies
//! land on them; agents' answers go out as mail that threads in the customer's mail client.
//!
//! Mail comes in one of two ways, or both:
//!
//! - **IMAP polling**, when `imap_host` is set: on the channel's poll interval the plugin
//!   fetches what arrived after its cursor (`v:UIDVALIDITY:LASTUID`), a batch at a time, and
//!   at the next poll marks it seen, moves it, or leaves it (`imap_after`).
//! - **Piped in by the mail server**: an MTA delivers to `plugdesk mail-in --instance ID`,
//!   which hands the message to the plugin as a webhook request with the token of the secret
//!   `inbound_token` in `X-Plugdesk-Mail-Token`.
//!
//! Each message is parsed ([`email_parse`]) and converted once ([`inbound::convert`]): the
//! normalised Message-ID is its external id; `In-Reply-To`/`References` and a `[#1042]` subject
//! tag tie it to its ticket; the new part of a reply is its text and the quoted history is kept
//! apart; auto-replies and bulk mail are marked automatic; a bounce of one of our messages
//! reports that message as failed instead of opening a ticket; mail the channel sent itself is
//! skipped, and nothing else is: the sender is the first usable address of `From`, `Reply-To`,
//! `Sender`, `Return-Path` or the envelope sender (`X-Plugdesk-Envelope-Sender`, from
//! `plugdesk mail-in --sender`), and mail without any is handed over from
//! [`inbound::UNKNOWN_SENDER`] with a note. Replies are submitted over SMTP ([`outbound`]) with a Message-ID made from the
//! ticket and message (`plugdesk.1042.MSGID@domain`), the same on every retry.
//!
//! # Settings
//!
//! - `address` (required): the support mailbox, `From` of replies.
//! - `from_name`, `reply_to`: display name and `Reply-To` of replies.
//! - `message_id_domain`: domain of reply Message-IDs; default the domain of `address`.
//! - `imap_host`, `imap_port` (993 for `tls`, else 143), `imap_security` (`tls` | `starttls` |
//!   `none`; default `tls`), `imap_user` (default `address`), `imap_mailbox` (default `INBOX`),
//!   `imap_after` (`seen` | `move` | `keep`; default `seen`), `imap_move_to` (default
//!   `Processed`, created when missing), `batch_messages` (default 200), `batch_bytes` (raw
//!   bytes per poll, default 6 MiB). Without `imap_host` the channel does not poll.
//! - `smtp_host`, `smtp_port` (465 for `tls`, 587 for `starttls`, 25 for `none`),
//!   `smtp_security` (default `starttls`), `smtp_user` (AUTH PLAIN or LOGIN only when set). Without
//!   `smtp_host` the channel does not send.
//! - `automatic_per_recipient_per_hour` (default 10): loop protection for automatic mail.
//! - `max_attachment_bytes` (default 10 MiB): larger attachments are left out with a note.
//! - `max_raw_bytes` (default 10 MiB): the largest message source kept; 0 keeps none.
//!
//! # Secrets
//!
//! `imap_password`, `smtp_password`, `inbound_token` (for piped mail). None of them enters the
//! plugin: logins are written as templates the host fills in (`{{secret_quoted:…}}`,
//! `{{secret_base64:…}}`), and the token is compared by the host.
//!
//! # Grants
//!
//! `secrets`, `kv` (the loop protection's counts), `tcp:IMAP_HOST:PORT`, `tcp:SMTP_HOST:PORT`.
//!
//! # Modules
//!
//! The plugin's own logic — [`settings`], [`inbound`], [`mailbox`], [`outbound`] — works on
//! the SDK's records but never calls the host: I/O goes through a [`Transport`] (in the plugin
//! the host's TCP connection) and logging through a callback, so all of it runs natively in
//! tests, against scripted servers and real Dovecot and aiosmtpd. The protocol core beneath
//! knows nothing of Plugdesk:
//!
//! - [`imap`]: an IMAP4rev1 client that fetches new mail incrementally, resumable from a
//!   [`imap::Cursor`], marks it seen and moves it.
//! - [`smtp`]: a submission client (EHLO, STARTTLS, AUTH PLAIN or LOGIN, MAIL/RCPT/DATA) whose every
//!   failure says whether it is worth retrying.
//! - [`compose`]: builds outbound RFC 5322 / MIME messages.
//! - [`thread`]: the keys the core threads incoming mail into tickets with.
//!
//! Every byte a server sends is untrusted: lines, literals and counts are bounded, and errors
//! name the command and the server's text. The crate has no threads, sockets, files or clocks
//! of its own, so it builds for `wasm32-wasip2` as well as natively.

#![deny(missing_docs)]

mod codec;
pub mod compose;
pub mod imap;
pub mod inbound;
pub mod mailbox;
pub mod outbound;
mod plugin;
pub mod settings;
pub mod smtp;
pub mod thread;

#[cfg(test)]
mod testing;

pub use codec::{base64_encode, quoted_printable_encode};

/// The level of a line the channel logs (the host's log in the plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal operation: mail skipped on purpose, a mailbox renumbered.
    Info,
    /// Something to look at: mail that could not be read whole, or not taken in.
    Warn,
}

/// A byte stream to a mail server. In the plugin it is the host's TCP connection; in tests a
/// scripted fake or a socket.
pub trait Transport {
    /// Writes all of `data`.
    fn write(&mut self, data: &[u8]) -> Result<(), String>;
    /// Writes `template` with secret placeholders filled in by whoever holds the secrets:
    /// `{{secret:NAME}}` (the secret as it is), `{{secret_base64:NAME}}` (its base64) and
    /// `{{secret_quoted:NAME}}` (an IMAP quoted string: the secret in double quotes, with `"`
    /// and `\` escaped by a backslash).
    fn write_secret(&mut self, template: &str) -> Result<(), String>;
    /// Reads up to `max` bytes, waiting at most `timeout_ms`. An empty result means the
    /// connection was closed; a timeout is an error.
    fn read(&mut self, max: usize, timeout_ms: u32) -> Result<Vec<u8>, String>;
    /// Starts TLS on the connection (after the server agreed to STARTTLS).
    fn start_tls(&mut self) -> Result<(), String>;
}
