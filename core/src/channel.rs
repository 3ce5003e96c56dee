//! Channels: a workspace's installed instances of channel plugins, and the inbound message
//! path. A webhook request on `POST /hooks/{channel}` is stored raw **before** anything else
//! happens; then the channel's plugin turns it into messages in the sandbox
//! (`plugdesk_host`), and each message finds its customer by identity and its ticket by
//! conversation (or opens one) through the same code as the API. A failure leaves the stored
//! request `failed` with the reason, listed by the API and re-processable.
//!
//! This module is the only one in the core that talks to the plugin host, and only through
//! `plugdesk_host`'s plain types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use plugdesk_host::{Context, Host, Level, Limits, Outcome, Plugin};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::customer::{IdentityInput, NewCustomer};
use crate::db;
use crate::error::{Error, Result};
use crate::ticket::{AttachmentInput, MessageInput, MessageKind, NewTicket};

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// After this many failed calls in a row a channel is suspended: its hook answers 503 until an
/// admin resumes it (a crash-looping plugin is cut off, as proxy-wasm hosts do).
const SUSPEND_AFTER: i32 = 5;
/// Capabilities a plugin can ask for.
const CAPABILITIES: [&str; 2] = ["secrets", "kv"];
/// Key-value limits per channel instance.
const KV_MAX_KEY: usize = 256;
const KV_MAX_VALUE: usize = 64 * 1024;
const KV_MAX_KEYS: i64 = 1024;
/// How long a hook waits for the plugins to finish loading after a start.
const LOAD_WAIT: Duration = Duration::from_secs(30);

/// Call counters of one channel instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Calls into the plugin.
    pub calls: u64,
    /// Calls that failed (stopped, crashed, refused output).
    pub errors: u64,
    /// Total time in the plugin, microseconds.
    pub total_us: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The loaded plugins and their call counters.
pub struct Registry {
    host: Host,
    limits: Limits,
    plugins: RwLock<HashMap<String, Plugin>>,
    loaded: watch::Sender<bool>,
    stats: Mutex<HashMap<i64, Stats>>,
}

