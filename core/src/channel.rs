//! Channels: a workspace's installed instances of channel plugins, and the inbound message
//! path. A webhook request on `POST /hooks/{channel}` is stored raw **before** anything else
//! happens; then the channel's plugin turns it into messages in the sandbox
//! (`plugdesk_host`), and each message finds its customer by identity and its ticket by
//! conversation (or opens one) through the same code as the API. A failure leaves the stored
//! request `failed` with the reason, listed by the API and re-processable. Channels whose
//! plugin polls are polled on their interval ([`run_polls`]); what a poll finds is stored,
//! together with the new cursor, before it is delivered.
//!
//! This module and `outbox` are the ones in the core that call plugins, and only through
//! `plugdesk_host`'s plain types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use plugdesk_host::{Context, HttpRequest, HttpResponse, InboundMessage, Level, Outcome, Polled};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::customer::{IdentityInput, NewCustomer};
use crate::db;
use crate::error::{Error, Result};
use crate::receipt::{self, DELIVERY_LEASE_MS, MASKED, Receipt};
use crate::ticket::{AttachmentInput, MessageInput, MessageKind, NewTicket};

/// After this many failed calls in a row a channel is suspended: its hook answers 503 until an
/// admin resumes it (a crash-looping plugin is cut off, as proxy-wasm hosts do).
const SUSPEND_AFTER: i32 = 5;
/// Capabilities a plugin can ask for. `http` is granted per host as `http:HOST[:PORT]`, `tcp`
/// per address as `tcp:HOST:PORT`.
pub(crate) const CAPABILITIES: [&str; 4] = ["secrets", "kv", "http", "tcp"];
/// Time to connect a plugin's TCP connection, and to write to it.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Key-value limits per channel instance.
const KV_MAX_KEY: usize = 256;
const KV_MAX_VALUE: usize = 64 * 1024;
const KV_MAX_KEYS: i64 = 1024;
/// Largest answer to a plugin's outbound HTTP request (the time limit is on the client).
const HTTP_MAX_RESPONSE: usize = 4 << 20;
/// Polling: the default and the shortest interval, and how many rounds one tick may chain
/// while the source says it has more.
const POLL_DEFAULT_MS: i64 = 60_000;
const POLL_MIN_MS: i64 = 100;
const POLL_MAX_ROUNDS: usize = 20;

/// A stored channel instance.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) workspace_id: i64,
    pub(crate) plugin_key: String,
    name: String,
    settings: serde_json::Map<String, Json>,
    secrets: HashMap<String, String>,
    grants: Vec<String>,
    status: String,
    consecutive_failures: i32,
    poll_interval_ms: Option<i64>,
    cursor: Option<String>,
    last_error: Option<String>,
    /// The admin's request size limit; `None` takes the default of the plugin's kind.
    max_request_bytes: Option<i64>,
}

impl Row {
    /// The calling context of an automation instance: what a channel row holds, without the
    /// channel parts. Its plugin gets no key-value store (that store belongs to channels).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn for_automation(
        id: i64,
        workspace_id: i64,
        plugin_key: String,
        name: String,
        settings: serde_json::Map<String, Json>,
        secrets: HashMap<String, String>,
        grants: Vec<String>,
    ) -> Row {
        Row {
            id,
            workspace_id,
            plugin_key,
            name,
            settings,
            secrets,
            grants: grants.into_iter().filter(|g| g != "kv").collect(),
            status: "active".into(),
            consecutive_failures: 0,
            poll_interval_ms: None,
            cursor: None,
            last_error: None,
            max_request_bytes: None,
        }
    }

    /// `active`, `suspended` or `disabled`.
    pub(crate) fn status_text(&self) -> &str {
        &self.status
    }
}

/// How long the webhook path trusts its copy of a channel row. Changes made through this node
/// drop the copy at once; a change made on another node reaches this one within this time.
const ROW_TTL: Duration = Duration::from_secs(2);

/// The webhook path's copies of channel rows (one query per webhook saved).
#[derive(Default)]
pub struct RowCache {
    rows: std::sync::Mutex<HashMap<i64, (Instant, Row)>>,
}

impl RowCache {
    async fn get(&self, core: &crate::Core, id: i64) -> Result<Row> {
        if let Some((at, row)) = self.rows.lock().ok().and_then(|m| m.get(&id).cloned())
            && at.elapsed() < ROW_TTL
        {
            return Ok(row);
        }
        let row = load_row(core.db(), id, None).await?;
        if let Ok(mut m) = self.rows.lock() {
            m.insert(id, (Instant::now(), row.clone()));
        }
        Ok(row)
    }

    /// Forgets a row after a change.
    pub(crate) fn forget(&self, id: i64) {
        if let Ok(mut m) = self.rows.lock() {
            m.remove(&id);
        }
    }
}

pub(crate) async fn load_row<C: ConnectionTrait>(db: &C, id: i64, workspace_id: Option<i64>) -> Result<Row> {
    let r = db::query_one(db, "SELECT * FROM channels WHERE id = ?", vec![id.into()])
        .await?
        .ok_or(Error::NotFound("channel"))?;
    let ws: i64 = db::col(&r, "workspace_id")?;
    if workspace_id.is_some_and(|w| w != ws) {
        return Err(Error::NotFound("channel"));
    }
    Ok(Row {
        id,
        workspace_id: ws,
        plugin_key: db::col(&r, "plugin_key")?,
        name: db::col(&r, "name")?,
        settings: serde_json::from_str(&db::col::<String>(&r, "settings")?)?,
        secrets: serde_json::from_str(&crate::secret::open(&db::col::<String>(&r, "secrets")?)?)?,
        grants: serde_json::from_str(&db::col::<String>(&r, "grants")?)?,
        status: db::col(&r, "status")?,
        consecutive_failures: db::col(&r, "consecutive_failures")?,
        poll_interval_ms: db::col(&r, "poll_interval_ms")?,
        cursor: db::col(&r, "cursor")?,
        last_error: db::col(&r, "last_error")?,
        max_request_bytes: db::col(&r, "max_request_bytes")?,
    })
}

/// The largest request a channel of this kind takes when its admin set no limit. A form or a
/// chat message is text someone typed; a messenger's update may carry a media reference; a
/// mail may carry attachments up to the server's body limit. A body over the limit is refused
/// before the plugin sees it: parsing 16 MB of form in the sandbox only burns its budget.
fn default_request_bytes(kind: &str, limits: &crate::config::Limits) -> usize {
    let bytes = match kind {
        "webform" | "webchat" => 64 << 10,
        "email" => limits.max_body_bytes,
        _ => 1 << 20,
    };
    bytes.min(limits.max_body_bytes)
}

impl Row {
    /// The largest request body this channel takes, in bytes.
    fn request_limit(&self, core: &crate::Core) -> usize {
        let max = core.limits().max_body_bytes;
        match self.max_request_bytes.and_then(|b| usize::try_from(b).ok()) {
            Some(b) => b.min(max),
            None => default_request_bytes(&core.channels().kind(&self.plugin_key), core.limits()),
        }
    }
}

/// The largest request body the hook of a channel takes (an unknown channel is not found), so
/// the HTTP layer reads no more than that.
///
/// # Errors
/// [`Error::NotFound`]; database errors.
pub async fn request_limit(core: &crate::Core, channel_id: i64) -> Result<usize> {
    Ok(core.channel_rows().get(core, channel_id).await?.request_limit(core))
}

fn validate_request_bytes(core: &crate::Core, bytes: Option<u64>) -> Result<Option<i64>> {
    let max = core.limits().max_body_bytes;
    match bytes {
        None => Ok(None),
        Some(b) if b == 0 || b > max as u64 => Err(Error::invalid(
            "max_request_bytes",
            format!("max_request_bytes must be 1-{max} bytes (the server's limits.max_body_bytes)"),
        )),
        Some(b) => Ok(i64::try_from(b).ok()),
    }
}

/// What a call of one channel instance may reach.
pub(crate) struct ChannelContext {
    row: Row,
    db: DatabaseConnection,
    runtime: tokio::runtime::Handle,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    egress: Arc<crate::egress::Policy>,
}

impl ChannelContext {
    /// The context of a call made from async code (the call itself runs on a blocking thread).
    pub(crate) fn new(core: &crate::Core, row: Row) -> Arc<Self> {
        Arc::new(ChannelContext {
            row,
            db: core.db().clone(),
            runtime: tokio::runtime::Handle::current(),
            http: core.channels().http.clone(),
            tls: core.channels().tls.clone(),
            egress: core.channels().egress.clone(),
        })
    }

    /// Replaces the `{{secret…:NAME}}` placeholders with the secret (see
    /// [`plugdesk_host::substitute_secrets`]).
    fn substitute(&self, text: &str) -> std::result::Result<String, String> {
        plugdesk_host::substitute_secrets(text, |name| self.row.secrets.get(name).cloned())
    }

    fn refuse(&self, message: String) -> String {
        self.log(Level::Warn, &format!("refused a host call: {message}"));
        message
    }
}

/// Checks that a URL is plain http(s) to a host the channel may reach; returns `host:port`.
fn check_url(url: &str, grants: &[String]) -> std::result::Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not an absolute URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs can be fetched, not {}", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("credentials in the URL are not allowed; send them in a header".into());
    }
    let host = u.host_str().ok_or("the URL has no host")?.to_ascii_lowercase();
    let port = u.port_or_known_default().ok_or("the URL has no port")?;
    let allowed = grants.iter().any(|g| *g == format!("http:{host}") || *g == format!("http:{host}:{port}"));
    if !allowed {
        return Err(format!(
            "host {host}:{port} is not granted to this channel; an admin can grant http:{host} or http:{host}:{port}"
        ));
    }
    Ok(format!("{host}:{port}"))
}

/// A plugin's TCP connection: plain, or TLS done here (rustls, web PKI roots).
struct TcpConnection {
    host: String,
    stream: Stream,
    tls: Arc<rustls::ClientConfig>,
}

enum Stream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
    Broken,
}

