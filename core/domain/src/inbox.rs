//! The agents' inbox: tickets as rows ready to show (customer, tier, assignee, the last
//! message's preview, the next SLA due time, unread), in the built-in views, filtered and
//! sorted; and how many tickets each view holds. Read-only; every query is confined to the
//! workspace.

use sea_orm::{ConnectionTrait, Value};
use serde::Serialize;

use crate::db;
use crate::error::{Error, Result};

/// Characters of the last message shown in a row.
const PREVIEW_CHARS: usize = 140;
/// Rows per page.
pub const PAGE_ROWS: u64 = 50;
/// "Due soon" means an SLA clock is due within this many milliseconds.
pub const DUE_SOON_MS: i64 = 3_600_000;

/// The built-in views. Every view but `Pending` shows active tickets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Assigned to me, not pending.
    Mine,
    /// Nobody's, not pending.
    Unassigned,
    /// Of the teams I belong to.
    Teams,
    /// New or open.
    Open,
    /// Waiting for the customer.
    Pending,
    /// An SLA clock due within the hour (not yet breached).
    Due,
    /// An SLA clock breached.
    Breached,
}

impl View {
    /// Every view, in the order the navigation shows them.
    pub const ALL: [View; 7] =
        [View::Mine, View::Unassigned, View::Teams, View::Open, View::Pending, View::Due, View::Breached];

    /// The name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Mine => "mine",
            View::Unassigned => "unassigned",
            View::Teams => "teams",
            View::Open => "open",
            View::Pending => "pending",
            View::Due => "due",
            View::Breached => "breached",
        }
    }

    /// Parses a view name.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the views.
    pub fn parse(s: &str) -> Result<Self> {
        View::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            Error::invalid(
                "view",
                format!("unknown view {s:?}; use mine, unassigned, teams, open, pending, due or breached"),
            )
        })
    }

    /// The SQL condition on `t` (tickets) for this view; `?` are the agent id where named.
    fn condition(self, agent_id: i64, now: i64) -> (&'static str, Vec<Value>) {
        const ACTIVE: &str = "t.status IN ('new', 'open')";
        match self {
            View::Mine => ("t.status IN ('new', 'open') AND t.assignee_id = ?", vec![agent_id.into()]),
            View::Unassigned => ("t.status IN ('new', 'open') AND t.assignee_id IS NULL", vec![]),
            View::Teams => (
                "t.status IN ('new', 'open') AND t.team_id IN (SELECT team_id FROM team_members WHERE agent_id = ?)",
                vec![agent_id.into()],
            ),
            View::Open => (ACTIVE, vec![]),
            View::Pending => ("t.status = 'pending'", vec![]),
            View::Due => (
                "t.status IN ('new', 'open') AND EXISTS (SELECT 1 FROM sla_timers s WHERE s.ticket_id = t.id \
                 AND s.paused_at IS NULL AND s.breached_at IS NULL AND s.due_at <= ?)",
                vec![(now + DUE_SOON_MS).into()],
            ),
            View::Breached => (
                "t.status IN ('new', 'open', 'pending') AND EXISTS (SELECT 1 FROM sla_timers s WHERE s.ticket_id = t.id \
                 AND s.breached_at IS NOT NULL)",
                vec![],
            ),
        }
    }
}

/// The order of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// The next SLA due time first; tickets without a running clock last (the default).
    SlaDue,
    /// Newest ticket first.
    Newest,
    /// The customer's latest message first.
    LastCustomerMessage,
}

impl Sort {
    /// The name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::SlaDue => "sla",
            Sort::Newest => "newest",
            Sort::LastCustomerMessage => "customer",
        }
    }

    /// Parses a sort name.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sla" => Ok(Sort::SlaDue),
            "newest" => Ok(Sort::Newest),
            "customer" => Ok(Sort::LastCustomerMessage),
            other => Err(Error::invalid("sort", format!("cannot sort by {other:?}; use sla, newest or customer"))),
        }
    }
}

