//! What rules do: the checked actions of workflows and automation plugins, and applying them.
//!
//! All the runs one event causes are applied in **one transaction**; each run (one workflow's
//! or one automation's actions) in a savepoint of its own, so a run whose action fails (an
//! unknown agent, a transition the status flow refuses) leaves nothing behind while the other
//! runs of the event still apply. Every action is recorded as an event with the rule as its
//! actor (`workflow:7`, `automation:3`).
//!
//! Automatic replies (replies by a rule, survey invitations included) are capped per customer:
//! at most `workflows.auto_replies_per_hour` in any hour; one over the cap is stored as an
//! internal note saying it was held back, so a loop that slips past everything else stops.

use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value as Json, json};

use crate::customer::CustomerPatch;
use crate::db;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};
use crate::ticket::{MessageInput, MessageKind, TicketPatch};

/// A checked action, ready to apply.
#[derive(Debug, Clone)]
pub(crate) enum Checked {
    /// Ticket fields.
    Update(TicketPatch),
    /// A note or a reply.
    Message(MessageKind, MessageInput),
    /// The ticket's customer's fields (tier).
    Customer(CustomerPatch),
    /// A notification for an agent.
    Notify { agent_id: i64, body: String },
    /// A call of one of the workspace's outgoing webhooks.
    Webhook { name: String, payload: Json },
    /// A follow-up check of the ticket after a delay.
    FollowUp { after_ms: i64, note: String },
    /// A satisfaction survey: its token and the invitation to send.
    Survey { token: String, invitation: MessageInput },
}

/// One rule's checked actions and the actor they are recorded under.
pub(crate) struct RuleRun {
    pub(crate) actor: String,
    pub(crate) actions: Vec<Checked>,
}

/// A note's or reply's input with a plain-text body and nothing else.
pub(crate) fn text_message(body: String) -> MessageInput {
    MessageInput { body, ..MessageInput::default() }
}

/// Applies the runs of one event in one transaction, each run in a savepoint; returns each
/// run's outcome in order. With `cursor` (the dispatcher's event id) the workspace's dispatch
/// cursor moves to it in the same transaction, so the event's actions and its being handled
/// commit together, and only if the cursor was still before it: a node that lost its lease
/// while it worked cannot apply an event a second time. When no run has actions nothing is
/// written (the cursor included). Events are published and workers woken after the commit.
///
/// # Errors
/// [`Error::Conflict`] when another node handled the event first (nothing was written);
/// otherwise only when the transaction itself fails; a run's own failure is in its outcome.
pub(crate) async fn apply(
    core: &crate::Core,
    workspace_id: i64,
    ticket_id: i64,
    runs: Vec<RuleRun>,
    cursor: Option<i64>,
) -> Result<Vec<Result<()>>> {
    let mut outcomes = apply_batch(core, workspace_id, vec![(ticket_id, runs)], cursor).await?;
    Ok(outcomes.pop().unwrap_or_default())
}