fn tls_handshake(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: std::net::TcpStream,
) -> std::result::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{host:?} is not a name TLS can check"))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS with {host}: {e}"))?;
    tcp.set_read_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| format!("TLS handshake with {host}: {e}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

impl TcpConnection {
    fn tcp(&self) -> std::result::Result<&std::net::TcpStream, String> {
        match &self.stream {
            Stream::Plain(t) => Ok(t),
            Stream::Tls(s) => Ok(s.get_ref()),
            Stream::Broken => Err("the connection is broken".into()),
        }
    }
}

impl plugdesk_host::Connection for TcpConnection {
    fn read(&mut self, max: usize, timeout: Duration) -> std::result::Result<Vec<u8>, String> {
        use std::io::Read;
        self.tcp()?.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; max.max(1)];
        let n = match &mut self.stream {
            Stream::Plain(t) => t.read(&mut buf),
            Stream::Tls(s) => s.read(&mut buf),
            Stream::Broken => return Err("the connection is broken".into()),
        };
        match n {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(format!("nothing arrived from {} within {timeout:?}", self.host))
            }
            Err(e) => Err(format!("reading from {}: {e}", self.host)),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<(), String> {
        use std::io::Write;
        self.tcp()?.set_write_timeout(Some(TCP_TIMEOUT)).map_err(|e| e.to_string())?;
        let written = match &mut self.stream {
            Stream::Plain(t) => t.write_all(data).and_then(|()| t.flush()),
            Stream::Tls(s) => s.write_all(data).and_then(|()| s.flush()),
            Stream::Broken => return Err("the connection is broken".into()),
        };
        written.map_err(|e| format!("writing to {}: {e}", self.host))
    }

    fn start_tls(&mut self) -> std::result::Result<(), String> {
        match std::mem::replace(&mut self.stream, Stream::Broken) {
            Stream::Plain(tcp) => {
                self.stream = Stream::Tls(Box::new(tls_handshake(self.tls.clone(), &self.host, tcp)?));
                Ok(())
            }
            other => {
                self.stream = other;
                Err("the connection is not a plain one".into())
            }
        }
    }
}

impl Context for ChannelContext {
    fn tcp_connect(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        timeout: Duration,
    ) -> std::result::Result<Box<dyn plugdesk_host::Connection>, String> {
        let host = host.trim().to_ascii_lowercase();
        let grant = format!("tcp:{host}:{port}");
        if !self.row.grants.contains(&grant) {
            return Err(
                self.refuse(format!("{host}:{port} is not granted to this channel; an admin can grant {grant}"))
            );
        }
        // Resolved, checked and connected in one step: the address checked is the one used.
        let tcp = self
            .egress
            .connect_tcp(&host, port, TCP_TIMEOUT.min(timeout))
            .map_err(|m| if crate::egress::is_refused(&m) { self.refuse(m) } else { m })?;
        let _ = tcp.set_nodelay(true);
        let stream =
            if tls { Stream::Tls(Box::new(tls_handshake(self.tls.clone(), &host, tcp)?)) } else { Stream::Plain(tcp) };
        Ok(Box::new(TcpConnection { host, stream, tls: self.tls.clone() }))
    }

    fn log(&self, level: Level, message: &str) {
        let (channel, plugin) = (self.row.id, self.row.plugin_key.as_str());
        match level {
            Level::Debug => tracing::debug!(channel, plugin, "{message}"),
            Level::Info => tracing::info!(channel, plugin, "{message}"),
            Level::Warn => tracing::warn!(channel, plugin, "{message}"),
            Level::Error => tracing::error!(channel, plugin, "{message}"),
        }
    }

    fn setting(&self, key: &str) -> Option<String> {
        self.row.settings.get(key).map(Json::to_string)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.row.secrets.get(name).cloned()
    }

    fn kv_get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        // Plugin calls run on a blocking thread, so waiting for the database here is allowed.
        self.runtime.block_on(async {
            let row = db::query_one(
                &self.db,
                "SELECT value FROM plugin_kv WHERE channel_id = ? AND key = ?",
                vec![self.row.id.into(), key.into()],
            )
            .await
            .map_err(|e| e.to_string())?;
            row.map(|r| db::col::<Vec<u8>>(&r, "value").map_err(|e| e.to_string())).transpose()
        })
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        if key.is_empty() || key.len() > KV_MAX_KEY {
            return Err(format!("keys are 1-{KV_MAX_KEY} bytes"));
        }
        if value.len() > KV_MAX_VALUE {
            return Err(format!("values are at most {KV_MAX_VALUE} bytes"));
        }
        self.runtime.block_on(async {
            let count = db::query_one(
                &self.db,
                "SELECT COUNT(*) AS n FROM plugin_kv WHERE channel_id = ? AND key <> ?",
                vec![self.row.id.into(), key.into()],
            )
            .await
            .map_err(|e| e.to_string())?
            .map(|r| db::col::<i64>(&r, "n"))
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
            if count >= KV_MAX_KEYS {
                return Err(format!("this channel's store holds at most {KV_MAX_KEYS} keys"));
            }
            db::exec(
                &self.db,
                "INSERT INTO plugin_kv (channel_id, key, value) VALUES (?, ?, ?) ON CONFLICT (channel_id, key) DO UPDATE SET value = excluded.value",
                vec![self.row.id.into(), key.into(), value.to_vec().into()],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    }

    fn granted(&self, capability: &str) -> bool {
        self.row.grants.iter().any(|g| g == capability)
    }

    fn http_fetch(&self, request: HttpRequest) -> std::result::Result<HttpResponse, String> {
        let target = check_url(&request.url, &self.row.grants).map_err(|m| self.refuse(m))?;
        let uses_secret =
            request.url.contains("{{secret") || request.headers.iter().any(|(_, v)| v.contains("{{secret"));
        if uses_secret && !self.granted("secrets") {
            return Err(self.refuse("secret placeholders need the secrets capability; an admin can grant it".into()));
        }
        let url = self.substitute(&request.url)?;
        if check_url(&url, &self.row.grants).ok().as_deref() != Some(target.as_str()) {
            return Err(
                self.refuse("a secret placeholder may stand in the path, query or headers, not in the host".into())
            );
        }
        // An IP-literal host never reaches the client's filtering resolver: checked here.
        self.egress.check_url(&url).map_err(|m| self.refuse(m))?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", request.method))?;
        let mut builder = self.http.request(method, url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), self.substitute(value)?);
        }
        let builder = builder.body(request.body).timeout(request.timeout);
        // Error texts drop the URL: it may hold a secret.
        self.runtime.block_on(async {
            let mut response = builder.send().await.map_err(|e| match crate::egress::refusal(&e) {
                Some(why) => self.refuse(why),
                None => format!("request to {target} failed: {}", e.without_url()),
            })?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) =
                response.chunk().await.map_err(|e| format!("reading the answer of {target}: {}", e.without_url()))?
            {
                if body.len() + chunk.len() > HTTP_MAX_RESPONSE {
                    return Err(format!("the answer of {target} is larger than {HTTP_MAX_RESPONSE} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse { status, headers, body })
        })
    }
}

/// Input for installing a channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    /// Plugin id, e.g. `webform`.
    pub plugin: String,
    /// Display name (default: the plugin's name).
    #[serde(default)]
    pub name: Option<String>,
    /// Settings (a JSON object).
    #[serde(default)]
    pub settings: Option<Json>,
    /// Secrets by name; never returned or logged.
    #[serde(default)]
    pub secrets: HashMap<String, String>,
    /// Capabilities the admin grants (a subset of what the plugin asks for; `http` per host as
    /// `http:HOST` or `http:HOST:PORT`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// How often to poll, for plugins that poll (default one minute, at least 100 ms).
    #[serde(default)]
    pub poll_interval_ms: Option<i64>,
    /// Largest request body the hook takes, in bytes (default by kind: 64 KiB for forms and
    /// chat, the server's body limit for e-mail, 1 MiB for others).
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
}

/// Changes to a channel; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Settings, replaced as a whole.
    #[serde(default)]
    pub settings: Option<Json>,
    /// Secrets to set; a `null` value removes that secret; unnamed secrets stay.
    #[serde(default)]
    pub secrets: Option<HashMap<String, Option<String>>>,
    /// Grants, replaced as a whole.
    #[serde(default)]
    pub grants: Option<Vec<String>>,
    /// Poll interval.
    #[serde(default)]
    pub poll_interval_ms: Option<i64>,
    /// Largest request body the hook takes, in bytes.
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
    /// `false` disables the channel (its hook answers 503, it is not polled); `true` enables it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A channel as the API shows it (secrets by name only).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// Id.
    pub id: i64,
    /// Plugin id.
    pub plugin: String,
    /// Who owns the plugin: `installation` or `workspace` (this workspace uploaded it).
    pub plugin_scope: &'static str,
    /// Display name.
    pub name: String,
    /// Settings.
    pub settings: Json,
    /// Names of the secrets that are set.
    pub secrets: Vec<String>,
    /// Granted capabilities.
    pub grants: Vec<String>,
    /// `active`, `suspended` or `disabled`.
    pub status: String,
    /// Where the channel posts: `POST {hook}`.
    pub hook: String,
    /// Replies on its tickets go out through it.
    pub sends: bool,
    /// Polled every `poll_interval_ms`.
    pub poll_interval_ms: Option<i64>,
    /// Where the next poll continues (the plugin's cursor).
    pub cursor: Option<String>,
    /// The last poll or send failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Largest request body the hook takes; larger ones are answered 413 and not stored.
    pub max_request_bytes: usize,
    /// Call counters since the server started.
    pub stats: crate::plugin::Stats,
}

fn view(row: Row, core: &crate::Core) -> ChannelView {
    let registry = core.channels();
    let mut secrets: Vec<String> = row.secrets.keys().cloned().collect();
    secrets.sort();
    ChannelView {
        max_request_bytes: row.request_limit(core),
        id: row.id,
        stats: registry.stats("channel", row.id),
        hook: format!("/hooks/{}", row.id),
        sends: registry.plugin(&row.plugin_key).is_some_and(|p| p.descriptor.sends),
        plugin: crate::plugin::plugin_id(&row.plugin_key).to_owned(),
        plugin_scope: crate::plugin::Scope::of_key(&row.plugin_key).0.as_str(),
        name: row.name,
        settings: Json::Object(row.settings),
        secrets,
        grants: row.grants,
        status: row.status,
        poll_interval_ms: row.poll_interval_ms,
        cursor: row.cursor,
        last_error: row.last_error,
    }
}

/// Checks grants against what the plugin asks for.
pub(crate) fn validate_grants(plugin: &plugdesk_host::Descriptor, grants: &[String]) -> Result<()> {
    for g in grants {
        let capability = match g.split_once(':') {
            Some(("tcp", address)) => {
                let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !ok {
                    return Err(Error::invalid("grants", format!("grant {g:?} must be tcp:HOST:PORT")));
                }
                "tcp"
            }
            Some(("http", host)) => {
                let ok = !host.is_empty()
                    && host.len() <= 255
                    && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
                if !ok {
                    return Err(Error::invalid("grants", format!("grant {g:?} must be http:HOST or http:HOST:PORT")));
                }
                "http"
            }
            _ if g == "tcp" => {
                return Err(Error::invalid("grants", "grant tcp per address: tcp:HOST:PORT"));
            }
            _ if g == "http" => {
                return Err(Error::invalid(
                    "grants",
                    "grant http per host: http:HOST (any port) or http:HOST:PORT (one port)",
                ));
            }
            _ if CAPABILITIES.contains(&g.as_str()) => g.as_str(),
            _ => {
                return Err(Error::invalid(
                    "grants",
                    format!("unknown capability {g:?}; capabilities are {}", CAPABILITIES.join(", ")),
                ));
            }
        };
        if !plugin.capabilities.iter().any(|c| c == capability) {
            return Err(Error::invalid(
                "grants",
                format!(
                    "plugin {} does not ask for the capability {capability}; it asks for: [{}]",
                    plugin.id,
                    plugin.capabilities.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn validate_poll(plugin: &plugdesk_host::Descriptor, interval: Option<i64>) -> Result<Option<i64>> {
    match (plugin.polls, interval) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::invalid(
            "poll_interval_ms",
            format!("plugin {} does not poll; leave poll_interval_ms out", plugin.id),
        )),
        (true, Some(ms)) if ms < POLL_MIN_MS => {
            Err(Error::invalid("poll_interval_ms", format!("poll_interval_ms must be at least {POLL_MIN_MS}")))
        }
        (true, ms) => Ok(Some(ms.unwrap_or(POLL_DEFAULT_MS))),
    }
}

pub(crate) fn settings_object(settings: Option<&Json>) -> Result<Json> {
    match settings {
        None => Ok(Json::Object(Default::default())),
        Some(o @ Json::Object(_)) => Ok(o.clone()),
        Some(_) => Err(Error::invalid("settings", "settings must be a JSON object")),
    }
}

/// The plugin a workspace names (a plugin id, or the registry key stored on one of its
/// channels) with its registry key, if it is of `kind`. Another workspace's plugin is unknown.
pub(crate) async fn plugin_for(
    core: &crate::Core,
    workspace_id: i64,
    key: &str,
    kind: plugdesk_host::Kind,
) -> Result<(String, plugdesk_host::Plugin)> {
    let registry = core.channels();
    registry.wait_loaded().await;
    match registry.resolve(workspace_id, key) {
        Some((key, p)) if p.descriptor.kind == kind => Ok((key, p)),
        Some((key, p)) => Err(Error::invalid(
            "plugin",
            format!(
                "plugin {} is {} {}, not {} {}; install it under /api/v1/{}s",
                crate::plugin::plugin_id(&key),
                article(p.descriptor.kind),
                p.descriptor.kind.as_str(),
                article(kind),
                kind.as_str(),
                p.descriptor.kind.as_str()
            ),
        )),
        None => {
            let known = registry.ids(workspace_id);
            Err(Error::invalid("plugin", format!("unknown plugin {key:?}; installed plugins: {}", known.join(", "))))
        }
    }
}

fn article(kind: plugdesk_host::Kind) -> &'static str {
    match kind {
        plugdesk_host::Kind::Automation => "an",
        plugdesk_host::Kind::Channel => "a",
    }
}

/// Installs a plugin as a channel of the workspace.
///
/// # Errors
/// [`Error::Invalid`] for an unknown plugin, a capability the plugin does not ask for, or
/// settings that are not an object.
pub async fn install(core: &crate::Core, workspace_id: i64, input: &NewChannel) -> Result<ChannelView> {
    let (key, plugin) = plugin_for(core, workspace_id, &input.plugin, plugdesk_host::Kind::Channel).await?;
    validate_grants(&plugin.descriptor, &input.grants)?;
    let poll = validate_poll(&plugin.descriptor, input.poll_interval_ms)?;
    let max_request_bytes = validate_request_bytes(core, input.max_request_bytes)?;
    let settings = settings_object(input.settings.as_ref())?;
    let name = input.name.clone().unwrap_or_else(|| plugin.descriptor.name.clone());
    let now = crate::now_ms();
    let row = db::query_one(
        core.db(),
        "INSERT INTO channels (workspace_id, plugin_key, name, settings, secrets, grants, status, poll_interval_ms, next_poll_at, max_request_bytes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            key.into(),
            name.into(),
            settings.to_string().into(),
            crate::secret::seal(&serde_json::to_string(&input.secrets)?)?.into(),
            serde_json::to_string(&input.grants)?.into(),
            poll.into(),
            poll.map(|_| now).into(),
            max_request_bytes.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    get(core, workspace_id, db::col(&row, "id")?).await
}

/// Changes a channel's name, settings, secrets, grants, poll interval or state.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`] as for [`install`].
pub async fn update(core: &crate::Core, workspace_id: i64, id: i64, patch: &ChannelPatch) -> Result<ChannelView> {
    let row = load_row(core.db(), id, Some(workspace_id)).await?;
    let (_, plugin) = plugin_for(core, workspace_id, &row.plugin_key, plugdesk_host::Kind::Channel).await?;
    let grants = patch.grants.clone().unwrap_or(row.grants.clone());
    validate_grants(&plugin.descriptor, &grants)?;
    let poll = match patch.poll_interval_ms {
        Some(ms) => validate_poll(&plugin.descriptor, Some(ms))?,
        None => row.poll_interval_ms,
    };
    let max_request_bytes = match patch.max_request_bytes {
        Some(b) => validate_request_bytes(core, Some(b))?,
        None => row.max_request_bytes,
    };
    let settings = match &patch.settings {
        Some(s) => settings_object(Some(s))?,
        None => Json::Object(row.settings.clone()),
    };
    let mut secrets = row.secrets.clone();
    for (name, value) in patch.secrets.clone().unwrap_or_default() {
        match value {
            Some(v) => secrets.insert(name, v),
            None => secrets.remove(&name),
        };
    }
    let name = match &patch.name {
        Some(n) if n.trim().is_empty() || n.len() > 200 => {
            return Err(Error::invalid("name", "name must be 1-200 characters"));
        }
        Some(n) => n.trim().to_owned(),
        None => row.name.clone(),
    };
    let status = match patch.enabled {
        Some(false) => "disabled",
        Some(true) => "active",
        None => row.status.as_str(),
    };
    db::exec(
        core.db(),
        "UPDATE channels SET name = ?, settings = ?, secrets = ?, grants = ?, poll_interval_ms = ?, max_request_bytes = ?, status = ?, consecutive_failures = CASE WHEN ? = 'active' THEN 0 ELSE consecutive_failures END, updated_at = ? WHERE id = ?",
        vec![
            name.into(),
            settings.to_string().into(),
            crate::secret::seal(&serde_json::to_string(&secrets)?)?.into(),
            serde_json::to_string(&grants)?.into(),
            poll.into(),
            max_request_bytes.into(),
            status.into(),
            status.into(),
            crate::now_ms().into(),
            id.into(),
        ],
    )
    .await?;
    core.channel_rows().forget(id);
    get(core, workspace_id, id).await
}

/// One channel of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get(core: &crate::Core, workspace_id: i64, id: i64) -> Result<ChannelView> {
    Ok(view(load_row(core.db(), id, Some(workspace_id)).await?, core))
}

/// Every channel of the workspace.
///
/// # Errors
/// Database errors.
pub async fn list(core: &crate::Core, workspace_id: i64) -> Result<Vec<ChannelView>> {
    let rows = db::query_all(
        core.db(),
        "SELECT id FROM channels WHERE workspace_id = ? ORDER BY id",
        vec![workspace_id.into()],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(get(core, workspace_id, db::col(&r, "id")?).await?);
    }
    Ok(out)
}

/// Puts a suspended channel back to work.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn resume(core: &crate::Core, workspace_id: i64, id: i64) -> Result<ChannelView> {
    load_row(core.db(), id, Some(workspace_id)).await?;
    db::exec(
        core.db(),
        "UPDATE channels SET status = 'active', consecutive_failures = 0, updated_at = ? WHERE id = ?",
        vec![crate::now_ms().into(), id.into()],
    )
    .await?;
    core.channel_rows().forget(id);
    get(core, workspace_id, id).await
}

/// The receipt of a request to this channel.
fn receipt_of(row: &Row, request: &HookRequest) -> Receipt {
    Receipt::new(
        row.workspace_id,
        row.id,
        receipt::Request {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &request.headers,
            body: &request.body,
        },
    )
}

/// What to answer the webhook caller.
pub use plugdesk_host::Reply as HookResponse;
/// A webhook request as the HTTP layer received it (the host's plain record: no Wasm types).
pub use plugdesk_host::WebhookRequest as HookRequest;

/// What the webhook path answers, in its own terms: `plugdesk-api` chooses the HTTP status for
/// it, `plugdesk mail-in` the exit code.
#[derive(Debug)]
pub enum Answer {
    /// The plugin's own answer to its caller (a verification challenge, a widget's data),
    /// passed on as the plugin made it.
    Plugin(HookResponse),
    /// The request was taken; what became of it (`{"accepted": n, "tickets": [...]}`).
    Taken(Json),
    /// The request was refused or could not be handled.
    Refused {
        /// Why.
        why: Refusal,
        /// For the caller and the admin.
        message: String,
        /// The stored request, when it was kept (it can be retried).
        payload: Option<i64>,
    },
}

/// Why the webhook path refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The channel was suspended after repeated plugin failures.
    Suspended,
    /// An admin disabled the channel.
    Disabled,
    /// The channel's plugin is not loaded on this node.
    PluginUnavailable,
    /// The plugin failed (a trap, out of fuel or time) or answered against the contract.
    PluginFailed,
    /// The plugin refused the caller (a signature or token that does not match).
    Rejected,
    /// The plugin found a read request (`GET`, `HEAD`) malformed.
    InvalidRequest,
    /// The plugin found the stored request malformed.
    InvalidPayload,
    /// A message the plugin made of it could not be stored (bad data in it).
    InvalidMessage,
    /// The body is over the channel's limit.
    TooLarge,
    /// Storing the message failed on our side; the request is kept and can be retried.
    NotStored,
}

impl Refusal {
    /// The error code callers see (`"rejected"`, `"payload_too_large"`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Suspended => "channel_suspended",
            Refusal::Disabled => "channel_disabled",
            Refusal::PluginUnavailable => "plugin_unavailable",
            Refusal::PluginFailed => "plugin_failed",
            Refusal::Rejected => "rejected",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::InvalidPayload => "invalid_payload",
            Refusal::InvalidMessage => "invalid_message",
            Refusal::TooLarge => "payload_too_large",
            Refusal::NotStored => "internal",
        }
    }
}

impl Answer {
    /// The answer's body: the plugin's own, what was taken, or
    /// `{"error": {"code", "message", "payload_id"}}`.
    pub fn body(&self) -> Vec<u8> {
        match self {
            Answer::Plugin(r) => r.body.clone(),
            Answer::Taken(v) => v.to_string().into_bytes(),
            Answer::Refused { why, message, payload } => {
                let mut body = json!({ "error": { "code": why.code(), "message": message } });
                if let Some(p) = payload {
                    body["error"]["payload_id"] = json!(p);
                }
                body.to_string().into_bytes()
            }
        }
    }
}

fn refused(why: Refusal, message: &str, payload: Option<i64>) -> Answer {
    Answer::Refused { why, message: message.to_owned(), payload }
}

/// The plugin's own answer if it made one, else what was taken.
fn taken(reply: Option<HookResponse>, body: Json) -> Answer {
    reply.map_or(Answer::Taken(body), Answer::Plugin)
}

/// Receives a webhook. A `POST` (any method but `GET` and `HEAD`) is stored raw, then
/// processed; a `GET` or `HEAD` reads (a widget, a verification challenge): it is not stored
/// and may not bring messages.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel; database errors. Plugin failures are answers,
/// not errors.
pub async fn receive(core: &crate::Core, channel_id: i64, request: HookRequest) -> Result<Answer> {
    let row = core.channel_rows().get(core, channel_id).await?;
    match row.status.as_str() {
        "suspended" => {
            return Ok(refused(
                Refusal::Suspended,
                "this channel is suspended after repeated plugin failures; an admin can resume it",
                None,
            ));
        }
        "disabled" => {
            return Ok(refused(Refusal::Disabled, "this channel is disabled; an admin can enable it", None));
        }
        _ => {}
    }
    let limit = row.request_limit(core);
    if request.body.len() > limit {
        let size = request.body.len();
        return too_large(core, &row, HookRequest { body: Vec::new(), ..request }, Some(size), limit).await;
    }
    if request.method == "GET" || request.method == "HEAD" {
        let method = request.method.clone();
        return Ok(match call_webhook(core, &row, request).await? {
            Err((why, msg)) => refused(why, &msg, None),
            Ok(Outcome::Accepted { messages, .. }) if !messages.is_empty() => {
                let msg = format!(
                    "plugin {} returned messages for a {method} request; messages come in requests that are stored first (POST)",
                    row.plugin_key
                );
                refused(Refusal::PluginFailed, &msg, None)
            }
            Ok(Outcome::Accepted { reply, .. }) => taken(reply, json!({ "accepted": 0 })),
            Ok(Outcome::Rejected(m)) => refused(Refusal::Rejected, &m, None),
            Ok(Outcome::Invalid(m)) => refused(Refusal::InvalidRequest, &m, None),
        });
    }
    // The request is recorded before it is answered: with its message when it brings one
    // (one write), on its own otherwise. Until then nothing is acknowledged, so a crash makes
    // the sender deliver it again.
    let receipt = receipt_of(&row, &request);
    match call_webhook(core, &row, request).await? {
        Err((why, msg)) => {
            let id = receipt.store(core.db(), "failed", Some(&msg)).await?;
            Ok(refused(why, &msg, Some(id)))
        }
        Ok(Outcome::Rejected(m)) => {
            let id = receipt.store(core.db(), "rejected", Some(&m)).await?;
            Ok(refused(Refusal::Rejected, &m, Some(id)))
        }
        Ok(Outcome::Invalid(m)) => {
            let id = receipt.store(core.db(), "failed", Some(&m)).await?;
            Ok(refused(Refusal::InvalidPayload, &m, Some(id)))
        }
        Ok(Outcome::Accepted { mut messages, reply }) if messages.len() == 1 => {
            let kind = core.channels().kind(&row.plugin_key);
            let m = messages.remove(0);
            match deliver(core, &row, &kind, m, Some(receipt.clone())).await {
                Ok(ticket) => Ok(taken(reply, json!({ "accepted": 1, "tickets": [ticket] }))),
                Err(e) => {
                    let msg = format!("message 1 of the payload: {e}");
                    let internal = matches!(e, Error::Db(_) | Error::Internal(_) | Error::Io(_) | Error::Config(_));
                    match receipt.store(core.db(), "failed", Some(&msg)).await {
                        Ok(id) if !internal => Ok(refused(Refusal::InvalidMessage, &msg, Some(id))),
                        Ok(id) => {
                            tracing::error!(channel = row.id, error = %e, payload = id, "inbound message not stored");
                            Ok(refused(
                                Refusal::NotStored,
                                "the message could not be stored; the request is kept and can be retried",
                                Some(id),
                            ))
                        }
                        // Nothing is stored and nothing acknowledged: the sender will retry.
                        Err(_) => Err(e),
                    }
                }
            }
        }
        Ok(Outcome::Accepted { messages, reply }) => {
            let id = receipt.store(core.db(), "received", None).await?;
            deliver_or_retry_later(core, &row, id, accept(core, &row, id, messages, reply).await).await
        }
    }
}

/// Passes on the outcome of delivering a stored payload; when it failed for a reason of our
/// own (the database, a crash of a task), the payload stays `received` and the delivery worker
/// tries again later, so it is not stranded.
async fn deliver_or_retry_later(
    core: &crate::Core,
    row: &Row,
    payload_id: i64,
    outcome: Result<Answer>,
) -> Result<Answer> {
    if let Err(e) = &outcome {
        tracing::warn!(channel = row.id, payload = payload_id, error = %e, "delivery failed; retrying later");
        if let Err(e2) = retry_later(core, payload_id, &e.to_string()).await {
            tracing::error!(payload = payload_id, error = %e2, "could not schedule a delivery retry; the lease ends and the worker takes it");
        }
    }
    outcome
}

/// Refuses a request whose body is over the channel's limit, before the plugin sees it: 413,
/// and a small record of it (`rejected`, without the body) so the admin sees what was refused.
/// `request` comes without its body (it was not read, or is dropped); `size` is its length
/// when known.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel; database errors.
pub async fn refuse_too_large(
    core: &crate::Core,
    channel_id: i64,
    request: HookRequest,
    size: Option<usize>,
) -> Result<Answer> {
    let row = core.channel_rows().get(core, channel_id).await?;
    let limit = row.request_limit(core);
    too_large(core, &row, request, size, limit).await
}

async fn too_large(
    core: &crate::Core,
    row: &Row,
    request: HookRequest,
    size: Option<usize>,
    limit: usize,
) -> Result<Answer> {
    let msg = match size {
        Some(n) => format!(
            "the request body of {n} bytes is larger than this channel's limit of {limit} bytes; an admin can raise max_request_bytes"
        ),
        None => format!(
            "the request body is larger than this channel's limit of {limit} bytes; an admin can raise max_request_bytes"
        ),
    };
    if request.method == "GET" || request.method == "HEAD" {
        return Ok(refused(Refusal::TooLarge, &msg, None));
    }
    let receipt = receipt_of(row, &HookRequest { body: Vec::new(), ..request });
    let id = receipt.store(core.db(), "rejected", Some(&msg)).await?;
    Ok(refused(Refusal::TooLarge, &msg, Some(id)))
}

/// The path and the token header of a mail handed over by `plugdesk mail-in`.
const MAIL_IN_PATH: &str = "/mail-in";
const MAIL_TOKEN_HEADER: &str = "x-plugdesk-mail-token";
/// The envelope sender `plugdesk mail-in --sender` hands the e-mail plugin.
const ENVELOPE_HEADER: &str = "x-plugdesk-envelope-sender";
/// A header only the host sets (HTTP header names cannot hold a colon): this request came
/// through `plugdesk mail-in` on the server, not over the network.
const PIPE_MARK: &str = ":plugdesk-pipe";

/// The registry key of a channel's plugin.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel.
pub async fn plugin_key(core: &crate::Core, channel_id: i64) -> Result<String> {
    Ok(load_row(core.db(), channel_id, None).await?.plugin_key)
}

/// Hands one e-mail, as an MTA pipes it, to an e-mail channel (`plugdesk mail-in`): it goes
/// through the channel's webhook like a message posted to `/hooks/{id}` with the instance's
/// `inbound_token` secret — stored first, then parsed by the plugin.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel, [`Error::Config`] when the channel has no
/// `inbound_token` secret; database errors.
pub async fn mail_in(core: &crate::Core, channel_id: i64, raw: Vec<u8>, sender: Option<String>) -> Result<Answer> {
    let row = load_row(core.db(), channel_id, None).await?;
    let token = row.secrets.get("inbound_token").cloned().ok_or_else(|| {
        Error::Config(format!(
            "channel {channel_id} ({}) has no secret \"inbound_token\"; set one (PATCH /api/v1/channels/{channel_id} with {{\"secrets\": {{\"inbound_token\": \"...\"}}}}) to accept piped mail",
            row.name
        ))
    })?;
    let mut headers = vec![
        ("content-type".into(), "message/rfc822".into()),
        (MAIL_TOKEN_HEADER.into(), token),
        (PIPE_MARK.into(), "mail-in".into()),
    ];
    // The envelope sender, for mail whose headers name no sender; kept with the payload, so
    // a retry sees it too. Control characters cannot reach a header.
    if let Some(sender) =
        sender.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
    {
        headers.push((ENVELOPE_HEADER.into(), sender));
    }
    let request =
        HookRequest { method: "POST".into(), path: MAIL_IN_PATH.into(), query: String::new(), headers, body: raw };
    receive(core, channel_id, request).await
}

/// Processes a stored payload again (after fixing the plugin or its settings). A stored poll
/// result is delivered again as stored, without asking the plugin.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel or payload.
pub async fn retry(core: &crate::Core, workspace_id: i64, channel_id: i64, payload_id: i64) -> Result<Answer> {
    let row = load_row(core.db(), channel_id, Some(workspace_id)).await?;
    reprocess(core, &row, payload_id).await
}

async fn reprocess(core: &crate::Core, row: &Row, payload_id: i64) -> Result<Answer> {
    let channel_id = row.id;
    let p = db::query_one(
        core.db(),
        "SELECT * FROM inbound_payloads WHERE id = ? AND channel_id = ?",
        vec![payload_id.into(), channel_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("payload"))?;
    let method: String = db::col(&p, "method")?;
    let body: Vec<u8> = db::col(&p, "body")?;
    if method == POLL_METHOD {
        let messages = messages_from_json(&body)?;
        return accept(core, row, payload_id, messages, None).await;
    }
    let mut headers: Vec<(String, String)> =
        serde_json::from_str::<Vec<(String, String)>>(&db::col::<String>(&p, "headers")?)?;
    // Stored headers keep no secrets. The mail token is the channel's own `inbound_token`:
    // a mail the host itself took from `plugdesk mail-in` (marked by a header name HTTP cannot
    // carry), or one whose token the plugin accepted on arrival (processed, or still to be
    // delivered), gets the current token back in place of the mask. Any other request gets
    // nothing back — else a forged mail would pass on an admin's retry. Other masked
    // credentials are gone; a plugin that checks them refuses the stored request again.
    let status: String = db::col(&p, "status")?;
    let vouched = headers.iter().any(|(k, _)| k == PIPE_MARK) || status == "processed" || status == "received";
    if vouched && let Some(token) = row.secrets.get("inbound_token") {
        for (name, value) in &mut headers {
            if name.eq_ignore_ascii_case(MAIL_TOKEN_HEADER) && value == MASKED {
                value.clone_from(token);
            }
        }
    }
    let request = HookRequest { method, path: db::col(&p, "path")?, query: db::col(&p, "query")?, headers, body };
    process(core, row, payload_id, request).await
}

async fn set_payload(
    core: &crate::Core,
    payload_id: i64,
    status: &str,
    error: Option<&str>,
    result: Option<Json>,
) -> Result<()> {
    db::exec(
        core.db(),
        "UPDATE inbound_payloads SET status = ?, error = ?, result = ?, attempts = attempts + 1, processed_at = ?, locked_until = NULL, next_attempt_at = NULL WHERE id = ?",
        vec![status.into(), error.map(str::to_owned).into(), result.map(|r| r.to_string()).into(), crate::now_ms().into(), payload_id.into()],
    )
    .await?;
    Ok(())
}

/// Counts a failed plugin call against the channel and suspends it after [`SUSPEND_AFTER`] in
/// a row. Returns the message to record.
pub(crate) async fn plugin_failed(
    core: &crate::Core,
    row: &Row,
    elapsed: Duration,
    error: &plugdesk_host::Error,
) -> Result<String> {
    record_failure(core, row, elapsed, error, true).await
}

/// Whether a failed webhook call is the request's doing, not the plugin's: a request larger
/// than what its kind takes by default (the admin raised the limit) that used up the call's
/// fuel, time or memory. Only failures on ordinary traffic say the plugin is broken; were
/// these counted, anyone could suspend a channel — and turn its customers away — with a few
/// heavy posts.
fn caused_by_request(error: &plugdesk_host::Error, size: usize, usual: usize) -> bool {
    use plugdesk_host::Error as E;
    matches!(error, E::OutOfFuel(_) | E::Timeout(_) | E::Memory(_)) && size > usual
}

/// Records a failed plugin call in the counters and on the channel; `counts` says whether it
/// counts towards suspension.
async fn record_failure(
    core: &crate::Core,
    row: &Row,
    elapsed: Duration,
    error: &plugdesk_host::Error,
    counts: bool,
) -> Result<String> {
    let msg = format!("plugin {} of channel {}: {error}", crate::plugin::plugin_id(&row.plugin_key), row.id);
    tracing::warn!(channel = row.id, plugin = %row.plugin_key, %error, counts, "plugin call failed");
    core.channels().record("channel", row.id, elapsed, Some(msg.clone()));
    if !counts {
        db::exec(core.db(), "UPDATE channels SET last_error = ? WHERE id = ?", vec![msg.clone().into(), row.id.into()])
            .await?;
        return Ok(msg);
    }
    let failures = db::query_one(
        core.db(),
        "UPDATE channels SET consecutive_failures = consecutive_failures + 1, last_error = ? WHERE id = ? RETURNING consecutive_failures",
        vec![msg.clone().into(), row.id.into()],
    )
    .await?
    .map(|r| db::col::<i32>(&r, "consecutive_failures"))
    .transpose()?
    .unwrap_or(0);
    if failures >= SUSPEND_AFTER {
        db::exec(
            core.db(),
            "UPDATE channels SET status = 'suspended' WHERE id = ? AND status = 'active'",
            vec![row.id.into()],
        )
        .await?;
        tracing::error!(channel = row.id, plugin = %row.plugin_key, failures, "channel suspended after repeated plugin failures");
    }
    core.channel_rows().forget(row.id);
    Ok(msg)
}

/// Records a successful call (and clears the failure streak, only when there is one: every
/// write waits for SQLite's single write lock).
pub(crate) async fn plugin_succeeded(core: &crate::Core, row: &Row, elapsed: Duration) -> Result<()> {
    core.channels().record("channel", row.id, elapsed, None);
    if row.consecutive_failures > 0 {
        db::exec(core.db(), "UPDATE channels SET consecutive_failures = 0 WHERE id = ?", vec![row.id.into()]).await?;
        core.channel_rows().forget(row.id);
    }
    Ok(())
}

/// Calls the plugin's `handle-webhook`; `Err` is the answer for a failed call.
async fn call_webhook(
    core: &crate::Core,
    row: &Row,
    request: HookRequest,
) -> Result<std::result::Result<Outcome, (Refusal, String)>> {
    let registry = core.channels().clone();
    registry.wait_loaded().await;
    let Some(plugin) = registry.plugin(&row.plugin_key) else {
        let msg = format!("plugin {} is not loaded on this server", crate::plugin::plugin_id(&row.plugin_key));
        return Ok(Err((Refusal::PluginUnavailable, msg)));
    };
    let ctx = ChannelContext::new(core, row.clone());
    let started = Instant::now();
    let reg = registry.clone();
    let (size, usual) = (request.body.len(), default_request_bytes(&registry.kind(&row.plugin_key), core.limits()));
    let called = tokio::task::spawn_blocking(move || reg.host.handle_webhook(&plugin, &reg.limits, ctx, request))
        .await
        .map_err(|e| Error::Internal(format!("plugin task failed: {e}")))?;
    let elapsed = started.elapsed();
    match called {
        Ok(outcome) => {
            plugin_succeeded(core, row, elapsed).await?;
            Ok(Ok(outcome))
        }
        Err(e) => {
            let msg = record_failure(core, row, elapsed, &e, !caused_by_request(&e, size, usual)).await?;
            Ok(Err((Refusal::PluginFailed, msg)))
        }
    }
}

async fn process(core: &crate::Core, row: &Row, payload_id: i64, request: HookRequest) -> Result<Answer> {
    match call_webhook(core, row, request).await? {
        Err((why, msg)) => {
            set_payload(core, payload_id, "failed", Some(&msg), None).await?;
            Ok(refused(why, &msg, Some(payload_id)))
        }
        Ok(Outcome::Rejected(m)) => {
            set_payload(core, payload_id, "rejected", Some(&m), None).await?;
            Ok(refused(Refusal::Rejected, &m, Some(payload_id)))
        }
        Ok(Outcome::Invalid(m)) => {
            set_payload(core, payload_id, "failed", Some(&m), None).await?;
            Ok(refused(Refusal::InvalidPayload, &m, Some(payload_id)))
        }
        Ok(Outcome::Accepted { messages, reply }) => accept(core, row, payload_id, messages, reply).await,
    }
}

/// How many messages of one payload are delivered at the same time.
const CONCURRENT_DELIVERIES: usize = 32;

/// A message of a batch with its position in it.
type Numbered = (usize, InboundMessage);

/// Splits a batch, each message with its position: those that refer to no other message of
/// the batch (by `replies_to` or a shared conversation), and the rest, in order.
fn independent(messages: Vec<InboundMessage>) -> (Vec<Numbered>, Vec<Numbered>) {
    use std::collections::HashSet;
    let ids: HashSet<String> = messages.iter().map(|m| m.external_id.clone()).collect();
    let mut conversations: HashMap<String, usize> = HashMap::new();
    for c in messages.iter().filter_map(|m| m.conversation.clone()) {
        *conversations.entry(c).or_default() += 1;
    }
    messages.into_iter().enumerate().partition(|(_, m)| {
        !m.replies_to.iter().any(|r| ids.contains(r))
            && m.conversation.as_ref().is_none_or(|c| conversations.get(c).copied().unwrap_or(0) < 2)
    })
}

/// Delivers the messages of a stored payload and records the outcome on it.
async fn accept(
    core: &crate::Core,
    row: &Row,
    payload_id: i64,
    messages: Vec<InboundMessage>,
    reply: Option<HookResponse>,
) -> Result<Answer> {
    let kind = core.channels().kind(&row.plugin_key);
    let mut delivered: Vec<(usize, Result<i64>)> = Vec::with_capacity(messages.len());
    // Messages that cannot thread onto another one of this batch are delivered concurrently,
    // so the ticket writer puts their new tickets into shared transactions (a poll batch is
    // hundreds of mails); the others follow one at a time, in order, after them.
    let (free, chained) = independent(messages);
    let mut free = free.into_iter().peekable();
    while free.peek().is_some() {
        let mut running = tokio::task::JoinSet::new();
        for (i, m) in free.by_ref().take(CONCURRENT_DELIVERIES) {
            let (core, row, kind) = (core.clone(), row.clone(), kind.clone());
            running.spawn(async move { (i, deliver(&core, &row, &kind, m, None).await) });
        }
        while let Some(done) = running.join_next().await {
            delivered.push(done.map_err(|e| Error::Internal(format!("delivery task failed: {e}")))?);
        }
    }
    for (i, m) in chained {
        delivered.push((i, deliver(core, row, &kind, m, None).await));
    }
    delivered.sort_by_key(|(i, _)| *i);
    let mut tickets = Vec::new();
    let mut failures = Vec::new();
    // One bad message does not hold back the others; the payload is marked failed with every
    // failure, and retrying it re-delivers only what is missing (messages are stored once per
    // external id).
    for (i, result) in delivered {
        match result {
            Ok(t) => tickets.push(t),
            Err(e @ (Error::Db(_) | Error::Internal(_) | Error::Io(_) | Error::Config(_))) => return Err(e),
            Err(e) => failures.push(format!("message {} of the payload: {e}", i + 1)),
        }
    }
    if !failures.is_empty() {
        let more = failures.len().saturating_sub(10);
        let mut msg = failures.into_iter().take(10).collect::<Vec<_>>().join("; ");
        if more > 0 {
            msg.push_str(&format!("; and {more} more"));
        }
        set_payload(core, payload_id, "failed", Some(&msg), Some(json!({ "tickets": tickets }))).await?;
        return Ok(refused(Refusal::InvalidMessage, &msg, Some(payload_id)));
    }
    set_payload(core, payload_id, "processed", None, Some(json!({ "tickets": tickets }))).await?;
    Ok(taken(reply, json!({ "accepted": tickets.len(), "tickets": tickets })))
}

/// Puts one inbound message on its ticket, or opens one. The ticket is found, in this order:
/// by the messages it answers (`replies_to`, against the external ids stored on channels of
/// this kind in the workspace), by the ticket number it names when the sender is that
/// ticket's customer, by the open ticket of its conversation on this channel. A reply to a
/// closed ticket reopens it, or opens a follow-up ticket when the workspace says
/// `closed_ticket_reply = follow_up`. A delivery failure (a bounce) about one of our messages
/// opens no ticket: it marks that message failed (see [`bounced`]); one about a message we
/// never sent is a ticket of its own, tagged `delivery-report`, automatic, so never answered.
/// A sender the channel could not find (an address in the reserved `.invalid` domain) gets a
/// ticket tagged `unknown-sender`. Before the message is stored, a known sender's name and
/// language are learnt from it (see [`learn`]).
async fn deliver(
    core: &crate::Core,
    row: &Row,
    kind: &str,
    mut m: InboundMessage,
    receipt: Option<Receipt>,
) -> Result<i64> {
    let mut tags = Vec::new();
    if let Some(failure) = m.delivery_failure.take() {
        let receipt = receipt.clone();
        if let Some(ticket_id) = bounced(core, row, kind, &m, &failure, receipt).await? {
            return Ok(ticket_id);
        }
        tracing::info!(channel = row.id, about = %failure.external_id, "a delivery report about a message this workspace did not send: kept as a ticket");
        tags.push("delivery-report".to_owned());
        m.automatic = true;
    }
    let unknown = unknown_sender(&m.sender_kind, &m.sender_address);
    if unknown {
        tags.push("unknown-sender".to_owned());
    } else {
        learn(core, row, &m).await?;
    }
    let attachments: Vec<AttachmentInput> = m
        .attachments
        .iter()
        .map(|a| AttachmentInput {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&a.data),
        })
        .collect();
    let actor = format!("channel:{}", row.id);
    let mut follow_up_of = None;
    if let Some((ticket_id, number, status)) = thread_target(core, row, kind, &m).await? {
        if status == "closed" && closed_ticket_reply(core, row.workspace_id).await? == "follow_up" {
            follow_up_of = Some(number);
        } else {
            let input = MessageInput {
                body: m.text,
                body_html: m.html,
                body_quoted: m.quoted,
                subject: m.subject,
                automatic: m.automatic,
                raw: m.raw,
                channel: Some(kind.to_owned()),
                external_id: Some(m.external_id),
                attachments,
                receipt,
                reply_channel_id: None,
            };
            crate::ticket::add_message(core, row.workspace_id, ticket_id, MessageKind::Inbound, None, &actor, &input)
                .await?;
            return Ok(ticket_id);
        }
    }
    let subject = m.subject.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        let first: String = m.text.lines().next().unwrap_or("").chars().take(80).collect();
        if first.trim().is_empty() { format!("Message via {}", row.name) } else { first }
    });
    let mut attributes = serde_json::Map::new();
    if m.automatic {
        attributes.insert("automatic".into(), json!(true));
    }
    if let Some(n) = follow_up_of {
        attributes.insert("follow_up_of".into(), json!(n));
    }
    let input = NewTicket {
        subject,
        body: m.text,
        body_html: m.html,
        body_quoted: m.quoted,
        raw: m.raw,
        customer: NewCustomer {
            id: None,
            name: m.sender_name,
            email: None,
            phone: None,
            identities: vec![IdentityInput { kind: m.sender_kind, address: m.sender_address }],
            organization_id: None,
            tier: None,
            language: None,
            attributes: None,
            learned: true,
        },
        channel: Some(kind.to_owned()),
        priority: None,
        tags: {
            if follow_up_of.is_some() {
                tags.push("follow-up".into());
            }
            tags
        },
        category: None,
        attributes: (!attributes.is_empty()).then_some(Json::Object(attributes)),
        external_id: Some(m.external_id),
        team_id: None,
        assignee_id: None,
        attachments,
        conversation: m.conversation,
        channel_id: Some(row.id),
        receipt,
    };
    let created = core.writer().create(row.workspace_id, &actor, input, core.limits()).await?;
    if created.created {
        core.metrics().count_tickets_created(1);
    }
    Ok(created.ticket.id)
}

