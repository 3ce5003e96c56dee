//! Merging two tickets of one customer: the messages, pending replies and running SLA clocks
//! move to the surviving ticket; the merged one is closed and points to the survivor
//! (`ticket_merges`), its own history staying where it was written. Splitting is the other
//! way: a customer's message that raises a second matter starts a ticket of its own.

use sea_orm::ConnectionTrait;
use serde_json::json;

use base64::Engine as _;

use super::{AttachmentInput, Created, NewTicket, Priority, Status, attachment, find, messages};
use crate::db;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};

/// The ticket a merged ticket now lives in, if it was merged.
///
/// # Errors
/// Database errors.
pub async fn merged_into<C: ConnectionTrait>(db: &C, workspace_id: i64, ticket_id: i64) -> Result<Option<(i64, i64)>> {
    let row = db::query_one(
        db,
        "SELECT m.target_id, t.number FROM ticket_merges m JOIN tickets t ON t.id = m.target_id \
         WHERE m.source_id = ? AND m.workspace_id = ?",
        vec![ticket_id.into(), workspace_id.into()],
    )
    .await?;
    row.map(|r| Ok((db::col(&r, "target_id")?, db::col(&r, "number")?))).transpose()
}

/// The id of the workspace's ticket with this number.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn id_by_number<C: ConnectionTrait>(db: &C, workspace_id: i64, number: i64) -> Result<i64> {
    let row = db::query_one(
        db,
        "SELECT id FROM tickets WHERE workspace_id = ? AND number = ?",
        vec![workspace_id.into(), number.into()],
    )
    .await?
    .ok_or(Error::NotFound("ticket"))?;
    db::col(&row, "id")
}

