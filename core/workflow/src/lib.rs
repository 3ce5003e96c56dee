//! Workflow scripts: a business's rules written in Rhai. A script starts with a header of
//! comment lines saying when it runs, then reads a read-only view of the event and answers by
//! calling action functions:
//!
//! ```rhai
//! // on: ticket.created
//! // on: ticket.updated when status, priority
//! // order: 10
//! if ticket.subject.contains("Paket") || ticket.subject.contains("parcel") {
//!     set_category("lost_parcel");
//!     add_tag("parcel");
//!     if customer.tier == "basic" { set_priority("low"); }
//! }
//! ```
//!
//! The script sees `event` (`kind`, `changes`), `ticket`, `customer`, `messages` and `agents`
//! as maps and arrays (whatever JSON the caller hands in) and nothing else: no files, no
//! network, no `import`, no `eval`, nothing printed. Every run has limits on operations, call
//! depth, expression depth, string, array and map sizes and wall time; a script that breaks one
//! stops with an error naming the line and column.
//!
//! This crate knows nothing of tickets or databases: the core hands it JSON and gets back
//! [`Action`]s, which it checks and applies.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use rhai::packages::Package;
use rhai::{Dynamic, EvalAltResult, Position};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
pub mod schedule;

/// Why a script cannot be saved or did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ScriptError {
    /// 1-based line (0 when the error has no position).
    pub line: usize,
    /// 1-based column (0 when the error has no position).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ScriptError {
    fn at(pos: Position, message: impl Into<String>) -> Self {
        ScriptError { line: pos.line().unwrap_or(0), column: pos.position().unwrap_or(0), message: message.into() }
    }
}

/// Budgets of one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rhai operations (≈ statements and expressions evaluated).
    pub operations: u64,
    /// Nested function calls.
    pub call_levels: usize,
    /// Nesting of expressions (parse time).
    pub expr_depth: usize,
    /// Longest string, bytes.
    pub string_bytes: usize,
    /// Largest array.
    pub array_len: usize,
    /// Largest map.
    pub map_len: usize,
    /// Wall-clock time of a run.
    pub time: Duration,
    /// Actions one run may ask for.
    pub actions: usize,
    /// Longest script, bytes.
    pub source_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            operations: 200_000,
            call_levels: 32,
            expr_depth: 64,
            string_bytes: 64 * 1024,
            array_len: 10_000,
            map_len: 10_000,
            time: Duration::from_millis(100),
            actions: 50,
            source_bytes: 64 * 1024,
        }
    }
}

/// When a workflow runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Event type, e.g. `ticket.created` (`schedule` for a cron schedule).
    pub event: String,
    /// For `ticket.updated`: run only when one of these fields changed (empty: any change).
    pub changed: Vec<String>,
    /// For `// on: schedule MIN HOUR DOM MON DOW`: the minutes (UTC) it runs at.
    pub schedule: Option<schedule::Schedule>,
}

impl Trigger {
    /// Whether an event of `kind` with these `changes` (`{"field": {"before", "after"}}`)
    /// fires this trigger.
    pub fn fires(&self, kind: &str, changes: &Json) -> bool {
        self.event == kind
            && (self.changed.is_empty() || self.changed.iter().any(|f| changes.get(f.as_str()).is_some()))
    }
}

/// A compiled workflow.
#[derive(Debug, Clone)]
pub struct Script {
    ast: rhai::AST,
    /// When it runs.
    pub triggers: Vec<Trigger>,
    /// Order among the workspace's workflows (lower first; default 100).
    pub order: i32,
}

impl Script {
    /// Whether any trigger fires for this event.
    pub fn fires(&self, kind: &str, changes: &Json) -> bool {
        self.triggers.iter().any(|t| t.fires(kind, changes))
    }
}

/// The names a script sees.
const VIEW_NAMES: [&str; 6] = ["event", "ticket", "customer", "messages", "agents", "teams"];

