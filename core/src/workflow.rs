//! Workflows: a workspace's Rhai scripts (`plugdesk_workflow`), stored in the database, edited
//! through the API without a restart, dry-run before they go live, and run by the event
//! dispatcher (`dispatch`) with the same action vocabulary as automation plugins.
//!
//! A script is compiled when it is saved (a syntax error is refused with its line and column)
//! and again on each node the first time it runs after a change (compiled scripts are kept by
//! id and `updated_at`). Each workflow runs at most once per event; events caused by workflows
//! or automations are not dispatched again, so actions never cascade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugdesk_workflow::{Action, Change, Engine, Limits, Script};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::action::{Checked, RuleRun, text_message};
use crate::db;
use crate::error::{Error, Result};
use crate::ticket::{MessageInput, MessageKind, TicketPatch};

/// The default library (`workflows/*.rhai`): every new workspace starts with these, enabled.
pub const LIBRARY: [(&str, &str); 9] = [
    ("Lost parcel", include_str!("../../workflows/lost-parcel.rhai")),
    ("Returns", include_str!("../../workflows/returns.rhai")),
    ("Acknowledge new tickets", include_str!("../../workflows/acknowledge.rhai")),
    ("Tier handling", include_str!("../../workflows/tier-handling.rhai")),
    ("Routing", include_str!("../../workflows/routing.rhai")),
    ("Competence levels", include_str!("../../workflows/competence.rhai")),
    ("SLA warnings and breaches", include_str!("../../workflows/sla.rhai")),
    ("Satisfaction survey", include_str!("../../workflows/survey.rhai")),
    ("Follow-up check", include_str!("../../workflows/follow-up.rhai")),
];

