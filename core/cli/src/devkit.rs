//! The plugin author's kit behind `plugdesk plugin new | build | test`: scaffolds a plugin crate
//! that builds to a component out of the box (with the SDK this binary was built with), builds
//! it for `wasm32-wasip2`, and runs it against fixture files in the real plugin host — the same
//! sandbox and limits as the server, without a server or a database.
//!
//! A fixture (`fixtures/*.toml`) is one call and what it must give:
//!
//! ```toml
//! call = "webhook"                      # or "send"
//! [request]                             # webhook: what arrives on POST /hooks/{id}
//! method = "POST"
//! headers = { "content-type" = "application/json" }
//! body = '{"id": "1", "from": "ada@example.com", "text": "Hello"}'
//! [channel]                             # the instance: settings, secrets, grants
//! settings = { greeting = "Hi" }
//! secrets = { token = "s3cret" }
//! grants = ["secrets"]
//! [[http]]                              # canned answers to the plugin's HTTP requests
//! method = "POST"
//! url = "https://api.example.com/send"
//! status = 200
//! body = '{"id": "x-1"}'
//! [expect]
//! outcome = "accepted"                  # accepted | rejected | invalid | delivered | retryable | permanent | error
//! messages = 1
//! text_contains = ["Hello"]
//! sender = "ada@example.com"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use plugdesk_host::{Context, Host, HttpRequest, HttpResponse, Level, Limits, OutboundMessage, Outcome, Sent};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The SDK this binary was built with, written into every new plugin so it builds without
/// access to Plugdesk's sources.
const SDK_FILES: [(&str, &str); 3] = [
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("wit/plugin.wit", include_str!("../../../sdk/wit/plugin.wit")),
];