/// An event view converted for scripts once, shared by the workflows that run on the event.
#[derive(Debug, Clone)]
pub struct View(Vec<(&'static str, Dynamic)>);

impl View {
    /// Replaces one of the view's values (`ticket` after a workflow changed it), converting
    /// only that one.
    ///
    /// # Errors
    /// When the JSON cannot be represented.
    pub fn replace(&mut self, name: &str, value: &Json) -> Result<(), ScriptError> {
        let value: Dynamic =
            rhai::serde::to_dynamic(value).map_err(|e| ScriptError::at(Position::NONE, e.to_string()))?;
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        }
        Ok(())
    }
}

/// An action a run asked for, typed where the script called it: the rules layer checks each
/// one once and never guesses a missing argument. Automation plugins' actions decode into the
/// same type. As JSON (dry runs, the plugin contract) it is `{"name": "...", "args": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "args", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Ticket fields (`set_status`, `assign`, `add_tag`, ...).
    Update(Change),
    /// An internal note.
    Note(Text),
    /// A reply to the customer.
    Reply(Text),
    /// A reply rendered from the workspace's template for a purpose.
    ReplyTemplate {
        /// The template's purpose (`acknowledgement`).
        purpose: String,
    },
    /// Level 2, with a note saying why.
    Escalate {
        /// The note.
        note: String,
    },
    /// The customer's support tier.
    Customer {
        /// The tier's key.
        tier: String,
    },
    /// A notification for one agent.
    Notify {
        /// The agent.
        agent_id: i64,
        /// What it says.
        body: String,
    },
    /// A call of one of the workspace's outgoing webhooks.
    Webhook {
        /// The webhook's name.
        name: String,
        /// What it sends.
        #[serde(default)]
        payload: Json,
    },
    /// A check of the ticket after a delay.
    FollowUp {
        /// The delay.
        after_ms: i64,
        /// The note the check leaves.
        note: String,
    },
    /// A satisfaction survey.
    Survey {},
}

/// A note's or reply's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Plain text.
    pub body: String,
    /// An HTML alternative (automation plugins may send one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_html: Option<String>,
}

impl Text {
    fn plain(body: String) -> Self {
        Text { body, body_html: None }
    }
}

/// Changes to a ticket's fields; absent ones stay. `assignee_id`, `team_id` and `category`
/// can be cleared (`Some(None)`, `null` as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// New status (the status flow's transitions apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// New level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i64>,
    /// New category (`null` clears).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub category: Option<Option<String>>,
    /// New team (`null` clears).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub team_id: Option<Option<i64>>,
    /// New assignee (`null` unassigns).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub assignee_id: Option<Option<i64>>,
    /// Tags to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_tags: Vec<String>,
    /// Tags to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
}

/// A field that is present, `null` included (`Some(None)`); an absent one stays `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl Change {
    /// Folds a later change into this one: its fields win, tag lists are joined.
    pub fn merge(&mut self, later: Change) {
        let Change { status, priority, level, category, team_id, assignee_id, add_tags, remove_tags } = later;
        self.status = status.or(self.status.take());
        self.priority = priority.or(self.priority.take());
        self.level = level.or(self.level.take());
        self.category = category.or(self.category.take());
        self.team_id = team_id.or(self.team_id.take());
        self.assignee_id = assignee_id.or(self.assignee_id.take());
        self.add_tags.extend(add_tags);
        self.remove_tags.extend(remove_tags);
    }
}

impl Action {
    /// The action's name in the vocabulary (`update`, `reply_template`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Update(_) => "update",
            Action::Note(_) => "note",
            Action::Reply(_) => "reply",
            Action::ReplyTemplate { .. } => "reply_template",
            Action::Escalate { .. } => "escalate",
            Action::Customer { .. } => "customer",
            Action::Notify { .. } => "notify",
            Action::Webhook { .. } => "webhook",
            Action::FollowUp { .. } => "follow_up",
            Action::Survey {} => "survey",
        }
    }

    /// The action's arguments as JSON (for dry runs and logs).
    pub fn args(&self) -> Json {
        serde_json::to_value(self).map(|mut v| v["args"].take()).unwrap_or(Json::Null)
    }
}

thread_local! {
    /// The run on this thread: its collected actions, deadline and action budget. Runs are
    /// synchronous, so the registered functions reach their run through it.
    static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
}

struct Run {
    actions: Vec<Action>,
    deadline: Instant,
    max_actions: usize,
}

