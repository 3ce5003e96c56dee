//! Response templates of a workspace (`plugdesk_template`): the default set from `templates/`,
//! compiled into the binary, with the workspace's own templates, partials and Rhai helpers on
//! top (table `templates`; a workspace row replaces the bundled one of the same name, deleting
//! it brings the bundled one back).
//!
//! Each workspace's set is compiled once and cached by the workspace's `templates_revision`,
//! which every change raises in its own transaction: the next render on any node sees the
//! change, without a restart. A change is compiled together with the whole set before it is
//! saved, so a template that does not compile, calls an unknown helper or includes a missing
//! partial is refused with its line and column and never reaches a customer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plugdesk_template::{PartialSource, Rendered, TemplateSet, TemplateSource};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::db;
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The workspaces' compiled sets, by workspace id, with the revision they were built from.
#[derive(Default)]
pub struct Templates {
    sets: Mutex<HashMap<i64, (i64, Arc<TemplateSet>)>>,
}

impl Templates {
    /// Keeps a workspace's freshly compiled set as the one of revision `rev`.
    fn keep(&self, workspace_id: i64, rev: i64, set: TemplateSet) -> Arc<TemplateSet> {
        let set = Arc::new(set);
        if let Ok(mut m) = self.sets.lock() {
            m.insert(workspace_id, (rev, set.clone()));
        }
        set
    }
}

/// A stored row: a template variant, a partial or a script helper.
#[derive(Debug, Clone)]
struct Row {
    kind: String,
    name: String,
    channel: String,
    language: String,
    subject: Option<String>,
    body: String,
    body_html: Option<String>,
}

fn row(r: &sea_orm::QueryResult) -> Result<Row> {
    Ok(Row {
        kind: db::col(r, "kind")?,
        name: db::col(r, "name")?,
        channel: db::col(r, "channel")?,
        language: db::col(r, "language")?,
        subject: db::col(r, "subject")?,
        body: db::col(r, "body")?,
        body_html: db::col(r, "body_html")?,
    })
}

/// A template error as the API reports it: 422 with line and column where there is one.
fn refused(e: &plugdesk_template::Error) -> Error {
    let (line, column) = e.position().unwrap_or((0, 0));
    Error::Script { line, column, message: e.to_string() }
}

/// Compiles the bundled set with `rows` on top: helpers first, then the bundled files, then
/// the workspace's partials and templates.
fn build(rows: &[Row]) -> std::result::Result<TemplateSet, plugdesk_template::Error> {
    let mut set = TemplateSet::new("en")?;
    for r in rows.iter().filter(|r| r.kind == "helper") {
        set.register_script_helper(&r.name, &r.body)?;
    }
    set.add_files(BUNDLED_TEMPLATES.iter().copied())?;
    for r in rows.iter().filter(|r| r.kind == "partial") {
        let source = PartialSource { text: Some(&r.body), html: r.body_html.as_deref() };
        set.add_partial(&r.name, &r.language, source)?;
    }
    for r in rows.iter().filter(|r| r.kind == "template") {
        let source = TemplateSource { subject: r.subject.as_deref(), text: &r.body, html: r.body_html.as_deref() };
        set.add_template(&r.name, &r.channel, &r.language, source)?;
    }
    set.check()?;
    Ok(set)
}

/// The bundled set alone, compiled (what a workspace without its own templates renders with).
///
/// # Errors
/// Only if the bundled files do not compile (a bug the tests catch).
pub fn bundled() -> Result<TemplateSet> {
    build(&[]).map_err(|e| Error::Internal(format!("the bundled templates do not compile: {e}")))
}

async fn rows<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<Row>> {
    db::query_all(db, "SELECT * FROM templates WHERE workspace_id = ? ORDER BY id", vec![workspace_id.into()])
        .await?
        .iter()
        .map(row)
        .collect()
}

async fn revision<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<i64> {
    db::query_one(db, "SELECT templates_revision FROM workspaces WHERE id = ?", vec![workspace_id.into()])
        .await?
        .map(|r| db::col(&r, "templates_revision"))
        .transpose()?
        .ok_or(Error::NotFound("workspace"))
}

