//! Creating tickets. Every new ticket — from the API, an import or (later) a channel — goes
//! through the [`Writer`]: a single task that takes whatever requests are waiting (up to
//! [`MAX_BATCH`]) and writes them in one transaction with one multi-row insert per table. On
//! SQLite the cost of a write is the commit and the statement round trip, not the row, so this
//! is what turns hundreds of tickets per second into thousands. Callers still get one result
//! each; if a batch fails as a whole, its tickets are retried one by one so that one bad
//! request cannot sink its neighbours.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, Value};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use super::message::{Attachment, AttachmentInput, decode_attachments, store_attachments, validate_body};
use super::{Priority, Ticket, normalize_tags, validate_subject};
use crate::config::Limits;
use crate::customer::{NewCustomer, customer_search_text, validate_language};
use crate::db;
use crate::entity::{ticket, tier};
use crate::error::{Error, Result};
use crate::event::{self, Bus, NewEvent};
use crate::search::{self, Doc};
use crate::sla::{self, Clock, NewTimer, Targets};

/// Most tickets written in one transaction. Large enough to amortise the commit, small enough
/// that one batch holds the SQLite write lock for only a few milliseconds.
const MAX_BATCH: usize = 64;

/// Requests waiting for the writer; beyond this, callers wait to enqueue (back-pressure).
const QUEUE: usize = 1024;

/// A new ticket with its first message and its customer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Subject line.
    pub subject: String,
    /// The customer's first message, plain text.
    pub body: String,
    /// The same as HTML, if the channel has it.
    #[serde(default)]
    pub body_html: Option<String>,
    /// Quoted history and signature below the new text (e-mail), kept apart.
    #[serde(default)]
    pub body_quoted: Option<String>,
    /// The first message as it arrived (an e-mail's source). Set by the inbound path only.
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    /// The customer: an `id`, or identities that find or create them.
    pub customer: NewCustomer,
    /// Channel of origin (default `api`).
    #[serde(default)]
    pub channel: Option<String>,
    /// Priority; the tier's default when missing.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// Custom attributes (JSON object).
    #[serde(default)]
    pub attributes: Option<Json>,
    /// The channel's id of the first message: creating the same ticket twice returns the first.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Team; the tier's team when missing.
    #[serde(default)]
    pub team_id: Option<i64>,
    /// Assignee.
    #[serde(default)]
    pub assignee_id: Option<i64>,
    /// Attachments of the first message.
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    /// The channel's conversation key (a chat, a thread): later messages of it join this
    /// ticket while it is open.
    #[serde(default)]
    pub conversation: Option<String>,
    /// The channel instance the ticket came in through; replies go out through it. Set by the
    /// inbound path, never by API callers.
    #[serde(skip)]
    pub channel_id: Option<i64>,
    /// The webhook request that brought the ticket, recorded in the same transaction (set by
    /// the inbound path).
    #[serde(skip)]
    pub receipt: Option<crate::receipt::Receipt>,
}

/// The result of a create: the ticket, and whether it is new (`false`: its external id was
/// known and this is the ticket created the first time).
#[derive(Debug, Clone)]
pub struct Created {
    /// The ticket.
    pub ticket: Ticket,
    /// True when written now.
    pub created: bool,
}

/// A request checked before it reaches the writer, so the writer only does database work.
#[derive(Debug, Clone)]
struct Prepared {
    workspace_id: i64,
    actor: String,
    subject: String,
    body: String,
    body_html: Option<String>,
    body_quoted: Option<String>,
    raw: Option<Vec<u8>>,
    automatic: bool,
    channel: String,
    priority: Option<Priority>,
    tags: Vec<String>,
    category: Option<String>,
    attributes: String,
    external_id: Option<String>,
    conversation: Option<String>,
    channel_id: Option<i64>,
    receipt: Option<crate::receipt::Receipt>,
    team_id: Option<i64>,
    assignee_id: Option<i64>,
    attachments: Vec<Attachment>,
    customer_id: Option<i64>,
    identities: Vec<(String, String)>,
    customer_name: String,
    /// `given`, `mail` or `address` (see [`crate::customer::NameOrigin`]).
    customer_name_origin: &'static str,
    customer_language: String,
    /// `given`, `detected` or `default` (see [`crate::language`]).
    customer_language_origin: &'static str,
    /// The language of the first message.
    detected: Option<crate::language::Detected>,
    customer_tier: Option<String>,
    customer_org: Option<i64>,
    customer_attributes: String,
}

