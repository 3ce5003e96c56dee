//! Plugins: the WebAssembly components this installation can run, their versions, and the
//! counters of their calls.
//!
//! A plugin has an owner ([`Scope`]). **Installation-wide** plugins — bundled with the binary,
//! found in the plugins directory, or installed by the operator with `plugdesk plugin install`
//! on the server — may be used by every workspace and are changed only by the operator.
//! A plugin **uploaded by a workspace** through the API belongs to that workspace: only its
//! channels and automations can use it, and its versions and rollbacks are its own. Both live
//! in the same tables under a registry key: the plugin id for installation-wide plugins, and
//! `w{workspace}/{id}` for a workspace's (ids never contain `/`, so the two cannot collide).
//! A workspace can never upload an id that an installation-wide plugin has: what every
//! workspace runs is out of any single workspace's reach.
//!
//! Every plugin version lives in the `plugins` table, and `plugin_active` says which version of
//! each registry key runs. Every node compiles the active versions (through the host's artifact
//! cache) and re-reads `plugin_active` every [`SYNC_EVERY`], so an upload or a rollback on one
//! node reaches all of them. A swap replaces the compiled plugin in the map: calls that already
//! hold the old one finish on it, new calls take the new one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use plugdesk_host::{Context, Host, HttpRequest, HttpResponse, Level, Limits, Plugin};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::db;
use crate::error::{Error, Result};

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// How long a request waits for the plugins to finish loading after a start.
const LOAD_WAIT: Duration = Duration::from_secs(30);
/// How often a node re-reads which plugin versions are active.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Time a plugin's outbound HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest plugin accepted by upload.
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;

/// Call counters of one channel instance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Calls into the plugin.
    pub calls: u64,
    /// Calls that failed (stopped, crashed, refused output).
    pub errors: u64,
    /// Total time in the plugin (or script), microseconds.
    pub total_us: u64,
    /// Actions taken (workflows).
    pub actions: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A plugin built into this binary, by crate name.
pub fn bundled(name: &str) -> Option<&'static [u8]> {
    bundled::BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
}

/// Who owns a plugin: the installation (its operator) or one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Bundled, from the plugins directory, or installed by the operator: every workspace may
    /// use it, only the operator changes it.
    Installation,
    /// Uploaded by this workspace's admin: visible and usable only there.
    Workspace(i64),
}

impl Scope {
    /// The registry key of plugin `id` in this scope.
    pub fn key(self, id: &str) -> String {
        match self {
            Scope::Installation => id.to_owned(),
            Scope::Workspace(ws) => format!("w{ws}/{id}"),
        }
    }

    /// The scope and plugin id of a registry key.
    pub fn of_key(key: &str) -> (Scope, &str) {
        if let Some((owner, id)) = key.split_once('/')
            && let Some(ws) = owner.strip_prefix('w').and_then(|n| n.parse().ok())
        {
            return (Scope::Workspace(ws), id);
        }
        (Scope::Installation, key)
    }

    /// `installation` or `workspace`, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Installation => "installation",
            Scope::Workspace(_) => "workspace",
        }
    }

    fn workspace_id(self) -> Option<i64> {
        match self {
            Scope::Installation => None,
            Scope::Workspace(ws) => Some(ws),
        }
    }
}

/// The plugin id of a registry key, as users name it.
pub fn plugin_id(key: &str) -> &str {
    Scope::of_key(key).1
}

/// Where a plugin version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Built into the binary.
    Bundled,
    /// A `*.wasm` file in the plugins directory.
    Directory,
    /// Uploaded through the API before plugins had owners (installation-wide; a bundled plugin
    /// replaces such a version at the next start, see [`claim_active`]).
    Upload,
    /// Installed by the operator on the server (`plugdesk plugin install`).
    Operator,
    /// Uploaded through the API by a workspace's admin, for that workspace.
    Workspace,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Bundled => "bundled",
            Source::Directory => "directory",
            Source::Upload => "upload",
            Source::Operator => "operator",
            Source::Workspace => "workspace",
        }
    }
}

/// Versions one workspace may store of all its plugins together (each up to
/// [`MAX_UPLOAD_BYTES`]): uploads cost database space every node loads.
pub const MAX_WORKSPACE_VERSIONS: i64 = 50;

