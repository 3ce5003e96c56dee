//! End-to-end tests of channels: the bundled `webform` plugin and the test plugins `hostile`
//! and `relay` (built here from `tests/plugins/` for wasm32-wasip2), running in the real server.

mod mock_apis;
mod remote;
mod support;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use remote::Remote;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Scratch, Server, assert_error};

/// Builds a test plugin (with cargo features) and returns its component bytes. Builds share one
/// target directory, so they run one at a time.
fn build_lock() -> std::sync::MutexGuard<'static, ()> {
    static BUILD: Mutex<()> = Mutex::new(());
    BUILD.lock().unwrap_or_else(|e| e.into_inner())
}

fn build_test_plugin(name: &str, features: &str) -> Vec<u8> {
    let _one = build_lock();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target").join("wasm");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--features", features, "--manifest-path"])
        .arg(root.join(format!("tests/plugins/{name}/Cargo.toml")))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo for a test plugin");
    assert!(status.success(), "building tests/plugins/{name} failed");
    std::fs::read(target.join(format!("wasm32-wasip2/release/{name}.wasm"))).expect("read the test plugin")
}

fn hostile_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| build_test_plugin("hostile", ""))
}

/// The relay test plugin: version 0.1.0, and 0.2.0 (which marks parsed messages " [v2]").
fn relay_wasm(v2: bool) -> &'static [u8] {
    static V1: OnceLock<Vec<u8>> = OnceLock::new();
    static V2: OnceLock<Vec<u8>> = OnceLock::new();
    if v2 {
        V2.get_or_init(|| build_test_plugin("relay", "v2"))
    } else {
        V1.get_or_init(|| build_test_plugin("relay", ""))
    }
}

async fn server_with_hostile() -> Server {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    std::fs::write(dir.join("hostile.wasm"), hostile_wasm()).expect("write plugin");
    let token = scratch.init("default");
    Server::serve(scratch, token).await
}

async fn hook(s: &Server, channel: i64, path: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/{channel}{path}", s.base))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("post hook");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn install(s: &Server, plugin: &str, grants: Value) -> i64 {
    let (status, ch) = s.post("/api/v1/channels", json!({ "plugin": plugin, "settings": {}, "grants": grants })).await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    ch["id"].as_i64().expect("id")
}

#[tokio::test]
async fn webform_submissions_become_tickets_and_bots_are_dropped() {
    let s = Server::start().await;
    let (_, plugins) = s.get("/api/v1/plugins").await;
    let ids: Vec<&str> = plugins["items"].as_array().expect("items").iter().filter_map(|p| p["id"].as_str()).collect();
    assert!(ids.contains(&"webform"), "{plugins}");
    let (status, ch) = s
        .post("/api/v1/channels", json!({ "plugin": "webform", "settings": { "thank_you": "Danke!" }, "grants": [] }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let id = ch["id"].as_i64().expect("id");
    assert_eq!(ch["hook"], format!("/hooks/{id}"));

    let form = json!({ "name": "Erika Muster", "email": "erika@example.com", "subject": "Rückruf", "message": "Bitte rufen Sie mich an." }).to_string();
    let (status, answer) = hook(&s, id, "", "application/json", &form).await;
    assert_eq!(
        (status, answer["accepted"].as_i64(), answer["message"].as_str()),
        (StatusCode::OK, Some(1), Some("Danke!"))
    );
    // A double-clicked "send" posts the same body again: still one ticket.
    hook(&s, id, "", "application/json", &form).await;
    // The same person through the HTML form lands on the same customer.
    let (status, _) = hook(
        &s,
        id,
        "",
        "application/x-www-form-urlencoded",
        "name=Erika&email=erika%40example.com&message=Noch+eine+Frage%3F",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A bot fills in the hidden field: accepted, nothing stored.
    let (status, bot) = hook(
        &s,
        id,
        "",
        "application/x-www-form-urlencoded",
        "email=bot%40spam.example&message=buy&website=http%3A%2F%2Fspam",
    )
    .await;
    assert_eq!((status, bot["accepted"].as_i64()), (StatusCode::OK, Some(0)));

    let (_, list) = s.get("/api/v1/tickets?channel=webform&sort=created_at").await;
    let tickets = list["items"].as_array().expect("items").clone();
    assert_eq!(tickets.len(), 2, "{list}");
    assert_eq!(tickets[0]["subject"], "Rückruf");
    assert_eq!(tickets[1]["subject"], "Contact form");
    assert_eq!(tickets[0]["customer_id"], tickets[1]["customer_id"]);
    let (_, customer) = s.get(&format!("/api/v1/customers/{}", tickets[0]["customer_id"])).await;
    assert_eq!(customer["name"], "Erika Muster");
    let (_, hits) = s.get("/api/v1/search?q=rufen").await;
    assert!(hits["items"].as_array().expect("items").iter().any(|h| h["ticket_id"] == tickets[0]["id"]), "{hits}");

    // Malformed submissions are answered precisely and kept for inspection.
    let (status, bad) = hook(&s, id, "", "application/json", "{\"email\": \"nope\", \"message\": \"x\"}").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["code"], "invalid_payload");
    assert!(bad["error"]["message"].as_str().unwrap_or("").contains("not an e-mail address"), "{bad}");
    let (status, bad) = hook(&s, id, "", "text/plain", "hello").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (_, payloads) = s.get(&format!("/api/v1/channels/{id}/payloads")).await;
    let statuses: Vec<&str> =
        payloads["items"].as_array().expect("items").iter().filter_map(|p| p["status"].as_str()).collect();
    assert_eq!(statuses, vec!["failed", "failed", "processed", "processed", "processed", "processed"]);
    let (_, failed) = s.get(&format!("/api/v1/channels/{id}/payloads?status=failed")).await;
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(2));
    // Unknown channels and wrong installs are refused.
    let (status, _) = hook(&s, 999, "", "application/json", &form).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "fax" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown plugin \"fax\"",
    );
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "webform", "grants": ["kv"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "does not ask for the capability kv",
    );
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "webform", "settings": [1] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "JSON object",
    );
    let (_, ch) = s.get(&format!("/api/v1/channels/{id}")).await;
    assert_eq!(ch["stats"]["calls"], 6, "{ch}");
}

