//! Live updates: one server-sent-event stream per open page (`/live`), fed by the event bus
//! (tickets and messages of the agent's workspace, the view counts, the bell) and by who is
//! looking at which ticket ("Anna is viewing", "Anna is replying").
//!
//! Presence lives in each node's memory and expires unless the page renews it, so a closed
//! laptop does not claim a ticket for long. It is also written to the database, and every
//! node's relay reads what the others wrote, so agents on different nodes see each other.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use plugdesk_core::account::{PresenceRow, Session};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::WebResult;
use crate::session::Ctx;
use crate::{Web, WebState};

/// A page renews its presence every 20 s; an entry older than this is gone.
const PRESENCE_TTL: Duration = Duration::from_secs(45);
/// The view counts and the bell are recomputed at most this often per stream, however many
/// events arrive (a burst of new tickets costs one count query per second per agent).
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// What an agent is doing on a ticket's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Doing {
    Viewing,
    Replying,
    Left,
}

impl Doing {
    fn as_str(self) -> &'static str {
        match self {
            Doing::Viewing => "viewing",
            Doing::Replying => "replying",
            Doing::Left => "left",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Doing::Viewing, Doing::Replying, Doing::Left].into_iter().find(|d| d.as_str() == s)
    }
}

/// One agent on a ticket.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Present {
    id: i64,
    name: String,
    state: Doing,
}

/// Who is on a ticket now, as streamed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Update {
    #[serde(skip)]
    workspace_id: i64,
    ticket_id: i64,
    agents: Vec<Present>,
}

/// The agents on one ticket: id → (name, what they do, when they last said so).
type OnTicket = HashMap<i64, (String, Doing, Instant)>;

/// Agents per (workspace, ticket).
pub(crate) struct Presence {
    map: Mutex<HashMap<(i64, i64), OnTicket>>,
    tx: broadcast::Sender<Update>,
    /// This node's name in the stored presence, so the relay skips what it wrote itself.
    node: String,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            map: Mutex::new(HashMap::new()),
            tx: broadcast::channel(1024).0,
            node: crate::session::random_token(),
        }
    }
}

impl Presence {
    /// Records what an agent does on a ticket and tells every stream; returns the entry to
    /// store for the other nodes.
    fn set(&self, s: &Session, ticket_id: i64, doing: Doing) -> PresenceRow {
        self.apply(s.workspace_id, ticket_id, s.agent_id, &s.name, doing, Instant::now());
        PresenceRow {
            workspace_id: s.workspace_id,
            ticket_id,
            agent_id: s.agent_id,
            name: s.name.clone(),
            state: doing.as_str().to_owned(),
            at: plugdesk_core::now_ms(),
            node: self.node.clone(),
        }
    }

    /// Takes an entry another node stored (this node's own are skipped).
    fn apply_stored(&self, p: &PresenceRow, now_ms: i64) {
        let age = Duration::from_millis((now_ms - p.at).max(0) as u64);
        if p.node == self.node || age >= PRESENCE_TTL {
            return;
        }
        let Some(doing) = Doing::parse(&p.state) else { return };
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.apply(p.workspace_id, p.ticket_id, p.agent_id, &p.name, doing, at);
    }

    fn apply(&self, workspace_id: i64, ticket_id: i64, agent_id: i64, name: &str, doing: Doing, at: Instant) {
        let now = Instant::now();
        let agents = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, agents| {
                agents.retain(|_, (_, _, at)| now.duration_since(*at) < PRESENCE_TTL);
                !agents.is_empty()
            });
            let entry = map.entry((workspace_id, ticket_id)).or_default();
            if doing == Doing::Left {
                entry.remove(&agent_id);
            } else {
                entry.insert(agent_id, (name.to_owned(), doing, at));
            }
            list(entry)
        };
        let _ = self.tx.send(Update { workspace_id, ticket_id, agents });
    }

    /// Who is on a ticket now.
    fn on(&self, workspace_id: i64, ticket_id: i64) -> Vec<Present> {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(workspace_id, ticket_id))
            .map(|agents| {
                let mut live = agents.clone();
                live.retain(|_, (_, _, at)| now.duration_since(*at) < PRESENCE_TTL);
                list(&live)
            })
            .unwrap_or_default()
    }
}

