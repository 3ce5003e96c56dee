//! The ticket's side of the outbox: a reply through a sending channel is queued in the reply's
//! own transaction. Delivering queued replies (through the channel plugins) is not the domain's
//! business; the outbox's worker does it.

use sea_orm::ConnectionTrait;

use crate::db;
use crate::entity::ticket;
use crate::error::Result;

/// Delivery status of a queued reply.
pub const QUEUED: &str = "queued";

/// The channel a reply on this ticket leaves through: the channel the ticket came in through,
/// when its plugin sends.
pub(crate) async fn channel_for<C: ConnectionTrait>(
    db: &C,
    core: &crate::Domain,
    t: &ticket::Model,
) -> Result<Option<i64>> {
    let Some(channel_id) = t.channel_id else { return Ok(None) };
    let Some(row) = db::query_one(db, "SELECT plugin_key FROM channels WHERE id = ?", vec![channel_id.into()]).await?
    else {
        return Ok(None);
    };
    let key: String = db::col(&row, "plugin_key")?;
    Ok(core.senders().sends(&key).then_some(channel_id))
}

/// Queues a reply (inside the reply's transaction).
pub(crate) async fn enqueue<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    channel_id: i64,
    ticket_id: i64,
    message_id: i64,
    now: i64,
) -> Result<()> {
    db::exec(
        db,
        "INSERT INTO outbox (workspace_id, channel_id, ticket_id, message_id, status, attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        vec![
            workspace_id.into(),
            channel_id.into(),
            ticket_id.into(),
            message_id.into(),
            now.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?;
    Ok(())
}
