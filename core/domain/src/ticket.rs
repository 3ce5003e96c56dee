//! Tickets: the unit of work. A ticket has a human number per workspace, a status that moves
//! `new → open → pending → resolved → closed` along enforced transitions, a priority, a level
//! (front or back office), a team and an assignee, tags, a category, the channel it came
//! from, and the messages of the conversation. New tickets are written by the group-commit
//! [`Writer`]; changes to existing ones run in one transaction each.

mod create;
pub mod merge;
mod message;
pub mod outbox;

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Value};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value as Json, json};

use crate::db;
use crate::entity::ticket;
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};
use crate::sla::{self, Clock, Targets};

pub use create::{Created, NewTicket, Writer};
pub use message::add_message_in;
pub use message::{AttachmentInput, MessageInput, MessageKind, MessageView, add_message, attachment, messages, source};

/// Longest tag, in characters.
const MAX_TAG_CHARS: usize = 64;
/// Most tags on one ticket.
const MAX_TAGS: usize = 50;

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nobody has looked at it yet.
    New,
    /// Being worked on.
    Open,
    /// Waiting for the customer; SLA clocks are paused.
    Pending,
    /// Answered; reopens when the customer writes again.
    Resolved,
    /// Done.
    Closed,
}

impl Status {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    /// Parses a stored or user-given status.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "new" => Ok(Status::New),
            "open" => Ok(Status::Open),
            "pending" => Ok(Status::Pending),
            "resolved" => Ok(Status::Resolved),
            "closed" => Ok(Status::Closed),
            other => Err(Error::invalid(
                "status",
                format!("unknown status {other:?}; use new, open, pending, resolved or closed"),
            )),
        }
    }

    /// The statuses a ticket may move to from this one. Nothing goes back to `new`; a
    /// resolved or closed ticket can only be reopened.
    pub fn next(self) -> &'static [Status] {
        match self {
            Status::New => &[Status::Open, Status::Pending, Status::Resolved, Status::Closed],
            Status::Open => &[Status::Pending, Status::Resolved, Status::Closed],
            Status::Pending => &[Status::Open, Status::Resolved, Status::Closed],
            Status::Resolved => &[Status::Open, Status::Closed],
            Status::Closed => &[Status::Open],
        }
    }

    /// True for `new`, `open` and `pending`.
    pub fn is_active(self) -> bool {
        matches!(self, Status::New | Status::Open | Status::Pending)
    }

    /// Checks a transition.
    ///
    /// # Errors
    /// [`Error::Transition`] listing what is allowed.
    pub fn check(self, to: Status) -> Result<()> {
        if self == to || self.next().contains(&to) {
            return Ok(());
        }
        Err(Error::Transition {
            from: self.as_str().into(),
            to: to.as_str().into(),
            allowed: self.next().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// How urgent a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    Normal,
    /// Before normal work.
    High,
    /// Drop everything.
    Urgent,
}

impl Priority {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// Parses a stored or user-given priority.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            "urgent" => Ok(Priority::Urgent),
            other => {
                Err(Error::invalid("priority", format!("unknown priority {other:?}; use low, normal, high or urgent")))
            }
        }
    }
}

/// A ticket as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    /// Id.
    pub id: i64,
    /// Human number, unique per workspace.
    pub number: i64,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// 1 = front office, 2 = back office.
    pub level: i32,
    /// Team.
    pub team_id: Option<i64>,
    /// Assigned agent.
    pub assignee_id: Option<i64>,
    /// Customer.
    pub customer_id: i64,
    /// Tier (from the customer at creation).
    pub tier_id: i64,
    /// Category.
    pub category: Option<String>,
    /// Channel of origin.
    pub channel: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Custom attributes.
    pub attributes: Json,
    /// How often it was reopened.
    pub reopen_count: i32,
    /// Created.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// First agent reply.
    pub first_response_at: Option<String>,
    /// Resolved.
    pub resolved_at: Option<String>,
    /// Closed.
    pub closed_at: Option<String>,
    /// Running SLA clocks (only on single-ticket reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<Vec<sla::ClockView>>,
}

