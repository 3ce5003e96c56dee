//! Automations: a workspace's installed automation plugins (the WIT `automation-plugin`
//! world), and what the event dispatcher (`dispatch`) asks of them.
//!
//! For each event of a ticket, every active automation of its workspace that wants the
//! event's type gets a read-only view (event, ticket, customer, latest messages) and answers
//! with actions, which are checked as a whole; the dispatcher applies them with the automation
//! as actor in the event's one transaction, which also moves its cursor, so a crash can
//! neither lose an answer's actions nor apply them twice.
//!
//! Loops: events caused by an automation (actor `automation:N`) are not handed to automations,
//! so an action never triggers a cascade.

use std::collections::HashMap;
use std::time::Instant;

use plugdesk_host::{Action, AutomationEvent, CustomerView, Kind, TicketView};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::action::RuleRun;
use crate::channel::{self, ChannelContext};
use crate::db;
use crate::error::{Error, Result};

/// Most actions one answer may carry.
const MAX_ACTIONS: usize = 20;
/// Capabilities an automation may be granted (no key-value store).
const CAPABILITIES: [&str; 2] = ["secrets", "http"];

/// Input for installing an automation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAutomation {
    /// Plugin id.
    pub plugin: String,
    /// Display name (default: the plugin's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Settings (a JSON object).
    #[serde(default)]
    pub settings: Option<Json>,
    /// Secrets by name; never returned or logged.
    #[serde(default)]
    pub secrets: HashMap<String, String>,
    /// Granted capabilities (`secrets`, `http:HOST[:PORT]`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Event types to hand it (default: what the plugin asks for).
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// An automation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AutomationView {
    /// Id.
    pub id: i64,
    /// Plugin id.
    pub plugin: String,
    /// Who owns the plugin: `installation` or `workspace` (this workspace uploaded it).
    pub plugin_scope: &'static str,
    /// Display name.
    pub name: String,
    /// Settings.
    pub settings: Json,
    /// Names of the secrets that are set.
    pub secrets: Vec<String>,
    /// Granted capabilities.
    pub grants: Vec<String>,
    /// Event types it gets.
    pub events: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Call counters since the server started.
    pub stats: crate::plugin::Stats,
}

pub(crate) struct Row {
    id: i64,
    workspace_id: i64,
    plugin_key: String,
    name: String,
    settings: serde_json::Map<String, Json>,
    secrets: HashMap<String, String>,
    grants: Vec<String>,
    events: Vec<String>,
    status: String,
    last_error: Option<String>,
}

fn row(r: &sea_orm::QueryResult) -> Result<Row> {
    Ok(Row {
        id: db::col(r, "id")?,
        workspace_id: db::col(r, "workspace_id")?,
        plugin_key: db::col(r, "plugin_key")?,
        name: db::col(r, "name")?,
        settings: serde_json::from_str(&db::col::<String>(r, "settings")?)?,
        secrets: serde_json::from_str(&crate::secret::open(&db::col::<String>(r, "secrets")?)?)?,
        grants: serde_json::from_str(&db::col::<String>(r, "grants")?)?,
        events: serde_json::from_str(&db::col::<String>(r, "events")?)?,
        status: db::col(r, "status")?,
        last_error: db::col(r, "last_error")?,
    })
}

fn view(r: Row, core: &crate::Core) -> AutomationView {
    let mut secrets: Vec<String> = r.secrets.keys().cloned().collect();
    secrets.sort();
    AutomationView {
        stats: core.channels().stats("automation", r.id),
        id: r.id,
        plugin: crate::plugin::plugin_id(&r.plugin_key).to_owned(),
        plugin_scope: crate::plugin::Scope::of_key(&r.plugin_key).0.as_str(),
        name: r.name,
        settings: Json::Object(r.settings),
        secrets,
        grants: r.grants,
        events: r.events,
        status: r.status,
        last_error: r.last_error,
    }
}

