//! Time-driven workflow runs: follow-up checks and cron schedules.
//!
//! - **Follow-ups.** A workflow's `follow_up(hours, note)` stores a due time. When it is due,
//!   the scheduler records a `ticket.follow_up` event (`{"note", "scheduled_by"}`) with actor
//!   `schedule`, and the dispatcher hands it to the workflows that listen for it (the default
//!   library's follow-up check answers with the `follow_up` template if the customer has not
//!   written since). Each follow-up fires once, also with several nodes (claimed by an
//!   `UPDATE … WHERE fired_at IS NULL`).
//! - **Cron schedules.** A workflow whose header says `// on: schedule 0 9 * * 1-5` runs when
//!   its schedule matches a minute (UTC), once per matching minute across all nodes (claimed
//!   in `workflow_schedule`), over the workspace's unresolved tickets (`new`, `open`,
//!   `pending`; oldest first, at most 500 per run), with event kind `schedule`. A minute the
//!   server was down for is not made up.

use std::time::Duration;

use serde_json::json;

use crate::db;
use crate::error::Result;
use crate::event::{self, NewEvent};

/// The last minute this node looked for due schedules.
static LOOKED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Tickets one scheduled run looks at, at most.
const SWEEP: i64 = 500;

/// Fires due follow-ups and cron schedules for as long as the server runs, each in a loop of
/// its own: a cron run over hundreds of tickets takes a while and must not hold follow-ups up.
pub async fn run(core: crate::Core) {
    let tick = Duration::from_millis(core.rules().tick_ms.max(50));
    let c = core.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = cron(&c).await {
                tracing::warn!(error = %e, "schedule pass failed");
            }
            tokio::time::sleep(tick).await;
        }
    });
    loop {
        if let Err(e) = follow_ups(&core).await {
            tracing::warn!(error = %e, "follow-up pass failed");
        }
        tokio::time::sleep(tick).await;
    }
}

/// Records a `ticket.follow_up` event for each due follow-up. Returns how many fired.
///
/// # Errors
/// Database errors.
pub async fn follow_ups(core: &crate::Core) -> Result<usize> {
    let now = crate::now_ms();
    let due = db::query_all(
        core.db(),
        "SELECT f.id, f.workspace_id, f.ticket_id, f.note, f.actor, t.customer_id FROM follow_ups f JOIN tickets t ON t.id = f.ticket_id WHERE f.fired_at IS NULL AND f.due_at <= ? ORDER BY f.due_at LIMIT 100",
        vec![now.into()],
    )
    .await?;
    let mut fired = 0;
    for f in &due {
        let id: i64 = db::col(f, "id")?;
        let workspace_id: i64 = db::col(f, "workspace_id")?;
        let txn = db::begin_write(core.db()).await?;
        let claimed = db::exec(
            &txn,
            "UPDATE follow_ups SET fired_at = ? WHERE id = ? AND fired_at IS NULL",
            vec![now.into(), id.into()],
        )
        .await?;
        if claimed != 1 {
            continue;
        }
        let events = event::append(
            &txn,
            workspace_id,
            vec![NewEvent {
                kind: "ticket.follow_up",
                actor: "schedule".into(),
                ticket_id: Some(db::col(f, "ticket_id")?),
                customer_id: Some(db::col(f, "customer_id")?),
                changes: json!({
                    "follow_up_id": id,
                    "note": db::col::<String>(f, "note")?,
                    "scheduled_by": db::col::<String>(f, "actor")?,
                }),
            }],
        )
        .await?;
        txn.commit().await?;
        core.bus().publish(events);
        fired += 1;
    }
    Ok(fired)
}

/// Runs the workflows whose cron schedule matches the current minute (once per minute across
/// nodes). Returns how many workflows ran.
///
/// # Errors
/// Database errors.
pub async fn cron(core: &crate::Core) -> Result<usize> {
    let now = crate::now_ms();
    let minute = now.div_euclid(60_000);
    // Once per minute is enough to look.
    if LOOKED.swap(minute, std::sync::atomic::Ordering::Relaxed) == minute {
        return Ok(0);
    }
    let due = crate::workflow::scheduled(core, now).await?;
    let mut ran = 0;
    for (workflow_id, workspace_id) in due {
        db::exec(
            core.db(),
            "INSERT INTO workflow_schedule (workflow_id, last_minute) VALUES (?, ?) ON CONFLICT (workflow_id) DO NOTHING",
            vec![workflow_id.into(), (minute - 1).into()],
        )
        .await?;
        let claimed = db::exec(
            core.db(),
            "UPDATE workflow_schedule SET last_minute = ? WHERE workflow_id = ? AND last_minute < ?",
            vec![minute.into(), workflow_id.into(), minute.into()],
        )
        .await?;
        if claimed != 1 {
            continue;
        }
        ran += 1;
        let tickets = db::query_all(
            core.db(),
            "SELECT id FROM tickets WHERE workspace_id = ? AND status IN ('new', 'open', 'pending') ORDER BY id LIMIT ?",
            vec![workspace_id.into(), SWEEP.into()],
        )
        .await?;
        let changes = json!({ "minute": crate::rfc3339(minute * 60_000) });
        for t in &tickets {
            let ticket_id: i64 = db::col(t, "id")?;
            if let Err(e) =
                crate::workflow::run_for_event(core, workspace_id, "schedule", &changes, ticket_id, Some(workflow_id))
                    .await
            {
                tracing::warn!(workflow = workflow_id, ticket = ticket_id, error = %e, "scheduled workflow failed");
            }
        }
    }
    Ok(ran)
}
