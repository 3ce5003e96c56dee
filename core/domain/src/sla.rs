//! SLA clocks. Each open obligation of a ticket (first response, next response, resolution)
//! is a row in `sla_timers` with its due time and its warning time, counted in the tier's
//! business hours and paused while the ticket is `pending`. A scheduler polls the table and
//! emits `sla.warning` and `sla.breached` once each: the flag is set by a conditional
//! `UPDATE` in the same transaction as the event, so neither a restart nor a second node can
//! emit an event twice or lose one.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend};
use serde::Serialize;
use serde_json::json;

use crate::calendar::Hours;
use crate::db;
use crate::entity::tier;
use crate::error::Result;
use crate::event::{self, NewEvent};

/// Most timers handled per scheduler pass; the next pass takes the rest.
const BATCH: i64 = 500;

/// The three obligations a ticket can have open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The first agent reply.
    FirstResponse,
    /// An agent reply to a customer's follow-up.
    NextResponse,
    /// The ticket is resolved.
    Resolution,
}

impl Clock {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Clock::FirstResponse => "first_response",
            Clock::NextResponse => "next_response",
            Clock::Resolution => "resolution",
        }
    }
}

/// A tier's targets with its compiled calendar.
#[derive(Debug, Clone)]
pub struct Targets {
    hours: Hours,
    first_response_ms: i64,
    next_response_ms: i64,
    resolution_ms: i64,
    warning_ms: i64,
}

impl Targets {
    /// Compiles a stored tier.
    ///
    /// # Errors
    /// When its stored calendar is invalid (it was validated on save).
    pub fn of(t: &tier::Model) -> Result<Self> {
        let cal: crate::calendar::Calendar = serde_json::from_str(&t.calendar)?;
        Ok(Targets {
            hours: cal.compile()?,
            first_response_ms: t.first_response_secs * 1000,
            next_response_ms: t.next_response_secs * 1000,
            resolution_ms: t.resolution_secs * 1000,
            warning_ms: t.warning_secs * 1000,
        })
    }

    fn target_ms(&self, clock: Clock) -> i64 {
        match clock {
            Clock::FirstResponse => self.first_response_ms,
            Clock::NextResponse => self.next_response_ms,
            Clock::Resolution => self.resolution_ms,
        }
    }

    /// `(warn_at, due_at)` of a clock started at `start`.
    pub fn schedule(&self, clock: Clock, start: i64) -> (i64, i64) {
        let target = self.target_ms(clock);
        let due = self.hours.add_business_ms(start, target);
        let warn = self.hours.add_business_ms(start, (target - self.warning_ms).max(0));
        (warn, due)
    }
}

/// A timer row about to be written.
#[derive(Debug, Clone)]
pub struct NewTimer {
    /// Workspace.
    pub workspace_id: i64,
    /// Ticket.
    pub ticket_id: i64,
    /// Which obligation.
    pub clock: Clock,
    /// When it started.
    pub started_at: i64,
    /// When to warn.
    pub warn_at: i64,
    /// When it is breached.
    pub due_at: i64,
}

impl NewTimer {
    /// A timer for `clock` starting at `start` under `targets`.
    pub fn new(workspace_id: i64, ticket_id: i64, clock: Clock, start: i64, targets: &Targets) -> Self {
        let (warn_at, due_at) = targets.schedule(clock, start);
        NewTimer { workspace_id, ticket_id, clock, started_at: start, warn_at, due_at }
    }
}

/// Writes timers with one multi-row insert. The tickets must have no running timer of the
/// same kind (fresh tickets); use [`restart`] otherwise.
pub async fn start_many<C: ConnectionTrait>(db: &C, timers: &[NewTimer]) -> Result<()> {
    db::exec_all(db, insert_statement(timers)).await
}

/// The insert that starts `timers`, not yet run.
pub fn insert_statement(timers: &[NewTimer]) -> Vec<db::Sql> {
    let rows = timers
        .iter()
        .map(|t| {
            vec![
                t.workspace_id.into(),
                t.ticket_id.into(),
                t.clock.as_str().into(),
                t.started_at.into(),
                t.due_at.into(),
                t.warn_at.into(),
            ]
        })
        .collect();
    db::insert_statement("sla_timers", &["workspace_id", "ticket_id", "kind", "started_at", "due_at", "warn_at"], rows)
}

/// (Re)starts one clock of a ticket.
pub async fn restart<C: ConnectionTrait>(db: &C, timer: NewTimer) -> Result<()> {
    stop(db, timer.ticket_id, &[timer.clock]).await?;
    start_many(db, &[timer]).await
}

/// Stops clocks of a ticket (the obligation was met or no longer applies).
pub async fn stop<C: ConnectionTrait>(db: &C, ticket_id: i64, clocks: &[Clock]) -> Result<()> {
    for c in clocks {
        db::exec(
            db,
            "DELETE FROM sla_timers WHERE ticket_id = ? AND kind = ?",
            vec![ticket_id.into(), c.as_str().into()],
        )
        .await?;
    }
    Ok(())
}

/// Stops every clock of a ticket.
pub async fn stop_all<C: ConnectionTrait>(db: &C, ticket_id: i64) -> Result<()> {
    db::exec(db, "DELETE FROM sla_timers WHERE ticket_id = ?", vec![ticket_id.into()]).await?;
    Ok(())
}

/// Pauses a ticket's clocks (it went `pending`: we wait for the customer).
pub async fn pause<C: ConnectionTrait>(db: &C, ticket_id: i64, now: i64) -> Result<()> {
    db::exec(
        db,
        "UPDATE sla_timers SET paused_at = ? WHERE ticket_id = ? AND paused_at IS NULL",
        vec![now.into(), ticket_id.into()],
    )
    .await?;
    Ok(())
}

