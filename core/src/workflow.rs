//! Workflows: a workspace's Rhai scripts (`plugdesk_workflow`), stored in the database, edited
//! through the API without a restart, dry-run before they go live, and run by the event
//! dispatcher (`automation::dispatch`) with the same action vocabulary as automation plugins.
//!
//! A script is compiled when it is saved (a syntax error is refused with its line and column)
//! and again on each node the first time it runs after a change (compiled scripts are kept by
//! id and `updated_at`). Each workflow runs at most once per event; events caused by workflows
//! or automations are not dispatched again, so actions never cascade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use plugdesk_workflow::{Engine, Limits, Script};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::db;
use crate::error::{Error, Result};
use crate::ticket::{MessageKind, TicketPatch};

/// The default library (`workflows/*.rhai`): every new workspace starts with these, enabled.
pub const LIBRARY: [(&str, &str); 7] = [
    ("Acknowledge new tickets", include_str!("../../workflows/acknowledge.rhai")),
    ("Tier handling", include_str!("../../workflows/tier-handling.rhai")),
    ("Routing", include_str!("../../workflows/routing.rhai")),
    ("Competence levels", include_str!("../../workflows/competence.rhai")),
    ("Lost parcel", include_str!("../../workflows/lost-parcel.rhai")),
    ("Returns", include_str!("../../workflows/returns.rhai")),
    ("SLA warnings and breaches", include_str!("../../workflows/sla.rhai")),
];

/// Saves the default library into a new workspace (inside its creating transaction).
///
/// # Errors
/// A library script that does not compile (a bug, caught by the tests) or database errors.
pub(crate) async fn seed<C: sea_orm::ConnectionTrait>(db: &C, workspace_id: i64, now: i64) -> Result<()> {
    let engine = Engine::new(Limits::default());
    for (name, source) in LIBRARY {
        let script = engine.compile(source).map_err(|e| Error::Internal(format!("default workflow {name:?}: {e}")))?;
        db::exec(
            db,
            "INSERT INTO workflows (workspace_id, name, source, enabled, order_no, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                workspace_id.into(),
                name.into(),
                source.into(),
                true.into(),
                script.order.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The engine, the compiled scripts and the run counters.
pub struct Workflows {
    engine: Engine,
    compiled: Mutex<HashMap<i64, (i64, Arc<Script>)>>,
    stats: Mutex<HashMap<i64, crate::plugin::Stats>>,
}

impl Default for Workflows {
    fn default() -> Self {
        Workflows {
            engine: Engine::new(Limits::default()),
            compiled: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
        }
    }
}

impl Workflows {
    fn compile(&self, source: &str) -> Result<Script> {
        self.engine.compile(source).map_err(|e| Error::Script { line: e.line, column: e.column, message: e.message })
    }

    fn cached(&self, id: i64, updated_at: i64, source: &str) -> Result<Arc<Script>> {
        if let Some((at, s)) = self.compiled.lock().ok().and_then(|m| m.get(&id).cloned())
            && at == updated_at
        {
            return Ok(s);
        }
        let script = Arc::new(self.compile(source)?);
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(id, (updated_at, script.clone()));
        }
        Ok(script)
    }

    fn record(&self, id: i64, started: Instant, actions: usize, error: Option<String>) {
        if let Ok(mut m) = self.stats.lock() {
            let s = m.entry(id).or_default();
            s.calls += 1;
            s.total_us += started.elapsed().as_micros() as u64;
            s.actions += actions as u64;
            if error.is_some() {
                s.errors += 1;
                s.last_error = error;
            }
        }
    }

    /// Prometheus lines: `plugdesk_workflow_{runs,errors,actions}_total` and `_seconds_total`.
    pub fn render_metrics(&self) -> String {
        let map = self.stats.lock().map(|m| m.clone()).unwrap_or_default();
        let mut ids: Vec<_> = map.keys().copied().collect();
        ids.sort_unstable();
        let mut s = String::new();
        type Value = fn(&crate::plugin::Stats) -> f64;
        let series: [(&str, &str, Value); 4] = [
            ("runs_total", "Workflow runs.", |s| s.calls as f64),
            ("errors_total", "Workflow runs that failed.", |s| s.errors as f64),
            ("actions_total", "Actions workflows took.", |s| s.actions as f64),
            ("seconds_total", "Time spent in workflows.", |s| s.total_us as f64 / 1e6),
        ];
        for (suffix, help, value) in series {
            let name = format!("plugdesk_workflow_{suffix}");
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for id in &ids {
                s.push_str(&format!("{name}{{workflow=\"{id}\"}} {}\n", value(&map[id])));
            }
        }
        s
    }
}

/// A workflow to save.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowInput {
    /// Name shown to admins.
    pub name: String,
    /// The Rhai source, header included.
    pub source: String,
    /// Whether it runs (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A workflow as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Source.
    pub source: String,
    /// Whether it runs.
    pub enabled: bool,
    /// Its triggers as written (`ticket.updated when status`).
    pub triggers: Vec<String>,
    /// Order among the workspace's workflows.
    pub order: i32,
    /// Runs, errors, actions, time since the server started.
    pub stats: crate::plugin::Stats,
    /// Last change.
    pub updated_at: String,
}

fn view(core: &crate::Core, r: &sea_orm::QueryResult) -> Result<WorkflowView> {
    let id: i64 = db::col(r, "id")?;
    let source: String = db::col(r, "source")?;
    let script = core.workflows().cached(id, db::col(r, "updated_at")?, &source)?;
    Ok(WorkflowView {
        id,
        name: db::col(r, "name")?,
        enabled: db::col(r, "enabled")?,
        triggers: script
            .triggers
            .iter()
            .map(|t| {
                if t.changed.is_empty() {
                    t.event.clone()
                } else {
                    format!("{} when {}", t.event, t.changed.join(", "))
                }
            })
            .collect(),
        order: script.order,
        stats: core.workflows().stats.lock().ok().and_then(|m| m.get(&id).cloned()).unwrap_or_default(),
        updated_at: crate::rfc3339(db::col(r, "updated_at")?),
        source,
    })
}

fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid("name", "name must be 1-200 characters"));
    }
    Ok(name.to_owned())
}

