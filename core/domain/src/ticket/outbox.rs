//! The ticket's side of the outbox: a reply through a sending channel is queued in the reply's
//! own transaction. Delivering queued replies (through the channel plugins) is not the domain's
//! business; the outbox's worker does it.

use sea_orm::ConnectionTrait;

use crate::db;
use crate::entity::ticket;
use crate::error::Result;

/// Delivery status of a queued reply.
pub const QUEUED: &str = "queued";

/// The plugin of the workspace's e-mail channels.
const EMAIL_PLUGIN: &str = "email";

/// The channel a reply on this ticket leaves through: the channel the ticket came in through,
/// when its plugin sends; otherwise (a web form, an API ticket, a channel that cannot answer)
/// the workspace's first active e-mail channel, when the customer has an e-mail address. No
/// channel means nobody can reach the customer: the reply is stored, and the composer says so
/// before the agent writes.
pub async fn channel_for<C: ConnectionTrait>(db: &C, core: &crate::Domain, t: &ticket::Model) -> Result<Option<i64>> {
    if let Some(channel_id) = t.channel_id
        && let Some(row) =
            db::query_one(db, "SELECT plugin_key FROM channels WHERE id = ?", vec![channel_id.into()]).await?
    {
        let key: String = db::col(&row, "plugin_key")?;
        if core.senders().sends(&key) {
            return Ok(Some(channel_id));
        }
    }
    if !core.senders().sends(EMAIL_PLUGIN) {
        return Ok(None);
    }
    let row = db::query_one(
        db,
        "SELECT c.id FROM channels c WHERE c.workspace_id = ? AND c.plugin_key = ? AND c.status = 'active' \
         AND EXISTS (SELECT 1 FROM customer_identities i WHERE i.customer_id = ? AND i.kind = 'email') \
         ORDER BY c.id LIMIT 1",
        vec![t.workspace_id.into(), EMAIL_PLUGIN.into(), t.customer_id.into()],
    )
    .await?;
    row.map(|r| db::col(&r, "id")).transpose()
}

/// A channel a reply on a ticket can leave through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    /// The channel instance.
    pub channel_id: i64,
    /// Its plugin (`email`, `sms`, `telegram`…).
    pub plugin_key: String,
    /// Its name in the workspace.
    pub name: String,
}

/// Every channel a reply on this ticket can leave through, the default ([`channel_for`])
/// first: the sending channels the customer has written in through (each knows the customer's
/// identity there), and the workspace's active e-mail channels when the customer has an e-mail
/// address. Empty when nothing can reach the customer.
///
/// # Errors
/// Database errors.
pub async fn routes<C: ConnectionTrait>(db: &C, core: &crate::Domain, t: &ticket::Model) -> Result<Vec<ReplyRoute>> {
    let default = channel_for(db, core, t).await?;
    let rows = db::query_all(
        db,
        "SELECT c.id, c.plugin_key, c.name FROM channels c WHERE c.workspace_id = ? AND (c.id = ? OR c.status = 'active' AND ( \
           c.id IN (SELECT t.channel_id FROM tickets t WHERE t.workspace_id = ? AND t.customer_id = ? AND t.channel_id IS NOT NULL) \
           OR c.plugin_key = ? AND EXISTS (SELECT 1 FROM customer_identities i WHERE i.customer_id = ? AND i.kind = 'email'))) \
         ORDER BY c.id",
        vec![
            t.workspace_id.into(),
            default.unwrap_or(0).into(),
            t.workspace_id.into(),
            t.customer_id.into(),
            EMAIL_PLUGIN.into(),
            t.customer_id.into(),
        ],
    )
    .await?;
    let mut routes = Vec::with_capacity(rows.len());
    for r in &rows {
        let route = ReplyRoute {
            channel_id: db::col(r, "id")?,
            plugin_key: db::col(r, "plugin_key")?,
            name: db::col(r, "name")?,
        };
        if core.senders().sends(&route.plugin_key) {
            routes.push(route);
        }
    }
    if let Some(first) = default.and_then(|d| routes.iter().position(|r| r.channel_id == d)) {
        let route = routes.remove(first);
        routes.insert(0, route);
    }
    Ok(routes)
}

/// The channel a reply leaves through: `chosen` when it is one of the ticket's [`routes`],
/// the default route when nothing was chosen.
///
/// # Errors
/// [`crate::Error::Invalid`] for a channel that cannot reach the customer.
pub(crate) async fn chosen_or_default<C: ConnectionTrait>(
    db: &C,
    core: &crate::Domain,
    t: &ticket::Model,
    chosen: Option<i64>,
) -> Result<Option<i64>> {
    let Some(chosen) = chosen else { return channel_for(db, core, t).await };
    if routes(db, core, t).await?.iter().any(|r| r.channel_id == chosen) {
        return Ok(Some(chosen));
    }
    Err(crate::Error::invalid(
        "reply_channel_id",
        format!("channel {chosen} cannot reach this ticket's customer; choose one of the ticket's reply routes"),
    ))
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
