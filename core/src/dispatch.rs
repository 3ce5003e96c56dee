//! The event dispatcher: hands each event of a ticket to the workflows and automation plugins
//! of its workspace, once; one ticket's events in order, different tickets' side by side, and
//! different workspaces side by side; and sets aside an event that keeps failing or keeps
//! killing the process.
//!
//! Each workspace has a cursor in `dispatch_cursors` (the last event handled) with a lease, so
//! with several nodes one node at a time works a workspace's log (a ticket is never handled by
//! two nodes at once) while other nodes take other workspaces. A node runs up to
//! `workflows.dispatch_concurrency` workspaces at once; a pass takes at most [`BATCH`] events
//! or [`PASS_BUDGET`] of time and then queues again behind the other workspaces, so a
//! workspace with slow rules or a long backlog cannot hold the rest up.
//!
//! Within a pass, events go in **waves**: a run of the log in which every event with work
//! belongs to another ticket (the second event of a ticket starts the next wave), at most
//! [`WAVE`] of them. A wave's views are read concurrently, the workspace's agents and teams
//! once, and its scripts run in log order, each event seeing the agents' load as the
//! assignments before it in the wave leave it (`workflow::plan_wave`); its automation plugins
//! are called concurrently. Every action of the wave then commits in one transaction, each
//! rule's run in a savepoint of its own, with the cursor moved to the wave's last event.
//!
//! Exactly once: an event's actions commit in one transaction with the cursor's advance, and
//! only when the cursor was still before the wave (`advance`), so neither a crash nor a second
//! node can apply them twice.
//!
//! Poison: before a pass handles anything it counts itself in the cursor row (`attempt_from`,
//! `attempts`), committed on its own. A pass that ends, or moves the cursor, resets the count;
//! one the process died in, or that stopped at an error, leaves it. A pass that starts after
//! such a one takes waves of one event, so the event at fault is the first in line; when the
//! passes that started at the same cursor reach `workflows.dispatch_attempts`, the next pass
//! records the first event after the cursor that has work as poisoned (`poisoned_events`,
//! with the reason) instead of handling it, and goes on with the rest. A rule that merely
//! fails (a script error, a refused action, a plugin trap) is recorded on the rule and the
//! event counts as handled.

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
/// Events with work handled together: planned side by side and applied in one transaction.
const WAVE: usize = 64;
/// The first wave of a pass; later ones grow while they stay within their budgets.
const FIRST_WAVE: usize = 8;
/// A wave that takes longer than this in all halves the next one (slow rules).
const WAVE_BUDGET: Duration = Duration::from_millis(250);
/// A wave whose transaction took longer than this halves the next one, and one under half of
/// it doubles the next: on SQLite the transaction holds the one write lock, and new tickets
/// and inbound messages wait for it.
const WRITE_BUDGET: Duration = Duration::from_millis(6);
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
    // After a pass that did not finish, events go one at a time, so that the one that fails
    // or kills the process is the first in line when it is set aside.
    let mut wave_size = if attempts > 1 { 1 } else { FIRST_WAVE };
    let workflows = crate::workflow::enabled(core, workspace_id).await?;
    let automations = automation::active(core, workspace_id).await?;
    let mut pending = Vec::with_capacity(events.len());
    for e in &events {
        pending.push(Pending::new(
            db::col(e, "id")?,
            db::col(e, "type")?,
            &db::col::<String>(e, "actor")?,
            db::col(e, "ticket_id")?,
            db::col(e, "changes")?,
        ));
    }
    let started = Instant::now();
    let mut last = cursor;
    let mut rest = &pending[..];
    while !rest.is_empty() && started.elapsed() <= PASS_BUDGET {
        let wave = cut_wave(rest, &workflows, &automations, wave_size);
        if suspect && let Some(first) = wave.work.first() {
            // The first event with work after the cursor is the one the failed passes were on.
            let failed = attempts - 1;
            let reason = match &last_error {
                Some(err) => format!("handling it failed {failed} times; the last error: {err}"),
                None => format!(
                    "the server stopped {failed} times while handling it (a crash or a kill); check the workflows and automations this event runs"
                ),
            };
            let e = &rest[first.index];
            poison(core, workspace_id, e.id, &e.kind, first.ticket_id, failed, &reason).await?;
            suspect = false;
            last = e.id;
            rest = &rest[first.index + 1..];
            continue;
        }
        let end = wave.end;
        let took = Instant::now();
        match handle(core, workspace_id, rest, wave).await {
            Ok(written) => {
                last = rest[end - 1].id;
                // Slow rules or long transactions get smaller waves: the intake does not wait
                // long for the write lock, and the pass keeps to its budget and lease.
                if attempts <= 1 {
                    wave_size = next_wave_size(wave_size, took.elapsed(), written);
                }
            }
            // Another node handled it (this node's lease ran out): leave the rest to it.
            Err(Error::Conflict(msg)) => {
                tracing::warn!(workspace = workspace_id, %msg, "leaving the workspace to another node");
                return Ok(events.len());
            }
            Err(err) => {
                // The cursor stays before the wave and the attempt stays counted: the next
                // pass tries again, one event at a time, and the reason is kept for when the
                // event is set aside.
                db::exec(
                    core.db(),
                    "UPDATE dispatch_cursors SET last_event_id = ?, attempt_from = ?, last_error = ? WHERE workspace_id = ? AND last_event_id <= ?",
                    vec![last.into(), last.into(), err.to_string().into(), workspace_id.into(), last.into()],
                )
                .await?;
                return Err(err);
            }
        }
        rest = &rest[end..];
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

/// The size of the next wave after one of `size` events that took `took` in all and `written`
/// in its transaction: halved when either went over its budget, doubled (up to [`WAVE`]) when
/// the transaction stayed well under, else the same.
fn next_wave_size(size: usize, took: Duration, written: Duration) -> usize {
    if took > WAVE_BUDGET || written > WRITE_BUDGET {
        (size / 2).max(1)
    } else if written < WRITE_BUDGET / 2 {
        (size * 2).min(WAVE)
    } else {
        size
    }
}

/// An event read from the log.
struct Pending {
    id: i64,
    kind: String,
    /// The ticket rules may act on: none for an event without a ticket or caused by a rule
    /// (rules never trigger rules).
    ticket_id: Option<i64>,
    /// Parsed only for an event rules may act on.
    changes: Json,
    changes_text: String,
}

impl Pending {
    fn new(id: i64, kind: String, actor: &str, ticket_id: Option<i64>, changes_text: String) -> Self {
        let caused_by_rule = actor.starts_with("automation:") || actor.starts_with("workflow:");
        let ticket_id = ticket_id.filter(|_| !caused_by_rule);
        let changes = match ticket_id {
            Some(_) => serde_json::from_str(&changes_text).unwrap_or(Json::Null),
            None => Json::Null,
        };
        Pending { id, kind, ticket_id, changes, changes_text }
    }
}

/// The next events of a pass to handle together: `pending[..end]`, of which `work` are the ones
/// some rule wants (each of another ticket); the others are passed over.
struct Wave<'w> {
    end: usize,
    work: Vec<Work<'w>>,
}