/// The default library, compiled and ordered, for a new workspace to start with
/// ([`crate::workspace::create`] saves it in its creating transaction).
///
/// # Errors
/// A library script that does not compile (a bug, caught by the tests).
pub fn library() -> Result<Vec<crate::workspace::Seed<'static>>> {
    let engine = Engine::new(Limits::default());
    LIBRARY
        .iter()
        .map(|&(name, source)| {
            let script =
                engine.compile(source).map_err(|e| Error::Internal(format!("default workflow {name:?}: {e}")))?;
            Ok(crate::workspace::Seed { name, source, order: script.order })
        })
        .collect()
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

    fn record(&self, id: i64, took: Duration, actions: usize, error: Option<String>) {
        if let Ok(mut m) = self.stats.lock() {
            let s = m.entry(id).or_default();
            s.calls += 1;
            s.total_us += took.as_micros() as u64;
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
/// whether its triggers fire for the event. Compile and run happen on the worker pool, the run
/// within the engine's limits.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Script`] (compile or run), [`Error::Invalid`],
/// [`Error::Busy`] (503) when the pool stays full.
pub async fn dry_run(core: &crate::Core, workspace_id: i64, id: Option<i64>, input: &DryRun) -> Result<Json> {
    let source = match (&input.source, id) {
        (Some(s), _) => s.clone(),
        (None, Some(id)) => get(core, workspace_id, id).await?.source,
        (None, None) => return Err(Error::invalid("source", "give the draft's source")),
    };
    let script = compile_pooled(core, source).await?;
    let kind = input.event.clone().unwrap_or_else(|| script.triggers[0].event.clone());
    let changes = input.changes.clone().unwrap_or_else(|| json!({}));
    let fires = script.fires(&kind, &changes);
    let view = view_of(core, workspace_id, &kind, &changes, input.ticket_id).await?;
    let c = core.clone();
    let actions = core
        .compute()
        .run(move || c.workflows().engine.run(&script, &view))
        .await?
        .map_err(|e| Error::Script { line: e.line, column: e.column, message: e.message })?;
    Ok(json!({
        "event": kind,
        "fires": fires,
        "actions": actions,
    }))
}

/// Compiles a draft or saved source on the worker pool (a 64 KiB script takes milliseconds to
/// parse: not the executor's work).
async fn compile_pooled(core: &crate::Core, source: String) -> Result<Script> {
    let c = core.clone();
    core.compute().run(move || c.workflows().compile(&source)).await?
}

/// The JSON view a script gets: the event, the ticket, its customer (with open and total
/// tickets and the five latest other tickets, each with the agent who last answered on it), the latest
/// messages, the workspace's agents and teams.
async fn view_of(core: &crate::Core, workspace_id: i64, kind: &str, changes: &Json, ticket_id: i64) -> Result<Json> {
    let shared = Shared::read(core, workspace_id).await?;
    let mut view = ticket_view(core, workspace_id, kind, changes, ticket_id).await?;
    shared.lend(&mut view, shared.agents.clone());
    Ok(view)
}

/// The part of the view that is the same for every ticket of a workspace: its agents (active
/// ones, with their load), teams and name. The dispatcher reads it once for a wave of events
/// and carries the agents' load from one event to the next (see [`project`]).
struct Shared {
    agents: Json,
    teams: Json,
    workspace: Json,
}

impl Shared {
    async fn read(core: &crate::Core, workspace_id: i64) -> Result<Self> {
        let mut agents = crate::agent::list(core.db(), workspace_id).await?;
        // A deactivated agent is nobody a rule may route to or name as a contact.
        agents.retain(|a| a.active);
        let teams = crate::agent::list_teams(core.db(), workspace_id).await?;
        Ok(Shared {
            agents: serde_json::to_value(&agents)?,
            teams: serde_json::to_value(&teams)?,
            // Not shown to scripts; for the templates their replies render.
            workspace: json!({ "name": crate::template::workspace_name(core, workspace_id).await? }),
        })
    }

    /// Puts a copy into a ticket's view, with `agents` as they stand for it (a wave carries
    /// their load from one ticket to the next).
    fn lend(&self, view: &mut Json, agents: Json) {
        view["agents"] = agents;
        view["teams"] = self.teams.clone();
        view["workspace"] = self.workspace.clone();
    }
}

/// The view's part about one ticket and its event.
async fn ticket_view(
    core: &crate::Core,
    workspace_id: i64,
    kind: &str,
    changes: &Json,
    ticket_id: i64,
) -> Result<Json> {
    let subject = crate::automation::load_subject(core, workspace_id, ticket_id).await?;
    let recent = db::query_all(
        core.db(),
        "SELECT t.id, t.number, t.status, t.category, t.subject, t.assignee_id, t.reopen_count, (SELECT m.author_id FROM messages m WHERE m.ticket_id = t.id AND m.author_kind = 'agent' AND m.direction = 'outbound' ORDER BY m.id DESC LIMIT 1) AS last_agent_id FROM tickets t WHERE t.workspace_id = ? AND t.customer_id = ? AND t.id <> ? ORDER BY t.id DESC LIMIT 5",
        vec![workspace_id.into(), subject.customer.id.into(), ticket_id.into()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(json!({
            "id": db::col::<i64>(r, "id")?,
            "number": db::col::<i64>(r, "number")?,
            "status": db::col::<String>(r, "status")?,
            "category": db::col::<Option<String>>(r, "category")?,
            "subject": db::col::<String>(r, "subject")?,
            "assignee_id": db::col::<Option<i64>>(r, "assignee_id")?,
            "last_agent_id": db::col::<Option<i64>>(r, "last_agent_id")?,
        }))
    })
    .collect::<Result<Vec<Json>>>()?;
    let mut customer = serde_json::to_value(&subject.customer)?;
    customer["open_tickets"] = json!(subject.open_tickets);
    customer["tickets_total"] = json!(subject.tickets_total);
    customer["last_agent_id"] = recent.iter().find_map(|t| t["last_agent_id"].as_i64()).map_or(Json::Null, Json::from);
    customer["recent_tickets"] = Json::Array(recent);
    let messages: Vec<Json> = subject
        .messages
        .iter()
        .map(|m| json!({ "direction": m.direction, "text": m.text, "language": m.language }))
        .collect();
    Ok(json!({
        "event": { "kind": kind, "changes": changes },
        "ticket": serde_json::to_value(&subject.ticket)?,
        "customer": customer,
        "messages": messages,
    }))
}

/// The enabled workflows (id, workspace) with a cron schedule matching the minute of `now`.
///
/// # Errors
/// Database errors.
pub(crate) async fn scheduled(core: &crate::Core, now: i64) -> Result<Vec<(i64, i64)>> {
    let rows = db::query_all(
        core.db(),
        "SELECT id, workspace_id, source, updated_at FROM workflows WHERE enabled = ? AND source LIKE ?",
        vec![true.into(), "%on: schedule%".into()],
    )
    .await?;
    let mut due = Vec::new();
    for r in rows {
        let id: i64 = db::col(&r, "id")?;
        let Ok(script) = core.workflows().cached(id, db::col(&r, "updated_at")?, &db::col::<String>(&r, "source")?)
        else {
            continue;
        };
        if script.triggers.iter().any(|t| t.schedule.as_ref().is_some_and(|s| s.matches(now))) {
            due.push((id, db::col(&r, "workspace_id")?));
        }
    }
    Ok(due)
}

/// What one workflow asked for on one event (for the API's dry runs and replays, and the run
/// itself).
struct Ran {
    id: i64,
    took: Duration,
    actions: std::result::Result<Vec<Action>, String>,
}

/// The workspace's enabled workflows, compiled (from the cache), in their order. A script that
/// no longer compiles is recorded against its workflow and left out.
///
/// # Errors
/// Database errors.
pub(crate) async fn enabled(core: &crate::Core, workspace_id: i64) -> Result<Vec<(i64, Arc<Script>)>> {
    let rows = db::query_all(
        core.db(),
        "SELECT id, source, updated_at FROM workflows WHERE workspace_id = ? AND enabled = ? ORDER BY order_no, id",
        vec![workspace_id.into(), true.into()],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = db::col(&r, "id")?;
        match core.workflows().cached(id, db::col(&r, "updated_at")?, &db::col::<String>(&r, "source")?) {
            Ok(s) => out.push((id, s)),
            Err(e) => core.workflows().record(id, Duration::ZERO, 0, Some(e.to_string())),
        }
    }
    Ok(out)
}

/// Of `workflows`, those an event fires (or only `only`, whatever the event).
pub(crate) fn firing(
    workflows: &[(i64, Arc<Script>)],
    kind: &str,
    changes: &Json,
    only: Option<i64>,
) -> Vec<(i64, Arc<Script>)> {
    workflows
        .iter()
        .filter(|(id, s)| match only {
            Some(o) => o == *id,
            None => s.fires(kind, changes),
        })
        .cloned()
        .collect()
}

/// A workflow run whose actions are handed to [`crate::action::apply`]: its id, time and how
/// many actions it asked for, to record once the outcome is known.
pub(crate) struct Planned {
    id: i64,
    took: Duration,
    actions: usize,
}

/// Workflows an event fires, in order: (id, compiled script).
type Scripts = Vec<(i64, Arc<Script>)>;

/// One event of a wave: its ticket and the workflows it fires.
pub(crate) struct Firing<'a> {
    pub(crate) kind: &'a str,
    pub(crate) changes: &'a Json,
    pub(crate) ticket_id: i64,
    pub(crate) workflows: Vec<(i64, Arc<Script>)>,
}

/// Runs the `firing` workflows of an event in order (a failing one is recorded and the others
/// still run) and prepares their actions; a workflow sees the ticket as the ones before it
/// left it. Applying is the caller's, so that a dispatcher can put other rules' runs and its
/// cursor in the same transaction; it then reports the outcomes with [`record_outcomes`].
///
/// # Errors
/// The view cannot be built (database errors, the ticket is gone).
pub(crate) async fn plan(
    core: &crate::Core,
    workspace_id: i64,
    event: Firing<'_>,
) -> Result<(Vec<RuleRun>, Vec<Planned>)> {
    let mut planned = plan_wave(core, workspace_id, vec![event]).await?;
    Ok(planned.pop().unwrap_or_default())
}

/// [`plan`] for a wave of events of distinct tickets of one workspace, as if they ran one after
/// the other: the tickets' views are read concurrently, the workspace's agents and teams once,
/// and all scripts run in one blocking task in the events' order, each event seeing the agents'
/// load as the assignments of the events before it in the wave leave it.
///
/// # Errors
/// A view cannot be built (database errors, a ticket is gone).
pub(crate) async fn plan_wave(
    core: &crate::Core,
    workspace_id: i64,
    events: Vec<Firing<'_>>,
) -> Result<Vec<(Vec<RuleRun>, Vec<Planned>)>> {
    if events.iter().all(|e| e.workflows.is_empty()) {
        return Ok(events.iter().map(|_| Default::default()).collect());
    }
    let mut shared = Shared::read(core, workspace_id).await?;
    let views = futures_util::future::try_join_all(events.iter().map(|e| async move {
        if e.workflows.is_empty() {
            return Ok(None);
        }
        match ticket_view(core, workspace_id, e.kind, e.changes, e.ticket_id).await {
            Ok(v) => Ok(Some(v)),
            // A ticket erased since its event was logged: nothing left to act on.
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }))
    .await?;
    let jobs: Vec<(Json, Scripts)> = views
        .into_iter()
        .zip(events.iter())
        .map(|(v, e)| match v {
            Some(v) => (v, e.workflows.clone()),
            None => (Json::Null, Vec::new()),
        })
        .collect();
    let c = core.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let engine = &c.workflows().engine;
        let mut agents = std::mem::take(&mut shared.agents);
        let mut out = Vec::with_capacity(jobs.len());
        for (mut json, firing) in jobs {
            if firing.is_empty() {
                out.push((Vec::new(), json));
                continue;
            }
            shared.lend(&mut json, std::mem::take(&mut agents));
            let ran = run_scripts(engine, &mut json, firing);
            agents = json["agents"].take();
            out.push((ran, json));
        }
        out
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let mut out = Vec::with_capacity(ran.len());
    for ((ran, json_view), e) in ran.into_iter().zip(&events) {
        let mut runs = Vec::new();
        let mut planned = Vec::new();
        for r in ran {
            match r.actions {
                Err(msg) => {
                    tracing::warn!(workflow = r.id, ticket = e.ticket_id, error = %msg, "workflow failed");
                    core.workflows().record(r.id, r.took, 0, Some(msg));
                }
                Ok(actions) if actions.is_empty() => core.workflows().record(r.id, r.took, 0, None),
                Ok(actions) => match check(core, workspace_id, &json_view, &actions).await {
                    Ok(checked) => {
                        planned.push(Planned { id: r.id, took: r.took, actions: checked.len() });
                        runs.push(RuleRun { actor: format!("workflow:{}", r.id), actions: checked });
                    }
                    Err(err) => core.workflows().record(r.id, r.took, 0, Some(format!("workflow {}: {err}", r.id))),
                },
            }
        }
        out.push((runs, planned));
    }
    Ok(out)
}

/// Runs an event's scripts in order on its view; each sees the ticket as the ones before it
/// left it (the view's `ticket`, `customer` and `agents` are converted again only after a
/// workflow that asked for something).
fn run_scripts(engine: &Engine, json: &mut Json, firing: Vec<(i64, Arc<Script>)>) -> Vec<Ran> {
    let mut view = engine.view(json);
    let mut ran = Vec::with_capacity(firing.len());
    for (id, script) in firing {
        let started = Instant::now();
        let result = match &view {
            Ok(v) => engine.run_view(&script, v).map_err(|e| format!("workflow {id}: {e}")),
            Err(e) => Err(format!("workflow {id}: {e}")),
        };
        if let Ok(actions) = &result
            && !actions.is_empty()
        {
            project(json, actions);
            if let Ok(v) = view.as_mut() {
                let replaced = ["ticket", "customer", "agents"].iter().try_for_each(|k| v.replace(k, &json[*k]));
                if let Err(e) = replaced {
                    view = Err(e);
                }
            }
        }
        ran.push(Ran { id, took: started.elapsed(), actions: result });
    }
    ran
}

/// Records what became of planned workflow runs; `outcomes` starts with theirs, in order.
pub(crate) fn record_outcomes(core: &crate::Core, ticket_id: i64, planned: Vec<Planned>, outcomes: &[Result<()>]) {
    for (p, outcome) in planned.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => core.workflows().record(p.id, p.took, p.actions, None),
            Err(e) => {
                tracing::warn!(workflow = p.id, ticket = ticket_id, error = %e, "workflow actions refused");
                core.workflows().record(p.id, p.took, 0, Some(format!("workflow {}: {e}", p.id)));
            }
        }
    }
}

