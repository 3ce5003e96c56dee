//! The protocol core of Plugdesk's e-mail channel plugin.
//!
//! - [`imap`]: an IMAP4rev1 client that fetches new mail incrementally, resumable from a
//!   [`imap::Cursor`], marks it seen and moves it.
//! - [`smtp`]: a submission client (EHLO, STARTTLS, AUTH LOGIN, MAIL/RCPT/DATA) whose every
//!   failure says whether it is worth retrying.
//! - [`compose`]: builds outbound RFC 5322 / MIME messages.
//! - [`thread`]: the keys the core threads incoming mail into tickets with.
//!
//! All I/O goes through a [`Transport`], which in the plugin is the host's TCP connection:
//! the plugin never holds a password, it writes templates with secret placeholders that the
//! host fills in (see [`Transport::write_secret`]). Every byte a server sends is untrusted:
//! lines, literals and counts are bounded, and errors name the command and the server's text.
//!
//! The crate is pure Rust without threads, sockets, files or clocks, so it builds for
//! `wasm32-wasip2` as well as natively.

#![deny(missing_docs)]

mod codec;
pub mod compose;
pub mod imap;
pub mod smtp;
pub mod thread;

#[cfg(test)]
mod testing;

pub use codec::{base64_encode, quoted_printable_encode};

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