/// What the inbox shows.
#[derive(Debug, Clone)]
pub struct Query {
    /// The view.
    pub view: View,
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this tier (key).
    pub tier: Option<String>,
    /// Only tickets with this tag.
    pub tag: Option<String>,
    /// Only this category.
    pub category: Option<String>,
    /// Only this level (1 front office, 2 back office).
    pub level: Option<i32>,
    /// Order.
    pub sort: Sort,
    /// Full-text search: when set, the rows are the search's hits (view filters still apply).
    pub search: Option<String>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            view: View::Open,
            channel: None,
            tier: None,
            tag: None,
            category: None,
            level: None,
            sort: Sort::SlaDue,
            search: None,
        }
    }
}

/// One row of the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Ticket id.
    pub id: i64,
    /// Ticket number.
    pub number: i64,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// 1 or 2.
    pub level: i32,
    /// Channel of origin.
    pub channel: String,
    /// Customer.
    pub customer_id: i64,
    /// The customer's name.
    pub customer: String,
    /// Tier key.
    pub tier_key: String,
    /// Tier name.
    pub tier: String,
    /// The assignee's name.
    pub assignee: Option<String>,
    /// The start of the last message that is no internal note.
    pub preview: String,
    /// The earliest due time of a running (unpaused) SLA clock, Unix ms.
    pub due_at: Option<i64>,
    /// Whether a clock is breached.
    pub breached: bool,
    /// A customer message the agent has not seen (they have not opened the ticket since).
    pub unread: bool,
    /// Created, Unix ms.
    pub created_at: i64,
}

/// The rows of a view (at most [`PAGE_ROWS`]).
///
/// Two steps, so that a view of hundreds of thousands of open tickets costs what its page
/// costs: first the page's ticket ids in order, walking an index in the sort's order (ticket
/// ids for newest first, running SLA clocks by due time, customer messages newest first);
/// then the details (customer, tier, preview, clocks, unread) of those ids only.
///
/// # Errors
/// [`Error::Invalid`] for an unknown tier; database errors.
pub async fn rows<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, q: &Query) -> Result<Vec<Row>> {
    let Some(scope) = Scope::of(db, workspace_id, agent_id, q).await? else { return Ok(Vec::new()) };
    let ids = match q.sort {
        Sort::Newest => scope.newest(db, &[], PAGE_ROWS).await?,
        // A view of fewer than SMALL tickets is sorted whole (each ticket's key is one index
        // probe); a larger one is walked in the key's order, which finds a page quickly
        // because the view is dense. Either way the cost is bounded, whatever the planner's
        // statistics say: each walk reads one table, probing tickets by primary key.
        sort if scope.size < SMALL => scope.sorted(db, sort).await?,
        Sort::SlaDue => {
            // A ticket has at most three clocks, so three times a page of clocks names at
            // least a page of tickets, unless there are fewer.
            let walk = "SELECT s.ticket_id AS id FROM sla_timers s WHERE s.paused_at IS NULL AND s.breached_at IS NULL \
                        AND EXISTS (SELECT 1 FROM tickets t WHERE t.id = s.ticket_id AND {where}) ORDER BY s.due_at, s.ticket_id";
            scope.walk(db, walk, 3 * PAGE_ROWS).await?
        }
        Sort::LastCustomerMessage => {
            let walk = "SELECT m.ticket_id AS id FROM messages m WHERE m.direction = 'inbound' \
                        AND EXISTS (SELECT 1 FROM tickets t WHERE t.id = m.ticket_id AND {where}) ORDER BY m.id DESC";
            scope.walk(db, walk, 4 * PAGE_ROWS).await?
        }
    };
    details(db, agent_id, &ids).await
}

/// Below this many tickets a view is sorted whole rather than walked.
const SMALL: i64 = 1000;

/// The tickets a view and its filters select, as SQL on `t` (tickets).
struct Scope {
    sql: String,
    values: Vec<Value>,
    /// How many tickets it holds, counted to [`SMALL`] at most.
    size: i64,
}