/// Runs the workspace's workflows that an event fires (or only `only`), in order, and applies
/// all their actions in one transaction, each workflow's in a savepoint of its own (see
/// [`crate::action`]). Used by the scheduler; the dispatcher calls the parts itself. Returns
/// whether any workflow fired.
///
/// # Errors
/// Database errors.
pub(crate) async fn run_for_event(
    core: &crate::Core,
    workspace_id: i64,
    kind: &str,
    changes: &Json,
    ticket_id: i64,
    only: Option<i64>,
) -> Result<bool> {
    let firing = firing(&enabled(core, workspace_id).await?, kind, changes, only);
    if firing.is_empty() {
        return Ok(false);
    }
    let (runs, planned) = plan(core, workspace_id, Firing { kind, changes, ticket_id, workflows: firing }).await?;
    let outcomes = crate::action::apply(core, workspace_id, ticket_id, runs, None).await?;
    record_outcomes(core, ticket_id, planned, &outcomes);
    Ok(true)
}

/// Changes the view's ticket the way `actions` will, so the next workflow of the event reads
/// the ticket as this one leaves it (without reading it from the database again).
fn project(view: &mut Json, actions: &[Action]) {
    for a in actions {
        match a {
            Action::Customer { tier } => view["customer"]["tier"] = json!(tier),
            Action::Escalate { .. } => view["ticket"]["level"] = json!(2),
            Action::Update(change) => {
                let ticket = &mut view["ticket"];
                let Change { status, priority, level, category, team_id, assignee_id, add_tags, remove_tags } = change;
                let fields = [
                    ("status", status.as_ref().map(|v| json!(v))),
                    ("priority", priority.as_ref().map(|v| json!(v))),
                    ("level", level.map(|v| json!(v))),
                    ("category", category.as_ref().map(|v| json!(v))),
                    ("team_id", team_id.map(|v| json!(v))),
                ];
                for (name, value) in fields {
                    if let Some(v) = value {
                        ticket[name] = v;
                    }
                }
                if !add_tags.is_empty() || !remove_tags.is_empty() {
                    let mut tags: Vec<Json> = ticket["tags"].as_array().cloned().unwrap_or_default();
                    for (t, add) in remove_tags.iter().map(|t| (t, false)).chain(add_tags.iter().map(|t| (t, true))) {
                        let t = Json::from(t.trim().to_lowercase());
                        tags.retain(|x| *x != t);
                        if add {
                            tags.push(t);
                        }
                    }
                    ticket["tags"] = Json::Array(tags);
                }
                if let Some(to) = assignee_id {
                    let before = ticket["assignee_id"].as_i64();
                    ticket["assignee_id"] = json!(to);
                    move_load(&mut view["agents"], before, *to);
                }
            }
            _ => {}
        }
    }
}