/// Whether an identity is one no reply can reach: an e-mail address in the `.invalid`
/// top-level domain, reserved for that (RFC 2606). The e-mail channel files mail without any
/// sender address under `unknown-sender@unknown.invalid`.
pub(crate) fn unknown_sender(kind: &str, address: &str) -> bool {
    kind == "email"
        && address.rsplit_once('@').is_some_and(|(_, domain)| {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "invalid" || domain.ends_with(".invalid")
        })
}

/// Learns from a known sender's message, before it is stored (so the rules it triggers see
/// the result): the display name replaces a name that was only derived from the address, and
/// the detected language sets a language nobody gave (see
/// [`crate::language`]). A new sender's name and language are set when the ticket writer
/// creates them.
async fn learn(core: &crate::Core, row: &Row, m: &InboundMessage) -> Result<()> {
    let Ok((id_kind, address)) = crate::customer::normalize_identity(&m.sender_kind, &m.sender_address) else {
        return Ok(());
    };
    let db = core.db();
    let Some(c) = db::query_one(
        db,
        "SELECT c.id, c.name, c.name_origin, c.language, c.language_origin FROM customers c JOIN customer_identities ci ON ci.customer_id = c.id WHERE ci.workspace_id = ? AND ci.kind = ? AND ci.address = ?",
        vec![row.workspace_id.into(), id_kind.into(), address.into()],
    )
    .await?
    else {
        return Ok(());
    };
    let (name, name_origin): (String, String) = (db::col(&c, "name")?, db::col(&c, "name_origin")?);
    let (language, language_origin): (String, String) = (db::col(&c, "language")?, db::col(&c, "language_origin")?);
    let mut patch = crate::customer::CustomerPatch::default();
    let new_name = m.sender_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = new_name
        && name_origin == crate::customer::NameOrigin::ADDRESS
        && n != name
    {
        patch.name = Some(n.to_owned());
    }
    if language_origin != "given"
        && let Some(d) = crate::language::detect(&m.text)
        && d.code != language
        && d.reliable
        && (language_origin == "default" || d.overrides())
    {
        patch.language = Some(d.code.to_owned());
    }
    if patch.name.is_none() && patch.language.is_none() {
        return Ok(());
    }
    let customer_id: i64 = db::col(&c, "id")?;
    let actor = format!("channel:{}", row.id);
    let txn = db::begin_write(db).await?;
    let events = crate::customer::update_in(&txn, row.workspace_id, customer_id, &actor, &patch).await?;
    // The patch marks what it sets as given; what mail teaches stays open to the next mail.
    if patch.name.is_some() {
        db::exec(
            &txn,
            "UPDATE customers SET name_origin = ? WHERE id = ?",
            vec![crate::customer::NameOrigin::MAIL.into(), customer_id.into()],
        )
        .await?;
    }
    if patch.language.is_some() {
        db::exec(&txn, "UPDATE customers SET language_origin = 'detected' WHERE id = ?", vec![customer_id.into()])
            .await?;
    }
    txn.commit().await?;
    core.bus().publish(events);
    Ok(())
}