/// The workspace's compiled set (from the cache while its revision holds).
///
/// # Errors
/// Database errors; a stored set that no longer compiles (cannot happen through the API).
pub async fn set(core: &crate::Core, workspace_id: i64) -> Result<Arc<TemplateSet>> {
    let rev = revision(core.db(), workspace_id).await?;
    if let Some((r, set)) = core.templates().sets.lock().ok().and_then(|m| m.get(&workspace_id).cloned())
        && r == rev
    {
        return Ok(set);
    }
    let rows = rows(core.db(), workspace_id).await?;
    let set = core
        .compute()
        .run_queued(move || build(&rows))
        .await?
        .map_err(|e| Error::Internal(format!("the templates of workspace {workspace_id} do not compile: {e}")))?;
    Ok(core.templates().keep(workspace_id, rev, set))
}

/// A template variant as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateView {
    /// Purpose (`acknowledgement`, `lost_parcel`, …).
    pub purpose: String,
    /// Channel (`email`, `chat`, `sms`, `default`, …).
    pub channel: String,
    /// Language (`de`, `en`, …).
    pub language: String,
    /// Subject source, if any.
    pub subject: Option<String>,
    /// Text body source.
    pub text: String,
    /// HTML body source, if any.
    pub html: Option<String>,
    /// `workspace` (changed or added here) or `bundled`.
    pub origin: &'static str,
}

/// Every template, partial and helper the workspace renders with.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Core, workspace_id: i64) -> Result<Json> {
    let set = set(core, workspace_id).await?;
    let rows = rows(core.db(), workspace_id).await?;
    let own = |kind: &str, name: &str, channel: &str, language: &str| {
        rows.iter().any(|r| r.kind == kind && r.name == name && r.channel == channel && r.language == language)
    };
    let mut templates: Vec<TemplateView> = set
        .variants()
        .map(|v| TemplateView {
            purpose: v.purpose().to_owned(),
            channel: v.channel().to_owned(),
            language: v.language().to_owned(),
            subject: v.subject_source().map(|s| s.trim().to_owned()),
            text: v.text_source().trim_start_matches('\n').to_owned(),
            html: v.html_source().map(str::to_owned),
            origin: if own("template", v.purpose(), v.channel(), v.language()) { "workspace" } else { "bundled" },
        })
        .collect();
    templates.sort_by(|a, b| (&a.purpose, &a.channel, &a.language).cmp(&(&b.purpose, &b.channel, &b.language)));
    let mut partials: Vec<Json> = rows
        .iter()
        .filter(|r| r.kind == "partial")
        .map(|r| json!({ "name": r.name, "language": r.language, "text": r.body, "html": r.body_html, "origin": "workspace" }))
        .collect();
    for (path, source) in BUNDLED_TEMPLATES {
        let Some(stem) = path.strip_prefix("partials/").and_then(|p| p.strip_suffix(".hbs")) else { continue };
        let (stem, html) = stem.strip_suffix(".html").map_or((stem, false), |s| (s, true));
        let Some((name, language)) = stem.split_once('.') else { continue };
        if own("partial", name, "", language) {
            continue;
        }
        let key = if html { "html" } else { "text" };
        match partials.iter_mut().find(|p| p["name"] == name && p["language"] == language) {
            Some(p) => p[key] = json!(source),
            None => partials.push(json!({ "name": name, "language": language, key: source, "origin": "bundled" })),
        }
    }
    let helpers: Vec<Json> = rows
        .iter()
        .filter(|r| r.kind == "helper")
        .map(|r| json!({ "name": r.name, "source": r.body, "origin": "workspace" }))
        .collect();
    Ok(json!({ "templates": templates, "partials": partials, "helpers": helpers }))
}

/// A template's parts, as saved through the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// Subject (email), optional.
    #[serde(default)]
    pub subject: Option<String>,
    /// Text body (for a helper: the Rhai source; for a partial: its text version).
    pub text: String,
    /// HTML body, optional.
    #[serde(default)]
    pub html: Option<String>,
}

