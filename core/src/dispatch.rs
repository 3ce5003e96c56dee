//! The event dispatcher: hands each event of a ticket to the workflows and automation plugins
//! of its workspace, once, one workspace's events in order and different workspaces side by
//! side, and sets aside an event that keeps failing or keeps killing the process.
//!
//! Each workspace has a cursor in `dispatch_cursors` (the last event handled) with a lease, so
//! with several nodes one node at a time works a workspace's log while other nodes take other
//! workspaces. A node runs up to `workflows.dispatch_concurrency` workspaces at once; a pass
//! takes at most [`BATCH`] events or [`PASS_BUDGET`] of time and then queues again behind the
//! other workspaces, so a workspace with slow rules or a long backlog cannot hold the rest up.
//!
//! Exactly once: an event's actions, every workflow's and automation's, commit in one
//! transaction with the cursor's advance, and only when the cursor was still before the event
//! (`advance`), so neither a crash nor a second node can apply them twice.
//!
//! Poison: before a pass handles anything it counts itself in the cursor row (`attempt_from`,
//! `attempts`), committed on its own. A pass that ends, or moves the cursor, resets the count;
//! one the process died in, or that stopped at an error, leaves it. When the passes that
//! started at the same cursor reach `workflows.dispatch_attempts`, the next pass records the
//! first event after the cursor that has work as poisoned (`poisoned_events`, with the reason)
//! instead of handling it, and goes on with the rest. A rule that merely fails (a script
//! error, a refused action, a plugin trap) is recorded on the rule and the event counts as
//! handled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value as Json, json};
use tokio::sync::{Semaphore, mpsc};

use crate::automation;
use crate::db;
use crate::error::{Error, Result};

/// How long a node holds a workspace's lease; a pass renews it when it starts and lasts at
/// most [`PASS_BUDGET`] plus one event, far less.
const LEASE_MS: i64 = 30_000;
/// Events read per pass.
const BATCH: i64 = 200;
/// Time after which a pass stops taking events and lets other workspaces have its slot.
const PASS_BUDGET: Duration = Duration::from_secs(2);
/// How long the dispatcher lets events gather after a wake-up.
const GATHER: Duration = Duration::from_millis(20);
/// Wait before a workspace whose pass failed is tried again (each try counts as an attempt).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Poisoned events the API lists, newest first.
const LISTED: i64 = 100;