#[tokio::test]
async fn hostile_plugins_are_stopped_reported_and_the_server_goes_on() {
    let s = server_with_hostile().await;
    let a = install(&s, "hostile", json!(["kv"])).await;
    let b = install(&s, "hostile", json!(["kv"])).await;
    let form = install(&s, "webform", json!([])).await;

    // An endless loop is stopped by its fuel or time budget; meanwhile another channel works.
    let started = Instant::now();
    let looping = {
        let base = s.base.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new().post(format!("{base}/hooks/{a}/loop")).body("x").send().await.expect("post");
            let status = r.status();
            (status, r.json::<Value>().await.expect("json"))
        })
    };
    let (status, _) = hook(
        &s,
        form,
        "",
        "application/json",
        &json!({ "email": "calm@example.com", "message": "still here" }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "other channels keep working while a plugin loops");
    let (status, body) = looping.await.expect("task");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "plugin_failed");
    let msg = body["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("plugin hostile") && (msg.contains("fuel") || msg.contains("ran longer")), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(15), "stopped within its budget");

    let crash = ["crashed: it aborted after logging: panic: panicked at", "the hostile plugin panics on purpose"];
    for (path, needles) in [("/alloc", &["memory"][..]), ("/trap", &crash[..]), ("/big", &["more than the limit"][..])]
    {
        let (status, body) = hook(&s, b, path, "text/plain", "x").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(needles.iter().all(|n| msg.contains(n)), "{path}: {msg}");
    }
    // A host function that was not granted fails, and the plugin sees why.
    let (status, body) = hook(&s, a, "/secret", "text/plain", "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("capability secrets is not granted"),
        "{body}"
    );
    // Each instance has its own store.
    let (status, stored) = hook(&s, a, "/kv-set", "text/plain", "alpha").await;
    assert_eq!((status, stored.as_str()), (StatusCode::OK, Some("stored")));
    let (_, own) = hook(&s, a, "/kv-get", "text/plain", "").await;
    assert_eq!(own.as_str(), Some("value: Some(\"alpha\")"));
    let (_, other) = hook(&s, b, "/kv-get", "text/plain", "").await;
    assert_eq!(other.as_str(), Some("value: None"), "instance b cannot read instance a's store");
    // The store's limits: 64 KiB a value, 1,024 keys an instance (the key `shared` is one).
    let (status, body) = hook(&s, a, "/kv-huge", "text/plain", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("values are at most 65536 bytes"), "{body}");
    for from in [0, 200, 400, 600, 800] {
        let (status, body) = hook(&s, a, &format!("/kv-fill?from={from}"), "text/plain", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = hook(&s, a, "/kv-fill?from=1000", "text/plain", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("after 1023 keys: this channel's store holds at most 1024 keys"),
        "{body}"
    );

    // A host function that waits gets only the call's time (epochs do not interrupt it).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (status, hanging) =
        s.post("/api/v1/channels", json!({ "plugin": "hostile", "grants": [format!("http:127.0.0.1:{port}")] })).await;
    assert_eq!(status, StatusCode::CREATED, "{hanging}");
    let started = Instant::now();
    let (status, body) =
        hook(&s, hanging["id"].as_i64().expect("id"), &format!("/hang?port={port}"), "text/plain", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("failed"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at the 2 s budget, not reqwest's 10 s: {:?}",
        started.elapsed()
    );
    drop(silent);

    // The failed requests are stored with the reason, and can be processed again.
    let (_, payloads) = s.get(&format!("/api/v1/channels/{b}/payloads?status=failed")).await;
    let items = payloads["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|p| p["error"].as_str().unwrap_or("").contains("plugin hostile")));
    let retry = s.post(&format!("/api/v1/channels/{b}/payloads/{}/retry", items[0]["id"]), json!({})).await;
    assert_eq!(retry.1["status"], 502, "{}", retry.1);
    // Five failures in a row (the retry and four crashes) suspend the channel.
    for _ in 0..4 {
        hook(&s, b, "/trap", "text/plain", "x").await;
    }
    let (_, ch) = s.get(&format!("/api/v1/channels/{b}")).await;
    assert_eq!(ch["status"], "suspended", "{ch}");
    assert_eq!(ch["stats"]["errors"], 8, "{ch}");
    assert!(ch["stats"]["last_error"].as_str().unwrap_or("").contains("crashed"), "{ch}");
    let (status, body) = hook(&s, b, "/fine", "text/plain", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, ch) = s.post(&format!("/api/v1/channels/{b}/resume"), json!({})).await;
    assert_eq!((status, ch["status"].as_str()), (StatusCode::OK, Some("active")));
    let (status, fine) = hook(&s, b, "/fine", "text/plain", "x").await;
    assert_eq!((status, fine.as_str()), (StatusCode::OK, Some("fine: /fine")));
    let (_, metrics) = s.call(Method::GET, "/metrics", Some(support::METRICS_TOKEN), None).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains(&format!("plugdesk_channel_errors_total{{channel=\"{b}\"}} 8")), "{text}");
}

/// A server with fast outbox retries and polls, and the relay plugin in its plugins directory.
async fn relay_server(max_attempts: u32) -> Server {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    std::fs::write(dir.join("relay.wasm"), relay_wasm(false)).expect("write plugin");
    scratch.config(&format!(
        "[outbox]\nretry_base_ms = 40\nmax_attempts = {max_attempts}\ntick_ms = 20\npoll_tick_ms = 20\n"
    ));
    let token = scratch.init("default");
    Server::serve(scratch, token).await
}

async fn install_relay(s: &Server, remote: &Remote, grants: Value) -> i64 {
    let (status, ch) = s
        .post(
            "/api/v1/channels",
            json!({
                "plugin": "relay", "grants": grants, "secrets": { "token": "s3cret" },
                "settings": { "sink": format!("{}/sink", remote.base), "feed": format!("{}/feed", remote.base) },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    ch["id"].as_i64().expect("id")
}

/// Waits until the message's delivery status is `want`; returns the message.
async fn delivery(s: &Server, ticket: i64, message: i64, want: &str) -> Value {
    let v = s
        .wait_for(&format!("/api/v1/tickets/{ticket}/messages"), Duration::from_secs(15), |v| {
            v["items"].as_array().is_some_and(|m| m.iter().any(|m| m["id"] == message && m["delivery_status"] == want))
        })
        .await;
    v["items"].as_array().and_then(|m| m.iter().find(|m| m["id"] == message).cloned()).expect("message")
}

/// Sends a reply on a new ticket of channel `ch` and returns the `Authorization` the remote got.
async fn reply_auth(s: &Server, remote: &Remote, ch: i64, n: u32) -> String {
    let (status, answer) =
        hook(s, ch, "", "application/json", &format!(r#"{{"id":"sec-{n}","from":"anna","text":"Hallo"}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ticket = answer["tickets"][0].as_i64().expect("ticket");
    let (status, reply) = s.post(&format!("/api/v1/tickets/{ticket}/reply"), json!({ "body": "Antwort" })).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    delivery(s, ticket, reply["id"].as_i64().expect("id"), "sent").await;
    remote.received().last().map(|(auth, _)| auth.clone()).expect("the remote got the reply")
}

/// Channel, automation and webhook secrets were stored in plaintext (#13): the raw rows now
/// hold only `enc:v1:…`, rows from before encryption are sealed at start, `secrets rotate`
/// re-seals them under a new key, and the plugin gets the secret throughout.
#[tokio::test]
async fn channel_secrets_are_encrypted_at_rest_and_still_reach_the_plugin() {
    let remote = Remote::start().await;
    let s = relay_server(3).await;
    let ch = install_relay(&s, &remote, json!(["secrets", format!("http:{}", remote.authority())])).await;
    let raw = s.scratch.sql(&format!("SELECT secrets FROM channels WHERE id = {ch}"));
    assert!(raw.starts_with("enc:v1:") && !raw.contains("s3cret"), "{raw}");
    let (_, view) = s.get(&format!("/api/v1/channels/{ch}")).await;
    assert!(!view.to_string().contains("s3cret") && !view.to_string().contains("enc:v1"), "{view}");
    assert_eq!(reply_auth(&s, &remote, ch, 1).await, "Bearer s3cret");
    let (status, hook_view) = s
        .post(
            "/api/v1/webhooks",
            json!({ "name": "crm", "url": format!("{}/crm", remote.base), "secret": "wh-s3cret" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook_view}");
    let raw = s.scratch.sql("SELECT secret FROM webhooks");
    assert!(raw.starts_with("enc:v1:") && !raw.contains("wh-s3cret"), "{raw}");

    // A row from before encryption is sealed when the server starts.
    let (scratch, token) = s.stop();
    scratch.sql(&format!("UPDATE channels SET secrets = '{{\"token\":\"s3cret\"}}' WHERE id = {ch}"));
    let s = Server::serve(scratch, token).await;
    let sealed = s.scratch.sql(&format!("SELECT secrets FROM channels WHERE id = {ch}"));
    assert!(sealed.starts_with("enc:v1:") && !sealed.contains("s3cret"), "{sealed}");
    assert_eq!(reply_auth(&s, &remote, ch, 2).await, "Bearer s3cret");

    // Rotation: a new key id on every secret, the old key kept as a backup file.
    let (scratch, token) = s.stop();
    let out = scratch.command(&["secrets", "rotate"]).output().expect("run secrets rotate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rotated = scratch.sql(&format!("SELECT secrets FROM channels WHERE id = {ch}"));
    let key_id = |v: &str| v.split(':').nth(2).unwrap_or_default().to_owned();
    assert!(rotated.starts_with("enc:v1:") && key_id(&rotated) != key_id(&sealed), "{rotated} after {sealed}");
    let backups = std::fs::read_dir(&scratch.dir)
        .expect("data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bak"))
        .count();
    assert_eq!(backups, 1);
    let s = Server::serve(scratch, token).await;
    assert_eq!(reply_auth(&s, &remote, ch, 3).await, "Bearer s3cret");
}

#[tokio::test]
async fn replies_leave_through_their_channel_with_retries_dead_letters_and_replay() {
    let remote = Remote::start().await;
    let s = relay_server(3).await;
    let ch = install_relay(&s, &remote, json!(["secrets", format!("http:{}", remote.authority())])).await;
    let (status, answer) =
        hook(&s, ch, "", "application/json", r#"{"id":"m-1","from":"anna","text":"Wo ist mein Paket?"}"#).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ticket = answer["tickets"][0].as_i64().expect("ticket");

    // The remote fails twice (retryable), then takes the reply.
    remote.answer_next(&[503, 500]);
    let (status, reply) =
        s.post(&format!("/api/v1/tickets/{ticket}/reply"), json!({ "body": "Es ist unterwegs." })).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["id"].as_i64().expect("message id");
    let sent = delivery(&s, ticket, id, "sent").await;
    assert_eq!(sent["external_id"], "d-3", "the channel's id becomes the message's: {sent}");
    let got = remote.received();
    assert_eq!(got.len(), 3, "two failures and the delivery");
    let (auth, body) = &got[2];
    assert_eq!(auth, "Bearer s3cret", "the host put the secret in; the plugin never held it");
    assert_eq!((body["to"].as_str(), body["text"].as_str()), (Some("anna"), Some("Es ist unterwegs.")));
    assert_eq!(body["in_reply_to"], "m-1");
    assert_eq!(body["id"], id.to_string(), "the same id on every attempt");
    let (_, outbox) = s.get("/api/v1/outbox?status=sent").await;
    assert_eq!(outbox["items"][0]["attempts"], 3, "{outbox}");
    let (_, events) = s.get(&format!("/api/v1/tickets/{ticket}/events")).await;
    assert!(events["items"].as_array().expect("events").iter().any(|e| e["type"] == "message.delivered"), "{events}");

    // A permanent refusal goes straight to the dead letters, with the reason on the message.
    remote.answer_next(&[400]);
    let (_, reply) = s.post(&format!("/api/v1/tickets/{ticket}/reply"), json!({ "body": "Zweite Antwort" })).await;
    let id = reply["id"].as_i64().expect("message id");
    let failed = delivery(&s, ticket, id, "failed").await;
    assert!(failed["delivery_error"].as_str().unwrap_or("").contains("400"), "{failed}");
    let (_, dead) = s.get("/api/v1/outbox?status=dead").await;
    let entry =
        dead["items"].as_array().and_then(|d| d.iter().find(|e| e["message_id"] == id).cloned()).expect("dead entry");
    assert_eq!(entry["attempts"], 1, "permanent errors are not retried: {entry}");
    // The agent sees the failure with its reason and sends again from the ticket's page once
    // the remote is fixed: delivered.
    let mut agent = support::admin_browser(&s).await;
    let page = agent.get(&format!("/tickets/{ticket}")).await;
    let retry = format!("/tickets/{ticket}/messages/{id}/retry");
    assert!(page.body.contains(&retry) && page.body.contains("400"), "{}", page.body);
    let sent_again = agent.post(&retry, &[("csrf", &page.csrf())]).await;
    assert_eq!(sent_again.status, StatusCode::SEE_OTHER, "{}", sent_again.body);
    delivery(&s, ticket, id, "sent").await;
    assert!(!agent.get(&format!("/tickets/{ticket}")).await.body.contains(&retry), "no retry for a sent reply");
    let again = s.post(&format!("/api/v1/outbox/{}/replay", entry["id"]), json!({})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", "only pending and dead entries");
    assert_error(&s.get("/api/v1/outbox?status=lost").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "lost");

    // Retryable failures stop after max_attempts.
    remote.answer_next(&[502, 502, 502]);
    let (_, reply) = s.post(&format!("/api/v1/tickets/{ticket}/reply"), json!({ "body": "Dritte Antwort" })).await;
    let failed = delivery(&s, ticket, reply["id"].as_i64().expect("id"), "failed").await;
    assert!(failed["delivery_error"].as_str().unwrap_or("").contains("gave up after 3 attempts"), "{failed}");

    // Notes never leave; a channel without the host grant cannot reach the remote.
    let before = remote.received().len();
    s.post(&format!("/api/v1/tickets/{ticket}/notes"), json!({ "body": "intern" })).await;
    let blocked = install_relay(&s, &remote, json!(["secrets"])).await;
    let (_, answer) = hook(&s, blocked, "", "application/json", r#"{"id":"m-2","from":"ben","text":"Hallo"}"#).await;
    let other = answer["tickets"][0].as_i64().expect("ticket");
    let (_, reply) = s.post(&format!("/api/v1/tickets/{other}/reply"), json!({ "body": "Hallo Ben" })).await;
    let failed = delivery(&s, other, reply["id"].as_i64().expect("id"), "failed").await;
    assert!(failed["delivery_error"].as_str().unwrap_or("").contains("is not granted to this channel"), "{failed}");
    assert_eq!(remote.received().len(), before, "nothing reached the remote without a grant");
    let (_, ch) = s.get(&format!("/api/v1/channels/{blocked}")).await;
    assert!(ch["last_error"].as_str().unwrap_or("").contains("not granted"), "{ch}");
    assert_eq!(ch["sends"], true);

    // Grants are checked on install: per host, and only what the plugin asks for.
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "relay", "grants": ["http"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "http:HOST",
    );
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "webform", "grants": ["http:example.com"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "does not ask for the capability http",
    );
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "relay", "poll_interval_ms": 5 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "at least 100",
    );
}

#[tokio::test]
async fn polling_imports_each_message_once_and_resumes_at_its_cursor() {
    let remote = Remote::start().await;
    for (i, text) in ["eins", "zwei", "drei"].iter().enumerate() {
        remote.push_feed(i as u64 + 1, "carla", text);
    }
    let s = relay_server(3).await;
    let grant = format!("http:{}", remote.authority());
    let (status, ch) = s
        .post(
            "/api/v1/channels",
            json!({ "plugin": "relay", "grants": [grant], "poll_interval_ms": 100, "settings": { "feed": format!("{}/feed", remote.base) } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let id = ch["id"].as_i64().expect("id");
    // Three messages of one conversation: one ticket with three messages, pages chained at once.
    let list = s
        .wait_for("/api/v1/tickets?channel=relay", Duration::from_secs(15), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 1)
        })
        .await;
    let ticket = list["items"][0]["id"].as_i64().expect("ticket");
    s.wait_for(&format!("/api/v1/tickets/{ticket}/messages"), Duration::from_secs(15), |v| {
        v["items"].as_array().is_some_and(|m| m.len() == 3)
    })
    .await;
    let ch = s.wait_for(&format!("/api/v1/channels/{id}"), Duration::from_secs(5), |c| c["cursor"] == "3").await;
    assert_eq!(ch["poll_interval_ms"], 100);
    let calls = remote.feed_calls();
    assert_eq!(&calls[..2], ["0", "2"], "the second page follows the first at once: {calls:?}");
    let (_, payloads) = s.get(&format!("/api/v1/channels/{id}/payloads")).await;
    assert!(
        payloads["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|p| p["method"] == "POLL" && p["status"] == "processed")
    );

    // A failing source leaves the cursor and records the reason.
    remote.set_feed_failing(true);
    let ch = s
        .wait_for(&format!("/api/v1/channels/{id}"), Duration::from_secs(5), |c| c["last_error"].as_str().is_some())
        .await;
    assert!(ch["last_error"].as_str().unwrap_or("").contains("feed answered 500"), "{ch}");
    assert_eq!(ch["cursor"], "3");

    // After a restart polling resumes at the stored cursor: nothing is imported twice.
    let (scratch, token) = s.stop();
    remote.set_feed_failing(false);
    remote.push_feed(4, "carla", "vier");
    let s = Server::serve(scratch, token).await;
    s.wait_for(&format!("/api/v1/tickets/{ticket}/messages"), Duration::from_secs(15), |v| {
        v["items"].as_array().is_some_and(|m| m.len() == 4)
    })
    .await;
    let ch = s.wait_for(&format!("/api/v1/channels/{id}"), Duration::from_secs(5), |c| c["cursor"] == "4").await;
    assert!(ch["last_error"].is_null(), "{ch}");
    let (_, messages) = s.get(&format!("/api/v1/tickets/{ticket}/messages")).await;
    let texts: Vec<&str> =
        messages["items"].as_array().expect("items").iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(texts, ["eins", "zwei", "drei", "vier"]);
    // Disabled channels are not polled and their hooks answer 503.
    let (status, ch) = s.patch(&format!("/api/v1/channels/{id}"), json!({ "enabled": false })).await;
    assert_eq!((status, ch["status"].as_str()), (StatusCode::OK, Some("disabled")), "{ch}");
    let (status, body) = hook(&s, id, "", "application/json", r#"{"id":"x","from":"y","text":"z"}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("channel_disabled")));
}

/// Regression: `POST /api/v1/plugins` made any workspace's upload the installation's active
/// version — workspace `other` replaced the bundled `webform` that every workspace runs.
/// Uploads now belong to the uploading workspace; installation-wide plugins are the operator's.
#[tokio::test]
async fn a_workspace_cannot_replace_see_or_use_another_workspaces_plugins() {
    let s = Server::start().await;
    let other = s.scratch.init("other");
    let impostor = {
        static WASM: OnceLock<Vec<u8>> = OnceLock::new();
        WASM.get_or_init(|| build_test_plugin("relay", "impostor")).clone()
    };
    let (_, bundled) = s.get("/api/v1/plugins/webform").await;
    let bundled_version = bundled["version"].as_str().expect("version").to_owned();
    assert_eq!(bundled["scope"], "installation", "{bundled}");
    let form = install(&s, "webform", json!([])).await;

    // A workspace cannot shadow an installation-wide id, nor roll one back.
    assert_error(
        &s.raw_as(&other, Method::POST, "/api/v1/plugins", "application/wasm", impostor.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "belongs to an installation-wide plugin",
    );
    assert_error(
        &s.call(Method::POST, "/api/v1/plugins/webform/rollback", Some(&other), Some(json!({}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only the operator",
    );
    let (_, still) = s.get("/api/v1/plugins/webform").await;
    assert_eq!(still["versions"].as_array().map(Vec::len), Some(1), "nothing was stored: {still}");
    let form_post = |name: &str| format!("name={name}&email=ada%40example.com&message=Hallo+Welt");
    let (status, answer) = hook(&s, form, "", "application/x-www-form-urlencoded", &form_post("Ada")).await;
    assert_eq!(
        (status, answer["accepted"].as_i64()),
        (StatusCode::OK, Some(1)),
        "the bundled form still answers: {answer}"
    );

    // A workspace's upload is its own: the other workspace neither sees nor installs it.
    let (status, mine) =
        s.raw_as(&other, Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(false).to_vec()).await;
    assert_eq!((status, mine["scope"].as_str()), (StatusCode::CREATED, Some("workspace")), "{mine}");
    let (_, listed) = s.get("/api/v1/plugins").await;
    let ids: Vec<&str> = listed["items"].as_array().expect("items").iter().filter_map(|p| p["id"].as_str()).collect();
    assert!(ids.contains(&"webform") && !ids.contains(&"relay"), "{listed}");
    let (status, _) = s.get("/api/v1/plugins/relay").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, me) = s.call(Method::GET, "/api/v1/me", Some(&other), None).await;
    let other_key = format!("w{}/relay", me["workspace_id"]);
    for name in ["relay", other_key.as_str()] {
        assert_error(
            &s.post("/api/v1/channels", json!({ "plugin": name })).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "unknown plugin",
        );
    }
    let (status, ch) = s.call(Method::POST, "/api/v1/channels", Some(&other), Some(json!({ "plugin": "relay" }))).await;
    assert_eq!(
        (status, ch["plugin"].as_str(), ch["plugin_scope"].as_str()),
        (StatusCode::CREATED, Some("relay"), Some("workspace")),
        "{ch}"
    );

    // Versions and rollbacks are per workspace.
    let (status, ours) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(false).to_vec()).await;
    assert_eq!(status, StatusCode::CREATED, "{ours}");
    let (status, theirs) =
        s.raw_as(&other, Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(true).to_vec()).await;
    assert_eq!((status, theirs["version"].as_str()), (StatusCode::CREATED, Some("0.2.0")), "{theirs}");
    let (_, ours) = s.get("/api/v1/plugins/relay").await;
    assert_eq!(
        (ours["version"].as_str(), ours["versions"].as_array().map(Vec::len)),
        (Some("0.1.0"), Some(1)),
        "{ours}"
    );
    assert_error(
        &s.post("/api/v1/plugins/relay/rollback", json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
        "no previous version",
    );
    let (status, back) = s.call(Method::POST, "/api/v1/plugins/relay/rollback", Some(&other), Some(json!({}))).await;
    assert_eq!((status, back["version"].as_str()), (StatusCode::OK, Some("0.1.0")), "{back}");

    // The operator installs for the whole installation on the server, and rolls back.
    let file = s.scratch.dir.join("webform-0.9.9.wasm");
    std::fs::write(&file, &impostor).expect("write component");
    let out = s.scratch.command(&["plugin", "install", file.to_str().expect("path")]).output().expect("run install");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_for("/api/v1/plugins/webform", Duration::from_secs(10), |p| p["version"] == "0.9.9").await;
    let out = s.scratch.command(&["plugin", "list"]).output().expect("run list");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("webform") && l.contains("0.9.9") && l.contains("operator") && l.ends_with("active")),
        "{listing}"
    );
    assert!(listing.lines().any(|l| l.starts_with("workspace") && l.contains("relay")), "{listing}");
    let out = s.scratch.command(&["plugin", "rollback", "webform"]).output().expect("run rollback");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_for("/api/v1/plugins/webform", Duration::from_secs(10), |p| p["version"] == bundled_version.as_str()).await;
    let bad = s.scratch.command(&["plugin", "install", "/nonexistent.wasm"]).output().expect("run install");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.wasm"));
}

#[tokio::test]
async fn plugins_upgrade_and_roll_back_under_load_without_losing_a_message() {
    let s = Server::start().await;
    let second = Server::serve(s.scratch.share(), s.token.clone()).await;
    // Bad uploads are refused precisely.
    assert_error(
        &s.raw(Method::POST, "/api/v1/plugins", "application/wasm", b"not a component".to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "not a WebAssembly component",
    );
    assert_error(
        &s.raw(Method::POST, "/api/v1/plugins", "application/json", relay_wasm(false).to_vec()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/wasm",
    );
    let (status, v1) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(false).to_vec()).await;
    assert_eq!((status, v1["version"].as_str()), (StatusCode::CREATED, Some("0.1.0")), "{v1}");
    assert_eq!((v1["versions"][0]["source"].as_str(), v1["scope"].as_str()), (Some("workspace"), Some("workspace")));
    let ch = install(&s, "relay", json!([])).await;

    // 240 webhooks from 8 clients while v2 is uploaded and then rolled back.
    let base = s.base.clone();
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let (client, base) = (client.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..30 {
                    let body =
                        json!({ "id": format!("w{worker}-{i}"), "from": format!("user{worker}-{i}"), "text": "load" });
                    let r = client.post(format!("{base}/hooks/{ch}")).json(&body).send().await.expect("post");
                    statuses.push(r.status().as_u16());
                }
                statuses
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("worker"));
        }
        all
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v2) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(true).to_vec()).await;
    assert_eq!(
        (status, v2["version"].as_str(), v2["previous_version"].as_str()),
        (StatusCode::CREATED, Some("0.2.0"), Some("0.1.0")),
        "{v2}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, back) = s.post("/api/v1/plugins/relay/rollback", json!({})).await;
    assert_eq!(
        (status, back["version"].as_str(), back["previous_version"].as_str()),
        (StatusCode::OK, Some("0.1.0"), Some("0.2.0")),
        "{back}"
    );
    let statuses = load.await.expect("load");
    assert_eq!(statuses.len(), 240);
    assert!(statuses.iter().all(|s| *s == 200), "every webhook was taken: {statuses:?}");
    let (_, payloads) = s.get(&format!("/api/v1/channels/{ch}/payloads?status=processed")).await;
    assert_eq!(payloads["items"].as_array().map(Vec::len), Some(200), "listing caps at 200; none failed");
    let (_, failed) = s.get(&format!("/api/v1/channels/{ch}/payloads?status=failed")).await;
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(0), "{failed}");
    let (_, list) = s.get("/api/v1/tickets?channel=relay&limit=200").await;
    let (_, page2) = s
        .get(&format!("/api/v1/tickets?channel=relay&limit=200&cursor={}", list["next_cursor"].as_str().unwrap_or("")))
        .await;
    let count = list["items"].as_array().map_or(0, Vec::len) + page2["items"].as_array().map_or(0, Vec::len);
    assert_eq!(count, 240, "one ticket per message, none lost");

    // After the rollback new messages are parsed by 0.1.0 again.
    let (_, answer) =
        hook(&s, ch, "", "application/json", r#"{"id":"after","from":"dora","text":"nach dem Rollback"}"#).await;
    let t = answer["tickets"][0].as_i64().expect("ticket");
    let (_, msgs) = s.get(&format!("/api/v1/tickets/{t}/messages")).await;
    assert_eq!(msgs["items"][0]["body"], "nach dem Rollback");
    // The other node follows the active version through the database.
    second
        .wait_for("/api/v1/plugins/relay", Duration::from_secs(10), |p| {
            p["version"] == "0.1.0" && p["versions"].as_array().is_some_and(|v| v.len() == 2)
        })
        .await;
    let (_, version) = second.call(Method::GET, &format!("/hooks/{ch}/version"), None, None).await;
    assert_eq!(version, "0.1.0");
    // The same version with other bytes is refused; the same bytes again change nothing.
    let mut tampered = relay_wasm(false).to_vec();
    // A custom section (id 0, 5 bytes: the name "abc" and one byte) changes the bytes only.
    tampered.extend_from_slice(&[0, 5, 3, b'a', b'b', b'c', b'x']);
    let (status, _) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", relay_wasm(false).to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &s.raw(Method::POST, "/api/v1/plugins", "application/wasm", tampered).await,
        StatusCode::CONFLICT,
        "conflict",
        "already stored with other content",
    );
    assert_error(
        &s.post("/api/v1/plugins/webform/rollback", json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only the operator can roll it back",
    );
    let (status, _) = s.get("/api/v1/plugins/fax").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // TCP through the host: only to a granted address; TLS is done by the host.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = echo.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in echo.incoming().flatten() {
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(format!("PONG {line}").as_bytes());
            }
        }
    });
    let (status, ch_tcp) =
        s.post("/api/v1/channels", json!({ "plugin": "relay", "grants": [format!("tcp:127.0.0.1:{port}")] })).await;
    assert_eq!(status, StatusCode::CREATED, "{ch_tcp}");
    let tcp = ch_tcp["id"].as_i64().expect("id");
    let (status, said) = s.call(Method::GET, &format!("/hooks/{tcp}/tcp?port={port}"), None, None).await;
    assert_eq!((status, said.as_str()), (StatusCode::OK, Some("PONG PING\r\n")), "{said}");
    let (status, refused) = s.call(Method::GET, &format!("/hooks/{tcp}/tcp?port={}", port + 1), None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap_or("").contains("is not granted to this channel"), "{refused}");
    let (status, tls) = s.call(Method::GET, &format!("/hooks/{tcp}/tcp?port={port}&tls=1"), None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tls}");
    assert!(tls["error"]["message"].as_str().unwrap_or("").contains("TLS handshake with 127.0.0.1"), "{tls}");
    // A login over TCP: the host fills in the secret, quoted or base64; plain writes never.
    let (status, ch_login) = s
        .post(
            "/api/v1/channels",
            json!({ "plugin": "relay", "grants": ["secrets", format!("tcp:127.0.0.1:{port}")], "secrets": { "pw": "p\"a\\ss" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ch_login}");
    let login = ch_login["id"].as_i64().expect("id");
    let say = |line: &str, secret: bool| {
        let q: String = line.bytes().map(|b| format!("%{b:02X}")).collect();
        format!("/hooks/{login}/tcp?port={port}&secret={}&say={q}", u8::from(secret))
    };
    let (status, said) = s.call(Method::GET, &say("a1 LOGIN support {{secret_quoted:pw}}", true), None, None).await;
    assert_eq!((status, said.as_str()), (StatusCode::OK, Some("PONG a1 LOGIN support \"p\\\"a\\\\ss\"\r\n")), "{said}");
    let (status, said) = s.call(Method::GET, &say("AUTH {{secret_base64:pw}}", true), None, None).await;
    assert_eq!((status, said.as_str()), (StatusCode::OK, Some("PONG AUTH cCJhXHNz\r\n")), "{said}");
    let (status, said) = s.call(Method::GET, &say("quoting {{secret:pw}} in a mail", false), None, None).await;
    assert_eq!((status, said.as_str()), (StatusCode::OK, Some("PONG quoting {{secret:pw}} in a mail\r\n")), "{said}");
    let (status, err) = s.call(Method::GET, &say("LOGIN {{secret:nope}}", true), None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or("").contains("secret \"nope\" is not set"), "{err}");
    let (status, err) = s.call(Method::GET, &format!("/hooks/{tcp}/tcp?port={port}&secret=1&say=x"), None, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "without the secrets grant: {err}");
    assert!(err["error"]["message"].as_str().unwrap_or("").contains("secrets"), "{err}");
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "relay", "grants": ["tcp:127.0.0.1"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "tcp:HOST:PORT",
    );

    // GET hooks are not stored and may not bring messages; CORS preflights are answered.
    let (status, body) = s.call(Method::GET, &format!("/hooks/{ch}/sneaky"), None, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("GET request"), "{body}");
    let pre = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/hooks/{ch}/x", s.base))
        .send()
        .await
        .expect("options");
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert_eq!(pre.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"));

    // A restart loads the plugins from the compiled-artifact cache.
    drop(second);
    let (scratch, token) = s.stop();
    let s = Server::serve(scratch, token).await;
    let (_, relay) = s.get("/api/v1/plugins/relay").await;
    assert_eq!((relay["version"].as_str(), relay["cached"].as_bool()), (Some("0.1.0"), Some(true)), "{relay}");
}

#[tokio::test]
async fn a_plugin_goes_from_plugin_new_to_an_installed_channel() {
    let s = Server::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target").join("wasm");
    let plugdesk = |args: &[&str], dir: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plugdesk"))
            .args(args)
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .output()
            .expect("run plugdesk plugin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let work = s.data_dir().join("authoring");
    std::fs::create_dir_all(&work).expect("dir");
    let (ok, out) = plugdesk(&["plugin", "new", "shop-chat"], &work);
    assert!(ok, "{out}");
    let (ok, out) = plugdesk(&["plugin", "new", "Shop Chat"], &work);
    assert!(!ok && out.contains("must start with a-z"), "{out}");
    let crate_dir = work.join("shop-chat");
    let (ok, out) = {
        let _one = build_lock();
        plugdesk(&["plugin", "test"], &crate_dir)
    };
    assert!(ok && out.contains("2 fixtures, 0 failed"), "{out}");
    // plugin.toml must say what the component says.
    let manifest = crate_dir.join("plugin.toml");
    let good = std::fs::read_to_string(&manifest).expect("manifest");
    assert!(good.contains("id = \"shop-chat\"") && good.contains("wit_version = \"0.2.0\""), "{good}");
    std::fs::write(&manifest, good.replace("capabilities = []", "capabilities = [\"kv\"]")).expect("write");
    let (ok, out) = {
        let _one = build_lock();
        plugdesk(&["plugin", "build"], &crate_dir)
    };
    assert!(
        !ok && out.contains("plugin.toml")
            && out.contains("capabilities are [\"kv\"] in plugin.toml but the component asks for []"),
        "{out}"
    );
    std::fs::write(&manifest, good).expect("write");
    // A fixture that does not hold fails the run and names the file and the reason.
    let fixture = crate_dir.join("fixtures/hello.toml");
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    std::fs::write(&fixture, text.replace("sender = \"ada@example.com\"", "sender = \"bob@example.com\""))
        .expect("write");
    let (ok, out) = {
        let _one = build_lock();
        plugdesk(&["plugin", "test"], &crate_dir)
    };
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAILED") && out.contains("hello.toml") && out.contains("expected \"bob@example.com\""),
        "{out}"
    );

    // Upload the built component and install it: its webhook makes tickets.
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/shop_chat.wasm")).expect("built component");
    let (status, plugin) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", wasm).await;
    assert_eq!((status, plugin["id"].as_str()), (StatusCode::CREATED, Some("shop-chat")), "{plugin}");
    let ch = install(&s, "shop-chat", json!([])).await;
    let body =
        json!({ "id": "42", "from": "ada@example.com", "name": "Ada", "text": "Where is my order?" }).to_string();
    let (status, answer) = hook(&s, ch, "", "application/json", &body).await;
    assert_eq!((status, answer["accepted"].as_i64()), (StatusCode::OK, Some(1)), "{answer}");
    let (_, t) = s.get(&format!("/api/v1/tickets/{}", answer["tickets"][0])).await;
    assert_eq!((t["channel"].as_str(), t["subject"].as_str()), (Some("shop-chat"), Some("Where is my order?")), "{t}");
}

#[tokio::test]
async fn automation_plugins_act_on_events_and_bad_answers_change_nothing() {
    let s = Server::start().await;
    let wasm = {
        static WASM: OnceLock<Vec<u8>> = OnceLock::new();
        WASM.get_or_init(|| build_test_plugin("triage", "")).clone()
    };
    let (status, plugin) = s.raw(Method::POST, "/api/v1/plugins", "application/wasm", wasm).await;
    assert_eq!((status, plugin["kind"].as_str()), (StatusCode::CREATED, Some("automation")), "{plugin}");
    assert_eq!(plugin["events"], json!(["ticket.created"]));
    assert_error(
        &s.post("/api/v1/channels", json!({ "plugin": "triage" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "is an automation, not a channel",
    );
    assert_error(
        &s.post("/api/v1/automations", json!({ "plugin": "webform" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "is a channel, not an automation",
    );
    let (status, auto) = s.post("/api/v1/automations", json!({ "plugin": "triage" })).await;
    assert_eq!((status, auto["events"].clone()), (StatusCode::CREATED, json!(["ticket.created"])), "{auto}");
    let id = auto["id"].as_i64().expect("id");

    // A refund request: priority, tag and a note, with the automation as the actor.
    let t = s.ticket("Geld zurück", "refund@example.com").await;
    let (status, _) =
        s.post(&format!("/api/v1/tickets/{}/notes", t["id"]), json!({ "body": "agent note, not a new ticket" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, refund) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Refund", "body": "I want a refund, please", "customer": { "email": "r@example.com" } }),
        )
        .await;
    let rid = refund["id"].as_i64().expect("id");
    let done =
        s.wait_for(&format!("/api/v1/tickets/{rid}"), Duration::from_secs(10), |t| t["priority"] == "high").await;
    assert_eq!(done["tags"], json!(["refund"]), "{done}");
    let (_, msgs) = s.get(&format!("/api/v1/tickets/{rid}/messages")).await;
    let note =
        msgs["items"].as_array().and_then(|m| m.iter().find(|m| m["direction"] == "internal")).cloned().expect("note");
    assert!(
        note["body"].as_str().unwrap_or("").contains("Refund request from r (normal tier, 1 open tickets)"),
        "{note}"
    );
    let (_, events) = s.get(&format!("/api/v1/tickets/{rid}/events")).await;
    assert!(
        events["items"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "ticket.updated" && e["actor"] == format!("automation:{id}")),
        "{events}"
    );

    // A bad answer is refused whole and recorded; a refusal too; the next good event works.
    let (_, bogus) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Bogus", "body": "bogus refund", "customer": { "email": "b@example.com" } }),
        )
        .await;
    let a = s
        .wait_for(&format!("/api/v1/automations/{id}"), Duration::from_secs(10), |a| a["last_error"].as_str().is_some())
        .await;
    assert!(a["last_error"].as_str().unwrap_or("").contains("unknown action \"teleport\""), "{a}");
    let (_, t) = s.get(&format!("/api/v1/tickets/{}", bogus["id"])).await;
    assert_eq!((t["priority"].as_str(), t["tags"].clone()), (Some("normal"), json!([])), "nothing applied: {t}");
    s.post(
        "/api/v1/tickets",
        json!({ "subject": "No", "body": "refuse this", "customer": { "email": "n@example.com" } }),
    )
    .await;
    s.wait_for(&format!("/api/v1/automations/{id}"), Duration::from_secs(10), |a| {
        a["last_error"].as_str().is_some_and(|e| e.contains("refused the event: this ticket is not for me"))
    })
    .await;
    let (_, hello) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Hi", "body": "hello there", "customer": { "email": "h@example.com" } }),
        )
        .await;
    let hid = hello["id"].as_i64().expect("id");
    let msgs = s
        .wait_for(&format!("/api/v1/tickets/{hid}/messages"), Duration::from_secs(10), |m| {
            m["items"].as_array().is_some_and(|m| m.iter().any(|m| m["direction"] == "outbound"))
        })
        .await;
    assert_eq!(
        (msgs["items"][1]["body"].as_str(), msgs["items"][1]["author_kind"].as_str()),
        (Some("Hello! We are on it."), Some("automation"))
    );
    let (_, t) = s.get(&format!("/api/v1/tickets/{hid}")).await;
    assert_eq!(
        (t["status"].as_str(), t["first_response_at"].is_null()),
        (Some("new"), true),
        "an automatic answer is not a first response: {t}"
    );
    let a =
        s.wait_for(&format!("/api/v1/automations/{id}"), Duration::from_secs(5), |a| a["last_error"].is_null()).await;
    assert_eq!(a["stats"]["calls"], 5, "one call per new ticket: {a}");
    assert_eq!(a["stats"]["errors"], 2, "{a}");
    let (_, metrics) = s.call(Method::GET, "/metrics", Some(support::METRICS_TOKEN), None).await;
    assert!(
        metrics.as_str().unwrap_or("").contains(&format!("plugdesk_automation_errors_total{{automation=\"{id}\"}} 2"))
    );

    // Disabled automations get nothing.
    let (status, off) = s.patch(&format!("/api/v1/automations/{id}"), json!({ "enabled": false })).await;
    assert_eq!((status, off["status"].as_str()), (StatusCode::OK, Some("disabled")));
    let (_, quiet) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Later", "body": "refund later", "customer": { "email": "l@example.com" } }),
        )
        .await;
    let (_, marker) = s
        .post("/api/v1/tickets", json!({ "subject": "Marker", "body": "x", "customer": { "email": "m@example.com" } }))
        .await;
    assert!(marker["id"].as_i64().is_some());
    // Once the dispatcher has passed the marker, it has passed the quiet ticket too.
    s.settled(Duration::from_secs(20)).await;
    let (_, t) = s.get(&format!("/api/v1/tickets/{}", quiet["id"])).await;
    assert_eq!(t["priority"], "normal", "{t}");
}

/// A server whose outbox and poller tick fast.
async fn fast_server() -> Server {
    let scratch = Scratch::new();
    scratch.config("[outbox]\nretry_base_ms = 40\ntick_ms = 20\npoll_tick_ms = 20\n");
    let token = scratch.init("default");
    Server::serve(scratch, token).await
}

async fn install_with(s: &Server, body: Value) -> i64 {
    let (status, ch) = s.post("/api/v1/channels", body).await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    ch["id"].as_i64().expect("id")
}

async fn post_hook(
    s: &Server,
    channel: i64,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().post(format!("{}/hooks/{channel}{path}", s.base)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("post hook");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn four_channels_share_one_customer_timeline_and_replies_go_back_out() {
    let telegram = mock_apis::TelegramMock::start("123:ABC");
    let twilio = mock_apis::TwilioMock::start("AC1", "twilio-token");
    let s = fast_server().await;
    let form = install_with(&s, json!({ "plugin": "webform" })).await;
    let chat =
        install_with(&s, json!({ "plugin": "webchat", "grants": ["kv"], "settings": { "title": "Hilfe" } })).await;
    let tg = install_with(
        &s,
        json!({
            "plugin": "telegram", "settings": { "api_base": telegram.base },
            "secrets": { "bot_token": "123:ABC", "webhook_secret": "wh-secret" },
            "grants": ["secrets", format!("http:{}", telegram.authority())],
        }),
    )
    .await;
    let sms = install_with(
        &s,
        json!({
            "plugin": "sms", "settings": { "api_base": twilio.base, "account_sid": "AC1", "from": "+4930123" },
            "secrets": { "auth_token": "twilio-token", "basic_auth": "AC1:twilio-token" },
            "grants": ["secrets", format!("http:{}", twilio.authority())],
        }),
    )
    .await;
    // The gateway signs the exact URL it posts to; it is known once the channel exists.
    let sms_url = format!("{}/hooks/{sms}", s.base);
    let (status, _) = s.patch(&format!("/api/v1/channels/{sms}"), json!({ "settings": { "api_base": twilio.base, "account_sid": "AC1", "from": "+4930123", "public_url": sms_url } })).await;
    assert_eq!(status, StatusCode::OK);

    // Ada writes through the contact form first; her other addresses are added to her record.
    let (status, answer) = hook(
        &s,
        form,
        "",
        "application/json",
        &json!({ "name": "Ada", "email": "ada@example.com", "message": "Formular" }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, list) = s.get("/api/v1/tickets?channel=webform").await;
    let customer = list["items"][0]["customer_id"].as_i64().expect("customer");
    for (kind, address) in [("telegram", "777"), ("phone", "+49 151 1234567")] {
        let (status, body) = s
            .post(&format!("/api/v1/customers/{customer}/identities"), json!({ "kind": kind, "address": address }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Webchat: the widget script, then a message with her e-mail address.
    let widget = reqwest::get(format!("{}/hooks/{chat}/widget.js", s.base)).await.expect("widget");
    assert_eq!(widget.status(), StatusCode::OK);
    assert!(widget.headers()["content-type"].to_str().unwrap_or("").starts_with("application/javascript"));
    assert!(widget.text().await.expect("js").contains("Hilfe"), "settings reach the widget");
    let session = "sess-1234abcd";
    let body =
        json!({ "session": session, "client_id": "c-00000001", "text": "Chat hier", "email": "ada@example.com" });
    let (status, text) =
        post_hook(&s, chat, "/messages", &[("content-type", "application/json")], body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // Telegram: a webhook update with the secret token; a wrong token is refused.
    let update = mock_apis::telegram_text_update(1, 777, 10, "Telegram hier").to_string();
    let (status, _) = post_hook(&s, tg, "", &[("x-telegram-bot-api-secret-token", "wrong")], update.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, text) = post_hook(
        &s,
        tg,
        "",
        &[("x-telegram-bot-api-secret-token", "wh-secret"), ("content-type", "application/json")],
        update,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // SMS: a signed gateway webhook; a bad signature is refused.
    let params = [
        ("MessageSid", "SM0001"),
        ("AccountSid", "AC1"),
        ("From", "+491511234567"),
        ("To", "+4930123"),
        ("Body", "SMS hier"),
        ("NumMedia", "0"),
    ];
    let (form_body, signature) = mock_apis::twilio_webhook("twilio-token", &sms_url, &params);
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let (status, _) = post_hook(&s, sms, "", &[ct, ("x-twilio-signature", "AAAA")], form_body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, twiml) = post_hook(&s, sms, "", &[ct, ("x-twilio-signature", &signature)], form_body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(twiml.contains("<Response></Response>"), "{twiml}");

    // One customer, one timeline across the four channels.
    let (_, timeline) = s.get(&format!("/api/v1/customers/{customer}/timeline")).await;
    let mut channels: Vec<&str> =
        timeline["items"].as_array().expect("items").iter().filter_map(|m| m["channel"].as_str()).collect();
    channels.sort_unstable();
    assert_eq!(channels, ["sms", "telegram", "webchat", "webform"], "{timeline}");

    // Replies go back out through the channel each ticket came in by.
    let ticket_of = |channel: &'static str| {
        let s = &s;
        async move {
            let (_, l) = s.get(&format!("/api/v1/tickets?channel={channel}")).await;
            l["items"][0]["id"].as_i64().expect("ticket")
        }
    };
    let mut replies = Vec::new();
    for channel in ["telegram", "sms", "webchat", "webform"] {
        let t = ticket_of(channel).await;
        let (status, reply) =
            s.post(&format!("/api/v1/tickets/{t}/reply"), json!({ "body": format!("Antwort per {channel}") })).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        replies.push((channel, t, reply));
    }
    for (channel, t, reply) in &replies {
        let id = reply["id"].as_i64().expect("id");
        if *channel == "webform" {
            assert!(reply["delivery_status"].is_null(), "a contact form cannot answer: {reply}");
            continue;
        }
        let sent = delivery(&s, *t, id, "sent").await;
        assert!(sent["external_id"].as_str().is_some(), "{sent}");
    }
    let tg_sent = telegram.sent();
    assert_eq!(tg_sent.len(), 1);
    assert_eq!(
        (tg_sent[0].request["chat_id"].as_i64(), tg_sent[0].request["text"].as_str()),
        (Some(777), Some("Antwort per telegram"))
    );
    assert_eq!(tg_sent[0].request["reply_parameters"]["message_id"], 10, "threaded under her message");
    let sms_sent = twilio.sent();
    assert_eq!(sms_sent.len(), 1);
    assert_eq!(
        (sms_sent[0].to.as_str(), sms_sent[0].from.as_str(), sms_sent[0].body.as_str()),
        ("+491511234567", "+4930123", "Antwort per sms")
    );
    let polled =
        reqwest::get(format!("{}/hooks/{chat}/messages?session={session}&after=0", s.base)).await.expect("poll");
    let polled: Value = polled.json().await.expect("json");
    assert_eq!(polled["messages"][0]["text"], "Antwort per webchat", "{polled}");

    // The form cannot answer, but the agent may answer through another of her channels; a
    // channel that cannot reach her is refused, and nothing is stored.
    let form_ticket = ticket_of("webform").await;
    let path = format!("/api/v1/tickets/{form_ticket}/reply");
    let (status, refused) = s.post(&path, json!({ "body": "Nirgendwohin", "reply_channel_id": 999_999 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.to_string().contains("cannot reach"), "{refused}");
    let (status, reply) = s.post(&path, json!({ "body": "Antwort per SMS", "reply_channel_id": sms })).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    delivery(&s, form_ticket, reply["id"].as_i64().expect("id"), "sent").await;
    let sms_sent = twilio.sent();
    assert_eq!(sms_sent.len(), 2, "{sms_sent:?}");
    assert_eq!((sms_sent[1].to.as_str(), sms_sent[1].body.as_str()), ("+491511234567", "Antwort per SMS"));
    let (_, messages) = s.get(&format!("/api/v1/tickets/{form_ticket}/messages")).await;
    assert!(!messages.to_string().contains("Nirgendwohin"), "the refused reply was not stored: {messages}");

    // A gateway that is down is retried; a refusal is a dead letter with the gateway's reason.
    twilio.fail_next(500, 1);
    let t = ticket_of("sms").await;
    let (_, reply) = s.post(&format!("/api/v1/tickets/{t}/reply"), json!({ "body": "Zweiter Versuch" })).await;
    delivery(&s, t, reply["id"].as_i64().expect("id"), "sent").await;
    twilio.fail_next(400, 1);
    let (_, reply) = s.post(&format!("/api/v1/tickets/{t}/reply"), json!({ "body": "Ungültig" })).await;
    let failed = delivery(&s, t, reply["id"].as_i64().expect("id"), "failed").await;
    assert!(failed["delivery_error"].as_str().unwrap_or("").contains("21211"), "{failed}");
}

#[tokio::test]
async fn a_plugin_in_the_plugins_dir_loads_only_when_its_manifest_matches() {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    let manifest = |version: &str| {
        format!(
            "id = \"relay\"\nversion = \"{version}\"\nwit_version = \"0.2.0\"\nkind = \"channel\"\ncapabilities = [\"secrets\", \"http\", \"tcp\"]\n"
        )
    };
    std::fs::write(dir.join("relay.wasm"), relay_wasm(false)).expect("write plugin");
    std::fs::write(dir.join("relay.toml"), manifest("9.9.9")).expect("write manifest");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let (status, _) = s.get("/api/v1/plugins/relay").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a plugin whose manifest disagrees is not loaded");
    let (scratch, token) = s.stop();
    std::fs::write(scratch.dir.join("plugins/relay.toml"), manifest("0.1.0")).expect("write manifest");
    let s = Server::serve(scratch, token).await;
    let (status, relay) = s.get("/api/v1/plugins/relay").await;
    assert_eq!((status, relay["versions"][0]["source"].as_str()), (StatusCode::OK, Some("directory")), "{relay}");
}

/// Regression (#3): five anonymous 16 MB form posts ran `webform` out of fuel, suspended the
/// channel (customers then got 503) and stored each body; now a body over the channel's limit
/// is answered 413 before the plugin runs, recorded without its body, and never counts
/// towards suspension.
#[tokio::test]
async fn oversized_posts_are_refused_unread_and_never_suspend_a_channel() {
    let s = server_with_hostile().await;
    let form = install(&s, "webform", json!([])).await;
    let (_, ch) = s.get(&format!("/api/v1/channels/{form}")).await;
    assert_eq!(ch["max_request_bytes"], 65536, "a form is not an upload: {ch}");

    let big = json!({ "email": "flood@example.com", "message": "x".repeat(300_000) }).to_string();
    for _ in 0..6 {
        let got = hook(&s, form, "", "application/json", &big).await;
        assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "limit of 65536 bytes");
        assert!(got.1["error"]["message"].as_str().unwrap_or("").contains("max_request_bytes"), "{}", got.1);
        assert!(got.1["error"]["payload_id"].is_i64(), "{}", got.1);
    }
    let (_, ch) = s.get(&format!("/api/v1/channels/{form}")).await;
    assert_eq!((ch["status"].as_str(), ch["stats"]["calls"].as_i64()), (Some("active"), Some(0)), "{ch}");
    // Each refusal is a small record: who was refused and why, not the 300 KB.
    let (_, payloads) = s.get(&format!("/api/v1/channels/{form}/payloads")).await;
    let items = payloads["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 6, "{payloads}");
    assert!(items.iter().all(|p| p["status"] == "rejected" && p["size"] == 0), "{payloads}");
    let stored = s
        .scratch
        .sql(&format!("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM inbound_payloads WHERE channel_id = {form}"));
    assert_eq!(stored, "0");
    // Real customers still get through.
    let (status, body) =
        hook(&s, form, "", "application/json", &json!({ "email": "real@example.com", "message": "Hallo" }).to_string())
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The limit is the admin's to set, within the server's body limit; a bad value changes nothing.
    for bad in [json!(0), json!(17 << 20)] {
        assert_error(
            &s.patch(&format!("/api/v1/channels/{form}"), json!({ "max_request_bytes": bad })).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "max_request_bytes must be 1-16777216 bytes",
        );
    }
    let (_, ch) = s.get(&format!("/api/v1/channels/{form}")).await;
    assert_eq!(ch["max_request_bytes"], 65536, "{ch}");

    // Requests over what the kind usually takes, let in by the admin, that use up the call's
    // budget are the request's doing: five in a row do not suspend the channel.
    let heavy = install_with(&s, json!({ "plugin": "hostile", "max_request_bytes": 4 << 20 })).await;
    let body = "x".repeat(1_500_000);
    for _ in 0..5 {
        let (status, answer) = hook(&s, heavy, "/loop", "text/plain", &body).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
        assert_eq!(answer["error"]["code"], "plugin_failed", "{answer}");
    }
    let (_, ch) = s.get(&format!("/api/v1/channels/{heavy}")).await;
    assert_eq!(ch["status"], "active", "{ch}");
    let (status, fine) = hook(&s, heavy, "/fine", "text/plain", "x").await;
    assert_eq!((status, fine.as_str()), (StatusCode::OK, Some("fine: /fine")));
}

/// A hook post from `forwarded_for` (through the loopback proxy the test server trusts):
/// status, `Retry-After` and body.
async fn post_from(s: &Server, channel: i64, forwarded_for: &str, n: usize) -> (StatusCode, Option<u64>, Value) {
    let body = json!({ "email": format!("c{n}@example.com"), "message": format!("Nachricht {n}") });
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/{channel}", s.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&body)
        .send()
        .await
        .expect("post hook");
    let status = resp.status();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// Regression (#3, #14): one client could post to a public hook, or load survey pages, as fast
/// as it liked — every hook post a stored row and a plugin call. Now each address and each
/// channel has a token bucket: 429 with `Retry-After`, nothing stored.
#[tokio::test]
async fn hooks_and_survey_pages_answer_429_per_address_and_per_channel() {
    let scratch = Scratch::new();
    scratch.config("[channels]\nhook_per_address_per_second = 0.01\nhook_per_address_burst = 3\nhook_per_channel_per_second = 0.01\nhook_per_channel_burst = 6\nsurvey_per_address_per_second = 0.01\nsurvey_per_address_burst = 2\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let form = install(&s, "webform", json!([])).await;
    let stored = || async {
        let (_, p) = s.get(&format!("/api/v1/channels/{form}/payloads")).await;
        p["items"].as_array().map(Vec::len).unwrap_or(0)
    };

    for n in 0..3 {
        let (status, _, body) = post_from(&s, form, "203.0.113.1", n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, retry, body) = post_from(&s, form, "203.0.113.1", 3).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("from this address"), "{body}");
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After: {retry:?}");
    assert_eq!(stored().await, 3, "a refused request is not stored");
    // Another address has its own bucket; a client-written address left of the proxy's counts not.
    for n in 4..7 {
        let (status, _, body) = post_from(&s, form, &format!("198.51.100.{n}, 203.0.113.2"), n).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The channel's own bucket (6) is empty now, whoever asks.
    let (status, retry, body) = post_from(&s, form, "203.0.113.3", 7).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("to this channel"), "{body}");
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After: {retry:?}");
    assert_eq!(stored().await, 6);

    // The public survey page: two looks, then 429, for the page and for answers alike.
    let client = reqwest::Client::new();
    let page = format!("{}/survey/{}", s.base, "0".repeat(32));
    for _ in 0..2 {
        let r = client.get(&page).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let r = client.get(&page).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let r = client.post(&page).json(&json!({ "rating": 5 })).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
}

/// Regression (#13): stored inbound payloads kept credentials from the request's headers
/// (Authorization, cookies, messenger secret tokens, gateway signatures) in clear text.
#[tokio::test]
async fn stored_payloads_keep_no_credentials_from_headers() {
    let s = Server::start().await;
    let form = install(&s, "webform", json!([])).await;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer live-credential-1"),
        ("cookie", "session=live-credential-2"),
        ("x-telegram-bot-api-secret-token", "live-credential-3"),
        ("x-twilio-signature", "live-credential-4"),
        ("x-shop-password", "live-credential-5"),
        ("x-request-id", "keep-me"),
    ];
    // One accepted (stored with its ticket), one refused by the plugin (stored on its own).
    let good = json!({ "email": "ann@example.com", "message": "Hallo" }).to_string();
    let (status, text) = post_hook(&s, form, "", &headers, good).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = post_hook(&s, form, "", &headers, "{\"email\": \"nope\"}".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");

    let (_, payloads) = s.get(&format!("/api/v1/channels/{form}/payloads")).await;
    let items = payloads["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2, "{payloads}");
    for p in &items {
        let stored: Vec<(String, String)> = serde_json::from_value(p["headers"].clone()).expect("headers");
        let value = |name: &str| stored.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        for (name, _) in &headers[1..6] {
            assert_eq!(value(name), Some("[masked]"), "{name}: {p}");
        }
        assert_eq!(value("x-request-id"), Some("keep-me"), "{p}");
        assert_eq!(value("content-type"), Some("application/json"), "{p}");
    }
    let leaked = s.scratch.sql("SELECT COUNT(*) FROM inbound_payloads WHERE headers LIKE '%live-credential%'");
    assert_eq!(leaked, "0");
}

/// A byte string as an SQL literal of the scratch's database.
fn blob(scratch: &Scratch, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match scratch.database_url {
        Some(_) => format!("decode('{hex}', 'hex')"),
        None => format!("X'{hex}'"),
    }
}

/// Inserts a `received` payload as a node leaves it when it dies between storing a batch (with
/// its cursor) and delivering it: its lease has run out.
fn leave_received(scratch: &Scratch, channel: i64, body: &[u8]) {
    let ws = scratch.sql(&format!("SELECT workspace_id FROM channels WHERE id = {channel}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    scratch.sql(&format!(
        "INSERT INTO inbound_payloads (workspace_id, channel_id, received_at, method, path, query, headers, body, size, status, attempts, locked_until) VALUES ({ws}, {channel}, {now}, 'POLL', '', '', '[]', {}, {}, 'received', 0, {})",
        blob(scratch, body),
        body.len(),
        now - 1,
    ));
}

/// Regression (#9): a poll's batch commits with its cursor and is delivered afterwards; when
/// the node died in between, nothing ever delivered it (the mailbox had moved on). Now the
/// delivery worker of the next node to run takes it over, retries failures with backoff and
/// lists attempts and the last error.
#[tokio::test]
async fn a_batch_left_received_by_a_dead_node_is_delivered_after_restart() {
    let scratch = Scratch::new();
    scratch.config("[channels]\ndelivery_retry_base_ms = 100\ndelivery_max_attempts = 2\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let form = install(&s, "webform", json!([])).await;
    let (scratch, token) = s.stop();

    let message = |id: &str, from: &str, subject: &str| {
        json!({
            "external_id": id, "conversation": null, "sender_kind": "email", "sender_address": from,
            "sender_name": null, "subject": subject, "text": format!("Text von {from}"), "html": null,
            "automatic": false, "attachments": [],
        })
    };
    let batch = json!([
        message("crash-1", "cara@example.com", "Nach dem Absturz"),
        message("crash-2", "dora@example.com", "Auch angekommen?"),
    ]);
    leave_received(&scratch, form, batch.to_string().as_bytes());
    // A batch whose delivery fails (it cannot be read): retried, then failed with the reason.
    leave_received(&scratch, form, b"not a stored batch");

    let s = Server::serve(scratch, token).await;
    let v = s
        .wait_for("/api/v1/tickets?channel=webform", Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let subjects: Vec<&str> =
        v["items"].as_array().expect("items").iter().filter_map(|t| t["subject"].as_str()).collect();
    assert!(subjects.contains(&"Nach dem Absturz") && subjects.contains(&"Auch angekommen?"), "{v}");
    let payloads = s
        .wait_for(&format!("/api/v1/channels/{form}/payloads"), Duration::from_secs(20), |v| {
            v["items"].as_array().is_some_and(|p| p.iter().all(|p| p["status"] != "received"))
        })
        .await;
    let items = payloads["items"].as_array().expect("items").clone();
    let (broken, delivered) = (&items[0], &items[1]);
    assert_eq!(
        (delivered["status"].as_str(), delivered["attempts"].as_i64()),
        (Some("processed"), Some(1)),
        "{payloads}"
    );
    assert_eq!(delivered["result"]["tickets"].as_array().map(Vec::len), Some(2), "{payloads}");
    assert_eq!((broken["status"].as_str(), broken["attempts"].as_i64()), (Some("failed"), Some(2)), "{payloads}");
    assert!(broken["error"].as_str().unwrap_or("").contains("delivery attempt 2"), "{payloads}");
}

/// Regression (#3): every stored request was kept for ever (16 MB posts added ≈130 MB that
/// nothing cleaned). Now processed and rejected payloads expire, and a channel over its storage
/// budget loses its oldest rejected, then processed ones — never those still to be processed.
#[tokio::test]
async fn stored_payloads_expire_and_a_channel_keeps_within_its_storage_budget() {
    let scratch = Scratch::new();
    scratch.config("[channels]\nmax_stored_bytes_per_channel = 1000\ncleanup_interval_ms = 100\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let form = install(&s, "webform", json!([])).await;

    let (status, _) = hook(&s, form, "", "text/plain", &"x".repeat(70_000)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = hook(&s, form, "", "application/json", "{\"email\": \"nope\", \"message\": \"x\"}").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for n in 0..6 {
        let body = json!({ "email": format!("c{n}@example.com"), "message": format!("{n}{}", "m".repeat(200)) });
        let (status, answer) = hook(&s, form, "", "application/json", &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let path = format!("/api/v1/channels/{form}/payloads");
    let total = |v: &Value| v["items"].as_array().map(|p| p.iter().filter_map(|p| p["size"].as_i64()).sum::<i64>());
    let v = s
        .wait_for(&path, Duration::from_secs(20), |v| {
            total(v).is_some_and(|t| t <= 1000)
                && v["items"].as_array().is_some_and(|p| p.iter().all(|p| p["status"] != "rejected"))
        })
        .await;
    let items = v["items"].as_array().expect("items").clone();
    let processed = items.iter().filter(|p| p["status"] == "processed").count();
    assert!((1..6).contains(&processed), "the oldest processed went, the newest stayed: {v}");
    assert!(items.iter().any(|p| p["status"] == "failed"), "a failed request waits for its admin: {v}");
    let (_, tickets) = s.get("/api/v1/tickets?channel=webform").await;
    assert_eq!(tickets["items"].as_array().map(Vec::len), Some(6), "tickets keep their messages");

    // Age: a processed payload older than 30 days and a rejected one older than 7 go; a failed
    // one stays, however old.
    let (scratch, token) = s.stop();
    let ws = scratch.sql(&format!("SELECT workspace_id FROM channels WHERE id = {form}"));
    let day: i64 = 24 * 60 * 60 * 1000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for (status, age) in [("processed", 31 * day), ("rejected", 8 * day), ("failed", 100 * day)] {
        scratch.sql(&format!(
            "INSERT INTO inbound_payloads (workspace_id, channel_id, received_at, method, path, query, headers, body, size, status, attempts) VALUES ({ws}, {form}, {}, 'POST', '/old', '', '[]', {}, 1, '{status}', 1)",
            now - age,
            blob(&scratch, b"x"),
        ));
    }
    let s = Server::serve(scratch, token).await;
    s.wait_for(&path, Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|p| {
            let old: Vec<&str> = p.iter().filter(|p| p["size"] == 1).filter_map(|p| p["status"].as_str()).collect();
            old == ["failed"]
        })
    })
    .await;
}

/// A relay server whose `plugdesk.toml` is exactly `config` (no loopback allow-list unless it
/// says so).
async fn relay_server_with(config: &str) -> Server {
    let scratch = Scratch::new();
    let dir = scratch.dir.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    std::fs::write(dir.join("relay.wasm"), relay_wasm(false)).expect("write plugin");
    std::fs::write(scratch.dir.join("plugdesk.toml"), config).expect("write config");
    let token = scratch.init("default");
    Server::serve(scratch, token).await
}

/// Regression (#11, SSRF): a workspace admin could grant a plugin `http:`/`tcp:` to loopback
/// or private addresses and make the server call them; only the operator may allow that now,
/// checked on the address actually connected to.
#[tokio::test]
async fn plugins_cannot_reach_internal_addresses_unless_the_operator_allows_them() {
    let remote = Remote::start().await;
    let listener = support::CountingListener::start(false);
    let port = listener.port;
    let s = relay_server_with("[outbox]\npoll_tick_ms = 20\n").await;

    // TCP: refused before any connection is made.
    let (status, ch) =
        s.post("/api/v1/channels", json!({ "plugin": "relay", "grants": [format!("tcp:127.0.0.1:{port}")] })).await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let tcp = ch["id"].as_i64().expect("id");
    assert_error(
        &s.call(Method::GET, &format!("/hooks/{tcp}/tcp?port={port}"), None, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "outbound connections to loopback address 127.0.0.1 are not allowed; an operator may allow it with [network] allow in plugdesk.toml",
    );

    // HTTP: an IP-literal feed and a name that resolves to loopback are both refused.
    let remote_port = remote.authority().rsplit(':').next().unwrap_or_default().to_owned();
    let mut last_errors = Vec::new();
    for host in ["127.0.0.1", "localhost"] {
        let (status, ch) = s
            .post(
                "/api/v1/channels",
                json!({ "plugin": "relay", "grants": [format!("http:{host}:{remote_port}")], "poll_interval_ms": 100,
                        "settings": { "feed": format!("http://{host}:{remote_port}/feed") } }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ch}");
        let ch = s
            .wait_for(&format!("/api/v1/channels/{}", ch["id"]), Duration::from_secs(10), |c| {
                c["last_error"].is_string()
            })
            .await;
        last_errors.push(ch["last_error"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        last_errors[0].contains("outbound connections to loopback address 127.0.0.1 are not allowed"),
        "{last_errors:?}"
    );
    assert!(
        last_errors[1].contains("outbound connections to loopback address")
            && last_errors[1].contains("(localhost resolves to it)"),
        "{last_errors:?}"
    );
    assert!(remote.feed_calls().is_empty(), "the feed was reached: {:?}", remote.feed_calls());
    assert_eq!(listener.accepts(), 0, "no connection reached the TCP listener");
}

/// Regression (#11): hooks ran unbounded plugin calls at once; beyond `max_plugin_calls` a hook
/// waits `plugin_call_wait_ms`, then gets 503 with Retry-After and nothing is stored.
#[tokio::test]
async fn hooks_beyond_the_plugin_call_cap_get_503_with_retry_after() {
    let listener = support::CountingListener::start(false);
    let port = listener.port;
    let s = relay_server_with(&format!(
        "[server]\nmax_plugin_calls = 1\nplugin_call_wait_ms = 50\n{}",
        support::LOOPBACK_ALLOWED
    ))
    .await;
    let (status, ch) =
        s.post("/api/v1/channels", json!({ "plugin": "relay", "grants": [format!("tcp:127.0.0.1:{port}")] })).await;
    assert_eq!(status, StatusCode::CREATED, "{ch}");
    let id = ch["id"].as_i64().expect("id");
    // The first call holds the only slot: it waits on a listener that never answers.
    let base = s.base.clone();
    let first = tokio::spawn(async move {
        reqwest::Client::new().get(format!("{base}/hooks/{id}/tcp?port={port}")).send().await.map(|r| r.status())
    });
    listener.wait_accepts(1, Duration::from_secs(10)).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/{id}", s.base))
        .body(r#"{"id":"m-1","from":"anna","text":"Hallo"}"#)
        .send()
        .await
        .expect("post hook");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("retry"), "{body}");
    let (_, payloads) = s.get(&format!("/api/v1/channels/{id}/payloads")).await;
    assert_eq!(payloads["items"].as_array().map(Vec::len), Some(0), "nothing stored: {payloads}");
    // The slot comes back when the first call ends (its read times out).
    assert!(first.await.expect("first call").is_ok());
    let (status, _) = hook(&s, id, "", "application/json", r#"{"id":"m-2","from":"anna","text":"Hallo"}"#).await;
    assert_eq!(status, StatusCode::OK);
}
