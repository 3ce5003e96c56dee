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
}

impl Default for Workflows {
    fn default() -> Self {
        Workflows {
            auto_replies_per_hour: 5,
            tick_ms: 1000,
            webhook_retry_base_ms: 2000,
            webhook_max_attempts: 8,
            webhook_timeout_ms: 10_000,
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
            network: Network::default(),
            server: Server::default(),
        }
    }
}

impl Config {
    /// Reads `path` if given, else `./plugdesk.toml` if present, else defaults; then applies
    /// `PLUGDESK_DATA`, `PLUGDESK_LISTEN`, `DATABASE_URL`, `PLUGDESK_LOG_FORMAT`.
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
