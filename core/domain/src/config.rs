//! Configuration: `plugdesk.toml` (optional), then environment variables, then command-line
//! flags, each overriding the one before.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Everything `plugdesk serve` needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: the SQLite file lives here.
    pub data: PathBuf,
    /// Address the HTTP server listens on.
    pub listen: String,
    /// PostgreSQL URL; empty means the SQLite file in `data`.
    pub database_url: Option<String>,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// How often the SLA scheduler looks for due clocks, in milliseconds.
    pub sla_tick_ms: u64,
    /// Database connections of the server (default: 4 on SQLite, 16 on PostgreSQL).
    pub pool_size: Option<u32>,
    /// Extra channel plugins (`*.wasm` components) loaded at start besides the bundled ones
    /// (default: `plugins/` in the data directory).
    pub plugins_dir: Option<PathBuf>,
    /// Extra certificate authorities (a PEM file) that plugins' TLS connections trust besides
    /// the public web PKI: a mail server or an API with a company CA or a self-signed
    /// certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// Input size limits.
    pub limits: Limits,
    /// Outbound delivery.
    pub outbox: Outbox,
    /// The address customers and agents reach this server at, for links in templates (survey,
    /// ticket); default `http://` + `listen`.
    pub public_url: Option<String>,
    /// Workflow actions: automatic-reply cap, follow-ups, schedules, outgoing webhooks.
    pub workflows: Workflows,
    /// Bearer token Prometheus sends to scrape `/metrics`; without it `/metrics` answers 404
    /// (the counters name every workspace's channels and workflows: operator data).
    pub metrics_token: Option<String>,
    /// API tokens: how long a node trusts its cached lookup, and the per-token rate limit.
    pub auth: Auth,
    /// The public inbound path: rate limits of hooks and survey pages, where client addresses
    /// come from, retention of stored payloads, retries of their delivery.
    pub channels: Channels,
    /// The worker pool of template renders, previews, dry runs and replays.
    pub compute: Compute,
    /// Outbound connections: the internal addresses webhooks and plugins may reach.
    pub network: Network,
    /// HTTP server: timeouts for slow clients and caps on connections and plugin calls.
    pub server: Server,
}

/// Where webhooks and plugins may connect. Loopback, private, link-local, shared (CGNAT),
/// multicast and unspecified addresses are refused unless listed here; only the operator
/// (this file), never a workspace, widens it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// CIDRs (`10.1.2.0/24`), addresses, or `host[:port]` that may be reached although
    /// internal.
    pub allow: Vec<String>,
}

/// Limits of the HTTP server against slow or greedy clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Time a client has to send a request's headers, in milliseconds; also how long a
    /// kept-alive connection may wait for its next request.
    pub header_timeout_ms: u64,
    /// Time a request may take from its headers to the answer (reading the body included),
    /// in milliseconds; beyond it the client gets 408.
    pub request_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long is closed, in
    /// milliseconds (a client that stopped reading the answer or sending the body).
    pub idle_timeout_ms: u64,
    /// Open connections at most; further ones wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Plugin calls that HTTP requests (channel hooks) run at once; a request beyond waits up
    /// to `plugin_call_wait_ms`, then gets 503 with `Retry-After`.
    pub max_plugin_calls: usize,
    /// How long a hook request waits for a free plugin call, in milliseconds.
    pub plugin_call_wait_ms: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            max_plugin_calls: 32,
            plugin_call_wait_ms: 2_000,
        }
    }
}

/// The worker pool CPU-heavy work runs on (see `compute`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compute {
    /// Renders, previews, dry runs and replay steps running at once (default: the cores).
    pub workers: Option<usize>,
    /// How long a preview, dry run or replay waits for a free worker before it is answered
    /// 503, in milliseconds.
    pub queue_ms: u64,
    /// Wall-clock time one workflow replay may take, in milliseconds; it stops there and says
    /// so in its answer.
    pub replay_ms: u64,
}

impl Default for Compute {
    fn default() -> Self {
        Compute { workers: None, queue_ms: 5000, replay_ms: 10_000 }
    }
}