/// Most `replies_to` ids looked up for one message.
const MAX_REPLIES_TO: usize = 50;

/// The ticket an inbound message belongs to, if any: (id, number, status).
async fn thread_target(
    core: &crate::Core,
    row: &Row,
    kind: &str,
    m: &InboundMessage,
) -> Result<Option<(i64, i64, String)>> {
    let db = core.db();
    let ids: Vec<&String> = m.replies_to.iter().filter(|id| !id.is_empty()).take(MAX_REPLIES_TO).collect();
    if !ids.is_empty() {
        let marks = vec!["?"; ids.len()].join(", ");
        let mut values: Vec<sea_orm::Value> = vec![row.workspace_id.into(), kind.into()];
        values.extend(ids.iter().map(|id| sea_orm::Value::from(id.as_str())));
        let found = db::query_all(
            db,
            &format!(
                "SELECT m.external_id, t.id, t.number, t.status FROM messages m JOIN tickets t ON t.id = m.ticket_id WHERE m.workspace_id = ? AND m.channel = ? AND m.external_id IN ({marks})"
            ),
            values,
        )
        .await?;
        for id in &ids {
            for r in &found {
                if db::col::<Option<String>>(r, "external_id")?.as_deref() == Some(id.as_str()) {
                    return Ok(Some((db::col(r, "id")?, db::col(r, "number")?, db::col(r, "status")?)));
                }
            }
        }
    }
    if let Some(number) = m.ticket_number.and_then(|n| i64::try_from(n).ok())
        && let Ok((id_kind, address)) = crate::customer::normalize_identity(&m.sender_kind, &m.sender_address)
    {
        let found = db::query_one(
            db,
            "SELECT t.id, t.number, t.status FROM tickets t JOIN customer_identities ci ON ci.customer_id = t.customer_id WHERE t.workspace_id = ? AND t.number = ? AND ci.kind = ? AND ci.address = ?",
            vec![row.workspace_id.into(), number.into(), id_kind.into(), address.into()],
        )
        .await?;
        if let Some(r) = found {
            return Ok(Some((db::col(&r, "id")?, db::col(&r, "number")?, db::col(&r, "status")?)));
        }
    }
    if let Some(conversation) = &m.conversation {
        let open = db::query_one(
            db,
            "SELECT id, number, status FROM tickets WHERE workspace_id = ? AND channel = ? AND conversation = ? AND channel_id = ? AND status IN ('new', 'open', 'pending') ORDER BY id DESC LIMIT 1",
            vec![row.workspace_id.into(), kind.into(), conversation.clone().into(), row.id.into()],
        )
        .await?;
        if let Some(r) = open {
            return Ok(Some((db::col(&r, "id")?, db::col(&r, "number")?, db::col(&r, "status")?)));
        }
    }
    Ok(None)
}

