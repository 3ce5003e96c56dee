//! Messages on a ticket — a customer's inbound message, an agent's reply, an internal note —
//! and their attachments, stored once per workspace by content hash.

use base64::Engine as _;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ConnectionTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Status, apply_status, find, outbox, targets_of};
use crate::db;
use crate::entity::ticket;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};
use crate::sla::{self, Clock};

/// Most attachments on one message.
const MAX_ATTACHMENTS: usize = 20;

/// What kind of message is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// From the customer (reopens the ticket, starts the next-response clock).
    Inbound,
    /// An agent's reply to the customer (meets the response clocks).
    Reply,
    /// Visible to agents only.
    Note,
}

impl MessageKind {
    fn direction(self) -> &'static str {
        match self {
            MessageKind::Inbound => "inbound",
            MessageKind::Reply => "outbound",
            MessageKind::Note => "internal",
        }
    }
}

/// An attachment as sent in JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    /// File name shown to agents.
    pub filename: String,
    /// MIME type.
    #[serde(default = "octet_stream")]
    pub content_type: String,
    /// Content, base64.
    pub data: String,
}

fn octet_stream() -> String {
    "application/octet-stream".into()
}

/// A decoded, checked attachment.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: String,
}

/// Decodes and checks attachments against the size limit.
pub(crate) fn decode_attachments(input: &[AttachmentInput], max_bytes: usize) -> Result<Vec<Attachment>> {
    if input.len() > MAX_ATTACHMENTS {
        return Err(Error::invalid("attachments", format!("a message has at most {MAX_ATTACHMENTS} attachments")));
    }
    input
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let field = format!("attachments[{i}]");
            let name = a.filename.trim();
            if name.is_empty() || name.len() > 255 || name.contains(['/', '\\', '\0']) {
                return Err(Error::invalid(&field, "filename must be 1-255 characters without slashes"));
            }
            if a.data.len() > max_bytes / 3 * 4 + 4 {
                return Err(Error::invalid(&field, format!("{name} is larger than the limit of {max_bytes} bytes")));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.data.trim())
                .map_err(|e| Error::invalid(&field, format!("data of {name} is not valid base64: {e}")))?;
            if bytes.len() > max_bytes {
                return Err(Error::invalid(&field, format!("{name} is larger than the limit of {max_bytes} bytes")));
            }
            let sha256 = hex::encode(Sha256::digest(&bytes));
            Ok(Attachment { filename: name.to_owned(), content_type: a.content_type.clone(), bytes, sha256 })
        })
        .collect()
}

/// Stores attachments (once per content hash) and links them to a message.
pub(crate) async fn store_attachments<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    message_id: i64,
    items: &[Attachment],
) -> Result<()> {
    for a in items {
        db::exec(
            db,
            "INSERT INTO attachments (workspace_id, sha256, size, content_type, data, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, sha256) DO NOTHING",
            vec![workspace_id.into(), a.sha256.clone().into(), (a.bytes.len() as i64).into(), a.content_type.clone().into(), a.bytes.clone().into(), crate::now_ms().into()],
        )
        .await?;
        let row = db::query_one(
            db,
            "SELECT id FROM attachments WHERE workspace_id = ? AND sha256 = ?",
            vec![workspace_id.into(), a.sha256.clone().into()],
        )
        .await?
        .ok_or_else(|| Error::Internal("attachment vanished after insert".into()))?;
        let id: i64 = db::col(&row, "id")?;
        db::exec(
            db,
            "INSERT INTO message_attachments (message_id, attachment_id, workspace_id, filename) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            vec![message_id.into(), id.into(), workspace_id.into(), a.filename.clone().into()],
        )
        .await?;
    }
    Ok(())
}