/// Limits of the public inbound path (`/hooks/…`, `/survey/…`) and of what it stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Channels {
    /// Hook requests one client address may make per second, sustained (0: no limit).
    pub hook_per_address_per_second: f64,
    /// Hook requests one client address may make at once before the per-second rate applies.
    pub hook_per_address_burst: f64,
    /// Hook requests one channel takes per second, sustained, from all addresses (0: no limit).
    pub hook_per_channel_per_second: f64,
    /// Hook requests one channel takes at once before its per-second rate applies.
    pub hook_per_channel_burst: f64,
    /// Survey page loads and answers one client address may make per second (0: no limit).
    pub survey_per_address_per_second: f64,
    /// Survey requests one client address may make at once.
    pub survey_per_address_burst: f64,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client;
    /// a request from any other peer is limited by the peer's own address. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Days a processed payload is kept (its message lives on in the ticket).
    pub processed_retention_days: u32,
    /// Days a rejected payload (refused by the plugin, too large) is kept.
    pub rejected_retention_days: u32,
    /// Bytes of stored payloads one channel keeps at most; beyond it the oldest rejected, then
    /// the oldest processed payloads are dropped (never those still to be processed).
    pub max_stored_bytes_per_channel: u64,
    /// How often the payload cleaner runs, in milliseconds.
    pub cleanup_interval_ms: u64,
    /// Delay before a stored payload's delivery is retried, in milliseconds (doubling, ≤ 1 h).
    pub delivery_retry_base_ms: u64,
    /// Delivery attempts before a stored payload is marked `failed`.
    pub delivery_max_attempts: u32,
}

impl Default for Channels {
    fn default() -> Self {
        // Generous: one busy site behind a NAT, or a messenger's webhook fan-out, stays far
        // below these, while one client can no longer fill a channel's disk or CPU alone.
        Channels {
            hook_per_address_per_second: 200.0,
            hook_per_address_burst: 400.0,
            hook_per_channel_per_second: 5000.0,
            hook_per_channel_burst: 5000.0,
            survey_per_address_per_second: 1.0,
            survey_per_address_burst: 20.0,
            trusted_proxies: Vec::new(),
            processed_retention_days: 30,
            rejected_retention_days: 7,
            max_stored_bytes_per_channel: 1 << 30,
            cleanup_interval_ms: 10 * 60 * 1000,
            delivery_retry_base_ms: 2000,
            delivery_max_attempts: 8,
        }
    }
}

/// API token checks and the per-token request budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// How long a node reuses a token lookup (token, agent role, agent active) before asking
    /// the database again, in milliseconds. On PostgreSQL changes reach every node at once by
    /// `LISTEN/NOTIFY`; this bounds staleness when a notification is lost (or on several
    /// nodes sharing one SQLite file).
    pub token_cache_ms: u64,
    /// Requests per second one API token may make on one node (token bucket); 0 turns the
    /// limit off.
    pub rate_per_second: u32,
    /// Requests a token may burst above the steady rate.
    pub rate_burst: u32,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { token_cache_ms: 5000, rate_per_second: 50, rate_burst: 200 }
    }
}

/// Limits and timing of what workflows do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workflows {
    /// Automatic replies (workflows' and automations') one customer gets per hour at most;
    /// further ones become an internal note saying the reply was held back.
    pub auto_replies_per_hour: u32,
    /// How often due follow-ups and cron schedules are looked for, in milliseconds.
    pub tick_ms: u64,
    /// Delay before an outgoing webhook's first retry, in milliseconds (doubling, ≤ 1 h).
    pub webhook_retry_base_ms: u64,
    /// Attempts before a webhook delivery is given up (`failed`).
    pub webhook_max_attempts: u32,
    /// Time one webhook request may take, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Outgoing webhook requests in flight at once on a node (one workspace gets at most half).
    pub webhook_concurrency: usize,
    /// Workspaces whose events one node handles at the same time.
    pub dispatch_concurrency: usize,
    /// Times the dispatcher tries an event whose handling failed or never finished (the
    /// process died) before it sets the event aside as poisoned.
    pub dispatch_attempts: u32,
}