impl Scope {
    /// `None` when a search found nothing (the view is empty).
    async fn of<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, q: &Query) -> Result<Option<Self>> {
        let (cond, mut values) = q.view.condition(agent_id, crate::now_ms());
        let mut sql = format!("t.workspace_id = ? AND {cond}");
        let mut all: Vec<Value> = vec![workspace_id.into()];
        all.append(&mut values);
        filters(db, workspace_id, q, &mut sql, &mut all).await?;
        if let Some(text) = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            let hits = crate::search::search(db, workspace_id, text, 200).await?;
            let mut ids: Vec<i64> = hits.iter().filter_map(|h| h.ticket_id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(None);
            }
            sql.push_str(&format!(" AND t.id IN ({})", vec!["?"; ids.len()].join(", ")));
            all.extend(ids.into_iter().map(Value::from));
        }
        let mut scope = Scope { sql, values: all, size: 0 };
        scope.size = scope.count(db).await?;
        Ok(Some(scope))
    }

    /// How many tickets the scope holds, counting to [`SMALL`] at most.
    async fn count<C: ConnectionTrait>(&self, db: &C) -> Result<i64> {
        let mut values = self.values.clone();
        values.push(SMALL.into());
        let sql = format!("SELECT COUNT(*) AS n FROM (SELECT 1 FROM tickets t WHERE {} LIMIT ?) x", self.sql);
        match db::query_one(db, &sql, values).await? {
            Some(r) => db::col(&r, "n"),
            None => Ok(0),
        }
    }

    /// A page of a small scope in `sort`'s order: every ticket with its key, sorted here.
    async fn sorted<C: ConnectionTrait>(&self, db: &C, sort: Sort) -> Result<Vec<i64>> {
        let key = match sort {
            Sort::LastCustomerMessage => {
                "(SELECT MAX(m.id) FROM messages m WHERE m.ticket_id = t.id AND m.direction = 'inbound')"
            }
            _ => {
                "(SELECT MIN(s.due_at) FROM sla_timers s WHERE s.ticket_id = t.id AND s.paused_at IS NULL AND s.breached_at IS NULL)"
            }
        };
        let sql = format!("SELECT t.id, {key} AS k FROM tickets t WHERE {}", self.sql);
        let mut keyed: Vec<(i64, Option<i64>)> = db::query_all(db, &sql, self.values.clone())
            .await?
            .iter()
            .map(|r| Ok((db::col(r, "id")?, db::col(r, "k")?)))
            .collect::<Result<_>>()?;
        match sort {
            Sort::LastCustomerMessage => {
                keyed.sort_by_key(|&(id, k)| (k.is_none(), std::cmp::Reverse(k), std::cmp::Reverse(id)))
            }
            _ => keyed.sort_by_key(|&(id, k)| (k.is_none(), k, id)),
        }
        Ok(keyed.into_iter().take(PAGE_ROWS as usize).map(|(id, _)| id).collect())
    }

    /// The newest `limit` tickets of the scope, leaving out `except`.
    async fn newest<C: ConnectionTrait>(&self, db: &C, except: &[i64], limit: u64) -> Result<Vec<i64>> {
        // A small scope is read through the ticket indexes; a large one by walking the
        // tickets from the newest, probing each (it is dense, so a page comes quickly).
        let (mut sql, id) = if self.size < SMALL {
            (format!("SELECT t.id FROM tickets t WHERE {}", self.sql), "t.id")
        } else {
            let probe = format!("EXISTS (SELECT 1 FROM tickets t WHERE t.id = x.id AND {})", self.sql);
            (format!("SELECT x.id FROM tickets x WHERE {probe}"), "x.id")
        };
        let mut values = self.values.clone();
        if !except.is_empty() {
            sql.push_str(&format!(" AND {id} NOT IN ({})", vec!["?"; except.len()].join(", ")));
            values.extend(except.iter().map(|i| Value::from(*i)));
        }
        sql.push_str(&format!(" ORDER BY {id} DESC LIMIT ?"));
        values.push((limit as i64).into());
        db::query_all(db, &sql, values).await?.iter().map(|r| db::col(r, "id")).collect()
    }

    /// Walks `walk` (rows naming a ticket `id` in the sort's order, `{where}` standing for the
    /// scope) until a page of distinct tickets is found, starting with `first` rows and
    /// doubling; when the walk runs out, the page is filled with the newest of the tickets it
    /// does not name (those without a running clock, or without a customer message).
    async fn walk<C: ConnectionTrait>(&self, db: &C, walk: &str, first: u64) -> Result<Vec<i64>> {
        let sql = format!("{} LIMIT ?", walk.replace("{where}", &self.sql));
        let mut limit = first;
        loop {
            let mut values = self.values.clone();
            values.push((limit as i64).into());
            let found = db::query_all(db, &sql, values).await?;
            let mut ids: Vec<i64> = Vec::with_capacity(PAGE_ROWS as usize);
            for r in &found {
                let id: i64 = db::col(r, "id")?;
                if !ids.contains(&id) {
                    ids.push(id);
                    if ids.len() as u64 == PAGE_ROWS {
                        return Ok(ids);
                    }
                }
            }
            if (found.len() as u64) < limit {
                let more = self.newest(db, &ids, PAGE_ROWS - ids.len() as u64).await?;
                ids.extend(more);
                return Ok(ids);
            }
            limit *= 2;
        }
    }
}