/// Saves a new workflow (compiled first: a script that does not compile is refused).
///
/// # Errors
/// [`Error::Script`] with line and column, [`Error::Invalid`].
pub async fn create(core: &crate::Core, workspace_id: i64, input: &WorkflowInput) -> Result<WorkflowView> {
    let name = validate_name(&input.name)?;
    let script = core.workflows().compile(&input.source)?;
    let now = crate::now_ms();
    let r = db::query_one(
        core.db(),
        "INSERT INTO workflows (workspace_id, name, source, enabled, order_no, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            name.into(),
            input.source.clone().into(),
            input.enabled.unwrap_or(true).into(),
            script.order.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    get(core, workspace_id, db::col(&r, "id")?).await
}

/// Replaces a workflow's name, source and state; the next event uses the new version.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Script`], [`Error::Invalid`].
pub async fn update(core: &crate::Core, workspace_id: i64, id: i64, input: &WorkflowInput) -> Result<WorkflowView> {
    get(core, workspace_id, id).await?;
    let name = validate_name(&input.name)?;
    let script = core.workflows().compile(&input.source)?;
    db::exec(
        core.db(),
        "UPDATE workflows SET name = ?, source = ?, enabled = ?, order_no = ?, updated_at = ? WHERE id = ?",
        vec![
            name.into(),
            input.source.clone().into(),
            input.enabled.unwrap_or(true).into(),
            script.order.into(),
            crate::now_ms().into(),
            id.into(),
        ],
    )
    .await?;
    get(core, workspace_id, id).await
}

/// Deletes a workflow.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn delete(core: &crate::Core, workspace_id: i64, id: i64) -> Result<()> {
    get(core, workspace_id, id).await?;
    db::exec(core.db(), "DELETE FROM workflows WHERE id = ?", vec![id.into()]).await?;
    Ok(())
}

/// One workflow.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get(core: &crate::Core, workspace_id: i64, id: i64) -> Result<WorkflowView> {
    let r = db::query_one(
        core.db(),
        "SELECT * FROM workflows WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("workflow"))?;
    view(core, &r)
}