/// Installs an automation plugin in the workspace.
///
/// # Errors
/// [`Error::Invalid`] for an unknown plugin, a channel plugin, a grant the plugin does not ask
/// for, or a malformed event type.
pub async fn install(core: &crate::Core, workspace_id: i64, input: &NewAutomation) -> Result<AutomationView> {
    let (key, plugin) = channel::plugin_for(core, workspace_id, &input.plugin, Kind::Automation).await?;
    if let Some(g) = input.grants.iter().find(|g| !CAPABILITIES.contains(&g.as_str()) && !g.starts_with("http:")) {
        return Err(Error::invalid("grants", format!("automations may be granted secrets and http:HOST, not {g:?}")));
    }
    channel::validate_grants(&plugin.descriptor, &input.grants)?;
    let events = input.events.clone().unwrap_or_else(|| plugin.descriptor.events.clone());
    if events.is_empty() {
        return Err(Error::invalid("events", "name at least one event type, e.g. ticket.created"));
    }
    if let Some(e) = events
        .iter()
        .find(|e| e.is_empty() || e.len() > 64 || !e.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'))
    {
        return Err(Error::invalid("events", format!("{e:?} is not an event type such as ticket.created")));
    }
    let settings = channel::settings_object(input.settings.as_ref())?;
    let now = crate::now_ms();
    let r = db::query_one(
        core.db(),
        "INSERT INTO automations (workspace_id, plugin_key, name, settings, secrets, grants, events, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            key.into(),
            input.name.clone().unwrap_or_else(|| plugin.descriptor.name.clone()).into(),
            settings.to_string().into(),
            crate::secret::seal(&serde_json::to_string(&input.secrets)?)?.into(),
            serde_json::to_string(&input.grants)?.into(),
            serde_json::to_string(&events)?.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    get(core, workspace_id, db::col(&r, "id")?).await
}

/// One automation of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get(core: &crate::Core, workspace_id: i64, id: i64) -> Result<AutomationView> {
    let r = db::query_one(
        core.db(),
        "SELECT * FROM automations WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("automation"))?;
    Ok(view(row(&r)?, core))
}

/// Every automation of the workspace.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Core, workspace_id: i64) -> Result<Vec<AutomationView>> {
    db::query_all(core.db(), "SELECT * FROM automations WHERE workspace_id = ? ORDER BY id", vec![workspace_id.into()])
        .await?
        .iter()
        .map(|r| Ok(view(row(r)?, core)))
        .collect()
}

/// Enables or disables an automation.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn set_enabled(core: &crate::Core, workspace_id: i64, id: i64, enabled: bool) -> Result<AutomationView> {
    get(core, workspace_id, id).await?;
    db::exec(
        core.db(),
        "UPDATE automations SET status = ?, updated_at = ? WHERE id = ?",
        vec![if enabled { "active" } else { "disabled" }.into(), crate::now_ms().into(), id.into()],
    )
    .await?;
    get(core, workspace_id, id).await
}

/// The workspace's active automations (for the dispatcher).
///
/// # Errors
/// Database errors, a stored row that does not parse.
pub(crate) async fn active(core: &crate::Core, workspace_id: i64) -> Result<Vec<Row>> {
    db::query_all(
        core.db(),
        "SELECT * FROM automations WHERE workspace_id = ? AND status = 'active' ORDER BY id",
        vec![workspace_id.into()],
    )
    .await?
    .iter()
    .map(row)
    .collect()
}