/// A message to add to a ticket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// Plain-text body.
    pub body: String,
    /// HTML body, if the channel has one.
    #[serde(default)]
    pub body_html: Option<String>,
    /// Channel; the ticket's channel when missing.
    #[serde(default)]
    pub channel: Option<String>,
    /// The channel's id of the message; a second message with the same id is not stored
    /// twice.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    /// A subject of its own (an e-mail reply's subject line); the ticket's subject when missing.
    #[serde(default)]
    pub subject: Option<String>,
    /// Quoted history and signature below the new text, kept apart so the timeline shows the
    /// new part first.
    #[serde(default)]
    pub body_quoted: Option<String>,
    /// Sent by a machine (an auto-reply, a notification): never answered automatically.
    #[serde(default)]
    pub automatic: bool,
    /// For a reply: the channel it leaves through, one of the ticket's reply routes (another
    /// identity of the customer); the ticket's default route when missing.
    #[serde(default)]
    pub reply_channel_id: Option<i64>,
    /// The message as it arrived (an e-mail's source), kept beside it. Set by the inbound
    /// path only.
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    /// The webhook request that brought the message, recorded in the same transaction (set by
    /// the inbound path, never by API callers).
    #[serde(skip)]
    pub receipt: Option<crate::receipt::Receipt>,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Id.
    pub id: i64,
    /// Ticket.
    pub ticket_id: i64,
    /// `inbound`, `outbound` or `internal`.
    pub direction: String,
    /// Channel.
    pub channel: String,
    /// `customer`, `agent` or `system`.
    pub author_kind: String,
    /// Author id (customer or agent).
    pub author_id: Option<i64>,
    /// Plain text.
    pub body: String,
    /// HTML.
    pub body_html: Option<String>,
    /// Quoted history and signature (e-mail), shown collapsed below the body.
    pub body_quoted: Option<String>,
    /// The message's own subject line, if it has one.
    pub subject: Option<String>,
    /// Sent by a machine (auto-reply, notification, bounce).
    pub automatic: bool,
    /// The language of an inbound message's text, as detected (none when too short to tell).
    pub language: Option<LanguageView>,
    /// Whether the original source is kept (`GET …/messages/{id}/source`).
    pub has_source: bool,
    /// The channel's id.
    pub external_id: Option<String>,
    /// Delivery state of a reply that leaves through a channel: `queued`, `retrying`,
    /// `sent` or `failed` (none for replies on tickets without a sending channel).
    pub delivery_status: Option<String>,
    /// Why the last delivery attempt failed.
    pub delivery_error: Option<String>,
    /// Attachments.
    pub attachments: Vec<AttachmentView>,
    /// Created.
    pub created_at: String,
}

/// The detected language of a message.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageView {
    /// ISO 639-1 code (`de`), or ISO 639-3 for languages without one.
    pub code: String,
    /// The script (`Latin`, `Cyrillic`…).
    pub script: Option<String>,
    /// The detector's confidence, 0 to 1.
    pub confidence: Option<f64>,
}

/// An attachment as listed on a message.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    /// Id (download at `/api/v1/attachments/{id}`).
    pub id: i64,
    /// File name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// Checks a message's own subject and body, and decodes its attachments.
fn check_input(input: &MessageInput, limits: &crate::config::Limits) -> Result<Vec<Attachment>> {
    validate_body(&input.body, input.body_html.as_deref(), limits.max_message_bytes)?;
    if let Some(s) = &input.subject {
        super::validate_subject(s, limits.max_subject_chars)?;
    }
    if input.body_quoted.as_ref().is_some_and(|q| q.len() > limits.max_message_bytes) {
        return Err(Error::invalid(
            "body_quoted",
            format!("quoted text is larger than {} bytes", limits.max_message_bytes),
        ));
    }
    decode_attachments(&input.attachments, limits.max_attachment_bytes)
}

/// Checks a message body against the size limit.
pub(crate) fn validate_body(body: &str, html: Option<&str>, max_bytes: usize) -> Result<()> {
    if body.trim().is_empty() && html.is_none_or(|h| h.trim().is_empty()) {
        return Err(Error::invalid("body", "message body must not be empty"));
    }
    if body.len() > max_bytes || html.is_some_and(|h| h.len() > max_bytes) {
        return Err(Error::invalid("body", format!("message body is larger than {max_bytes} bytes")));
    }
    Ok(())
}