/// An event of a wave that some rule wants.
struct Work<'w> {
    /// Its place in the pending events.
    index: usize,
    ticket_id: i64,
    firing: Vec<(i64, Arc<plugdesk_workflow::Script>)>,
    wanting: Vec<&'w automation::Row>,
}

/// Cuts the next wave off the front of `pending`: events in log order up to `size` events
/// with work, and up to (not including) the second event of a ticket already in the wave, so
/// events of one ticket are handled in order, each seeing what the one before it did. Events
/// nobody wants, without a ticket, or caused by a rule (actions never cascade) join the wave
/// to be passed over. The wave is never empty when `pending` is not.
fn cut_wave<'w>(
    pending: &[Pending],
    workflows: &[(i64, Arc<plugdesk_workflow::Script>)],
    automations: &'w [automation::Row],
    size: usize,
) -> Wave<'w> {
    let mut tickets = HashSet::new();
    let mut work = Vec::new();
    let mut end = 0;
    for (index, e) in pending.iter().enumerate() {
        let Some(ticket_id) = e.ticket_id else {
            end = index + 1;
            continue;
        };
        let firing = crate::workflow::firing(workflows, &e.kind, &e.changes, None);
        let wanting: Vec<&automation::Row> = automations.iter().filter(|a| a.wants(&e.kind)).collect();
        if firing.is_empty() && wanting.is_empty() {
            end = index + 1;
            continue;
        }
        if work.len() >= size.max(1) || !tickets.insert(ticket_id) {
            break;
        }
        work.push(Work { index, ticket_id, firing, wanting });
        end = index + 1;
    }
    Wave { end, work }
}