/// What is being saved or removed.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A variant: purpose, channel, language.
    Template(&'a str, &'a str, &'a str),
    /// A partial: name, language.
    Partial(&'a str, &'a str),
    /// A script helper: name.
    Helper(&'a str),
}

impl Target<'_> {
    fn key(&self) -> (&'static str, String, String, String) {
        match *self {
            Target::Template(p, c, l) => ("template", p.to_owned(), c.to_owned(), l.to_owned()),
            Target::Partial(n, l) => ("partial", n.to_owned(), String::new(), l.to_owned()),
            Target::Helper(n) => ("helper", n.to_owned(), String::new(), String::new()),
        }
    }

    /// Takes the target's row out of `rows`; whether there was one.
    fn take_from(&self, rows: &mut Vec<Row>) -> bool {
        let (kind, name, channel, language) = self.key();
        let before = rows.len();
        rows.retain(|r| !(r.kind == kind && r.name == name && r.channel == channel && r.language == language));
        rows.len() != before
    }

    /// The target's row with `input` (empty subject and HTML count as none).
    fn row(&self, input: &TemplateInput) -> Row {
        let (kind, name, channel, language) = self.key();
        Row {
            kind: kind.into(),
            name,
            channel,
            language,
            subject: input.subject.clone().filter(|s| !s.trim().is_empty()),
            body: input.text.clone(),
            body_html: input.html.clone().filter(|s| !s.trim().is_empty()),
        }
    }

    async fn delete<C: ConnectionTrait>(&self, txn: &C, workspace_id: i64) -> Result<()> {
        let (kind, name, channel, language) = self.key();
        db::exec(
            txn,
            "DELETE FROM templates WHERE workspace_id = ? AND kind = ? AND name = ? AND channel = ? AND language = ?",
            vec![workspace_id.into(), kind.into(), name.into(), channel.into(), language.into()],
        )
        .await?;
        Ok(())
    }
}

/// Compiles `rows` on top of the bundled set on the worker pool; a set that does not compile
/// is a 422 with line and column.
async fn compile(core: &crate::Core, rows: Vec<Row>) -> Result<TemplateSet> {
    core.compute().run(move || build(&rows)).await?.map_err(|e| refused(&e))
}

/// The workspace's rows as of revision `rev`, read outside any transaction: the set is
/// compiled (on the worker pool, which may have to wait) before the write transaction opens,
/// so a busy pool never holds the database's write lock. [`unchanged`] checks inside the
/// transaction that nobody changed the templates meanwhile.
async fn snapshot(core: &crate::Core, workspace_id: i64) -> Result<(i64, Vec<Row>)> {
    let rev = revision(core.db(), workspace_id).await?;
    Ok((rev, rows(core.db(), workspace_id).await?))
}

async fn unchanged<C: ConnectionTrait>(txn: &C, workspace_id: i64, rev: i64) -> Result<()> {
    if revision(txn, workspace_id).await? == rev {
        Ok(())
    } else {
        Err(Error::Conflict("the templates changed while this change was being checked; send it again".into()))
    }
}

/// Saves a template, partial or helper of the workspace after compiling the whole set with it.
///
/// # Errors
/// [`Error::Script`] (422) with line and column when the set would not compile;
/// [`Error::Conflict`] when another change came in meanwhile; [`Error::Busy`].
pub async fn save(core: &crate::Core, workspace_id: i64, target: Target<'_>, input: &TemplateInput) -> Result<Json> {
    let (rev, mut all) = snapshot(core, workspace_id).await?;
    target.take_from(&mut all);
    let saved = target.row(input);
    all.push(saved.clone());
    let set = compile(core, all).await?;
    let txn = db::begin_write(core.db()).await?;
    unchanged(&txn, workspace_id, rev).await?;
    target.delete(&txn, workspace_id).await?;
    db::exec(
        &txn,
        "INSERT INTO templates (workspace_id, kind, name, channel, language, subject, body, body_html, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            workspace_id.into(),
            saved.kind.into(),
            saved.name.into(),
            saved.channel.into(),
            saved.language.into(),
            saved.subject.into(),
            saved.body.into(),
            saved.body_html.into(),
            crate::now_ms().into(),
        ],
    )
    .await?;
    let rev = bump(&txn, workspace_id).await?;
    txn.commit().await?;
    core.templates().keep(workspace_id, rev, set);
    list(core, workspace_id).await
}