impl TryFrom<ticket::Model> for Ticket {
    type Error = Error;
    fn try_from(m: ticket::Model) -> Result<Self> {
        Ok(Ticket {
            id: m.id,
            number: m.number,
            subject: m.subject,
            status: m.status,
            priority: m.priority,
            level: m.level,
            team_id: m.team_id,
            assignee_id: m.assignee_id,
            customer_id: m.customer_id,
            tier_id: m.tier_id,
            category: m.category,
            channel: m.channel,
            tags: serde_json::from_str(&m.tags)?,
            attributes: serde_json::from_str(&m.attributes)?,
            reopen_count: m.reopen_count,
            created_at: crate::rfc3339(m.created_at),
            updated_at: crate::rfc3339(m.updated_at),
            first_response_at: m.first_response_at.map(crate::rfc3339),
            resolved_at: m.resolved_at.map(crate::rfc3339),
            closed_at: m.closed_at.map(crate::rfc3339),
            sla: None,
        })
    }
}

/// One stored ticket of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<ticket::Model> {
    let row = db::query_one(
        db,
        "SELECT * FROM tickets WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?;
    match row {
        Some(r) => Ok(<ticket::Model as sea_orm::FromQueryResult>::from_query_result(&r, "")?),
        None => Err(Error::NotFound("ticket")),
    }
}

/// The API view of one ticket, with its SLA clocks.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<Ticket> {
    // One statement for the ticket and its clocks: reading a ticket is the API's hottest path,
    // and each statement costs a round trip to the driver's thread.
    let sql = format!(
        "SELECT t.*, {} FROM tickets t LEFT JOIN sla_timers s ON s.ticket_id = t.id \
         WHERE t.id = ? AND t.workspace_id = ? ORDER BY s.due_at",
        sla::CLOCK_COLUMNS
    );
    let rows = db::query_all(db, &sql, vec![id.into(), workspace_id.into()]).await?;
    let first = rows.first().ok_or(Error::NotFound("ticket"))?;
    let mut t = Ticket::try_from(<ticket::Model as sea_orm::FromQueryResult>::from_query_result(first, "")?)?;
    let mut clocks = Vec::with_capacity(rows.len());
    for r in &rows {
        clocks.extend(sla::clock_from_row(r)?);
    }
    t.sla = Some(clocks);
    Ok(t)
}

