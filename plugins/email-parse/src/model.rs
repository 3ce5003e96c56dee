//! The types `parse` returns, and the limits it works within.

use std::fmt;

/// Bounds that keep parsing cheap whatever the input. Every input is untrusted: a message that
/// goes past a bound is still parsed, the excess is cut or dropped, and a [`Problem`] says what.
///
/// `Limits::default()` suits a helpdesk mailbox; build a custom one with struct update syntax:
///
/// ```
/// let limits = email_parse::Limits { max_attachment_bytes: 10 << 20, ..Default::default() };
/// assert_eq!(limits.max_parts, 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deeply multiparts (and attached messages) may nest. A multipart deeper than this is
    /// not opened: it is kept whole as one attachment. Default 20.
    pub max_depth: usize,
    /// How many MIME parts (containers included) are read; the rest are ignored. Default 500.
    pub max_parts: usize,
    /// The longest header line, and the longest unfolded header field, in bytes; longer ones
    /// are cut. Default 16 KiB.
    pub max_header_line: usize,
    /// How many header fields are read per header section; the rest are ignored. Default 1000.
    pub max_headers: usize,
    /// The largest decoded attachment; a larger one is dropped. Default 25 MiB.
    pub max_attachment_bytes: usize,
    /// The largest message read (a longer input is cut), and the most decoded content (bodies
    /// and attachments together) kept from it. Default 40 MiB.
    pub max_total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 20,
            max_parts: 500,
            max_header_line: 16 * 1024,
            max_headers: 1000,
            max_attachment_bytes: 25 * 1024 * 1024,
            max_total_bytes: 40 * 1024 * 1024,
        }
    }
}

/// One header field, as it stands in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name as written (compare it case-insensitively).
    pub name: String,
    /// The unfolded value, trimmed, with RFC 2047 encoded-words left as they are (see
    /// [`decode_header`](crate::decode_header)). Bytes that are not UTF-8 are read in the
    /// message's charset (see [`parse`](crate::parse)) in the message's own header fields, and
    /// as Windows-1252 in a part's.
    pub value: String,
}

/// A mailbox from an address header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// The display name, decoded (RFC 2047) and unquoted; `None` when there is none.
    pub name: Option<String>,
    /// The address, `local@domain`, with the domain lowercased (the local part is kept as written).
    pub email: String,
}

/// The `Date` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDate {
    /// The header value as written.
    pub raw: String,
    /// The moment it names, in Unix seconds; `None` when it could not be read as a date.
    pub unix: Option<i64>,
}

/// A part of the message that is not its body text: a file, an inline image, an attached
/// message (`message/rfc822`), a delivery report, …
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// The file name (RFC 2231 and RFC 2047 decoded, any directory part and control characters
    /// removed). An attached message without one is named after its subject, plus `.eml`.
    pub filename: Option<String>,
    /// The MIME type, lowercased, without parameters, e.g. `application/pdf`.
    pub content_type: String,
    /// The `Content-ID`, without angle brackets, which HTML refers to as `cid:…`.
    pub content_id: Option<String>,
    /// Whether the part is meant to be shown within the message (e.g. an image the HTML uses)
    /// rather than offered as a download.
    pub inline: bool,
    /// The decoded content.
    pub data: Vec<u8>,
}

/// What kind of trouble a [`Problem`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The input was longer than `max_total_bytes`, or the decoded content outgrew it.
    MessageTooLarge,
    /// A header line or field was longer than `max_header_line`.
    HeaderLineTooLong,
    /// A header section had more than `max_headers` fields.
    TooManyHeaders,
    /// A header section was malformed (a line that is no header, no blank line after it, …).
    MalformedHeader,
    /// An address header held something that is no address.
    InvalidAddress,
    /// A charset that is not known; the text was read as UTF-8 with replacement characters.
    UnknownCharset,
    /// Text whose declared charset did not fit its bytes, or 8-bit text without a declared
    /// charset (a body, a raw header value, an encoded-word), was read in a detected charset.
    CharsetMismatch,
    /// A transfer encoding that is not known; the data was kept as it is.
    UnknownTransferEncoding,
    /// Base64 data that could not be decoded to the end.
    InvalidBase64,
    /// A multipart without a boundary, or whose boundary never appears.
    MissingBoundary,
    /// The message ended inside a multipart.
    Truncated,
    /// Multiparts nested deeper than `max_depth`.
    TooDeep,
    /// More than `max_parts` parts.
    TooManyParts,
    /// An attachment larger than `max_attachment_bytes`.
    AttachmentTooLarge,
    /// More problems than are listed.
    TooManyProblems,
}

/// Something in the message that could not be read as it should, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of trouble it is.
    pub kind: ProblemKind,
    /// A sentence for a person: where, what, and what was kept, e.g.
    /// `part 2: invalid base64 at byte 120; kept the data decoded so far`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A parsed message: what could be read from it, and the problems met on the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// All header fields of the message, in order.
    pub headers: Vec<Header>,
    /// The decoded `Subject`.
    pub subject: Option<String>,
    /// The `From` mailboxes (usually one).
    pub from: Vec<Address>,
    /// The `To` mailboxes (groups flattened).
    pub to: Vec<Address>,
    /// The `Cc` mailboxes (groups flattened).
    pub cc: Vec<Address>,
    /// The `Reply-To` mailboxes.
    pub reply_to: Vec<Address>,
    /// The `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// The ids in `In-Reply-To`, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// The ids in `References`, oldest first, without angle brackets or duplicates.
    pub references: Vec<String>,
    /// The `Date` header.
    pub date: Option<MessageDate>,
    /// The best plain-text body: the `text/plain` parts, or else the HTML made readable as text.
    /// Line breaks are `\n`; `format=flowed` text is unwrapped.
    pub text: Option<String>,
    /// The HTML body, decoded to a string, as it is (not sanitised: never show it unfiltered).
    pub html: Option<String>,
    /// Everything else: files, inline images, attached messages, reports.
    pub attachments: Vec<Attachment>,
    /// What could not be read as it should; empty for a well-formed message.
    pub problems: Vec<Problem>,
}

impl Parsed {
    /// The value of the first header field named `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_all(name).next()
    }

    /// The values of all header fields named `name` (case-insensitive), in order.
    pub fn headers_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
}

/// The cap on listed problems: a hostile message could otherwise make one per line.
pub(crate) const MAX_PROBLEMS: usize = 100;

/// Problems collected while parsing, capped at [`MAX_PROBLEMS`].
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub list: Vec<Problem>,
    pub unlisted: usize,
}

impl Problems {
    /// Adds the problems of `other` after these, within the cap.
    pub fn append(&mut self, other: Problems) {
        for problem in other.list {
            self.push(problem.kind, problem.message);
        }
        self.unlisted += other.unlisted;
    }

    /// Records a problem, or counts it when the list is full.
    pub fn push(&mut self, kind: ProblemKind, message: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(Problem { kind, message });
        } else {
            self.unlisted += 1;
        }
    }

    /// The final list, with a closing note for the unlisted ones.
    pub fn finish(mut self) -> Vec<Problem> {
        if self.unlisted > 0 {
            self.list.push(Problem {
                kind: ProblemKind::TooManyProblems,
                message: format!("{} more problems not listed", self.unlisted),
            });
        }
        self.list
    }
}