impl Row {
    /// Whether it wants events of this type.
    pub(crate) fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// Records what became of an automation's run on an event: the error, or a success that
/// clears the last one.
pub(crate) async fn record_outcome(
    core: &crate::Core,
    a: &Row,
    outcome: std::result::Result<(), &Error>,
) -> Result<()> {
    match outcome {
        Err(err) => {
            tracing::warn!(automation = a.id, error = %err, "automation failed");
            db::exec(
                core.db(),
                "UPDATE automations SET last_error = ? WHERE id = ?",
                vec![err.to_string().into(), a.id.into()],
            )
            .await?;
        }
        Ok(()) if a.last_error.is_some() => {
            db::exec(core.db(), "UPDATE automations SET last_error = NULL WHERE id = ?", vec![a.id.into()]).await?;
        }
        Ok(()) => {}
    }
    Ok(())
}

/// Builds the event's view, calls the plugin and checks its actions; applying them is the
/// dispatcher's, in the event's transaction together with its cursor (so a crash can neither
/// lose them nor apply them twice).
///
/// # Errors
/// The plugin is not loaded, failed, refused the event or answered with a bad action.
pub(crate) async fn plan_one(
    core: &crate::Core,
    a: &Row,
    kind: &str,
    changes: &str,
    ticket_id: i64,
) -> Result<RuleRun> {
    let registry = core.channels().clone();
    let plugin = registry.plugin(&a.plugin_key).ok_or_else(|| {
        Error::Internal(format!("plugin {} is not loaded on this server", crate::plugin::plugin_id(&a.plugin_key)))
    })?;
    let event = event_view(core, a.workspace_id, kind, changes, ticket_id).await?;
    let ctx = ChannelContext::new(
        core,
        channel::Row::for_automation(
            a.id,
            a.workspace_id,
            a.plugin_key.clone(),
            a.name.clone(),
            a.settings.clone(),
            a.secrets.clone(),
            a.grants.clone(),
        ),
    );
    let started = Instant::now();
    let reg = registry.clone();
    let called = tokio::task::spawn_blocking(move || reg.host.handle_event(&plugin, &reg.limits, ctx, event))
        .await
        .map_err(|e| Error::Internal(format!("plugin task failed: {e}")))?;
    let elapsed = started.elapsed();
    let actions = match called {
        Ok(Ok(actions)) => actions,
        Ok(Err(refusal)) => {
            let msg = format!("plugin {} refused the event: {refusal}", crate::plugin::plugin_id(&a.plugin_key));
            registry.record("automation", a.id, elapsed, Some(msg.clone()));
            return Err(Error::Invalid { field: None, message: msg });
        }
        Err(e) => {
            let msg = format!("plugin {} of automation {}: {e}", crate::plugin::plugin_id(&a.plugin_key), a.id);
            registry.record("automation", a.id, elapsed, Some(msg.clone()));
            return Err(Error::Invalid { field: None, message: msg });
        }
    };
    // The plugin contract has no template or survey actions: the check needs no view.
    let checked = match decode(&actions) {
        Ok(typed) => crate::workflow::check(core, a.workspace_id, &Json::Null, &typed).await,
        Err(e) => Err(e),
    };
    let checked = match checked {
        Ok(c) => c,
        Err(e) => {
            registry.record("automation", a.id, elapsed, Some(e.to_string()));
            return Err(e);
        }
    };
    registry.record("automation", a.id, elapsed, None);
    Ok(RuleRun { actor: format!("automation:{}", a.id), actions: checked })
}

/// Decodes a plugin's answer into the rules' typed actions (the ones the plugin contract
/// offers: `update`, `note`, `reply`), before any is applied: a bad one refuses the whole
/// answer. They are then checked like a workflow's ([`crate::workflow::check`]).
fn decode(actions: &[Action]) -> Result<Vec<plugdesk_workflow::Action>> {
    if actions.len() > MAX_ACTIONS {
        return Err(Error::invalid("actions", format!("{} actions; at most {MAX_ACTIONS} per event", actions.len())));
    }
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let bad = |m: String| Error::invalid("actions", format!("action {} ({}): {m}", i + 1, a.name));
            if !matches!(a.name.as_str(), "update" | "note" | "reply") {
                return Err(bad(format!("unknown action {:?}; actions are update, note, reply", a.name)));
            }
            let args: Json = serde_json::from_str(&a.args).map_err(|e| bad(format!("arguments are not JSON: {e}")))?;
            let typed: plugdesk_workflow::Action =
                serde_json::from_value(serde_json::json!({ "name": a.name, "args": args }))
                    .map_err(|e| bad(e.to_string()))?;
            if let plugdesk_workflow::Action::Note(t) | plugdesk_workflow::Action::Reply(t) = &typed
                && t.body.trim().is_empty()
            {
                return Err(bad("body is empty".into()));
            }
            Ok(typed)
        })
        .collect()
}

/// What a rule sees of a ticket: the ticket, its customer, the customer's open tickets and
/// the ticket's latest messages (oldest first). Workflows and automation plugins read it
/// through this one function.
pub(crate) struct Subject {
    pub(crate) ticket: crate::ticket::Ticket,
    pub(crate) customer: crate::customer::Customer,
    pub(crate) open_tickets: i64,
    /// All their tickets, open or not.
    pub(crate) tickets_total: i64,
    /// At most ten.
    pub(crate) messages: Vec<SubjectMessage>,
}

