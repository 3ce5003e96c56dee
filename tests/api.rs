//! End-to-end tests of the core API: each test starts the real `plugdesk` binary on a fresh
//! database (SQLite, or PostgreSQL when `DATABASE_URL` is set) and talks HTTP to it.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Scratch, Server, assert_error};

fn ids(items: &Value) -> Vec<i64> {
    items.as_array().map(|a| a.iter().filter_map(|t| t["id"].as_i64()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn init_prints_the_token_last_and_adds_workspaces_beside_the_first() {
    let scratch = Scratch::new();
    let first = scratch.init("default");
    assert!(first.starts_with("pd_") && first.len() == 67, "{first}");
    let second = scratch.init("acme");
    assert_ne!(first, second);
    let again = scratch.command(&["init", "--workspace", "acme"]).output().expect("run init");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("workspace \"acme\" exists already"));
    let bad = scratch.command(&["init", "--workspace", "Not Valid"]).output().expect("run init");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be 1-64 characters"));
    let server = Server::serve(scratch, first).await;
    let (status, me) = server.call(Method::GET, "/api/v1/me", Some(&second), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, me_first) = server.get("/api/v1/me").await;
    assert_ne!(me["workspace_id"], me_first["workspace_id"]);
    assert_eq!(me["role"], "admin");
}

/// Regression: log lines written to a pipe or a file carried ANSI colour codes, which an MTA
/// keeps in its logs and bounces (`mail-in`); colour is for a terminal only.
#[tokio::test]
async fn logs_to_a_pipe_are_plain_text() {
    let scratch = Scratch::new();
    let out =
        scratch.command(&["init", "--workspace", "plain"]).env("PLUGDESK_LOG", "info").output().expect("run init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("database migrated"), "{log}");
    assert!(!log.contains('\x1b'), "no escape codes: {log:?}");
}

#[tokio::test]
async fn serve_on_a_fresh_data_dir_creates_a_workspace_and_prints_its_token() {
    let scratch = Scratch::new();
    let server = Server::serve(scratch, String::new()).await;
    let line = server.stdout_lines.iter().find(|l| l.contains("Admin API token")).expect("token line");
    let token = line.rsplit(' ').next().expect("token").to_owned();
    let (status, _) = server.call(Method::GET, "/api/v1/tickets", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, health) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, _) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_ticket_is_created_read_and_found() {
    let s = Server::start().await;
    let (status, t) = s
        .post("/api/v1/tickets", json!({ "subject": "Paket nicht angekommen", "body": "Meine Bestellung 4711 ist seit einer Woche unterwegs.", "customer": { "email": "Jürgen.Müller@Example.de", "name": "Jürgen Müller" } }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["number"], 1);
    assert_eq!(t["status"], "new");
    let id = t["id"].as_i64().expect("id");
    let (status, got) = s.get(&format!("/api/v1/tickets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["subject"], "Paket nicht angekommen");
    let kinds: Vec<&str> = got["sla"].as_array().expect("sla").iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 2, "{got}");
    assert!(kinds.contains(&"first_response") && kinds.contains(&"resolution"));
    // Found by subject, by a word of the body, and by a stemmed form.
    for q in ["Paket", "Bestellung", "unterwegs", "Pakete"] {
        let (status, hits) = s.get(&format!("/api/v1/search?q={q}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(hits["items"].as_array().expect("items").iter().any(|h| h["ticket_id"] == id), "{q}: {hits}");
    }
    let (_, hits) = s.get("/api/v1/search?q=Müller").await;
    assert!(hits["items"].as_array().expect("items").iter().any(|h| h["kind"] == "customer"), "{hits}");
    let (_, none) = s.get("/api/v1/search?q=zebra").await;
    assert_eq!(none["items"], json!([]));
    // The second ticket of the same address lands on the same customer, with number 2.
    let (_, t2) = s.post("/api/v1/tickets", json!({ "subject": "Noch eine Frage", "body": "Hallo", "customer": { "email": "jürgen.müller@example.de" } })).await;
    assert_eq!(t2["customer_id"], t["customer_id"]);
    assert_eq!(t2["number"], 2);
}

#[tokio::test]
async fn search_rejects_empty_queries_and_survives_query_syntax() {
    let s = Server::start().await;
    s.ticket("Refund for order (123)", "a@example.com").await;
    assert_error(&s.get("/api/v1/search?q=%22%2A%28").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "no words");
    let (status, hits) = s.get("/api/v1/search?q=refund%20%22order%29%2A").await;
    assert_eq!(status, StatusCode::OK, "{hits}");
    assert_eq!(hits["items"].as_array().map(Vec::len), Some(2), "{hits}");
    assert_error(&s.get("/api/v1/search").await, StatusCode::BAD_REQUEST, "bad_query", "q");
}

#[tokio::test]
async fn bad_json_is_answered_precisely() {
    let s = Server::start().await;
    let malformed = s.raw(Method::POST, "/api/v1/tickets", "application/json", b"{\"subject\": ".to_vec()).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "malformed_json", "not valid JSON");
    let unknown = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "a", "body": "b", "customer": { "email": "a@example.com" }, "colour": "red" }),
        )
        .await;
    assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_json", "unknown field `colour`");
    let wrong_type =
        s.post("/api/v1/tickets", json!({ "subject": 5, "body": "b", "customer": { "email": "a@example.com" } })).await;
    assert_error(&wrong_type, StatusCode::UNPROCESSABLE_ENTITY, "invalid_json", "subject");
    let not_json = s.raw(Method::POST, "/api/v1/tickets", "text/plain", b"hello".to_vec()).await;
    assert_error(&not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Content-Type");
    let empty_subject = s
        .post("/api/v1/tickets", json!({ "subject": "  ", "body": "b", "customer": { "email": "a@example.com" } }))
        .await;
    assert_error(&empty_subject, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "subject must not be empty");
    let bad_email = s
        .post("/api/v1/tickets", json!({ "subject": "a", "body": "b", "customer": { "email": "not-an-address" } }))
        .await;
    assert_error(&bad_email, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "is not an e-mail address");
    let no_customer = s.post("/api/v1/tickets", json!({ "subject": "a", "body": "b", "customer": {} })).await;
    assert_error(&no_customer, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "at least one identity");
    assert_error(&s.get("/api/v1/tickets/abc").await, StatusCode::BAD_REQUEST, "bad_path", "whole numbers");
    assert_error(&s.get("/api/v1/tickets?colour=red").await, StatusCode::BAD_REQUEST, "bad_query", "colour");
    assert_error(
        &s.get("/api/v1/tickets?sort=priority").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "cannot sort by",
    );
    assert_error(
        &s.get("/api/v1/tickets?cursor=zzz").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "cursor is malformed",
    );
    assert_error(&s.get("/api/v1/nothing-here").await, StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    assert_error(
        &s.call(Method::DELETE, "/api/v1/tickets", Some(&s.token), None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method",
    );
    // Nothing of the above was written.
    let (_, list) = s.get("/api/v1/tickets").await;
    assert_eq!(list["items"], json!([]));
    let (_, customers) = s.get("/api/v1/customers").await;
    assert_eq!(customers["items"], json!([]));
}

#[tokio::test]
async fn oversized_bodies_and_attachments_are_refused() {
    let scratch = Scratch::new();
    scratch.config("[limits]\nmax_body_bytes = 65536\nmax_attachment_bytes = 1000\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let huge = json!({ "subject": "big", "body": "x".repeat(100_000), "customer": { "email": "a@example.com" } });
    assert_error(
        &s.post("/api/v1/tickets", huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "65536 bytes",
    );
    let big_file = json!({ "subject": "file", "body": "see attachment", "customer": { "email": "a@example.com" },
        "attachments": [{ "filename": "scan.pdf", "content_type": "application/pdf", "data": base64(&vec![7u8; 2000]) }] });
    assert_error(
        &s.post("/api/v1/tickets", big_file).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "larger than the limit of 1000 bytes",
    );
    let bad_b64 = json!({ "subject": "file", "body": "see attachment", "customer": { "email": "a@example.com" },
        "attachments": [{ "filename": "a.txt", "data": "%%%" }] });
    assert_error(
        &s.post("/api/v1/tickets", bad_b64).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "not valid base64",
    );
    let (_, list) = s.get("/api/v1/tickets").await;
    assert_eq!(list["items"], json!([]), "nothing may be stored");
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn subject_body_and_query_limits_are_enforced() {
    let scratch = Scratch::new();
    scratch.config("[limits]\nmax_subject_chars = 20\nmax_message_bytes = 100\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let long_subject = json!({ "subject": "s".repeat(21), "body": "b", "customer": { "email": "l@example.com" } });
    assert_error(
        &s.post("/api/v1/tickets", long_subject).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "longer than 20 characters",
    );
    let long_body = json!({ "subject": "ok", "body": "b".repeat(101), "customer": { "email": "l@example.com" } });
    assert_error(
        &s.post("/api/v1/tickets", long_body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "larger than 100 bytes",
    );
    let t = s.ticket("ok", "l@example.com").await;
    let reply = s.post(&format!("/api/v1/tickets/{}/reply", t["id"]), json!({ "body": "r".repeat(101) })).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "larger than 100 bytes");
    let q = "w".repeat(201);
    assert_error(
        &s.get(&format!("/api/v1/search?q={q}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "longer than 200 characters",
    );
    let (_, msgs) = s.get(&format!("/api/v1/tickets/{}/messages", t["id"])).await;
    assert_eq!(msgs["items"].as_array().map(Vec::len), Some(1), "the refused reply was not stored");
}

#[tokio::test]
async fn attachments_are_stored_once_by_hash_and_served_back() {
    let s = Server::start().await;
    let att = json!([{ "filename": "hello.txt", "content_type": "text/plain", "data": base64(b"hello agent") }]);
    let (_, t) = s.post("/api/v1/tickets", json!({ "subject": "with file", "body": "see file", "customer": { "email": "f@example.com" }, "attachments": att })).await;
    let id = t["id"].as_i64().expect("id");
    let (status, m) = s
        .post(&format!("/api/v1/tickets/{id}/messages"), json!({ "body": "same file again", "attachments": att }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let (_, msgs) = s.get(&format!("/api/v1/tickets/{id}/messages")).await;
    let items = msgs["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let a0 = &items[0]["attachments"][0];
    let a1 = &items[1]["attachments"][0];
    assert_eq!(a0["id"], a1["id"], "same content is stored once");
    assert_eq!(a0["size"], 11);
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/attachments/{}", s.base, a0["id"]))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"hello agent");
}

#[tokio::test]
async fn tokens_are_checked_and_workspaces_do_not_see_each_other() {
    let scratch = Scratch::new();
    let admin = scratch.init("default");
    let other = scratch.init("acme");
    let s = Server::serve(scratch, admin).await;
    let t = s.ticket("Private matter", "p@example.com").await;
    let id = t["id"].as_i64().expect("id");
    assert_error(
        &s.call(Method::GET, "/api/v1/tickets", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing Authorization",
    );
    assert_error(
        &s.call(Method::GET, "/api/v1/tickets", Some("pd_nope"), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown or revoked",
    );
    // Another workspace's token: 404 on the record, nothing in lists or search.
    assert_error(
        &s.call(Method::GET, &format!("/api/v1/tickets/{id}"), Some(&other), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "ticket not found",
    );
    assert_error(
        &s.call(Method::PATCH, &format!("/api/v1/tickets/{id}"), Some(&other), Some(json!({ "status": "open" }))).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "ticket",
    );
    assert_error(
        &s.call(Method::GET, &format!("/api/v1/customers/{}", t["customer_id"]), Some(&other), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "customer",
    );
    let (_, list) = s.call(Method::GET, "/api/v1/tickets", Some(&other), None).await;
    assert_eq!(list["items"], json!([]));
    let (_, hits) = s.call(Method::GET, "/api/v1/search?q=private", Some(&other), None).await;
    assert_eq!(hits["items"], json!([]));
    // Same identity in the other workspace is a different customer.
    let (_, t2) = s
        .call(
            Method::POST,
            "/api/v1/tickets",
            Some(&other),
            Some(json!({ "subject": "x", "body": "y", "customer": { "email": "p@example.com" } })),
        )
        .await;
    assert_ne!(t2["customer_id"], t["customer_id"]);
    assert_eq!(t2["number"], 1, "numbers count per workspace");

    // An agent token may work tickets but not change configuration.
    let (status, agent) =
        s.post("/api/v1/agents", json!({ "name": "Ada", "email": "ada@example.com", "skills": ["billing"] })).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, tok) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "ada laptop" })).await;
    assert_eq!(status, StatusCode::CREATED, "{tok}");
    assert_eq!(tok["role"], "agent");
    let agent_token = tok["token"].as_str().expect("token").to_owned();
    let (status, _) = s
        .call(Method::PATCH, &format!("/api/v1/tickets/{id}"), Some(&agent_token), Some(json!({ "status": "open" })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let tier = s.call(Method::POST, "/api/v1/tiers", Some(&agent_token), Some(tier_spec("gold", 60.0, 30.0))).await;
    assert_error(&tier, StatusCode::FORBIDDEN, "forbidden", "needs an admin token");
    let team = s.call(Method::POST, "/api/v1/teams", Some(&agent_token), Some(json!({ "name": "x" }))).await;
    assert_error(&team, StatusCode::FORBIDDEN, "forbidden", "admin");
    let escalate = s
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&agent_token),
            Some(json!({ "agent_id": agent["id"], "name": "x", "role": "admin" })),
        )
        .await;
    assert_error(&escalate, StatusCode::FORBIDDEN, "forbidden", "admin");
    let (status, _) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "x", "role": "admin" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an agent cannot hold an admin token");
    // Revoked tokens stop working at once.
    let (status, _) = s.call(Method::DELETE, &format!("/api/v1/tokens/{}", tok["id"]), Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &s.call(Method::GET, "/api/v1/tickets", Some(&agent_token), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "revoked",
    );
}

fn tier_spec(key: &str, first_response: f64, warning: f64) -> Value {
    json!({
        "key": key, "name": key.to_uppercase(),
        "first_response_minutes": first_response, "next_response_minutes": first_response, "resolution_minutes": first_response * 10.0,
        "warning_minutes": warning,
        "calendar": { "timezone": "UTC", "hours": { "mon": [["00:00", "24:00"]], "tue": [["00:00", "24:00"]], "wed": [["00:00", "24:00"]], "thu": [["00:00", "24:00"]], "fri": [["00:00", "24:00"]], "sat": [["00:00", "24:00"]], "sun": [["00:00", "24:00"]] } },
        "default_priority": "high", "team_id": null, "channels": [], "automation_level": "personal", "agent_minutes_budget": 60
    })
}

#[tokio::test]
async fn status_transitions_are_enforced_and_customer_replies_reopen() {
    let s = Server::start().await;
    let t = s.ticket("Printer on fire", "c@example.com").await;
    let path = format!("/api/v1/tickets/{}", t["id"]);
    let (status, _) = s.patch(&path, json!({ "status": "open" })).await;
    assert_eq!(status, StatusCode::OK);
    let back_to_new = s.patch(&path, json!({ "status": "new" })).await;
    assert_error(&back_to_new, StatusCode::CONFLICT, "invalid_transition", "cannot change status from open to new");
    let (status, _) = s.patch(&path, json!({ "status": "resolved" })).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &s.patch(&path, json!({ "status": "pending" })).await,
        StatusCode::CONFLICT,
        "invalid_transition",
        "allowed from resolved: open, closed",
    );
    assert_error(
        &s.patch(&path, json!({ "status": "done" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_json",
        "unknown variant `done`",
    );
    // The customer writes again: the ticket reopens, counted.
    let (status, _) = s.post(&format!("{path}/messages"), json!({ "body": "It is still burning" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, t) = s.get(&path).await;
    assert_eq!((t["status"].as_str(), t["reopen_count"].as_i64()), (Some("open"), Some(1)), "{t}");
    assert!(t["resolved_at"].is_null());
    // A failed change leaves everything as it was (one transaction).
    let bad = s.patch(&path, json!({ "priority": "urgent", "assignee_id": 999 })).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "agent 999 does not exist");
    let (_, after) = s.get(&path).await;
    assert_eq!(after["priority"], t["priority"]);
    // The history has before/after of each change.
    let (_, events) = s.get(&format!("{path}/events")).await;
    let types: Vec<&str> =
        events["items"].as_array().expect("items").iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        vec!["ticket.created", "ticket.updated", "ticket.updated", "message.received", "ticket.updated"],
        "{events}"
    );
    assert_eq!(events["items"][2]["changes"]["status"], json!({ "before": "open", "after": "resolved" }));
}

#[tokio::test]
async fn replies_meet_the_first_response_and_pending_pauses_the_clocks() {
    let s = Server::start().await;
    let t = s.ticket("Where is my invoice", "i@example.com").await;
    let path = format!("/api/v1/tickets/{}", t["id"]);
    let (status, note) =
        s.post(&format!("{path}/notes"), json!({ "body": "Checked billing: invoice was never sent" })).await;
    assert_eq!((status, note["direction"].as_str()), (StatusCode::CREATED, Some("internal")));
    let (_, t) = s.get(&path).await;
    assert!(t["first_response_at"].is_null(), "a note is no response");
    let (status, reply) =
        s.post(&format!("{path}/reply"), json!({ "body": "Here it is", "body_html": "<p>Here it is</p>" })).await;
    assert_eq!((status, reply["direction"].as_str()), (StatusCode::CREATED, Some("outbound")));
    let (_, t) = s.get(&path).await;
    assert_eq!(t["status"], "open");
    assert!(t["first_response_at"].is_string());
    let clocks: Vec<&str> = t["sla"].as_array().expect("sla").iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(clocks, vec!["resolution"]);
    let (_, t) = s.patch(&path, json!({ "status": "pending" })).await;
    assert_eq!(t["sla"][0]["paused"], true, "{t}");
    // The customer answers: clocks resume and the next response is due.
    s.post(&format!("{path}/messages"), json!({ "body": "Thanks, but the amount is wrong" })).await;
    let (_, t) = s.get(&path).await;
    assert_eq!(t["status"], "open");
    assert_eq!(t["reopen_count"], 0, "leaving pending is no reopen");
    let mut clocks: Vec<(String, bool)> = t["sla"]
        .as_array()
        .expect("sla")
        .iter()
        .map(|c| (c["kind"].as_str().unwrap_or("").to_owned(), c["paused"].as_bool().unwrap_or(true)))
        .collect();
    clocks.sort();
    assert_eq!(clocks, vec![("next_response".to_owned(), false), ("resolution".to_owned(), false)]);
    let (_, msgs) = s.get(&format!("{path}/messages")).await;
    let directions: Vec<&str> =
        msgs["items"].as_array().expect("items").iter().filter_map(|m| m["direction"].as_str()).collect();
    assert_eq!(directions, vec!["inbound", "internal", "outbound", "inbound"]);
    let (_, t) = s.patch(&path, json!({ "status": "closed" })).await;
    assert_eq!(t["sla"], json!([]));
    assert!(t["closed_at"].is_string() && t["resolved_at"].is_string());
}

#[tokio::test]
async fn redelivery_with_the_same_external_id_creates_nothing_twice() {
    let s = Server::start().await;
    let body = json!({ "subject": "From the web form", "body": "Hi", "channel": "webform", "external_id": "form-42", "customer": { "email": "w@example.com" } });
    let (first, t1) = s.post("/api/v1/tickets", body.clone()).await;
    let (second, t2) = s.post("/api/v1/tickets", body).await;
    assert_eq!((first, second), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(t1["id"], t2["id"]);
    let path = format!("/api/v1/tickets/{}/messages", t1["id"]);
    let (a, m1) = s.post(&path, json!({ "body": "follow-up", "external_id": "form-43" })).await;
    let (b, m2) = s.post(&path, json!({ "body": "follow-up", "external_id": "form-43" })).await;
    assert_eq!((a, b), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(m1["id"], m2["id"]);
    let (_, msgs) = s.get(&path).await;
    assert_eq!(msgs["items"].as_array().map(Vec::len), Some(2));
    let (_, list) = s.get("/api/v1/tickets").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn concurrent_creates_get_distinct_numbers_and_share_customers() {
    let s = std::sync::Arc::new(Server::start().await);
    let mut handles = Vec::new();
    for i in 0..60 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let email = format!("c{}@example.com", i % 10);
            let (status, t) = s.post("/api/v1/tickets", json!({ "subject": format!("Ticket {i}"), "body": "x", "customer": { "email": email }, "tags": ["load"] })).await;
            assert_eq!(status, StatusCode::CREATED, "{t}");
            (t["number"].as_i64().unwrap_or(0), t["customer_id"].as_i64().unwrap_or(0), i % 10)
        }));
    }
    let mut numbers = Vec::new();
    let mut customer_of = std::collections::HashMap::new();
    for h in handles {
        let (n, c, who) = h.await.expect("task");
        numbers.push(n);
        let prev = customer_of.insert(who, c);
        assert!(prev.is_none() || prev == Some(c), "one address, one customer");
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=60).collect::<Vec<_>>());
    let (_, customers) = s.get("/api/v1/customers?limit=200").await;
    assert_eq!(customers["items"].as_array().map(Vec::len), Some(10));
}

#[tokio::test]
async fn a_ticket_that_fails_inside_a_batch_leaves_nothing_behind() {
    let s = std::sync::Arc::new(Server::start().await);
    let mut handles = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            // Every fifth names a team that does not exist.
            let team = if i % 5 == 0 { json!(4242) } else { json!(null) };
            s.post("/api/v1/tickets", json!({ "subject": format!("T{i}"), "body": "x", "team_id": team, "customer": { "email": format!("b{i}@example.com") } })).await
        }));
    }
    let mut ok = 0;
    for h in handles {
        let (status, body) = h.await.expect("task");
        if status == StatusCode::CREATED {
            ok += 1;
        } else {
            assert_error(&(status, body), StatusCode::UNPROCESSABLE_ENTITY, "invalid", "team_id 4242 does not exist");
        }
    }
    assert_eq!(ok, 16);
    let (_, customers) = s.get("/api/v1/customers?limit=200").await;
    assert_eq!(customers["items"].as_array().map(Vec::len), Some(16), "no customer of a failed ticket is stored");
    let (_, hits) = s.get("/api/v1/search?q=b0").await;
    assert_eq!(hits["items"], json!([]), "{hits}");
}

#[tokio::test]
async fn lists_filter_sort_and_paginate_with_a_cursor() {
    let s = Server::start().await;
    let (_, team) = s.post("/api/v1/teams", json!({ "name": "Billing" })).await;
    let (_, agent) =
        s.post("/api/v1/agents", json!({ "name": "Bea", "email": "bea@example.com", "teams": [team["id"]] })).await;
    let mut all = Vec::new();
    for i in 0..7 {
        let (_, t) = s
            .post("/api/v1/tickets", json!({ "subject": format!("T{i}"), "body": "b", "channel": if i % 2 == 0 { "email" } else { "chat" },
                "priority": if i < 2 { "urgent" } else { "normal" }, "tags": if i % 3 == 0 { json!(["vip"]) } else { json!([]) },
                "customer": { "email": format!("l{i}@example.com") } }))
            .await;
        all.push(t["id"].as_i64().expect("id"));
    }
    s.patch(
        &format!("/api/v1/tickets/{}", all[1]),
        json!({ "team_id": team["id"], "assignee_id": agent["id"], "status": "open" }),
    )
    .await;
    let ids_of = |v: &Value| ids(&v["items"]);
    let (_, v) = s.get("/api/v1/tickets?channel=email").await;
    assert_eq!(ids_of(&v), vec![all[6], all[4], all[2], all[0]]);
    let (_, v) = s.get("/api/v1/tickets?tag=VIP&sort=created_at").await;
    assert_eq!(ids_of(&v), vec![all[0], all[3], all[6]]);
    let (_, v) = s.get("/api/v1/tickets?priority=urgent").await;
    assert_eq!(ids_of(&v), vec![all[1], all[0]]);
    let (_, v) = s.get(&format!("/api/v1/tickets?assignee={}", agent["id"])).await;
    assert_eq!(ids_of(&v), vec![all[1]]);
    let (_, v) = s.get(&format!("/api/v1/tickets?team_id={}&status=open", team["id"])).await;
    assert_eq!(ids_of(&v), vec![all[1]]);
    let (_, v) = s.get("/api/v1/tickets?assignee=none&status=new&tier=normal").await;
    assert_eq!(ids_of(&v).len(), 6);
    let (_, v) = s.get("/api/v1/tickets?sort=-updated_at&limit=1").await;
    assert_eq!(ids_of(&v), vec![all[1]], "the changed ticket is the most recently updated");
    assert_error(
        &s.get("/api/v1/tickets?tier=platinum").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown tier",
    );
    assert_error(
        &s.get("/api/v1/tickets?status=burning").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown status",
    );
    // Walk all pages of 3.
    for sort in ["-created_at", "created_at", "-updated_at", "updated_at"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/tickets?limit=3&sort={sort}&cursor={c}"),
                None => format!("/api/v1/tickets?limit=3&sort={sort}"),
            };
            let (status, page) = s.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7, "{sort}: every ticket exactly once: {seen:?}");
    }
    let (_, agents) = s.get("/api/v1/agents").await;
    let bea = agents["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["email"] == "bea@example.com")
        .cloned()
        .expect("bea");
    assert_eq!((bea["open_tickets"].as_i64(), bea["teams"].clone()), (Some(1), json!([team["id"]])));
}

#[tokio::test]
async fn customers_merge_with_their_identities_tickets_and_timeline() {
    let s = Server::start().await;
    let (status, anna) = s
        .post(
            "/api/v1/customers",
            json!({ "name": "Anna", "email": "anna@example.com", "phone": "+49 30 1234567", "language": "de" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{anna}");
    assert_eq!(
        anna["identities"],
        json!([{ "kind": "email", "address": "anna@example.com" }, { "kind": "phone", "address": "+49301234567" }])
    );
    let dup = s.post("/api/v1/customers", json!({ "email": "ANNA@example.com" })).await;
    assert_error(&dup, StatusCode::CONFLICT, "conflict", "identity email:anna@example.com belongs to customer");
    // The same person writes from a chat handle: a second customer at first.
    let (_, chat) = s.post("/api/v1/tickets", json!({ "subject": "Chat question", "body": "hi from chat", "channel": "telegram", "customer": { "identities": [{ "kind": "telegram", "address": "@anna" }] } })).await;
    let (_, mail) = s.post("/api/v1/tickets", json!({ "subject": "Mail question", "body": "hi from mail", "channel": "email", "customer": { "email": "anna@example.com" } })).await;
    assert_eq!(mail["customer_id"], anna["id"]);
    let chat_customer = chat["customer_id"].as_i64().expect("customer");
    assert_ne!(chat_customer, anna["id"].as_i64().expect("id"));
    let self_merge =
        s.post(&format!("/api/v1/customers/{chat_customer}/merge"), json!({ "into_id": chat_customer })).await;
    assert_error(&self_merge, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "cannot merge a customer into itself");
    let missing = s.post(&format!("/api/v1/customers/{chat_customer}/merge"), json!({ "into_id": 9999 })).await;
    assert_error(&missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "customer 9999 does not exist");
    let (status, merged) =
        s.post(&format!("/api/v1/customers/{chat_customer}/merge"), json!({ "into_id": anna["id"] })).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["identities"].as_array().map(Vec::len), Some(3));
    let (_, gone) = s.get(&format!("/api/v1/customers/{chat_customer}")).await;
    assert_eq!(gone["merged_into_id"], anna["id"]);
    assert_eq!(gone["identities"], json!([]));
    let again = s.post(&format!("/api/v1/customers/{chat_customer}/merge"), json!({ "into_id": anna["id"] })).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", "was merged into");
    let (_, t) = s.get(&format!("/api/v1/tickets/{}", chat["id"])).await;
    assert_eq!(t["customer_id"], anna["id"]);
    // New chat messages now find Anna directly.
    let (_, t3) = s.post("/api/v1/tickets", json!({ "subject": "Another chat", "body": "again", "channel": "telegram", "customer": { "identities": [{ "kind": "telegram", "address": "@anna" }] } })).await;
    assert_eq!(t3["customer_id"], anna["id"]);
    // One timeline across channels, newest first, paginated.
    let (_, tl) = s.get(&format!("/api/v1/customers/{}/timeline?limit=2", anna["id"])).await;
    let channels: Vec<&str> =
        tl["items"].as_array().expect("items").iter().filter_map(|e| e["channel"].as_str()).collect();
    assert_eq!(channels, vec!["telegram", "email"]);
    let (_, tl2) =
        s.get(&format!("/api/v1/customers/{}/timeline?limit=2&before={}", anna["id"], tl["next_before"])).await;
    assert_eq!(tl2["items"][0]["body"], "hi from chat");
    // The merge is recorded with what moved.
    let (_, events) = s.get("/api/v1/events?limit=1000").await;
    let merge = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["type"] == "customer.merged")
        .cloned()
        .expect("merge event");
    assert_eq!(merge["changes"]["ticket_ids"], json!([chat["id"]]));
    assert_eq!(merge["changes"]["source"]["id"], chat_customer);
}

#[tokio::test]
async fn customer_updates_and_identities_are_validated() {
    let s = Server::start().await;
    let (_, c) = s.post("/api/v1/customers", json!({ "email": "k@example.com" })).await;
    assert_eq!(c["name"], "k");
    assert_eq!(c["tier"], "normal");
    let path = format!("/api/v1/customers/{}", c["id"]);
    let (status, c2) =
        s.patch(&path, json!({ "tier": "extended", "attributes": { "plan": "pro" }, "name": "Karl" })).await;
    assert_eq!(status, StatusCode::OK, "{c2}");
    assert_eq!((c2["tier"].as_str(), c2["attributes"]["plan"].as_str()), (Some("extended"), Some("pro")));
    assert_error(
        &s.patch(&path, json!({ "tier": "diamond" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "unknown tier",
    );
    assert_error(
        &s.patch(&path, json!({ "attributes": [1] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "JSON object",
    );
    assert_error(
        &s.patch(&path, json!({ "language": "../../etc" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "language",
    );
    let (status, _) =
        s.post(&format!("{path}/identities"), json!({ "kind": "phone", "address": "+44 20 7946 0958" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, other) = s.post("/api/v1/customers", json!({ "email": "other@example.com" })).await;
    let stolen = s
        .post(
            &format!("/api/v1/customers/{}/identities", other["id"]),
            json!({ "kind": "phone", "address": "+442079460958" }),
        )
        .await;
    assert_error(&stolen, StatusCode::CONFLICT, "conflict", "belongs to customer");
    assert_error(
        &s.post(&format!("{path}/identities"), json!({ "kind": "phone", "address": "ring ring" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "not a phone number",
    );
    // A ticket for the extended customer gets the extended tier's priority.
    let (_, t) =
        s.post("/api/v1/tickets", json!({ "subject": "VIP", "body": "x", "customer": { "id": c["id"] } })).await;
    assert_eq!(t["priority"], "high");
    assert_error(
        &s.post("/api/v1/tickets", json!({ "subject": "x", "body": "x", "customer": { "id": 9999 } })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "customer 9999 does not exist",
    );
}

#[tokio::test]
async fn tiers_teams_agents_and_organisations_are_configurable() {
    let s = Server::start().await;
    let (_, tiers) = s.get("/api/v1/tiers").await;
    let keys: Vec<&str> = tiers["items"].as_array().expect("items").iter().filter_map(|t| t["key"].as_str()).collect();
    assert_eq!(keys, vec!["basic", "normal", "extended"]);
    assert_eq!(tiers["items"][0]["automation_level"], "automated_first");
    let (status, gold) = s.post("/api/v1/tiers", tier_spec("gold", 30.0, 10.0)).await;
    assert_eq!(status, StatusCode::CREATED, "{gold}");
    assert_error(
        &s.post("/api/v1/tiers", tier_spec("gold", 30.0, 10.0)).await,
        StatusCode::CONFLICT,
        "conflict",
        "exists already",
    );
    let mut bad = tier_spec("silver", 30.0, 10.0);
    bad["calendar"]["timezone"] = json!("Atlantis/Capital");
    assert_error(&s.post("/api/v1/tiers", bad).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid", "unknown time zone");
    let mut bad = tier_spec("silver", 30.0, 10.0);
    bad["calendar"]["hours"]["mon"] = json!([["18:00", "09:00"]]);
    assert_error(
        &s.post("/api/v1/tiers", bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "ends before it starts",
    );
    let (_, team) = s.post("/api/v1/teams", json!({ "name": "VIP desk" })).await;
    let mut spec = tier_spec("gold", 20.0, 5.0);
    spec["team_id"] = team["id"].clone();
    let (status, gold2) = s.put(&format!("/api/v1/tiers/{}", gold["id"]), spec).await;
    assert_eq!(status, StatusCode::OK, "{gold2}");
    assert_eq!((gold2["first_response_minutes"].as_f64(), gold2["team_id"].clone()), (Some(20.0), team["id"].clone()));
    // A gold customer's ticket goes to the tier's team.
    let (_, c) = s.post("/api/v1/customers", json!({ "email": "g@example.com", "tier": "gold" })).await;
    let (_, t) =
        s.post("/api/v1/tickets", json!({ "subject": "gold", "body": "x", "customer": { "id": c["id"] } })).await;
    assert_eq!(
        (t["team_id"].clone(), t["tier_id"].clone(), t["priority"].as_str()),
        (team["id"].clone(), gold["id"].clone(), Some("high"))
    );
    assert_error(
        &s.post("/api/v1/teams", json!({ "name": "VIP desk" })).await,
        StatusCode::CONFLICT,
        "conflict",
        "exists already",
    );
    let (_, lead) = s
        .post("/api/v1/agents", json!({ "name": "Lea", "email": "lea@example.com", "level": 2, "teams": [team["id"]] }))
        .await;
    let (status, team2) = s
        .put(&format!("/api/v1/teams/{}", team["id"]), json!({ "name": "VIP desk", "lead_agent_id": lead["id"] }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((team2["lead_agent_id"].clone(), team2["members"].clone()), (lead["id"].clone(), json!([lead["id"]])));
    assert_error(
        &s.post("/api/v1/agents", json!({ "name": "Dup", "email": "LEA@example.com" })).await,
        StatusCode::CONFLICT,
        "conflict",
        "exists already",
    );
    assert_error(
        &s.post("/api/v1/agents", json!({ "name": "L3", "email": "l3@example.com", "level": 3 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "level must be 1",
    );
    let (status, org) = s.post("/api/v1/organizations", json!({ "name": "Acme GmbH", "domain": "acme.de" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, c) = s.patch(&format!("/api/v1/customers/{}", c["id"]), json!({ "organization_id": org["id"] })).await;
    assert_eq!(c["organization_id"], org["id"]);
    assert_error(
        &s.post("/api/v1/organizations", json!({ "name": "Acme GmbH" })).await,
        StatusCode::CONFLICT,
        "conflict",
        "exists already",
    );
}

#[tokio::test]
async fn the_event_feed_pages_with_a_cursor() {
    let s = Server::start().await;
    for i in 0..5 {
        s.ticket(&format!("E{i}"), &format!("e{i}@example.com")).await;
    }
    let (_, page1) = s.get("/api/v1/events?limit=4").await;
    let (_, page2) = s.get(&format!("/api/v1/events?limit=4&after={}", page1["next_after"])).await;
    let (_, page3) = s.get(&format!("/api/v1/events?limit=4&after={}", page2["next_after"])).await;
    let all: Vec<i64> = [&page1, &page2, &page3].iter().flat_map(|p| ids(&p["items"])).collect();
    assert_eq!(all.len(), 10, "5 customers and 5 tickets created");
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(page3["items"].as_array().map(Vec::len), Some(2));
    let (_, empty) = s.get(&format!("/api/v1/events?after={}", page3["next_after"])).await;
    assert_eq!((empty["items"].clone(), empty["next_after"].clone()), (json!([]), page3["next_after"].clone()));
}

/// Counts SLA events per ticket in the workspace's feed.
async fn sla_events(s: &Server, ticket: i64) -> (usize, usize) {
    let (_, v) = s.get("/api/v1/events?limit=1000").await;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| items.iter().filter(|e| e["type"] == kind && e["ticket_id"] == ticket).count();
    (count("sla.warning"), count("sla.breached"))
}

async fn fast_sla_server() -> Server {
    let scratch = Scratch::new();
    scratch.config("sla_tick_ms = 50\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    // First response due after 1.2 s, warning 0.6 s before.
    let (status, tier) = s.post("/api/v1/tiers", tier_spec("rush", 0.02, 0.01)).await;
    assert_eq!(status, StatusCode::CREATED, "{tier}");
    s
}

#[tokio::test]
async fn sla_warning_and_breach_fire_exactly_once() {
    let s = fast_sla_server().await;
    let (_, c) = s.post("/api/v1/customers", json!({ "email": "rush@example.com", "tier": "rush" })).await;
    let (_, t) =
        s.post("/api/v1/tickets", json!({ "subject": "hurry", "body": "x", "customer": { "id": c["id"] } })).await;
    let id = t["id"].as_i64().expect("id");
    s.wait_for("/api/v1/events?limit=1000", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|a| a.iter().any(|e| e["type"] == "sla.breached" && e["ticket_id"] == id))
    })
    .await;
    let (_, t) = s.get(&format!("/api/v1/tickets/{id}")).await;
    let fr = t["sla"].as_array().expect("sla").iter().find(|c| c["kind"] == "first_response").cloned().expect("clock");
    assert_eq!((fr["warned"].as_bool(), fr["breached"].as_bool()), (Some(true), Some(true)));
    // A ticket answered in time never breaches its first response.
    let (_, t2) =
        s.post("/api/v1/tickets", json!({ "subject": "answered", "body": "x", "customer": { "id": c["id"] } })).await;
    let id2 = t2["id"].as_i64().expect("id");
    s.post(&format!("/api/v1/tickets/{id2}/reply"), json!({ "body": "on it" })).await;
    // Wait for a third ticket's breach: by then the scheduler has passed many times.
    let (_, t3) =
        s.post("/api/v1/tickets", json!({ "subject": "marker", "body": "x", "customer": { "id": c["id"] } })).await;
    let id3 = t3["id"].as_i64().expect("id");
    s.wait_for("/api/v1/events?limit=1000", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|a| a.iter().any(|e| e["type"] == "sla.breached" && e["ticket_id"] == id3))
    })
    .await;
    assert_eq!(sla_events(&s, id).await, (1, 1), "once each, however many passes");
    let (_, v) = s.get("/api/v1/events?limit=1000").await;
    let breached_first_response_2 = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|e| e["type"] == "sla.breached" && e["ticket_id"] == id2 && e["changes"]["clock"] == "first_response");
    assert!(!breached_first_response_2);
    let (_, metrics) = s.call(Method::GET, "/metrics", Some(support::METRICS_TOKEN), None).await;
    assert!(metrics.as_str().unwrap_or_default().contains("plugdesk_sla_events_total{type=\"sla.breached\"}"));
}

#[tokio::test]
async fn sla_deadlines_survive_a_restart() {
    let s = fast_sla_server().await;
    let (_, c) = s.post("/api/v1/customers", json!({ "email": "r@example.com", "tier": "rush" })).await;
    let (_, t) = s
        .post("/api/v1/tickets", json!({ "subject": "over the restart", "body": "x", "customer": { "id": c["id"] } }))
        .await;
    let id = t["id"].as_i64().expect("id");
    let due = t["created_at"].as_str().map(str::to_owned).expect("created");
    let (scratch, token) = s.stop();
    // While the server is down the deadline passes.
    let created = chrono_ms(&due);
    while now_ms() < created + 1_500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = Server::serve(scratch, token).await;
    s.wait_for("/api/v1/events?limit=1000", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|a| a.iter().any(|e| e["type"] == "sla.breached" && e["ticket_id"] == id))
    })
    .await;
    assert_eq!(sla_events(&s, id).await, (1, 1));
    // Restart again: nothing is emitted twice.
    let (scratch, token) = s.stop();
    let s = Server::serve(scratch, token).await;
    let (_, t2) =
        s.post("/api/v1/tickets", json!({ "subject": "marker", "body": "x", "customer": { "id": c["id"] } })).await;
    let id2 = t2["id"].as_i64().expect("id");
    s.wait_for("/api/v1/events?limit=1000", Duration::from_secs(20), |v| {
        v["items"].as_array().is_some_and(|a| a.iter().any(|e| e["type"] == "sla.breached" && e["ticket_id"] == id2))
    })
    .await;
    assert_eq!(sla_events(&s, id).await, (1, 1));
}

#[tokio::test]
async fn two_nodes_on_one_database_share_numbers_and_emit_sla_events_once() {
    // Only meaningful on PostgreSQL, where several stateless nodes share the database; on
    // SQLite both nodes open the same file, which works too and is tested the same way.
    let a = fast_sla_server().await;
    let b = Server::serve(a.scratch.share(), a.token.clone()).await;
    let (_, c) = a.post("/api/v1/customers", json!({ "email": "nodes@example.com", "tier": "rush" })).await;
    let mut handles = Vec::new();
    let servers = std::sync::Arc::new((a, b));
    for i in 0..40 {
        let servers = servers.clone();
        let cid = c["id"].clone();
        handles.push(tokio::spawn(async move {
            let node = if i % 2 == 0 { &servers.0 } else { &servers.1 };
            let (status, t) = node
                .post("/api/v1/tickets", json!({ "subject": format!("N{i}"), "body": "x", "customer": { "id": cid } }))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{t}");
            (t["id"].as_i64().unwrap_or(0), t["number"].as_i64().unwrap_or(0))
        }));
    }
    let mut numbers = Vec::new();
    let mut ids = Vec::new();
    for h in handles {
        let (id, n) = h.await.expect("task");
        ids.push(id);
        numbers.push(n);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>(), "numbers are unique across nodes");
    // Both schedulers run; every ticket still gets exactly one warning and one breach per clock.
    let last = *ids.iter().max().expect("ids");
    servers
        .0
        .wait_for("/api/v1/events?limit=1000", Duration::from_secs(30), |v| {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            ids.iter().all(|id| {
                items.iter().any(|e| {
                    e["type"] == "sla.breached" && e["ticket_id"] == *id && e["changes"]["clock"] == "first_response"
                })
            }) && items.iter().any(|e| e["ticket_id"] == last)
        })
        .await;
    let (_, v) = servers.0.get("/api/v1/events?limit=1000").await;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    for id in &ids {
        for kind in ["sla.warning", "sla.breached"] {
            let n = items
                .iter()
                .filter(|e| e["type"] == kind && e["ticket_id"] == *id && e["changes"]["clock"] == "first_response")
                .count();
            assert_eq!(n, 1, "{kind} for ticket {id}");
        }
    }
    // The second node stops first: the first one owns the scratch database.
    if let Ok((a, b)) = std::sync::Arc::try_unwrap(servers) {
        drop(b);
        drop(a);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Parses our RFC 3339 timestamps (`2026-11-24T04:36:31.872Z`) to Unix milliseconds.
fn chrono_ms(s: &str) -> i64 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').expect("rfc3339");
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms.parse::<i64>().unwrap_or(0)
}

#[tokio::test]
async fn every_documented_route_exists_and_the_document_is_served() {
    let s = Server::start().await;
    let (status, doc) = s.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for route in plugdesk_api::api::openapi::ROUTES {
        let path = route.path.replace("{id}", "999999");
        let method = Method::from_bytes(route.method.as_bytes()).expect("method");
        let body = route.body.map(|_| json!({}));
        let (status, answer) = s.call(method, &path, Some(&s.token), body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{} {}", route.method, route.path);
        let unknown = answer["error"]["message"].as_str().is_some_and(|m| m.contains("no such endpoint"));
        assert!(!unknown, "{} {} is documented but not routed", route.method, route.path);
        assert!(
            doc["paths"][route.path][route.method.to_lowercase()].is_object(),
            "{} {} missing from the document",
            route.method,
            route.path
        );
    }
}

#[tokio::test]
async fn import_reports_bad_rows_by_file_and_line_and_keeps_the_rest() {
    let s = Server::start().await;
    let file = s.data_dir().join("tickets.csv");
    std::fs::write(
        &file,
        "subject,body,email,name,channel,priority,tags,external_id\n\
         Lost parcel,It never came,imp1@example.com,Ida,email,high,parcel;lost,imp-1\n\
         Broken,Screen cracked,not-an-email,Bob,email,,,\n\
         Refund,Please refund,imp2@example.com,,chat,,refund,imp-2\n\
         Weird,Priority,imp3@example.com,,email,extreme,,\n",
    )
    .expect("write csv");
    let out = s.scratch.command(&["import", "tickets", file.to_str().expect("path")]).output().expect("run import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bad rows make the import fail");
    assert!(stderr.contains("tickets.csv:3: ") && stderr.contains("not-an-email"), "{stderr}");
    assert!(stderr.contains("tickets.csv:5: ") && stderr.contains("unknown priority"), "{stderr}");
    assert!(stderr.contains("4/4 rows, 2 failed"), "progress is shown: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Imported 2 of 4 rows"));
    let (_, list) = s.get("/api/v1/tickets?sort=created_at").await;
    let subjects: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|t| t["subject"].as_str()).collect();
    assert_eq!(subjects.len(), 2);
    assert!(subjects.contains(&"Lost parcel") && subjects.contains(&"Refund"));
    let (_, lost) = s.get("/api/v1/tickets?tag=lost").await;
    assert_eq!(lost["items"][0]["priority"], "high");
    // Importing the same file again creates nothing new for rows with an external id.
    let _ = s.scratch.command(&["import", "tickets", file.to_str().expect("path")]).output().expect("run import");
    let (_, list) = s.get("/api/v1/tickets").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let customers = s.data_dir().join("customers.csv");
    std::fs::write(
        &customers,
        "name,email,phone,organization,tier,language\n\
         Greta,greta@acme.de,+49 89 123456,Acme GmbH,extended,de\n\
         Hans,hans@acme.de,,Acme GmbH,,de\n\
         Nobody,,,,,\n",
    )
    .expect("write csv");
    let out =
        s.scratch.command(&["import", "customers", customers.to_str().expect("path")]).output().expect("run import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("customers.csv:4: ") && stderr.contains("at least one identity"), "{stderr}");
    let (_, list) = s.get("/api/v1/customers?limit=200").await;
    let greta = list["items"].as_array().expect("items").iter().find(|c| c["name"] == "Greta").cloned().expect("greta");
    let hans = list["items"].as_array().expect("items").iter().find(|c| c["name"] == "Hans").cloned().expect("hans");
    assert_eq!((greta["tier"].as_str(), greta["language"].as_str()), (Some("extended"), Some("de")));
    assert!(greta["organization_id"].is_i64());
    assert_eq!(greta["organization_id"], hans["organization_id"], "one organisation, created once");
    let missing = s.scratch.command(&["import", "customers", "/nonexistent.csv"]).output().expect("run import");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.csv"));
}

#[tokio::test]
async fn token_create_prints_a_working_token() {
    let s = Server::start().await;
    let out = s.scratch.command(&["token", "create", "--name", "ci"]).output().expect("run token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (status, me) = s.call(Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!((status, me["role"].as_str()), (StatusCode::OK, Some("admin")));
    let bad = s.scratch.command(&["token", "create", "--workspace", "nope"]).output().expect("run token create");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("workspace \"nope\" does not exist"));
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let s = Server::start().await;
    s.ticket("m", "m@example.com").await;
    s.get("/api/v1/tickets/424242").await;
    let (_, text) = s.call(Method::GET, "/metrics", Some(support::METRICS_TOKEN), None).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("plugdesk_http_requests_total{method=\"POST\",route=\"/api/v1/tickets\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("plugdesk_http_requests_total{method=\"GET\",route=\"/api/v1/tickets/{id}\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("plugdesk_tickets_created_total 1"), "{text}");
}

#[tokio::test]
async fn workflows_are_checked_on_save_dry_run_and_act_on_the_next_event() {
    let s = Server::start().await;
    // A script that does not compile is refused with its line and column.
    let (status, err) =
        s.post("/api/v1/workflows", json!({ "name": "Broken", "source": "// on: ticket.created\nlet x = ;\n" })).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("script_error")),
        "{err}"
    );
    assert_eq!((err["error"]["line"].as_u64(), err["error"]["column"].as_u64()), (Some(2), Some(9)), "{err}");
    assert_error(
        &s.post("/api/v1/workflows", json!({ "name": "No trigger", "source": "add_tag(\"x\");" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "script_error",
        "// on: EVENT",
    );

    let parcel = "// on: ticket.created\n// order: 10\nif ticket.subject.to_lower().contains(\"paket\") {\n  set_category(\"lost_parcel\");\n  add_tag(\"parcel\");\n  if customer.tier == \"normal\" { set_priority(\"high\"); }\n  note(`Paketanfrage von ${customer.name}`);\n}\n";
    let (status, wf) = s.post("/api/v1/workflows", json!({ "name": "Lost parcel", "source": parcel })).await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    assert_eq!((wf["triggers"].clone(), wf["order"].as_i64()), (json!(["ticket.created"]), Some(10)));
    let id = wf["id"].as_i64().expect("id");

    // It acts on the next new ticket, with the workflow as the actor.
    let t = s.ticket("Paket nicht angekommen", "anna@example.com").await;
    let tid = t["id"].as_i64().expect("id");
    let done = s
        .wait_for(&format!("/api/v1/tickets/{tid}"), Duration::from_secs(10), |t| t["category"] == "lost_parcel")
        .await;
    assert_eq!((done["priority"].as_str(), done["tags"].clone()), (Some("high"), json!(["parcel"])), "{done}");
    let (_, events) = s.get(&format!("/api/v1/tickets/{tid}/events")).await;
    assert!(
        events["items"].as_array().expect("events").iter().any(|e| e["actor"] == format!("workflow:{id}")),
        "{events}"
    );

    // A dry run shows what it would do, changing nothing; a draft can be tried unsaved.
    let other = s.ticket("Where is my Paket?", "ben@example.com").await;
    let oid = other["id"].as_i64().expect("id");
    s.wait_for(&format!("/api/v1/tickets/{oid}"), Duration::from_secs(10), |t| t["category"] == "lost_parcel").await;
    let (status, dry) = s.post(&format!("/api/v1/workflows/{id}/dry-run"), json!({ "ticket_id": tid })).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["fires"], true);
    let names: Vec<&str> =
        dry["actions"].as_array().expect("actions").iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["update", "update", "update", "note"], "{dry}");
    let (_, draft) = s
        .post(
            "/api/v1/workflows/dry-run",
            json!({ "ticket_id": tid, "source": "// on: ticket.updated when status\nescalate(\"zu komplex\");\n" }),
        )
        .await;
    assert_eq!(
        (draft["event"].as_str(), draft["actions"][0]["name"].as_str()),
        (Some("ticket.updated"), Some("escalate")),
        "{draft}"
    );
    let (_, msgs) = s.get(&format!("/api/v1/tickets/{tid}/messages")).await;
    assert_eq!(msgs["items"].as_array().map(Vec::len), Some(2), "the dry runs added nothing: {msgs}");

    // An edit applies to the next event without a restart; a hostile script is stopped and
    // reported while the other workflows still run.
    let edited = parcel.replace("add_tag(\"parcel\")", "add_tag(\"paket\")");
    let (status, _) =
        s.put(&format!("/api/v1/workflows/{id}"), json!({ "name": "Lost parcel", "source": edited })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, looping) = s
        .post(
            "/api/v1/workflows",
            json!({ "name": "Loop", "source": "// on: ticket.created\n// order: 1\nloop { }\n" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{looping}");
    let t = s.ticket("Paket verloren", "carla@example.com").await;
    let done = s
        .wait_for(&format!("/api/v1/tickets/{}", t["id"]), Duration::from_secs(10), |t| t["category"] == "lost_parcel")
        .await;
    assert_eq!(done["tags"], json!(["paket"]), "{done}");
    let lw = s
        .wait_for(&format!("/api/v1/workflows/{}", looping["id"]), Duration::from_secs(10), |w| {
            w["stats"]["errors"] == 1
        })
        .await;
    // Stopped by whichever budget runs out first: the operation count, or the time limit on a
    // machine too busy to reach it in 100 ms.
    let stopped = lw["stats"]["last_error"].as_str().unwrap_or("");
    assert!(stopped.contains("operations") || stopped.contains("ran longer than"), "{lw}");
    let (_, metrics) = s.call(Method::GET, "/metrics", Some(support::METRICS_TOKEN), None).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or("")
            .contains(&format!("plugdesk_workflow_errors_total{{workflow=\"{}\"}} 1", looping["id"]))
    );
    let (status, _) =
        s.call(Method::DELETE, &format!("/api/v1/workflows/{}", looping["id"]), Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = s.get("/api/v1/workflows").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_new_workspace_handles_tickets_through_the_default_library() {
    let scratch = Scratch::new();
    let token = scratch.init_with("default", &[]);
    let s = Server::serve(scratch, token).await;
    let (_, list) = s.get("/api/v1/workflows").await;
    let names: Vec<&str> = list["items"].as_array().expect("items").iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names.len(), 9, "{list}");
    assert!(names.contains(&"Lost parcel") && names.contains(&"Satisfaction survey"), "{names:?}");
    let (status, agent) = s
        .post(
            "/api/v1/agents",
            json!({ "name": "Bea", "email": "bea@example.com", "presence": "online", "capacity": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");

    // A lost parcel: categorised, assigned, answered once with the process template in German
    // (no separate acknowledgement), a follow-up set.
    let (_, t) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Paket nicht angekommen", "body": "Meine Sendung fehlt seit einer Woche.", "customer": { "email": "anna@example.com", "name": "Anna", "language": "de" } }),
        )
        .await;
    let id = t["id"].as_i64().expect("id");
    let done = s
        .wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(10), |t| {
            t["category"] == "lost_parcel" && t["assignee_id"] == agent["id"]
        })
        .await;
    assert_eq!((done["status"].as_str(), done["first_response_at"].is_null()), (Some("new"), true), "{done}");
    let msgs = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(10), |m| {
            m["items"].as_array().is_some_and(|m| m.len() == 2)
        })
        .await;
    let bodies: Vec<&str> =
        msgs["items"].as_array().expect("items").iter().filter_map(|m| m["body"].as_str()).collect();
    assert!(bodies[1].starts_with("Guten Tag Anna,"), "the lost-parcel answer in German: {bodies:?}");
    assert!(bodies[1].contains("Bestellnummer"), "{bodies:?}");
    let (_, events) = s.get(&format!("/api/v1/tickets/{id}/events")).await;
    let kinds: Vec<&str> =
        events["items"].as_array().expect("items").iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"follow_up.scheduled"), "{kinds:?}");
    // Every action is recorded with the workflow that took it.
    let lost_parcel = list["items"].as_array().expect("items").iter().find(|w| w["name"] == "Lost parcel").expect("wf");
    let actor = format!("workflow:{}", lost_parcel["id"]);
    assert!(events["items"].as_array().expect("items").iter().any(|e| e["actor"] == actor.as_str()), "{events}");

    // Anything else gets the acknowledgement in the customer's language.
    let (_, t) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": "Question about my invoice", "body": "Where is it?", "customer": { "email": "bob@example.com", "name": "Bob", "language": "en" } }),
        )
        .await;
    let id = t["id"].as_i64().expect("id");
    let msgs = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(10), |m| {
            m["items"].as_array().is_some_and(|m| m.len() == 2)
        })
        .await;
    let ack = msgs["items"][1]["body"].as_str().unwrap_or_default();
    assert!(ack.starts_with("Hello Bob,") && ack.contains(&format!("{}", t["number"])), "{ack}");

    // Resolving it sends the survey invitation; the customer answers on the public page; a poor
    // rating tags the ticket.
    for step in ["open", "resolved"] {
        let (status, body) = s.patch(&format!("/api/v1/tickets/{id}"), json!({ "status": step })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let msgs = s
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(10), |m| {
            m["items"].as_array().is_some_and(|m| m.len() == 3)
        })
        .await;
    let invitation = msgs["items"][2]["body"].as_str().unwrap_or_default().to_owned();
    let link = invitation.split_whitespace().find(|w| w.contains("/survey/")).expect("survey link").to_owned();
    let path = &link[link.find("/survey/").unwrap_or(0)..];
    let page = reqwest::get(format!("{}{path}", s.base)).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap_or_default().contains("name=\"rating\""));
    let answered = s.answer_survey(path, "rating=2&comment=took+too+long").await;
    assert_eq!(answered, StatusCode::OK);
    let again = reqwest::Client::new()
        .post(format!("{}{path}", s.base))
        .json(&json!({ "rating": 5 }))
        .send()
        .await
        .expect("again");
    assert_eq!(again.status(), StatusCode::CONFLICT, "a survey is answered once");
    s.wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(10), |t| {
        t["tags"].as_array().is_some_and(|tags| tags.contains(&json!("unhappy")))
    })
    .await;
    let (_, surveys) = s.get("/api/v1/surveys").await;
    assert_eq!((surveys["answered"].clone(), surveys["average_rating"].clone()), (json!(1), json!(2.0)), "{surveys}");
    // The assignee (Bea, through routing) was told.
    let (_, note) = s.get("/api/v1/notifications").await;
    assert!(note["items"].as_array().is_some_and(|n| n.is_empty()), "the admin got none: {note}");
    let (_, events) = s.get(&format!("/api/v1/tickets/{id}/events")).await;
    assert!(
        events["items"].as_array().expect("items").iter().any(|e| e["type"] == "agent.notified"
            && e["changes"]["agent_id"] == agent["id"]
            && e["changes"]["body"].as_str().unwrap_or("").contains("2 of 5")),
        "{events}"
    );
}

#[tokio::test]
async fn a_messages_own_subject_and_quoted_text_are_held_to_their_limits() {
    let s = Server::start().await;
    let t = s.ticket("Limits", "limits@example.com").await;
    let id = t["id"].as_i64().expect("id");
    assert_error(
        &s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Hallo", "subject": "x".repeat(501) })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "longer than 500 characters",
    );
    let quoted = "> ".repeat(600_000);
    assert_error(
        &s.post(&format!("/api/v1/tickets/{id}/messages"), json!({ "body": "Neu", "body_quoted": quoted })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "quoted text is larger than 1048576 bytes",
    );
    assert_error(
        &s.post(
            "/api/v1/tickets",
            json!({ "subject": "Q", "body": "Neu", "body_quoted": quoted, "customer": { "email": "q@example.com" } }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "quoted text is larger than 1048576 bytes",
    );
    // Nothing of the refused requests was written; a subject at the limit is taken.
    let (_, m) = s.get(&format!("/api/v1/tickets/{id}/messages")).await;
    assert_eq!(m["items"].as_array().map(Vec::len), Some(1), "{m}");
    let (status, reply) =
        s.post(&format!("/api/v1/tickets/{id}/reply"), json!({ "body": "Hallo", "subject": "x".repeat(500) })).await;
    assert_eq!((status, reply["subject"].as_str().map(str::len)), (StatusCode::CREATED, Some(500)), "{reply}");
    s.stop();
}

/// Sends `GET path` on a raw connection (kept alive) and returns the answer's head and body.
async fn raw_get(conn: &mut tokio::net::TcpStream, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: plugdesk\r\nAuthorization: Bearer {token}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send request");
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.expect("read answer");
        assert!(n > 0, "the connection closed; got {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// Regression (#11): the server ran without a header-read timer, so a client that stalled in
/// the middle of its headers held a connection (and a task) for ever.
#[tokio::test]
async fn a_client_stalling_mid_headers_is_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scratch = Scratch::new();
    scratch.config("[server]\nheader_timeout_ms = 300\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let mut conn = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://")).await.expect("connect");
    conn.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: plugdesk\r\nAuthor").await.expect("half a header");
    // The server closes the connection: the read ends. (20 s is a bound, not the expectation.)
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the stalled connection was still open after 20 s");
    assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{}", String::from_utf8_lossy(&got));
    let (status, _) = s.get("/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "the server goes on");
}

/// Regression (#11): connections were unbounded; beyond `max_connections` a new one waits
/// (unserved) until one closes, while the open ones keep working.
#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scratch = Scratch::new();
    scratch.config("[server]\nmax_connections = 2\nheader_timeout_ms = 60000\n");
    let token = scratch.init("default");
    let s = Server::serve(scratch, token).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut a = tokio::net::TcpStream::connect(&addr).await.expect("connect a");
    let mut b = tokio::net::TcpStream::connect(&addr).await.expect("connect b");
    assert!(raw_get(&mut a, "/api/v1/me", &s.token).await.starts_with("HTTP/1.1 200"));
    assert!(raw_get(&mut b, "/api/v1/me", &s.token).await.starts_with("HTTP/1.1 200"));
    // A third connection is queued by the kernel, not served.
    let mut c = tokio::net::TcpStream::connect(&addr).await.expect("connect c");
    let request = format!("GET /api/v1/me HTTP/1.1\r\nHost: plugdesk\r\nAuthorization: Bearer {}\r\n\r\n", s.token);
    c.write_all(request.as_bytes()).await.expect("send on c");
    let mut buf = [0u8; 64];
    assert!(tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await.is_err(), "c was served");
    // The open connections keep working.
    assert!(raw_get(&mut a, "/api/v1/me", &s.token).await.starts_with("HTTP/1.1 200"));
    // One closes: the waiting one is served.
    drop(a);
    let mut got = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = c.read(&mut buf).await.expect("read c");
            assert!(n > 0, "c was closed");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "c was not served after a slot freed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    drop(b);
}
