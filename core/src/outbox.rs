//! The outbox: every reply to a ticket that came in through a sending channel is queued here in
//! the same transaction as the message, so a reply is never lost between the database and the
//! channel. A worker hands each queued reply to the channel plugin's `send`:
//!
//! - delivered: the message is `sent` and carries the channel's id as its external id;
//! - a retryable failure (or a plugin that crashed): tried again after `retry_base_ms`,
//!   doubling each time up to an hour, until `max_attempts`;
//! - a permanent failure or the last attempt: `dead` — listed by the API and replayable.
//!
//! Rows are claimed with a lease (`locked_until`), so with several nodes each reply is sent by
//! one of them, and a node that dies mid-send leaves its rows to be taken over when the lease
//! ends. A send may therefore happen twice after a crash; the plugin gets the same message id
//! each time to deduplicate with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugdesk_host::{Attachment, OutboundMessage, Sent};
use sea_orm::DbBackend;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::channel::{self, ChannelContext};
use crate::db;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};

pub use crate::ticket::outbox::QUEUED;

/// Rows claimed per pass, and sends running at once.
const BATCH: i64 = 16;
const PARALLEL: usize = 4;
/// Longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a channel that cannot send (suspended, disabled, plugin missing) is left before the
/// worker looks at its replies again. Not counted as attempts.
const HOLD: Duration = Duration::from_secs(30);

/// The outbox's settings and the signal that wakes its worker.
pub struct Settings {
    retry_base: Duration,
    max_attempts: u32,
    tick: Duration,
    wake: Arc<Notify>,
}

impl Settings {
    /// From the configuration; `wake` is the domain's signal that a reply was queued
    /// ([`crate::Domain::outbox_signal`]).
    pub fn new(cfg: &crate::config::Outbox, wake: Arc<Notify>) -> Self {
        Settings {
            retry_base: Duration::from_millis(cfg.retry_base_ms.max(1)),
            max_attempts: cfg.max_attempts.max(1),
            tick: Duration::from_millis(cfg.tick_ms.max(10)),
            wake,
        }
    }

    /// Wakes the worker: a reply was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The wait after `attempts` failed attempts.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(self.retry_base, attempts)
    }
}

/// The wait after `attempts` failed attempts: `base`, doubling with each further attempt, at
/// most an hour (the outbox's and the outgoing webhooks' retries).
pub(crate) fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Delivers queued replies for as long as the server runs: whenever one is queued, and every
/// tick for retries that come due.
pub async fn run(core: crate::Core) {
    core.channels().wait_loaded().await;
    let wake = core.outbox().wake.clone();
    loop {
        match deliver_due(&core).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox pass failed"),
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(core.outbox().tick) => {}
        }
    }
}