/// Moves one open ticket's worth of load between agents in the view (an assignment), so the
/// next workflow, and the next event of a dispatcher's wave, see it.
fn move_load(agents: &mut Json, from: Option<i64>, to: Option<i64>) {
    if from == to {
        return;
    }
    for a in agents.as_array_mut().into_iter().flatten() {
        let id = a["id"].as_i64();
        let delta = if id.is_some() && id == from {
            -1
        } else if id.is_some() && id == to {
            1
        } else {
            continue;
        };
        a["open_tickets"] = json!((a["open_tickets"].as_i64().unwrap_or(0) + delta).max(0));
    }
}

/// Turns a run's actions into checked actions, the one check workflows and automation plugins
/// share: update-like actions merged into one ticket change (tag lists joined), templates
/// rendered in the customer's language for the ticket's channel (from `view`, the workflow's
/// view), survey tokens made. An argument the domain refuses (an unknown status or priority)
/// refuses the run; agents, teams and tiers are checked when the actions apply.
///
/// # Errors
/// [`Error::Invalid`] naming the action; template errors.
pub(crate) async fn check(
    core: &crate::Core,
    workspace_id: i64,
    view: &Json,
    actions: &[Action],
) -> Result<Vec<Checked>> {
    let mut change: Option<Change> = None;
    let mut rest = Vec::new();
    let mut merge = |c: Change| match change.as_mut() {
        Some(before) => before.merge(c),
        None => change = Some(c),
    };
    let message =
        |t: &plugdesk_workflow::Text| MessageInput { body_html: t.body_html.clone(), ..text_message(t.body.clone()) };
    for a in actions {
        match a {
            Action::Update(c) => merge(c.clone()),
            Action::Escalate { note } => {
                merge(Change { level: Some(2), ..Change::default() });
                rest.push(Checked::Message(MessageKind::Note, text_message(note.clone())));
            }
            Action::Note(t) => rest.push(Checked::Message(MessageKind::Note, message(t))),
            Action::Reply(t) => rest.push(Checked::Message(MessageKind::Reply, message(t))),
            Action::ReplyTemplate { purpose } => {
                let r = crate::template::render_for(core, workspace_id, view, purpose, None).await?;
                rest.push(Checked::Message(MessageKind::Reply, rendered_message(r)));
            }
            Action::Survey {} => {
                let token = hex::encode(rand::random::<[u8; 16]>());
                let link = format!("{}/survey/{token}", core.public_url());
                let r = crate::template::render_for(core, workspace_id, view, "survey_invitation", Some(&link)).await?;
                rest.push(Checked::Survey { token, invitation: rendered_message(r) });
            }
            Action::Customer { tier } => rest.push(Checked::Customer(crate::customer::CustomerPatch {
                tier: Some(tier.clone()),
                ..Default::default()
            })),
            Action::Notify { agent_id, body } => rest.push(Checked::Notify { agent_id: *agent_id, body: body.clone() }),
            Action::Webhook { name, payload } => {
                rest.push(Checked::Webhook { name: name.clone(), payload: payload.clone() })
            }
            Action::FollowUp { after_ms, note } => {
                rest.push(Checked::FollowUp { after_ms: *after_ms, note: note.clone() })
            }
        }
    }
    let mut checked = Vec::with_capacity(rest.len() + 1);
    if let Some(c) = change {
        checked.push(Checked::Update(ticket_patch(c)?));
    }
    checked.extend(rest);
    Ok(checked)
}