/// The compiled active plugins, the engine, and the call counters.
pub struct Registry {
    pub(crate) host: Host,
    pub(crate) limits: Limits,
    /// The client of plugins' outbound HTTP (no redirects; a timeout per request).
    pub(crate) http: reqwest::Client,
    /// TLS for plugins' TCP connections: the web PKI and `tls_ca_file`.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Where plugins and webhooks may connect (`[network]`).
    pub(crate) egress: Arc<crate::egress::Policy>,
    /// Plugin calls that HTTP requests may run at once (`[server] max_plugin_calls`), and how
    /// long a request waits for one.
    pub(crate) calls: Arc<tokio::sync::Semaphore>,
    pub(crate) call_wait: std::time::Duration,
    active: RwLock<HashMap<String, Plugin>>,
    loaded: watch::Sender<bool>,
    /// Counters by (`channel` or `automation`, instance id).
    stats: Mutex<HashMap<(&'static str, i64), Stats>>,
}

/// A plugin as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    /// Stable id.
    pub id: String,
    /// `installation` (bundled, plugins directory or installed by the operator; every
    /// workspace may use it, only the operator changes it) or `workspace` (uploaded by this
    /// workspace, used only here).
    pub scope: &'static str,
    /// Display name.
    pub name: String,
    /// The active version.
    pub version: String,
    /// The version a rollback returns to.
    pub previous_version: Option<String>,
    /// Channel kind of its tickets.
    pub channel_kind: String,
    /// Capabilities it asks for.
    pub capabilities: Vec<String>,
    /// `channel` or `automation`.
    pub kind: &'static str,
    /// The events an automation wants by default.
    pub events: Vec<String>,
    /// Implements `send`.
    pub sends: bool,
    /// Implements `poll`.
    pub polls: bool,
    /// The contract version.
    pub wit_version: &'static str,
    /// JSON Schema of its settings.
    pub settings_schema: Json,
    /// Whether this node loaded it from the compiled-artifact cache.
    pub cached: bool,
    /// Every stored version, newest first.
    pub versions: Vec<VersionView>,
}

/// One stored version of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// Version.
    pub version: String,
    /// `bundled`, `directory` or `upload`.
    pub source: String,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// When it was stored.
    pub created_at: String,
}