/// Claims due rows and sends them; returns how many it handled. Replies of one ticket go one
/// after the other, in order (a channel may keep per-conversation state, and a customer reads
/// them in order); different tickets go in parallel.
pub async fn deliver_due(core: &crate::Core) -> Result<usize> {
    let claimed = claim(core, crate::now_ms()).await?;
    let mut by_ticket: Vec<(i64, Vec<i64>)> = Vec::new();
    for (id, ticket) in &claimed {
        match by_ticket.iter_mut().find(|(t, _)| t == ticket) {
            Some((_, ids)) => ids.push(*id),
            None => by_ticket.push((*ticket, vec![*id])),
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, ids) in by_ticket {
        let core = core.clone();
        tasks.spawn(async move {
            for id in ids {
                if let Err(e) = deliver(&core, id).await {
                    tracing::warn!(outbox = id, error = %e, "delivery failed");
                }
            }
        });
        if tasks.len() >= PARALLEL {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(claimed.len())
}

/// Takes due rows with a lease: pending rows whose time has come, and rows whose sender's lease
/// ran out — but none of a ticket that another sender is working on. Returns (id, ticket).
async fn claim(core: &crate::Core, now: i64) -> Result<Vec<(i64, i64)>> {
    let lease = now + (core.channels().limits.network_timeout.as_millis() as i64) * 2;
    let lock = if core.backend() == DbBackend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let txn = db::begin_write(core.db()).await?;
    let rows = db::query_all(
        &txn,
        &format!(
            "SELECT id, ticket_id FROM outbox o WHERE ((status = 'pending' AND next_attempt_at <= ?) OR (status = 'sending' AND locked_until < ?)) \
             AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.ticket_id = o.ticket_id AND b.status = 'sending' AND b.locked_until >= ? AND b.id <> o.id) \
             ORDER BY id LIMIT ?{lock}"
        ),
        vec![now.into(), now.into(), now.into(), BATCH.into()],
    )
    .await?;
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = db::col(&r, "id")?;
        let ticket: i64 = db::col(&r, "ticket_id")?;
        let n = db::exec(
            &txn,
            "UPDATE outbox SET status = 'sending', locked_until = ? WHERE id = ? AND (status = 'pending' OR (status = 'sending' AND locked_until < ?))",
            vec![lease.into(), id.into(), now.into()],
        )
        .await?;
        if n == 1 {
            ids.push((id, ticket));
        }
    }
    txn.commit().await?;
    Ok(ids)
}

/// Sends one claimed reply and records what happened.
async fn deliver(core: &crate::Core, id: i64) -> Result<()> {
    let o = db::query_one(core.db(), "SELECT * FROM outbox WHERE id = ?", vec![id.into()])
        .await?
        .ok_or(Error::NotFound("outbox entry"))?;
    let channel_id: i64 = db::col(&o, "channel_id")?;
    let attempts: i32 = db::col(&o, "attempts")?;
    let row = channel::load_row(core.db(), channel_id, None).await?;
    if row.status_text() != "active" {
        return hold(core, id, &format!("channel {channel_id} is {}", row.status_text())).await;
    }
    let Some(plugin) = core.channels().plugin(&row.plugin_key) else {
        return hold(
            core,
            id,
            &format!("plugin {} is not loaded on this server", crate::plugin::plugin_id(&row.plugin_key)),
        )
        .await;
    };
    let message = outbound_message(core, db::col(&o, "ticket_id")?, db::col(&o, "message_id")?).await?;
    let attempts = attempts as u32 + 1;
    match send_through(core, plugin, &row, message).await? {
        Sent::Delivered(delivery_id) => delivered(core, id, attempts, &delivery_id).await,
        Sent::Retryable(m) if attempts < core.outbox().max_attempts => {
            let next = crate::now_ms() + core.outbox().backoff(attempts).as_millis() as i64;
            failed(core, id, &row, attempts, "pending", Some(next), "retrying", &m).await
        }
        Sent::Retryable(m) => {
            let m = format!("{m} (gave up after {attempts} attempts)");
            failed(core, id, &row, attempts, "dead", None, "failed", &m).await
        }
        Sent::Permanent(m) => failed(core, id, &row, attempts, "dead", None, "failed", &m).await,
    }
}

/// A mail from the workspace to someone who is not a customer (an agent's invitation).
#[derive(Debug, Clone)]
pub struct Notice {
    /// The address.
    pub to: String,
    /// The addressee's name.
    pub to_name: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Plain text.
    pub text: String,
}

/// What became of a [`Notice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeSent {
    /// The workspace has no active e-mail channel.
    NoChannel,
    /// Accepted by the mail server.
    Sent,
    /// Not accepted, with the channel's reason.
    Refused(String),
}

/// Sends `notice` at once through the workspace's first active e-mail channel (not through the
/// queue: the person waiting for it is the admin at the page, who is told what happened).
///
/// # Errors
/// Database errors.
pub async fn send_notice(core: &crate::Core, workspace_id: i64, notice: Notice) -> Result<NoticeSent> {
    let Some(found) = db::query_one(
        core.db(),
        "SELECT id FROM channels WHERE workspace_id = ? AND plugin_key = 'email' AND status = 'active' ORDER BY id LIMIT 1",
        vec![workspace_id.into()],
    )
    .await?
    else {
        return Ok(NoticeSent::NoChannel);
    };
    let row = channel::load_row(core.db(), db::col(&found, "id")?, None).await?;
    let Some(plugin) = core.channels().plugin(&row.plugin_key) else {
        return Ok(NoticeSent::Refused("the e-mail plugin is not loaded on this server".into()));
    };
    let message = OutboundMessage {
        // Not about a ticket: number 0 (the e-mail plugin writes no ticket tag then).
        id: format!("notice-{}-{}", workspace_id, crate::now_ms()),
        ticket_number: 0,
        recipients: vec![("email".into(), notice.to)],
        recipient_name: notice.to_name,
        conversation: None,
        subject: Some(notice.subject),
        text: notice.text,
        html: None,
        attachments: Vec::new(),
        in_reply_to: None,
        references: Vec::new(),
        automatic: true,
    };
    Ok(match send_through(core, plugin, &row, message).await? {
        Sent::Delivered(_) => NoticeSent::Sent,
        Sent::Retryable(m) | Sent::Permanent(m) => NoticeSent::Refused(m),
    })
}

/// Calls the plugin's `send` on a blocking thread and records the call on the channel; a
/// plugin that fails (traps, runs out of fuel or time) is a retryable failure with its reason.
async fn send_through(
    core: &crate::Core,
    plugin: plugdesk_host::Plugin,
    row: &channel::Row,
    message: OutboundMessage,
) -> Result<Sent> {
    let ctx = ChannelContext::new(core, row.clone());
    let started = Instant::now();
    let reg = core.channels().clone();
    let called = tokio::task::spawn_blocking(move || reg.host.send(&plugin, &reg.limits, ctx, message))
        .await
        .map_err(|e| Error::Internal(format!("plugin task failed: {e}")))?;
    let elapsed = started.elapsed();
    Ok(match called {
        Ok(sent) => {
            channel::plugin_succeeded(core, row, elapsed).await?;
            sent
        }
        Err(e) => Sent::Retryable(channel::plugin_failed(core, row, elapsed, &e).await?),
    })
}

/// Puts a row back without counting an attempt: its channel cannot send right now.
async fn hold(core: &crate::Core, id: i64, reason: &str) -> Result<()> {
    let now = crate::now_ms();
    db::exec(
        core.db(),
        "UPDATE outbox SET status = 'pending', locked_until = NULL, next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
        vec![(now + HOLD.as_millis() as i64).into(), reason.into(), now.into(), id.into()],
    )
    .await?;
    Ok(())
}

async fn delivered(core: &crate::Core, id: i64, attempts: u32, delivery_id: &str) -> Result<()> {
    let now = crate::now_ms();
    let txn = db::begin_write(core.db()).await?;
    let o = db::query_one(
        &txn,
        "UPDATE outbox SET status = 'sent', attempts = ?, locked_until = NULL, last_error = NULL, delivery_id = ?, updated_at = ? WHERE id = ? RETURNING workspace_id, ticket_id, message_id",
        vec![(attempts as i32).into(), delivery_id.into(), now.into(), id.into()],
    )
    .await?
    .ok_or(Error::NotFound("outbox entry"))?;
    let (workspace_id, ticket_id, message_id): (i64, i64, i64) =
        (db::col(&o, "workspace_id")?, db::col(&o, "ticket_id")?, db::col(&o, "message_id")?);
    // The channel's id becomes the message's external id (replies to it thread by it), unless
    // another message holds it already.
    let taken = db::query_one(
        &txn,
        "SELECT m2.id FROM messages m JOIN messages m2 ON m2.workspace_id = m.workspace_id AND m2.channel = m.channel AND m2.external_id = ? WHERE m.id = ?",
        vec![delivery_id.into(), message_id.into()],
    )
    .await?
    .is_some();
    db::exec(
        &txn,
        "UPDATE messages SET delivery_status = 'sent', delivery_error = NULL, external_id = CASE WHEN ? THEN external_id ELSE COALESCE(external_id, ?) END WHERE id = ?",
        vec![taken.into(), delivery_id.into(), message_id.into()],
    )
    .await?;
    let events = event::append(
        &txn,
        workspace_id,
        vec![NewEvent {
            kind: "message.delivered",
            actor: "outbox".into(),
            ticket_id: Some(ticket_id),
            customer_id: None,
            changes: json!({ "message_id": message_id, "delivery_id": delivery_id, "attempts": attempts }),
        }],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn failed(
    core: &crate::Core,
    id: i64,
    row: &channel::Row,
    attempts: u32,
    status: &str,
    next: Option<i64>,
    delivery_status: &str,
    error: &str,
) -> Result<()> {
    let now = crate::now_ms();
    let txn = db::begin_write(core.db()).await?;
    let o = db::query_one(
        &txn,
        "UPDATE outbox SET status = ?, attempts = ?, locked_until = NULL, next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?, updated_at = ? WHERE id = ? RETURNING workspace_id, ticket_id, message_id",
        vec![status.into(), (attempts as i32).into(), next.into(), error.into(), now.into(), id.into()],
    )
    .await?
    .ok_or(Error::NotFound("outbox entry"))?;
    let (workspace_id, ticket_id, message_id): (i64, i64, i64) =
        (db::col(&o, "workspace_id")?, db::col(&o, "ticket_id")?, db::col(&o, "message_id")?);
    db::exec(
        &txn,
        "UPDATE messages SET delivery_status = ?, delivery_error = ? WHERE id = ?",
        vec![delivery_status.into(), error.into(), message_id.into()],
    )
    .await?;
    let mut events = Vec::new();
    if status == "dead" {
        events = event::append(
            &txn,
            workspace_id,
            vec![NewEvent {
                kind: "message.failed",
                actor: "outbox".into(),
                ticket_id: Some(ticket_id),
                customer_id: None,
                changes: json!({ "message_id": message_id, "error": error, "attempts": attempts }),
            }],
        )
        .await?;
    }
    txn.commit().await?;
    core.bus().publish(events);
    tracing::warn!(outbox = id, channel = row.id, attempts, status, %error, "delivery failed");
    channel::set_channel_error(core, row.id, &format!("send: {error}")).await
}

/// What the plugin's `send` gets: the reply, the customer's identities, and the threading
/// references of the ticket.
async fn outbound_message(core: &crate::Core, ticket_id: i64, message_id: i64) -> Result<OutboundMessage> {
    let db = core.db();
    let m = db::query_one(
        db,
        "SELECT body_text, body_html, author_kind, subject FROM messages WHERE id = ?",
        vec![message_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("message"))?;
    let t = db::query_one(
        db,
        "SELECT t.number, t.subject, t.conversation, t.customer_id, c.name FROM tickets t JOIN customers c ON c.id = t.customer_id WHERE t.id = ?",
        vec![ticket_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("ticket"))?;
    let customer_id: i64 = db::col(&t, "customer_id")?;
    let recipients = db::query_all(
        db,
        "SELECT kind, address FROM customer_identities WHERE customer_id = ? ORDER BY id",
        vec![customer_id.into()],
    )
    .await?
    .iter()
    .map(|r| Ok((db::col(r, "kind")?, db::col(r, "address")?)))
    .collect::<Result<Vec<(String, String)>>>()?;
    let threaded = db::query_all(
        db,
        "SELECT external_id, direction FROM messages WHERE ticket_id = ? AND external_id IS NOT NULL AND id <> ? ORDER BY id",
        vec![ticket_id.into(), message_id.into()],
    )
    .await?;
    let mut references = Vec::new();
    let mut in_reply_to = None;
    for r in &threaded {
        let ext: String = db::col(r, "external_id")?;
        if db::col::<String>(r, "direction")? == "inbound" {
            in_reply_to = Some(ext.clone());
        }
        references.push(ext);
    }
    let attachments = db::query_all(
        db,
        "SELECT ma.filename, a.content_type, a.data FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id WHERE ma.message_id = ? ORDER BY a.id",
        vec![message_id.into()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Attachment {
            filename: db::col(r, "filename")?,
            content_type: db::col(r, "content_type")?,
            data: db::col(r, "data")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let name: String = db::col(&t, "name")?;
    Ok(OutboundMessage {
        id: message_id.to_string(),
        ticket_number: db::col::<i64>(&t, "number")?.max(0) as u64,
        recipients,
        recipient_name: Some(name).filter(|n| !n.is_empty()),
        conversation: db::col(&t, "conversation")?,
        subject: Some(db::col::<Option<String>>(&m, "subject")?.map_or_else(|| db::col(&t, "subject"), Ok)?),
        text: db::col(&m, "body_text")?,
        html: db::col(&m, "body_html")?,
        attachments,
        in_reply_to,
        references,
        automatic: db::col::<String>(&m, "author_kind")? != "agent",
    })
}

/// An outbox entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Id.
    pub id: i64,
    /// Channel it leaves through.
    pub channel_id: i64,
    /// Ticket.
    pub ticket_id: i64,
    /// The reply.
    pub message_id: i64,
    /// `pending`, `sending`, `sent` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the next attempt is due (pending entries).
    pub next_attempt_at: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The channel's id of the delivered message.
    pub delivery_id: Option<String>,
    /// Queued.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

fn entry_view(r: &sea_orm::QueryResult) -> Result<EntryView> {
    let status: String = db::col(r, "status")?;
    Ok(EntryView {
        id: db::col(r, "id")?,
        channel_id: db::col(r, "channel_id")?,
        ticket_id: db::col(r, "ticket_id")?,
        message_id: db::col(r, "message_id")?,
        next_attempt_at: (status == "pending")
            .then(|| db::col(r, "next_attempt_at").map(crate::rfc3339))
            .transpose()?,
        status,
        attempts: db::col(r, "attempts")?,
        last_error: db::col(r, "last_error")?,
        delivery_id: db::col(r, "delivery_id")?,
        created_at: crate::rfc3339(db::col(r, "created_at")?),
        updated_at: crate::rfc3339(db::col(r, "updated_at")?),
    })
}

/// The workspace's outbox entries, newest first (at most 200), optionally of one status.
///
/// # Errors
/// [`Error::Invalid`] for an unknown status.
pub async fn list(core: &crate::Core, workspace_id: i64, status: Option<&str>) -> Result<Vec<EntryView>> {
    let mut sql = String::from("SELECT * FROM outbox WHERE workspace_id = ?");
    let mut values: Vec<sea_orm::Value> = vec![workspace_id.into()];
    if let Some(s) = status {
        if !["pending", "sending", "sent", "dead"].contains(&s) {
            return Err(Error::invalid("status", format!("status {s:?} is not one of pending, sending, sent, dead")));
        }
        sql.push_str(" AND status = ?");
        values.push(s.into());
    }
    sql.push_str(" ORDER BY id DESC LIMIT 200");
    db::query_all(core.db(), &sql, values).await?.iter().map(entry_view).collect()
}

/// [`replay`] of the latest outbox entry of a message of a ticket (the agent's retry button).
///
/// # Errors
/// [`Error::NotFound`] when the message never went to the outbox; as [`replay`].
pub async fn replay_message(
    core: &crate::Core,
    workspace_id: i64,
    ticket_id: i64,
    message_id: i64,
) -> Result<EntryView> {
    let row = db::query_one(
        core.db(),
        "SELECT id FROM outbox WHERE workspace_id = ? AND ticket_id = ? AND message_id = ? ORDER BY id DESC LIMIT 1",
        vec![workspace_id.into(), ticket_id.into(), message_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("outbox entry"))?;
    replay(core, workspace_id, db::col(&row, "id")?).await
}

/// Sends a dead (or waiting) entry again now, with a fresh count of attempts.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Conflict`] for an entry that is sent or being sent.
pub async fn replay(core: &crate::Core, workspace_id: i64, id: i64) -> Result<EntryView> {
    let now = crate::now_ms();
    let txn = db::begin_write(core.db()).await?;
    let row = db::query_one(
        &txn,
        "SELECT status, message_id FROM outbox WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("outbox entry"))?;
    let status: String = db::col(&row, "status")?;
    if status == "sent" || status == "sending" {
        return Err(Error::Conflict(format!(
            "outbox entry {id} is {status}; only pending and dead entries can be replayed"
        )));
    }
    db::exec(
        &txn,
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, locked_until = NULL, updated_at = ? WHERE id = ?",
        vec![now.into(), now.into(), id.into()],
    )
    .await?;
    db::exec(
        &txn,
        "UPDATE messages SET delivery_status = ? WHERE id = ?",
        vec![QUEUED.into(), db::col::<i64>(&row, "message_id")?.into()],
    )
    .await?;
    // The entry as this replay left it: read before the worker is woken, which may take it at
    // once.
    let r = db::query_one(&txn, "SELECT * FROM outbox WHERE id = ?", vec![id.into()])
        .await?
        .ok_or(Error::NotFound("outbox entry"))?;
    txn.commit().await?;
    core.outbox().wake();
    entry_view(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_an_hour() {
        let s = Settings::new(
            &crate::config::Outbox { retry_base_ms: 1000, max_attempts: 8, tick_ms: 100, poll_tick_ms: 100 },
            Arc::new(Notify::new()),
        );
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(2), Duration::from_secs(2));
        assert_eq!(s.backoff(5), Duration::from_secs(16));
        assert_eq!(s.backoff(30), MAX_BACKOFF);
    }
}
