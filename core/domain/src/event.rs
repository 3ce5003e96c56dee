//! The event log: every change is an append-only row in `events` (type, actor, ticket, the
//! before/after of changed fields) and, once its transaction has committed, a message on the
//! in-process [`Bus`] that workflows, plugins and pages subscribe to.

use sea_orm::{ConnectionTrait, Value};
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::broadcast;

use crate::db;
use crate::error::Result;

/// How many events a slow subscriber may lag behind before it misses some (it can catch up
/// from the `events` table through the feed).
const BUS_CAPACITY: usize = 4096;

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Dotted type, e.g. `ticket.created`, `sla.breached`.
    pub kind: &'static str,
    /// Who caused it: `agent:3`, `customer:9`, `system`, `sla`.
    pub actor: String,
    /// The ticket concerned, if any.
    pub ticket_id: Option<i64>,
    /// The customer concerned, if any.
    pub customer_id: Option<i64>,
    /// What changed: `{"field": {"before": …, "after": …}}` or a payload.
    pub changes: Json,
}

/// An event as stored and published.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Position in the log; the feed's cursor.
    pub id: i64,
    /// The workspace it belongs to.
    pub workspace_id: i64,
    /// Dotted type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who caused it.
    pub actor: String,
    /// The ticket concerned, if any.
    pub ticket_id: Option<i64>,
    /// The customer concerned, if any.
    pub customer_id: Option<i64>,
    /// What changed.
    pub changes: Json,
    /// When, Unix milliseconds (RFC 3339 in JSON).
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: i64,
}

fn as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::rfc3339(*ms))
}

impl From<crate::entity::event::Model> for Event {
    fn from(m: crate::entity::event::Model) -> Self {
        Event {
            id: m.id,
            workspace_id: m.workspace_id,
            kind: m.kind,
            actor: m.actor,
            ticket_id: m.ticket_id,
            customer_id: m.customer_id,
            changes: serde_json::from_str(&m.changes).unwrap_or(Json::Null),
            created_at: m.created_at,
        }
    }
}

/// Appends events inside the caller's transaction, with one multi-row insert. Returns them
/// with their ids so the caller can publish them after commit.
pub async fn append<C: ConnectionTrait>(txn: &C, workspace_id: i64, events: Vec<NewEvent>) -> Result<Vec<Event>> {
    append_many(txn, events.into_iter().map(|e| (workspace_id, e)).collect()).await
}

/// Appends events of possibly several workspaces (a batch of the ticket writer).
pub async fn append_many<C: ConnectionTrait>(txn: &C, events: Vec<(i64, NewEvent)>) -> Result<Vec<Event>> {
    let ids = db::reserve_ids(txn, "events", events.len()).await?;
    let (statement, out) = insert_statement(events, ids);
    db::exec_all(txn, statement).await?;
    Ok(out)
}

/// Builds the insert for events whose keys were reserved (`ids`, one per event) without
/// running it, for callers that send several statements at once.
pub fn insert_statement(events: Vec<(i64, NewEvent)>, ids: Vec<i64>) -> (Vec<db::Sql>, Vec<Event>) {
    let now = crate::now_ms();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(events.len());
    let mut out = Vec::with_capacity(events.len());
    for ((workspace_id, e), id) in events.into_iter().zip(ids) {
        rows.push(vec![
            id.into(),
            workspace_id.into(),
            e.kind.into(),
            e.actor.clone().into(),
            e.ticket_id.into(),
            e.customer_id.into(),
            e.changes.to_string().into(),
            now.into(),
        ]);
        out.push(Event {
            id,
            workspace_id,
            kind: e.kind.to_owned(),
            actor: e.actor,
            ticket_id: e.ticket_id,
            customer_id: e.customer_id,
            changes: e.changes,
            created_at: now,
        });
    }
    let columns = ["id", "workspace_id", "type", "actor", "ticket_id", "customer_id", "changes", "created_at"];
    (db::insert_statement("events", &columns, rows), out)
}

/// The in-process bus. Publishing never blocks; a subscriber that falls behind is told how many
/// events it missed.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Bus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        Bus { tx: broadcast::channel(BUS_CAPACITY).0 }
    }

    /// Sends committed events to every subscriber.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            // An error only means nobody listens right now.
            let _ = self.tx.send(e);
        }
    }

    /// A new subscription that sees events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a `{"field": {"before": a, "after": b}}` entry, skipping unchanged fields.
pub fn diff(changes: &mut serde_json::Map<String, Json>, field: &str, before: Json, after: Json) {
    if before != after {
        changes.insert(field.to_owned(), serde_json::json!({ "before": before, "after": after }));
    }
}

/// The id of the newest event of a ticket (0 when it has none): a version of the ticket that a
/// form carries, so a change made meanwhile is noticed when the form comes back.
///
/// # Errors
/// Database errors.
pub async fn latest_for_ticket<C: ConnectionTrait>(db: &C, workspace_id: i64, ticket_id: i64) -> Result<i64> {
    let row = crate::db::query_one(
        db,
        "SELECT MAX(id) AS id FROM events WHERE ticket_id = ? AND workspace_id = ?",
        vec![ticket_id.into(), workspace_id.into()],
    )
    .await?;
    Ok(row.map(|r| crate::db::col::<Option<i64>>(&r, "id")).transpose()?.flatten().unwrap_or(0))
}

/// Events of every workspace after `after`, oldest first: how a node follows what the others
/// write (the pages' live updates).
///
/// # Errors
/// Database errors.
pub async fn since<C: ConnectionTrait>(db: &C, after: i64, limit: u64) -> Result<Vec<Event>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

    use crate::entity::event;
    let rows = event::Entity::find()
        .filter(event::Column::Id.gt(after))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Event::from).collect())
}

/// The id of the newest event of any workspace (0 when there is none).
///
/// # Errors
/// Database errors.
pub async fn latest_id<C: ConnectionTrait>(db: &C) -> Result<i64> {
    let row = crate::db::query_one(db, "SELECT MAX(id) AS id FROM events", vec![]).await?;
    Ok(row.map(|r| crate::db::col::<Option<i64>>(&r, "id")).transpose()?.flatten().unwrap_or(0))
}

/// A page of the event feed: events of one workspace after `after`, oldest first.
pub async fn feed<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    after: i64,
    ticket_id: Option<i64>,
    limit: u64,
) -> Result<Vec<Event>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

    use crate::entity::event;
    let mut q =
        event::Entity::find().filter(event::Column::WorkspaceId.eq(workspace_id)).filter(event::Column::Id.gt(after));
    if let Some(t) = ticket_id {
        q = q.filter(event::Column::TicketId.eq(t));
    }
    let rows = q.order_by_asc(event::Column::Id).limit(limit).all(db).await?;
    Ok(rows.into_iter().map(Event::from).collect())
}