fn push(action: Action) -> Result<(), Box<EvalAltResult>> {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        let Some(run) = r.as_mut() else { return Err("actions can only be taken while a workflow runs".into()) };
        if run.actions.len() >= run.max_actions {
            return Err(format!("a run may take at most {} actions", run.max_actions).into());
        }
        run.actions.push(action);
        Ok(())
    })
}

/// The action functions a script may call, each documented in the README.
fn register_actions(engine: &mut rhai::Engine) {
    fn text(s: &str, what: &str) -> Result<String, Box<EvalAltResult>> {
        if s.trim().is_empty() { Err(format!("{what} must not be empty").into()) } else { Ok(s.to_owned()) }
    }
    fn update(change: Change) -> Result<(), Box<EvalAltResult>> {
        push(Action::Update(change))
    }
    engine.register_fn("set_status", |s: &str| update(Change { status: Some(s.to_owned()), ..Change::default() }));
    engine.register_fn("set_priority", |s: &str| update(Change { priority: Some(s.to_owned()), ..Change::default() }));
    engine.register_fn("set_level", |n: i64| update(Change { level: Some(n), ..Change::default() }));
    engine.register_fn("set_category", |s: &str| {
        update(Change { category: Some(Some(s.to_owned())), ..Change::default() })
    });
    engine.register_fn("set_team", |id: i64| update(Change { team_id: Some(Some(id)), ..Change::default() }));
    engine.register_fn("assign", |id: i64| update(Change { assignee_id: Some(Some(id)), ..Change::default() }));
    engine.register_fn("unassign", || update(Change { assignee_id: Some(None), ..Change::default() }));
    engine.register_fn("add_tag", |s: &str| update(Change { add_tags: vec![s.to_owned()], ..Change::default() }));
    engine.register_fn("remove_tag", |s: &str| update(Change { remove_tags: vec![s.to_owned()], ..Change::default() }));
    engine.register_fn("note", |s: &str| push(Action::Note(Text::plain(text(s, "a note")?))));
    engine.register_fn("reply", |s: &str| push(Action::Reply(Text::plain(text(s, "a reply")?))));
    engine.register_fn("escalate", |s: &str| push(Action::Escalate { note: text(s, "an escalation note")? }));
    engine.register_fn("set_tier", |s: &str| push(Action::Customer { tier: text(s, "a tier")? }));
    engine.register_fn("reply_template", |p: &str| push(Action::ReplyTemplate { purpose: text(p, "a purpose")? }));
    engine.register_fn("notify", |agent: i64, s: &str| {
        push(Action::Notify { agent_id: agent, body: text(s, "a notification")? })
    });
    engine.register_fn("webhook", |name: &str| {
        push(Action::Webhook { name: name.to_owned(), payload: Json::Object(Default::default()) })
    });
    engine.register_fn("webhook", |name: &str, payload: rhai::Map| {
        let payload: Json = rhai::serde::from_dynamic(&payload.into())?;
        push(Action::Webhook { name: name.to_owned(), payload })
    });
    fn follow_up(hours: f64, note: &str) -> Result<(), Box<EvalAltResult>> {
        if !(hours > 0.0 && hours <= 24.0 * 366.0) {
            return Err(format!("follow_up: {hours} hours is not between 0 and a year").into());
        }
        push(Action::FollowUp { after_ms: (hours * 3_600_000.0).round() as i64, note: text(note, "a follow-up note")? })
    }
    engine.register_fn("follow_up", follow_up);
    engine.register_fn("follow_up", |hours: i64, note: &str| follow_up(hours as f64, note));
    engine.register_fn("request_survey", || push(Action::Survey {}));
}

/// A hardened Rhai engine with the action functions.
pub struct Engine {
    rhai: rhai::Engine,
    limits: Limits,
}

impl Engine {
    /// An engine with these limits.
    pub fn new(limits: Limits) -> Self {
        let mut rhai = plugdesk_script::hardened(&plugdesk_script::Limits {
            operations: limits.operations,
            call_levels: limits.call_levels,
            expr_depth: limits.expr_depth,
            function_expr_depth: limits.expr_depth,
            string_bytes: limits.string_bytes,
            array_len: limits.array_len,
            map_len: limits.map_len,
            variables: 1024,
            functions: 256,
            strict_variables: true,
        });
        // The language's own functions (strings, arrays, maps, maths), nothing that reaches out.
        rhai.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
        rhai.on_progress(|_| {
            let late = RUN.with(|r| r.borrow().as_ref().is_some_and(|run| Instant::now() > run.deadline));
            late.then(|| Dynamic::from("ran out of time"))
        });
        register_actions(&mut rhai);
        Engine { rhai, limits }
    }