impl Registry {
    /// A registry with the engine started and no plugin loaded yet. With `cache`, compiled
    /// plugins are kept in that directory and restarts load them without compiling.
    ///
    /// # Errors
    /// When the Wasm engine cannot start.
    pub fn new(
        limits: Limits,
        cache: Option<PathBuf>,
        tls_ca_file: Option<&std::path::Path>,
        egress: Arc<crate::egress::Policy>,
        server: &crate::config::Server,
    ) -> Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let host = Host::new(cache).map_err(|e| Error::Internal(e.to_string()))?;
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        // Plugins name their own hosts (telegram's and sms's `api_base` too): only addresses the
        // egress policy allows are connected to.
        let mut http = crate::egress::client_builder(&egress);
        if let Some(path) = tls_ca_file {
            let bad = |e: &dyn std::fmt::Display| Error::Config(format!("tls_ca_file {}: {e}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(&e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            if certs.is_empty() {
                return Err(bad(&"no PEM certificate in the file"));
            }
            for cert in certs {
                http = http.add_root_certificate(reqwest::Certificate::from_der(&cert).map_err(|e| bad(&e))?);
                roots.add(cert).map_err(|e| bad(&e))?;
            }
        }
        let tls = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
        let http = http
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("Plugdesk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Registry {
            host,
            limits,
            http,
            tls,
            egress,
            calls: Arc::new(tokio::sync::Semaphore::new(
                server.max_plugin_calls.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            call_wait: std::time::Duration::from_millis(server.plugin_call_wait_ms),
            active: RwLock::new(HashMap::new()),
            loaded: watch::channel(false).0,
            stats: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one plugin call on behalf of an HTTP request, waiting at most
    /// `[server] plugin_call_wait_ms`; `None` when every slot stayed busy.
    pub async fn call_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(self.call_wait, self.calls.clone().acquire_owned()).await.ok()?.ok()
    }

    /// Records the bundled plugins and every `*.wasm` in `dir` in the database, makes each the
    /// active version of its id unless an admin uploaded one, compiles the active versions and
    /// then keeps them in step with the database. Requests that need a plugin meanwhile wait
    /// for the first pass. A plugin that fails to load is logged and skipped.
    pub async fn run(self: Arc<Self>, db: DatabaseConnection, dir: Option<PathBuf>) {
        let mut sources: Vec<(String, Vec<u8>, Source)> =
            bundled::BUNDLED.iter().map(|(n, w)| ((*n).to_owned(), w.to_vec(), Source::Bundled)).collect();
        if let Some(dir) = dir {
            sources.extend(read_dir(&dir).into_iter().map(|(n, w)| (n, w, Source::Directory)));
        }
        for (name, wasm, source) in sources {
            let started = Instant::now();
            match self.compile(wasm.clone()).await {
                Ok(plugin) => {
                    // A plugin.toml beside a plugin in the directory must say what the component says.
                    let manifest = std::path::Path::new(&name).with_extension("toml");
                    if source == Source::Directory && manifest.exists() {
                        let checked = crate::manifest::Manifest::read(&manifest)
                            .map_err(|e| e.to_string())
                            .and_then(|m| m.check(&plugin.descriptor));
                        if let Err(e) = checked {
                            tracing::error!(plugin = %name, manifest = %manifest.display(), error = %e, "plugin skipped: its manifest does not match");
                            continue;
                        }
                    }
                    tracing::info!(plugin = %plugin.descriptor.id, version = %plugin.descriptor.version, cached = plugin.cached, millis = started.elapsed().as_millis() as u64, "plugin compiled");
                    if let Err(e) = store_version(&db, Scope::Installation, &plugin, &wasm, source).await {
                        tracing::warn!(error = %e, plugin = %name, "could not record the plugin in the database");
                        continue;
                    }
                    match claim_active(&db, &plugin.descriptor).await {
                        // Active now: no need for `sync` to load it a second time.
                        Ok(true) => self.insert(plugin.descriptor.id.clone(), plugin),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, plugin = %name, "could not activate the plugin"),
                    }
                }
                Err(e) => tracing::error!(plugin = %name, error = %e, "plugin failed to load"),
            }
        }
        if let Err(e) = self.sync(&db).await {
            tracing::error!(error = %e, "cannot read the active plugin versions");
        }
        // `send` would drop the value when nobody waits yet; `send_replace` keeps it.
        self.loaded.send_replace(true);
        loop {
            tokio::time::sleep(SYNC_EVERY).await;
            if let Err(e) = self.sync(&db).await {
                tracing::warn!(error = %e, "cannot read the active plugin versions");
            }
        }
    }

    /// Loads only the active version of registry key `key` and counts the registry as loaded:
    /// for a one-shot command that needs one plugin (`plugdesk mail-in`), not the start-up
    /// pass over all of them, which records and compiles every bundled plugin.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no version of `key` is active; compile errors.
    pub async fn load_only(self: &Arc<Self>, db: &DatabaseConnection, key: &str) -> Result<()> {
        let row = db::query_one(db, "SELECT version FROM plugin_active WHERE key = ?", vec![key.into()])
            .await?
            .ok_or(Error::NotFound("plugin"))?;
        self.activate_local(db, key, &db::col::<String>(&row, "version")?).await?;
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Compiles (or loads from the artifact cache) and describes a component, off the executor.
    async fn compile(self: &Arc<Self>, wasm: Vec<u8>) -> Result<Plugin> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.host.load(&wasm, &me.limits, Arc::new(NoContext)))
            .await
            .map_err(|e| Error::Internal(format!("plugin loader panicked: {e}")))?
            .map_err(|e| Error::invalid("plugin", e.to_string()))
    }

    /// Brings the compiled plugins in line with `plugin_active`.
    async fn sync(self: &Arc<Self>, db: &DatabaseConnection) -> Result<()> {
        let rows = db::query_all(db, "SELECT key, version FROM plugin_active", vec![]).await?;
        for r in rows {
            let (key, version): (String, String) = (db::col(&r, "key")?, db::col(&r, "version")?);
            if self.plugin(&key).is_some_and(|p| p.descriptor.version == version) {
                continue;
            }
            self.activate_local(db, &key, &version).await?;
        }
        Ok(())
    }

    /// Compiles a stored version and makes it the one new calls use on this node.
    async fn activate_local(self: &Arc<Self>, db: &DatabaseConnection, key: &str, version: &str) -> Result<()> {
        let row = db::query_one(
            db,
            "SELECT wasm FROM plugins WHERE key = ? AND version = ?",
            vec![key.into(), version.into()],
        )
        .await?
        .ok_or(Error::NotFound("plugin version"))?;
        let plugin = self.compile(db::col(&row, "wasm")?).await?;
        if plugin.descriptor.id != plugin_id(key) {
            return Err(Error::Internal(format!(
                "stored plugin {key} {version} describes itself as {}",
                plugin.descriptor.id
            )));
        }
        tracing::info!(plugin = %key, version = %version, "plugin version active");
        self.insert(key.to_owned(), plugin);
        Ok(())
    }

    /// Makes a compiled plugin the one new calls of registry key `key` use on this node.
    fn insert(&self, key: String, plugin: Plugin) {
        if let Ok(mut map) = self.active.write() {
            map.insert(key, plugin);
        }
    }

    /// The registry keys a workspace may use (installation-wide and its own), sorted.
    fn keys_for(&self, workspace_id: i64) -> Vec<String> {
        let mut keys: Vec<String> = self
            .active
            .read()
            .map(|m| {
                m.keys()
                    .filter(|k| match Scope::of_key(k).0 {
                        Scope::Installation => true,
                        Scope::Workspace(ws) => ws == workspace_id,
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The ids of the plugins a workspace may use, sorted (for messages).
    pub(crate) fn ids(&self, workspace_id: i64) -> Vec<String> {
        let mut ids: Vec<String> = self.keys_for(workspace_id).iter().map(|k| plugin_id(k).to_owned()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The registry key and compiled plugin that `name` means in a workspace: a registry key
    /// stored on one of its channels, or a plugin id — the workspace's own plugin of that id
    /// if it has one (uploaded before an installation-wide plugin took the id), else the
    /// installation-wide one. Another workspace's plugin is never found.
    pub(crate) fn resolve(&self, workspace_id: i64, name: &str) -> Option<(String, Plugin)> {
        let (scope, id) = Scope::of_key(name);
        let candidates = match scope {
            Scope::Workspace(ws) if ws != workspace_id => return None,
            Scope::Workspace(_) => vec![name.to_owned()],
            Scope::Installation if name.contains('/') => return None,
            Scope::Installation => vec![Scope::Workspace(workspace_id).key(id), id.to_owned()],
        };
        candidates.into_iter().find_map(|k| self.plugin(&k).map(|p| (k, p)))
    }

    pub async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = tokio::time::timeout(LOAD_WAIT, rx.wait_for(|done| *done)).await;
    }

    /// The active version of a plugin, compiled.
    pub(crate) fn plugin(&self, key: &str) -> Option<Plugin> {
        self.active.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// The channel kind a plugin's tickets get (its id when it is not loaded).
    pub(crate) fn kind(&self, key: &str) -> String {
        self.plugin(key).map(|p| p.descriptor.channel_kind).unwrap_or_else(|| key.to_owned())
    }

    /// Stores a plugin version uploaded by a workspace's admin and makes it that workspace's
    /// active version on every node. Uploading the same bytes again changes nothing; other
    /// bytes under a stored version number are refused.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bytes that are not a plugin of this contract version,
    /// [`Error::Forbidden`] for the id of an installation-wide plugin (bundled, from the
    /// plugins directory or installed by the operator: a workspace cannot replace what every
    /// workspace runs), [`Error::Conflict`] for a version number that is taken or when the
    /// workspace stores [`MAX_WORKSPACE_VERSIONS`] versions already.
    pub async fn upload(
        self: &Arc<Self>,
        db: &DatabaseConnection,
        workspace_id: i64,
        wasm: Vec<u8>,
    ) -> Result<PluginView> {
        self.wait_loaded().await;
        let plugin = self.check_upload(&wasm).await?;
        let id = plugin.descriptor.id.clone();
        let installation = bundled(&id).is_some()
            || self.plugin(&id).is_some()
            || db::query_one(db, "SELECT 1 AS one FROM plugins WHERE key = ?", vec![id.clone().into()])
                .await?
                .is_some();
        if installation {
            return Err(Error::Forbidden(format!(
                "plugin id {id} belongs to an installation-wide plugin, which only the operator can change; give your plugin an id of its own"
            )));
        }
        let stored =
            db::query_one(db, "SELECT COUNT(*) AS n FROM plugins WHERE workspace_id = ?", vec![workspace_id.into()])
                .await?
                .map(|r| db::col::<i64>(&r, "n").or_else(|_| db::col::<i32>(&r, "n").map(i64::from)))
                .transpose()?
                .unwrap_or(0);
        let key = Scope::Workspace(workspace_id).key(&id);
        let known = db::query_one(
            db,
            "SELECT 1 AS one FROM plugins WHERE key = ? AND version = ?",
            vec![key.clone().into(), plugin.descriptor.version.clone().into()],
        )
        .await?;
        if known.is_none() && stored >= MAX_WORKSPACE_VERSIONS {
            return Err(Error::Conflict(format!(
                "this workspace stores {MAX_WORKSPACE_VERSIONS} plugin versions already; an operator can remove old ones"
            )));
        }
        self.store_active(db, Scope::Workspace(workspace_id), &plugin, &wasm, Source::Workspace).await?;
        self.insert(key.clone(), plugin);
        self.view(db, &key).await
    }

    /// Installs a plugin version for the whole installation, as the operator does on the
    /// server (`plugdesk plugin install`): it replaces a bundled plugin of the same id too.
    /// Running nodes load it within [`SYNC_EVERY`].
    ///
    /// # Errors
    /// As [`Registry::upload`], less the ownership checks.
    pub async fn install_for_installation(
        self: &Arc<Self>,
        db: &DatabaseConnection,
        wasm: Vec<u8>,
    ) -> Result<(String, String)> {
        let plugin = self.check_upload(&wasm).await?;
        self.store_active(db, Scope::Installation, &plugin, &wasm, Source::Operator).await?;
        Ok((plugin.descriptor.id.clone(), plugin.descriptor.version.clone()))
    }

    /// Compiles and checks an uploaded component.
    async fn check_upload(self: &Arc<Self>, wasm: &[u8]) -> Result<Plugin> {
        if wasm.len() > MAX_UPLOAD_BYTES {
            return Err(Error::invalid("plugin", format!("a plugin may be at most {MAX_UPLOAD_BYTES} bytes")));
        }
        let plugin = self.compile(wasm.to_vec()).await?;
        validate_descriptor(&plugin.descriptor)?;
        Ok(plugin)
    }

    /// Stores a version under its scope's key (refusing other bytes under a stored version
    /// number) and makes it the active one.
    async fn store_active(
        self: &Arc<Self>,
        db: &DatabaseConnection,
        scope: Scope,
        plugin: &Plugin,
        wasm: &[u8],
        source: Source,
    ) -> Result<()> {
        let d = &plugin.descriptor;
        let key = scope.key(&d.id);
        let sha = hex::encode(Sha256::digest(wasm));
        let known = db::query_one(
            db,
            "SELECT sha256 FROM plugins WHERE key = ? AND version = ?",
            vec![key.clone().into(), d.version.clone().into()],
        )
        .await?;
        match known {
            Some(r) if db::col::<String>(&r, "sha256")? != sha => {
                return Err(Error::Conflict(format!(
                    "plugin {} version {} is already stored with other content; give the new build a new version",
                    d.id, d.version
                )));
            }
            Some(_) => {}
            None => store_version(db, scope, plugin, wasm, source).await?,
        }
        switch_active(db, &key, &d.version).await?;
        tracing::info!(plugin = %d.id, scope = scope.as_str(), version = %d.version, "plugin version stored and active");
        Ok(())
    }

    /// Makes the previous version of a workspace's own plugin active again (on every node).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for an installation-wide plugin (the operator rolls those back
    /// with `plugdesk plugin rollback`), [`Error::NotFound`] for an unknown plugin,
    /// [`Error::Conflict`] when there is no previous version.
    pub async fn rollback(
        self: &Arc<Self>,
        db: &DatabaseConnection,
        workspace_id: i64,
        id: &str,
    ) -> Result<PluginView> {
        self.wait_loaded().await;
        match self.resolve(workspace_id, id) {
            Some((key, _)) if Scope::of_key(&key).0 == Scope::Installation => Err(Error::Forbidden(format!(
                "plugin {id} is installation-wide; only the operator can roll it back (plugdesk plugin rollback {id} on the server)"
            ))),
            Some((key, _)) => {
                let version = roll_back(db, &key).await?;
                self.activate_local(db, &key, &version).await?;
                self.view(db, &key).await
            }
            None => Err(Error::NotFound("plugin")),
        }
    }

    /// Rolls an installation-wide plugin back, as the operator does on the server; running
    /// nodes follow within [`SYNC_EVERY`]. Returns the version now active.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Conflict`] when there is no previous version.
    pub async fn rollback_installation(db: &DatabaseConnection, id: &str) -> Result<String> {
        if id.contains('/') {
            return Err(Error::NotFound("plugin"));
        }
        roll_back(db, id).await
    }

    /// Every plugin a workspace may use, with its versions: the installation-wide ones and its
    /// own, by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(self: &Arc<Self>, db: &DatabaseConnection, workspace_id: i64) -> Result<Vec<PluginView>> {
        self.wait_loaded().await;
        let keys = self.keys_for(workspace_id);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.view(db, &key).await?);
        }
        Ok(out)
    }

    /// The plugin `id` as a workspace sees it (see [`Registry::resolve`]).
    ///
    /// # Errors
    /// [`Error::NotFound`], also for another workspace's plugin.
    pub async fn view_for(&self, db: &DatabaseConnection, workspace_id: i64, id: &str) -> Result<PluginView> {
        self.wait_loaded().await;
        let (key, _) = self.resolve(workspace_id, id).ok_or(Error::NotFound("plugin"))?;
        self.view(db, &key).await
    }

    /// One plugin, by registry key, with its versions.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    async fn view(&self, db: &DatabaseConnection, key: &str) -> Result<PluginView> {
        self.wait_loaded().await;
        let plugin = self.plugin(key).ok_or(Error::NotFound("plugin"))?;
        let d = plugin.descriptor.clone();
        let previous = db::query_one(db, "SELECT previous FROM plugin_active WHERE key = ?", vec![key.into()])
            .await?
            .map(|r| db::col::<Option<String>>(&r, "previous"))
            .transpose()?
            .flatten();
        let rows = db::query_all(
            db,
            "SELECT version, source, sha256, LENGTH(wasm) AS size, created_at FROM plugins WHERE key = ? ORDER BY id DESC",
            vec![key.into()],
        )
        .await?;
        let versions = rows
            .iter()
            .map(|r| {
                Ok(VersionView {
                    version: db::col(r, "version")?,
                    source: db::col(r, "source")?,
                    sha256: db::col(r, "sha256")?,
                    size: db::col::<i64>(r, "size").or_else(|_| db::col::<i32>(r, "size").map(i64::from))?,
                    created_at: crate::rfc3339(db::col(r, "created_at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PluginView {
            settings_schema: serde_json::from_str(&d.settings_schema).unwrap_or(Json::Null),
            scope: Scope::of_key(key).0.as_str(),
            id: d.id,
            name: d.name,
            version: d.version,
            previous_version: previous,
            channel_kind: d.channel_kind,
            capabilities: d.capabilities,
            kind: d.kind.as_str(),
            events: d.events,
            sends: d.sends,
            polls: d.polls,
            wit_version: plugdesk_host::WIT_VERSION,
            cached: plugin.cached,
            versions,
        })
    }

    /// The counters of an instance (`kind` is `channel` or `automation`).
    pub fn stats(&self, kind: &'static str, id: i64) -> Stats {
        self.stats.lock().ok().and_then(|m| m.get(&(kind, id)).cloned()).unwrap_or_default()
    }

    pub(crate) fn record(&self, kind: &'static str, id: i64, elapsed: Duration, error: Option<String>) {
        if let Ok(mut m) = self.stats.lock() {
            let s = m.entry((kind, id)).or_default();
            s.calls += 1;
            s.total_us += elapsed.as_micros() as u64;
            if error.is_some() {
                s.errors += 1;
                s.last_error = error;
            }
        }
    }

    /// Prometheus lines for every channel and automation with calls:
    /// `plugdesk_{channel,automation}_{calls,errors}_total` and `..._seconds_total`.
    pub fn render_metrics(&self) -> String {
        let map = self.stats.lock().map(|m| m.clone()).unwrap_or_default();
        let mut keys: Vec<_> = map.keys().copied().collect();
        keys.sort_unstable();
        let mut s = String::new();
        type Value = fn(&Stats) -> f64;
        let series: [(&str, &str, Value); 3] = [
            ("calls_total", "Calls into", |s| s.calls as f64),
            ("errors_total", "Failed calls into", |s| s.errors as f64),
            ("seconds_total", "Time spent in", |s| s.total_us as f64 / 1e6),
        ];
        for kind in ["channel", "automation"] {
            for (suffix, help, value) in series {
                let name = format!("plugdesk_{kind}_{suffix}");
                s.push_str(&format!("# HELP {name} {help} {kind} plugins.\n# TYPE {name} counter\n"));
                for key in keys.iter().filter(|k| k.0 == kind) {
                    s.push_str(&format!("{name}{{{kind}=\"{}\"}} {}\n", key.1, value(&map[key])));
                }
            }
        }
        s
    }
}

/// Every stored plugin version, one line each, for the operator: scope, id, version, source,
/// whether it is active.
///
/// # Errors
/// Database errors.
pub async fn stored_versions(db: &DatabaseConnection) -> Result<Vec<String>> {
    let rows = db::query_all(
        db,
        "SELECT p.key, p.version, p.source, p.sha256, a.version AS active FROM plugins p \
         LEFT JOIN plugin_active a ON a.key = p.key ORDER BY p.key, p.id",
        vec![],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let key: String = db::col(r, "key")?;
            let version: String = db::col(r, "version")?;
            let active: Option<String> = db::col(r, "active")?;
            let sha: String = db::col(r, "sha256")?;
            let owner = match Scope::of_key(&key).0 {
                Scope::Installation => "installation".to_owned(),
                Scope::Workspace(ws) => format!("workspace {ws}"),
            };
            Ok(format!(
                "{owner:<16} {:<20} {version:<12} {:<10} {}{}",
                plugin_id(&key),
                db::col::<String>(r, "source")?,
                &sha[..sha.len().min(12)],
                if active.as_deref() == Some(version.as_str()) { "  active" } else { "" }
            ))
        })
        .collect()
}

fn read_dir(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the plugins directory");
            return vec![];
        }
    };
    let mut paths: Vec<_> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "wasm")).collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| match std::fs::read(&path) {
            Ok(bytes) => Some((path.display().to_string(), bytes)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read plugin");
                None
            }
        })
        .collect()
}

fn validate_descriptor(d: &plugdesk_host::Descriptor) -> Result<()> {
    let ok_id = !d.id.is_empty()
        && d.id.len() <= 64
        && d.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_id {
        return Err(Error::invalid(
            "plugin",
            format!("plugin id {:?} must be 1-64 characters of a-z, 0-9, - or _", d.id),
        ));
    }
    if d.version.is_empty() || d.version.len() > 64 {
        return Err(Error::invalid("plugin", "plugin version must be 1-64 characters"));
    }
    for c in &d.capabilities {
        if !crate::channel::CAPABILITIES.contains(&c.as_str()) {
            return Err(Error::invalid(
                "plugin",
                format!("plugin asks for unknown capability {c:?}; known: {}", crate::channel::CAPABILITIES.join(", ")),
            ));
        }
    }
    Ok(())
}

async fn store_version(
    db: &DatabaseConnection,
    scope: Scope,
    plugin: &Plugin,
    wasm: &[u8],
    source: Source,
) -> Result<()> {
    let d = &plugin.descriptor;
    let descriptor = json!({ "id": d.id, "kind": d.kind.as_str(), "name": d.name, "version": d.version, "channel_kind": d.channel_kind, "capabilities": d.capabilities, "events": d.events, "sends": d.sends, "polls": d.polls });
    db::exec(
        db,
        "INSERT INTO plugins (key, workspace_id, version, wit_version, sha256, wasm, descriptor, bundled, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (key, version) DO NOTHING",
        vec![
            scope.key(&d.id).into(),
            scope.workspace_id().into(),
            d.version.clone().into(),
            plugdesk_host::WIT_VERSION.into(),
            hex::encode(Sha256::digest(wasm)).into(),
            wasm.to_vec().into(),
            descriptor.to_string().into(),
            matches!(source, Source::Bundled | Source::Directory).into(),
            source.as_str().into(),
            crate::now_ms().into(),
        ],
    )
    .await?;
    Ok(())
}

/// At start: a plugin that ships with the server (bundled or in the plugins directory) becomes
/// active unless the operator installed the active version (`plugdesk plugin install` is never
/// undone by a restart). A version uploaded through the API before plugins had owners is not
/// kept over a shipped one: any workspace's admin could have uploaded it. Returns whether the
/// shipped version is active.
async fn claim_active(db: &DatabaseConnection, d: &plugdesk_host::Descriptor) -> Result<bool> {
    let current = db::query_one(
        db,
        "SELECT a.version, p.source FROM plugin_active a LEFT JOIN plugins p ON p.key = a.key AND p.version = a.version WHERE a.key = ?",
        vec![d.id.clone().into()],
    )
    .await?;
    match current {
        None => {
            db::exec(
                db,
                "INSERT INTO plugin_active (key, version, previous, updated_at) VALUES (?, ?, NULL, ?) ON CONFLICT (key) DO NOTHING",
                vec![d.id.clone().into(), d.version.clone().into(), crate::now_ms().into()],
            )
            .await?;
            Ok(true)
        }
        Some(r) => {
            let version: String = db::col(&r, "version")?;
            let source: Option<String> = db::col(&r, "source")?;
            if version == d.version {
                return Ok(true);
            }
            if source.as_deref() == Some(Source::Operator.as_str()) {
                return Ok(false);
            }
            if source.as_deref() == Some(Source::Upload.as_str()) {
                tracing::warn!(plugin = %d.id, replaced = %version, version = %d.version, "an API upload replaced a shipped plugin before plugins had owners; the shipped version is active again (an operator can reinstall the upload with plugdesk plugin install)");
            }
            switch_active(db, &d.id, &d.version).await?;
            Ok(true)
        }
    }
}

/// Makes the previous version of registry key `key` active again; returns it.
async fn roll_back(db: &DatabaseConnection, key: &str) -> Result<String> {
    let row = db::query_one(db, "SELECT version, previous FROM plugin_active WHERE key = ?", vec![key.into()])
        .await?
        .ok_or(Error::NotFound("plugin"))?;
    let Some(previous) = db::col::<Option<String>>(&row, "previous")? else {
        return Err(Error::Conflict(format!("plugin {} has no previous version to roll back to", plugin_id(key))));
    };
    switch_active(db, key, &previous).await?;
    Ok(previous)
}

/// Records `version` as active, remembering the version it replaces for a rollback.
async fn switch_active(db: &DatabaseConnection, key: &str, version: &str) -> Result<()> {
    let now = crate::now_ms();
    let current = db::query_one(db, "SELECT version FROM plugin_active WHERE key = ?", vec![key.into()]).await?;
    match current {
        Some(r) => {
            let old: String = db::col(&r, "version")?;
            if old != version {
                db::exec(
                    db,
                    "UPDATE plugin_active SET version = ?, previous = ?, updated_at = ? WHERE key = ?",
                    vec![version.into(), old.into(), now.into(), key.into()],
                )
                .await?;
            }
        }
        None => {
            db::exec(
                db,
                "INSERT INTO plugin_active (key, version, previous, updated_at) VALUES (?, ?, NULL, ?)",
                vec![key.into(), version.into(), now.into()],
            )
            .await?;
        }
    }
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
    fn kv_get(&self, _: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        Err("no store while loading".into())
    }
    fn kv_set(&self, _: &str, _: &[u8]) -> std::result::Result<(), String> {
        Err("no store while loading".into())
    }
    fn granted(&self, _: &str) -> bool {
        false
    }
    fn http_fetch(&self, _: HttpRequest) -> std::result::Result<HttpResponse, String> {
        Err("no network while loading".into())
    }
    fn tcp_connect(
        &self,
        _: &str,
        _: u16,
        _: bool,
        _: Duration,
    ) -> std::result::Result<Box<dyn plugdesk_host::Connection>, String> {
        Err("no network while loading".into())
    }
}

impl crate::Senders for Registry {
    fn sends(&self, plugin_key: &str) -> bool {
        // A plugin that is not loaded right now may be loaded by the time the outbox's worker
        // runs.
        self.plugin(plugin_key).is_none_or(|p| p.descriptor.sends)
    }
}
