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
            // The clocks are read by ticket and tested inside the aggregate (see `details`).
            View::Due => (
                "t.status IN ('new', 'open') AND (SELECT MIN(CASE WHEN s.paused_at IS NULL AND s.breached_at IS NULL \
                 THEN s.due_at END) FROM sla_timers s WHERE s.ticket_id = t.id) <= ?",
                vec![(now + DUE_SOON_MS).into()],
            ),
            View::Breached => (
                "t.status IN ('new', 'open', 'pending') AND (SELECT COUNT(s.breached_at) FROM sla_timers s \
                 WHERE s.ticket_id = t.id) > 0",
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
/// costs: first the page's ticket ids in order, then the details (customer, tier, preview,
/// clocks, unread) of those ids only.
///
/// The first step never leaves the plan to the database's statistics (SQLite keeps none
/// unless told to, and then guesses that an equality on an indexed column is selective):
/// - a view of fewer than [`SMALL`] tickets is read through the ticket indexes and sorted
///   whole;
/// - a larger one is *walked*: a one-table query reads candidates in the sort's order (ticket
///   ids newest first, running clocks by due time, customer messages newest first), a
///   primary-key lookup fetches those tickets, and the view's test runs here, until a page is
///   full; tickets the walk does not name (no running clock, no customer message) follow,
///   newest first;
/// - the clock views (due within the hour, breached) start from their clocks, which are few
///   next to the tickets, and are sorted whole.
///
/// # Errors
/// [`Error::Invalid`] for an unknown tier; database errors.
pub async fn rows<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, q: &Query) -> Result<Vec<Row>> {
    let Some(scope) = Scope::of(db, workspace_id, agent_id, q).await? else { return Ok(Vec::new()) };
    // Pending tickets' clocks are paused: by SLA due they come newest first, as every ticket
    // without a running clock does.
    let sort = if q.view == View::Pending && q.sort == Sort::SlaDue { Sort::Newest } else { q.sort };
    let ids = match q.view {
        View::Due | View::Breached => scope.by_clocks(db, sort).await?,
        _ if scope.size < SMALL => scope.sorted(db, sort).await?,
        _ => {
            let mut walk = Walk::new(&scope);
            match sort {
                Sort::Newest => {}
                Sort::SlaDue => walk.run(db, Driver::RunningClocks { until: None }).await?,
                Sort::LastCustomerMessage => walk.run(db, Driver::CustomerMessages).await?,
            }
            walk.run(db, Driver::Tickets).await?;
            walk.page
        }
    };
    details(db, agent_id, &ids).await
}

/// Below this many tickets a view is sorted whole rather than walked.
const SMALL: i64 = 1000;
/// Candidates read by the first step of a walk (twice a page: a dense view is done).
const FIRST_BATCH: i64 = 2 * PAGE_ROWS as i64;
/// Candidates read per step of a walk at most (each step doubles, up to this).
const BATCH: i64 = 500;
/// Clocks read at most for a clock view; beyond, its page follows the clocks' own order.
const CLOCK_CAP: i64 = 2000;

/// The tickets a view and its filters select: as SQL on `t` (tickets) for index-driven reads,
/// and as a test on one ticket for walks.
struct Scope {
    sql: String,
    values: Vec<Value>,
    /// How many tickets it holds, counted to [`SMALL`] at most (not counted for the clock
    /// views).
    size: i64,
    workspace_id: i64,
    agent_id: i64,
    view: View,
    /// The agent's teams (for [`View::Teams`]).
    teams: Vec<i64>,
    channel: Option<String>,
    tier_id: Option<i64>,
    tag: Option<String>,
    category: Option<String>,
    level: Option<i32>,
    /// A search's hits, sorted.
    hits: Option<Vec<i64>>,
}

/// What the test of a walk looks at of one ticket.
struct Probe {
    workspace_id: i64,
    status: String,
    assignee_id: Option<i64>,
    team_id: Option<i64>,
    channel: String,
    tier_id: i64,
    category: Option<String>,
    level: i32,
    tagged: bool,
}

