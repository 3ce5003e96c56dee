//! Outgoing webhooks: named addresses of a workspace (`POST /api/v1/webhooks`) that workflows
//! call with `webhook("name", #{ … })`.
//!
//! A call is queued in the transaction of the event's actions (`webhook_deliveries`), so it is
//! sent exactly when the actions committed, and a worker POSTs it:
//!
//! ```json
//! {"delivery_id": 12, "webhook": "crm", "workspace_id": 1, "ticket_id": 7, "actor": "workflow:3",
//!  "payload": { … what the workflow gave … }, "created_at": "2026-11-24T10:00:00.000Z"}
//! ```
//!
//! with `X-Plugdesk-Delivery: 12` and, when the webhook has a secret,
//! `X-Plugdesk-Signature: sha256=HEX` (HMAC-SHA256 of the body with the secret). A 2xx answer
//! delivers it; 408, 429, 5xx, timeouts and refused connections are retried after
//! `webhook_retry_base_ms`, doubling up to an hour, until `webhook_max_attempts`; other 4xx
//! answers fail it at once. Redirects are not followed. Rows are claimed with a lease, so with
//! several nodes each call is sent by one of them (a crash mid-send may send it twice; the
//! delivery id lets the receiver deduplicate). Up to `webhook_concurrency` requests are in
//! flight at once, taken round-robin across workspaces with at most half for one workspace,
//! so an endpoint that never answers holds up only its own workspace's calls.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sea_orm::ConnectionTrait;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::db;
use crate::error::{Error, Result};

static WAKE: Notify = Notify::const_new();
const LEASE_MS: i64 = 60_000;
const BATCH: i64 = 16;
/// Largest payload a workflow may send, bytes of JSON.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Wakes the worker: a call was queued.
pub fn wake() {
    WAKE.notify_one();
}

/// A webhook to create or replace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// The name workflows call it by (`a-z 0-9 _ -`).
    pub name: String,
    /// `http://` or `https://` address.
    pub url: String,
    /// Signs each body (HMAC-SHA256) when set; never shown again.
    #[serde(default)]
    pub secret: Option<String>,
}

fn view(r: &sea_orm::QueryResult) -> Result<Json> {
    let secret: Option<String> = db::col(r, "secret")?;
    Ok(json!({
        "id": db::col::<i64>(r, "id")?,
        "name": db::col::<String>(r, "name")?,
        "url": db::col::<String>(r, "url")?,
        "signed": secret.is_some(),
        "updated_at": crate::rfc3339(db::col(r, "updated_at")?),
    }))
}

/// Creates (or replaces, by name) a webhook.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or address.
pub async fn save(core: &crate::Core, workspace_id: i64, input: &WebhookInput) -> Result<Json> {
    let name = input.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(Error::invalid("name", "name must be 1-64 characters of a-z, 0-9, _ or -"));
    }
    let url = reqwest::Url::parse(input.url.trim())
        .map_err(|e| Error::invalid("url", format!("{:?} is not an address: {e}", input.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::invalid("url", "the address must be http:// or https:// with a host"));
    }
    // An internal address written as a literal is refused now; names are checked when the
    // delivery connects (they may resolve differently by then).
    if url
        .host_str()
        .is_some_and(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok())
    {
        core.channels().egress.check_url(url.as_str()).map_err(|why| Error::invalid("url", why))?;
    }
    let now = crate::now_ms();
    let txn = db::begin_write(core.db()).await?;
    let existing = db::query_one(
        &txn,
        "SELECT id FROM webhooks WHERE workspace_id = ? AND name = ?",
        vec![workspace_id.into(), name.into()],
    )
    .await?;
    let secret = input.secret.as_deref().filter(|s| !s.is_empty()).map(crate::secret::seal).transpose()?;
    match existing {
        Some(r) => {
            db::exec(
                &txn,
                "UPDATE webhooks SET url = ?, secret = ?, updated_at = ? WHERE id = ?",
                vec![url.to_string().into(), secret.into(), now.into(), db::col::<i64>(&r, "id")?.into()],
            )
            .await?;
        }
        None => {
            db::exec(
                &txn,
                "INSERT INTO webhooks (workspace_id, name, url, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![workspace_id.into(), name.into(), url.to_string().into(), secret.into(), now.into(), now.into()],
            )
            .await?;
        }
    }
    txn.commit().await?;
    let r = db::query_one(
        core.db(),
        "SELECT * FROM webhooks WHERE workspace_id = ? AND name = ?",
        vec![workspace_id.into(), name.into()],
    )
    .await?
    .ok_or(Error::NotFound("webhook"))?;
    view(&r)
}

/// The workspace's webhooks.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Core, workspace_id: i64) -> Result<Json> {
    let rows = db::query_all(
        core.db(),
        "SELECT * FROM webhooks WHERE workspace_id = ? ORDER BY name",
        vec![workspace_id.into()],
    )
    .await?;
    Ok(json!({ "items": rows.iter().map(view).collect::<Result<Vec<_>>>()? }))
}