/// One of the latest messages of a rule's ticket.
pub(crate) struct SubjectMessage {
    /// `inbound`, `outbound` or `internal`.
    pub(crate) direction: String,
    /// Plain text.
    pub(crate) text: String,
    /// The detected language of an inbound message (`de`), if it could be told.
    pub(crate) language: Option<String>,
}

pub(crate) async fn load_subject(core: &crate::Core, workspace_id: i64, ticket_id: i64) -> Result<Subject> {
    let ticket = crate::ticket::get(core.db(), workspace_id, ticket_id).await?;
    let customer = crate::customer::get(core.db(), workspace_id, ticket.customer_id).await?;
    let counts = db::query_one(
        core.db(),
        "SELECT COUNT(*) AS total, COALESCE(SUM(CASE WHEN status IN ('new', 'open', 'pending') THEN 1 ELSE 0 END), 0) AS open FROM tickets WHERE workspace_id = ? AND customer_id = ?",
        vec![workspace_id.into(), customer.id.into()],
    )
    .await?;
    let (tickets_total, open_tickets): (i64, i64) = match counts {
        Some(r) => (db::col(&r, "total")?, db::col(&r, "open")?),
        None => (0, 0),
    };
    let mut messages = db::query_all(
        core.db(),
        "SELECT direction, body_text, language FROM messages WHERE ticket_id = ? ORDER BY id DESC LIMIT 10",
        vec![ticket_id.into()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(SubjectMessage {
            direction: db::col(r, "direction")?,
            text: db::col(r, "body_text")?,
            language: db::col(r, "language")?,
        })
    })
    .collect::<Result<Vec<SubjectMessage>>>()?;
    messages.reverse();
    Ok(Subject { ticket, customer, open_tickets, tickets_total, messages })
}

async fn event_view(
    core: &crate::Core,
    workspace_id: i64,
    kind: &str,
    changes: &str,
    ticket_id: i64,
) -> Result<AutomationEvent> {
    let Subject { ticket: t, customer: c, open_tickets, messages, .. } =
        load_subject(core, workspace_id, ticket_id).await?;
    Ok(AutomationEvent {
        kind: kind.to_owned(),
        changes: changes.to_owned(),
        ticket: TicketView {
            id: t.id,
            number: t.number,
            subject: t.subject,
            status: t.status,
            priority: t.priority,
            level: t.level,
            team_id: t.team_id,
            assignee_id: t.assignee_id,
            category: t.category,
            channel: t.channel,
            tags: t.tags,
            reopen_count: t.reopen_count,
        },
        customer: CustomerView {
            id: c.id,
            name: c.name,
            tier: c.tier,
            language: c.language,
            identities: c.identities.into_iter().map(|i| (i.kind, i.address)).collect(),
            open_tickets: open_tickets.max(0) as u32,
        },
        // The plugin contract's messages are (direction, text).
        messages: messages.into_iter().map(|m| (m.direction, m.text)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str, args: &str) -> Action {
        Action { name: name.into(), args: args.into() }
    }

    #[test]
    fn a_plugins_answer_decodes_into_the_rules_actions_or_is_refused_whole() {
        let ok = decode(&[
            action("update", r#"{"priority":"high","add_tags":["refund"]}"#),
            action("reply", r#"{"body":"Thanks","body_html":"<p>Thanks</p>"}"#),
        ])
        .expect("decodes");
        assert_eq!(ok[0].args(), serde_json::json!({ "priority": "high", "add_tags": ["refund"] }));
        assert_eq!(ok[1].name(), "reply");
        let refused = |actions: &[Action]| decode(actions).expect_err("refused").to_string();
        assert!(
            refused(&[action("notify", r#"{"agent_id":1,"body":"x"}"#)]).contains("actions are update, note, reply")
        );
        assert!(refused(&[action("note", "{not json")]).contains("action 1 (note): arguments are not JSON"));
        assert!(
            refused(&[action("update", "{}"), action("note", r#"{"body":"  "}"#)])
                .contains("action 2 (note): body is empty")
        );
        assert!(refused(&[action("update", r#"{"subject":"x"}"#)]).contains("unknown field"));
        let many: Vec<Action> = (0..=MAX_ACTIONS).map(|_| action("note", r#"{"body":"x"}"#)).collect();
        assert!(refused(&many).contains("at most 20"));
    }
}
