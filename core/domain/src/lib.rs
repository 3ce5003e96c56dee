//! Plugdesk's domain: workspaces, customers, tiers, agents, tickets and messages, their storage
//! and migrations, the event log and bus, SLA clocks, surveys and search.
//!
//! It knows no runtime: no HTTP server, no Wasm plugin host, no Rhai, no Handlebars (its
//! Cargo.toml does not name them, so an import of one does not compile). What it needs from
//! them comes in through [`Senders`] (does a channel's plugin send replies?) and data its
//! callers prepare ([`workspace::Seed`]: the compiled default workflows). Functions that publish
//! events or read caches take the shared [`Domain`] context.

pub mod account;
pub mod agent;
pub mod auth;
pub mod calendar;
pub mod config;
pub mod context;
pub mod customer;
pub mod db;
pub mod entity;
pub mod error;
pub mod event;
pub mod inbox;
pub mod language;
pub mod metrics;
pub mod organization;
pub mod receipt;
pub mod search;
pub mod secret;
pub mod sla;
pub mod survey;
pub mod throttle;
pub mod ticket;
pub mod tier;
pub mod workspace;

pub use context::{Domain, Senders};
pub use error::{Error, Result};

/// Now, as Unix milliseconds: the unit every stored time uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored time as RFC 3339 text for the API.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