/// Checks a channel name.
///
/// # Errors
/// [`Error::Invalid`].
fn validate_channel(channel: &str) -> Result<String> {
    let ok = !channel.is_empty()
        && channel.len() <= 32
        && channel.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(channel.to_owned())
    } else {
        Err(Error::invalid("channel", format!("channel {channel:?} must be 1-32 characters of a-z, 0-9, _ or -")))
    }
}

fn object_text(v: Option<&Json>, field: &str) -> Result<String> {
    match v {
        None => Ok("{}".into()),
        Some(o @ Json::Object(_)) => Ok(o.to_string()),
        Some(_) => Err(Error::invalid(field, format!("{field} must be a JSON object"))),
    }
}

fn prepare(workspace_id: i64, actor: &str, t: NewTicket, limits: &Limits) -> Result<Prepared> {
    let subject = validate_subject(&t.subject, limits.max_subject_chars)?;
    validate_body(&t.body, t.body_html.as_deref(), limits.max_message_bytes)?;
    if t.body_quoted.as_ref().is_some_and(|q| q.len() > limits.max_message_bytes) {
        return Err(Error::invalid(
            "body_quoted",
            format!("quoted text is larger than {} bytes", limits.max_message_bytes),
        ));
    }
    let identities = t.customer.identities()?;
    if t.customer.id.is_none() && identities.is_empty() {
        return Err(Error::invalid(
            "customer",
            "customer needs an id or at least one identity (email, phone or identities[])",
        ));
    }
    if let Some(ext) = &t.external_id
        && (ext.is_empty() || ext.len() > 512)
    {
        return Err(Error::invalid("external_id", "external_id must be 1-512 characters"));
    }
    let detected = crate::language::detect(&t.body);
    let (customer_language, customer_language_origin) = match t.customer.language.as_deref() {
        Some(given) => (validate_language(given)?, if t.customer.learned { "detected" } else { "given" }),
        None => match &detected {
            Some(d) if d.reliable => (d.code.to_owned(), "detected"),
            _ => ("en".to_owned(), "default"),
        },
    };
    Ok(Prepared {
        workspace_id,
        actor: actor.to_owned(),
        subject,
        channel: validate_channel(t.channel.as_deref().unwrap_or("api"))?,
        priority: t.priority,
        tags: normalize_tags(&t.tags)?,
        category: t.category.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
        attributes: object_text(t.attributes.as_ref(), "attributes")?,
        external_id: t.external_id,
        conversation: t.conversation,
        channel_id: t.channel_id,
        receipt: t.receipt,
        team_id: t.team_id,
        assignee_id: t.assignee_id,
        attachments: decode_attachments(&t.attachments, limits.max_attachment_bytes)?,
        customer_id: t.customer.id,
        customer_name: t.customer.display_name(&identities),
        customer_name_origin: t.customer.name_origin(),
        customer_language,
        customer_language_origin,
        detected,
        customer_tier: t.customer.tier.clone(),
        customer_org: t.customer.organization_id,
        customer_attributes: object_text(t.customer.attributes.as_ref(), "customer.attributes")?,
        identities,
        body: t.body,
        body_html: t.body_html,
        body_quoted: t.body_quoted,
        raw: t.raw,
        automatic: t.attributes.as_ref().is_some_and(|a| a["automatic"] == true),
    })
}

struct Job {
    item: Prepared,
    reply: oneshot::Sender<Result<Created>>,
}

