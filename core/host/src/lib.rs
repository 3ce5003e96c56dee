//! The plugin host: compiles channel plugins (WebAssembly components built against the
//! `plugdesk:plugin` WIT package) and runs their calls in a sandbox. Every call gets a fresh
//! store (no state leaks between calls, channels or workspaces), a fuel budget (a
//! deterministic instruction bound), an epoch deadline (a wall-clock bound), a memory cap and
//! an output cap. The plugin sees only the host functions of the WIT `host` interface, each
//! checked against the capabilities granted to the channel instance.
//!
//! This crate knows nothing of tickets or databases: the core hands it bytes and a
//! [`Context`], and gets back plain Rust records.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "channel-plugin",
    });
}

mod automation_bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "automation-plugin",
        with: {
            "plugdesk:plugin/types": super::bindings::plugdesk::plugin::types,
            "plugdesk:plugin/host": super::bindings::plugdesk::plugin::host,
        },
    });
}

use automation_bindings::plugdesk::plugin::automation_types as wit_auto;
use bindings::plugdesk::plugin::{host as wit_host, types as wit};

/// The contract version this host implements.
pub const WIT_VERSION: &str = "0.2.0";
/// The export a channel plugin of [`WIT_VERSION`] provides.
const CHANNEL_EXPORT: &str = "plugdesk:plugin/channel@0.2.0";
/// The export an automation plugin of [`WIT_VERSION`] provides.
const AUTOMATION_EXPORT: &str = "plugdesk:plugin/automation@0.2.0";
/// How often the epoch advances; call deadlines are multiples of it.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Longest log line a plugin may write, and all it may log in one call.
const MAX_LOG_LINE: usize = 2048;
const MAX_LOG_PER_CALL: usize = 16 * 1024;

/// Why the host refused or stopped a plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a component we can run.
    #[error("{0}")]
    Load(String),
    /// The plugin was built against a contract version this host does not support.
    #[error(
        "plugin is built against plugdesk:plugin@{found}; this host supports {WIT_VERSION}: rebuild it with plugdesk-sdk {WIT_VERSION}"
    )]
    Version {
        /// The version it exports.
        found: String,
    },
    /// The call used up its fuel.
    #[error("stopped: used up its fuel ({0} units) — it may loop")]
    OutOfFuel(u64),
    /// The call ran past its deadline.
    #[error("stopped: ran longer than {0:?}")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past the cap.
    #[error("stopped: tried to use more than {0} bytes of memory")]
    Memory(usize),
    /// The plugin returned more than the output cap.
    #[error("returned {got} bytes, more than the limit of {limit}")]
    Output {
        /// Bytes returned.
        got: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin trapped (a panic, an unreachable, a bad memory access).
    #[error("crashed: {0}")]
    Trap(String),
}

/// Budgets of one call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel units (about one per WebAssembly instruction) of a webhook call.
    pub fuel: u64,
    /// Fuel units of a `send` or `poll` call, which handle a batch (an e-mail poll parses up to
    /// a few MiB of mail).
    pub network_fuel: u64,
    /// Wall-clock time of a webhook call (pure computation).
    pub timeout: Duration,
    /// Wall-clock time of a `send` or `poll` call, which waits for the network.
    pub network_timeout: Duration,
    /// Linear memory, bytes.
    pub memory_bytes: usize,
    /// What the call may return (message texts, attachments, reply body), bytes.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 500_000_000,
            network_fuel: 5_000_000_000,
            timeout: Duration::from_secs(2),
            network_timeout: Duration::from_secs(30),
            // An e-mail poll returns a batch of messages with their sources and attachments.
            memory_bytes: 128 << 20,
            output_bytes: 24 << 20,
        }
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Channel kind of its tickets.
    pub channel_kind: String,
    /// JSON Schema of its settings.
    pub settings_schema: String,
    /// Capabilities it asks for.
    pub capabilities: Vec<String>,
    /// Implements `send`.
    pub sends: bool,
    /// Implements `poll`.
    pub polls: bool,
    /// A channel or an automation.
    pub kind: Kind,
    /// The events an automation wants (empty for channels).
    pub events: Vec<String>,
}

/// Which world a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel connector (`channel-plugin`).
    Channel,
    /// An automation rule (`automation-plugin`).
    Automation,
}

impl Kind {
    /// `channel` or `automation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Channel => "channel",
            Kind::Automation => "automation",
        }
    }
}

/// The ticket an automation event is about.
#[derive(Debug, Clone, Default)]
pub struct TicketView {
    /// Id.
    pub id: i64,
    /// Number.
    pub number: i64,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// Level.
    pub level: i32,
    /// Team.
    pub team_id: Option<i64>,
    /// Assignee.
    pub assignee_id: Option<i64>,
    /// Category.
    pub category: Option<String>,
    /// Channel kind.
    pub channel: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Reopen count.
    pub reopen_count: i32,
}