/// Checks and normalises tags: trimmed, lower-cased, unique, bounded.
///
/// # Errors
/// [`Error::Invalid`].
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() || t.chars().count() > MAX_TAG_CHARS || t.contains(',') {
            return Err(Error::invalid(
                "tags",
                format!("tag {t:?} must be 1-{MAX_TAG_CHARS} characters without commas"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("a ticket has at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// Filters and order of a ticket list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Tier key.
    pub tier: Option<String>,
    /// Team id.
    pub team_id: Option<i64>,
    /// Agent id, or `none` for unassigned.
    pub assignee: Option<String>,
    /// A tag the ticket carries.
    pub tag: Option<String>,
    /// Comma-separated priorities.
    pub priority: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Customer id.
    pub customer_id: Option<i64>,
    /// `created_at`, `-created_at` (default), `updated_at`, `-updated_at`.
    pub sort: Option<String>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1-200 (default 50).
    pub limit: Option<u64>,
}

/// A page of tickets.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The tickets.
    pub items: Vec<Ticket>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Lists tickets with filters, sorted, keyset-paginated (stable under inserts, and as fast on
/// page 1,000 as on page 1).
///
/// # Errors
/// [`Error::Invalid`] for an unknown filter value, sort key or a malformed cursor.
pub async fn list<C: ConnectionTrait>(db: &C, workspace_id: i64, q: &ListQuery) -> Result<Page> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::invalid("limit", "limit must be between 1 and 200"));
    }
    let (column, desc) = match q.sort.as_deref().unwrap_or("-created_at") {
        "created_at" => ("id", false),
        "-created_at" => ("id", true),
        "updated_at" => ("updated_at", false),
        "-updated_at" => ("updated_at", true),
        other => {
            return Err(Error::invalid(
                "sort",
                format!("cannot sort by {other:?}; use created_at, -created_at, updated_at or -updated_at"),
            ));
        }
    };
    // With a tag filter the tag index drives the query: it yields the tagged tickets in id
    // order, so a page stops after `limit` rows however many tickets carry the tag.
    let (mut sql, mut values, id_col): (String, Vec<Value>, &str) = match &q.tag {
        Some(tag) => (
            "SELECT t.* FROM ticket_tags g JOIN tickets t ON t.id = g.ticket_id \
             WHERE g.workspace_id = ? AND g.tag = ? AND t.workspace_id = ?"
                .into(),
            vec![workspace_id.into(), tag.trim().to_lowercase().into(), workspace_id.into()],
            "g.ticket_id",
        ),
        None => ("SELECT t.* FROM tickets t WHERE t.workspace_id = ?".into(), vec![workspace_id.into()], "t.id"),
    };
    let column = if column == "id" { id_col } else { "t.updated_at" };
    let in_list = |sql: &mut String, values: &mut Vec<Value>, col: &str, items: Vec<String>| {
        sql.push_str(&format!(" AND {col} IN ({})", vec!["?"; items.len()].join(", ")));
        values.extend(items.into_iter().map(Value::from));
    };
    if let Some(s) = &q.status {
        let items =
            s.split(',').map(|s| Status::parse(s.trim()).map(|s| s.as_str().to_owned())).collect::<Result<Vec<_>>>()?;
        in_list(&mut sql, &mut values, "t.status", items);
    }
    if let Some(p) = &q.priority {
        let items = p
            .split(',')
            .map(|s| Priority::parse(s.trim()).map(|s| s.as_str().to_owned()))
            .collect::<Result<Vec<_>>>()?;
        in_list(&mut sql, &mut values, "t.priority", items);
    }
    if let Some(key) = &q.tier {
        let tier = crate::tier::find_by_key(db, workspace_id, key).await?;
        sql.push_str(" AND t.tier_id = ?");
        values.push(tier.id.into());
    }
    if let Some(team) = q.team_id {
        sql.push_str(" AND t.team_id = ?");
        values.push(team.into());
    }
    match q.assignee.as_deref() {
        None => {}
        Some("none") => sql.push_str(" AND t.assignee_id IS NULL"),
        Some(a) => {
            let id: i64 = a
                .parse()
                .map_err(|_| Error::invalid("assignee", format!("assignee {a:?} must be an agent id or none")))?;
            sql.push_str(" AND t.assignee_id = ?");
            values.push(id.into());
        }
    }
    if let Some(ch) = &q.channel {
        sql.push_str(" AND t.channel = ?");
        values.push(ch.clone().into());
    }
    if let Some(c) = q.customer_id {
        sql.push_str(" AND t.customer_id = ?");
        values.push(c.into());
    }
    let cmp = if desc { "<" } else { ">" };
    if let Some(cursor) = &q.cursor {
        let bad = || Error::invalid("cursor", "cursor is malformed; pass next_cursor of the previous page unchanged");
        let (v, id) = cursor.split_once('.').ok_or_else(bad)?;
        let (v, id): (i64, i64) = (v.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?);
        if column == id_col {
            sql.push_str(&format!(" AND {id_col} {cmp} ?"));
            values.push(id.into());
        } else {
            sql.push_str(&format!(" AND ({column} {cmp} ? OR ({column} = ? AND {id_col} {cmp} ?))"));
            values.extend([v.into(), v.into(), id.into()]);
        }
    }
    let dir = if desc { "DESC" } else { "ASC" };
    if column == id_col {
        sql.push_str(&format!(" ORDER BY {id_col} {dir} LIMIT ?"));
    } else {
        sql.push_str(&format!(" ORDER BY {column} {dir}, {id_col} {dir} LIMIT ?"));
    }
    values.push(((limit + 1) as i64).into());
    let stmt = db::statement(db.get_database_backend(), &sql, values);
    let mut rows = ticket::Entity::find().from_raw_sql(stmt).all(db).await?;
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|t| format!("{}.{}", if column == id_col { t.id } else { t.updated_at }, t.id))
    } else {
        None
    };
    let items = rows.into_iter().map(Ticket::try_from).collect::<Result<_>>()?;
    Ok(Page { items, next_cursor })
}