impl Registry {
    /// A registry with the engine started and no plugin loaded yet.
    ///
    /// # Errors
    /// When the Wasm engine cannot start.
    pub fn new(limits: Limits) -> Result<Self> {
        let host = Host::new().map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Registry {
            host,
            limits,
            plugins: RwLock::new(HashMap::new()),
            loaded: watch::channel(false).0,
            stats: Mutex::new(HashMap::new()),
        })
    }

    /// Compiles the bundled plugins and every `*.wasm` in `dir` (off the executor) and records
    /// them in the database so every node lists the same set. Hooks that arrive meanwhile
    /// wait for it. A plugin that fails to load is logged and skipped.
    pub async fn load_all(self: Arc<Self>, db: DatabaseConnection, dir: Option<std::path::PathBuf>) {
        let mut sources: Vec<(String, Vec<u8>)> =
            bundled::BUNDLED.iter().map(|(n, w)| ((*n).to_owned(), w.to_vec())).collect();
        if let Some(dir) = dir {
            match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    let mut paths: Vec<_> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                        .collect();
                    paths.sort();
                    for path in paths {
                        match std::fs::read(&path) {
                            Ok(bytes) => sources.push((path.display().to_string(), bytes)),
                            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot read plugin"),
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugins directory"),
            }
        }
        for (name, wasm) in sources {
            let me = self.clone();
            let started = Instant::now();
            let bytes = wasm.clone();
            let loaded =
                tokio::task::spawn_blocking(move || me.host.load(&bytes, &me.limits, Arc::new(NoContext))).await;
            match loaded {
                Ok(Ok(plugin)) => {
                    tracing::info!(plugin = %plugin.descriptor.id, version = %plugin.descriptor.version, millis = started.elapsed().as_millis() as u64, "plugin loaded");
                    if let Err(e) = record_plugin(&db, &plugin, &wasm).await {
                        tracing::warn!(error = %e, plugin = %name, "could not record the plugin in the database");
                    }
                    if let Ok(mut map) = self.plugins.write() {
                        map.insert(plugin.descriptor.id.clone(), plugin);
                    }
                }
                Ok(Err(e)) => tracing::error!(plugin = %name, error = %e, "plugin failed to load"),
                Err(e) => tracing::error!(plugin = %name, error = %e, "plugin loader panicked"),
            }
        }
        // `send` would drop the value when nobody waits yet; `send_replace` keeps it.
        self.loaded.send_replace(true);
    }

    async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = tokio::time::timeout(LOAD_WAIT, rx.wait_for(|done| *done)).await;
    }

    fn plugin(&self, key: &str) -> Option<Plugin> {
        self.plugins.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// The loaded plugins' descriptors, by id (after the start-up loading finished).
    pub async fn descriptors(&self) -> Vec<plugdesk_host::Descriptor> {
        self.wait_loaded().await;
        let mut list: Vec<_> =
            self.plugins.read().map(|m| m.values().map(|p| p.descriptor.clone()).collect()).unwrap_or_default();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// The counters of a channel.
    pub fn stats(&self, channel_id: i64) -> Stats {
        self.stats.lock().ok().and_then(|m| m.get(&channel_id).cloned()).unwrap_or_default()
    }

    fn record(&self, channel_id: i64, elapsed: Duration, error: Option<String>) {
        if let Ok(mut m) = self.stats.lock() {
            let s = m.entry(channel_id).or_default();
            s.calls += 1;
            s.total_us += elapsed.as_micros() as u64;
            if error.is_some() {
                s.errors += 1;
                s.last_error = error;
            }
        }
    }

    /// Prometheus lines for every channel with calls.
    pub fn render_metrics(&self) -> String {
        let mut s = String::from(
            "# HELP plugdesk_channel_calls_total Calls into channel plugins.\n# TYPE plugdesk_channel_calls_total counter\n",
        );
        let map = self.stats.lock().map(|m| m.clone()).unwrap_or_default();
        let mut ids: Vec<_> = map.keys().copied().collect();
        ids.sort_unstable();
        for id in &ids {
            s.push_str(&format!("plugdesk_channel_calls_total{{channel=\"{id}\"}} {}\n", map[id].calls));
        }
        s.push_str("# HELP plugdesk_channel_errors_total Failed calls into channel plugins.\n# TYPE plugdesk_channel_errors_total counter\n");
        for id in &ids {
            s.push_str(&format!("plugdesk_channel_errors_total{{channel=\"{id}\"}} {}\n", map[id].errors));
        }
        s.push_str("# HELP plugdesk_channel_seconds_total Time spent in channel plugins.\n# TYPE plugdesk_channel_seconds_total counter\n");
        for id in &ids {
            s.push_str(&format!(
                "plugdesk_channel_seconds_total{{channel=\"{id}\"}} {}\n",
                map[id].total_us as f64 / 1e6
            ));
        }
        s
    }
}

async fn record_plugin(db: &DatabaseConnection, plugin: &Plugin, wasm: &[u8]) -> Result<()> {
    let d = &plugin.descriptor;
    let descriptor = json!({ "id": d.id, "name": d.name, "version": d.version, "channel_kind": d.channel_kind, "capabilities": d.capabilities });
    db::exec(
        db,
        "INSERT INTO plugins (key, version, wit_version, sha256, wasm, descriptor, bundled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (key, version) DO NOTHING",
        vec![
            d.id.clone().into(),
            d.version.clone().into(),
            plugdesk_host::WIT_VERSION.into(),
            hex::encode(Sha256::digest(wasm)).into(),
            wasm.to_vec().into(),
            descriptor.to_string().into(),
            true.into(),
            crate::now_ms().into(),
        ],
    )
    .await?;
    Ok(())
}

/// The context of `describe`: no settings, no capabilities.
struct NoContext;

impl Context for NoContext {
    fn log(&self, level: Level, message: &str) {
        tracing::debug!(?level, message, "plugin log while loading");
    }
    fn setting(&self, _: &str) -> Option<String> {
        None
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn kv_get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err("no store while loading".into())
    }
    fn kv_set(&self, _: &str, _: &[u8]) -> Result<(), String> {
        Err("no store while loading".into())
    }
    fn granted(&self, _: &str) -> bool {
        false
    }
}

/// A stored channel instance.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    workspace_id: i64,
    plugin_key: String,
    name: String,
    settings: serde_json::Map<String, Json>,
    secrets: HashMap<String, String>,
    grants: Vec<String>,
    status: String,
    consecutive_failures: i32,
}

async fn load_row<C: ConnectionTrait>(db: &C, id: i64, workspace_id: Option<i64>) -> Result<Row> {
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
        secrets: serde_json::from_str(&db::col::<String>(&r, "secrets")?)?,
        grants: serde_json::from_str(&db::col::<String>(&r, "grants")?)?,
        status: db::col(&r, "status")?,
        consecutive_failures: db::col(&r, "consecutive_failures")?,
    })
}

/// What a call of one channel instance may reach.
struct ChannelContext {
    row: Row,
    db: DatabaseConnection,
    runtime: tokio::runtime::Handle,
}