/// Runs a wave's workflows and automations and applies all their actions in one transaction
/// with the cursor (moved to the wave's last event). The automations see each ticket as it
/// was when its event happened, like the first workflow does.
async fn handle(core: &crate::Core, workspace_id: i64, pending: &[Pending], wave: Wave<'_>) -> Result<Duration> {
    let cursor = pending[wave.end - 1].id;
    if wave.work.is_empty() {
        return Ok(Duration::ZERO);
    }
    if wave.work.iter().any(|w| !w.wanting.is_empty()) {
        // Automations need their plugins compiled (at start-up that takes seconds);
        // workflows do not wait for it.
        core.channels().wait_loaded().await;
    }
    let firing = wave
        .work
        .iter()
        .map(|w| {
            let e = &pending[w.index];
            crate::workflow::Firing {
                kind: &e.kind,
                changes: &e.changes,
                ticket_id: w.ticket_id,
                workflows: w.firing.clone(),
            }
        })
        .collect();
    let started = Instant::now();
    let planned = crate::workflow::plan_wave(core, workspace_id, firing).await?;
    // The automations of all the wave's events at once; each event's own in order.
    let asked = futures_util::future::join_all(wave.work.iter().map(|w| async move {
        let e = &pending[w.index];
        let mut runs = Vec::with_capacity(w.wanting.len());
        for a in &w.wanting {
            runs.push(automation::plan_one(core, a, &e.kind, &e.changes_text, w.ticket_id).await);
        }
        runs
    }))
    .await;
    let mut batch = Vec::with_capacity(wave.work.len());
    let mut records = Vec::with_capacity(wave.work.len());
    for ((w, (mut runs, planned)), asked) in wave.work.iter().zip(planned).zip(asked) {
        let from_workflows = runs.len();
        let mut positions = Vec::with_capacity(asked.len());
        for (a, run) in w.wanting.iter().zip(asked) {
            match run {
                Ok(run) => {
                    positions.push((*a, runs.len()));
                    runs.push(run);
                }
                Err(err) => automation::record_outcome(core, a, Err(&err)).await?,
            }
        }
        batch.push((w.ticket_id, runs));
        records.push((w.ticket_id, planned, from_workflows, positions));
    }
    let planning = started.elapsed();
    let outcomes = crate::action::apply_batch(core, workspace_id, batch, Some(cursor)).await?;
    let written = started.elapsed() - planning;
    tracing::debug!(
        workspace = workspace_id,
        events = wave.work.len(),
        planned_us = planning.as_micros() as u64,
        written_us = written.as_micros() as u64,
        "wave handled"
    );
    for ((ticket_id, planned, from_workflows, positions), outcomes) in records.into_iter().zip(outcomes) {
        crate::workflow::record_outcomes(core, ticket_id, planned, &outcomes[..from_workflows.min(outcomes.len())]);
        for (a, i) in positions {
            if let Some(outcome) = outcomes.get(i) {
                automation::record_outcome(core, a, outcome.as_ref().map(|_| ())).await?;
            }
        }
    }
    Ok(written)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str, ticket_id: Option<i64>, actor: &str) -> Pending {
        Pending::new(id, kind.into(), actor, ticket_id, "{}".into())
    }

    fn workflows() -> Vec<(i64, Arc<plugdesk_workflow::Script>)> {
        let engine = plugdesk_workflow::Engine::new(plugdesk_workflow::Limits::default());
        let script = engine.compile("// on: ticket.created\nnote(\"seen\");").expect("compiles");
        vec![(1, Arc::new(script))]
    }

    /// (end, the indexes of the events with work) of each wave `pending` is cut into.
    fn waves(pending: &[Pending], size: usize) -> Vec<(usize, Vec<usize>)> {
        let w = workflows();
        let mut out = Vec::new();
        let mut at = 0;
        while at < pending.len() {
            let wave = cut_wave(&pending[at..], &w, &[], size);
            assert!(wave.end > 0, "a wave is never empty");
            out.push((at + wave.end, wave.work.iter().map(|x| at + x.index).collect()));
            at += wave.end;
        }
        out
    }

    #[test]
    fn events_of_different_tickets_share_a_wave() {
        let pending: Vec<Pending> = (1..=5).map(|i| event(i, "ticket.created", Some(i * 10), "customer:1")).collect();
        assert_eq!(waves(&pending, 64), [(5, vec![0, 1, 2, 3, 4])]);
        assert_eq!(waves(&pending, 2), [(2, vec![0, 1]), (4, vec![2, 3]), (5, vec![4])]);
    }

    #[test]
    fn a_tickets_second_event_waits_for_the_next_wave() {
        let pending = [
            event(1, "ticket.created", Some(10), "customer:1"),
            event(2, "ticket.created", Some(20), "customer:2"),
            event(3, "ticket.created", Some(10), "customer:1"),
            event(4, "ticket.created", Some(30), "customer:3"),
        ];
        // Event 3 is ticket 10's second: it starts the next wave, and event 4 waits with it
        // (a wave is a run of the log, so the cursor can move to its end).
        assert_eq!(waves(&pending, 64), [(2, vec![0, 1]), (4, vec![2, 3])]);
    }

    #[test]
    fn events_without_work_are_passed_over_inside_a_wave() {
        let pending = [
            event(1, "ticket.created", Some(10), "workflow:4"),
            event(2, "customer.created", None, "api"),
            event(3, "ticket.updated", Some(20), "agent:1"),
            event(4, "ticket.created", Some(20), "customer:2"),
            event(5, "ticket.updated", Some(20), "agent:1"),
        ];
        // A rule's own event, one without a ticket and one no workflow fires on cost nothing,
        // even for a ticket already in the wave.
        assert_eq!(waves(&pending, 64), [(5, vec![3])]);
    }

    #[test]
    fn waves_grow_while_their_transaction_is_short_and_shrink_when_it_is_not() {
        let ms = Duration::from_millis;
        assert_eq!(next_wave_size(8, ms(20), ms(1)), 16);
        assert_eq!(next_wave_size(64, ms(20), ms(1)), 64, "never over WAVE");
        assert_eq!(next_wave_size(16, ms(20), ms(4)), 16, "between half the budget and the budget: kept");
        assert_eq!(next_wave_size(16, ms(20), ms(9)), 8, "a long transaction holds up the intake");
        assert_eq!(next_wave_size(16, ms(300), ms(1)), 8, "slow rules");
        assert_eq!(next_wave_size(1, ms(300), ms(9)), 1);
    }

    #[test]
    fn after_an_unfinished_pass_events_go_one_at_a_time() {
        let pending: Vec<Pending> = (1..=3).map(|i| event(i, "ticket.created", Some(i), "customer:1")).collect();
        assert_eq!(waves(&pending, 1), [(1, vec![0]), (2, vec![1]), (3, vec![2])]);
    }
}