/// Removes the workspace's own template, partial or helper (a bundled one of the same name
/// comes back). Refused when the rest would not compile without it (a template still calls
/// the helper or includes the partial).
///
/// # Errors
/// [`Error::NotFound`] when the workspace has none of that name; [`Error::Script`],
/// [`Error::Conflict`], [`Error::Busy`] as [`save`].
pub async fn remove(core: &crate::Core, workspace_id: i64, target: Target<'_>) -> Result<()> {
    let (rev, mut all) = snapshot(core, workspace_id).await?;
    if !target.take_from(&mut all) {
        return Err(Error::NotFound("template"));
    }
    let set = compile(core, all).await?;
    let txn = db::begin_write(core.db()).await?;
    unchanged(&txn, workspace_id, rev).await?;
    target.delete(&txn, workspace_id).await?;
    let rev = bump(&txn, workspace_id).await?;
    txn.commit().await?;
    core.templates().keep(workspace_id, rev, set);
    Ok(())
}

/// Raises the workspace's template revision; returns the new one.
async fn bump<C: ConnectionTrait>(txn: &C, workspace_id: i64) -> Result<i64> {
    db::exec(
        txn,
        "UPDATE workspaces SET templates_revision = templates_revision + 1 WHERE id = ?",
        vec![workspace_id.into()],
    )
    .await?;
    revision(txn, workspace_id).await
}

/// The data templates render with for one ticket: ticket, customer, assigned agent, workspace
/// and optionally a survey link — read from the database (for previews).
///
/// # Errors
/// [`Error::NotFound`] for an unknown ticket.
pub async fn data_for(
    core: &crate::Core,
    workspace_id: i64,
    ticket_id: i64,
    survey_link: Option<&str>,
) -> Result<Json> {
    let t = crate::ticket::get(core.db(), workspace_id, ticket_id).await?;
    let c = crate::customer::get(core.db(), workspace_id, t.customer_id).await?;
    let agents = match t.assignee_id {
        Some(a) => json!([crate::agent::get(core.db(), workspace_id, a).await?]),
        None => json!([]),
    };
    let view = json!({
        "ticket": serde_json::to_value(&t)?,
        "customer": serde_json::to_value(&c)?,
        "agents": agents,
        "workspace": { "name": workspace_name(core, workspace_id).await? },
    });
    Ok(data_from(core, &view, survey_link))
}

/// The workspace's name (for templates).
///
/// # Errors
/// Database errors.
pub(crate) async fn workspace_name(core: &crate::Core, workspace_id: i64) -> Result<String> {
    Ok(db::query_one(core.db(), "SELECT name FROM workspaces WHERE id = ?", vec![workspace_id.into()])
        .await?
        .map(|r| db::col::<String>(&r, "name"))
        .transpose()?
        .unwrap_or_default())
}

/// The data templates render with, taken from a workflow's view of the event (`ticket`,
/// `customer`, `agents`, `workspace.name`): no database reads.
pub(crate) fn data_from(core: &crate::Core, view: &Json, survey_link: Option<&str>) -> Json {
    let t = &view["ticket"];
    let c = &view["customer"];
    let mut data = json!({
        "ticket": {
            "number": t["number"], "subject": t["subject"], "status": t["status"], "priority": t["priority"],
            "category": t["category"], "channel": t["channel"], "created_at": t["created_at"], "updated_at": t["updated_at"],
        },
        "customer": { "name": c["name"], "language": c["language"], "tier": c["tier"] },
        "workspace": { "name": view["workspace"]["name"], "base_url": core.public_url() },
    });
    let assignee = &t["assignee_id"];
    if let Some(a) =
        view["agents"].as_array().and_then(|a| a.iter().find(|a| !assignee.is_null() && a["id"] == *assignee))
    {
        data["agent"] = json!({ "name": a["name"] });
    }
    if let Some(link) = survey_link {
        data["survey"] = json!({ "link": link });
    }
    data
}

/// The channel templates are chosen for: `email` for mail and web forms (their answers go out
/// by mail), `sms` for text messages, `chat` (short plain text) for everything else — chats,
/// messengers and tickets made through the API.
pub fn channel_kind(channel: &str) -> &'static str {
    match channel {
        "email" | "webform" => "email",
        "sms" => "sms",
        _ => "chat",
    }
}