/// Merges ticket `source` into `target` in one transaction; returns how many messages moved.
///
/// # Errors
/// [`Error::Invalid`] for a merge into itself or across customers; [`Error::Conflict`] when
/// either was merged already; [`Error::NotFound`].
pub async fn merge(core: &crate::Domain, workspace_id: i64, source: i64, target: i64, actor: &str) -> Result<u64> {
    if source == target {
        return Err(Error::invalid("target", "a ticket cannot be merged into itself"));
    }
    let txn = db::begin_write(core.db()).await?;
    let (src, dst) = (find(&txn, workspace_id, source).await?, find(&txn, workspace_id, target).await?);
    if src.customer_id != dst.customer_id {
        return Err(Error::invalid(
            "target",
            format!("ticket #{} belongs to another customer; only tickets of one customer are merged", dst.number),
        ));
    }
    for (t, what) in [(&src, "merged already"), (&dst, "merged into another ticket; merge into that one")] {
        if merged_into(&txn, workspace_id, t.id).await?.is_some() {
            return Err(Error::Conflict(format!("ticket #{} was {what}", t.number)));
        }
    }
    let now = crate::now_ms();
    let moved =
        db::exec(&txn, "UPDATE messages SET ticket_id = ? WHERE ticket_id = ?", vec![target.into(), source.into()])
            .await?;
    db::exec(&txn, "UPDATE outbox SET ticket_id = ? WHERE ticket_id = ?", vec![target.into(), source.into()]).await?;
    // Running clocks: the survivor keeps the earlier due time of each kind.
    // Read by ticket alone and tested here: a state test in the query could lead the planner
    // to the due-time index (every running clock) instead of the ticket's own.
    let clocks = db::query_all(
        &txn,
        "SELECT kind, started_at, due_at, warn_at, breached_at, paused_at FROM sla_timers WHERE ticket_id = ?",
        vec![source.into()],
    )
    .await?;
    for c in &clocks {
        let (breached, paused): (Option<i64>, Option<i64>) = (db::col(c, "breached_at")?, db::col(c, "paused_at")?);
        if breached.is_some() || paused.is_some() {
            continue;
        }
        let (kind, due, warn, started): (String, i64, i64, i64) =
            (db::col(c, "kind")?, db::col(c, "due_at")?, db::col(c, "warn_at")?, db::col(c, "started_at")?);
        let updated = db::exec(
            &txn,
            "UPDATE sla_timers SET due_at = ?, warn_at = ? WHERE ticket_id = ? AND kind = ? AND due_at > ? AND breached_at IS NULL",
            vec![due.into(), warn.into(), target.into(), kind.clone().into(), due.into()],
        )
        .await?;
        let exists = db::query_one(
            &txn,
            "SELECT 1 AS one FROM sla_timers WHERE ticket_id = ? AND kind = ?",
            vec![target.into(), kind.clone().into()],
        )
        .await?
        .is_some();
        if updated == 0 && !exists {
            db::exec(
                &txn,
                "INSERT INTO sla_timers (workspace_id, ticket_id, kind, started_at, due_at, warn_at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![workspace_id.into(), target.into(), kind.into(), started.into(), due.into(), warn.into()],
            )
            .await?;
        }
    }
    crate::sla::stop_all(&txn, source).await?;
    db::exec(
        &txn,
        "INSERT INTO ticket_merges (source_id, target_id, workspace_id, messages, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![source.into(), target.into(), workspace_id.into(), (moved as i64).into(), actor.into(), now.into()],
    )
    .await?;
    let closed = Status::Closed.as_str();
    db::exec(
        &txn,
        "UPDATE tickets SET status = ?, closed_at = COALESCE(closed_at, ?), resolved_at = COALESCE(resolved_at, ?), updated_at = ? WHERE id = ?",
        vec![closed.into(), now.into(), now.into(), now.into(), source.into()],
    )
    .await?;
    db::exec(&txn, "UPDATE tickets SET updated_at = ? WHERE id = ?", vec![now.into(), target.into()]).await?;
    let events = event::append(
        &txn,
        workspace_id,
        vec![
            NewEvent {
                kind: "ticket.merged",
                actor: actor.to_owned(),
                ticket_id: Some(source),
                customer_id: Some(src.customer_id),
                changes: json!({
                    "into_id": target, "into_number": dst.number, "messages": moved,
                    "status": { "before": src.status, "after": closed },
                }),
            },
            NewEvent {
                kind: "ticket.merged_in",
                actor: actor.to_owned(),
                ticket_id: Some(target),
                customer_id: Some(dst.customer_id),
                changes: json!({ "from_id": source, "from_number": src.number, "messages": moved }),
            },
        ],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    Ok(moved)
}

/// Starts a new ticket from a customer's message of ticket `source` (a second matter raised
/// in the same thread): the same customer, channel and priority, the message's text and
/// attachments as its first message, its own clocks and rules. The message stays where it was
/// written; both tickets record the split. Splitting the same message again returns the
/// ticket made the first time.
///
/// # Errors
/// [`Error::Invalid`] for a message that is not the customer's; [`Error::NotFound`].
pub async fn split(
    core: &crate::Domain,
    workspace_id: i64,
    source: i64,
    message_id: i64,
    actor: &str,
) -> Result<Created> {
    let db = core.db();
    let src = find(db, workspace_id, source).await?;
    let m = messages(db, workspace_id, source, Some(message_id)).await?.pop().ok_or(Error::NotFound("message"))?;
    if m.direction != "inbound" {
        return Err(Error::invalid("message", "only a customer's message can start a ticket of its own"));
    }
    let mut attachments = Vec::with_capacity(m.attachments.len());
    for a in &m.attachments {
        let (content_type, bytes) = attachment(db, workspace_id, a.id).await?;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        attachments.push(AttachmentInput { filename: a.filename.clone(), content_type, data });
    }
    let input = NewTicket {
        subject: m.subject.clone().unwrap_or_else(|| src.subject.clone()),
        body: m.body.clone(),
        body_quoted: m.body_quoted.clone(),
        customer: crate::customer::NewCustomer { id: Some(src.customer_id), ..Default::default() },
        channel: Some(src.channel.clone()),
        channel_id: src.channel_id,
        priority: Some(Priority::parse(&src.priority)?),
        // The id of the split: a second click returns the ticket made by the first.
        external_id: Some(format!("split-{message_id}")),
        attachments,
        ..Default::default()
    };
    let created = core.writer().create(workspace_id, actor, input, core.limits()).await?;
    if created.created {
        let txn = db::begin_write(db).await?;
        let events = event::append(
            &txn,
            workspace_id,
            vec![
                NewEvent {
                    kind: "ticket.split",
                    actor: actor.to_owned(),
                    ticket_id: Some(source),
                    customer_id: Some(src.customer_id),
                    changes: json!({ "message_id": message_id, "into_id": created.ticket.id, "into_number": created.ticket.number }),
                },
                NewEvent {
                    kind: "ticket.split_from",
                    actor: actor.to_owned(),
                    ticket_id: Some(created.ticket.id),
                    customer_id: Some(src.customer_id),
                    changes: json!({ "message_id": message_id, "from_id": source, "from_number": src.number }),
                },
            ],
        )
        .await?;
        txn.commit().await?;
        core.bus().publish(events);
    }
    Ok(created)
}