/// The workspace's workflows in the order they run.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Core, workspace_id: i64) -> Result<Vec<WorkflowView>> {
    db::query_all(
        core.db(),
        "SELECT * FROM workflows WHERE workspace_id = ? ORDER BY order_no, id",
        vec![workspace_id.into()],
    )
    .await?
    .iter()
    .map(|r| view(core, r))
    .collect()
}

/// A dry run: what a script (saved or a draft) would do about an event of one ticket, without
/// doing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// The ticket.
    pub ticket_id: i64,
    /// The event type (default: the first trigger's).
    #[serde(default)]
    pub event: Option<String>,
    /// What changed, for `ticket.updated` (default `{}`).
    #[serde(default)]
    pub changes: Option<Json>,
    /// A draft source to try instead of the saved one (`POST /workflows/dry-run` needs it).
    #[serde(default)]
    pub source: Option<String>,
}

/// Runs a workflow against one ticket without applying anything; returns the actions and
/// whether its triggers fire for the event.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Script`] (compile or run), [`Error::Invalid`].
pub async fn dry_run(core: &crate::Core, workspace_id: i64, id: Option<i64>, input: &DryRun) -> Result<Json> {
    let source = match (&input.source, id) {
        (Some(s), _) => s.clone(),
        (None, Some(id)) => get(core, workspace_id, id).await?.source,
        (None, None) => return Err(Error::invalid("source", "give the draft's source")),
    };
    let script = core.workflows().compile(&source)?;
    let kind = input.event.clone().unwrap_or_else(|| script.triggers[0].event.clone());
    let changes = input.changes.clone().unwrap_or_else(|| json!({}));
    let fires = script.fires(&kind, &changes);
    let view = view_of(core, workspace_id, &kind, &changes, input.ticket_id).await?;
    let engine = core.clone();
    let actions = tokio::task::spawn_blocking(move || engine.workflows().engine.run(&script, &view))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Script { line: e.line, column: e.column, message: e.message })?;
    Ok(json!({
        "event": kind,
        "fires": fires,
        "actions": actions.iter().map(|a| json!({ "name": a.name, "args": a.args })).collect::<Vec<_>>(),
    }))
}

/// The JSON view a script gets.
async fn view_of(core: &crate::Core, workspace_id: i64, kind: &str, changes: &Json, ticket_id: i64) -> Result<Json> {
    let subject = crate::automation::load_subject(core, workspace_id, ticket_id).await?;
    let agents = crate::agent::list(core.db(), workspace_id).await?;
    let mut customer = serde_json::to_value(&subject.customer)?;
    customer["open_tickets"] = json!(subject.open_tickets);
    let messages: Vec<Json> =
        subject.messages.iter().map(|(direction, text)| json!({ "direction": direction, "text": text })).collect();
    Ok(json!({
        "event": { "kind": kind, "changes": changes },
        "ticket": serde_json::to_value(&subject.ticket)?,
        "customer": customer,
        "messages": messages,
        "agents": serde_json::to_value(&agents)?,
    }))
}