impl Scope {
    /// `None` when a search found nothing (the view is empty).
    async fn of<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, q: &Query) -> Result<Option<Self>> {
        let (cond, mut values) = q.view.condition(agent_id, crate::now_ms());
        let mut sql = format!("t.workspace_id = ? AND {cond}");
        let mut all: Vec<Value> = vec![workspace_id.into()];
        all.append(&mut values);
        let tier_id = filters(db, workspace_id, q, &mut sql, &mut all).await?;
        let mut hits = None;
        if let Some(text) = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            let found = crate::search::search(db, workspace_id, text, 200).await?;
            let mut ids: Vec<i64> = found.iter().filter_map(|h| h.ticket_id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(None);
            }
            sql.push_str(&format!(" AND t.id IN ({})", vec!["?"; ids.len()].join(", ")));
            all.extend(ids.iter().map(|i| Value::from(*i)));
            hits = Some(ids);
        }
        let teams = if q.view == View::Teams {
            db::query_all(db, "SELECT team_id FROM team_members WHERE agent_id = ?", vec![agent_id.into()])
                .await?
                .iter()
                .map(|r| db::col(r, "team_id"))
                .collect::<Result<Vec<i64>>>()?
        } else {
            Vec::new()
        };
        let clean = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let mut scope = Scope {
            sql,
            values: all,
            size: 0,
            workspace_id,
            agent_id,
            view: q.view,
            teams,
            channel: clean(&q.channel),
            tier_id,
            tag: clean(&q.tag).map(|t| t.to_lowercase()),
            category: clean(&q.category),
            level: q.level,
            hits,
        };
        if !matches!(q.view, View::Due | View::Breached) {
            scope.size = scope.count(db).await?;
        }
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

    /// The view's test on one ticket (the clock views' clocks are checked by their driver).
    fn admits(&self, id: i64, p: &Probe) -> bool {
        let active = matches!(p.status.as_str(), "new" | "open");
        let in_view = match self.view {
            View::Mine => active && p.assignee_id == Some(self.agent_id),
            View::Unassigned => active && p.assignee_id.is_none(),
            View::Teams => active && p.team_id.is_some_and(|t| self.teams.contains(&t)),
            View::Open | View::Due => active,
            View::Pending => p.status == "pending",
            View::Breached => active || p.status == "pending",
        };
        in_view
            && p.workspace_id == self.workspace_id
            && self.channel.as_ref().is_none_or(|c| *c == p.channel)
            && self.tier_id.is_none_or(|t| t == p.tier_id)
            && self.category.as_ref().is_none_or(|c| Some(c) == p.category.as_ref())
            && self.level.is_none_or(|l| l == p.level)
            && (self.tag.is_none() || p.tagged)
            && self.hits.as_ref().is_none_or(|h| h.binary_search(&id).is_ok())
    }

    /// Of `ids`, those in the scope, in the same order. One primary-key read of the tickets
    /// (and of their tags, when a tag is asked for).
    async fn admitted<C: ConnectionTrait>(&self, db: &C, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = vec!["?"; ids.len()].join(", ");
        let values: Vec<Value> = ids.iter().map(|i| Value::from(*i)).collect();
        let rows = db::query_all(
            db,
            &format!(
                "SELECT id, workspace_id, status, assignee_id, team_id, channel, tier_id, category, level \
                 FROM tickets WHERE id IN ({list})"
            ),
            values.clone(),
        )
        .await?;
        let tagged: Vec<i64> = match &self.tag {
            Some(tag) => {
                let mut v = values;
                v.push(tag.clone().into());
                db::query_all(
                    db,
                    &format!("SELECT ticket_id FROM ticket_tags WHERE ticket_id IN ({list}) AND tag = ?"),
                    v,
                )
                .await?
                .iter()
                .map(|r| db::col(r, "ticket_id"))
                .collect::<Result<_>>()?
            }
            None => Vec::new(),
        };
        let mut ok = std::collections::HashSet::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = db::col(r, "id")?;
            let probe = Probe {
                workspace_id: db::col(r, "workspace_id")?,
                status: db::col(r, "status")?,
                assignee_id: db::col(r, "assignee_id")?,
                team_id: db::col(r, "team_id")?,
                channel: db::col(r, "channel")?,
                tier_id: db::col(r, "tier_id")?,
                category: db::col(r, "category")?,
                level: db::col(r, "level")?,
                tagged: tagged.contains(&id),
            };
            if self.admits(id, &probe) {
                ok.insert(id);
            }
        }
        Ok(ids.iter().copied().filter(|i| ok.contains(i)).collect())
    }

    /// A page of a small scope in `sort`'s order: every ticket with its key, sorted here.
    async fn sorted<C: ConnectionTrait>(&self, db: &C, sort: Sort) -> Result<Vec<i64>> {
        let key = match sort {
            Sort::LastCustomerMessage => {
                "(SELECT MAX(m.id) FROM messages m WHERE m.ticket_id = t.id AND m.direction = 'inbound')"
            }
            _ => {
                "(SELECT MIN(CASE WHEN s.paused_at IS NULL AND s.breached_at IS NULL THEN s.due_at END) \
                 FROM sla_timers s WHERE s.ticket_id = t.id)"
            }
        };
        let sql = format!("SELECT t.id, {key} AS k FROM tickets t WHERE {}", self.sql);
        let keyed: Vec<(i64, Option<i64>)> = db::query_all(db, &sql, self.values.clone())
            .await?
            .iter()
            .map(|r| Ok((db::col(r, "id")?, db::col(r, "k")?)))
            .collect::<Result<_>>()?;
        Ok(page_in_order(keyed, sort))
    }

    /// A page of a clock view: the tickets its clocks name (running and due within the hour,
    /// or breached), tested, keyed and sorted here. Past [`CLOCK_CAP`] clocks (a backlog) the
    /// view is walked in the clocks' own order instead: the earliest due, or the longest
    /// breached, first.
    async fn by_clocks<C: ConnectionTrait>(&self, db: &C, sort: Sort) -> Result<Vec<i64>> {
        let driver = if self.view == View::Due {
            Driver::RunningClocks { until: Some(crate::now_ms() + DUE_SOON_MS) }
        } else {
            Driver::BreachedClocks
        };
        if self.view == View::Due && sort == Sort::SlaDue {
            // The clocks' order is the sort's: a ticket first named by the walk is named by its
            // soonest running clock.
            let mut walk = Walk::new(self);
            walk.run(db, driver).await?;
            return Ok(walk.page);
        }
        let (sql, mut values) = driver.query(i64::MIN);
        values.push(CLOCK_CAP.into());
        let clocks = db::query_all(db, sql, values).await?;
        if clocks.len() as i64 >= CLOCK_CAP {
            let mut walk = Walk::new(self);
            walk.run(db, driver).await?;
            return Ok(walk.page);
        }
        let mut named: Vec<i64> = Vec::with_capacity(clocks.len());
        let mut seen = std::collections::HashSet::with_capacity(clocks.len());
        for r in &clocks {
            let id: i64 = db::col(r, "t")?;
            if seen.insert(id) {
                named.push(id);
            }
        }
        let mut ids = Vec::with_capacity(named.len());
        for chunk in named.chunks(BATCH as usize) {
            ids.extend(self.admitted(db, chunk).await?);
        }
        let mut keyed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH as usize) {
            keyed.extend(keys(db, chunk, sort).await?);
        }
        Ok(page_in_order(keyed, sort))
    }
}