/// The latest deliveries of the workspace (newest first, at most 100).
///
/// # Errors
/// Database errors.
pub async fn deliveries(core: &crate::Core, workspace_id: i64) -> Result<Json> {
    let rows = db::query_all(
        core.db(),
        "SELECT d.*, w.name FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.workspace_id = ? ORDER BY d.id DESC LIMIT 100",
        vec![workspace_id.into()],
    )
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "id": db::col::<i64>(r, "id")?,
                "webhook": db::col::<String>(r, "name")?,
                "ticket_id": db::col::<Option<i64>>(r, "ticket_id")?,
                "actor": db::col::<String>(r, "actor")?,
                "status": db::col::<String>(r, "status")?,
                "attempts": db::col::<i32>(r, "attempts")?,
                "response_status": db::col::<Option<i32>>(r, "response_status")?,
                "last_error": db::col::<Option<String>>(r, "last_error")?,
                "payload": serde_json::from_str::<Json>(&db::col::<String>(r, "payload")?)?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({ "items": items }))
}

/// Deletes a webhook (its pending deliveries are dropped).
///
/// # Errors
/// [`Error::NotFound`].
pub async fn delete(core: &crate::Core, workspace_id: i64, name: &str) -> Result<()> {
    let txn = db::begin_write(core.db()).await?;
    let r = db::query_one(
        &txn,
        "SELECT id FROM webhooks WHERE workspace_id = ? AND name = ?",
        vec![workspace_id.into(), name.into()],
    )
    .await?
    .ok_or(Error::NotFound("webhook"))?;
    let id: i64 = db::col(&r, "id")?;
    db::exec(&txn, "DELETE FROM webhook_deliveries WHERE webhook_id = ?", vec![id.into()]).await?;
    db::exec(&txn, "DELETE FROM webhooks WHERE id = ?", vec![id.into()]).await?;
    txn.commit().await?;
    Ok(())
}

/// Queues a call inside the caller's transaction.
///
/// # Errors
/// [`Error::Invalid`] for an unknown webhook or a payload over 64 KiB.
pub(crate) async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    workspace_id: i64,
    name: &str,
    ticket_id: i64,
    actor: &str,
    payload: &Json,
    now: i64,
) -> Result<i64> {
    let hook = db::query_one(
        txn,
        "SELECT id FROM webhooks WHERE workspace_id = ? AND name = ?",
        vec![workspace_id.into(), name.into()],
    )
    .await?
    .ok_or_else(|| Error::invalid("webhook", format!("the workspace has no webhook named {name:?}")))?;
    let payload = payload.to_string();
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::invalid("webhook", format!("payload of {} bytes; at most {MAX_PAYLOAD}", payload.len())));
    }
    let r = db::query_one(
        txn,
        "INSERT INTO webhook_deliveries (workspace_id, webhook_id, ticket_id, actor, payload, status, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            db::col::<i64>(&hook, "id")?.into(),
            ticket_id.into(),
            actor.into(),
            payload.into(),
            now.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    db::col(&r, "id")
}

/// Sends due deliveries for as long as the server runs.
pub async fn run(core: crate::Core) {
    let cfg = core.rules().clone();
    // The workspace admin chooses the URL: only addresses the egress policy allows are reached.
    let client = match crate::egress::client_builder(&core.channels().egress)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(cfg.webhook_timeout_ms.max(100)))
        .user_agent(concat!("plugdesk/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not start");
            return;
        }
    };
    let limit = cfg.webhook_concurrency.max(1);
    // One workspace may fill at most half the slots, so an endpoint that stalls (each request
    // holds its slot until the timeout) leaves the other half to everyone else.
    let per_workspace = (limit / 2).max(1);
    let mut in_flight: JoinSet<i64> = JoinSet::new();
    let mut busy: HashMap<i64, usize> = HashMap::new();
    loop {
        if in_flight.len() < limit {
            match pass(&core, limit - in_flight.len(), per_workspace, &busy).await {
                Ok(due) => {
                    for d in due {
                        *busy.entry(d.workspace_id).or_default() += 1;
                        let (core, client) = (core.clone(), client.clone());
                        in_flight.spawn(async move {
                            let ws = d.workspace_id;
                            if let Err(e) = send(&core, &client, d).await {
                                tracing::warn!(error = %e, "webhook delivery could not be recorded");
                            }
                            ws
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook pass failed"),
            }
        }
        tokio::select! {
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(ws) = done
                    && let Some(n) = busy.get_mut(&ws)
                {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        busy.remove(&ws);
                    }
                }
                // A task that panicked lost its workspace id: recount from what is left.
                if done.is_err() {
                    busy.clear();
                }
            }
            () = WAKE.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(cfg.tick_ms.max(10))) => {}
        }
    }
}

/// A delivery claimed for sending.
struct Due {
    id: i64,
    workspace_id: i64,
    attempts: i32,
    url: String,
    secret: Option<String>,
    body: String,
}