/// Renders `purpose` for the ticket of a workflow's view in its customer's language on its
/// channel.
///
/// # Errors
/// [`Error::Invalid`] naming the purpose when no variant exists or the render fails.
pub(crate) async fn render_for(
    core: &crate::Core,
    workspace_id: i64,
    view: &Json,
    purpose: &str,
    survey_link: Option<&str>,
) -> Result<Rendered> {
    let data = data_from(core, view, survey_link);
    let set = set(core, workspace_id).await?;
    let channel = channel_kind(data["ticket"]["channel"].as_str().unwrap_or_default());
    let language = data["customer"]["language"].as_str().unwrap_or("en").to_owned();
    let purpose = purpose.to_owned();
    // Off the executor, within the set's render budget; the dispatcher waits for a worker.
    core.compute()
        .run_queued(move || set.render(&purpose, channel, &language, &data))
        .await?
        .map_err(|e| Error::invalid("template", e.to_string()))
}

/// What `POST /api/v1/templates/preview` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// The stored ticket to render against.
    pub ticket_id: i64,
    /// The purpose.
    pub purpose: String,
    /// Channel (default: the ticket's).
    #[serde(default)]
    pub channel: Option<String>,
    /// Language (default: the customer's).
    #[serde(default)]
    pub language: Option<String>,
    /// A draft to render instead of the saved variant (not saved).
    #[serde(default)]
    pub draft: Option<TemplateInput>,
}

/// Renders a saved template or a draft against a stored ticket; an SMS longer than one message
/// is an error here, not cut. The draft's compile and the render run on the worker pool, the
/// render within the set's budget (steps, depth, time, output), so no template can stall or
/// abort the server.
///
/// # Errors
/// [`Error::Script`] (422) with line and column, also for a render that breaks a limit;
/// [`Error::NotFound`]; [`Error::Busy`] (503) when the pool stays full.
pub async fn preview(core: &crate::Core, workspace_id: i64, input: &PreviewInput) -> Result<Json> {
    let link = format!("{}/survey/…", core.public_url());
    let data = data_for(core, workspace_id, input.ticket_id, Some(&link)).await?;
    let channel =
        input.channel.clone().unwrap_or_else(|| channel_kind(data["ticket"]["channel"].as_str().unwrap_or("")).into());
    let language =
        input.language.clone().unwrap_or_else(|| data["customer"]["language"].as_str().unwrap_or("en").to_owned());
    let set = match &input.draft {
        None => set(core, workspace_id).await?,
        Some(draft) => {
            let mut all = rows(core.db(), workspace_id).await?;
            let target = Target::Template(&input.purpose, &channel, &language);
            target.take_from(&mut all);
            all.push(target.row(draft));
            Arc::new(compile(core, all).await?)
        }
    };
    let purpose = input.purpose.clone();
    let rendered =
        core.compute().run(move || set.preview(&purpose, &channel, &language, &data)).await?.map_err(|e| match e {
            plugdesk_template::Error::NotFound { .. } => Error::invalid("purpose", e.to_string()),
            other => refused(&other),
        })?;
    Ok(serde_json::to_value(rendered)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_set_compiles_and_a_workspace_row_replaces_its_variant() {
        let set = build(&[]).expect("bundled set");
        assert!(set.select("lost_parcel", "email", "de").is_some());
        let own = Row {
            kind: "template".into(),
            name: "lost_parcel".into(),
            channel: "chat".into(),
            language: "de".into(),
            subject: None,
            body: "Wir suchen Ihr Paket, {{customer.name}}.".into(),
            body_html: None,
        };
        let set = build(&[own]).expect("with a row");
        let out = set.render("lost_parcel", "chat", "de", &json!({ "customer": { "name": "Anna" } })).expect("renders");
        assert_eq!(out.text, "Wir suchen Ihr Paket, Anna.");
        let broken = Row { body: "{{#if x}}open".into(), ..build_row() };
        let err = build(&[broken]).expect_err("unclosed block");
        assert!(err.position().is_some(), "{err}");
    }

    fn build_row() -> Row {
        Row {
            kind: "template".into(),
            name: "note".into(),
            channel: "chat".into(),
            language: "en".into(),
            subject: None,
            body: "x".into(),
            body_html: None,
        }
    }
}