/// How long the writer trusts its copy of a workspace's tiers. Changes made through this
/// process clear the copy at once ([`Writer::tiers_changed`]); a change made on another node
/// reaches new tickets within this time.
const TIER_TTL: Duration = Duration::from_secs(5);

/// Handle to the ticket writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    tier_generation: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer task on the current runtime.
    pub fn start(db: DatabaseConnection, bus: Bus) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tier_generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(db, bus, rx, TierCache::new(tier_generation.clone())));
        Writer { tx, tier_generation }
    }

    /// Tells the writer that tiers changed, so the next ticket reads them again.
    pub fn tiers_changed(&self) {
        self.tier_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates a ticket (with its customer when new, first message, search entries, SLA clocks
    /// and events) and waits until it is committed.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bad input (checked before anything is written), [`Error::Db`]
    /// when the write failed; nothing is half-written either way.
    pub async fn create(&self, workspace_id: i64, actor: &str, input: NewTicket, limits: &Limits) -> Result<Created> {
        let item = prepare(workspace_id, actor, input, limits)?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { item, reply }).await.map_err(|_| Error::Internal("ticket writer has stopped".into()))?;
        rx.await.map_err(|_| Error::Internal("ticket writer dropped a request".into()))?
    }
}

/// The writer's copy of each workspace's tiers (one query per batch saved).
struct TierCache {
    generation: Arc<AtomicU64>,
    seen: u64,
    tiers: HashMap<i64, (Instant, Vec<tier::Model>)>,
    targets: HashMap<i64, Targets>,
}

impl TierCache {
    fn new(generation: Arc<AtomicU64>) -> Self {
        TierCache { generation, seen: 0, tiers: HashMap::new(), targets: HashMap::new() }
    }

    /// Makes sure the tiers of `workspaces` are loaded and fresh.
    async fn load<C: sea_orm::ConnectionTrait>(&mut self, db: &C, workspaces: impl Iterator<Item = i64>) -> Result<()> {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation != self.seen {
            self.tiers.clear();
            self.targets.clear();
            self.seen = generation;
        }
        for ws in workspaces {
            let fresh = self.tiers.get(&ws).is_some_and(|(at, _)| at.elapsed() < TIER_TTL);
            if !fresh {
                let list = crate::tier::list(db, ws).await?;
                for t in &list {
                    self.targets.insert(t.id, Targets::of(t)?);
                }
                self.tiers.insert(ws, (Instant::now(), list));
            }
        }
        Ok(())
    }

    fn of(&self, workspace_id: i64) -> &[tier::Model] {
        self.tiers.get(&workspace_id).map(|(_, t)| t.as_slice()).unwrap_or_default()
    }
}