/// The customer of an automation event's ticket.
#[derive(Debug, Clone, Default)]
pub struct CustomerView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Tier key.
    pub tier: String,
    /// Language.
    pub language: String,
    /// Identities as (kind, address).
    pub identities: Vec<(String, String)>,
    /// Tickets not resolved or closed.
    pub open_tickets: u32,
}

/// An event handed to an automation.
#[derive(Debug, Clone, Default)]
pub struct AutomationEvent {
    /// Dotted type.
    pub kind: String,
    /// What changed, JSON.
    pub changes: String,
    /// The ticket.
    pub ticket: TicketView,
    /// Its customer.
    pub customer: CustomerView,
    /// Latest messages as (direction, text), oldest first.
    pub messages: Vec<(String, String)>,
}

/// An action an automation asks for: a name and JSON arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `update`, `note` or `reply`.
    pub name: String,
    /// JSON object.
    pub args: String,
}

/// A webhook request handed to a plugin.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Method.
    pub method: String,
    /// Path below the hook.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// An attachment of an inbound message.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// File name.
    pub filename: String,
    /// MIME type.
    pub content_type: String,
    /// Content.
    pub data: Vec<u8>,
}

/// A normalised inbound message.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The channel's id of the message.
    pub external_id: String,
    /// Conversation key.
    pub conversation: Option<String>,
    /// Sender identity kind.
    pub sender_kind: String,
    /// Sender address.
    pub sender_address: String,
    /// Sender name.
    pub sender_name: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Text.
    pub text: String,
    /// HTML.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// Sent by a machine.
    pub automatic: bool,
    /// External ids of earlier messages it answers, most relevant first.
    pub replies_to: Vec<String>,
    /// A ticket number it names (subject tag).
    pub ticket_number: Option<u64>,
    /// Quoted history and signature, apart from `text`.
    pub quoted: Option<String>,
    /// The message as it arrived.
    pub raw: Option<Vec<u8>>,
    /// Set when it reports that one of our messages was not delivered.
    pub delivery_failure: Option<DeliveryFailure>,
}

/// A report that a message we sent was not delivered (a bounce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// The external id of our message.
    pub external_id: String,
    /// The recipient it failed for.
    pub recipient: Option<String>,
    /// Why.
    pub reason: String,
}

/// A reply handed to a plugin's `send`.
#[derive(Debug, Clone, Default)]
pub struct OutboundMessage {
    /// The host's message id (stable across retries).
    pub id: String,
    /// Ticket number.
    pub ticket_number: u64,
    /// The customer's identities as (kind, address).
    pub recipients: Vec<(String, String)>,
    /// The customer's name.
    pub recipient_name: Option<String>,
    /// Conversation key of the ticket.
    pub conversation: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Text.
    pub text: String,
    /// HTML.
    pub html: Option<String>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
    /// External id of the customer's latest message.
    pub in_reply_to: Option<String>,
    /// External ids of the ticket's messages, oldest first.
    pub references: Vec<String>,
    /// Written by an automation.
    pub automatic: bool,
}

/// What `send` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Delivered; the channel's id of the message.
    Delivered(String),
    /// Failed for now; try again later.
    Retryable(String),
    /// Failed for good.
    Permanent(String),
}

/// What `poll` answered.
#[derive(Debug, Clone)]
pub enum Polled {
    /// New messages and where to continue.
    Found {
        /// Messages, oldest first.
        messages: Vec<InboundMessage>,
        /// The next cursor; `None` keeps the current one.
        cursor: Option<String>,
        /// The source has more right now.
        more: bool,
    },
    /// The plugin refused (the source answered something unusable).
    Failed(String),
}

/// An HTTP request a plugin makes.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// What is left of the call's time: the request must not take longer (epoch deadlines do
    /// not interrupt a host function).
    pub timeout: Duration,
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The answer a plugin wants sent to the webhook caller.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

/// What a webhook call produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Messages to store, and maybe an answer.
    Accepted {
        /// Messages.
        messages: Vec<InboundMessage>,
        /// Answer to the caller.
        reply: Option<Reply>,
    },
    /// The plugin refused the request as not authentic.
    Rejected(String),
    /// The plugin found the request malformed.
    Invalid(String),
}

/// Log levels of plugin log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// What a call may reach: the channel instance's settings, secrets, store and log. The core
/// implements it; the host checks the grants before calling it.
pub trait Context: Send + Sync {
    /// Writes a plugin log line.
    fn log(&self, level: Level, message: &str);
    /// A setting as JSON text.
    fn setting(&self, key: &str) -> Option<String>;
    /// A secret's value (never handed to the plugin).
    fn secret(&self, name: &str) -> Option<String>;
    /// Reads the instance's key-value store.
    ///
    /// # Errors
    /// A message for the plugin.
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Writes the instance's key-value store.
    ///
    /// # Errors
    /// A message for the plugin.
    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Whether a capability (`secrets`, `kv`) is granted.
    fn granted(&self, capability: &str) -> bool;
    /// Makes an HTTP request if its host is granted (the context checks the URL: it owns the
    /// grants and the HTTP client).
    ///
    /// # Errors
    /// A message for the plugin: not granted, unreachable, too slow, too large.
    fn http_fetch(&self, request: HttpRequest) -> Result<HttpResponse, String>;
    /// Opens a TCP connection if `host:port` is granted (the context owns the grants and the
    /// TLS configuration).
    ///
    /// # Errors
    /// A message for the plugin: not granted, unreachable, handshake failed.
    fn tcp_connect(&self, host: &str, port: u16, tls: bool, timeout: Duration) -> Result<Box<dyn Connection>, String>;
}

