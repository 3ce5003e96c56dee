//! Receipts: the raw inbound requests (webhooks, poll results) a channel received, stored in
//! `inbound_payloads` so an admin can see and replay them. Channels build a [`Receipt`]; the
//! domain stores it, in the same transaction as the message it became when there is one.

use sea_orm::ConnectionTrait;
use serde_json::{Value as Json, json};

use crate::db;
use crate::error::{Error, Result};

/// What a masked header value is stored as.
pub const MASKED: &str = "[masked]";

/// How long a node holds a stored payload it is delivering before the delivery worker of any
/// node may take it over (the node died, or lost its database connection). Long enough for a
/// poll batch of hundreds of mails; delivery is idempotent by external id, so a takeover
/// while the first node is still at work stores nothing twice.
pub const DELIVERY_LEASE_MS: i64 = 2 * 60 * 1000;

/// A webhook request to record in `inbound_payloads`. On the hot path — one message, handled —
/// it is written in the transaction that stores the message, so a webhook costs one write;
/// otherwise it is written on its own, before or instead of any delivery.
#[derive(Debug, Clone)]
pub struct Receipt {
    workspace_id: i64,
    channel_id: i64,
    received_at: i64,
    method: String,
    path: String,
    query: String,
    headers: String,
    body: Vec<u8>,
}

/// The parts of a received request, as the channel saw them.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method (or `POLL`).
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The query string.
    pub query: &'a str,
    /// The headers, in order, unmasked.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

/// Headers whose values are credentials: a stored payload is read by admins, listed, kept for
/// weeks and backed up, so it keeps that such a header was sent but not its value. The plugin
/// still gets the value for the call it makes.
fn secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "signature", "password", "auth", "cookie", "key", "session"].iter().any(|w| name.contains(w))
}

/// The request's headers as stored: secret-bearing values masked.
fn stored_headers(headers: &[(String, String)]) -> String {
    let masked: Vec<Json> =
        headers.iter().map(|(k, v)| if secret_header(k) { json!([k, MASKED]) } else { json!([k, v]) }).collect();
    Json::Array(masked).to_string()
}

impl Receipt {
    /// A request received now by the channel `channel_id` of `workspace_id`; secret-bearing
    /// headers are masked here, once.
    pub fn new(workspace_id: i64, channel_id: i64, request: Request<'_>) -> Receipt {
        Receipt {
            workspace_id,
            channel_id,
            received_at: crate::now_ms(),
            method: request.method.to_owned(),
            path: request.path.to_owned(),
            query: request.query.to_owned(),
            headers: stored_headers(request.headers),
            body: request.body.to_vec(),
        }
    }

    /// The insert of this request with its outcome (`ticket`: the ticket it reached).
    pub fn insert(&self, status: &str, error: Option<&str>, ticket: Option<i64>) -> db::Sql {
        let processed = (status != "received").then(crate::now_ms);
        // A request still to be delivered is leased to this node, which delivers it next; if
        // the node dies first, the delivery worker of any node takes it when the lease ends.
        let lease = (status == "received").then(|| crate::now_ms() + DELIVERY_LEASE_MS);
        (
            "INSERT INTO inbound_payloads (workspace_id, channel_id, received_at, method, path, query, headers, body, size, status, error, attempts, processed_at, result, locked_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id".into(),
            vec![
                self.workspace_id.into(),
                self.channel_id.into(),
                self.received_at.into(),
                self.method.clone().into(),
                self.path.clone().into(),
                self.query.clone().into(),
                self.headers.clone().into(),
                self.body.clone().into(),
                (self.body.len() as i64).into(),
                status.into(),
                error.map(str::to_owned).into(),
                i32::from(processed.is_some()).into(),
                processed.into(),
                ticket.map(|t| json!({ "tickets": [t] }).to_string()).into(),
                lease.into(),
            ],
        )
    }

    /// Writes the request on its own; returns its id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn store<C: ConnectionTrait>(&self, db: &C, status: &str, error: Option<&str>) -> Result<i64> {
        let (sql, values) = self.insert(status, error, None);
        let row =
            db::query_one(db, &sql, values).await?.ok_or_else(|| Error::Internal("insert returned no id".into()))?;
        db::col(&row, "id")
    }
}