/// The rows of the tickets `ids`, in that order.
async fn details<C: ConnectionTrait>(db: &C, agent_id: i64, ids: &[i64]) -> Result<Vec<Row>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT t.id, t.number, t.subject, t.status, t.priority, t.level, t.channel, t.customer_id, t.created_at, \
         c.name AS customer, r.key AS tier_key, r.name AS tier, a.name AS assignee, \
         (SELECT MIN(s.due_at) FROM sla_timers s WHERE s.ticket_id = t.id AND s.paused_at IS NULL AND s.breached_at IS NULL) AS due_at, \
         (SELECT COUNT(*) FROM sla_timers s WHERE s.ticket_id = t.id AND s.breached_at IS NOT NULL) AS breaches, \
         (SELECT m.body_text FROM messages m WHERE m.ticket_id = t.id AND m.direction <> 'internal' ORDER BY m.id DESC LIMIT 1) AS preview, \
         (SELECT MAX(m.id) FROM messages m WHERE m.ticket_id = t.id AND m.direction = 'inbound') AS last_in, \
         (SELECT rd.message_id FROM ticket_reads rd WHERE rd.ticket_id = t.id AND rd.agent_id = ?) AS seen \
         FROM tickets t JOIN customers c ON c.id = t.customer_id JOIN tiers r ON r.id = t.tier_id \
         LEFT JOIN agents a ON a.id = t.assignee_id WHERE t.id IN ({})",
        vec!["?"; ids.len()].join(", ")
    );
    let mut values: Vec<Value> = vec![agent_id.into()];
    values.extend(ids.iter().map(|i| Value::from(*i)));
    let found = db::query_all(db, &sql, values).await?;
    let mut rows = found
        .iter()
        .map(|r| {
            let preview: Option<String> = db::col(r, "preview")?;
            let last_in: Option<i64> = db::col(r, "last_in")?;
            let seen: Option<i64> = db::col(r, "seen")?;
            Ok(Row {
                id: db::col(r, "id")?,
                number: db::col(r, "number")?,
                subject: db::col(r, "subject")?,
                status: db::col(r, "status")?,
                priority: db::col(r, "priority")?,
                level: db::col(r, "level")?,
                channel: db::col(r, "channel")?,
                customer_id: db::col(r, "customer_id")?,
                customer: db::col(r, "customer")?,
                tier_key: db::col(r, "tier_key")?,
                tier: db::col(r, "tier")?,
                assignee: db::col(r, "assignee")?,
                preview: shorten(preview.as_deref().unwrap_or(""), PREVIEW_CHARS),
                due_at: db::col(r, "due_at")?,
                breached: db::col::<i64>(r, "breaches")? > 0,
                unread: last_in.is_some_and(|m| seen.is_none_or(|s| s < m)),
                created_at: db::col(r, "created_at")?,
            })
        })
        .collect::<Result<Vec<Row>>>()?;
    rows.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    Ok(rows)
}

async fn filters<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    q: &Query,
    sql: &mut String,
    values: &mut Vec<Value>,
) -> Result<()> {
    if let Some(ch) = q.channel.as_deref().filter(|s| !s.is_empty()) {
        sql.push_str(" AND t.channel = ?");
        values.push(ch.into());
    }
    if let Some(key) = q.tier.as_deref().filter(|s| !s.is_empty()) {
        let tier = crate::tier::find_by_key(db, workspace_id, key).await?;
        sql.push_str(" AND t.tier_id = ?");
        values.push(tier.id.into());
    }
    if let Some(tag) = q.tag.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        sql.push_str(" AND t.id IN (SELECT g.ticket_id FROM ticket_tags g WHERE g.workspace_id = ? AND g.tag = ?)");
        values.push(workspace_id.into());
        values.push(tag.to_lowercase().into());
    }
    if let Some(cat) = q.category.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        sql.push_str(" AND t.category = ?");
        values.push(cat.into());
    }
    if let Some(level) = q.level {
        sql.push_str(" AND t.level = ?");
        values.push(level.into());
    }
    Ok(())
}