/// Accepts `null` as "clear" and absence as "leave unchanged".
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes to a ticket; absent fields stay, `null` clears a nullable one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    /// New subject.
    pub subject: Option<String>,
    /// New status (transition rules apply).
    pub status: Option<Status>,
    /// New priority.
    pub priority: Option<Priority>,
    /// 1 or 2.
    pub level: Option<i32>,
    /// Team (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub team_id: Option<Option<i64>>,
    /// Assignee (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub assignee_id: Option<Option<i64>>,
    /// Category (`null` clears).
    #[serde(default, deserialize_with = "double_option")]
    pub category: Option<Option<String>>,
    /// Replaces all tags.
    pub tags: Option<Vec<String>>,
    /// Adds tags.
    pub add_tags: Option<Vec<String>>,
    /// Removes tags.
    pub remove_tags: Option<Vec<String>>,
    /// Replaces custom attributes (a JSON object).
    pub attributes: Option<Json>,
}

/// What a status change does besides the status: timestamps, reopen count, SLA clocks.
/// Shared by [`update`] and by a customer's reply that reopens a ticket.
pub(crate) async fn apply_status<C: ConnectionTrait>(
    db: &C,
    row: &mut ticket::ActiveModel,
    before: &ticket::Model,
    to: Status,
    now: i64,
    targets: &Targets,
) -> Result<()> {
    let from = Status::parse(&before.status)?;
    if from == to {
        return Ok(());
    }
    from.check(to)?;
    row.status = Set(to.as_str().to_owned());
    if from == Status::Pending {
        sla::resume(db, before.id, now, targets).await?;
        row.pending_since = Set(None);
    }
    match to {
        Status::Pending => {
            sla::pause(db, before.id, now).await?;
            row.pending_since = Set(Some(now));
        }
        Status::Resolved => {
            sla::stop_all(db, before.id).await?;
            row.resolved_at = Set(Some(now));
        }
        Status::Closed => {
            sla::stop_all(db, before.id).await?;
            row.closed_at = Set(Some(now));
            if before.resolved_at.is_none() {
                row.resolved_at = Set(Some(now));
            }
        }
        Status::Open if !from.is_active() => {
            // A reopen: the resolution clock starts again.
            row.reopen_count = Set(before.reopen_count + 1);
            row.resolved_at = Set(None);
            row.closed_at = Set(None);
            sla::restart(db, sla::NewTimer::new(before.workspace_id, before.id, Clock::Resolution, now, targets))
                .await?;
        }
        Status::Open | Status::New => {}
    }
    Ok(())
}

/// The tier targets of a ticket.
pub(crate) async fn targets_of<C: ConnectionTrait>(db: &C, t: &ticket::Model) -> Result<Targets> {
    Targets::of(&crate::tier::find(db, t.workspace_id, t.tier_id).await?)
}

async fn write_tags<C: ConnectionTrait>(db: &C, workspace_id: i64, ticket_id: i64, tags: &[String]) -> Result<()> {
    db::exec(db, "DELETE FROM ticket_tags WHERE ticket_id = ?", vec![ticket_id.into()]).await?;
    for t in tags {
        db::exec(
            db,
            "INSERT INTO ticket_tags (ticket_id, workspace_id, tag) VALUES (?, ?, ?)",
            vec![ticket_id.into(), workspace_id.into(), t.clone().into()],
        )
        .await?;
    }
    Ok(())
}