/// A rule's ticket change as the domain's patch; a status or priority it does not know is
/// refused here, before anything is applied.
fn ticket_patch(c: Change) -> Result<TicketPatch> {
    let bad = |field: &str, e: Error| Error::invalid("actions", format!("update {field}: {e}"));
    Ok(TicketPatch {
        status: c.status.map(|s| crate::ticket::Status::parse(&s)).transpose().map_err(|e| bad("status", e))?,
        priority: c.priority.map(|p| crate::ticket::Priority::parse(&p)).transpose().map_err(|e| bad("priority", e))?,
        level: c
            .level
            .map(|l| {
                i32::try_from(l).map_err(|_| Error::invalid("actions", format!("update level: {l} is not a level")))
            })
            .transpose()?,
        team_id: c.team_id,
        assignee_id: c.assignee_id,
        category: c.category,
        add_tags: Some(c.add_tags).filter(|t| !t.is_empty()),
        remove_tags: Some(c.remove_tags).filter(|t| !t.is_empty()),
        ..TicketPatch::default()
    })
}

fn rendered_message(r: plugdesk_template::Rendered) -> crate::ticket::MessageInput {
    crate::ticket::MessageInput { body_html: r.html, subject: r.subject, ..text_message(r.text) }
}

/// What `POST /workflows/replay` takes: a draft (or saved) workflow and how far back to go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The draft's source (or give `workflow_id`).
    #[serde(default)]
    pub source: Option<String>,
    /// A saved workflow to replay instead of a draft.
    #[serde(default)]
    pub workflow_id: Option<i64>,
    /// How many days of history (1-90, default 7).
    #[serde(default)]
    pub days: Option<i64>,
    /// Most events to look at (default and maximum 5,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Runs a workflow over the stored events of the last N days that fire it, against each