/// Runs the workspace's workflows that an event fires, in order, applying each one's actions
/// (checked as a whole first). A failing workflow is recorded and the others still run.
/// Returns whether any fired.
pub(crate) async fn run_for_event(
    core: &crate::Core,
    workspace_id: i64,
    kind: &str,
    changes: &Json,
    ticket_id: i64,
) -> Result<bool> {
    let mut fired = false;
    let rows = db::query_all(
        core.db(),
        "SELECT id, source, updated_at FROM workflows WHERE workspace_id = ? AND enabled = ? ORDER BY order_no, id",
        vec![workspace_id.into(), true.into()],
    )
    .await?;
    let mut view: Option<Arc<plugdesk_workflow::View>> = None;
    for r in rows {
        let id: i64 = db::col(&r, "id")?;
        let script = match core.workflows().cached(id, db::col(&r, "updated_at")?, &db::col::<String>(&r, "source")?) {
            Ok(s) => s,
            Err(e) => {
                core.workflows().record(id, Instant::now(), 0, Some(e.to_string()));
                continue;
            }
        };
        if !script.fires(kind, changes) {
            continue;
        }
        fired = true;
        // The view shows the ticket as the previous workflows left it.
        let v = match &view {
            Some(v) => v.clone(),
            None => {
                let json = view_of(core, workspace_id, kind, changes, ticket_id).await?;
                let v = Arc::new(core.workflows().engine.view(&json).map_err(|e| Error::Script {
                    line: e.line,
                    column: e.column,
                    message: e.message,
                })?);
                view = Some(v.clone());
                v
            }
        };
        let started = Instant::now();
        let (c, s, input) = (core.clone(), script.clone(), v);
        let ran = tokio::task::spawn_blocking(move || c.workflows().engine.run_view(&s, &input))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let actions = match ran {
            Ok(a) => a,
            Err(e) => {
                let msg = format!("workflow {id}: {e}");
                tracing::warn!(workflow = id, ticket = ticket_id, error = %msg, "workflow failed");
                core.workflows().record(id, started, 0, Some(msg));
                continue;
            }
        };
        let count = actions.len();
        if count > 0 {
            // The next workflow sees the ticket as this one left it.
            view = None;
        }
        let actor = format!("workflow:{id}");
        match apply(core, workspace_id, ticket_id, &actor, actions).await {
            Ok(()) => core.workflows().record(id, started, count, None),
            Err(e) => core.workflows().record(id, started, 0, Some(format!("workflow {id}: {e}"))),
        }
    }
    Ok(fired)
}