/// Changes a ticket in one transaction and records a `ticket.updated` event with the before and
/// after of every changed field.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`], [`Error::Transition`].
pub async fn update(
    core: &crate::Domain,
    workspace_id: i64,
    id: i64,
    actor: &str,
    patch: &TicketPatch,
) -> Result<Ticket> {
    let txn = db::begin_write(core.db()).await?;
    let events = update_in(&txn, core, workspace_id, id, actor, patch).await?;
    if events.is_empty() {
        drop(txn);
    } else {
        txn.commit().await?;
        core.bus().publish(events);
    }
    get(core.db(), workspace_id, id).await
}

/// The same change to several tickets in one transaction: all change, or (on the first
/// refusal, which names the ticket) none. Returns how many changed.
///
/// # Errors
/// As [`update`], the message prefixed with the ticket's number.
pub async fn update_many(
    core: &crate::Domain,
    workspace_id: i64,
    ids: &[i64],
    actor: &str,
    patch: &TicketPatch,
) -> Result<usize> {
    let txn = db::begin_write(core.db()).await?;
    let mut all = Vec::new();
    let mut changed = 0;
    for id in ids {
        let events = match update_in(&txn, core, workspace_id, *id, actor, patch).await {
            Ok(e) => e,
            Err(Error::NotFound(what)) => return Err(Error::NotFound(what)),
            Err(e @ (Error::Db(_) | Error::Internal(_) | Error::Io(_))) => return Err(e),
            Err(e) => {
                let number = find(&txn, workspace_id, *id).await.map(|t| t.number).unwrap_or(*id);
                return Err(Error::invalid("ticket", format!("ticket #{number}: {e}")));
            }
        };
        if !events.is_empty() {
            changed += 1;
        }
        all.extend(events);
    }
    txn.commit().await?;
    core.bus().publish(all);
    Ok(changed)
}