/// Creates `dir/name`: a plugin crate, a fixture that passes, and a README.
///
/// # Errors
/// [`Error::Invalid`] for a bad name or an existing directory; I/O errors.
pub(crate) fn new_plugin(name: &str, dir: &Path) -> Result<PathBuf> {
    let ok = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(Error::invalid(
            "name",
            format!("plugin name {name:?} must start with a-z and be at most 32 characters of a-z, 0-9 and -"),
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(Error::invalid(
            "name",
            format!("{} exists already; choose another name or directory", root.display()),
        ));
    }
    for (file, text) in SDK_FILES {
        write(&root.join(".plugdesk/sdk").join(file), text)?;
    }
    write(&root.join("Cargo.toml"), &CARGO_TOML.replace("NAME", name))?;
    write(&root.join("plugin.toml"), &MANIFEST.replace("NAME", name).replace("WIT", plugdesk_host::WIT_VERSION))?;
    write(&root.join("src/lib.rs"), &LIB_RS.replace("NAME", name))?;
    write(&root.join("fixtures/hello.toml"), FIXTURE)?;
    write(&root.join("fixtures/not-json.toml"), FIXTURE_BAD)?;
    write(&root.join("README.md"), &README.replace("NAME", name))?;
    write(&root.join(".gitignore"), "/target\n")?;
    Ok(root)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

const CARGO_TOML: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK of the plugdesk binary that created this crate (plugdesk:plugin@0.2.0).
plugdesk-sdk = { path = ".plugdesk/sdk" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"

# A plugin is built on its own, not as part of a surrounding workspace.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const MANIFEST: &str = r#"# What the plugin is; `plugdesk plugin build` checks it against what the component says of
# itself (`describe`), and the server checks a plugin.toml beside a *.wasm in its plugins dir.
id = "NAME"
version = "0.1.0"
wit_version = "WIT"
kind = "channel"
description = "NAME: JSON webhooks become customer messages"
capabilities = []
"#;

const LIB_RS: &str = r#"//! NAME: a Plugdesk channel plugin. It takes JSON webhooks
//! `{"id": "...", "from": "customer@example.com", "name": "...", "text": "..."}` on
//! `POST /hooks/{channel}` and turns each into a customer message.
//!
//! Build and test with `plugdesk plugin test`; upload `target/wasm32-wasip2/release/*.wasm`
//! with `POST /api/v1/plugins` (see README.md).

use plugdesk_sdk::{Channel, Descriptor, InboundMessage, PluginError, WebhookOutcome, WebhookRequest};

struct Plugin;

#[derive(serde::Deserialize)]
struct Incoming {
    id: String,
    from: String,
    #[serde(default)]
    name: Option<String>,
    text: String,
}

impl Channel for Plugin {
    fn describe() -> Descriptor {
        Descriptor {
            settings_schema: serde_json::json!({ "type": "object", "properties": {}, "additionalProperties": false })
                .to_string(),
            ..plugdesk_sdk::descriptor("NAME", "NAME", env!("CARGO_PKG_VERSION"), "NAME")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        if request.method != "POST" {
            return Err(PluginError::Invalid(format!("send messages with POST, not {}", request.method)));
        }
        let incoming: Incoming = request.json()?;
        if incoming.text.trim().is_empty() {
            return Err(PluginError::Invalid("text is empty".into()));
        }
        let mut message = InboundMessage::new(incoming.id, "email", &incoming.from, incoming.text);
        message.sender_name = incoming.name;
        Ok(WebhookOutcome { messages: vec![message], reply: None })
    }
}

plugdesk_sdk::export_channel!(Plugin);
"#;

const FIXTURE: &str = r#"# A JSON webhook becomes one message from its sender.
call = "webhook"

[request]
method = "POST"
headers = { "content-type" = "application/json" }
body = '{"id": "1", "from": "ada@example.com", "name": "Ada", "text": "Hello, my order is late."}'

[expect]
outcome = "accepted"
messages = 1
sender = "ada@example.com"
text_contains = ["order is late"]
"#;

const FIXTURE_BAD: &str = r#"# A body that is not JSON is refused with the reason (the host answers 422 and keeps it).
call = "webhook"

[request]
method = "POST"
body = "hello"

[expect]
outcome = "invalid"
error_contains = "not the expected JSON"
"#;

const README: &str = r#"# NAME

A Plugdesk channel plugin.

    plugdesk plugin build    # build the component, check it loads in the host
    plugdesk plugin test     # run fixtures/*.toml against it in the real sandbox

Install it on a running server (an admin token):

    curl -X POST -H "authorization: Bearer $TOKEN" -H "content-type: application/wasm" \
         --data-binary @target/wasm32-wasip2/release/NAME.wasm http://127.0.0.1:8080/api/v1/plugins
    curl -X POST -H "authorization: Bearer $TOKEN" -H "content-type: application/json" \
         -d '{"plugin": "NAME", "settings": {}, "grants": []}' http://127.0.0.1:8080/api/v1/channels

Its webhook is `POST /hooks/{id}` with the channel's id from the answer.
"#;

/// Builds the plugin crate in `dir` for `wasm32-wasip2` and loads the component in the host
/// to check it. Returns the component's path and bytes.
///
/// # Errors
/// [`Error::Invalid`] naming what failed: no crate, the build, or the host's check.
pub(crate) fn build(dir: &Path) -> Result<(PathBuf, Vec<u8>, plugdesk_host::Descriptor)> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Error::invalid("dir", format!("{}: {e}; run this in a plugin crate", manifest.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| Error::invalid("dir", format!("{}: {e}", manifest.display())))?;
    let name = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::invalid("dir", format!("{} has no [package] name", manifest.display())))?
        .replace('-', "_");
    ensure_wasm_target();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .status()
        .map_err(|e| Error::invalid("dir", format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(Error::invalid("dir", "cargo build failed (see above)"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| dir.join("target"));
    let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    let wasm = std::fs::read(&path).map_err(|e| Error::invalid("dir", format!("{}: {e}", path.display())))?;
    let host = Host::new(None).map_err(|e| Error::Internal(e.to_string()))?;
    let plugin = host
        .load(&wasm, &Limits::default(), Arc::new(FixtureContext::default()))
        .map_err(|e| Error::invalid("plugin", format!("{}: {e}", path.display())))?;
    let manifest = dir.join("plugin.toml");
    if manifest.exists() {
        crate::manifest::Manifest::read(&manifest)?
            .check(&plugin.descriptor)
            .map_err(|e| Error::invalid("manifest", format!("{}: {e}", manifest.display())))?;
    }
    Ok((path, wasm, plugin.descriptor))
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if let Ok(out) = installed
        && !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")
    {
        let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    call: String,
    #[serde(default)]
    request: Option<FixtureRequest>,
    #[serde(default)]
    message: Option<FixtureMessage>,
    #[serde(default)]
    channel: FixtureChannel,
    #[serde(default)]
    http: Vec<CannedHttp>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureRequest {
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureMessage {
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    recipients: Vec<(String, String)>,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    in_reply_to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureChannel {
    #[serde(default)]
    settings: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CannedHttp {
    method: String,
    url: String,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    body: String,
}

fn ok() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: String,
    #[serde(default)]
    messages: Option<usize>,
    #[serde(default)]
    text_contains: Vec<String>,
    #[serde(default)]
    sender: Option<String>,
    #[serde(default)]
    reply_status: Option<u16>,
    #[serde(default)]
    error_contains: Option<String>,
    #[serde(default)]
    delivery_id: Option<String>,
    #[serde(default)]
    http_requests: Option<usize>,
}

/// The instance a fixture describes: settings, secrets and grants from the file, a store in
/// memory, and canned HTTP answers. Grants are checked exactly as in the server.
#[derive(Default)]
pub(crate) struct FixtureContext {
    settings: serde_json::Map<String, serde_json::Value>,
    secrets: BTreeMap<String, String>,
    grants: Vec<String>,
    kv: Mutex<BTreeMap<String, Vec<u8>>>,
    http: Vec<CannedHttp>,
    requests: Mutex<Vec<HttpRequest>>,
    logs: Mutex<Vec<String>>,
}

impl FixtureContext {
    /// A context with these settings and secrets, granted `secrets` and `kv` (benchmarks).
    pub(crate) fn with(
        settings: serde_json::Map<String, serde_json::Value>,
        secrets: BTreeMap<String, String>,
    ) -> Self {
        FixtureContext { settings, secrets, grants: vec!["secrets".into(), "kv".into()], ..FixtureContext::default() }
    }
}

impl Context for FixtureContext {
    fn tcp_connect(
        &self,
        host: &str,
        port: u16,
        _: bool,
        _: std::time::Duration,
    ) -> std::result::Result<Box<dyn plugdesk_host::Connection>, String> {
        Err(format!("fixtures cannot open TCP connections (to {host}:{port}); test that part against a server"))
    }
    fn log(&self, level: Level, message: &str) {
        if let Ok(mut l) = self.logs.lock() {
            l.push(format!("{level:?}: {message}"));
        }
    }
    fn setting(&self, key: &str) -> Option<String> {
        self.settings.get(key).map(serde_json::Value::to_string)
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
    fn kv_get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
        Ok(self.kv.lock().map_err(|e| e.to_string())?.get(key).cloned())
    }
    fn kv_set(&self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        self.kv.lock().map_err(|e| e.to_string())?.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn granted(&self, capability: &str) -> bool {
        self.grants.iter().any(|g| g == capability)
    }
    fn http_fetch(&self, request: HttpRequest) -> std::result::Result<HttpResponse, String> {
        let host = request.url.split("://").nth(1).and_then(|r| r.split(['/', '?']).next()).unwrap_or("");
        let bare = host.split(':').next().unwrap_or(host);
        if !self.grants.iter().any(|g| *g == format!("http:{host}") || *g == format!("http:{bare}")) {
            return Err(format!("host {host} is not granted to this channel; add \"http:{bare}\" to [channel] grants"));
        }
        let canned = self.http.iter().find(|c| c.method.eq_ignore_ascii_case(&request.method) && c.url == request.url);
        let (method, url) = (request.method.clone(), request.url.clone());
        if let Ok(mut r) = self.requests.lock() {
            r.push(request);
        }
        let c = canned.ok_or_else(|| format!("the fixture has no [[http]] answer for {method} {url}"))?;
        Ok(HttpResponse { status: c.status, headers: vec![], body: c.body.clone().into_bytes() })
    }
}

/// Runs every `fixtures/*.toml` of the plugin in `dir` against its built component. Prints a
/// line per fixture; fails when one does.
///
/// # Errors
/// [`Error::Invalid`] naming the failed fixtures, or a fixture file that cannot be read.
pub(crate) fn test(dir: &Path) -> Result<()> {
    let (path, wasm, descriptor) = build(dir)?;
    println!("built {} {} ({})", descriptor.id, descriptor.version, path.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("fixtures"))
        .map_err(|e| Error::invalid("dir", format!("{}: {e}", dir.join("fixtures").display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid("dir", "no fixtures/*.toml to run"));
    }
    let host = Host::new(None).map_err(|e| Error::Internal(e.to_string()))?;
    let mut failed = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        match run_fixture(&host, &wasm, file) {
            Ok(()) => println!("ok      {name}"),
            Err(reason) => {
                println!("FAILED  {name}: {reason}");
                failed.push(name);
            }
        }
    }
    println!("{} fixtures, {} failed", files.len(), failed.len());
    if failed.is_empty() { Ok(()) } else { Err(Error::invalid("fixtures", format!("failed: {}", failed.join(", ")))) }
}

fn run_fixture(host: &Host, wasm: &[u8], file: &Path) -> std::result::Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let f: Fixture = toml::from_str(&text).map_err(|e| format!("not a fixture: {e}"))?;
    let ctx = Arc::new(FixtureContext {
        settings: f.channel.settings,
        secrets: f.channel.secrets,
        grants: f.channel.grants,
        http: f.http,
        ..FixtureContext::default()
    });
    let limits = Limits::default();
    let plugin = host.load(wasm, &limits, ctx.clone()).map_err(|e| e.to_string())?;
    let e = &f.expect;
    let (outcome, detail) = match f.call.as_str() {
        "webhook" => {
            let r = f.request.ok_or("call = \"webhook\" needs a [request]")?;
            let request = plugdesk_host::WebhookRequest {
                method: r.method,
                path: r.path,
                query: r.query,
                headers: r.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
                body: r.body.into_bytes(),
            };
            match host.handle_webhook(&plugin, &limits, ctx.clone(), request) {
                Ok(Outcome::Accepted { messages, reply }) => {
                    check_messages(e, &messages)?;
                    if let Some(want) = e.reply_status {
                        let got = reply.as_ref().map_or(200, |r| r.status);
                        if got != want {
                            return Err(format!("reply status {got}, expected {want}"));
                        }
                    }
                    ("accepted", String::new())
                }
                Ok(Outcome::Rejected(m)) => ("rejected", m),
                Ok(Outcome::Invalid(m)) => ("invalid", m),
                Err(err) => ("error", err.to_string()),
            }
        }
        "send" => {
            let m = f.message.ok_or("call = \"send\" needs a [message]")?;
            let message = OutboundMessage {
                id: "1".into(),
                ticket_number: 1,
                recipients: m.recipients,
                conversation: m.conversation,
                subject: m.subject,
                text: m.text,
                html: m.html,
                in_reply_to: m.in_reply_to,
                ..OutboundMessage::default()
            };
            match host.send(&plugin, &limits, ctx.clone(), message) {
                Ok(Sent::Delivered(id)) => {
                    if let Some(want) = &e.delivery_id
                        && *want != id
                    {
                        return Err(format!("delivery id {id:?}, expected {want:?}"));
                    }
                    ("delivered", String::new())
                }
                Ok(Sent::Retryable(m)) => ("retryable", m),
                Ok(Sent::Permanent(m)) => ("permanent", m),
                Err(err) => ("error", err.to_string()),
            }
        }
        other => return Err(format!("call {other:?} is not webhook or send")),
    };
    if outcome != e.outcome {
        let logs = ctx.logs.lock().map(|l| l.join(" | ")).unwrap_or_default();
        return Err(format!("outcome {outcome} ({detail}), expected {}; plugin log: [{logs}]", e.outcome));
    }
    if let Some(needle) = &e.error_contains
        && !detail.contains(needle.as_str())
    {
        return Err(format!("error {detail:?} does not contain {needle:?}"));
    }
    if let Some(want) = e.http_requests {
        let got = ctx.requests.lock().map(|r| r.len()).unwrap_or(0);
        if got != want {
            return Err(format!("{got} HTTP requests, expected {want}"));
        }
    }
    Ok(())
}

fn check_messages(e: &Expect, messages: &[plugdesk_host::InboundMessage]) -> std::result::Result<(), String> {
    if let Some(want) = e.messages
        && messages.len() != want
    {
        return Err(format!("{} messages, expected {want}", messages.len()));
    }
    for needle in &e.text_contains {
        if !messages.iter().any(|m| m.text.contains(needle.as_str())) {
            return Err(format!("no message text contains {needle:?}"));
        }
    }
    if let Some(sender) = &e.sender
        && !messages.iter().all(|m| &m.sender_address == sender)
    {
        let got: Vec<&str> = messages.iter().map(|m| m.sender_address.as_str()).collect();
        return Err(format!("senders {got:?}, expected {sender:?}"));
    }
    Ok(())
}
