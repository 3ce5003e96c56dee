//! A remote service on 127.0.0.1 for the relay test channel: `POST /sink` takes replies (its
//! answers are scripted), `GET /feed?after=N` serves a queue of messages two at a time.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    /// Replies received: the authorization header and the JSON body.
    received: Vec<(String, Value)>,
    /// Statuses to answer the next sends with (then 200).
    script: VecDeque<u16>,
    feed: Vec<Value>,
    feed_fails: bool,
    feed_calls: Vec<String>,
    /// Every request to the sink as received: its `x-plugdesk-*` headers and raw body.
    raw: Vec<(Vec<(String, String)>, String)>,
}

/// The running fake; clones share it.
#[derive(Clone, Default)]
pub struct Remote {
    inner: Arc<Mutex<Inner>>,
    pub base: String,
}

impl Remote {
    pub async fn start() -> Remote {
        let mut remote = Remote::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind remote");
        remote.base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route("/sink", post(sink)).route("/feed", get(feed)).with_state(remote.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("remote serves") });
        remote
    }

    /// `host:port` for a grant.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn answer_next(&self, statuses: &[u16]) {
        self.inner.lock().expect("lock").script.extend(statuses);
    }

    pub fn received(&self) -> Vec<(String, Value)> {
        self.inner.lock().expect("lock").received.clone()
    }

    pub fn push_feed(&self, id: u64, from: &str, text: &str) {
        self.inner.lock().expect("lock").feed.push(json!({ "id": id.to_string(), "from": from, "text": text }));
    }

    pub fn set_feed_failing(&self, failing: bool) {
        self.inner.lock().expect("lock").feed_fails = failing;
    }

    /// Requests to the sink with their `x-plugdesk-*` headers and raw bodies.
    pub fn raw_received(&self) -> Vec<(Vec<(String, String)>, String)> {
        self.inner.lock().expect("lock").raw.clone()
    }

    pub fn feed_calls(&self) -> Vec<String> {
        self.inner.lock().expect("lock").feed_calls.clone()
    }
}

async fn sink(State(r): State<Remote>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let mut inner = r.inner.lock().expect("lock");
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    inner.received.push((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
    let ours = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-plugdesk-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    inner.raw.push((ours, body.clone()));
    let status = inner.script.pop_front().unwrap_or(200);
    if status == 200 {
        let n = inner.received.len();
        (StatusCode::OK, json!({ "delivery_id": format!("d-{n}") }).to_string())
    } else {
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), format!("scripted {status}"))
    }
}

#[derive(serde::Deserialize)]
struct After {
    after: String,
}

async fn feed(State(r): State<Remote>, Query(q): Query<After>) -> (StatusCode, String) {
    let mut inner = r.inner.lock().expect("lock");
    inner.feed_calls.push(q.after.clone());
    if inner.feed_fails {
        return (StatusCode::INTERNAL_SERVER_ERROR, "feed down".into());
    }
    let after: u64 = q.after.parse().unwrap_or(0);
    let newer: Vec<Value> = inner
        .feed
        .iter()
        .filter(|i| i["id"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) > after)
        .cloned()
        .collect();
    let page: Vec<Value> = newer.iter().take(2).cloned().collect();
    let next = page.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    (StatusCode::OK, json!({ "items": page, "next": next, "more": newer.len() > 2 }).to_string())
}
