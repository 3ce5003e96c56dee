//! The agent workspace under load: the server time of the inbox (each built-in view, 50 rows)
//! and of a ticket page with 50 messages, how soon a customer's message reaches an open page's
//! live stream, and what 50 connected agents cost in memory. Signs in through the workspace's
//! setup link, as an admin would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Stats, http, load, pct_ms, rss_mb};
use crate::error::{Error, Result};

/// Agents connected at once for the memory figure (the "50 agents").
const AGENTS: usize = 50;
/// Customer messages timed from the API to an open page's stream.
const LIVE_SAMPLES: usize = 40;

/// What the pages need: the server, the workspace's setup token and API token.
pub(super) struct Target<'a> {
    pub(super) base: &'a str,
    pub(super) setup_token: &'a str,
    pub(super) api_token: &'a str,
    pub(super) pid: u32,
    pub(super) clients: u64,
    pub(super) queries: u64,
}

/// Runs the page figures.
///
/// # Errors
/// When signing in fails or a page answers with an error.
pub(super) async fn run(client: &reqwest::Client, t: &Target<'_>) -> Result<()> {
    let cookie = Arc::new(sign_in(client, t.base, t.setup_token).await?);
    let ticket = conversation(client, t.base, t.api_token, 50).await?;
    for view in ["mine", "unassigned", "teams", "open", "pending", "due", "breached"] {
        let stats = page_load(client, t, &cookie, format!("/inbox?view={view}")).await?;
        stats.print(&format!("inbox page, view {view} (50 rows)"), t.clients);
    }
    for sort in ["newest", "customer"] {
        let stats = page_load(client, t, &cookie, format!("/inbox?view=open&sort={sort}")).await?;
        stats.print(&format!("inbox page, all open, sort {sort}"), t.clients);
    }
    let stats = page_load(client, t, &cookie, format!("/tickets/{ticket}")).await?;
    stats.print("ticket page with 50 messages", t.clients);
    live_latency(client, t, &cookie, ticket).await?;
    live_memory(client, t, &cookie).await
}

/// The cookie header of a session made through the setup link.
async fn sign_in(client: &reqwest::Client, base: &str, setup_token: &str) -> Result<String> {
    let url = format!("{base}/setup/{setup_token}");
    let form = client.get(&url).send().await.map_err(http)?;
    let pre = set_cookie(form.headers(), "pd_pre").ok_or_else(|| Error::Internal("no pd_pre cookie".into()))?;
    let body = form.text().await.map_err(http)?;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| Error::Internal("no csrf field on the setup page".into()))?
        .to_owned();
    let password = "benchmark password";
    let done = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(http)?
        .post(&url)
        .header("cookie", format!("pd_pre={pre}"))
        .header("origin", base)
        .form(&[("csrf", csrf.as_str()), ("password", password), ("password_confirm", password)])
        .send()
        .await
        .map_err(http)?;
    let session = set_cookie(done.headers(), "pd_session")
        .ok_or_else(|| Error::Internal(format!("setup answered {} without a session", done.status())))?;
    Ok(format!("pd_session={session}"))
}

fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).and_then(|rest| rest.split(';').next()).map(str::to_owned))
}

/// A ticket with `n` messages (the first and `n - 1` more from the customer); its id.
async fn conversation(client: &reqwest::Client, base: &str, token: &str, n: usize) -> Result<i64> {
    let t: serde_json::Value = client
        .post(format!("{base}/api/v1/tickets"))
        .bearer_auth(token)
        .json(&json!({ "subject": "A long conversation", "body": "Message 1 of the conversation.", "customer": { "email": "long@example.com", "name": "Long Talker" } }))
        .send()
        .await
        .map_err(http)?
        .json()
        .await
        .map_err(http)?;
    let id = t["id"].as_i64().ok_or_else(|| Error::Internal(format!("no ticket: {t}")))?;
    for i in 2..=n {
        let r = client
            .post(format!("{base}/api/v1/tickets/{id}/messages"))
            .bearer_auth(token)
            .json(&json!({ "body": format!("Message {i} of the conversation: {}", "some words of text ".repeat(20)) }))
            .send()
            .await
            .map_err(http)?;
        if !r.status().is_success() {
            return Err(Error::Internal(format!("adding a message answered {}", r.status())));
        }
    }
    Ok(id)
}

async fn page_load(client: &reqwest::Client, t: &Target<'_>, cookie: &Arc<String>, path: String) -> Result<Stats> {
    let (client, url, cookie) = (client.clone(), format!("{}{path}", t.base), cookie.clone());
    let url = Arc::new(url);
    load(t.clients, t.queries, move |_| {
        let (client, url, cookie) = (client.clone(), url.clone(), cookie.clone());
        async move {
            let r = client.get(url.as_str()).header("cookie", cookie.as_str()).send().await.map_err(http)?;
            if !r.status().is_success() {
                return Err(Error::Internal(format!("{url} answered {}", r.status())));
            }
            r.bytes().await.map_err(http)?;
            Ok(())
        }
    })
    .await
}

/// Opens the live stream of a page as an agent.
async fn stream(client: &reqwest::Client, base: &str, cookie: &str) -> Result<reqwest::Response> {
    let r = client.get(format!("{base}/live")).header("cookie", cookie).send().await.map_err(http)?;
    if !r.status().is_success() {
        return Err(Error::Internal(format!("/live answered {}", r.status())));
    }
    Ok(r)
}

/// From a customer's message stored (the API's answer) to its event on an open stream.
async fn live_latency(client: &reqwest::Client, t: &Target<'_>, cookie: &str, ticket: i64) -> Result<()> {
    let mut live = stream(client, t.base, cookie).await?;
    let mut lat = Vec::with_capacity(LIVE_SAMPLES);
    let needle = format!("\"ticket_id\":{ticket},\"type\":\"message.received\"");
    for i in 0..LIVE_SAMPLES {
        let r = client
            .post(format!("{}/api/v1/tickets/{ticket}/messages", t.base))
            .bearer_auth(t.api_token)
            .json(&json!({ "body": format!("Live message {i}") }))
            .send()
            .await
            .map_err(http)?;
        let stored = Instant::now();
        if !r.status().is_success() {
            return Err(Error::Internal(format!("adding a message answered {}", r.status())));
        }
        let mut seen = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
                .await
                .map_err(|_| Error::Internal("no live event within 10 s".into()))?
                .map_err(http)?
                .ok_or_else(|| Error::Internal("the live stream ended".into()))?;
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&needle) {
                break;
            }
        }
        lat.push(stored.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    println!(
        "customer message → open page's live stream          p50 {:>6.2} ms   p95 {:>6.2} ms   ({LIVE_SAMPLES} messages)",
        pct_ms(&lat, 0.50) as f64 / 1000.0,
        pct_ms(&lat, 0.95) as f64 / 1000.0,
    );
    Ok(())
}

/// Resident memory before and with 50 open live streams.
async fn live_memory(client: &reqwest::Client, t: &Target<'_>, cookie: &str) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_mb(t.pid);
    let mut open = Vec::with_capacity(AGENTS);
    for _ in 0..AGENTS {
        let mut s = stream(client, t.base, cookie).await?;
        // The first events (counts, the bell) arrive at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.chunk()).await;
        open.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mb(t.pid);
    println!("{AGENTS} agents with live updates open                  {:>9.1} MB more resident memory", after - before);
    drop(open);
    Ok(())
}