/// Counts stop here: a view that holds more shows "999+". An exact count of hundreds of
/// thousands of open tickets would cost more than the page it sits on, and tells an agent no
/// more than "a lot".
pub const COUNT_CAP: i64 = 1000;

/// How many tickets each view holds (at most [`COUNT_CAP`]), in [`View::ALL`]'s order. Each
/// count reads at most [`COUNT_CAP`] index entries.
///
/// # Errors
/// Database errors.
pub async fn counts<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64) -> Result<Vec<(View, i64)>> {
    let now = crate::now_ms();
    let mut out = Vec::with_capacity(View::ALL.len());
    for v in View::ALL {
        // The clock views start from the clocks (few are due or breached), the others from the
        // tickets' indexes.
        let (inner, mut values): (String, Vec<Value>) = match v {
            View::Due => (
                "SELECT DISTINCT s.ticket_id FROM sla_timers s \
                 WHERE s.workspace_id = ? AND s.breached_at IS NULL AND s.paused_at IS NULL AND s.due_at <= ? \
                 AND EXISTS (SELECT 1 FROM tickets t WHERE t.id = s.ticket_id AND t.status IN ('new', 'open'))"
                    .into(),
                vec![workspace_id.into(), (now + DUE_SOON_MS).into()],
            ),
            View::Breached => (
                "SELECT DISTINCT s.ticket_id FROM sla_timers s WHERE s.workspace_id = ? AND s.breached_at IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM tickets t WHERE t.id = s.ticket_id AND t.status IN ('new', 'open', 'pending'))"
                    .into(),
                vec![workspace_id.into()],
            ),
            other => {
                let (cond, vals) = other.condition(agent_id, now);
                let mut values: Vec<Value> = vec![workspace_id.into()];
                values.extend(vals);
                (format!("SELECT 1 FROM tickets t WHERE t.workspace_id = ? AND {cond}"), values)
            }
        };
        values.push(COUNT_CAP.into());
        let row = db::query_one(db, &format!("SELECT COUNT(*) AS n FROM ({inner} LIMIT ?) x"), values).await?;
        let n = match &row {
            Some(r) => db::col::<i64>(r, "n")?,
            None => 0,
        };
        out.push((v, n));
    }
    Ok(out)
}

/// A count as shown: the number, or "999+" at the cap.
pub fn count_text(n: i64) -> String {
    if n >= COUNT_CAP { format!("{}+", COUNT_CAP - 1) } else { n.to_string() }
}

/// The channels tickets of the workspace come from, for the filter: the installed channels'
/// plugins and the API.
///
/// # Errors
/// Database errors.
pub async fn channels<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<String>> {
    let rows = db::query_all(
        db,
        "SELECT DISTINCT plugin_key FROM channels WHERE workspace_id = ? ORDER BY plugin_key",
        vec![workspace_id.into()],
    )
    .await?;
    let mut out = vec!["api".to_owned()];
    for r in &rows {
        let key: String = db::col(r, "plugin_key")?;
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out.sort();
    Ok(out)
}

/// `text` cut to `max` characters on one line, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_and_sorts_round_trip_through_their_names() {
        for v in View::ALL {
            assert_eq!(View::parse(v.as_str()).expect("view"), v);
        }
        assert!(View::parse("everything").expect_err("unknown").to_string().contains("use mine"));
        for s in [Sort::SlaDue, Sort::Newest, Sort::LastCustomerMessage] {
            assert_eq!(Sort::parse(s.as_str()).expect("sort"), s);
        }
    }

    #[test]
    fn counts_at_the_cap_read_999_plus() {
        assert_eq!(count_text(0), "0");
        assert_eq!(count_text(COUNT_CAP - 1), "999");
        assert_eq!(count_text(COUNT_CAP), "999+");
    }

    #[test]
    fn a_preview_is_one_line_and_cut_with_an_ellipsis() {
        assert_eq!(shorten("Hallo\n\n  Welt ", 20), "Hallo Welt");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
