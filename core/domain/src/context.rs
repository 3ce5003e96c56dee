//! The domain's context: what the domain's functions need from a running server (the database,
//! the event bus, caches, counters and limits), and nothing of the runtimes around it.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::Notify;

use crate::{auth, config, event, metrics, ticket};

/// Whether a channel plugin sends replies. The plugin registry answers it; the domain asks when
/// it decides whether a reply goes to the outbox, without knowing what a plugin is.
pub trait Senders: Send + Sync {
    /// True when the plugin `plugin_key` sends replies, or is not loaded right now (it may be by
    /// the time the outbox's worker runs).
    fn sends(&self, plugin_key: &str) -> bool;
}

/// The shared state of the domain. Cheap to clone.
#[derive(Clone)]
pub struct Domain {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    bus: event::Bus,
    tokens: auth::TokenCache,
    limiter: auth::RateLimiter,
    metrics_token: Option<String>,
    writer: ticket::Writer,
    metrics: metrics::Metrics,
    limits: config::Limits,
    outbox_wake: Arc<Notify>,
    public_url: String,
    senders: Arc<dyn Senders>,
}

impl Domain {
    /// Wraps an open, migrated database; starts the ticket writer (so: inside a Tokio runtime).
    pub fn new(db: DatabaseConnection, cfg: &config::Config, senders: Arc<dyn Senders>) -> Self {
        let bus = event::Bus::new();
        let writer = ticket::Writer::start(db.clone(), bus.clone());
        Domain {
            inner: Arc::new(Inner {
                db,
                bus,
                tokens: auth::TokenCache::new(&cfg.auth),
                limiter: auth::RateLimiter::new(&cfg.auth),
                metrics_token: cfg.metrics_token.clone().filter(|t| !t.is_empty()),
                writer,
                metrics: metrics::Metrics::default(),
                limits: cfg.limits.clone(),
                outbox_wake: Arc::new(Notify::new()),
                public_url: cfg.public_url(),
                senders,
            }),
        }
    }

    /// The database pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Which database we run on.
    pub fn backend(&self) -> DbBackend {
        self.inner.db.get_database_backend()
    }

    /// The in-process event bus.
    pub fn bus(&self) -> &event::Bus {
        &self.inner.bus
    }

    /// API token lookups, cached.
    pub fn tokens(&self) -> &auth::TokenCache {
        &self.inner.tokens
    }

    /// The per-token request budget.
    pub fn limiter(&self) -> &auth::RateLimiter {
        &self.inner.limiter
    }

    /// The bearer token `/metrics` asks for; `None` hides `/metrics`.
    pub fn metrics_token(&self) -> Option<&str> {
        self.inner.metrics_token.as_deref()
    }

    /// The group-commit writer that creates tickets.
    pub fn writer(&self) -> &ticket::Writer {
        &self.inner.writer
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Size limits on input.
    pub fn limits(&self) -> &config::Limits {
        &self.inner.limits
    }

    /// The address links in templates start with.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Which channel plugins send replies.
    pub fn senders(&self) -> &dyn Senders {
        self.inner.senders.as_ref()
    }

    /// The signal that wakes the outbox's worker (which lives outside the domain).
    pub fn outbox_signal(&self) -> &Arc<Notify> {
        &self.inner.outbox_wake
    }

    /// Wakes the outbox's worker: a reply was queued.
    pub fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }
}