/// A TCP connection a context opened for a plugin.
pub trait Connection: Send {
    /// Reads up to `max` bytes within `timeout`; empty when the peer closed.
    ///
    /// # Errors
    /// On a timeout or a broken connection.
    fn read(&mut self, max: usize, timeout: Duration) -> Result<Vec<u8>, String>;
    /// Writes everything.
    ///
    /// # Errors
    /// On a broken connection.
    fn write(&mut self, data: &[u8]) -> Result<(), String>;
    /// Upgrades to TLS.
    ///
    /// # Errors
    /// When the handshake fails or the connection is TLS already.
    fn start_tls(&mut self) -> Result<(), String>;
}

/// Replaces `{{secret:NAME}}` by the secret, `{{secret_base64:NAME}}` by its base64 form (HTTP
/// Basic, SMTP AUTH LOGIN), `{{secret_quoted:NAME}}` by it as a quoted string with `"` and
/// `\` escaped (IMAP LOGIN), and `{{secret_sasl_plain:NAME:USER}}` by the base64 of
/// `NUL USER NUL secret` (SASL PLAIN, RFC 4616: SMTP AUTH PLAIN). `secret` looks a secret up by
/// name.
///
/// # Errors
/// An unclosed or unknown placeholder, or a secret that is not set — naming it.
pub fn substitute_secrets(text: &str, secret: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    use base64::Engine as _;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{secret") {
        out.push_str(&rest[..start]);
        let tail = &rest[start + 2..];
        let end = tail.find("}}").ok_or("a {{secret:NAME}} placeholder is not closed")?;
        let (form, name) = tail[..end].split_once(':').unwrap_or((&tail[..end], ""));
        let (name, user) = match form {
            "secret_sasl_plain" => name.split_once(':').unwrap_or((name, "")),
            _ => (name, ""),
        };
        let value = || secret(name).ok_or_else(|| format!("secret {name:?} is not set on this channel"));
        match form {
            "secret" => out.push_str(&value()?),
            "secret_base64" => out.push_str(&base64::engine::general_purpose::STANDARD.encode(value()?)),
            "secret_sasl_plain" if !user.is_empty() => {
                let plain = format!("\0{user}\0{}", value()?);
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(plain));
            }
            "secret_quoted" => {
                out.push('"');
                for c in value()?.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            _ => {
                return Err(format!(
                    "unknown placeholder {{{{{}}}}}; use secret:NAME, secret_base64:NAME, secret_quoted:NAME or secret_sasl_plain:NAME:USER",
                    &tail[..end]
                ));
            }
        }
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// HTTP requests one call may make.
const MAX_HTTP_PER_CALL: u32 = 16;
/// Connections a call may hold at once, and what it may read from them in all.
const MAX_CONNECTIONS: usize = 4;
const MAX_TCP_READ: usize = 64 << 20;

struct State {
    memory: MemoryCap,
    ctx: Arc<dyn Context>,
    logged: usize,
    /// The last error-level line the plugin logged (its panic message, with the SDK's hook).
    last_error: Option<String>,
    /// Open TCP connections, by handle (index); closed with the store.
    conns: Vec<Option<Box<dyn Connection>>>,
    /// Bytes read from TCP in this call.
    tcp_read: usize,
    /// HTTP requests made in this call.
    http_calls: u32,
    /// When the call's time is up: host functions that wait get only what is left.
    deadline: std::time::Instant,
}

impl State {
    /// The time left for a host function that waits, or an error when none is.
    fn remaining(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() { Err("the call's time is up".into()) } else { Ok(left) }
    }

    fn conn(&mut self, handle: u32) -> Result<&mut Box<dyn Connection>, String> {
        self.conns
            .get_mut(handle as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| format!("no open connection {handle}"))
    }
}

/// Caps the store's memory as a whole and remembers a refusal, so that the guest's abort that
/// follows (its allocator failing) is reported as what it is.
///
/// A component may hold several core instances (up to 16), each with its own linear memories
/// and tables: a cap per memory would let it take 16 times the limit. So every memory's and
/// table's growth is added to one total that `max` bounds.
struct MemoryCap {
    max: usize,
    /// Bytes granted so far to all memories and tables of the store.
    used: usize,
    denied: bool,
    inner: StoreLimits,
}

/// What one table element is counted as: a function reference in wasmtime is a pointer plus
/// its lazy-initialisation bit, rounded up; generous rather than exact.
const TABLE_ELEMENT_BYTES: usize = 16;

impl MemoryCap {
    fn new(max: usize) -> Self {
        MemoryCap { max, used: 0, denied: false, inner: StoreLimitsBuilder::new().instances(16).build() }
    }

    /// Adds `current → desired` to the total, or refuses when the total would pass `max`.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.max {
            self.denied = true;
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if !self.inner.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if !self.inner.table_growing(current, desired, maximum)? {
            return Ok(false);
        }
        Ok(self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn memory_grow_failed(&mut self, _: wasmtime::Error) -> wasmtime::Result<()> {
        // Counted as granted already; the store is dropped after this call anyway.
        Ok(())
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }
}

impl State {
    fn require(&self, capability: &str) -> Result<(), String> {
        if self.ctx.granted(capability) {
            Ok(())
        } else {
            let msg = format!("capability {capability} is not granted to this channel; an admin can grant it");
            self.ctx.log(Level::Warn, &format!("refused a host call: {msg}"));
            Err(msg)
        }
    }
}

impl wit::Host for State {}

impl wit_host::Host for State {
    fn log(&mut self, level: wit_host::Level, message: String) {
        if self.logged >= MAX_LOG_PER_CALL {
            return;
        }
        let mut line: String = message.chars().take(MAX_LOG_LINE).collect();
        self.logged += line.len();
        if self.logged >= MAX_LOG_PER_CALL {
            line.push_str(" (log budget of this call used up)");
        }
        let level = match level {
            wit_host::Level::Debug => Level::Debug,
            wit_host::Level::Info => Level::Info,
            wit_host::Level::Warn => Level::Warn,
            wit_host::Level::Error => {
                self.last_error = Some(line.chars().take(300).collect());
                Level::Error
            }
        };
        self.ctx.log(level, &line);
    }

    fn now_ms(&mut self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    fn setting(&mut self, key: String) -> Option<String> {
        self.ctx.setting(&key)
    }

    fn secret_equals(&mut self, name: String, candidate: String) -> Result<bool, String> {
        self.require("secrets")?;
        let secret = self.ctx.secret(&name).ok_or_else(|| format!("secret {name:?} is not set on this channel"))?;
        // Constant time in the length of the candidate: compare every byte, then the lengths.
        let (a, b) = (secret.as_bytes(), candidate.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, byte) in b.iter().enumerate() {
            diff |= byte ^ a.get(i).copied().unwrap_or(0);
        }
        Ok(diff == 0)
    }

    fn secret_hmac_sha256(&mut self, name: String, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.require("secrets")?;
        let secret = self.ctx.secret(&name).ok_or_else(|| format!("secret {name:?} is not set on this channel"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
        mac.update(&data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn secret_hmac_sha1(&mut self, name: String, data: Vec<u8>) -> Result<Vec<u8>, String> {
        self.require("secrets")?;
        let secret = self.ctx.secret(&name).ok_or_else(|| format!("secret {name:?} is not set on this channel"))?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
        mac.update(&data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.require("kv")?;
        self.ctx.kv_get(&key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.require("kv")?;
        self.ctx.kv_set(&key, &value)
    }

    fn http_fetch(&mut self, request: wit::HttpRequest) -> Result<wit::HttpResponse, String> {
        self.http_calls += 1;
        if self.http_calls > MAX_HTTP_PER_CALL {
            return Err(format!("a call may make at most {MAX_HTTP_PER_CALL} HTTP requests"));
        }
        let request = HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: request.body,
            timeout: self.remaining()?,
        };
        let r = self.ctx.http_fetch(request)?;
        Ok(wit::HttpResponse {
            status: r.status,
            headers: r.headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
            body: r.body,
        })
    }

    fn tcp_connect(&mut self, host: String, port: u16, tls: bool) -> Result<u32, String> {
        let free = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.conns.len() < MAX_CONNECTIONS => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => return Err(format!("a call may hold at most {MAX_CONNECTIONS} connections")),
        };
        let conn = self.ctx.tcp_connect(&host, port, tls, self.remaining()?)?;
        self.conns[free] = Some(conn);
        Ok(free as u32)
    }

    fn tcp_start_tls(&mut self, conn: u32) -> Result<(), String> {
        self.conn(conn)?.start_tls()
    }

    fn tcp_write(&mut self, conn: u32, data: Vec<u8>) -> Result<(), String> {
        self.conn(conn)?.write(&data)
    }

    fn tcp_write_secret(&mut self, conn: u32, template: String) -> Result<(), String> {
        self.require("secrets")?;
        let ctx = self.ctx.clone();
        let data = substitute_secrets(&template, |name| ctx.secret(name))?;
        self.conn(conn)?.write(data.as_bytes())
    }

    fn tcp_read(&mut self, conn: u32, max: u32, timeout_ms: u32) -> Result<Vec<u8>, String> {
        let left = MAX_TCP_READ.saturating_sub(self.tcp_read);
        if left == 0 {
            return Err(format!("this call has read {MAX_TCP_READ} bytes, its limit"));
        }
        let max = (max as usize).min(left).min(1 << 20);
        let wait = Duration::from_millis(u64::from(timeout_ms.max(1))).min(self.remaining()?);
        let data = self.conn(conn)?.read(max, wait)?;
        self.tcp_read += data.len();
        Ok(data)
    }

    fn tcp_close(&mut self, conn: u32) {
        if let Some(slot) = self.conns.get_mut(conn as usize) {
            *slot = None;
        }
    }
}

#[derive(Clone)]
enum Pre {
    Channel(bindings::ChannelPluginPre<State>),
    Automation(automation_bindings::AutomationPluginPre<State>),
}

/// A compiled plugin, ready to instantiate.
#[derive(Clone)]
pub struct Plugin {
    pre: Pre,
    /// What it says about itself.
    pub descriptor: Descriptor,
    /// Whether it came from the artifact cache rather than the compiler.
    pub cached: bool,
}

/// The engine and its epoch ticker. One per process.
pub struct Host {
    engine: Engine,
    linker: Linker<State>,
    stop: Arc<AtomicBool>,
    cache: Option<PathBuf>,
    engine_hash: u64,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Host {
    /// Builds the engine (fuel and epoch interruption on) and starts the epoch ticker thread.
    /// With a `cache` directory, compiled plugins are kept there and loaded from there on the
    /// next start (keyed by the component's SHA-256 and the engine's compatibility hash).
    ///
    /// # Errors
    /// When the engine cannot be configured.
    pub fn new(cache: Option<PathBuf>) -> Result<Self, Error> {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true).wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| Error::Load(format!("cannot start the Wasm engine: {e}")))?;
        let mut linker = Linker::new(&engine);
        bindings::ChannelPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| Error::Load(format!("cannot link host functions: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("plugdesk-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Load(format!("cannot start the epoch thread: {e}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.finish();
        Ok(Host { engine, linker, stop, cache, engine_hash })
    }

    /// Compiles a component, or loads it from the artifact cache when this engine compiled the
    /// same bytes before. Returns whether the cache served it.
    fn compile(&self, wasm: &[u8]) -> Result<(Component, bool), Error> {
        let compile =
            || Component::new(&self.engine, wasm).map_err(|e| Error::Load(format!("not a WebAssembly component: {e}")));
        let Some(dir) = &self.cache else { return Ok((compile()?, false)) };
        let path = dir.join(format!("{}-{:016x}.cwasm", hex(&Sha256::digest(wasm)), self.engine_hash));
        if path.exists() {
            // SAFETY: wasmtime requires that the file holds an artifact this wasmtime produced
            // with `Component::serialize` and that nobody changes it while it is mapped. The
            // cache directory is the server's own (inside its data directory); the name binds
            // the file to the exact component bytes and to this engine's compatibility hash,
            // and wasmtime itself checks the artifact's header and engine settings, refusing a
            // mismatch (in which case we compile afresh).
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &path) };
            match cached {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cached plugin artifact unusable; compiling")
                }
            }
        }
        let component = compile()?;
        if let Err(e) = write_artifact(dir, &path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin artifact cache");
        }
        Ok((component, false))
    }

    /// Compiles a component, checks its contract version and asks it to describe itself.
    /// Compilation takes a fraction of a second: call it off the async executor.
    ///
    /// # Errors
    /// [`Error::Load`] for bytes that are not a channel plugin, [`Error::Version`] for a
    /// plugin built against another contract version, or the errors of a call.
    pub fn load(&self, wasm: &[u8], limits: &Limits, ctx: Arc<dyn Context>) -> Result<Plugin, Error> {
        let (component, cached) = self.compile(wasm)?;
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let kind = if exports.iter().any(|e| e == CHANNEL_EXPORT) {
            Kind::Channel
        } else if exports.iter().any(|e| e == AUTOMATION_EXPORT) {
            Kind::Automation
        } else {
            let other = exports.iter().find_map(|e| {
                e.strip_prefix("plugdesk:plugin/channel@").or_else(|| e.strip_prefix("plugdesk:plugin/automation@"))
            });
            if let Some(other) = other {
                return Err(Error::Version { found: other.to_owned() });
            }
            return Err(Error::Load(format!(
                "not a Plugdesk plugin: it exports {exports:?}, not {CHANNEL_EXPORT} or {AUTOMATION_EXPORT}"
            )));
        };
        // Rust's standard library for wasm32-wasip2 imports WASI (files, environment, clocks,
        // streams). A plugin gets none of it: every WASI function traps when called, which
        // stops the call with a clear error. What a plugin may use is the `host` interface.
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| Error::Load(format!("cannot link the plugin: {e}")))?;
        let pre =
            linker.instantiate_pre(&component).map_err(|e| Error::Load(format!("cannot link the plugin: {e}")))?;
        let mismatch = |e: wasmtime::Error| Error::Load(format!("plugin does not match the contract: {e}"));
        let pre = match kind {
            Kind::Channel => Pre::Channel(bindings::ChannelPluginPre::new(pre).map_err(mismatch)?),
            Kind::Automation => Pre::Automation(automation_bindings::AutomationPluginPre::new(pre).map_err(mismatch)?),
        };
        let descriptor = match &pre {
            Pre::Channel(p) => {
                let d = self.call(limits, ctx, |store| {
                    p.instantiate(&mut *store)?.plugdesk_plugin_channel().call_describe(store)
                })?;
                Descriptor {
                    id: d.id,
                    name: d.name,
                    version: d.version,
                    channel_kind: d.channel_kind,
                    settings_schema: d.settings_schema,
                    capabilities: d.capabilities,
                    sends: d.sends,
                    polls: d.polls,
                    kind,
                    events: vec![],
                }
            }
            Pre::Automation(p) => {
                let d = self.call(limits, ctx, |store| {
                    p.instantiate(&mut *store)?.plugdesk_plugin_automation().call_describe(store)
                })?;
                Descriptor {
                    id: d.id,
                    name: d.name,
                    version: d.version,
                    channel_kind: String::new(),
                    settings_schema: d.settings_schema,
                    capabilities: d.capabilities,
                    sends: false,
                    polls: false,
                    kind,
                    events: d.events,
                }
            }
        };
        Ok(Plugin { pre, descriptor, cached })
    }

    fn channel<'a>(&self, plugin: &'a Plugin) -> Result<&'a bindings::ChannelPluginPre<State>, Error> {
        match &plugin.pre {
            Pre::Channel(p) => Ok(p),
            Pre::Automation(_) => {
                Err(Error::Load(format!("plugin {} is an automation, not a channel", plugin.descriptor.id)))
            }
        }
    }

    /// Hands an event to an automation plugin; `Ok(Err(message))` is the plugin's refusal.
    /// Blocking: call it off the executor.
    ///
    /// # Errors
    /// When the plugin is not an automation, is stopped by a limit, traps, or returns too much.
    pub fn handle_event(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        ctx: Arc<dyn Context>,
        event: AutomationEvent,
    ) -> Result<Result<Vec<Action>, String>, Error> {
        let Pre::Automation(pre) = &plugin.pre else {
            return Err(Error::Load(format!("plugin {} is a channel, not an automation", plugin.descriptor.id)));
        };
        let t = event.ticket;
        let c = event.customer;
        let event = wit_auto::Event {
            kind: event.kind,
            changes: event.changes,
            ticket: wit_auto::TicketView {
                id: t.id,
                number: t.number,
                subject: t.subject,
                status: t.status,
                priority: t.priority,
                level: t.level,
                team_id: t.team_id,
                assignee_id: t.assignee_id,
                category: t.category,
                channel: t.channel,
                tags: t.tags,
                reopen_count: t.reopen_count,
            },
            customer: wit_auto::CustomerView {
                id: c.id,
                name: c.name,
                tier: c.tier,
                language: c.language,
                identities: c.identities.into_iter().map(|(kind, address)| wit::Identity { kind, address }).collect(),
                open_tickets: c.open_tickets,
            },
            messages: event
                .messages
                .into_iter()
                .map(|(direction, text)| wit_auto::MessageView { direction, text })
                .collect(),
        };
        let result = self.call(limits, ctx, |store| {
            pre.instantiate(&mut *store)?.plugdesk_plugin_automation().call_handle_event(store, &event)
        })?;
        Ok(match result {
            Ok(actions) => {
                check_output(actions.iter().map(|a| a.name.len() + a.args.len()).sum(), limits)?;
                Ok(actions.into_iter().map(|a| Action { name: a.name, args: a.args }).collect())
            }
            Err(m) => Err(m),
        })
    }

    /// Hands a webhook request to a plugin. Blocking: call it off the async executor.
    ///
    /// # Errors
    /// When the plugin is stopped by a limit, traps, or returns too much.
    pub fn handle_webhook(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        ctx: Arc<dyn Context>,
        request: WebhookRequest,
    ) -> Result<Outcome, Error> {
        let request = wit::WebhookRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
            body: request.body,
        };
        let pre = self.channel(plugin)?;
        let result = self.call(limits, ctx, |store| {
            pre.instantiate(&mut *store)?.plugdesk_plugin_channel().call_handle_webhook(store, &request)
        })?;
        let outcome = match result {
            Err(wit::PluginError::Rejected(m)) => Outcome::Rejected(m),
            Err(wit::PluginError::Invalid(m)) => Outcome::Invalid(m),
            Ok(o) => {
                let size = messages_size(&o.messages) + o.reply.as_ref().map_or(0, |r| r.body.len());
                check_output(size, limits)?;
                Outcome::Accepted {
                    messages: o.messages.into_iter().map(inbound).collect(),
                    reply: o.reply.map(|r| Reply { status: r.status, content_type: r.content_type, body: r.body }),
                }
            }
        };
        Ok(outcome)
    }

    /// Asks a plugin for new messages after `cursor`. Blocking: call it off the executor. The
    /// call's time budget is [`Limits::network_timeout`].
    ///
    /// # Errors
    /// When the plugin is stopped by a limit, traps, or returns too much.
    pub fn poll(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        ctx: Arc<dyn Context>,
        cursor: Option<String>,
    ) -> Result<Polled, Error> {
        let limits = Limits { timeout: limits.network_timeout, fuel: limits.network_fuel, ..limits.clone() };
        let pre = self.channel(plugin)?;
        let result = self.call(&limits, ctx, |store| {
            pre.instantiate(&mut *store)?.plugdesk_plugin_channel().call_poll(store, cursor.as_deref())
        })?;
        Ok(match result {
            Ok(o) => {
                check_output(messages_size(&o.messages) + o.cursor.as_ref().map_or(0, String::len), &limits)?;
                Polled::Found {
                    messages: o.messages.into_iter().map(inbound).collect(),
                    cursor: o.cursor,
                    more: o.more,
                }
            }
            Err(wit::PluginError::Rejected(m) | wit::PluginError::Invalid(m)) => Polled::Failed(m),
        })
    }

    /// Hands a reply to a plugin's `send`. Blocking: call it off the executor. The call's time
    /// budget is [`Limits::network_timeout`].
    ///
    /// # Errors
    /// When the plugin is stopped by a limit or traps.
    pub fn send(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        ctx: Arc<dyn Context>,
        message: OutboundMessage,
    ) -> Result<Sent, Error> {
        let limits = Limits { timeout: limits.network_timeout, fuel: limits.network_fuel, ..limits.clone() };
        let message = wit::OutboundMessage {
            id: message.id,
            ticket_number: message.ticket_number,
            recipients: message.recipients.into_iter().map(|(kind, address)| wit::Identity { kind, address }).collect(),
            recipient_name: message.recipient_name,
            conversation: message.conversation,
            subject: message.subject,
            text: message.text,
            html: message.html,
            attachments: message
                .attachments
                .into_iter()
                .map(|a| wit::Attachment { filename: a.filename, content_type: a.content_type, data: a.data })
                .collect(),
            in_reply_to: message.in_reply_to,
            references: message.references,
            automatic: message.automatic,
        };
        let pre = self.channel(plugin)?;
        let result = self.call(&limits, ctx, |store| {
            pre.instantiate(&mut *store)?.plugdesk_plugin_channel().call_send(store, &message)
        })?;
        Ok(match result {
            Ok(id) => {
                check_output(id.len(), &limits)?;
                Sent::Delivered(id)
            }
            Err(wit::SendError::Retryable(m)) => Sent::Retryable(m),
            Err(wit::SendError::Permanent(m)) => Sent::Permanent(m),
        })
    }

    /// Runs one export call in a fresh store with every limit set, and names what stopped it.
    fn call<T>(
        &self,
        limits: &Limits,
        ctx: Arc<dyn Context>,
        f: impl FnOnce(&mut Store<State>) -> wasmtime::Result<T>,
    ) -> Result<T, Error> {
        let memory = MemoryCap::new(limits.memory_bytes);
        let state = State {
            memory,
            ctx,
            logged: 0,
            last_error: None,
            conns: Vec::new(),
            tcp_read: 0,
            http_calls: 0,
            deadline: std::time::Instant::now() + limits.timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        store.set_fuel(limits.fuel).map_err(|e| Error::Load(e.to_string()))?;
        let ticks = (limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let result = f(&mut store);
        let memory_denied = store.data().memory.denied;
        let last_error = store.data().last_error.clone();
        result.map_err(|e| match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Error::OutOfFuel(limits.fuel),
            Some(Trap::Interrupt) => Error::Timeout(limits.timeout),
            _ if memory_denied => Error::Memory(limits.memory_bytes),
            Some(Trap::UnreachableCodeReached) => match last_error {
                Some(line) => Error::Trap(format!("it aborted after logging: {line}")),
                None => Error::Trap("it aborted (a panic or a failed assertion in the plugin)".into()),
            },
            Some(trap) => Error::Trap(trap.to_string()),
            None => {
                let cause = e.root_cause().to_string();
                match cause.strip_prefix("unknown import: ") {
                    // A WASI function: the standard library reaching for the environment, a
                    // file, the clock or randomness (std's HashMap seeds itself from it).
                    Some(import) => Error::Trap(format!(
                        "it called {}, which the sandbox does not provide; plugins reach the outside only through the plugdesk host interface",
                        import.split(" has not been defined").next().unwrap_or(import)
                    )),
                    None => Error::Trap(cause),
                }
            }
        })
    }
}

fn messages_size(messages: &[wit::InboundMessage]) -> usize {
    messages
        .iter()
        .map(|m| {
            m.text.len()
                + m.html.as_ref().map_or(0, String::len)
                + m.quoted.as_ref().map_or(0, String::len)
                + m.raw.as_ref().map_or(0, Vec::len)
                + m.attachments.iter().map(|a| a.data.len()).sum::<usize>()
        })
        .sum()
}

fn check_output(size: usize, limits: &Limits) -> Result<(), Error> {
    if size > limits.output_bytes {
        return Err(Error::Output { got: size, limit: limits.output_bytes });
    }
    Ok(())
}

fn inbound(m: wit::InboundMessage) -> InboundMessage {
    InboundMessage {
        external_id: m.external_id,
        conversation: m.conversation,
        sender_kind: m.sender.kind,
        sender_address: m.sender.address,
        sender_name: m.sender_name,
        subject: m.subject,
        text: m.text,
        html: m.html,
        attachments: m
            .attachments
            .into_iter()
            .map(|a| Attachment { filename: a.filename, content_type: a.content_type, data: a.data })
            .collect(),
        automatic: m.automatic,
        replies_to: m.replies_to,
        ticket_number: m.ticket_number,
        quoted: m.quoted,
        raw: m.raw,
        delivery_failure: m.delivery_failure.map(|f| DeliveryFailure {
            external_id: f.external_id,
            recipient: f.recipient,
            reason: f.reason,
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a compiled artifact next to its final name and renames it into place, so a reader
/// never maps a half-written file.
fn write_artifact(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::{MemoryCap, substitute_secrets};

    /// A core module with two linear memories of two pages (128 KiB) each, written out byte by
    /// byte (the crate has no WAT parser): magic, version, then the memory section (id 5).
    const TWO_MEMORIES: &[u8] =
        &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x05, 0x05, 0x02, 0x00, 0x02, 0x00, 0x02];

    fn instantiate(cap: usize) -> (bool, bool) {
        let mut config = wasmtime::Config::new();
        config.wasm_multi_memory(true);
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let module = wasmtime::Module::new(&engine, TWO_MEMORIES).expect("module");
        let mut store = wasmtime::Store::new(&engine, MemoryCap::new(cap));
        store.limiter(|s| s);
        let ok = wasmtime::Instance::new(&mut store, &module, &[]).is_ok();
        (ok, store.data().denied)
    }

    /// Regression: the cap applied to each memory alone, so several memories (or instances)
    /// together could take many times the plugin's memory limit.
    #[test]
    fn memory_cap_counts_every_memory_of_the_store_together() {
        // Each memory (128 KiB) fits under 192 KiB; both together (256 KiB) do not.
        assert_eq!(instantiate(192 << 10), (false, true));
        assert_eq!(instantiate(256 << 10), (true, false));
    }

    #[test]
    fn memory_cap_counts_tables_and_growth_from_the_current_size() {
        use wasmtime::ResourceLimiter as _;
        let mut cap = MemoryCap::new(1000);
        assert!(cap.memory_growing(0, 600, None).unwrap_or(false));
        assert!(cap.memory_growing(600, 900, None).unwrap_or(false));
        // 900 used: a table of 7 elements (112 bytes) passes the total.
        assert!(!cap.table_growing(0, 7, None).unwrap_or(true));
        assert!(cap.denied);
        assert!(cap.table_growing(0, 6, None).unwrap_or(false));
    }

    fn secret(name: &str) -> Option<String> {
        (name == "pw").then(|| "p\"a\\ss".to_owned())
    }

    #[test]
    fn secrets_are_filled_in_plain_base64_and_quoted() {
        assert_eq!(substitute_secrets("LOGIN u {{secret:pw}}", secret).as_deref(), Ok("LOGIN u p\"a\\ss"));
        assert_eq!(substitute_secrets("{{secret_base64:pw}}", secret).as_deref(), Ok("cCJhXHNz"));
        assert_eq!(
            substitute_secrets("a1 LOGIN u {{secret_quoted:pw}}", secret).as_deref(),
            Ok("a1 LOGIN u \"p\\\"a\\\\ss\"")
        );
        assert_eq!(substitute_secrets("no placeholder {{x}}", secret).as_deref(), Ok("no placeholder {{x}}"));
        // RFC 4616: base64 of NUL user NUL password.
        assert_eq!(
            substitute_secrets("AUTH PLAIN {{secret_sasl_plain:pw:anna@example.com}}", secret).as_deref(),
            Ok("AUTH PLAIN AGFubmFAZXhhbXBsZS5jb20AcCJhXHNz")
        );
    }

    #[test]
    fn bad_placeholders_name_what_is_wrong() {
        let err = |t: &str| substitute_secrets(t, secret).expect_err(t);
        assert!(err("{{secret:pw").contains("not closed"));
        assert!(err("{{secret_hex:pw}}").contains("unknown placeholder {{secret_hex:pw}}"));
        assert!(err("{{secret_sasl_plain:pw}}").contains("unknown placeholder {{secret_sasl_plain:pw}}"));
        assert!(err("{{secret:other}}").contains("secret \"other\" is not set"));
    }
}