/// Adds a message to a ticket in one transaction, with what it means for the ticket: an agent's
/// reply meets the response clocks and opens a new ticket; a customer's message reopens a
/// pending, resolved or closed ticket and starts the next-response clock.
///
/// Returns the message and whether it was stored now (`false` when its external id was known).
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`].
pub async fn add_message(
    core: &crate::Domain,
    workspace_id: i64,
    ticket_id: i64,
    kind: MessageKind,
    author_id: Option<i64>,
    actor: &str,
    input: &MessageInput,
) -> Result<(MessageView, bool)> {
    let attachments = check_input(input, core.limits())?;
    let txn = db::begin_write(core.db()).await?;
    let before = find(&txn, workspace_id, ticket_id).await?;
    let channel = input.channel.clone().unwrap_or_else(|| before.channel.clone());
    if let Some(ext) = &input.external_id {
        let known = db::query_one(
            &txn,
            "SELECT id FROM messages WHERE workspace_id = ? AND channel = ? AND external_id = ?",
            vec![workspace_id.into(), channel.clone().into(), ext.clone().into()],
        )
        .await?;
        if let Some(row) = known {
            if let Some(r) = &input.receipt {
                let (sql, values) = r.insert("processed", None, Some(ticket_id));
                db::exec(&txn, &sql, values).await?;
                txn.commit().await?;
            } else {
                drop(txn);
            }
            let id: i64 = db::col(&row, "id")?;
            let msg = messages(core.db(), workspace_id, ticket_id, Some(id))
                .await?
                .pop()
                .ok_or(Error::NotFound("message"))?;
            return Ok((msg, false));
        }
    }
    let (message_id, events, outbound) =
        insert_message(&txn, core, workspace_id, &before, kind, author_id, actor, input, &attachments).await?;
    txn.commit().await?;
    core.bus().publish(events);
    if outbound {
        core.wake_outbox();
    }
    let msg = messages(core.db(), workspace_id, ticket_id, Some(message_id))
        .await?
        .pop()
        .ok_or(Error::NotFound("message"))?;
    Ok((msg, true))
}

/// Adds a note or reply written by a rule inside the caller's transaction (no external id, no
/// receipt); returns the message's id, the events to publish once the transaction has
/// committed, and whether the outbox has a new row to send.
///
/// # Errors
/// As [`add_message`].
pub async fn add_message_in<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Domain,
    workspace_id: i64,
    ticket_id: i64,
    kind: MessageKind,
    actor: &str,
    input: &MessageInput,
) -> Result<(i64, Vec<event::Event>, bool)> {
    let attachments = check_input(input, core.limits())?;
    let before = find(txn, workspace_id, ticket_id).await?;
    insert_message(txn, core, workspace_id, &before, kind, None, actor, input, &attachments).await
}

#[allow(clippy::too_many_arguments)]
async fn insert_message<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Domain,
    workspace_id: i64,
    before: &ticket::Model,
    kind: MessageKind,
    author_id: Option<i64>,
    actor: &str,
    input: &MessageInput,
    attachments: &[Attachment],
) -> Result<(i64, Vec<event::Event>, bool)> {
    let ticket_id = before.id;
    let channel = input.channel.clone().unwrap_or_else(|| before.channel.clone());
    let now = crate::now_ms();
    let author_kind = match kind {
        MessageKind::Inbound => "customer",
        _ if actor.starts_with("automation:") || actor.starts_with("workflow:") => "automation",
        _ => "agent",
    };
    let author_id = if kind == MessageKind::Inbound { Some(before.customer_id) } else { author_id };
    let message_id = db::reserve_ids(txn, "messages", 1).await?[0];
    let outbound = if kind == MessageKind::Reply {
        outbox::chosen_or_default(txn, core, before, input.reply_channel_id).await?
    } else {
        None
    };
    // What the customer writes in; replies and notes are ours.
    let detected = if kind == MessageKind::Inbound { crate::language::detect(&input.body) } else { None };
    db::exec(
        txn,
        "INSERT INTO messages (id, workspace_id, ticket_id, direction, channel, author_kind, author_id, body_text, body_html, body_quoted, subject, automatic, external_id, delivery_status, language, language_script, language_confidence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            message_id.into(),
            workspace_id.into(),
            ticket_id.into(),
            kind.direction().into(),
            channel.clone().into(),
            author_kind.into(),
            author_id.into(),
            input.body.clone().into(),
            input.body_html.clone().into(),
            input.body_quoted.clone().into(),
            input.subject.clone().into(),
            i32::from(input.automatic).into(),
            input.external_id.clone().into(),
            outbound.map(|_| outbox::QUEUED).into(),
            detected.as_ref().map(|d| d.code).into(),
            detected.as_ref().map(|d| d.script.clone()).into(),
            detected.as_ref().map(|d| d.confidence).into(),
            now.into(),
        ],
    )
    .await?;
    if let Some(channel_id) = outbound {
        outbox::enqueue(txn, workspace_id, channel_id, ticket_id, message_id, now).await?;
    }
    store_attachments(txn, workspace_id, message_id, attachments).await?;
    if let Some(raw) = &input.raw {
        db::exec_all(txn, vec![source_insert(workspace_id, message_id, raw, now)]).await?;
    }
    if let Some(r) = &input.receipt {
        let (sql, values) = r.insert("processed", None, Some(ticket_id));
        db::exec(txn, &sql, values).await?;
    }
    crate::search::index(txn, workspace_id, "message", message_id, Some(ticket_id), &input.body).await?;

    let mut row: ticket::ActiveModel = before.clone().into();
    let status = Status::parse(&before.status)?;
    let mut new_status = status;
    let targets = targets_of(txn, before).await?;
    match kind {
        // An automatic answer (a workflow's or an automation's) tells the customer we have it;
        // it is not a response: the clocks and the status wait for a person.
        MessageKind::Reply if author_kind == "automation" => {}
        MessageKind::Reply => {
            if before.first_response_at.is_none() {
                row.first_response_at = Set(Some(now));
            }
            sla::stop(txn, ticket_id, &[Clock::FirstResponse, Clock::NextResponse]).await?;
            if status == Status::New {
                new_status = Status::Open;
            }
        }
        MessageKind::Inbound => {
            if status != Status::New && status != Status::Open {
                new_status = Status::Open;
            }
            if before.first_response_at.is_some() {
                sla::restart(txn, sla::NewTimer::new(workspace_id, ticket_id, Clock::NextResponse, now, &targets))
                    .await?;
            }
        }
        MessageKind::Note => {}
    }
    apply_status(txn, &mut row, before, new_status, now, &targets).await?;
    row.updated_at = Set(now);
    row.update(txn).await?;

    let kind_name = match kind {
        MessageKind::Inbound => "message.received",
        MessageKind::Reply => "message.sent",
        MessageKind::Note => "note.added",
    };
    let mut events = vec![NewEvent {
        kind: kind_name,
        actor: actor.to_owned(),
        ticket_id: Some(ticket_id),
        customer_id: Some(before.customer_id),
        changes: json!({ "message_id": message_id, "channel": channel, "direction": kind.direction() }),
    }];
    if new_status != status {
        events.push(NewEvent {
            kind: "ticket.updated",
            actor: actor.to_owned(),
            ticket_id: Some(ticket_id),
            customer_id: Some(before.customer_id),
            changes: json!({ "status": { "before": status.as_str(), "after": new_status.as_str() } }),
        });
    }
    let events = event::append(txn, workspace_id, events).await?;
    Ok((message_id, events, outbound.is_some()))
}

/// The insert of a message's original source.
pub(crate) fn source_insert(workspace_id: i64, message_id: i64, raw: &[u8], now: i64) -> db::Sql {
    (
        "INSERT INTO message_sources (message_id, workspace_id, data, created_at) VALUES (?, ?, ?, ?)".into(),
        vec![message_id.into(), workspace_id.into(), raw.to_vec().into(), now.into()],
    )
}

/// The original source of a message (an e-mail as it arrived), if it was kept.
///
/// # Errors
/// [`Error::NotFound`] for an unknown ticket or message, or a message without a source.
pub async fn source<C: ConnectionTrait>(db: &C, workspace_id: i64, ticket_id: i64, message_id: i64) -> Result<Vec<u8>> {
    find(db, workspace_id, ticket_id).await?;
    let row = db::query_one(
        db,
        "SELECT s.data FROM message_sources s JOIN messages m ON m.id = s.message_id WHERE s.message_id = ? AND m.ticket_id = ? AND s.workspace_id = ?",
        vec![message_id.into(), ticket_id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("message source"))?;
    db::col(&row, "data")
}

/// The messages of a ticket, oldest first (or only `only`).
///
/// # Errors
/// [`Error::NotFound`] for an unknown ticket.
pub async fn messages<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    ticket_id: i64,
    only: Option<i64>,
) -> Result<Vec<MessageView>> {
    find(db, workspace_id, ticket_id).await?;
    let (filter, mut values): (&str, Vec<sea_orm::Value>) = match only {
        Some(id) => (" AND id = ?", vec![ticket_id.into(), id.into()]),
        None => ("", vec![ticket_id.into()]),
    };
    let rows = db::query_all(
        db,
        &format!("SELECT * FROM messages WHERE ticket_id = ?{filter} ORDER BY id"),
        values.split_off(0),
    )
    .await?;
    let atts = db::query_all(
        db,
        "SELECT ma.message_id, a.id, ma.filename, a.content_type, a.size, a.sha256 FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id JOIN messages m ON m.id = ma.message_id WHERE m.ticket_id = ? ORDER BY a.id",
        vec![ticket_id.into()],
    )
    .await?;
    let sources: Vec<i64> = db::query_all(
        db,
        "SELECT s.message_id FROM message_sources s JOIN messages m ON m.id = s.message_id WHERE m.ticket_id = ?",
        vec![ticket_id.into()],
    )
    .await?
    .iter()
    .map(|r| db::col(r, "message_id"))
    .collect::<Result<_>>()?;
    rows.iter()
        .map(|r| {
            let m = <crate::entity::message::Model as sea_orm::FromQueryResult>::from_query_result(r, "")?;
            let language = m.language.map(|code| {
                Ok::<_, Error>(LanguageView {
                    code,
                    script: m.language_script,
                    confidence: db::col(r, "language_confidence")?,
                })
            });
            let mut attachments = Vec::new();
            for a in &atts {
                if db::col::<i64>(a, "message_id")? == m.id {
                    attachments.push(AttachmentView {
                        id: db::col(a, "id")?,
                        filename: db::col(a, "filename")?,
                        content_type: db::col(a, "content_type")?,
                        size: db::col(a, "size")?,
                        sha256: db::col(a, "sha256")?,
                    });
                }
            }
            Ok(MessageView {
                id: m.id,
                ticket_id: m.ticket_id,
                direction: m.direction,
                channel: m.channel,
                author_kind: m.author_kind,
                author_id: m.author_id,
                body: m.body_text,
                body_html: m.body_html,
                body_quoted: m.body_quoted,
                subject: m.subject,
                has_source: sources.contains(&m.id),
                automatic: m.automatic != 0,
                language: language.transpose()?,
                external_id: m.external_id,
                delivery_status: m.delivery_status,
                delivery_error: m.delivery_error,
                attachments,
                created_at: crate::rfc3339(m.created_at),
            })
        })
        .collect()
}

/// An attachment's content type and bytes.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn attachment<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<(String, Vec<u8>)> {
    let row = db::query_one(
        db,
        "SELECT content_type, data FROM attachments WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("attachment"))?;
    Ok((db::col(&row, "content_type")?, db::col(&row, "data")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_decoded_hashed_and_limited() {
        let ok =
            AttachmentInput { filename: "a.txt".into(), content_type: "text/plain".into(), data: "aGFsbG8=".into() };
        let a = decode_attachments(std::slice::from_ref(&ok), 100).map_err(|e| e.to_string());
        let a = a.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a[0].bytes, b"hallo");
        assert_eq!(a[0].sha256, hex::encode(Sha256::digest(b"hallo")));
        let big =
            AttachmentInput { data: base64::engine::general_purpose::STANDARD.encode(vec![0u8; 101]), ..ok.clone() };
        assert!(decode_attachments(&[big], 100).is_err());
        let bad = AttachmentInput { data: "***".into(), ..ok.clone() };
        let err = decode_attachments(&[bad], 100).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not valid base64"), "{err}");
        let slash = AttachmentInput { filename: "../etc/passwd".into(), ..ok };
        assert!(decode_attachments(&[slash], 100).is_err());
    }
}