/// Claims up to `free` due deliveries, taking them round-robin across workspaces (the oldest
/// of each first) and at most `per_workspace` in flight for one workspace.
async fn pass(core: &crate::Core, free: usize, per_workspace: usize, busy: &HashMap<i64, usize>) -> Result<Vec<Due>> {
    let now = crate::now_ms();
    let due = db::query_all(
        core.db(),
        "SELECT * FROM (SELECT d.id, d.workspace_id, d.ticket_id, d.actor, d.payload, d.attempts, d.created_at, w.name, w.url, w.secret, ROW_NUMBER() OVER (PARTITION BY d.workspace_id ORDER BY d.id) AS turn FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.status IN ('queued', 'retrying') AND d.next_attempt_at <= ? AND (d.locked_until IS NULL OR d.locked_until < ?)) x WHERE x.turn <= ? ORDER BY x.turn, x.id LIMIT ?",
        vec![now.into(), now.into(), (per_workspace as i64).into(), BATCH.into()],
    )
    .await?;
    let mut taken: HashMap<i64, usize> = HashMap::new();
    let mut out = Vec::new();
    for d in &due {
        if out.len() >= free {
            break;
        }
        let workspace_id: i64 = db::col(d, "workspace_id")?;
        let n = taken.entry(workspace_id).or_insert_with(|| busy.get(&workspace_id).copied().unwrap_or(0));
        if *n >= per_workspace {
            continue;
        }
        let id: i64 = db::col(d, "id")?;
        let claimed = db::exec(
            core.db(),
            "UPDATE webhook_deliveries SET locked_until = ? WHERE id = ? AND (locked_until IS NULL OR locked_until < ?)",
            vec![(now + LEASE_MS).into(), id.into(), now.into()],
        )
        .await?;
        if claimed != 1 {
            continue;
        }
        *n += 1;
        let body = json!({
            "delivery_id": id,
            "webhook": db::col::<String>(d, "name")?,
            "workspace_id": workspace_id,
            "ticket_id": db::col::<Option<i64>>(d, "ticket_id")?,
            "actor": db::col::<String>(d, "actor")?,
            "payload": serde_json::from_str::<Json>(&db::col::<String>(d, "payload")?)?,
            "created_at": crate::rfc3339(db::col(d, "created_at")?),
        })
        .to_string();
        out.push(Due {
            id,
            workspace_id,
            attempts: db::col::<i32>(d, "attempts")? + 1,
            url: db::col(d, "url")?,
            secret: db::col::<Option<String>>(d, "secret")?.map(|s| crate::secret::open(&s)).transpose()?,
            body,
        });
    }
    Ok(out)
}

/// Sends one claimed delivery and records the outcome.
async fn send(core: &crate::Core, client: &reqwest::Client, d: Due) -> Result<()> {
    let Due { id, attempts, url, secret, body, .. } = d;
    let refused = core.channels().egress.check_url(&url).err();
    let mut req =
        client.post(url).header("content-type", "application/json").header("x-plugdesk-delivery", id.to_string());
    if let Some(secret) = secret {
        req = req.header("x-plugdesk-signature", format!("sha256={}", sign(&secret, body.as_bytes())));
    }
    let sent = match refused {
        // Not sent: the operator has not allowed this internal address (an IP literal, which
        // never reaches the resolver's check).
        Some(why) => Err(why),
        None => req
            .body(body)
            .send()
            .await
            .map_err(|e| crate::egress::refusal(&e).unwrap_or_else(|| format!("request failed: {e}"))),
    };
    let (outcome, status) = match sent {
        Ok(resp) => {
            let code = resp.status().as_u16();
            if resp.status().is_success() {
                (Outcome::Delivered, Some(code))
            } else if code == 408 || code == 429 || code >= 500 {
                (Outcome::Retry(format!("HTTP {code}")), Some(code))
            } else {
                (Outcome::Fail(format!("HTTP {code}")), Some(code))
            }
        }
        // A refused address stays refused until the operator changes the configuration.
        Err(e) if crate::egress::is_refused(&e) => (Outcome::Fail(e), None),
        Err(e) => (Outcome::Retry(e), None),
    };
    let cfg = core.rules();
    let now = crate::now_ms();
    let (state, error, next) = match outcome {
        Outcome::Delivered => ("delivered", None, now),
        Outcome::Fail(e) => ("failed", Some(e), now),
        Outcome::Retry(e) if attempts as u32 >= cfg.webhook_max_attempts.max(1) => ("failed", Some(e), now),
        Outcome::Retry(e) => {
            let wait = crate::outbox::backoff(Duration::from_millis(cfg.webhook_retry_base_ms), attempts as u32);
            ("retrying", Some(e), now + wait.as_millis() as i64)
        }
    };
    if let Some(e) = &error {
        tracing::warn!(delivery = id, error = %e, state, "webhook delivery failed");
    }
    db::exec(
        core.db(),
        "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_error = ?, response_status = ?, next_attempt_at = ?, locked_until = NULL, updated_at = ? WHERE id = ?",
        vec![
            state.into(),
            attempts.into(),
            error.into(),
            status.map(i32::from).into(),
            next.into(),
            now.into(),
            id.into(),
        ],
    )
    .await?;
    Ok(())
}

enum Outcome {
    Delivered,
    Retry(String),
    Fail(String),
}

/// Hex HMAC-SHA256 of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