/// The sort key of each of `ids` (absent keys last): the earliest running clock's due time,
/// the ticket id, or the latest customer message.
async fn keys<C: ConnectionTrait>(db: &C, ids: &[i64], sort: Sort) -> Result<Vec<(i64, Option<i64>)>> {
    let list = vec!["?"; ids.len()].join(", ");
    let values: Vec<Value> = ids.iter().map(|i| Value::from(*i)).collect();
    let sql = match sort {
        Sort::Newest => return Ok(ids.iter().map(|i| (*i, Some(*i))).collect()),
        Sort::SlaDue => format!(
            "SELECT ticket_id, MIN(CASE WHEN paused_at IS NULL AND breached_at IS NULL THEN due_at END) AS k \
             FROM sla_timers WHERE ticket_id IN ({list}) GROUP BY ticket_id"
        ),
        Sort::LastCustomerMessage => format!(
            "SELECT ticket_id, MAX(id) AS k FROM messages WHERE ticket_id IN ({list}) AND direction = 'inbound' \
             GROUP BY ticket_id"
        ),
    };
    let found: std::collections::HashMap<i64, Option<i64>> = db::query_all(db, &sql, values)
        .await?
        .iter()
        .map(|r| Ok((db::col(r, "ticket_id")?, db::col(r, "k")?)))
        .collect::<Result<_>>()?;
    Ok(ids.iter().map(|i| (*i, found.get(i).copied().flatten())).collect())
}