/// [`apply`] for several events at once (a dispatcher's wave, each of another ticket): one
/// transaction for all of them, each run in a savepoint of its own, the cursor moved to
/// `cursor` (the wave's last event) in the same transaction. Returns the outcomes per event.
///
/// # Errors
/// As [`apply`]; a ticket that is gone fails its runs, not the batch.
pub(crate) async fn apply_batch(
    core: &crate::Core,
    workspace_id: i64,
    events: Vec<(i64, Vec<RuleRun>)>,
    cursor: Option<i64>,
) -> Result<Vec<Vec<Result<()>>>> {
    if events.iter().all(|(_, runs)| runs.iter().all(|r| r.actions.is_empty())) {
        return Ok(events.iter().map(|(_, runs)| runs.iter().map(|_| Ok(())).collect()).collect());
    }
    let txn = db::begin_write(core.db()).await?;
    let mut all = Vec::with_capacity(events.len());
    let mut publish = Vec::new();
    let mut wake = Wake::default();
    for (ticket_id, runs) in events {
        let mut outcomes = Vec::with_capacity(runs.len());
        let customer_id = match crate::ticket::find(&txn, workspace_id, ticket_id).await {
            Ok(t) => t.customer_id,
            Err(Error::NotFound(what)) => {
                all.push(runs.iter().map(|_| Err(Error::NotFound(what))).collect());
                continue;
            }
            Err(e) => return Err(e),
        };
        for run in runs {
            if run.actions.is_empty() {
                outcomes.push(Ok(()));
                continue;
            }
            let savepoint = txn.begin().await?;
            let mut events = Vec::new();
            let mut w = Wake::default();
            let ids = (workspace_id, ticket_id, customer_id);
            match apply_run(&savepoint, core, ids, &run, &mut events, &mut w).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    publish.extend(events);
                    wake.outbox |= w.outbox;
                    wake.webhooks |= w.webhooks;
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    outcomes.push(Err(e));
                }
            }
        }
        all.push(outcomes);
    }
    if let Some(id) = cursor
        && crate::dispatch::advance(&txn, workspace_id, id).await? != 1
    {
        // Dropping the transaction rolls every run back.
        return Err(Error::Conflict(format!("event {id} was handled by another node")));
    }
    txn.commit().await?;
    core.bus().publish(publish);
    if wake.outbox {
        core.outbox().wake();
    }
    if wake.webhooks {
        crate::webhook::wake();
    }
    Ok(all)
}

#[derive(Default)]
struct Wake {
    outbox: bool,
    webhooks: bool,
}

async fn apply_run<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Core,
    (workspace_id, ticket_id, customer_id): (i64, i64, i64),
    run: &RuleRun,
    events: &mut Vec<event::Event>,
    wake: &mut Wake,
) -> Result<()> {
    let actor = run.actor.as_str();
    let record = |kind: &'static str, changes: Json| NewEvent {
        kind,
        actor: actor.to_owned(),
        ticket_id: Some(ticket_id),
        customer_id: Some(customer_id),
        changes,
    };
    let now = crate::now_ms();
    for action in &run.actions {
        match action {
            Checked::Update(patch) => {
                events.extend(crate::ticket::update_in(txn, core, workspace_id, ticket_id, actor, patch).await?);
            }
            Checked::Message(kind, input) => {
                message(txn, core, (workspace_id, ticket_id, customer_id), *kind, input, actor, events, wake).await?;
            }
            Checked::Customer(patch) => {
                events.extend(crate::customer::update_in(txn, workspace_id, customer_id, actor, patch).await?);
            }
            Checked::Notify { agent_id, body } => {
                crate::agent::find(txn, workspace_id, *agent_id)
                    .await
                    .map_err(|_| Error::invalid("agent_id", format!("agent {agent_id} does not exist")))?;
                let kind = crate::survey::NotificationKind::Workflow;
                let id =
                    crate::survey::notify(txn, workspace_id, *agent_id, Some(ticket_id), kind, body, actor).await?;
                let e = record("agent.notified", json!({ "notification_id": id, "agent_id": agent_id, "body": body }));
                events.extend(event::append(txn, workspace_id, vec![e]).await?);
            }
            Checked::Webhook { name, payload } => {
                let id = crate::webhook::enqueue(txn, workspace_id, name, ticket_id, actor, payload, now).await?;
                let e = record("webhook.queued", json!({ "delivery_id": id, "webhook": name }));
                events.extend(event::append(txn, workspace_id, vec![e]).await?);
                wake.webhooks = true;
            }
            Checked::FollowUp { after_ms, note } => {
                let due = now + after_ms;
                db::exec(
                    txn,
                    "INSERT INTO follow_ups (workspace_id, ticket_id, due_at, note, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![
                        workspace_id.into(),
                        ticket_id.into(),
                        due.into(),
                        note.clone().into(),
                        actor.into(),
                        now.into(),
                    ],
                )
                .await?;
                let e = record("follow_up.scheduled", json!({ "due_at": crate::rfc3339(due), "note": note }));
                events.extend(event::append(txn, workspace_id, vec![e]).await?);
            }
            Checked::Survey { token, invitation } => {
                db::exec(
                    txn,
                    "INSERT INTO surveys (workspace_id, ticket_id, token, created_at) VALUES (?, ?, ?, ?)",
                    vec![workspace_id.into(), ticket_id.into(), token.clone().into(), now.into()],
                )
                .await?;
                let e = record("survey.requested", json!({}));
                events.extend(event::append(txn, workspace_id, vec![e]).await?);
                let ids = (workspace_id, ticket_id, customer_id);
                message(txn, core, ids, MessageKind::Reply, invitation, actor, events, wake).await?;
            }
        }
    }
    Ok(())
}