/// What a workspace does with a customer's reply to a closed ticket: `reopen` or `follow_up`.
async fn closed_ticket_reply(core: &crate::Core, workspace_id: i64) -> Result<String> {
    let row =
        db::query_one(core.db(), "SELECT closed_ticket_reply FROM workspaces WHERE id = ?", vec![workspace_id.into()])
            .await?
            .ok_or(Error::NotFound("workspace"))?;
    db::col(&row, "closed_ticket_reply")
}

/// A report that one of our messages was not delivered: the message is marked failed with
/// the reason (event `message.failed`), and the report is kept on its ticket as an internal
/// note with its source. No ticket is opened. Returns the ticket of the failed message, or
/// `None` when the report is about a message this workspace never sent (the caller keeps it
/// as a ticket of its own: refusing it would make the mail server bounce the bounce).
async fn bounced(
    core: &crate::Core,
    row: &Row,
    kind: &str,
    m: &InboundMessage,
    failure: &plugdesk_host::DeliveryFailure,
    receipt: Option<Receipt>,
) -> Result<Option<i64>> {
    let txn = db::begin_write(core.db()).await?;
    let original = db::query_one(
        &txn,
        "SELECT id, ticket_id FROM messages WHERE workspace_id = ? AND channel = ? AND external_id = ? AND direction = 'outbound'",
        vec![row.workspace_id.into(), kind.into(), failure.external_id.clone().into()],
    )
    .await?;
    let Some(original) = original else { return Ok(None) };
    let (message_id, ticket_id): (i64, i64) = (db::col(&original, "id")?, db::col(&original, "ticket_id")?);
    let known = db::query_one(
        &txn,
        "SELECT id FROM messages WHERE workspace_id = ? AND channel = ? AND external_id = ?",
        vec![row.workspace_id.into(), kind.into(), m.external_id.clone().into()],
    )
    .await?;
    if known.is_some() {
        return Ok(Some(ticket_id));
    }
    let recipient = failure.recipient.as_deref().map(|r| format!(" to {r}")).unwrap_or_default();
    let error = format!("bounced{recipient}: {}", failure.reason);
    db::exec(
        &txn,
        "UPDATE messages SET delivery_status = 'failed', delivery_error = ? WHERE id = ?",
        vec![error.clone().into(), message_id.into()],
    )
    .await?;
    let note = MessageInput {
        body: format!("Delivery of message {message_id}{recipient} failed: {}\n\n{}", failure.reason, m.text),
        channel: Some(kind.to_owned()),
        external_id: Some(m.external_id.clone()),
        automatic: true,
        raw: m.raw.clone(),
        receipt,
        ..MessageInput::default()
    };
    let actor = format!("channel:{}", row.id);
    let (_, mut events, _) =
        crate::ticket::add_message_in(&txn, core, row.workspace_id, ticket_id, MessageKind::Note, &actor, &note)
            .await?;
    events.extend(
        crate::event::append(
            &txn,
            row.workspace_id,
            vec![crate::event::NewEvent {
                kind: "message.failed",
                actor,
                ticket_id: Some(ticket_id),
                customer_id: None,
                changes: json!({ "message_id": message_id, "error": error, "bounced": true }),
            }],
        )
        .await?,
    );
    txn.commit().await?;
    core.bus().publish(events);
    Ok(Some(ticket_id))
}

