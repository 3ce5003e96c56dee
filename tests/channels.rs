//! End-to-end tests of channels: the bundled `webform` plugin and a hostile test plugin
//! (built here from `tests/plugins/hostile` for wasm32-wasip2), running in the real server.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Scratch, Server, assert_error};

/// Builds the hostile plugin once per test binary and returns its component bytes.
fn hostile_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf();
        let target = root.join("target").join("wasm");
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("tests/plugins/hostile/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("run cargo for the hostile plugin");
        assert!(status.success(), "building tests/plugins/hostile failed");
        std::fs::read(target.join("wasm32-wasip2/release/hostile.wasm")).expect("read hostile.wasm")
    })
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

    for (path, needle) in [("/alloc", "memory"), ("/trap", "crashed"), ("/big", "more than the limit")] {
        let (status, body) = hook(&s, b, path, "text/plain", "x").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {msg}");
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
    let (_, metrics) = s.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains(&format!("plugdesk_channel_errors_total{{channel=\"{b}\"}} 8")), "{text}");
}
