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
/// # Errors
/// [`Error::Invalid`] for an unknown tier; database errors.
pub async fn rows<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, q: &Query) -> Result<Vec<Row>> {
    let now = crate::now_ms();
    let (cond, mut values) = q.view.condition(agent_id, now);
    let mut sql = format!(
        "SELECT t.id, t.number, t.subject, t.status, t.priority, t.level, t.channel, t.customer_id, t.created_at, \
         c.name AS customer, r.key AS tier_key, r.name AS tier, a.name AS assignee, \
         (SELECT MIN(s.due_at) FROM sla_timers s WHERE s.ticket_id = t.id AND s.paused_at IS NULL AND s.breached_at IS NULL) AS due_at, \
         (SELECT COUNT(*) FROM sla_timers s WHERE s.ticket_id = t.id AND s.breached_at IS NOT NULL) AS breaches, \
         (SELECT m.body_text FROM messages m WHERE m.ticket_id = t.id AND m.direction <> 'internal' ORDER BY m.id DESC LIMIT 1) AS preview, \
         (SELECT MAX(m.id) FROM messages m WHERE m.ticket_id = t.id AND m.direction = 'inbound') AS last_in, \
         (SELECT rd.message_id FROM ticket_reads rd WHERE rd.ticket_id = t.id AND rd.agent_id = ?) AS seen \
         FROM tickets t JOIN customers c ON c.id = t.customer_id JOIN tiers r ON r.id = t.tier_id \
         LEFT JOIN agents a ON a.id = t.assignee_id WHERE t.workspace_id = ? AND {cond}"
    );
    let mut all: Vec<Value> = vec![agent_id.into(), workspace_id.into()];
    all.append(&mut values);
    filters(db, workspace_id, q, &mut sql, &mut all).await?;
    if let Some(text) = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let hits = crate::search::search(db, workspace_id, text, 200).await?;
        let ids: Vec<i64> = hits.iter().filter_map(|h| h.ticket_id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(&format!(" AND t.id IN ({})", vec!["?"; ids.len()].join(", ")));
        all.extend(ids.into_iter().map(Value::from));
    }
    // The computed orders wrap the query, because PostgreSQL does not let an ORDER BY
    // expression name an output column; newest-first stays on the index.
    let mut sql = match q.sort {
        Sort::Newest => format!("{sql} ORDER BY t.id DESC"),
        Sort::SlaDue => {
            format!("SELECT * FROM ({sql}) x ORDER BY CASE WHEN x.due_at IS NULL THEN 1 ELSE 0 END, x.due_at, x.id")
        }
        Sort::LastCustomerMessage => format!(
            "SELECT * FROM ({sql}) x ORDER BY CASE WHEN x.last_in IS NULL THEN 1 ELSE 0 END, x.last_in DESC, x.id DESC"
        ),
    };
    sql.push_str(" LIMIT ?");
    all.push((PAGE_ROWS as i64).into());
    let found = db::query_all(db, &sql, all).await?;
    found
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
        .collect()
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

/// How many tickets each view holds, in [`View::ALL`]'s order.
///
/// # Errors
/// Database errors.
pub async fn counts<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64) -> Result<Vec<(View, i64)>> {
    let now = crate::now_ms();
    // One pass over the workspace's active tickets (the status index bounds it), one sum per view.
    let mut sums = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for v in View::ALL {
        let (cond, mut vals) = v.condition(agent_id, now);
        sums.push(format!("SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS {}", v.as_str()));
        values.append(&mut vals);
    }
    values.push(workspace_id.into());
    let sql = format!(
        "SELECT {} FROM tickets t WHERE t.workspace_id = ? AND t.status IN ('new', 'open', 'pending')",
        sums.join(", ")
    );
    let row = db::query_one(db, &sql, values).await?;
    View::ALL
        .into_iter()
        .map(|v| {
            let n = match &row {
                Some(r) => db::col::<Option<i64>>(r, v.as_str())?.unwrap_or(0),
                None => 0,
            };
            Ok((v, n))
        })
        .collect()
}

/// The channels that have tickets in the workspace, for the filter.
///
/// # Errors
/// Database errors.
pub async fn channels<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<String>> {
    let rows = db::query_all(
        db,
        "SELECT DISTINCT channel FROM tickets WHERE workspace_id = ? ORDER BY channel",
        vec![workspace_id.into()],
    )
    .await?;
    rows.iter().map(|r| db::col(r, "channel")).collect()
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
    fn a_preview_is_one_line_and_cut_with_an_ellipsis() {
        assert_eq!(shorten("Hallo\n\n  Welt ", 20), "Hallo Welt");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