    /// Parses the header and compiles the script.
    ///
    /// # Errors
    /// A [`ScriptError`] with the line and column of the first problem.
    pub fn compile(&self, source: &str) -> Result<Script, ScriptError> {
        if source.len() > self.limits.source_bytes {
            return Err(ScriptError {
                line: 0,
                column: 0,
                message: format!("a workflow may be at most {} bytes", self.limits.source_bytes),
            });
        }
        let (triggers, order) = header(source)?;
        // The view's variables are known names; with strict variables anything else is an error
        // at compile time. Plain variables here, not constants: the optimiser would fold a
        // constant's placeholder value into the script.
        let mut scope = rhai::Scope::new();
        for name in VIEW_NAMES {
            scope.push(name, Dynamic::UNIT);
        }
        let ast = self.rhai.compile_with_scope(&scope, source).map_err(|e| ScriptError::at(e.1, e.0.to_string()))?;
        Ok(Script { ast, triggers, order })
    }

    /// Runs a script against an event view (`{"event", "ticket", "customer", "messages",
    /// "agents"}`) and returns the actions it asked for, in order.
    ///
    /// # Errors
    /// A [`ScriptError`] when the script fails or breaks a limit; no action is returned then.
    pub fn run(&self, script: &Script, view: &Json) -> Result<Vec<Action>, ScriptError> {
        self.run_view(script, &self.view(view)?)
    }

    /// Converts an event view (`{"event", "ticket", "customer", "messages", "agents"}`) once,
    /// for every workflow that runs on the event.
    ///
    /// # Errors
    /// When the JSON cannot be represented.
    pub fn view(&self, view: &Json) -> Result<View, ScriptError> {
        let mut values = Vec::with_capacity(VIEW_NAMES.len());
        for name in VIEW_NAMES {
            let value = view.get(name).cloned().unwrap_or(Json::Null);
            let value: Dynamic =
                rhai::serde::to_dynamic(value).map_err(|e| ScriptError::at(Position::NONE, e.to_string()))?;
            // Not shared: a shared value could be changed by one workflow under the next one's
            // feet (constants do not protect shared values); each scope gets its own copy.
            values.push((name, value));
        }
        Ok(View(values))
    }

    /// Runs a script against a converted view (see [`Engine::view`]).
    ///
    /// # Errors
    /// As [`Engine::run`].
    pub fn run_view(&self, script: &Script, view: &View) -> Result<Vec<Action>, ScriptError> {
        let mut scope = rhai::Scope::new();
        for (name, value) in &view.0 {
            scope.push_constant(*name, value.clone());
        }
        RUN.with(|r| {
            *r.borrow_mut() = Some(Run {
                actions: Vec::new(),
                deadline: Instant::now() + self.limits.time,
                max_actions: self.limits.actions,
            });
        });
        let result = self.rhai.run_ast_with_scope(&mut scope, &script.ast);
        let run = RUN.with(|r| r.borrow_mut().take());
        match result {
            Ok(()) => Ok(run.map(|r| r.actions).unwrap_or_default()),
            Err(e) => Err(run_error(&e, &self.limits)),
        }
    }
}

fn run_error(e: &EvalAltResult, limits: &Limits) -> ScriptError {
    let message = match e {
        EvalAltResult::ErrorTerminated(_, _) => format!("stopped: ran longer than {:?}", limits.time),
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("stopped: more than {} operations (an endless loop?)", limits.operations)
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("stopped: calls nested deeper than {} (endless recursion?)", limits.call_levels)
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => format!("stopped: {what} is larger than the limit"),
        other => other.to_string(),
    };
    ScriptError::at(e.position(), message)
}