fn list(agents: &OnTicket) -> Vec<Present> {
    let mut out: Vec<Present> =
        agents.iter().map(|(id, (name, state, _))| Present { id: *id, name: name.clone(), state: *state }).collect();
    out.sort_by_key(|p| p.id);
    out
}

#[derive(Deserialize)]
pub(crate) struct PresenceInput {
    state: Doing,
}

/// `POST /tickets/{id}/presence`.
pub(crate) async fn presence(
    State(web): WebState,
    ctx: Ctx,
    Path(id): Path<i64>,
    Json(input): Json<PresenceInput>,
) -> WebResult<StatusCode> {
    let s = ctx.agent()?;
    // Only tickets of the agent's workspace: no presence can be planted elsewhere.
    plugdesk_core::ticket::find(web.core.db(), s.workspace_id, id).await?;
    let stored = web.presence.set(s, id, input.state);
    let ttl = PRESENCE_TTL.as_millis() as i64;
    plugdesk_core::account::set_presence(web.core.db(), &stored, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How often a node reads the event log for what other nodes wrote.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Ids read again behind the newest seen: on PostgreSQL a transaction that took its id
/// earlier may commit after a later one was read.
const FOLLOW_LOOKBACK: i64 = 200;
/// Events read from the log at once.
const FOLLOW_BATCH: u64 = 1000;
/// Event ids remembered to send each event once.
const RECENT: usize = 20_000;

/// The events the pages hear: this node's writes at once (the in-process bus), and what other
/// nodes on the same database wrote, from the event log within [`FOLLOW_EVERY`]. Each event
/// goes out once.
pub(crate) fn relay(
    core: &plugdesk_core::Core,
    presence: std::sync::Arc<Presence>,
) -> broadcast::Sender<plugdesk_core::event::Event> {
    let (tx, _) = broadcast::channel(4096);
    let out = tx.clone();
    let core = core.clone();
    tokio::spawn(async move {
        // Presence other nodes stored: read by time, a second back for writes that took
        // their time stamp before a later one was read.
        let mut presence_high = plugdesk_core::now_ms() - PRESENCE_TTL.as_millis() as i64;
        let mut presence_seen: std::collections::HashSet<(i64, i64, i64)> = std::collections::HashSet::new();
        let mut bus = core.bus().subscribe();
        let mut recent: std::collections::HashSet<i64> = std::collections::HashSet::new();
        let mut order: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
        let mut remember = move |id: i64| -> bool {
            if !recent.insert(id) {
                return false;
            }
            order.push_back(id);
            if order.len() > RECENT
                && let Some(old) = order.pop_front()
            {
                recent.remove(&old);
            }
            true
        };
        let mut high = plugdesk_core::event::latest_id(core.db()).await.unwrap_or(0);
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = bus.recv() => match got {
                    Ok(e) => {
                        if remember(e.id) {
                            let _ = out.send(e);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                // The log's high-water mark moves by what was read from it only, so a burst of
                // this node's own events never skips another node's.
                _ = tick.tick() => {
                    let now = plugdesk_core::now_ms();
                    match plugdesk_core::account::presence_since(core.db(), presence_high - 1000, 1000).await {
                        Ok(rows) => {
                            presence_seen.retain(|&(_, _, at)| at > now - 2000);
                            for p in rows {
                                presence_high = presence_high.max(p.at);
                                if presence_seen.insert((p.ticket_id, p.agent_id, p.at)) {
                                    presence.apply_stored(&p, now);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "following presence failed"),
                    }
                    loop {
                    match plugdesk_core::event::since(core.db(), (high - FOLLOW_LOOKBACK).max(0), FOLLOW_BATCH).await {
                        Ok(events) => {
                            let full = events.len() as u64 == FOLLOW_BATCH;
                            for e in events {
                                high = high.max(e.id);
                                if remember(e.id) {
                                    let _ = out.send(e);
                                }
                            }
                            if !full {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "following the event log failed");
                            break;
                        }
                    }
                    }
                },
            }
        }
    });
    tx
}

/// The state of one stream.
struct Feed {
    web: Web,
    session: Session,
    bus: broadcast::Receiver<plugdesk_core::event::Event>,
    presence: broadcast::Receiver<Update>,
    /// When the counts are due to be sent (set by an event, cleared when sent).
    counts_due: Option<tokio::time::Instant>,
    last_counts: Option<tokio::time::Instant>,
    /// Events ready to go out.
    queue: std::collections::VecDeque<Event>,
    /// When to check next that the session is still live.
    check: tokio::time::Interval,
    /// The session ended: the stream closes once the queue is out.
    ended: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let due = self.counts_due;
            tokio::select! {
                got = self.bus.recv() => match got {
                    Ok(e) if e.workspace_id == self.session.workspace_id => self.on_event(&e),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.want_counts(),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                got = self.presence.recv() => match got {
                    Ok(u) if u.workspace_id == self.session.workspace_id => {
                        let others: Vec<&Present> = u.agents.iter().filter(|p| p.id != self.session.agent_id).collect();
                        let data = serde_json::json!({ "ticket_id": u.ticket_id, "agents": others });
                        self.queue.push_back(Event::default().event("presence").data(data.to_string()));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.check.tick() => {
                    let limits = plugdesk_core::account::SessionLimits::default();
                    match plugdesk_core::account::session_live(self.web.core.db(), self.session.id, limits).await {
                        Ok(true) => {}
                        // Signed out (here or on another node), expired, or the agent was
                        // deactivated: say so, so the page can lead to the sign-in, and stop.
                        Ok(false) => {
                            self.queue.push_back(Event::default().event("signedout").data("{}"));
                            self.ended = true;
                        }
                        Err(e) => tracing::warn!(error = %e, "live session check failed"),
                    }
                }
                () = sleep_until(due) => {
                    self.counts_due = None;
                    self.last_counts = Some(tokio::time::Instant::now());
                    self.push_counts().await;
                }
            }
        }
    }

    fn on_event(&mut self, e: &plugdesk_core::event::Event) {
        if let Some(ticket_id) = e.ticket_id {
            let data = serde_json::json!({ "ticket_id": ticket_id, "type": e.kind });
            self.queue.push_back(Event::default().event("ticket").data(data.to_string()));
        }
        self.want_counts();
    }

    fn want_counts(&mut self) {
        if self.counts_due.is_none() {
            let now = tokio::time::Instant::now();
            let at = self.last_counts.map_or(now, |l| (l + COUNTS_EVERY).max(now));
            self.counts_due = Some(at);
        }
    }

    async fn push_counts(&mut self) {
        let (ws, agent) = (self.session.workspace_id, self.session.agent_id);
        match plugdesk_core::inbox::counts(self.web.core.db(), ws, agent).await {
            Ok(counts) => {
                let data = crate::inbox::counts_json(counts).to_string();
                self.queue.push_back(Event::default().event("counts").data(data));
            }
            Err(e) => tracing::warn!(error = %e, "live counts failed"),
        }
        match plugdesk_core::survey::notifications(&self.web.core, ws, agent, true).await {
            Ok(n) => {
                let unread = n["items"].as_array().map_or(0, Vec::len);
                let data = serde_json::json!({ "unread": unread });
                self.queue.push_back(Event::default().event("notification").data(data.to_string()));
            }
            Err(e) => tracing::warn!(error = %e, "live notifications failed"),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often a stream checks that its session is still live.
const SESSION_CHECK: Duration = Duration::from_secs(10);

fn session_check() -> tokio::time::Interval {
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + SESSION_CHECK, SESSION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check
}

/// `GET /live`: the stream. The first events say where things stand (counts, the bell, who is
/// on the ticket the page asks about with `?ticket=`).
pub(crate) async fn stream(
    State(web): WebState,
    ctx: Ctx,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> WebResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let session = ctx.agent()?.clone();
    let mut feed = Feed {
        bus: web.events.subscribe(),
        presence: web.presence.tx.subscribe(),
        web: web.clone(),
        session,
        counts_due: None,
        last_counts: None,
        queue: Default::default(),
        check: session_check(),
        ended: false,
    };
    feed.push_counts().await;
    feed.last_counts = Some(tokio::time::Instant::now());
    if let Some(t) = q.get("ticket").and_then(|t| t.parse::<i64>().ok()) {
        let others: Vec<Present> = web
            .presence
            .on(feed.session.workspace_id, t)
            .into_iter()
            .filter(|p| p.id != feed.session.agent_id)
            .collect();
        let data = serde_json::json!({ "ticket_id": t, "agents": others });
        feed.queue.push_back(Event::default().event("presence").data(data.to_string()));
    }
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let e = feed.next().await?;
        Some((Ok(e), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