/// Adds a rule's note or reply (subject to the automatic-reply cap).
#[allow(clippy::too_many_arguments)]
async fn message<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Core,
    (workspace_id, ticket_id, customer_id): (i64, i64, i64),
    kind: MessageKind,
    input: &MessageInput,
    actor: &str,
    events: &mut Vec<event::Event>,
    wake: &mut Wake,
) -> Result<()> {
    let (kind, input) = capped(txn, core, (workspace_id, ticket_id, customer_id), kind, input, crate::now_ms()).await?;
    let (_, ev, outbound) =
        crate::ticket::add_message_in(txn, core, workspace_id, ticket_id, kind, actor, &input).await?;
    events.extend(ev);
    wake.outbox |= outbound;
    Ok(())
}

/// A rule's reply, or an internal note saying it was held back: when the customer's latest
/// message was sent by a machine (RFC 3834: automatic mail is never answered automatically),
/// or when the customer has had `auto_replies_per_hour` automatic replies in the last hour.
async fn capped<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Core,
    (workspace_id, ticket_id, customer_id): (i64, i64, i64),
    kind: MessageKind,
    input: &MessageInput,
    now: i64,
) -> Result<(MessageKind, MessageInput)> {
    if kind != MessageKind::Reply {
        return Ok((kind, input.clone()));
    }
    let latest_automatic = db::query_one(
        txn,
        "SELECT automatic FROM messages WHERE ticket_id = ? AND direction = 'inbound' ORDER BY id DESC LIMIT 1",
        vec![ticket_id.into()],
    )
    .await?
    .map(|r| db::col::<i32>(&r, "automatic"))
    .transpose()?
    .is_some_and(|a| a != 0);
    if latest_automatic {
        let note = format!(
            "Automatic reply held back: the customer's latest message was sent automatically \
             (an auto-reply, a notification or a bounce), and automatic mail is never answered \
             automatically (RFC 3834). It would have said:\n\n{}",
            input.body
        );
        return Ok((MessageKind::Note, text_message(note)));
    }
    let identities = db::query_all(
        txn,
        "SELECT kind, address FROM customer_identities WHERE customer_id = ?",
        vec![customer_id.into()],
    )
    .await?;
    let mut reachable = false;
    for r in &identities {
        reachable |= !crate::channel::unknown_sender(&db::col::<String>(r, "kind")?, &db::col::<String>(r, "address")?);
    }
    if !identities.is_empty() && !reachable {
        let note = format!(
            "Automatic reply held back: the sender of this message is unknown (no address in it \
             could be answered). It would have said:\n\n{}",
            input.body
        );
        return Ok((MessageKind::Note, text_message(note)));
    }
    let cap = i64::from(core.rules().auto_replies_per_hour);
    let sent: i64 = db::query_one(
        txn,
        "SELECT COUNT(*) AS n FROM tickets t JOIN messages m ON m.ticket_id = t.id WHERE t.workspace_id = ? AND t.customer_id = ? AND m.direction = 'outbound' AND m.author_kind = 'automation' AND m.created_at > ?",
        vec![workspace_id.into(), customer_id.into(), (now - 3_600_000).into()],
    )
    .await?
    .map(|r| db::col(&r, "n"))
    .transpose()?
    .unwrap_or(0);
    if sent < cap {
        return Ok((kind, input.clone()));
    }
    let note = format!(
        "Automatic reply held back: this customer had {sent} automatic replies in the last hour \
         (limit workflows.auto_replies_per_hour = {cap}). It would have said:\n\n{}",
        input.body
    );
    Ok((MessageKind::Note, text_message(note)))
}