impl Context for ChannelContext {
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

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
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

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if key.is_empty() || key.len() > KV_MAX_KEY {
            return Err(format!("keys are 1-{KV_MAX_KEY} bytes"));
        }
        if value.len() > KV_MAX_VALUE {
            return Err(format!("values are at most {KV_MAX_VALUE} bytes"));
        }
        self.runtime.block_on(async {
            let count = db::query_one(&self.db, "SELECT COUNT(*) AS n FROM plugin_kv WHERE channel_id = ? AND key <> ?", vec![self.row.id.into(), key.into()])
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
    /// Capabilities the admin grants (a subset of what the plugin asks for).
    #[serde(default)]
    pub grants: Vec<String>,
}

/// A channel as the API shows it (secrets by name only).
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// Id.
    pub id: i64,
    /// Plugin id.
    pub plugin: String,
    /// Display name.
    pub name: String,
    /// Settings.
    pub settings: Json,
    /// Names of the secrets that are set.
    pub secrets: Vec<String>,
    /// Granted capabilities.
    pub grants: Vec<String>,
    /// `active` or `suspended`.
    pub status: String,
    /// Where the channel posts: `POST {hook}`.
    pub hook: String,
    /// Call counters since the server started.
    pub stats: Stats,
}

fn view(row: Row, registry: &Registry) -> ChannelView {
    let mut secrets: Vec<String> = row.secrets.keys().cloned().collect();
    secrets.sort();
    ChannelView {
        id: row.id,
        stats: registry.stats(row.id),
        hook: format!("/hooks/{}", row.id),
        plugin: row.plugin_key,
        name: row.name,
        settings: Json::Object(row.settings),
        secrets,
        grants: row.grants,
        status: row.status,
    }
}

/// Installs a plugin as a channel of the workspace.
///
/// # Errors
/// [`Error::Invalid`] for an unknown plugin, a capability the plugin does not ask for, or
/// settings that are not an object.
pub async fn install(core: &crate::Core, workspace_id: i64, input: &NewChannel) -> Result<ChannelView> {
    let registry = core.channels();
    registry.wait_loaded().await;
    let plugin = registry.plugin(&input.plugin).ok_or_else(|| {
        let known: Vec<String> = registry.plugins.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        Error::invalid("plugin", format!("unknown plugin {:?}; installed plugins: {}", input.plugin, known.join(", ")))
    })?;
    for g in &input.grants {
        if !CAPABILITIES.contains(&g.as_str()) {
            return Err(Error::invalid(
                "grants",
                format!("unknown capability {g:?}; capabilities are {}", CAPABILITIES.join(", ")),
            ));
        }
        if !plugin.descriptor.capabilities.contains(g) {
            return Err(Error::invalid(
                "grants",
                format!(
                    "plugin {} does not ask for the capability {g}; it asks for: [{}]",
                    plugin.descriptor.id,
                    plugin.descriptor.capabilities.join(", ")
                ),
            ));
        }
    }
    let settings = match &input.settings {
        None => Json::Object(Default::default()),
        Some(o @ Json::Object(_)) => o.clone(),
        Some(_) => return Err(Error::invalid("settings", "settings must be a JSON object")),
    };
    let name = input.name.clone().unwrap_or_else(|| plugin.descriptor.name.clone());
    let now = crate::now_ms();
    let row = db::query_one(
        core.db(),
        "INSERT INTO channels (workspace_id, plugin_key, name, settings, secrets, grants, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?) RETURNING id",
        vec![
            workspace_id.into(),
            input.plugin.clone().into(),
            name.into(),
            settings.to_string().into(),
            serde_json::to_string(&input.secrets)?.into(),
            serde_json::to_string(&input.grants)?.into(),
            now.into(),
            now.into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    get(core, workspace_id, db::col(&row, "id")?).await
}

/// One channel of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get(core: &crate::Core, workspace_id: i64, id: i64) -> Result<ChannelView> {
    Ok(view(load_row(core.db(), id, Some(workspace_id)).await?, core.channels()))
}

/// Every channel of the workspace.
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
    get(core, workspace_id, id).await
}

/// What to answer the webhook caller.
pub use plugdesk_host::Reply as HookResponse;
/// A webhook request as the HTTP layer received it (the host's plain record: no Wasm types).
pub use plugdesk_host::WebhookRequest as HookRequest;

fn json_reply(status: u16, body: Json) -> HookResponse {
    HookResponse { status, content_type: "application/json".into(), body: body.to_string().into_bytes() }
}

fn error_reply(status: u16, code: &str, message: &str, payload: Option<i64>) -> HookResponse {
    let mut body = json!({ "error": { "code": code, "message": message } });
    if let Some(p) = payload {
        body["error"]["payload_id"] = json!(p);
    }
    json_reply(status, body)
}

/// Receives a webhook: stores it raw, then processes it.
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel; database errors. Plugin failures are answers,
/// not errors.
pub async fn receive(core: &crate::Core, channel_id: i64, request: HookRequest) -> Result<HookResponse> {
    let row = load_row(core.db(), channel_id, None).await?;
    if row.status == "suspended" {
        return Ok(error_reply(
            503,
            "channel_suspended",
            "this channel is suspended after repeated plugin failures; an admin can resume it",
            None,
        ));
    }
    let headers: Vec<Json> = request.headers.iter().map(|(k, v)| json!([k, v])).collect();
    let stored = db::query_one(
        core.db(),
        "INSERT INTO inbound_payloads (workspace_id, channel_id, received_at, method, path, query, headers, body, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'received') RETURNING id",
        vec![
            row.workspace_id.into(),
            channel_id.into(),
            crate::now_ms().into(),
            request.method.clone().into(),
            request.path.clone().into(),
            request.query.clone().into(),
            Json::Array(headers).to_string().into(),
            request.body.clone().into(),
        ],
    )
    .await?
    .ok_or_else(|| Error::Internal("insert returned no id".into()))?;
    let payload_id: i64 = db::col(&stored, "id")?;
    process(core, row, payload_id, request).await
}

/// Processes a stored payload again (after fixing the plugin or its settings).
///
/// # Errors
/// [`Error::NotFound`] for an unknown channel or payload.
pub async fn retry(core: &crate::Core, workspace_id: i64, channel_id: i64, payload_id: i64) -> Result<HookResponse> {
    let row = load_row(core.db(), channel_id, Some(workspace_id)).await?;
    let p = db::query_one(
        core.db(),
        "SELECT * FROM inbound_payloads WHERE id = ? AND channel_id = ?",
        vec![payload_id.into(), channel_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("payload"))?;
    let headers: Vec<(String, String)> =
        serde_json::from_str::<Vec<(String, String)>>(&db::col::<String>(&p, "headers")?)?;
    let request = HookRequest {
        method: db::col(&p, "method")?,
        path: db::col(&p, "path")?,
        query: db::col(&p, "query")?,
        headers,
        body: db::col(&p, "body")?,
    };
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
        "UPDATE inbound_payloads SET status = ?, error = ?, result = ?, attempts = attempts + 1, processed_at = ? WHERE id = ?",
        vec![status.into(), error.map(str::to_owned).into(), result.map(|r| r.to_string()).into(), crate::now_ms().into(), payload_id.into()],
    )
    .await?;
    Ok(())
}

async fn process(core: &crate::Core, row: Row, payload_id: i64, request: HookRequest) -> Result<HookResponse> {
    let registry = core.channels().clone();
    registry.wait_loaded().await;
    let Some(plugin) = registry.plugin(&row.plugin_key) else {
        let msg = format!("plugin {} is not loaded on this server", row.plugin_key);
        set_payload(core, payload_id, "failed", Some(&msg), None).await?;
        return Ok(error_reply(503, "plugin_unavailable", &msg, Some(payload_id)));
    };
    let ctx = Arc::new(ChannelContext {
        row: row.clone(),
        db: core.db().clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    let started = Instant::now();
    let reg = registry.clone();
    let called = tokio::task::spawn_blocking(move || reg.host.handle_webhook(&plugin, &reg.limits, ctx, request)).await;
    let elapsed = started.elapsed();
    let outcome = match called {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            let msg = format!("plugin {} of channel {}: {e}", row.plugin_key, row.id);
            tracing::warn!(channel = row.id, plugin = %row.plugin_key, error = %e, "plugin call failed");
            registry.record(row.id, elapsed, Some(msg.clone()));
            set_payload(core, payload_id, "failed", Some(&msg), None).await?;
            let failures = db::query_one(
                core.db(),
                "UPDATE channels SET consecutive_failures = consecutive_failures + 1 WHERE id = ? RETURNING consecutive_failures",
                vec![row.id.into()],
            )
            .await?
            .map(|r| db::col::<i32>(&r, "consecutive_failures"))
            .transpose()?
            .unwrap_or(0);
            if failures >= SUSPEND_AFTER {
                db::exec(core.db(), "UPDATE channels SET status = 'suspended' WHERE id = ?", vec![row.id.into()])
                    .await?;
                tracing::error!(channel = row.id, plugin = %row.plugin_key, failures, "channel suspended after repeated plugin failures");
            }
            return Ok(error_reply(502, "plugin_failed", &msg, Some(payload_id)));
        }
        Err(e) => return Err(Error::Internal(format!("plugin task failed: {e}"))),
    };
    registry.record(row.id, elapsed, None);
    if row.consecutive_failures > 0 {
        // Only after failures: every write here waits for SQLite's single write lock.
        db::exec(core.db(), "UPDATE channels SET consecutive_failures = 0 WHERE id = ?", vec![row.id.into()]).await?;
    }
    match outcome {
        Outcome::Rejected(m) => {
            set_payload(core, payload_id, "rejected", Some(&m), None).await?;
            Ok(error_reply(401, "rejected", &m, Some(payload_id)))
        }
        Outcome::Invalid(m) => {
            set_payload(core, payload_id, "failed", Some(&m), None).await?;
            Ok(error_reply(422, "invalid_payload", &m, Some(payload_id)))
        }
        Outcome::Accepted { messages, reply } => {
            let kind = plugin_kind(&registry, &row.plugin_key);
            let mut tickets = Vec::new();
            for (i, m) in messages.into_iter().enumerate() {
                match deliver(core, &row, &kind, m).await {
                    Ok(t) => tickets.push(t),
                    Err(e) => {
                        let msg = format!("message {} of the payload: {e}", i + 1);
                        set_payload(core, payload_id, "failed", Some(&msg), Some(json!({ "tickets": tickets })))
                            .await?;
                        return Ok(error_reply(422, "invalid_message", &msg, Some(payload_id)));
                    }
                }
            }
            set_payload(core, payload_id, "processed", None, Some(json!({ "tickets": tickets }))).await?;
            Ok(reply.unwrap_or_else(|| json_reply(200, json!({ "accepted": tickets.len(), "tickets": tickets }))))
        }
    }
}

fn plugin_kind(registry: &Registry, key: &str) -> String {
    registry.plugin(key).map(|p| p.descriptor.channel_kind).unwrap_or_else(|| key.to_owned())
}

/// Puts one inbound message on its ticket: the open ticket of its conversation, or a new one.
async fn deliver(core: &crate::Core, row: &Row, kind: &str, m: plugdesk_host::InboundMessage) -> Result<i64> {
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
    if let Some(conversation) = &m.conversation {
        let open = db::query_one(
            core.db(),
            "SELECT id FROM tickets WHERE workspace_id = ? AND channel = ? AND conversation = ? AND status IN ('new', 'open', 'pending') ORDER BY id DESC LIMIT 1",
            vec![row.workspace_id.into(), kind.into(), conversation.clone().into()],
        )
        .await?;
        if let Some(t) = open {
            let ticket_id: i64 = db::col(&t, "id")?;
            let input = MessageInput {
                body: m.text,
                body_html: m.html,
                channel: Some(kind.to_owned()),
                external_id: Some(m.external_id),
                attachments,
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
    let input = NewTicket {
        subject,
        body: m.text,
        body_html: m.html,
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
        },
        channel: Some(kind.to_owned()),
        priority: None,
        tags: vec![],
        category: None,
        attributes: if m.automatic { Some(json!({ "automatic": true })) } else { None },
        external_id: Some(m.external_id),
        team_id: None,
        assignee_id: None,
        attachments,
        conversation: m.conversation,
    };
    let created = core.writer().create(row.workspace_id, &actor, input, core.limits()).await?;
    if created.created {
        core.metrics().count_tickets_created(1);
    }
    Ok(created.ticket.id)
}

/// A stored inbound payload as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadView {
    /// Id.
    pub id: i64,
    /// When it arrived.
    pub received_at: String,
    /// `received`, `processed`, `failed` or `rejected`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Processing attempts.
    pub attempts: i32,
    /// Tickets it reached.
    pub result: Option<Json>,
    /// Body size.
    pub size: usize,
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
        &format!("SELECT * FROM inbound_payloads WHERE channel_id = ?{filter} ORDER BY id DESC LIMIT ?"),
        values,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PayloadView {
                id: db::col(r, "id")?,
                received_at: crate::rfc3339(db::col(r, "received_at")?),
                status: db::col(r, "status")?,
                error: db::col(r, "error")?,
                attempts: db::col(r, "attempts")?,
                result: db::col::<Option<String>>(r, "result")?.and_then(|s| serde_json::from_str(&s).ok()),
                size: db::col::<Vec<u8>>(r, "body")?.len(),
            })
        })
        .collect()
}