/// Turns a run's actions into one ticket change (update-like actions merged, tag lists
/// joined) followed by its messages, checks them all, then applies them.
async fn apply(
    core: &crate::Core,
    workspace_id: i64,
    ticket_id: i64,
    actor: &str,
    actions: Vec<plugdesk_workflow::Action>,
) -> Result<()> {
    use crate::automation::{Checked, text_message};
    let mut patch = serde_json::Map::new();
    let mut messages = Vec::new();
    let mut merge = |args: &Json| {
        for (k, v) in args.as_object().into_iter().flatten() {
            match (k.as_str(), patch.get_mut(k)) {
                ("add_tags" | "remove_tags", Some(Json::Array(list))) => {
                    list.extend(v.as_array().cloned().unwrap_or_default())
                }
                _ => {
                    patch.insert(k.clone(), v.clone());
                }
            }
        }
    };
    let body = |args: &Json, key: &str| text_message(args[key].as_str().unwrap_or_default().to_owned());
    for a in &actions {
        match a.name.as_str() {
            "update" => merge(&a.args),
            "escalate" => {
                merge(&json!({ "level": 2 }));
                messages.push(Checked::Message(MessageKind::Note, body(&a.args, "note")));
            }
            "note" => messages.push(Checked::Message(MessageKind::Note, body(&a.args, "body"))),
            "reply" => messages.push(Checked::Message(MessageKind::Reply, body(&a.args, "body"))),
            other => return Err(Error::invalid("actions", format!("unknown action {other:?}"))),
        }
    }
    let mut checked = Vec::with_capacity(messages.len() + 1);
    if !patch.is_empty() {
        let p: TicketPatch =
            serde_json::from_value(Json::Object(patch)).map_err(|e| Error::invalid("actions", e.to_string()))?;
        checked.push(Checked::Update(p));
    }
    checked.extend(messages);
    crate::automation::apply(core, workspace_id, ticket_id, actor, checked).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str) -> (Engine, Script) {
        let engine = Engine::new(Limits::default());
        let source = LIBRARY.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).unwrap_or_default();
        let script = engine.compile(source).unwrap_or_else(|e| panic!("{name}: {e}"));
        (engine, script)
    }

    fn view(subject: &str, text: &str, language: &str, tier: &str) -> Json {
        json!({
            "event": { "kind": "ticket.created", "changes": {} },
            "ticket": { "id": 1, "number": 7, "subject": subject, "status": "new", "priority": "normal", "level": 1,
                        "team_id": null, "assignee_id": null, "category": null, "tags": [], "attributes": {}, "reopen_count": 0 },
            "customer": { "id": 3, "name": "Anna", "tier": tier, "language": language, "open_tickets": 1 },
            "messages": [{ "direction": "inbound", "text": text }],
            "agents": [
                { "id": 1, "presence": "offline", "open_tickets": 0, "capacity": 10, "teams": [], "skills": [] },
                { "id": 2, "presence": "online", "open_tickets": 3, "capacity": 10, "teams": [], "skills": [] },
                { "id": 4, "presence": "online", "open_tickets": 1, "capacity": 10, "teams": [], "skills": [] },
                { "id": 5, "presence": "online", "open_tickets": 1, "capacity": 10, "teams": [], "skills": [] },
                { "id": 6, "presence": "online", "open_tickets": 0, "capacity": 0, "teams": [], "skills": [] },
            ],
        })
    }

    fn run(name: &str, v: &Json) -> Vec<plugdesk_workflow::Action> {
        let (engine, s) = script(name);
        engine.run(&s, v).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn every_default_workflow_compiles() {
        for (name, _) in LIBRARY {
            script(name);
        }
    }

    #[test]
    fn the_lost_parcel_playbook_answers_in_the_customers_language() {
        let a =
            run("Lost parcel", &view("Paket nicht angekommen", "Meine Sendung fehlt seit einer Woche", "de", "normal"));
        assert_eq!(a[0].args, json!({ "category": "lost_parcel" }));
        let reply = a.iter().find(|a| a.name == "reply").expect("reply");
        assert!(reply.args["body"].as_str().unwrap_or("").contains("Bestellnummer"), "{reply:?}");
        let a = run("Lost parcel", &view("Order 4711", "My package never arrived", "en", "normal"));
        assert!(a.iter().any(|a| a.name == "reply" && a.args["body"].as_str().unwrap_or("").contains("order number")));
        assert!(run("Lost parcel", &view("Rechnung", "Bitte Rechnung senden", "de", "normal")).is_empty());
    }

    #[test]
    fn acknowledgements_skip_automatic_mail_and_tiers_set_priorities() {
        let a = run("Acknowledge new tickets", &view("Hallo", "Frage", "de", "normal"));
        assert!(a[0].args["body"].as_str().unwrap_or("").starts_with("Guten Tag Anna"), "{a:?}");
        let mut auto = view("Out of office", "I am away", "en", "normal");
        auto["ticket"]["attributes"] = json!({ "automatic": true });
        assert!(run("Acknowledge new tickets", &auto).is_empty());
        assert_eq!(run("Tier handling", &view("x", "y", "en", "basic"))[0].args, json!({ "priority": "low" }));
        assert_eq!(run("Tier handling", &view("x", "y", "en", "extended"))[0].args, json!({ "priority": "high" }));
    }

    #[test]
    fn routing_takes_the_least_loaded_online_agent_with_room_round_robin() {
        // Agents 4 and 5 share the lowest load; ticket number 7 picks the second of them.
        assert_eq!(run("Routing", &view("x", "y", "en", "normal"))[0].args, json!({ "assignee_id": 5 }));
        let mut assigned = view("x", "y", "en", "normal");
        assigned["ticket"]["assignee_id"] = json!(2);
        assert!(run("Routing", &assigned).is_empty());
    }

    #[test]
    fn reopened_twice_escalates_and_sla_breaches_raise_the_priority() {
        let mut v = view("x", "Immer noch kaputt", "de", "normal");
        v["ticket"]["reopen_count"] = json!(2);
        let a = run("Competence levels", &v);
        assert_eq!(a[0].name, "escalate");
        assert!(a[0].args["note"].as_str().unwrap_or("").contains("reopened 2 times"), "{a:?}");
        let mut breach = view("x", "y", "en", "normal");
        breach["event"] = json!({ "kind": "sla.breached", "changes": { "clock": "first_response" } });
        let a = run("SLA warnings and breaches", &breach);
        assert_eq!((a[0].args.clone(), a[1].name.as_str()), (json!({ "priority": "urgent" }), "escalate"));
    }
}