impl Default for Workflows {
    fn default() -> Self {
        Workflows {
            auto_replies_per_hour: 5,
            tick_ms: 1000,
            webhook_retry_base_ms: 2000,
            webhook_max_attempts: 8,
            webhook_timeout_ms: 10_000,
            webhook_concurrency: 8,
            dispatch_concurrency: 4,
            dispatch_attempts: 3,
        }
    }
}

/// How the outbox delivers replies through channel plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbox {
    /// Delay before the first retry of a retryable failure, in milliseconds; each further retry
    /// waits twice as long (capped at one hour).
    pub retry_base_ms: u64,
    /// Attempts before a message goes to the dead letters.
    pub max_attempts: u32,
    /// How often the worker looks for due messages when nothing wakes it, in milliseconds.
    pub tick_ms: u64,
    /// How often the poll scheduler looks for channels due to be polled, in milliseconds.
    pub poll_tick_ms: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { retry_base_ms: 2000, max_attempts: 8, tick_ms: 500, poll_tick_ms: 250 }
    }
}

/// Size limits on input. Every input has one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes (JSON with base64 attachments included).
    pub max_body_bytes: usize,
    /// Largest single attachment, in bytes (decoded).
    pub max_attachment_bytes: usize,
    /// Longest ticket subject, in characters.
    pub max_subject_chars: usize,
    /// Longest message body, in bytes.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_attachment_bytes: 10 * 1024 * 1024,
            max_subject_chars: 500,
            max_message_bytes: 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("./data"),
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            log_format: "text".into(),
            sla_tick_ms: 1000,
            pool_size: None,
            plugins_dir: None,
            tls_ca_file: None,
            limits: Limits::default(),
            outbox: Outbox::default(),
            public_url: None,
            workflows: Workflows::default(),
            metrics_token: None,
            auth: Auth::default(),
            channels: Channels::default(),
            compute: Compute::default(),
            network: Network::default(),
            server: Server::default(),
        }
    }
}

impl Config {
    /// Reads `path` if given, else `./plugdesk.toml` if present, else defaults; then applies
    /// `PLUGDESK_DATA`, `PLUGDESK_LISTEN`, `DATABASE_URL`, `PLUGDESK_LOG_FORMAT`,
    /// `PLUGDESK_METRICS_TOKEN`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and what is wrong in it.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let default_path = Path::new("plugdesk.toml");
        let mut cfg = match path {
            Some(p) => Self::from_file(p)?,
            None if default_path.exists() => Self::from_file(default_path)?,
            None => Config::default(),
        };
        if let Ok(v) = std::env::var("PLUGDESK_DATA") {
            cfg.data = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("PLUGDESK_LISTEN") {
            cfg.listen = v;
        }
        if let Ok(v) = std::env::var("DATABASE_URL") {
            cfg.database_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Ok(v) = std::env::var("PLUGDESK_LOG_FORMAT") {
            cfg.log_format = v;
        }
        if let Ok(v) = std::env::var("PLUGDESK_METRICS_TOKEN") {
            cfg.metrics_token = Some(v).filter(|s| !s.is_empty());
        }
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The address links in templates start with (no trailing slash).
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_owned()
    }

    /// The database URL: `database_url`, or the SQLite file in `data`.
    pub fn database_url(&self) -> String {
        crate::db::database_url(&self.data, self.database_url.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_in_the_file_are_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("plugdesk-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("plugdesk.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\nlisten_port = 3\n").ok();
        let err = Config::load(Some(&p)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("plugdesk.toml") && err.contains("listen_port"), "{err}");
        std::fs::write(&p, "listen = \"127.0.0.1:9\"\n[limits]\nmax_body_bytes = 10\n").ok();
        let cfg = Config::load(Some(&p)).map_err(|e| e.to_string());
        assert_eq!(cfg.as_ref().map(|c| c.limits.max_body_bytes), Ok(10));
        std::fs::remove_dir_all(&dir).ok();
    }
}