/// The first page of `keyed` in `sort`'s order: SLA due soonest first (the older ticket first
/// at one due time), newest first, latest customer message first; tickets without a key last,
/// newest first.
fn page_in_order(mut keyed: Vec<(i64, Option<i64>)>, sort: Sort) -> Vec<i64> {
    use std::cmp::Reverse;
    match sort {
        // Clocks due at one moment (a business day's start): the older ticket first.
        Sort::SlaDue => keyed.sort_by_key(|&(id, k)| (k.is_none(), k, if k.is_some() { id } else { -id })),
        Sort::Newest => keyed.sort_by_key(|&(id, _)| Reverse(id)),
        Sort::LastCustomerMessage => keyed.sort_by_key(|&(id, k)| (k.is_none(), Reverse(k), Reverse(id))),
    }
    keyed.into_iter().take(PAGE_ROWS as usize).map(|(id, _)| id).collect()
}

/// Where a walk reads its candidates: one table, in the order of an index or the primary key.
#[derive(Debug, Clone, Copy)]
enum Driver {
    /// Tickets, newest first.
    Tickets,
    /// Running clocks, soonest due first (due before `until`, when given).
    RunningClocks { until: Option<i64> },
    /// Breached clocks, longest breached first.
    BreachedClocks,
    /// Customer messages, newest first.
    CustomerMessages,
}

impl Driver {
    /// The query of one batch from `cursor` on (its last parameter, the limit, is the
    /// caller's): rows `c` (the cursor's column) and `t` (the ticket). Ids are read downwards
    /// from below the cursor; times upwards from the cursor itself (clocks due at one moment
    /// are read again; the walk skips tickets it has seen).
    fn query(self, cursor: i64) -> (&'static str, Vec<Value>) {
        match self {
            Driver::Tickets => {
                ("SELECT id AS c, id AS t FROM tickets WHERE id < ? ORDER BY id DESC LIMIT ?", vec![cursor.into()])
            }
            Driver::CustomerMessages => (
                "SELECT id AS c, ticket_id AS t FROM messages WHERE direction = 'inbound' AND id < ? ORDER BY id DESC LIMIT ?",
                vec![cursor.into()],
            ),
            Driver::RunningClocks { until } => (
                "SELECT due_at AS c, ticket_id AS t FROM sla_timers WHERE breached_at IS NULL AND due_at >= ? \
                 AND due_at <= ? AND paused_at IS NULL ORDER BY due_at, ticket_id LIMIT ?",
                vec![cursor.into(), until.unwrap_or(i64::MAX).into()],
            ),
            Driver::BreachedClocks => (
                "SELECT breached_at AS c, ticket_id AS t FROM sla_timers WHERE breached_at >= ? ORDER BY breached_at, ticket_id LIMIT ?",
                vec![cursor.into()],
            ),
        }
    }

    /// Whether the cursor goes up (times) rather than down (ids).
    fn ascending(self) -> bool {
        matches!(self, Driver::RunningClocks { .. } | Driver::BreachedClocks)
    }
}

/// A page being filled by walking drivers in turn.
struct Walk<'a> {
    scope: &'a Scope,
    page: Vec<i64>,
    /// Every ticket looked at, so that none is looked at twice.
    seen: std::collections::HashSet<i64>,
}