/// Dispatches events for as long as the server runs.
pub async fn run(core: crate::Core) {
    // Never 0, the owner of a cursor nobody holds.
    let node = i64::from(rand::random::<u32>()) + 1;
    let mut bus = core.bus().subscribe();
    let slots = Arc::new(Semaphore::new(core.rules().dispatch_concurrency.max(1)));
    let mut busy: HashSet<i64> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<i64>();
    loop {
        while let Ok(ws) = done_rx.try_recv() {
            busy.remove(&ws);
        }
        match backlog(core.db()).await {
            Ok(workspaces) => {
                for ws in workspaces {
                    if !busy.insert(ws) {
                        continue;
                    }
                    let (core, slots) = (core.clone(), slots.clone());
                    let done = Done { workspace_id: ws, tx: done_tx.clone() };
                    tokio::spawn(async move {
                        // Waiting for a slot in line (the semaphore is fair): a workspace that
                        // just had a pass queues behind the others.
                        let outcome = match slots.acquire_owned().await {
                            Ok(_slot) => pass(&core, node, ws).await,
                            Err(_) => Ok(0),
                        };
                        match outcome {
                            Ok(n) if n > 0 => {}
                            // Another node holds the workspace: look again later, not at once.
                            Ok(_) => tokio::time::sleep(RETRY_AFTER).await,
                            Err(e) => {
                                tracing::warn!(workspace = ws, error = %e, "event dispatch failed; trying again");
                                tokio::time::sleep(RETRY_AFTER).await;
                            }
                        }
                        drop(done);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "event dispatch could not read the backlog"),
        }
        tokio::select! {
            _ = bus.recv() => {}
            Some(ws) = done_rx.recv() => { busy.remove(&ws); }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Let a burst of events gather: one pass (and one cursor write) per burst, not per event.
        tokio::time::sleep(GATHER).await;
    }
}

/// Tells the loop a workspace's pass is over, also when it panicked.
struct Done {
    workspace_id: i64,
    tx: mpsc::UnboundedSender<i64>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.tx.send(self.workspace_id);
    }
}

/// Workspaces with events after their cursor (oldest workspace first). A workspace without a
/// cursor row yet gets one at 0: everything it logged is still to be handled.
///
/// # Errors
/// Database errors.
pub async fn backlog(db: &sea_orm::DatabaseConnection) -> Result<Vec<i64>> {
    let rows = db::query_all(
        db,
        "SELECT w.id, c.workspace_id AS has_cursor FROM workspaces w LEFT JOIN dispatch_cursors c ON c.workspace_id = w.id WHERE EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = w.id AND e.id > COALESCE(c.last_event_id, 0)) ORDER BY w.id",
        vec![],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = db::col(&r, "id")?;
        if db::col::<Option<i64>>(&r, "has_cursor")?.is_none() {
            db::exec(
                db,
                "INSERT INTO dispatch_cursors (workspace_id, last_event_id) VALUES (?, 0) ON CONFLICT (workspace_id) DO NOTHING",
                vec![id.into()],
            )
            .await?;
        }
        out.push(id);
    }
    Ok(out)
}

/// Moves a workspace's cursor to `event_id` inside the transaction of the event's actions, if
/// it is still before it. Returns the rows changed: 0 means another node handled the event.
/// The pass goes on after it, so it counts as one attempt from there.
pub(crate) async fn advance<C: ConnectionTrait>(txn: &C, workspace_id: i64, event_id: i64) -> Result<u64> {
    db::exec(
        txn,
        "UPDATE dispatch_cursors SET last_event_id = ?, attempt_from = ?, attempts = 1, last_error = NULL WHERE workspace_id = ? AND last_event_id < ?",
        vec![event_id.into(), event_id.into(), workspace_id.into(), event_id.into()],
    )
    .await
}

/// One pass over a workspace's log: takes the lease (counting the attempt), then hands the
/// events after the cursor to the rules that want them. Returns how many events it read.
async fn pass(core: &crate::Core, node: i64, workspace_id: i64) -> Result<usize> {
    let now = crate::now_ms();
    let claimed = db::exec(
        core.db(),
        "UPDATE dispatch_cursors SET owner = ?, locked_until = ?, attempts = CASE WHEN attempt_from = last_event_id THEN attempts + 1 ELSE 1 END, attempt_from = last_event_id WHERE workspace_id = ? AND (owner = ? OR locked_until < ?)",
        vec![node.into(), (now + LEASE_MS).into(), workspace_id.into(), node.into(), now.into()],
    )
    .await?;
    if claimed != 1 {
        // Another node holds the workspace.
        return Ok(0);
    }
    let state = db::query_one(
        core.db(),
        "SELECT last_event_id, attempts, last_error FROM dispatch_cursors WHERE workspace_id = ?",
        vec![workspace_id.into()],
    )
    .await?
    .ok_or_else(|| Error::Internal(format!("workspace {workspace_id} has no dispatch cursor")))?;
    let cursor: i64 = db::col(&state, "last_event_id")?;
    let attempts: i32 = db::col(&state, "attempts")?;
    let last_error: Option<String> = db::col(&state, "last_error")?;
    let events = db::query_all(
        core.db(),
        "SELECT id, type, actor, ticket_id, changes FROM events WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?",
        vec![workspace_id.into(), cursor.into(), BATCH.into()],
    )
    .await?;
    // This pass is attempt number `attempts` from the cursor: the ones before it never finished.
    let mut suspect = i64::from(attempts) > i64::from(core.rules().dispatch_attempts.max(1));
    let workflows = crate::workflow::enabled(core, workspace_id).await?;
    let automations = automation::active(core, workspace_id).await?;
    let started = Instant::now();
    let mut last = cursor;
    for e in &events {
        if started.elapsed() > PASS_BUDGET {
            break;
        }
        let id: i64 = db::col(e, "id")?;
        let kind: String = db::col(e, "type")?;
        let actor: String = db::col(e, "actor")?;
        let caused_by_rule = actor.starts_with("automation:") || actor.starts_with("workflow:");
        let Some(ticket_id) = db::col::<Option<i64>>(e, "ticket_id")?.filter(|_| !caused_by_rule) else {
            last = id;
            continue;
        };
        let changes_text: String = db::col(e, "changes")?;
        let changes: Json = serde_json::from_str(&changes_text).unwrap_or(Json::Null);
        let firing = crate::workflow::firing(&workflows, &kind, &changes, None);
        let wanting: Vec<&automation::Row> = automations.iter().filter(|a| a.wants(&kind)).collect();
        if firing.is_empty() && wanting.is_empty() {
            // Nobody wants it: the cursor passes it with the next write.
            last = id;
            continue;
        }
        if suspect {
            let failed = attempts - 1;
            let reason = match &last_error {
                Some(err) => format!("handling it failed {failed} times; the last error: {err}"),
                None => format!(
                    "the server stopped {failed} times while handling it (a crash or a kill); check the workflows and automations this event runs"
                ),
            };
            poison(core, workspace_id, id, &kind, ticket_id, failed, &reason).await?;
            suspect = false;
            last = id;
            continue;
        }
        let event = Event { id, workspace_id, ticket_id, kind: &kind, changes: &changes, changes_text: &changes_text };
        if !wanting.is_empty() {
            // Automations need their plugins compiled (at start-up that takes seconds);
            // workflows do not wait for it.
            core.channels().wait_loaded().await;
        }
        match handle(core, &event, firing, &wanting).await {
            Ok(()) => last = id,
            // Another node handled it (this node's lease ran out): leave the rest to it.
            Err(Error::Conflict(msg)) => {
                tracing::warn!(workspace = workspace_id, event = id, %msg, "leaving the workspace to another node");
                return Ok(events.len());
            }
            Err(err) => {
                // The cursor stays before the event and the attempt stays counted: the next
                // pass tries again, and the reason is kept for when the event is set aside.
                db::exec(
                    core.db(),
                    "UPDATE dispatch_cursors SET last_event_id = ?, attempt_from = ?, last_error = ? WHERE workspace_id = ? AND last_event_id <= ?",
                    vec![last.into(), last.into(), err.to_string().into(), workspace_id.into(), last.into()],
                )
                .await?;
                return Err(err);
            }
        }
    }
    // The pass ended: nothing is in progress from the cursor any more.
    db::exec(
        core.db(),
        "UPDATE dispatch_cursors SET last_event_id = ?, attempt_from = ?, attempts = 0, last_error = NULL WHERE workspace_id = ? AND last_event_id <= ?",
        vec![last.into(), last.into(), workspace_id.into(), last.into()],
    )
    .await?;
    Ok(events.len())
}

/// An event being handled.
struct Event<'a> {
    id: i64,
    workspace_id: i64,
    ticket_id: i64,
    kind: &'a str,
    changes: &'a Json,
    changes_text: &'a str,
}

/// Runs the event's workflows and automations and applies all their actions in one
/// transaction with the cursor. The automations see the ticket as it was when the event
/// happened, like the first workflow does.
async fn handle(
    core: &crate::Core,
    e: &Event<'_>,
    firing: Vec<(i64, Arc<plugdesk_workflow::Script>)>,
    wanting: &[&automation::Row],
) -> Result<()> {
    let (mut runs, planned) =
        crate::workflow::plan(core, e.workspace_id, e.kind, e.changes, e.ticket_id, firing).await?;
    let from_workflows = runs.len();
    let mut asked = Vec::with_capacity(wanting.len());
    for a in wanting {
        match automation::plan_one(core, a, e.kind, e.changes_text, e.ticket_id).await {
            Ok(run) => {
                asked.push((*a, runs.len()));
                runs.push(run);
            }
            Err(err) => automation::record_outcome(core, a, Err(&err)).await?,
        }
    }
    let outcomes = crate::action::apply(core, e.workspace_id, e.ticket_id, runs, Some(e.id)).await?;
    crate::workflow::record_outcomes(core, e.ticket_id, planned, &outcomes[..from_workflows.min(outcomes.len())]);
    for (a, i) in asked {
        if let Some(outcome) = outcomes.get(i) {
            automation::record_outcome(core, a, outcome.as_ref().map(|_| ())).await?;
        }
    }
    Ok(())
}

/// Sets an event aside: records it with the reason and moves the cursor past it, together.
async fn poison(
    core: &crate::Core,
    workspace_id: i64,
    event_id: i64,
    kind: &str,
    ticket_id: i64,
    attempts: i32,
    reason: &str,
) -> Result<()> {
    let txn = db::begin_write(core.db()).await?;
    db::exec(
        &txn,
        "INSERT INTO poisoned_events (event_id, workspace_id, ticket_id, type, attempts, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        vec![
            event_id.into(),
            workspace_id.into(),
            ticket_id.into(),
            kind.into(),
            attempts.into(),
            reason.into(),
            crate::now_ms().into(),
        ],
    )
    .await?;
    if advance(&txn, workspace_id, event_id).await? != 1 {
        return Err(Error::Conflict(format!("event {event_id} was handled by another node")));
    }
    txn.commit().await?;
    tracing::error!(event = event_id, workspace = workspace_id, ticket = ticket_id, %reason, "event set aside (poisoned)");
    Ok(())
}

/// The workspace's poisoned events, newest first (at most 100).
///
/// # Errors
/// Database errors.
pub async fn poisoned(core: &crate::Core, workspace_id: i64) -> Result<Json> {
    let rows = db::query_all(
        core.db(),
        "SELECT event_id, ticket_id, type, attempts, reason, created_at FROM poisoned_events WHERE workspace_id = ? ORDER BY event_id DESC LIMIT ?",
        vec![workspace_id.into(), LISTED.into()],
    )
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "event_id": db::col::<i64>(r, "event_id")?,
                "ticket_id": db::col::<Option<i64>>(r, "ticket_id")?,
                "type": db::col::<String>(r, "type")?,
                "attempts": db::col::<i32>(r, "attempts")?,
                "reason": db::col::<String>(r, "reason")?,
                "poisoned_at": crate::rfc3339(db::col(r, "created_at")?),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "items": items }))
}

/// Where the dispatcher stands in the workspace's log: the last event handled, how many wait,
/// and the passes counted against the next event (with the last failure).
///
/// # Errors
/// Database errors.
pub async fn status(core: &crate::Core, workspace_id: i64) -> Result<Json> {
    let r = db::query_one(
        core.db(),
        "SELECT last_event_id, attempts, last_error FROM dispatch_cursors WHERE workspace_id = ?",
        vec![workspace_id.into()],
    )
    .await?;
    let (cursor, attempts, last_error) = match r {
        Some(r) => (db::col::<i64>(&r, "last_event_id")?, db::col::<i32>(&r, "attempts")?, db::col(&r, "last_error")?),
        None => (0, 0, None::<String>),
    };
    let pending = db::query_one(
        core.db(),
        "SELECT COUNT(*) AS n FROM events WHERE workspace_id = ? AND id > ?",
        vec![workspace_id.into(), cursor.into()],
    )
    .await?
    .map(|r| db::col::<i64>(&r, "n"))
    .transpose()?
    .unwrap_or(0);
    Ok(json!({
        "last_event_id": cursor,
        "pending": pending,
        "attempts": attempts,
        "last_error": last_error,
        "max_attempts": core.rules().dispatch_attempts.max(1),
    }))
}
