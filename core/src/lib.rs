//! Plugdesk's core: the runtimes around the domain (`plugdesk-domain`, re-exported here) —
//! channels and their plugins, the outbox's worker, the rules (workflows, automation plugins,
//! the dispatcher, schedules, webhooks) and templates. No HTTP server: the API
//! (`plugdesk-api`) and the binary with its tooling (`plugdesk`, in `core/cli`) sit on top.

pub mod action;
pub mod automation;
pub mod channel;
pub mod compute;
pub mod dispatch;
pub mod egress;
pub mod manifest;
pub mod outbox;
pub mod plugin;
pub mod schedule;
pub mod template;
pub mod webhook;
pub mod workflow;

use std::ops::Deref;
use std::sync::Arc;

// The domain lives in its own crate (`plugdesk-domain`), which cannot name a runtime; its
// modules are re-exported so `crate::ticket::…` here and `plugdesk_core::…` in tests still
// resolve.
pub use plugdesk_domain::error;
pub use plugdesk_domain::{
    Domain, Error, Result, Senders, account, agent, auth, calendar, config, context, customer, db, entity, event,
    inbox, language, metrics, now_ms, organization, receipt, rfc3339, search, secret, sla, survey, throttle, ticket,
    tier, workspace,
};

/// The shared state of a running core: the [`Domain`] (database, event bus, caches) and the
/// runtimes around it (plugins, workflows, templates, the compute pool). Cheap to clone; derefs
/// to the [`Domain`], so `&core` is what domain functions take.
#[derive(Clone)]
pub struct Core {
    inner: Arc<CoreInner>,
}

struct CoreInner {
    domain: Domain,
    channels: Arc<plugin::Registry>,
    outbox: outbox::Settings,
    channel_rows: channel::RowCache,
    workflows: workflow::Workflows,
    templates: template::Templates,
    compute: compute::Compute,
    rules: config::Workflows,
    inbound: config::Channels,
    throttles: throttle::Throttles,
}

impl Deref for Core {
    type Target = Domain;

    fn deref(&self) -> &Domain {
        &self.inner.domain
    }
}

impl Core {
    /// Wraps an open, migrated database. Plugins are loaded separately
    /// ([`plugin::Registry::run`]), in the background; compiled plugins are cached in the
    /// data directory's `cache/`.
    ///
    /// # Errors
    /// When the Wasm engine cannot start.
    pub fn new(db: sea_orm::DatabaseConnection, cfg: &config::Config) -> Result<Self> {
        let channels = Arc::new(plugin::Registry::new(
            plugdesk_host::Limits::default(),
            Some(cfg.data.join("cache").join("plugins")),
            cfg.tls_ca_file.as_deref(),
            Arc::new(egress::Policy::new(&cfg.network.allow)?),
            &cfg.server,
        )?);
        let domain = Domain::new(db, cfg, channels.clone());
        let outbox = outbox::Settings::new(&cfg.outbox, domain.outbox_signal().clone());
        let throttles = throttle::Throttles::new(&cfg.channels)?;
        Ok(Core {
            inner: Arc::new(CoreInner {
                domain,
                channels,
                outbox,
                channel_rows: channel::RowCache::default(),
                workflows: workflow::Workflows::default(),
                templates: template::Templates::default(),
                compute: compute::Compute::new(&cfg.compute),
                rules: cfg.workflows.clone(),
                inbound: cfg.channels.clone(),
                throttles,
            }),
        })
    }

    /// The domain's part of the state (what `&core` derefs to).
    pub fn domain(&self) -> &Domain {
        &self.inner.domain
    }

    /// The plugins and the call counters of the channels.
    pub fn channels(&self) -> &Arc<plugin::Registry> {
        &self.inner.channels
    }

    /// The workflow engine, compiled scripts and run counters.
    pub fn workflows(&self) -> &workflow::Workflows {
        &self.inner.workflows
    }

    /// The workspaces' compiled response templates.
    pub fn templates(&self) -> &template::Templates {
        &self.inner.templates
    }

    /// The bounded worker pool of renders, previews, dry runs and replays.
    pub fn compute(&self) -> &compute::Compute {
        &self.inner.compute
    }

    /// Limits and timing of workflow actions.
    pub fn rules(&self) -> &config::Workflows {
        &self.inner.rules
    }

    /// Limits, retention and retries of the inbound path.
    pub fn inbound(&self) -> &config::Channels {
        &self.inner.inbound
    }

    /// The rate limiters of the public endpoints.
    pub fn throttles(&self) -> &throttle::Throttles {
        &self.inner.throttles
    }

    /// The webhook path's copies of channel rows.
    pub fn channel_rows(&self) -> &channel::RowCache {
        &self.inner.channel_rows
    }

    /// The outbox's settings and its wake-up signal.
    pub fn outbox(&self) -> &outbox::Settings {
        &self.inner.outbox
    }
}