/// ticket as it is now (the history keeps events, not old copies of tickets), without applying
/// anything; reports per ticket what it would have done.
///
/// Bounded: at most 5,000 events, each run within the engine's limits on the worker pool (one
/// worker at a time, queued fairly behind other work), and `compute.replay_ms` of wall time
/// in all; past that the answer says `"stopped": "time"` with what was done so far.
///
/// # Errors
/// [`Error::Script`] for a draft that does not compile, [`Error::Invalid`], [`Error::Busy`].
pub async fn replay(core: &crate::Core, workspace_id: i64, input: &Replay) -> Result<Json> {
    let deadline = Instant::now() + core.compute().replay_budget();
    let source = match (&input.source, input.workflow_id) {
        (Some(s), _) => s.clone(),
        (None, Some(id)) => get(core, workspace_id, id).await?.source,
        (None, None) => return Err(Error::invalid("source", "give the draft's source or a workflow_id")),
    };
    let days = input.days.unwrap_or(7);
    if !(1..=90).contains(&days) {
        return Err(Error::invalid("days", "days must be between 1 and 90"));
    }
    let limit = input.limit.unwrap_or(5000).clamp(1, 5000);
    let script = Arc::new(compile_pooled(core, source).await?);
    let since = crate::now_ms() - days * 86_400_000;
    let events = db::query_all(
        core.db(),
        "SELECT id, type, ticket_id, changes, created_at FROM events WHERE workspace_id = ? AND created_at >= ? AND ticket_id IS NOT NULL ORDER BY id LIMIT ?",
        vec![workspace_id.into(), since.into(), limit.into()],
    )
    .await?;
    let (mut looked, mut fired, mut errors) = (0, 0, 0);
    let mut stopped = None;
    let mut tickets: Vec<Json> = Vec::new();
    for e in &events {
        if Instant::now() >= deadline {
            stopped = Some("time");
            break;
        }
        looked += 1;
        let kind: String = db::col(e, "type")?;
        let changes: Json = serde_json::from_str(&db::col::<String>(e, "changes")?).unwrap_or(Json::Null);
        if !script.fires(&kind, &changes) {
            continue;
        }
        fired += 1;
        let ticket_id: i64 = db::col(e, "ticket_id")?;
        let view = match view_of(core, workspace_id, &kind, &changes, ticket_id).await {
            Ok(v) => v,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let (c, s) = (core.clone(), script.clone());
        let result = core.compute().run(move || c.workflows().engine.run(&s, &view)).await?;
        let entry = match result {
            Ok(actions) if actions.is_empty() => continue,
            Ok(actions) => json!({
                "event_id": db::col::<i64>(e, "id")?,
                "event": kind,
                "at": crate::rfc3339(db::col(e, "created_at")?),
                "actions": actions,
            }),
            Err(err) => {
                errors += 1;
                json!({ "event_id": db::col::<i64>(e, "id")?, "event": kind, "error": err.to_string() })
            }
        };
        match tickets.iter_mut().find(|t| t["ticket_id"] == ticket_id) {
            Some(t) => {
                if let Some(list) = t["runs"].as_array_mut() {
                    list.push(entry);
                }
            }
            None => tickets.push(json!({ "ticket_id": ticket_id, "runs": [entry] })),
        }
    }
    Ok(json!({
        "days": days,
        "events_examined": looked,
        "events_fired": fired,
        "errors": errors,
        "tickets_changed": tickets.len(),
        "truncated": stopped.is_some() || events.len() as i64 == limit,
        "stopped": stopped,
        "time_budget_ms": core.compute().replay_budget().as_millis() as u64,
        "tickets": tickets,
    }))
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
                        "team_id": 9, "assignee_id": null, "category": null, "tags": [], "attributes": {}, "reopen_count": 0 },
            "customer": { "id": 3, "name": "Anna", "tier": tier, "language": language, "open_tickets": 1,
                          "attributes": {}, "last_agent_id": null, "recent_tickets": [] },
            "messages": [{ "direction": "inbound", "text": text }],
            "agents": [
                { "id": 1, "presence": "offline", "open_tickets": 0, "capacity": 10, "teams": [9], "skills": [] },
                { "id": 2, "presence": "online", "open_tickets": 3, "capacity": 10, "teams": [9], "skills": [] },
                { "id": 4, "presence": "online", "open_tickets": 1, "capacity": 10, "teams": [9], "skills": [] },
                { "id": 5, "presence": "online", "open_tickets": 1, "capacity": 10, "teams": [9], "skills": [] },
                { "id": 6, "presence": "online", "open_tickets": 0, "capacity": 0, "teams": [9], "skills": [] },
            ],
            "teams": [{ "id": 9, "name": "Versand", "lead_agent_id": 2, "members": [1, 2, 4, 5, 6] }],
        })
    }

    fn run(name: &str, v: &Json) -> Vec<plugdesk_workflow::Action> {
        let (engine, s) = script(name);
        engine.run(&s, v).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn names(actions: &[plugdesk_workflow::Action]) -> Vec<&str> {
        actions.iter().map(|a| a.name()).collect()
    }

    #[test]
    fn a_wave_carries_the_agents_load_from_one_ticket_to_the_next() {
        let (engine, routing) = script("Routing");
        let routing = Arc::new(routing);
        // Agents 4 and 5 are online with one open ticket each, agent 2 with three; the same
        // ticket number each time, so only the load decides between equals.
        let mut agents = view("x", "y", "en", "normal")["agents"].take();
        let mut assigned = Vec::new();
        for _ in 0..3 {
            let mut v = view("x", "y", "en", "normal");
            v["agents"] = agents.take();
            let ran = run_scripts(&engine, &mut v, vec![(1, routing.clone())]);
            let actions = ran[0].actions.as_ref().expect("routing runs");
            assigned.push(actions[0].args()["assignee_id"].as_i64());
            agents = v["agents"].take();
        }
        // Without the load carried over, all three would go to agent 5.
        assert_eq!(assigned, [Some(5), Some(4), Some(5)]);
        let load = |id: i64| {
            agents.as_array().and_then(|l| l.iter().find(|a| a["id"] == id)).map(|a| a["open_tickets"].clone())
        };
        assert_eq!((load(4), load(5), load(2)), (Some(json!(2)), Some(json!(3)), Some(json!(3))));
        // Unassigning gives the load back; an unknown agent changes nothing.
        move_load(&mut agents, Some(5), None);
        move_load(&mut agents, Some(99), Some(4));
        assert_eq!((load_of(&agents, 4), load_of(&agents, 5)), (Some(3), Some(2)));
    }

    fn load_of(agents: &Json, id: i64) -> Option<i64> {
        agents.as_array()?.iter().find(|a| a["id"] == id)?["open_tickets"].as_i64()
    }

    #[test]
    fn a_change_becomes_the_domains_patch_or_is_refused_before_anything_applies() {
        let p = ticket_patch(Change {
            status: Some("pending".into()),
            assignee_id: Some(None),
            add_tags: vec!["x".into()],
            ..Change::default()
        })
        .expect("valid");
        assert_eq!(
            (p.status, p.assignee_id, p.add_tags, p.remove_tags),
            (Some(crate::ticket::Status::Pending), Some(None), Some(vec!["x".into()]), None)
        );
        let bad = ticket_patch(Change { status: Some("finished".into()), ..Change::default() }).expect_err("refused");
        assert!(bad.to_string().contains("update status"), "{bad}");
        assert!(ticket_patch(Change { priority: Some("asap".into()), ..Change::default() }).is_err());
        assert!(ticket_patch(Change { level: Some(1 << 40), ..Change::default() }).is_err());
    }

    #[test]
    fn every_default_workflow_compiles() {
        for (name, _) in LIBRARY {
            script(name);
        }
    }

    #[test]
    fn the_lost_parcel_playbook_answers_with_its_template_and_sets_a_follow_up() {
        let a =
            run("Lost parcel", &view("Paket nicht angekommen", "Meine Sendung fehlt seit einer Woche", "de", "normal"));
        assert_eq!(a[0].args(), json!({ "category": "lost_parcel" }));
        assert!(a.iter().any(|a| a.name() == "reply_template" && a.args()["purpose"] == "lost_parcel"), "{a:?}");
        let f = a.iter().find(|a| a.name() == "follow_up").expect("follow-up");
        assert_eq!(f.args()["after_ms"], json!(48 * 3_600_000));
        assert!(
            names(&run("Lost parcel", &view("Order 4711", "My package never arrived", "en", "normal")))
                .contains(&"reply_template")
        );
        assert!(run("Lost parcel", &view("Rechnung", "Bitte Rechnung senden", "de", "normal")).is_empty());
        // Automatic mail is categorised but not answered.
        let mut auto = view("Paket nicht angekommen", "fehlt", "de", "normal");
        auto["ticket"]["attributes"] = json!({ "automatic": true });
        assert_eq!(names(&run("Lost parcel", &auto)), ["update", "update"]);
    }

    #[test]
    fn acknowledgements_use_the_template_skip_automatic_mail_and_answered_tickets() {
        let a = run("Acknowledge new tickets", &view("Hallo", "Frage", "de", "normal"));
        assert_eq!((a[0].name(), &a[0].args()), ("reply_template", &json!({ "purpose": "acknowledgement" })));
        let mut auto = view("Out of office", "I am away", "en", "normal");
        auto["ticket"]["attributes"] = json!({ "automatic": true });
        assert!(run("Acknowledge new tickets", &auto).is_empty());
        let mut answered = view("x", "y", "en", "normal");
        answered["ticket"]["tags"] = json!(["auto-answered"]);
        assert!(run("Acknowledge new tickets", &answered).is_empty());
    }

    #[test]
    fn tiers_set_priorities_and_the_extended_tier_gets_a_named_contact() {
        assert_eq!(run("Tier handling", &view("x", "y", "en", "basic"))[0].args(), json!({ "priority": "low" }));
        let a = run("Tier handling", &view("x", "y", "en", "extended"));
        assert_eq!(a[0].args(), json!({ "priority": "high" }));
        // No account manager: the team lead (agent 2) is the contact.
        assert!(a.iter().any(|a| a.args() == json!({ "assignee_id": 2 })), "{a:?}");
        let mut managed = view("x", "y", "en", "extended");
        managed["customer"]["attributes"] = json!({ "account_manager": 5 });
        assert!(run("Tier handling", &managed).iter().any(|a| a.args() == json!({ "assignee_id": 5 })));
    }

    #[test]
    fn routing_prefers_the_last_agent_on_the_topic_then_the_least_loaded() {
        // Agents 4 and 5 share the lowest load; ticket number 7 picks the second of them.
        assert_eq!(run("Routing", &view("x", "y", "en", "normal"))[0].args(), json!({ "assignee_id": 5 }));
        let mut assigned = view("x", "y", "en", "normal");
        assigned["ticket"]["assignee_id"] = json!(2);
        assert!(run("Routing", &assigned).is_empty());
        // A known customer with an open ticket on the same topic goes to its last agent.
        let mut known = view("x", "y", "en", "normal");
        known["ticket"]["category"] = json!("billing");
        known["customer"]["recent_tickets"] =
            json!([{ "id": 3, "status": "open", "category": "billing", "last_agent_id": 2 }]);
        known["agents"][1]["skills"] = json!(["billing"]);
        assert_eq!(run("Routing", &known)[0].args(), json!({ "assignee_id": 2 }));
        // ... but not when that agent is offline or full: then the usual rule, skilled agents
        // first (agent 4 has the skill), else the least loaded.
        known["agents"][1]["presence"] = json!("offline");
        known["agents"][2]["skills"] = json!(["billing"]);
        assert_eq!(run("Routing", &known)[0].args(), json!({ "assignee_id": 4 }));
        // A different topic does not count: nobody has the skill, so the least loaded.
        let mut other = view("x", "y", "en", "normal");
        other["ticket"]["category"] = json!("returns");
        other["customer"]["recent_tickets"] =
            json!([{ "id": 3, "status": "open", "category": "billing", "last_agent_id": 2 }]);
        assert_eq!(run("Routing", &other)[0].args(), json!({ "assignee_id": 5 }));
    }

    #[test]
    fn reopened_twice_escalates_and_sla_events_notify_and_raise_the_priority() {
        let mut v = view("x", "Immer noch kaputt", "de", "normal");
        v["ticket"]["reopen_count"] = json!(2);
        let a = run("Competence levels", &v);
        assert_eq!(names(&a), ["escalate", "reply_template"]);
        assert!(a[0].args()["note"].as_str().unwrap_or("").contains("reopened 2 times"), "{a:?}");
        let mut breach = view("x", "y", "en", "normal");
        breach["event"] = json!({ "kind": "sla.breached", "changes": { "clock": "first_response" } });
        let a = run("SLA warnings and breaches", &breach);
        assert_eq!(names(&a), ["update", "escalate", "notify"]);
        assert_eq!((a[0].args().clone(), a[2].args()["agent_id"].clone()), (json!({ "priority": "urgent" }), json!(2)));
        let mut warning = view("x", "y", "en", "normal");
        warning["event"] = json!({ "kind": "sla.warning", "changes": { "clock": "first_response" } });
        warning["ticket"]["assignee_id"] = json!(4);
        let a = run("SLA warnings and breaches", &warning);
        assert_eq!((a[0].name(), a[0].args()["agent_id"].clone()), ("notify", json!(4)));
    }

    #[test]
    fn resolved_tickets_get_one_survey_and_poor_answers_reach_the_assignee() {
        let mut resolved = view("x", "y", "en", "normal");
        resolved["event"] =
            json!({ "kind": "ticket.updated", "changes": { "status": { "before": "open", "after": "resolved" } } });
        assert_eq!(names(&run("Satisfaction survey", &resolved)), ["survey", "update"]);
        resolved["ticket"]["tags"] = json!(["surveyed"]);
        assert!(run("Satisfaction survey", &resolved).is_empty());
        let mut answer = view("x", "y", "en", "normal");
        answer["event"] = json!({ "kind": "survey.answered", "changes": { "rating": 1, "comment": "slow" } });
        answer["ticket"]["assignee_id"] = json!(4);
        let a = run("Satisfaction survey", &answer);
        assert_eq!(names(&a), ["update", "notify"]);
        assert!(a[1].args()["body"].as_str().unwrap_or("").contains("1 of 5"), "{a:?}");
        answer["event"]["changes"]["rating"] = json!(5);
        assert!(run("Satisfaction survey", &answer).is_empty());
    }

    #[test]
    fn a_due_follow_up_asks_only_when_the_customer_has_not_written() {
        let mut due = view("x", "y", "en", "normal");
        due["event"] = json!({ "kind": "ticket.follow_up", "changes": { "note": "check" } });
        due["ticket"]["status"] = json!("open");
        due["messages"] = json!([{ "direction": "inbound", "text": "a" }, { "direction": "outbound", "text": "b" }]);
        assert_eq!(names(&run("Follow-up check", &due)), ["reply_template", "update"]);
        due["messages"] = json!([{ "direction": "outbound", "text": "b" }, { "direction": "inbound", "text": "c" }]);
        assert!(run("Follow-up check", &due).is_empty());
    }

    #[test]
    fn the_view_follows_the_actions_of_earlier_workflows() {
        let mut v = view("x", "y", "en", "normal");
        let actions = vec![
            Action::Update(Change { category: Some(Some("lost_parcel".into())), ..Change::default() }),
            Action::Update(Change { add_tags: vec!["Parcel".into()], ..Change::default() }),
            Action::Escalate { note: "n".into() },
            Action::Customer { tier: "extended".into() },
        ];
        project(&mut v, &actions);
        assert_eq!(v["ticket"]["category"], "lost_parcel");
        assert_eq!(v["ticket"]["tags"], json!(["parcel"]));
        assert_eq!((v["ticket"]["level"].clone(), v["customer"]["tier"].clone()), (json!(2), json!("extended")));
    }
}