/// The `method` of a stored poll result.
const POLL_METHOD: &str = "POLL";
/// How often the delivery worker looks for payloads left `received`.
const DELIVERY_TICK: Duration = Duration::from_secs(1);
/// Longest wait between two delivery attempts of one payload.
const DELIVERY_MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a node holds a claimed poll before another node may take it over.
const POLL_LEASE_MS: i64 = 10 * 60 * 1000;

fn message_json(m: &InboundMessage) -> Json {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "external_id": m.external_id, "conversation": m.conversation, "sender_kind": m.sender_kind,
        "sender_address": m.sender_address, "sender_name": m.sender_name, "subject": m.subject,
        "text": m.text, "html": m.html, "automatic": m.automatic,
        "attachments": m.attachments.iter().map(|a| json!({ "filename": a.filename, "content_type": a.content_type, "data": b64.encode(&a.data) })).collect::<Vec<_>>(),
        "replies_to": m.replies_to, "ticket_number": m.ticket_number, "quoted": m.quoted,
        "raw": m.raw.as_ref().map(|r| b64.encode(r)),
        "delivery_failure": m.delivery_failure.as_ref().map(|f| json!({ "external_id": f.external_id, "recipient": f.recipient, "reason": f.reason })),
    })
}

fn messages_from_json(body: &[u8]) -> Result<Vec<InboundMessage>> {
    #[derive(Deserialize)]
    struct StoredAttachment {
        filename: String,
        content_type: String,
        data: String,
    }
    #[derive(Deserialize)]
    struct StoredFailure {
        external_id: String,
        recipient: Option<String>,
        reason: String,
    }
    #[derive(Deserialize)]
    struct Stored {
        external_id: String,
        conversation: Option<String>,
        sender_kind: String,
        sender_address: String,
        sender_name: Option<String>,
        subject: Option<String>,
        text: String,
        html: Option<String>,
        automatic: bool,
        attachments: Vec<StoredAttachment>,
        #[serde(default)]
        replies_to: Vec<String>,
        #[serde(default)]
        ticket_number: Option<u64>,
        #[serde(default)]
        quoted: Option<String>,
        #[serde(default)]
        raw: Option<String>,
        #[serde(default)]
        delivery_failure: Option<StoredFailure>,
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored: Vec<Stored> = serde_json::from_slice(body)?;
    stored
        .into_iter()
        .map(|s| {
            let attachments = s
                .attachments
                .into_iter()
                .map(|a| {
                    let data = b64
                        .decode(a.data)
                        .map_err(|e| Error::Internal(format!("stored attachment is not base64: {e}")))?;
                    Ok(plugdesk_host::Attachment { filename: a.filename, content_type: a.content_type, data })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(InboundMessage {
                external_id: s.external_id,
                conversation: s.conversation,
                sender_kind: s.sender_kind,
                sender_address: s.sender_address,
                sender_name: s.sender_name,
                subject: s.subject,
                text: s.text,
                html: s.html,
                attachments,
                automatic: s.automatic,
                replies_to: s.replies_to,
                ticket_number: s.ticket_number,
                quoted: s.quoted,
                raw: s
                    .raw
                    .map(|r| b64.decode(r).map_err(|e| Error::Internal(format!("stored source is not base64: {e}"))))
                    .transpose()?,
                delivery_failure: s.delivery_failure.map(|f| plugdesk_host::DeliveryFailure {
                    external_id: f.external_id,
                    recipient: f.recipient,
                    reason: f.reason,
                }),
            })
        })
        .collect()
}

/// Polls the channels that are due, every `tick`, for as long as the server runs. A channel
/// is claimed with a conditional update, so with several nodes on one database each poll
/// runs once.
pub async fn run_polls(core: crate::Core, tick: Duration) {
    core.channels().wait_loaded().await;
    loop {
        if let Err(e) = poll_due(&core).await {
            tracing::warn!(error = %e, "poll scheduler pass failed");
        }
        tokio::time::sleep(tick).await;
    }
}

async fn poll_due(core: &crate::Core) -> Result<()> {
    let now = crate::now_ms();
    let rows = db::query_all(
        core.db(),
        "SELECT id, next_poll_at FROM channels WHERE status = 'active' AND poll_interval_ms IS NOT NULL AND next_poll_at <= ? ORDER BY next_poll_at LIMIT 16",
        vec![now.into()],
    )
    .await?;
    for r in rows {
        let (id, due): (i64, i64) = (db::col(&r, "id")?, db::col(&r, "next_poll_at")?);
        let claimed = db::exec(
            core.db(),
            "UPDATE channels SET next_poll_at = ? WHERE id = ? AND next_poll_at = ?",
            vec![(now + POLL_LEASE_MS).into(), id.into(), due.into()],
        )
        .await?;
        if claimed == 1 {
            let core = core.clone();
            tokio::spawn(async move {
                if let Err(e) = poll_channel(&core, id).await {
                    tracing::warn!(channel = id, error = %e, "poll failed");
                }
            });
        }
    }
    Ok(())
}

/// Polls one channel until the source has nothing more (at most [`POLL_MAX_ROUNDS`] rounds),
/// storing each batch with its cursor before delivering it, then schedules the next poll.
async fn poll_channel(core: &crate::Core, id: i64) -> Result<()> {
    let mut row = load_row(core.db(), id, None).await?;
    let registry = core.channels().clone();
    let outcome = poll_rounds(core, &registry, &mut row).await;
    let interval = row.poll_interval_ms.unwrap_or(POLL_DEFAULT_MS);
    db::exec(
        core.db(),
        "UPDATE channels SET next_poll_at = ? WHERE id = ?",
        vec![(crate::now_ms() + interval).into(), id.into()],
    )
    .await?;
    outcome
}

async fn poll_rounds(core: &crate::Core, registry: &Arc<crate::plugin::Registry>, row: &mut Row) -> Result<()> {
    for _ in 0..POLL_MAX_ROUNDS {
        let Some(plugin) = registry.plugin(&row.plugin_key) else {
            return set_channel_error(
                core,
                row.id,
                &format!("plugin {} is not loaded on this server", crate::plugin::plugin_id(&row.plugin_key)),
            )
            .await;
        };
        let ctx = ChannelContext::new(core, row.clone());
        let (reg, cursor) = (registry.clone(), row.cursor.clone());
        let started = Instant::now();
        let called = tokio::task::spawn_blocking(move || reg.host.poll(&plugin, &reg.limits, ctx, cursor))
            .await
            .map_err(|e| Error::Internal(format!("plugin task failed: {e}")))?;
        let elapsed = started.elapsed();
        let (messages, cursor, more) = match called {
            Err(e) => {
                plugin_failed(core, row, elapsed, &e).await?;
                return Ok(());
            }
            Ok(Polled::Failed(m)) => {
                registry.record("channel", row.id, elapsed, Some(m.clone()));
                return set_channel_error(core, row.id, &format!("poll: {m}")).await;
            }
            Ok(Polled::Found { messages, cursor, more }) => (messages, cursor, more),
        };
        plugin_succeeded(core, row, elapsed).await?;
        let new_cursor = cursor.or(row.cursor.clone());
        let payload_id = store_poll(core, row, &messages, new_cursor.as_deref()).await?;
        row.cursor = new_cursor;
        row.last_error = None;
        if let Some(payload_id) = payload_id {
            let outcome = accept(core, row, payload_id, messages, None).await;
            deliver_or_retry_later(core, row, payload_id, outcome).await?;
        }
        if !more {
            break;
        }
    }
    Ok(())
}

/// Stores what a poll found and the new cursor in one transaction: a crash after it delivers
/// the stored batch on retry; a crash before it polls the same batch again.
async fn store_poll(
    core: &crate::Core,
    row: &Row,
    messages: &[InboundMessage],
    cursor: Option<&str>,
) -> Result<Option<i64>> {
    let txn = db::begin_write(core.db()).await?;
    let mut payload = None;
    if !messages.is_empty() {
        let body = Json::Array(messages.iter().map(message_json).collect()).to_string();
        let size = body.len() as i64;
        let stored = db::query_one(
            &txn,
            "INSERT INTO inbound_payloads (workspace_id, channel_id, received_at, method, path, query, headers, body, size, status, locked_until) VALUES (?, ?, ?, ?, '', '', '[]', ?, ?, 'received', ?) RETURNING id",
            vec![
                row.workspace_id.into(),
                row.id.into(),
                crate::now_ms().into(),
                POLL_METHOD.into(),
                body.into_bytes().into(),
                size.into(),
                (crate::now_ms() + DELIVERY_LEASE_MS).into(),
            ],
        )
        .await?
        .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
        payload = Some(db::col(&stored, "id")?);
    }
    db::exec(
        &txn,
        "UPDATE channels SET cursor = ?, last_error = NULL WHERE id = ?",
        vec![cursor.map(str::to_owned).into(), row.id.into()],
    )
    .await?;
    txn.commit().await?;
    Ok(payload)
}

/// Gives up this node's lease on a payload whose delivery failed for a reason of our own and
/// schedules the next attempt (backoff `delivery_retry_base_ms`·2ⁿ, ≤ 1 h); after
/// `delivery_max_attempts` it is `failed`, listed with the reason and retryable by hand.
async fn retry_later(core: &crate::Core, payload_id: i64, error: &str) -> Result<()> {
    let cfg = core.inbound();
    let attempts =
        db::query_one(core.db(), "SELECT attempts FROM inbound_payloads WHERE id = ?", vec![payload_id.into()])
            .await?
            .map(|r| db::col::<i32>(&r, "attempts"))
            .transpose()?
            .unwrap_or(0)
            + 1;
    let backoff = cfg
        .delivery_retry_base_ms
        .saturating_mul(1u64 << attempts.clamp(1, 30).saturating_sub(1))
        .min(DELIVERY_MAX_BACKOFF_MS);
    let give_up = u32::try_from(attempts).unwrap_or(u32::MAX) >= cfg.delivery_max_attempts;
    let status = if give_up { "failed" } else { "received" };
    db::exec(
        core.db(),
        "UPDATE inbound_payloads SET status = ?, error = ?, attempts = ?, next_attempt_at = ?, locked_until = NULL, processed_at = ? WHERE id = ? AND status = 'received'",
        vec![
            status.into(),
            format!("delivery attempt {attempts}: {error}").into(),
            attempts.into(),
            (crate::now_ms() + i64::try_from(backoff).unwrap_or(i64::MAX / 2)).into(),
            give_up.then(crate::now_ms).into(),
            payload_id.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Delivers stored payloads left `received` — by a node that died between storing and
/// delivering, or by a delivery that failed — for as long as the server runs. Each is claimed
/// with a lease (a conditional update), so with several nodes on one database each is
/// delivered by one.
pub async fn run_deliveries(core: crate::Core) {
    core.channels().wait_loaded().await;
    loop {
        if let Err(e) = deliver_due(&core).await {
            tracing::warn!(error = %e, "delivery pass over stored payloads failed");
        }
        tokio::time::sleep(DELIVERY_TICK).await;
    }
}

async fn deliver_due(core: &crate::Core) -> Result<()> {
    let now = crate::now_ms();
    let due = db::query_all(
        core.db(),
        "SELECT id, channel_id FROM inbound_payloads WHERE status = 'received' AND COALESCE(next_attempt_at, 0) <= ? AND COALESCE(locked_until, 0) < ? ORDER BY id LIMIT 16",
        vec![now.into(), now.into()],
    )
    .await?;
    for r in due {
        let (id, channel_id): (i64, i64) = (db::col(&r, "id")?, db::col(&r, "channel_id")?);
        let claimed = db::exec(
            core.db(),
            "UPDATE inbound_payloads SET locked_until = ? WHERE id = ? AND status = 'received' AND COALESCE(locked_until, 0) < ?",
            vec![(now + DELIVERY_LEASE_MS).into(), id.into(), now.into()],
        )
        .await?;
        if claimed != 1 {
            continue;
        }
        let outcome = match load_row(core.db(), channel_id, None).await {
            Ok(row) => reprocess(core, &row, id).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Answer::Refused { why, message, .. }) => {
                tracing::info!(channel = channel_id, payload = id, refused = why.code(), %message, "stored payload refused")
            }
            Ok(_) => tracing::info!(channel = channel_id, payload = id, "stored payload delivered"),
            Err(e) => {
                tracing::warn!(channel = channel_id, payload = id, error = %e, "stored payload not delivered; retrying later");
                retry_later(core, id, &e.to_string()).await?;
            }
        }
    }
    Ok(())
}

/// Drops stored payloads past their retention, and the oldest ones of a channel over its
/// storage budget, every `cleanup_interval_ms`, for as long as the server runs.
pub async fn run_cleanup(core: crate::Core) {
    let every = Duration::from_millis(core.inbound().cleanup_interval_ms.max(100));
    loop {
        match clean_payloads(&core).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "stored payloads cleaned up"),
            Err(e) => tracing::warn!(error = %e, "cleaning stored payloads failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass of the cleaner; returns how many payloads it dropped. Payloads still to be
/// processed (`received`) or waiting for an admin (`failed`) are never dropped: only
/// `processed` (its messages live in their tickets) and `rejected` ones (refused, too large).
async fn clean_payloads(core: &crate::Core) -> Result<u64> {
    let cfg = core.inbound();
    let now = crate::now_ms();
    let mut removed = 0;
    for (status, days) in [("processed", cfg.processed_retention_days), ("rejected", cfg.rejected_retention_days)] {
        removed += db::exec(
            core.db(),
            "DELETE FROM inbound_payloads WHERE status = ? AND received_at < ?",
            vec![status.into(), (now - i64::from(days) * DAY_MS).into()],
        )
        .await?;
    }
    let budget = i64::try_from(cfg.max_stored_bytes_per_channel).unwrap_or(i64::MAX);
    let over = db::query_all(
        core.db(),
        "SELECT channel_id, CAST(SUM(size) AS BIGINT) AS bytes FROM inbound_payloads GROUP BY channel_id HAVING SUM(size) > ?",
        vec![budget.into()],
    )
    .await?;
    for r in over {
        let channel_id: i64 = db::col(&r, "channel_id")?;
        let mut excess = db::col::<i64>(&r, "bytes")? - budget;
        // Rejected requests go first: they never brought a message.
        for status in ["rejected", "processed"] {
            while excess > 0 {
                let oldest = db::query_all(
                    core.db(),
                    "SELECT id, size FROM inbound_payloads WHERE channel_id = ? AND status = ? ORDER BY id LIMIT 500",
                    vec![channel_id.into(), status.into()],
                )
                .await?;
                if oldest.is_empty() {
                    break;
                }
                let mut ids = Vec::new();
                for p in &oldest {
                    if excess <= 0 {
                        break;
                    }
                    excess -= db::col::<i64>(p, "size")?.max(1);
                    ids.push(sea_orm::Value::from(db::col::<i64>(p, "id")?));
                }
                let marks = vec!["?"; ids.len()].join(", ");
                removed +=
                    db::exec(core.db(), &format!("DELETE FROM inbound_payloads WHERE id IN ({marks})"), ids).await?;
            }
        }
    }
    Ok(removed)
}

pub(crate) async fn set_channel_error(core: &crate::Core, id: i64, message: &str) -> Result<()> {
    db::exec(core.db(), "UPDATE channels SET last_error = ? WHERE id = ?", vec![message.into(), id.into()]).await?;
    Ok(())
}

/// A stored inbound payload as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadView {
    /// Id.
    pub id: i64,
    /// When it arrived.
    pub received_at: String,
    /// `POST` (or another method) for webhooks, `POLL` for what a poll found.
    pub method: String,
    /// `received`, `processed`, `failed` or `rejected`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Processing attempts.
    pub attempts: i32,
    /// When delivery is tried again (a `received` payload whose delivery failed).
    pub next_attempt_at: Option<String>,
    /// Tickets it reached.
    pub result: Option<Json>,
    /// Body size as stored (a request refused as too large is stored without its body).
    pub size: i64,
    /// The request's headers; values of credentials (tokens, signatures, cookies, …) masked.
    pub headers: Vec<(String, String)>,
}

/// The channel's stored payloads, newest first.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn payloads(
    core: &crate::Core,
    workspace_id: i64,
    channel_id: i64,
    status: Option<&str>,
) -> Result<Vec<PayloadView>> {
    load_row(core.db(), channel_id, Some(workspace_id)).await?;
    let (filter, mut values): (&str, Vec<sea_orm::Value>) = match status {
        Some(s) => (" AND status = ?", vec![channel_id.into(), s.into()]),
        None => ("", vec![channel_id.into()]),
    };
    values.push(200i64.into());
    let rows = db::query_all(
        core.db(),
        &format!("SELECT id, received_at, method, status, error, attempts, next_attempt_at, result, size, headers FROM inbound_payloads WHERE channel_id = ?{filter} ORDER BY id DESC LIMIT ?"),
        values,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PayloadView {
                id: db::col(r, "id")?,
                received_at: crate::rfc3339(db::col(r, "received_at")?),
                method: db::col(r, "method")?,
                status: db::col(r, "status")?,
                error: db::col(r, "error")?,
                attempts: db::col(r, "attempts")?,
                next_attempt_at: db::col::<Option<i64>>(r, "next_attempt_at")?.map(crate::rfc3339),
                result: db::col::<Option<String>>(r, "result")?.and_then(|s| serde_json::from_str(&s).ok()),
                size: db::col(r, "size")?,
                headers: serde_json::from_str(&db::col::<String>(r, "headers")?).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use plugdesk_host::{Attachment, DeliveryFailure};

    use super::*;

    fn mail(id: &str, conversation: Option<&str>, replies_to: &[&str]) -> InboundMessage {
        InboundMessage {
            external_id: id.into(),
            conversation: conversation.map(str::to_owned),
            sender_kind: "email".into(),
            sender_address: "anna@example.com".into(),
            sender_name: Some("Anna".into()),
            subject: Some("Paket".into()),
            text: "Hallo".into(),
            html: None,
            attachments: vec![],
            automatic: false,
            replies_to: replies_to.iter().map(|r| (*r).to_owned()).collect(),
            ticket_number: None,
            quoted: None,
            raw: None,
            delivery_failure: None,
        }
    }

    fn ids(list: &[Numbered]) -> Vec<(usize, &str)> {
        list.iter().map(|(i, m)| (*i, m.external_id.as_str())).collect()
    }

    #[test]
    fn a_batch_splits_into_messages_delivered_side_by_side_and_those_that_follow_in_order() {
        let (free, chained) = independent(vec![
            mail("a", None, &[]),
            mail("b", None, &["a"]),        // answers a of this batch: after it
            mail("c", Some("chat-1"), &[]), // two of one conversation: in order
            mail("d", Some("chat-1"), &[]),
            mail("e", Some("chat-2"), &["elsewhere"]), // refers outside the batch: free
        ]);
        assert_eq!(ids(&free), [(0, "a"), (4, "e")]);
        assert_eq!(ids(&chained), [(1, "b"), (2, "c"), (3, "d")], "in their order in the batch");
    }

    #[test]
    fn only_heavy_requests_that_ran_out_are_blamed_on_the_request() {
        use plugdesk_host::Error as E;
        let fuel = E::OutOfFuel(1);
        assert!(caused_by_request(&fuel, 2_000_000, 1_000_000));
        assert!(!caused_by_request(&fuel, 1_000, 1_000_000), "ordinary traffic that runs out is the plugin's fault");
        assert!(caused_by_request(&E::Memory(1), 2, 1));
        assert!(caused_by_request(&E::Timeout(Duration::from_secs(1)), 2, 1));
        assert!(!caused_by_request(&E::Load("broken".into()), 2_000_000, 1));
    }

    #[test]
    fn only_granted_http_hosts_without_credentials_can_be_fetched() {
        let grants = vec!["http:api.example.com".to_owned(), "http:hooks.example.org:8443".to_owned()];
        assert_eq!(check_url("https://API.example.com/send", &grants).as_deref(), Ok("api.example.com:443"));
        assert_eq!(check_url("https://hooks.example.org:8443/x", &grants).as_deref(), Ok("hooks.example.org:8443"));
        let refused = |url: &str| check_url(url, &grants).expect_err(url);
        assert!(refused("https://hooks.example.org/x").contains("not granted"));
        assert!(refused("https://evil.example.net/").contains("an admin can grant http:evil.example.net"));
        assert!(refused("ftp://api.example.com/").contains("only http and https"));
        assert!(refused("https://user:pw@api.example.com/").contains("credentials in the URL"));
        assert!(refused("/relative").contains("not an absolute URL"));
    }

    #[test]
    fn senders_in_the_invalid_domain_are_unreachable_and_only_for_mail() {
        assert!(unknown_sender("email", "unknown-sender@unknown.invalid"));
        assert!(unknown_sender("email", "x@Mail.INVALID."));
        assert!(!unknown_sender("email", "anna@invalid.example.com"));
        assert!(!unknown_sender("sms", "+49@x.invalid"));
        assert!(!unknown_sender("email", "no-at-sign"));
    }

    #[test]
    fn a_stored_poll_batch_reads_back_as_the_messages_it_was_made_of() {
        let mut m = mail("<1@example.com>", Some("thread"), &["<0@example.com>"]);
        m.attachments.push(Attachment {
            filename: "a.pdf".into(),
            content_type: "application/pdf".into(),
            data: vec![0, 159, 255],
        });
        m.raw = Some(b"From: anna@example.com\r\n\r\nHallo".to_vec());
        m.ticket_number = Some(42);
        m.delivery_failure = Some(DeliveryFailure {
            external_id: "<9@us>".into(),
            recipient: Some("b@example.com".into()),
            reason: "550".into(),
        });
        let stored = serde_json::to_vec(&json!([message_json(&m)])).expect("json");
        let back = messages_from_json(&stored).expect("reads back");
        assert_eq!(message_json(&back[0]), message_json(&m));
        assert!(messages_from_json(b"[{\"external_id\": 1}]").is_err(), "a damaged batch is an error, not a guess");
    }

    #[test]
    fn refusals_have_stable_codes_and_an_error_body_naming_the_stored_request() {
        let a = refused(Refusal::Rejected, "bad signature", Some(7));
        let body: Json = serde_json::from_slice(&a.body()).expect("json");
        assert_eq!(body, json!({ "error": { "code": "rejected", "message": "bad signature", "payload_id": 7 } }));
        let t = taken(None, json!({ "accepted": 0 }));
        assert_eq!(t.body(), b"{\"accepted\":0}".to_vec());
        let own = HookResponse { status: 202, content_type: "text/plain".into(), body: b"challenge".to_vec() };
        assert!(matches!(taken(Some(own), json!({})), Answer::Plugin(r) if r.body == b"challenge"));
    }
}