/// Resumes paused clocks: whatever business time was left at the pause is left now.
pub async fn resume<C: ConnectionTrait>(db: &C, ticket_id: i64, now: i64, targets: &Targets) -> Result<()> {
    let rows = db::query_all(
        db,
        "SELECT id, due_at, warn_at, paused_at FROM sla_timers WHERE ticket_id = ? AND paused_at IS NOT NULL",
        vec![ticket_id.into()],
    )
    .await?;
    for r in &rows {
        let paused_at: i64 = db::col(r, "paused_at")?;
        let due_left = targets.hours.business_ms_between(paused_at, db::col(r, "due_at")?);
        let warn_left = targets.hours.business_ms_between(paused_at, db::col(r, "warn_at")?);
        let due = targets.hours.add_business_ms(now, due_left);
        let warn = targets.hours.add_business_ms(now, warn_left);
        db::exec(
            db,
            "UPDATE sla_timers SET due_at = ?, warn_at = ?, paused_at = NULL WHERE id = ?",
            vec![due.into(), warn.into(), db::col::<i64>(r, "id")?.into()],
        )
        .await?;
    }
    Ok(())
}

/// A ticket's running clocks as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    /// `first_response`, `next_response` or `resolution`.
    pub kind: String,
    /// Due time.
    pub due_at: String,
    /// Warning time.
    pub warn_at: String,
    /// Paused while the ticket is pending.
    pub paused: bool,
    /// A warning was emitted.
    pub warned: bool,
    /// The target was missed.
    pub breached: bool,
}

/// The columns [`clock_from_row`] reads, prefixed `sla_`, for a `LEFT JOIN sla_timers s`.
pub const CLOCK_COLUMNS: &str = "s.kind AS sla_kind, s.due_at AS sla_due_at, s.warn_at AS sla_warn_at, s.paused_at AS sla_paused_at, \
     s.warned_at AS sla_warned_at, s.breached_at AS sla_breached_at";

/// Reads a clock from a row that joined `sla_timers` with [`CLOCK_COLUMNS`]; `None` when the
/// row has no clock (the left join found none).
pub fn clock_from_row(r: &sea_orm::QueryResult) -> Result<Option<ClockView>> {
    let Some(kind) = db::col::<Option<String>>(r, "sla_kind")? else { return Ok(None) };
    Ok(Some(ClockView {
        kind,
        due_at: crate::rfc3339(db::col(r, "sla_due_at")?),
        warn_at: crate::rfc3339(db::col(r, "sla_warn_at")?),
        paused: db::col::<Option<i64>>(r, "sla_paused_at")?.is_some(),
        warned: db::col::<Option<i64>>(r, "sla_warned_at")?.is_some(),
        breached: db::col::<Option<i64>>(r, "sla_breached_at")?.is_some(),
    }))
}

/// One scheduler pass: emits every due warning and breach. Returns how many events it emitted.
pub async fn tick(core: &crate::Domain, now: i64) -> Result<usize> {
    let mut emitted = 0;
    for (flag, at, kind) in [("warned_at", "warn_at", "sla.warning"), ("breached_at", "due_at", "sla.breached")] {
        let lock = if core.backend() == DbBackend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let txn = db::begin_write(core.db()).await?;
        let sql = format!(
            "SELECT id, workspace_id, ticket_id, kind, due_at FROM sla_timers WHERE {flag} IS NULL AND paused_at IS NULL AND {at} <= ? ORDER BY {at} LIMIT ?{lock}"
        );
        let rows = db::query_all(&txn, &sql, vec![now.into(), BATCH.into()]).await?;
        let mut events = Vec::new();
        for r in &rows {
            let id: i64 = db::col(r, "id")?;
            // Conditional: whoever sets the flag first emits the event.
            let set = db::exec(
                &txn,
                &format!("UPDATE sla_timers SET {flag} = ? WHERE id = ? AND {flag} IS NULL"),
                vec![now.into(), id.into()],
            )
            .await?;
            if set == 1 {
                let clock: String = db::col(r, "kind")?;
                let due: i64 = db::col(r, "due_at")?;
                events.push((
                    db::col::<i64>(r, "workspace_id")?,
                    NewEvent {
                        kind,
                        actor: "sla".into(),
                        ticket_id: Some(db::col(r, "ticket_id")?),
                        customer_id: None,
                        changes: json!({ "clock": clock, "due_at": crate::rfc3339(due) }),
                    },
                ));
            }
        }
        let notice = if kind == "sla.warning" {
            crate::survey::NotificationKind::SlaWarning
        } else {
            crate::survey::NotificationKind::SlaBreached
        };
        for (workspace_id, e) in &events {
            if let Some(ticket_id) = e.ticket_id {
                let clock = e.changes["clock"].as_str().unwrap_or_default();
                crate::survey::notify_assignee(&txn, *workspace_id, ticket_id, notice, clock, "sla").await?;
            }
        }
        let stored = event::append_many(&txn, events).await?;
        txn.commit().await?;
        emitted += stored.len();
        core.metrics().count_sla_events(kind, stored.len() as u64);
        core.bus().publish(stored);
    }
    Ok(emitted)
}

/// Runs the scheduler until the process ends.
pub async fn run(core: crate::Domain, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = tick(&core, crate::now_ms()).await {
            tracing::warn!(error = %e, "sla scheduler pass failed; retrying on the next tick");
        }
    }
}