impl<'a> Walk<'a> {
    fn new(scope: &'a Scope) -> Self {
        Walk { scope, page: Vec::with_capacity(PAGE_ROWS as usize), seen: std::collections::HashSet::new() }
    }

    fn full(&self) -> bool {
        self.page.len() as u64 >= PAGE_ROWS
    }

    /// Reads `driver` in batches until the page is full or the driver runs out.
    async fn run<C: ConnectionTrait>(&mut self, db: &C, driver: Driver) -> Result<()> {
        let mut cursor = if driver.ascending() { i64::MIN } else { i64::MAX };
        // A dense view fills its page from the first few candidates.
        let mut limit = FIRST_BATCH;
        while !self.full() {
            let (sql, mut values) = driver.query(cursor);
            values.push(limit.into());
            let found = db::query_all(db, sql, values).await?;
            let mut fresh = Vec::with_capacity(found.len());
            let mut last = cursor;
            for r in &found {
                last = db::col(r, "c")?;
                let t: i64 = db::col(r, "t")?;
                if self.seen.insert(t) {
                    fresh.push(t);
                }
            }
            for id in self.scope.admitted(db, &fresh).await? {
                if !self.full() {
                    self.page.push(id);
                }
            }
            if (found.len() as i64) < limit {
                return Ok(());
            }
            // Sparse views read larger batches as they go; a whole batch at one moment (clocks
            // due together) is read again, larger.
            limit = if last == cursor { limit * 2 } else { (limit * 2).min(BATCH) };
            cursor = last;
        }
        Ok(())
    }
}

/// The rows of the tickets `ids`, in that order.
///
/// A ticket's clocks are read by `ticket_id` alone, their state tested inside the aggregate:
/// a `breached_at IS NULL` beside it would let SQLite pick the due-time index and read every
/// running clock of the workspace for each row.
async fn details<C: ConnectionTrait>(db: &C, agent_id: i64, ids: &[i64]) -> Result<Vec<Row>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT t.id, t.number, t.subject, t.status, t.priority, t.level, t.channel, t.customer_id, t.created_at, \
         c.name AS customer, r.key AS tier_key, r.name AS tier, a.name AS assignee, \
         (SELECT MIN(CASE WHEN s.paused_at IS NULL AND s.breached_at IS NULL THEN s.due_at END) FROM sla_timers s WHERE s.ticket_id = t.id) AS due_at, \
         (SELECT COUNT(s.breached_at) FROM sla_timers s WHERE s.ticket_id = t.id) AS breaches, \
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

/// Adds the query's filters to the scope's SQL; returns the tier's id when one is asked for.
async fn filters<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    q: &Query,
    sql: &mut String,
    values: &mut Vec<Value>,
) -> Result<Option<i64>> {
    let mut tier_id = None;
    if let Some(ch) = q.channel.as_deref().filter(|s| !s.is_empty()) {
        sql.push_str(" AND t.channel = ?");
        values.push(ch.into());
    }
    if let Some(key) = q.tier.as_deref().filter(|s| !s.is_empty()) {
        let tier = crate::tier::find_by_key(db, workspace_id, key).await?;
        sql.push_str(" AND t.tier_id = ?");
        values.push(tier.id.into());
        tier_id = Some(tier.id);
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
    Ok(tier_id)
}

/// Counts stop here: a view that holds more shows "99+". An exact count of hundreds of
/// thousands of open tickets would cost more than the page it sits on, and tells an agent no
/// more than "a lot"; the seven counts are on every inbox page, so each reads at most a
/// hundred index entries.
pub const COUNT_CAP: i64 = 100;

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

/// A count as shown: the number, or "99+" at the cap.
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
    fn counts_at_the_cap_read_99_plus() {
        assert_eq!(count_text(0), "0");
        assert_eq!(count_text(COUNT_CAP - 1), "99");
        assert_eq!(count_text(COUNT_CAP), "99+");
    }

    #[test]
    fn a_preview_is_one_line_and_cut_with_an_ellipsis() {
        assert_eq!(shorten("Hallo\n\n  Welt ", 20), "Hallo Welt");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