/// [`update`] inside the caller's transaction; returns the events to publish once it has
/// committed (none when nothing changed).
///
/// # Errors
/// As [`update`].
pub async fn update_in<C: ConnectionTrait>(
    txn: &C,
    core: &crate::Domain,
    workspace_id: i64,
    id: i64,
    actor: &str,
    patch: &TicketPatch,
) -> Result<Vec<event::Event>> {
    let before = find(txn, workspace_id, id).await?;
    let mut row: ticket::ActiveModel = before.clone().into();
    let mut changes = serde_json::Map::new();
    let now = crate::now_ms();
    if let Some(subject) = &patch.subject {
        let s = validate_subject(subject, core.limits().max_subject_chars)?;
        event::diff(&mut changes, "subject", json!(before.subject), json!(s));
        row.subject = Set(s);
    }
    if let Some(p) = patch.priority {
        event::diff(&mut changes, "priority", json!(before.priority), json!(p.as_str()));
        row.priority = Set(p.as_str().to_owned());
    }
    if let Some(level) = patch.level {
        if !(1..=2).contains(&level) {
            return Err(Error::invalid("level", "level must be 1 (front office) or 2 (back office)"));
        }
        event::diff(&mut changes, "level", json!(before.level), json!(level));
        row.level = Set(level);
    }
    if let Some(team) = patch.team_id {
        if let Some(t) = team {
            crate::agent::find_team(txn, workspace_id, t)
                .await
                .map_err(|_| Error::invalid("team_id", format!("team {t} does not exist")))?;
        }
        event::diff(&mut changes, "team_id", json!(before.team_id), json!(team));
        row.team_id = Set(team);
    }
    if let Some(assignee) = patch.assignee_id {
        if let Some(a) = assignee {
            crate::agent::find(txn, workspace_id, a)
                .await
                .map_err(|_| Error::invalid("assignee_id", format!("agent {a} does not exist")))?;
        }
        event::diff(&mut changes, "assignee_id", json!(before.assignee_id), json!(assignee));
        row.assignee_id = Set(assignee);
        // The new assignee hears of it, unless they took the ticket themselves.
        if let Some(a) = assignee
            && before.assignee_id != Some(a)
            && actor != format!("agent:{a}")
        {
            let kind = crate::survey::NotificationKind::Assigned;
            crate::survey::notify(txn, workspace_id, a, Some(id), kind, &before.subject, actor).await?;
        }
    }
    if let Some(category) = &patch.category {
        let c = category.as_ref().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
        event::diff(&mut changes, "category", json!(before.category), json!(c));
        row.category = Set(c);
    }
    let old_tags: Vec<String> = serde_json::from_str(&before.tags)?;
    let mut tags = match &patch.tags {
        Some(t) => normalize_tags(t)?,
        None => old_tags.clone(),
    };
    if let Some(add) = &patch.add_tags {
        for t in normalize_tags(add)? {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    if let Some(remove) = &patch.remove_tags {
        let remove = normalize_tags(remove)?;
        tags.retain(|t| !remove.contains(t));
    }
    let tags = normalize_tags(&tags)?;
    if tags != old_tags {
        event::diff(&mut changes, "tags", json!(old_tags), json!(tags));
        row.tags = Set(serde_json::to_string(&tags)?);
        write_tags(txn, workspace_id, id, &tags).await?;
    }
    if let Some(attrs) = &patch.attributes {
        if !attrs.is_object() {
            return Err(Error::invalid("attributes", "attributes must be a JSON object"));
        }
        event::diff(&mut changes, "attributes", serde_json::from_str(&before.attributes)?, attrs.clone());
        row.attributes = Set(attrs.to_string());
    }
    if let Some(to) = patch.status {
        let targets = targets_of(txn, &before).await?;
        apply_status(txn, &mut row, &before, to, now, &targets).await?;
        event::diff(&mut changes, "status", json!(before.status), json!(to.as_str()));
    }
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    row.updated_at = Set(now);
    row.update(txn).await?;
    if changes.contains_key("subject") {
        crate::search::remove(txn, workspace_id, "ticket", id).await?;
        crate::search::index(
            txn,
            workspace_id,
            "ticket",
            id,
            Some(id),
            patch.subject.as_deref().unwrap_or_default().trim(),
        )
        .await?;
    }
    let events = event::append(
        txn,
        workspace_id,
        vec![NewEvent {
            kind: "ticket.updated",
            actor: actor.to_owned(),
            ticket_id: Some(id),
            customer_id: Some(before.customer_id),
            changes: Json::Object(changes),
        }],
    )
    .await?;
    Ok(events)
}

/// Checks a subject line.
///
/// # Errors
/// [`Error::Invalid`] when empty or too long.
pub fn validate_subject(subject: &str, max_chars: usize) -> Result<String> {
    let s = subject.trim();
    if s.is_empty() {
        return Err(Error::invalid("subject", "subject must not be empty"));
    }
    if s.chars().count() > max_chars {
        return Err(Error::invalid("subject", format!("subject is longer than {max_chars} characters")));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_workflow() {
        use Status::*;
        for (from, to, ok) in [
            (New, Open, true),
            (Open, Pending, true),
            (Pending, Open, true),
            (Open, Resolved, true),
            (Resolved, Open, true),
            (Resolved, Closed, true),
            (Closed, Open, true),
            (Open, New, false),
            (Closed, Resolved, false),
            (Closed, Pending, false),
            (Resolved, Pending, false),
        ] {
            assert_eq!(from.check(to).is_ok(), ok, "{from:?} -> {to:?}");
        }
        let msg = Closed.check(Pending).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg, "cannot change status from closed to pending; allowed from closed: open");
    }

    #[test]
    fn tags_are_normalised_and_bounded() {
        assert_eq!(
            normalize_tags(&[" VIP ".into(), "vip".into(), "refund".into()]).ok(),
            Some(vec!["vip".to_owned(), "refund".to_owned()])
        );
        assert!(normalize_tags(&["".into()]).is_err());
        assert!(normalize_tags(&["a,b".into()]).is_err());
        let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        assert!(normalize_tags(&many).is_err());
    }
}