async fn run(db: DatabaseConnection, bus: Bus, mut rx: mpsc::Receiver<Job>, mut tiers: TierCache) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let items: Vec<Prepared> = jobs.iter().map(|j| j.item.clone()).collect();
        let results = match write_batch(&db, &mut tiers, &items).await {
            Ok((results, events)) => {
                bus.publish(events);
                results
            }
            Err(e) if items.len() > 1 => {
                tracing::warn!(error = %e, batch = items.len(), "ticket batch failed; retrying its tickets one by one");
                let mut results = Vec::with_capacity(items.len());
                for item in &items {
                    match write_batch(&db, &mut tiers, std::slice::from_ref(item)).await {
                        Ok((mut r, events)) => {
                            bus.publish(events);
                            results.push(r.pop().unwrap_or_else(|| Err(Error::Internal("empty batch result".into()))));
                        }
                        Err(e) => results.push(Err(e)),
                    }
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        let mut existing = Vec::new();
        for (job, result) in jobs.into_iter().zip(results) {
            match result {
                Ok(Outcome::Created(t)) => {
                    let _ = job.reply.send(Ticket::try_from(*t).map(|ticket| Created { ticket, created: true }));
                }
                Ok(Outcome::Existing(id)) => existing.push((job, id)),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        for (job, id) in existing {
            let r = super::get(&db, job.item.workspace_id, id).await.map(|ticket| Created { ticket, created: false });
            let _ = job.reply.send(r);
        }
    }
}

enum Outcome {
    Created(Box<ticket::Model>),
    Existing(i64),
}

/// Who a ticket's customer is, while the batch is being planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cust {
    Stored(i64),
    New(usize),
}

struct NewCustomerRow {
    workspace_id: i64,
    item: usize,
    tier_id: i64,
}

type Results = Vec<Result<Outcome>>;

/// Writes a batch in one transaction. Item-level problems (an unknown team, say) fail that
/// item only; a database error fails the batch.
async fn write_batch(
    db: &DatabaseConnection,
    cache: &mut TierCache,
    items: &[Prepared],
) -> Result<(Results, Vec<event::Event>)> {
    let started = std::time::Instant::now();
    let txn = db::begin_write(db).await?;
    let now = crate::now_ms();
    let mut out: Vec<Option<Result<Outcome>>> = (0..items.len()).map(|_| None).collect();

    cache.load(&txn, items.iter().map(|it| it.workspace_id)).await?;

    // Re-deliveries: an external id seen before (stored, or earlier in this batch).
    let mut first_with_ext: HashMap<(i64, &str, &str), usize> = HashMap::new();
    let mut duplicate_of: HashMap<usize, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        let Some(ext) = it.external_id.as_deref() else { continue };
        let key = (it.workspace_id, it.channel.as_str(), ext);
        if let Some(&j) = first_with_ext.get(&key) {
            duplicate_of.insert(i, j);
            continue;
        }
        let known = db::query_one(
            &txn,
            "SELECT ticket_id FROM messages WHERE workspace_id = ? AND channel = ? AND external_id = ?",
            vec![it.workspace_id.into(), it.channel.clone().into(), ext.into()],
        )
        .await?;
        match known {
            Some(row) => out[i] = Some(Ok(Outcome::Existing(db::col(&row, "ticket_id")?))),
            None => {
                first_with_ext.insert(key, i);
            }
        }
    }

    // Customers: by id, by a stored identity, by an identity new in this batch, or new.
    let mut stored_identities: HashMap<(i64, String, String), i64> = HashMap::new();
    let mut by_ws: HashMap<i64, Vec<&(String, String)>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if out[i].is_none() && !duplicate_of.contains_key(&i) && it.customer_id.is_none() {
            by_ws.entry(it.workspace_id).or_default().extend(it.identities.iter());
        }
    }
    for (ws, ids) in &by_ws {
        // Every OR term names the whole unique key, so SQLite answers each with one index
        // lookup; with the workspace outside the OR it would scan the workspace's identities.
        let term = "(workspace_id = ? AND kind = ? AND address = ?)";
        let sql = format!(
            "SELECT customer_id, kind, address FROM customer_identities WHERE {}",
            vec![term; ids.len()].join(" OR ")
        );
        let mut values: Vec<Value> = Vec::with_capacity(ids.len() * 3);
        for (k, a) in ids {
            values.extend([(*ws).into(), k.clone().into(), a.clone().into()]);
        }
        for r in db::query_all(&txn, &sql, values).await? {
            stored_identities.insert((*ws, db::col(&r, "kind")?, db::col(&r, "address")?), db::col(&r, "customer_id")?);
        }
    }
    let mut batch_identities: HashMap<(i64, String, String), Cust> = HashMap::new();
    let mut new_customers: Vec<NewCustomerRow> = Vec::new();
    let mut new_identities: Vec<(usize, i64, Cust, String, String)> = Vec::new();
    let mut customer_of: Vec<Option<Cust>> = vec![None; items.len()];
    for (i, it) in items.iter().enumerate() {
        if out[i].is_some() || duplicate_of.contains_key(&i) {
            continue;
        }
        let ws = it.workspace_id;
        let found = match it.customer_id {
            Some(id) => match db::query_one(
                &txn,
                "SELECT merged_into_id FROM customers WHERE id = ? AND workspace_id = ?",
                vec![id.into(), ws.into()],
            )
            .await?
            {
                Some(row) => Some(Cust::Stored(db::col::<Option<i64>>(&row, "merged_into_id")?.unwrap_or(id))),
                None => {
                    out[i] = Some(Err(Error::invalid("customer.id", format!("customer {id} does not exist"))));
                    continue;
                }
            },
            None => it.identities.iter().find_map(|(k, a)| {
                let key = (ws, k.clone(), a.clone());
                stored_identities.get(&key).map(|c| Cust::Stored(*c)).or_else(|| batch_identities.get(&key).copied())
            }),
        };
        let cust = match found {
            Some(c) => c,
            None => {
                let tier_id = match &it.customer_tier {
                    Some(key) => match cache.of(ws).iter().find(|t| &t.key == key) {
                        Some(t) => t.id,
                        None => {
                            out[i] = Some(Err(Error::invalid("customer.tier", format!("unknown tier {key:?}"))));
                            continue;
                        }
                    },
                    None => {
                        let ts = cache.of(ws);
                        match ts.iter().find(|t| t.key == "normal").or_else(|| ts.first()) {
                            Some(t) => t.id,
                            None => return Err(Error::Internal(format!("workspace {ws} has no tiers"))),
                        }
                    }
                };
                new_customers.push(NewCustomerRow { workspace_id: ws, item: i, tier_id });
                Cust::New(new_customers.len() - 1)
            }
        };
        // Identities nobody has yet are learnt for this customer.
        for (k, a) in &it.identities {
            let key = (ws, k.clone(), a.clone());
            if !stored_identities.contains_key(&key) && !batch_identities.contains_key(&key) {
                batch_identities.insert(key, cust);
                new_identities.push((i, ws, cust, k.clone(), a.clone()));
            }
        }
        customer_of[i] = Some(cust);
    }

    // References that must exist in the workspace.
    for (i, it) in items.iter().enumerate() {
        if customer_of[i].is_none() {
            continue;
        }
        let checks = [
            ("team_id", "teams", it.team_id),
            ("assignee_id", "agents", it.assignee_id),
            (
                "customer.organization_id",
                "organizations",
                it.customer_org.filter(|_| matches!(customer_of[i], Some(Cust::New(_)))),
            ),
        ];
        for (field, table, id) in checks {
            let Some(id) = id else { continue };
            let exists = db::query_one(
                &txn,
                &format!("SELECT id FROM {table} WHERE id = ? AND workspace_id = ?"),
                vec![id.into(), it.workspace_id.into()],
            )
            .await?;
            if exists.is_none() {
                out[i] = Some(Err(Error::invalid(field, format!("{field} {id} does not exist in this workspace"))));
                customer_of[i] = None;
                break;
            }
        }
    }
    // A failed item may have planned a new customer that later items of the batch found by
    // identity: keep a planned customer while any written item uses it, and an identity
    // while its planning item is written or its new customer is kept.
    let used: std::collections::HashSet<usize> = customer_of
        .iter()
        .filter_map(|c| match c {
            Some(Cust::New(n)) => Some(*n),
            _ => None,
        })
        .collect();
    new_identities.retain(|(item, _, c, _, _)| match c {
        Cust::New(n) => used.contains(n),
        Cust::Stored(_) => customer_of[*item].is_some(),
    });

    // Keys for everything we insert.
    // Keys for everything we insert, reserved in one round trip; the rows go down together
    // at the end, also in one round trip on SQLite.
    let writing: Vec<usize> = (0..items.len()).filter(|i| customer_of[*i].is_some()).collect();
    let mut keys = db::reserve_ids_many(
        &txn,
        &[
            ("customers", new_customers.len()),
            ("tickets", writing.len()),
            ("messages", writing.len()),
            ("events", used.len() + writing.len()),
        ],
    )
    .await?
    .into_iter();
    let mut next_keys = || keys.next().ok_or_else(|| Error::Internal("key reservation came back short".into()));
    let (customer_ids, ticket_ids, message_ids, event_ids) = (next_keys()?, next_keys()?, next_keys()?, next_keys()?);
    let mut statements: Vec<db::Sql> = Vec::new();
    let resolve = |c: Cust| match c {
        Cust::Stored(id) => id,
        Cust::New(n) => customer_ids[n],
    };
    let mut docs = Vec::new();
    let mut events: Vec<(i64, NewEvent)> = Vec::new();
    let customer_rows: Vec<Vec<Value>> = new_customers
        .iter()
        .enumerate()
        .filter(|(n, _)| used.contains(n))
        .map(|(n, c)| {
            let it = &items[c.item];
            let id = customer_ids[n];
            docs.push(Doc {
                workspace_id: c.workspace_id,
                kind: "customer",
                ref_id: id,
                ticket_id: None,
                body: customer_search_text(&it.customer_name, &it.identities),
            });
            events.push((
                c.workspace_id,
                NewEvent {
                    kind: "customer.created",
                    actor: it.actor.clone(),
                    ticket_id: None,
                    customer_id: Some(id),
                    changes: json!({ "name": it.customer_name }),
                },
            ));
            vec![
                id.into(),
                c.workspace_id.into(),
                it.customer_name.clone().into(),
                it.customer_org.into(),
                c.tier_id.into(),
                it.customer_language.clone().into(),
                it.customer_name_origin.into(),
                it.customer_language_origin.into(),
                it.customer_attributes.clone().into(),
                now.into(),
                now.into(),
            ]
        })
        .collect();
    statements.extend(db::insert_statement(
        "customers",
        &[
            "id",
            "workspace_id",
            "name",
            "organization_id",
            "tier_id",
            "language",
            "name_origin",
            "language_origin",
            "attributes",
            "created_at",
            "updated_at",
        ],
        customer_rows,
    ));
    let identity_rows = new_identities
        .iter()
        .map(|(_, ws, c, k, a)| vec![(*ws).into(), resolve(*c).into(), k.clone().into(), a.clone().into(), now.into()])
        .collect();
    statements.extend(db::insert_statement(
        "customer_identities",
        &["workspace_id", "customer_id", "kind", "address", "created_at"],
        identity_rows,
    ));

    // The tier of each ticket is its customer's.
    let stored_customers: Vec<i64> = customer_of
        .iter()
        .filter_map(|c| match c {
            Some(Cust::Stored(id)) => Some(*id),
            _ => None,
        })
        .collect();
    let mut tier_of_customer: HashMap<i64, i64> =
        new_customers.iter().enumerate().map(|(n, c)| (customer_ids[n], c.tier_id)).collect();
    if !stored_customers.is_empty() {
        let sql =
            format!("SELECT id, tier_id FROM customers WHERE id IN ({})", vec!["?"; stored_customers.len()].join(", "));
        for r in db::query_all(&txn, &sql, stored_customers.iter().map(|id| (*id).into()).collect()).await? {
            tier_of_customer.insert(db::col(&r, "id")?, db::col(&r, "tier_id")?);
        }
    }

    // Ticket numbers: one counter update per workspace.
    let mut next_number: HashMap<i64, i64> = HashMap::new();
    let mut per_ws: HashMap<i64, i64> = HashMap::new();
    for &i in &writing {
        *per_ws.entry(items[i].workspace_id).or_default() += 1;
    }
    for (ws, n) in &per_ws {
        let row = db::query_one(&txn, "UPDATE workspaces SET next_ticket_number = next_ticket_number + ? WHERE id = ? RETURNING next_ticket_number", vec![(*n).into(), (*ws).into()])
            .await?
            .ok_or_else(|| Error::Internal(format!("workspace {ws} vanished")))?;
        next_number.insert(*ws, db::col::<i64>(&row, "next_ticket_number")? - n);
    }
    let mut tickets: HashMap<usize, ticket::Model> = HashMap::new();
    let mut ticket_rows = Vec::new();
    let mut tag_rows = Vec::new();
    let mut timers = Vec::new();
    for (&i, &id) in writing.iter().zip(&ticket_ids) {
        let it = &items[i];
        let customer_id = resolve(customer_of[i].ok_or_else(|| Error::Internal("customer not planned".into()))?);
        let tier_id = *tier_of_customer
            .get(&customer_id)
            .ok_or_else(|| Error::Internal(format!("customer {customer_id} has no tier")))?;
        if !cache.targets.contains_key(&tier_id) {
            // A tier created on another node since the cache was filled.
            cache.tiers.remove(&it.workspace_id);
            cache.load(&txn, std::iter::once(it.workspace_id)).await?;
        }
        let tier = cache
            .of(it.workspace_id)
            .iter()
            .find(|t| t.id == tier_id)
            .ok_or_else(|| Error::Internal(format!("tier {tier_id} not found")))?;
        let number = next_number.entry(it.workspace_id).or_default();
        let m = ticket::Model {
            id,
            workspace_id: it.workspace_id,
            number: *number,
            subject: it.subject.clone(),
            status: "new".into(),
            priority: it.priority.map(Priority::as_str).unwrap_or(&tier.default_priority).to_owned(),
            level: 1,
            team_id: it.team_id.or(tier.team_id),
            assignee_id: it.assignee_id,
            customer_id,
            tier_id,
            category: it.category.clone(),
            channel: it.channel.clone(),
            tags: serde_json::to_string(&it.tags)?,
            attributes: it.attributes.clone(),
            reopen_count: 0,
            created_at: now,
            updated_at: now,
            first_response_at: None,
            resolved_at: None,
            closed_at: None,
            pending_since: None,
            conversation: it.conversation.clone(),
            channel_id: it.channel_id,
        };
        *number += 1;
        ticket_rows.push(vec![
            m.id.into(),
            m.workspace_id.into(),
            m.number.into(),
            m.subject.clone().into(),
            m.status.clone().into(),
            m.priority.clone().into(),
            m.level.into(),
            m.team_id.into(),
            m.assignee_id.into(),
            m.customer_id.into(),
            m.tier_id.into(),
            m.category.clone().into(),
            m.channel.clone().into(),
            m.tags.clone().into(),
            m.attributes.clone().into(),
            m.conversation.clone().into(),
            m.channel_id.into(),
            now.into(),
            now.into(),
        ]);
        for tag in &it.tags {
            tag_rows.push(vec![id.into(), it.workspace_id.into(), tag.clone().into()]);
        }
        let t = cache.targets.get(&tier_id).ok_or_else(|| Error::Internal(format!("tier {tier_id} not compiled")))?;
        timers.push(NewTimer::new(it.workspace_id, id, Clock::FirstResponse, now, t));
        timers.push(NewTimer::new(it.workspace_id, id, Clock::Resolution, now, t));
        docs.push(Doc {
            workspace_id: it.workspace_id,
            kind: "ticket",
            ref_id: id,
            ticket_id: Some(id),
            body: it.subject.clone(),
        });
        tickets.insert(i, m);
    }
    statements.extend(db::insert_statement(
        "tickets",
        &[
            "id",
            "workspace_id",
            "number",
            "subject",
            "status",
            "priority",
            "level",
            "team_id",
            "assignee_id",
            "customer_id",
            "tier_id",
            "category",
            "channel",
            "tags",
            "attributes",
            "conversation",
            "channel_id",
            "created_at",
            "updated_at",
        ],
        ticket_rows,
    ));
    statements.extend(db::insert_statement("ticket_tags", &["ticket_id", "workspace_id", "tag"], tag_rows));

    let mut message_rows = Vec::new();
    let mut sources = Vec::new();
    for (&i, &mid) in writing.iter().zip(&message_ids) {
        let it = &items[i];
        let t = &tickets[&i];
        message_rows.push(vec![
            mid.into(),
            it.workspace_id.into(),
            t.id.into(),
            "inbound".into(),
            it.channel.clone().into(),
            "customer".into(),
            t.customer_id.into(),
            it.body.clone().into(),
            it.body_html.clone().into(),
            it.body_quoted.clone().into(),
            i32::from(it.automatic).into(),
            it.external_id.clone().into(),
            it.detected.as_ref().map(|d| d.code).into(),
            it.detected.as_ref().map(|d| d.script.clone()).into(),
            it.detected.as_ref().map(|d| d.confidence).into(),
            now.into(),
        ]);
        if let Some(raw) = &it.raw {
            sources.push(super::message::source_insert(it.workspace_id, mid, raw, now));
        }
        docs.push(Doc {
            workspace_id: it.workspace_id,
            kind: "message",
            ref_id: mid,
            ticket_id: Some(t.id),
            body: it.body.clone(),
        });
        events.push((
            it.workspace_id,
            NewEvent {
                kind: "ticket.created",
                actor: it.actor.clone(),
                ticket_id: Some(t.id),
                customer_id: Some(t.customer_id),
                changes: json!({
                    "number": t.number, "subject": t.subject, "status": t.status, "priority": t.priority,
                    "channel": t.channel, "tier_id": t.tier_id, "team_id": t.team_id, "message_id": mid,
                }),
            },
        ));
    }
    statements.extend(db::insert_statement(
        "messages",
        &[
            "id",
            "workspace_id",
            "ticket_id",
            "direction",
            "channel",
            "author_kind",
            "author_id",
            "body_text",
            "body_html",
            "body_quoted",
            "automatic",
            "external_id",
            "language",
            "language_script",
            "language_confidence",
            "created_at",
        ],
        message_rows,
    ));
    statements.extend(sources);
    // Webhook requests that brought these tickets (or re-delivered known ones) are recorded in
    // the same transaction.
    for (i, it) in items.iter().enumerate() {
        let Some(receipt) = &it.receipt else { continue };
        let ticket = match (&out[i], tickets.get(&i), duplicate_of.get(&i)) {
            (Some(Ok(Outcome::Existing(id))), _, _) => Some(*id),
            (None, Some(t), _) => Some(t.id),
            (None, None, Some(j)) => match (tickets.get(j), &out[*j]) {
                (Some(t), _) => Some(t.id),
                (None, Some(Ok(Outcome::Existing(id)))) => Some(*id),
                _ => None,
            },
            _ => None,
        };
        if ticket.is_some() {
            statements.push(receipt.insert("processed", None, ticket));
        }
    }
    statements.extend(search::insert_statement(docs));
    statements.extend(sla::insert_statement(&timers));
    let (event_insert, events) = event::insert_statement(events, event_ids);
    statements.extend(event_insert);
    db::exec_all(&txn, statements).await?;
    for (&i, &mid) in writing.iter().zip(&message_ids) {
        if !items[i].attachments.is_empty() {
            store_attachments(&txn, items[i].workspace_id, mid, &items[i].attachments).await?;
        }
    }
    txn.commit().await?;
    tracing::debug!(tickets = items.len(), elapsed = ?started.elapsed(), "ticket batch written");

    let mut results: Results = Vec::with_capacity(items.len());
    for (i, slot) in out.into_iter().enumerate() {
        results.push(match slot {
            Some(r) => r,
            None => match (tickets.remove(&i), duplicate_of.get(&i)) {
                (Some(t), _) => Ok(Outcome::Created(Box::new(t))),
                (None, Some(&j)) => match results.get(j) {
                    Some(Ok(Outcome::Created(t))) => Ok(Outcome::Existing(t.id)),
                    Some(Ok(Outcome::Existing(id))) => Ok(Outcome::Existing(*id)),
                    _ => Err(Error::Conflict("the first delivery of this external id failed; retry".into())),
                },
                (None, None) => Err(Error::Internal("ticket neither written nor rejected".into())),
            },
        });
    }
    Ok((results, events))
}