/// Reads the header: `// on: EVENT [when FIELD, FIELD]` lines (at least one) and an optional
/// `// order: N`, among the comment lines at the top.
fn header(source: &str) -> Result<(Vec<Trigger>, i32), ScriptError> {
    let mut triggers = Vec::new();
    let mut order = 100;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("//") else { break };
        let comment = comment.trim();
        let at = |message: String| ScriptError { line: i + 1, column: 1, message };
        if let Some(on) = comment.strip_prefix("on:") {
            if let Some(expr) = on.trim_start().strip_prefix("schedule ") {
                let parsed = schedule::parse(expr).map_err(|e| ScriptError {
                    line: i + 1,
                    column: line.find(expr).map_or(0, |at| line[..at].chars().count()) + e.column,
                    message: format!("schedule: {}", e.message),
                })?;
                triggers.push(Trigger { event: "schedule".into(), changed: Vec::new(), schedule: Some(parsed) });
                continue;
            }
            let (event, changed) = match on.split_once(" when ") {
                Some((e, fields)) => {
                    (e.trim(), fields.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect())
                }
                None => (on.trim(), Vec::new()),
            };
            let valid = !event.is_empty()
                && event.len() <= 64
                && event.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_');
            if !valid {
                return Err(at(format!("{event:?} is not an event type such as ticket.created")));
            }
            triggers.push(Trigger { event: event.to_owned(), changed, schedule: None });
        } else if let Some(n) = comment.strip_prefix("order:") {
            order = n.trim().parse().map_err(|_| at(format!("order {:?} is not a whole number", n.trim())))?;
        }
    }
    if triggers.is_empty() {
        return Err(ScriptError {
            line: 1,
            column: 1,
            message: "a workflow starts with at least one `// on: EVENT` line, e.g. `// on: ticket.created`".into(),
        });
    }
    Ok((triggers, order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_decode_from_their_json_form_once_and_strictly() {
        let decode = |v: Json| serde_json::from_value::<Action>(v);
        let unassign = decode(json!({ "name": "update", "args": { "assignee_id": null } })).expect("decodes");
        assert_eq!(unassign, Action::Update(Change { assignee_id: Some(None), ..Change::default() }));
        assert_eq!(unassign.args(), json!({ "assignee_id": null }), "and encodes back the same");
        // A missing agent is an error, never agent 0; unknown actions and fields too.
        let no_agent = decode(json!({ "name": "notify", "args": { "body": "x" } })).expect_err("refused");
        assert!(no_agent.to_string().contains("agent_id"), "{no_agent}");
        assert!(decode(json!({ "name": "delete_everything", "args": {} })).is_err());
        assert!(decode(json!({ "name": "update", "args": { "owner": 1 } })).is_err());
        assert!(decode(json!({ "name": "update", "args": { "level": "two" } })).is_err());
        let survey = Action::Survey {};
        assert_eq!((survey.name(), survey.args()), ("survey", json!({})));
    }

    #[test]
    fn later_changes_win_and_tag_lists_join() {
        let mut c = Change { status: Some("open".into()), add_tags: vec!["a".into()], ..Change::default() };
        c.merge(Change {
            status: Some("pending".into()),
            priority: Some("high".into()),
            add_tags: vec!["b".into()],
            ..Change::default()
        });
        c.merge(Change { assignee_id: Some(None), ..Change::default() });
        assert_eq!(
            c,
            Change {
                status: Some("pending".into()),
                priority: Some("high".into()),
                assignee_id: Some(None),
                add_tags: vec!["a".into(), "b".into()],
                ..Change::default()
            }
        );
    }

    fn engine() -> Engine {
        Engine::new(Limits::default())
    }

    fn view() -> Json {
        json!({
            "event": { "kind": "ticket.created", "changes": {} },
            "ticket": { "id": 7, "subject": "Paket nicht angekommen", "status": "new", "priority": "normal", "tags": [], "reopen_count": 0 },
            "customer": { "name": "Anna", "tier": "basic", "language": "de" },
            "messages": [{ "direction": "inbound", "text": "Mein Paket fehlt" }],
            "agents": [{ "id": 3, "name": "Bea", "load": 2 }],
        })
    }

    #[test]
    fn a_rule_reads_the_view_and_collects_actions_in_order() {
        let e = engine();
        let s = e
            .compile(
                "// on: ticket.created\n// order: 5\nif ticket.subject.contains(\"Paket\") {\n  set_category(\"lost_parcel\");\n  add_tag(\"parcel\");\n  if customer.tier == \"basic\" { set_priority(\"low\"); }\n  note(`Kunde ${customer.name}, ${messages.len()} Nachricht(en)`);\n}\n",
            )
            .expect("compiles");
        assert_eq!((s.order, s.triggers.len()), (5, 1));
        let actions = e.run(&s, &view()).expect("runs");
        let names: Vec<&str> = actions.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["update", "update", "update", "note"]);
        assert_eq!(actions[2].args(), json!({ "priority": "low" }));
        assert_eq!(actions[3].args(), json!({ "body": "Kunde Anna, 1 Nachricht(en)" }));
    }

    #[test]
    fn syntax_errors_and_unknown_variables_name_line_and_column() {
        let e = engine();
        let err = e.compile("// on: ticket.created\nlet x = ;\n").expect_err("syntax");
        assert_eq!((err.line, err.column), (2, 9), "{err}");
        let err = e.compile("// on: ticket.created\nif tikcet.status == \"new\" { }\n").expect_err("unknown variable");
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("tikcet"), "{err}");
        let err = e.compile("let x = 1;\n").expect_err("no trigger");
        assert!(err.message.contains("// on: EVENT"), "{err}");
        let err = e.compile("// on: Ticket Created\n").expect_err("bad event");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn hostile_scripts_are_stopped_with_a_reason() {
        let e = engine();
        for (source, needle) in [
            ("// on: ticket.created\nloop { }\n", "operations"),
            ("// on: ticket.created\nfn f(n) { f(n + 1) }\nf(1);\n", "nested deeper"),
            ("// on: ticket.created\nlet s = \"x\"; loop { s += s; }\n", "larger than the limit"),
            ("// on: ticket.created\nfor i in 0..100 { add_tag(`t${i}`); }\n", "at most 50 actions"),
            ("// on: ticket.created\nset_status(42);\n", "set_status"),
        ] {
            let s = e.compile(source).expect("compiles");
            let err = e.run(&s, &view()).expect_err(source);
            assert!(err.to_string().contains(needle), "{source}: {err}");
            assert!(err.line >= 2, "{source}: {err}");
        }
        let slow = Engine::new(Limits { time: Duration::from_millis(5), operations: u64::MAX, ..Limits::default() });
        let s = slow.compile("// on: ticket.created\nloop { }\n").expect("compiles");
        assert!(slow.run(&s, &view()).expect_err("timeout").message.contains("ran longer"));
        // A failed run leaves nothing behind for the next one.
        let ok = e.compile("// on: ticket.created\nadd_tag(\"x\");\n").expect("compiles");
        assert_eq!(e.run(&ok, &view()).expect("runs").len(), 1);
    }

    #[test]
    fn triggers_fire_on_their_event_and_changed_fields() {
        let e = engine();
        let s = e.compile("// on: ticket.updated when status, priority\n// on: sla.breached\n").expect("compiles");
        assert!(s.fires("ticket.updated", &json!({ "status": { "before": "new", "after": "open" } })));
        assert!(!s.fires("ticket.updated", &json!({ "tags": {} })));
        assert!(s.fires("sla.breached", &json!({})));
        assert!(!s.fires("ticket.created", &json!({})));
    }

    #[test]
    fn the_view_is_not_folded_into_the_script_at_compile_time() {
        // Regression: the compile scope's placeholders were constants, and the optimiser
        // replaced `agents` by `()`, so `for` over it failed at run time.
        let e = engine();
        let s = e.compile("// on: ticket.created\nfor a in agents { assign(a.id); }\n").expect("compiles");
        assert_eq!(e.run(&s, &view()).expect("runs")[0].args(), json!({ "assignee_id": 3 }));
        let s = e.compile("// on: ticket.created\nticket = 1;\n").expect("compiles");
        assert!(e.run(&s, &view()).is_err(), "the view is read-only");
    }

    #[test]
    fn scripts_cannot_import_or_eval() {
        let e = engine();
        assert!(e.compile("// on: ticket.created\nimport \"x\" as y;\n").is_err());
        assert!(e.compile("// on: ticket.created\neval(\"1\");\n").is_err());
    }
}
