//! End-to-end tests of workflows and templates against the real binary: templates edited,
//! refused and previewed through the API; one transaction per event; loops bounded; outgoing
//! webhooks, notifications, follow-ups and cron schedules; replay; the automatic-reply cap.

mod remote;
mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Scratch, Server, assert_error};

/// A server whose `plugdesk.toml` holds `config`.
async fn server_with(config: &str) -> Server {
    let scratch = Scratch::new();
    let token = scratch.init("default");
    scratch.config(config);
    Server::serve(scratch, token).await
}

async fn workflow(s: &Server, name: &str, source: &str) -> Value {
    let (status, wf) = s.post("/api/v1/workflows", json!({ "name": name, "source": source })).await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    wf
}

async fn customer_ticket(s: &Server, subject: &str, email: &str, language: &str) -> Value {
    let (status, t) = s
        .post(
            "/api/v1/tickets",
            json!({ "subject": subject, "body": "Hallo, bitte helfen Sie mir.", "customer": { "email": email, "name": "Anna Muster", "language": language } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    t
}

async fn messages(s: &Server, ticket: &Value, count: usize) -> Vec<Value> {
    let m = s
        .wait_for(&format!("/api/v1/tickets/{}/messages", ticket["id"]), Duration::from_secs(10), |m| {
            m["items"].as_array().is_some_and(|m| m.len() >= count)
        })
        .await;
    m["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn templates_are_edited_checked_previewed_and_used_by_the_next_reply() {
    let s = Server::start().await;
    let (_, all) = s.get("/api/v1/templates").await;
    let find = |all: &Value, p: &str, c: &str, l: &str| {
        all["templates"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["purpose"] == p && t["channel"] == c && t["language"] == l).cloned())
    };
    let bundled = find(&all, "lost_parcel", "chat", "de").expect("bundled variant");
    assert_eq!(bundled["origin"], "bundled");
    assert!(find(&all, "survey_invitation", "email", "en").is_some_and(|t| t["html"].is_string()), "{all}");
    assert!(all["partials"].as_array().is_some_and(|p| p.iter().any(|p| p["name"] == "greeting")), "{all}");

    let t = customer_ticket(&s, "Paket weg", "anna@example.com", "de").await;
    let tid = t["id"].as_i64().expect("id");
    let (status, p) = s.post("/api/v1/templates/preview", json!({ "ticket_id": tid, "purpose": "lost_parcel" })).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert!(p["text"].as_str().unwrap_or("").starts_with("Guten Tag Anna Muster,"), "{p}");
    assert_eq!((p["channel"].as_str(), p["language"].as_str()), (Some("chat"), Some("de")));

    // Broken templates are refused with line and column, and nothing is saved.
    let path = "/api/v1/templates/lost_parcel/chat/de";
    let (status, err) = s.put(path, json!({ "text": "Hallo\n{{frob ticket.number}}" })).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("script_error")));
    assert_eq!((err["error"]["line"].as_u64(), err["error"]["column"].as_u64()), (Some(2), Some(3)), "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or("").contains("frob"), "{err}");
    let (status, err) = s.put(path, json!({ "text": "{{#if customer.name}}\nHallo" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"]["line"].as_u64().is_some_and(|l| l >= 1), "{err}");
    let (status, err) = s.put(path, json!({ "text": "{{> missing_partial}}" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    let (_, all) = s.get("/api/v1/templates").await;
    assert_eq!(find(&all, "lost_parcel", "chat", "de").expect("variant")["origin"], "bundled");

    // A helper written in Rhai, and a template using it; the helper cannot go while used.
    let (status, h) = s
        .put(
            "/api/v1/template-helpers/stars",
            json!({ "source": "let n = params[0]; let s = \"\"; for i in 0..n { s += \"*\"; } s" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let (status, saved) = s
        .put(
            path,
            json!({ "text": "{{> greeting}}\nWir suchen Paket {{ticket.number}} {{stars 3}} {{upper customer.name}}" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(find(&saved, "lost_parcel", "chat", "de").expect("variant")["origin"], "workspace");
    let (status, err) = s.call(Method::DELETE, "/api/v1/template-helpers/stars", Some(&s.token), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a template still calls it: {err}");
    let (_, p) = s.post("/api/v1/templates/preview", json!({ "ticket_id": tid, "purpose": "lost_parcel" })).await;
    let expected = format!("Guten Tag Anna Muster,\nWir suchen Paket {} *** ANNA MUSTER", t["number"]);
    assert_eq!(p["text"].as_str(), Some(expected.as_str()), "{p}");

    // A draft previews without being saved; an SMS longer than one message is refused.
    let (_, d) = s
        .post(
            "/api/v1/templates/preview",
            json!({ "ticket_id": tid, "purpose": "lost_parcel", "draft": { "text": "Entwurf {{ticket.subject}}" } }),
        )
        .await;
    assert_eq!(d["text"], "Entwurf Paket weg", "{d}");
    let (_, p) = s.post("/api/v1/templates/preview", json!({ "ticket_id": tid, "purpose": "lost_parcel" })).await;
    assert_eq!(p["text"].as_str(), Some(expected.as_str()), "the draft was not saved");
    let long = "x".repeat(200);
    let (status, err) = s
        .post(
            "/api/v1/templates/preview",
            json!({ "ticket_id": tid, "purpose": "acknowledgement", "channel": "sms", "draft": { "text": long } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    // The next event's reply uses the edited template, without a restart.
    workflow(
        &s,
        "Parcel",
        "// on: ticket.created\nif ticket.subject.contains(\"Paket\") { reply_template(\"lost_parcel\"); }\n",
    )
    .await;
    let t2 = customer_ticket(&s, "Paket verloren", "anna@example.com", "de-AT").await;
    let m = messages(&s, &t2, 2).await;
    assert_eq!(m[1]["body"], format!("Guten Tag Anna Muster,\nWir suchen Paket {} *** ANNA MUSTER", t2["number"]));
    assert_eq!(m[1]["direction"], "outbound");

    // Removing the workspace's variant brings the bundled one back; removing it again is a 404.
    let (status, _) = s.call(Method::DELETE, path, Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.call(Method::DELETE, path, Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, p) = s.post("/api/v1/templates/preview", json!({ "ticket_id": tid, "purpose": "lost_parcel" })).await;
    assert!(p["text"].as_str().unwrap_or("").contains("Versanddienstleister"), "{p}");
    let (status, _) = s.call(Method::DELETE, "/api/v1/template-helpers/stars", Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &s.post("/api/v1/templates/preview", json!({ "ticket_id": tid, "purpose": "no_such_purpose" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "no_such_purpose",
    );
}

#[tokio::test]
async fn one_events_actions_commit_per_workflow_and_cascades_stop() {
    let s = Server::start().await;
    // Refused as a whole: the tag must not stay when the assignment fails.
    let bad = workflow(
        &s,
        "Bad",
        "// on: ticket.created\n// order: 1\nadd_tag(\"from-bad\");\nnote(\"bad note\");\nassign(999999);\n",
    )
    .await;
    workflow(&s, "Good", "// on: ticket.created\n// order: 2\nadd_tag(\"from-good\");\nnote(\"good note\");\n").await;
    // A workflow that would flip the priority forever if its own changes triggered it again.
    let flip = workflow(
        &s,
        "Flip",
        "// on: ticket.updated when priority\nset_priority(if ticket.priority == \"high\" { \"low\" } else { \"high\" });\n",
    )
    .await;
    let t = s.ticket("Hello", "ben@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let done = s
        .wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(10), |t| t["tags"] == json!(["from-good"]))
        .await;
    assert_eq!(done["assignee_id"], Value::Null, "{done}");
    let m = messages(&s, &t, 2).await;
    let bodies: Vec<&str> = m.iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies.len(), 2, "only the good note: {bodies:?}");
    assert_eq!(bodies[1], "good note");
    let w = s
        .wait_for(&format!("/api/v1/workflows/{}", bad["id"]), Duration::from_secs(10), |w| w["stats"]["errors"] == 1)
        .await;
    assert!(w["stats"]["last_error"].as_str().unwrap_or("").contains("agent 999999"), "{w}");

    let (status, _) = s.patch(&format!("/api/v1/tickets/{id}"), json!({ "priority": "urgent" })).await;
    assert_eq!(status, StatusCode::OK);
    s.wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(10), |t| t["priority"] == "high").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, t) = s.get(&format!("/api/v1/tickets/{id}")).await;
    assert_eq!(t["priority"], "high", "the workflow's own change did not trigger it again");
    let (_, events) = s.get(&format!("/api/v1/tickets/{id}/events")).await;
    let flips = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["actor"] == format!("workflow:{}", flip["id"]))
        .count();
    assert_eq!(flips, 1, "{events}");
}

#[tokio::test]
async fn webhooks_notifications_and_follow_ups_leave_through_their_own_paths() {
    let remote = remote::Remote::start().await;
    let s = server_with("[workflows]\ntick_ms = 100\nwebhook_retry_base_ms = 100\n").await;
    let (status, agent) = s
        .post(
            "/api/v1/agents",
            json!({ "name": "Ida", "email": "ida@example.com", "presence": "online", "capacity": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (_, tok) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "ida" })).await;
    let agent_token = tok["token"].as_str().expect("token").to_owned();

    assert_error(
        &s.post("/api/v1/webhooks", json!({ "name": "crm", "url": "ftp://127.0.0.1/x" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "http",
    );
    let (status, hook) = s
        .post("/api/v1/webhooks", json!({ "name": "crm", "url": format!("{}/sink", remote.base), "secret": "s3cret" }))
        .await;
    assert_eq!((status, hook["signed"].clone()), (StatusCode::CREATED, json!(true)), "{hook}");
    remote.answer_next(&[503]);
    let source = format!(
        "// on: ticket.created\nwebhook(\"crm\", #{{ number: ticket.number, tier: customer.tier }});\nnotify({}, `New ticket ${{ticket.number}}`);\nfollow_up(0.0005, \"check the carrier\");\n",
        agent["id"]
    );
    workflow(&s, "Out", &source).await;
    workflow(&s, "Followed", "// on: ticket.follow_up\nadd_tag(\"followed-up\");\nnote(event.changes.note);\n").await;
    // A workflow calling an unknown webhook fails alone and is reported.
    let missing = workflow(&s, "Missing", "// on: ticket.created\nwebhook(\"nope\");\n").await;

    let t = s.ticket("Where is my order?", "carl@example.com").await;
    let id = t["id"].as_i64().expect("id");
    // Delivered on the second attempt (the first got a 503), signed.
    let d = s
        .wait_for("/api/v1/webhook-deliveries", Duration::from_secs(10), |d| d["items"][0]["status"] == "delivered")
        .await;
    assert_eq!((d["items"][0]["attempts"].clone(), d["items"][0]["webhook"].clone()), (json!(2), json!("crm")), "{d}");
    let raw = remote.raw_received();
    assert_eq!(raw.len(), 2, "{raw:?}");
    let (headers, body) = &raw[1];
    let body_json: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(body_json["payload"], json!({ "number": t["number"], "tier": "normal" }), "{body}");
    assert_eq!(body_json["ticket_id"], id);
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
    mac.update(body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert!(headers.iter().any(|(k, v)| k == "x-plugdesk-signature" && *v == expected), "{headers:?}");
    let delivery = d["items"][0]["id"].to_string();
    assert!(headers.iter().any(|(k, v)| k == "x-plugdesk-delivery" && *v == delivery), "{headers:?}");

    // The agent sees the notification; the admin does not.
    let (_, mine) = s.call(Method::GET, "/api/v1/notifications?unread=true", Some(&agent_token), None).await;
    let items = mine["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{mine}");
    assert_eq!(items[0]["body"], format!("New ticket {}", t["number"]));
    let (_, admins) = s.get("/api/v1/notifications").await;
    assert_eq!(admins["items"].as_array().map(Vec::len), Some(0), "{admins}");
    let read = format!("/api/v1/notifications/{}/read", items[0]["id"]);
    let (status, _) = s.call(Method::POST, &read, Some(&agent_token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.call(Method::POST, &read, Some(&s.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not the admin's notification");
    let (_, mine) = s.call(Method::GET, "/api/v1/notifications?unread=true", Some(&agent_token), None).await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(0), "{mine}");

    // The follow-up fires after ~2 s and runs the workflows listening for it.
    let done = s
        .wait_for(&format!("/api/v1/tickets/{id}"), Duration::from_secs(15), |t| {
            t["tags"].as_array().is_some_and(|tags| tags.contains(&json!("followed-up")))
        })
        .await;
    assert_eq!(done["id"], id);
    let (_, events) = s.get(&format!("/api/v1/tickets/{id}/events")).await;
    let follow: Vec<&Value> =
        events["items"].as_array().expect("events").iter().filter(|e| e["type"] == "ticket.follow_up").collect();
    assert_eq!(follow.len(), 1, "fired once: {events}");
    assert_eq!(
        (follow[0]["actor"].as_str(), follow[0]["changes"]["note"].as_str()),
        (Some("schedule"), Some("check the carrier"))
    );
    let w = s
        .wait_for(&format!("/api/v1/workflows/{}", missing["id"]), Duration::from_secs(5), |w| {
            w["stats"]["errors"] == 1
        })
        .await;
    assert!(w["stats"]["last_error"].as_str().unwrap_or("").contains("nope"), "{w}");
}

#[tokio::test]
async fn automatic_replies_are_capped_per_customer_and_hour() {
    let s = server_with("[workflows]\nauto_replies_per_hour = 2\n").await;
    workflow(
        &s,
        "Echo",
        "// on: message.received\n// on: ticket.created\nreply(`Danke für Ihre Nachricht zu #${ticket.number}.`);\n",
    )
    .await;
    let t = s.ticket("Frage", "dora@example.com").await;
    let id = t["id"].as_i64().expect("id");
    messages(&s, &t, 2).await;
    for i in 0..2 {
        let (status, m) =
            s.post(&format!("/api/v1/tickets/{id}/messages"), json!({ "body": format!("Noch eine Frage {i}") })).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
    }
    let m = messages(&s, &t, 6).await;
    let outbound = m.iter().filter(|m| m["direction"] == "outbound").count();
    let held: Vec<&Value> = m
        .iter()
        .filter(|m| {
            m["direction"] == "internal" && m["body"].as_str().unwrap_or("").starts_with("Automatic reply held back")
        })
        .collect();
    assert_eq!((outbound, held.len()), (2, 1), "{m:?}");
    assert!(held[0]["body"].as_str().unwrap_or("").contains("Danke für Ihre Nachricht"), "{held:?}");
}

#[tokio::test]
async fn a_replay_reports_what_a_draft_would_have_done_without_doing_it() {
    let s = Server::start().await;
    for (subject, email) in
        [("Refund please", "a@example.com"), ("Hello", "b@example.com"), ("refund for order 7", "c@example.com")]
    {
        s.ticket(subject, email).await;
    }
    let draft = "// on: ticket.created\nif ticket.subject.to_lower().contains(\"refund\") {\n  set_category(\"refund\");\n  add_tag(\"money\");\n}\n";
    let (status, r) = s.post("/api/v1/workflows/replay", json!({ "source": draft, "days": 7 })).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!((r["events_fired"].clone(), r["tickets_changed"].clone()), (json!(3), json!(2)), "{r}");
    let runs = &r["tickets"][0]["runs"][0];
    assert_eq!(runs["event"], "ticket.created");
    assert_eq!(runs["actions"][0], json!({ "name": "update", "args": { "category": "refund" } }), "{r}");
    let (_, list) = s.get("/api/v1/tickets").await;
    assert!(
        list["items"].as_array().expect("items").iter().all(|t| t["category"].is_null() && t["tags"] == json!([])),
        "the replay changed nothing: {list}"
    );
    // A failing draft is reported per event, a broken one refused with its position.
    let (_, r) = s
        .post("/api/v1/workflows/replay", json!({ "source": "// on: ticket.created\nlet x = ticket.subject / 2;\n" }))
        .await;
    assert_eq!(r["errors"], 3, "{r}");
    let (status, err) = s.post("/api/v1/workflows/replay", json!({ "source": "// on: ticket.created\nif {\n" })).await;
    assert_eq!((status, err["error"]["line"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(2)), "{err}");
    assert_error(
        &s.post("/api/v1/workflows/replay", json!({ "source": draft, "days": 0 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "days",
    );
}

#[tokio::test]
async fn a_cron_workflow_sweeps_the_open_tickets_once_a_minute() {
    let s = server_with("[workflows]\ntick_ms = 200\n").await;
    assert_error(
        &s.post("/api/v1/workflows", json!({ "name": "Bad", "source": "// on: schedule 61 * * * *\n" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "script_error",
        "minute 61",
    );
    let open = s.ticket("Open one", "e@example.com").await;
    let closed = s.ticket("Done one", "f@example.com").await;
    for step in ["open", "resolved"] {
        let (status, _) = s.patch(&format!("/api/v1/tickets/{}", closed["id"]), json!({ "status": step })).await;
        assert_eq!(status, StatusCode::OK);
    }
    let wf =
        workflow(&s, "Sweep", "// on: schedule * * * * *\nadd_tag(\"swept\");\nnote(`sweep ${event.kind}`);\n").await;
    assert_eq!(wf["triggers"], json!(["schedule"]), "{wf}");
    // The next minute boundary runs it over the open ticket only, once.
    let t = s
        .wait_for(&format!("/api/v1/tickets/{}", open["id"]), Duration::from_secs(75), |t| {
            t["tags"] == json!(["swept"])
        })
        .await;
    assert_eq!(t["tags"], json!(["swept"]));
    let (_, c) = s.get(&format!("/api/v1/tickets/{}", closed["id"])).await;
    assert_eq!(c["tags"], json!([]), "resolved tickets are not swept: {c}");
    let m = messages(&s, &open, 2).await;
    assert_eq!(m.iter().filter(|m| m["body"] == "sweep schedule").count(), 1, "{m:?}");
}

#[tokio::test]
async fn the_new_endpoints_refuse_bad_input_with_precise_errors() {
    let s = Server::start().await;
    let t = s.ticket("Hello", "gina@example.com").await;
    // Unknown fields and wrong shapes.
    assert_error(
        &s.put("/api/v1/templates/acknowledgement/chat/en", json!({ "text": "x", "colour": "red" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_json",
        "colour",
    );
    assert_error(
        &s.post("/api/v1/webhooks", json!({ "name": "Bad Name", "url": "http://127.0.0.1:9/x" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "name",
    );
    assert_error(
        &s.post("/api/v1/templates/preview", json!({ "ticket_id": 999999, "purpose": "acknowledgement" })).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "ticket",
    );
    assert_error(
        &s.post("/api/v1/workflows/replay", json!({ "workflow_id": 1, "days": 91 })).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "workflow",
    );
    assert_error(
        &s.post("/api/v1/workflows/replay", json!({ "source": "// on: ticket.created\n", "days": 91 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "between 1 and 90",
    );
    // A workflow over 64 KiB is refused before it is compiled.
    let huge = format!("// on: ticket.created\n{}", "let x = 1;\n".repeat(7000));
    assert_error(
        &s.post("/api/v1/workflows", json!({ "name": "Huge", "source": huge })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "script_error",
        "at most 65536 bytes",
    );
    // A template over 64 KiB too.
    let (status, err) = s.put("/api/v1/templates/acknowledgement/chat/en", json!({ "text": "x".repeat(70_000) })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    // A helper that does not compile names its line and column.
    let (status, err) = s.put("/api/v1/template-helpers/broken", json!({ "source": "let x = ;" })).await;
    assert_eq!((status, err["error"]["line"].as_u64()), (StatusCode::UNPROCESSABLE_ENTITY, Some(1)), "{err}");
    // Agents may read templates but not change them.
    let (_, agent) = s.post("/api/v1/agents", json!({ "name": "Hal", "email": "hal@example.com" })).await;
    let (_, tok) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "hal" })).await;
    let agent_token = tok["token"].as_str().expect("token").to_owned();
    let (status, _) = s.call(Method::GET, "/api/v1/templates", Some(&agent_token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .call(
            Method::PUT,
            "/api/v1/templates/acknowledgement/chat/en",
            Some(&agent_token),
            Some(json!({ "text": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Surveys: unknown tokens are 404, ratings outside 1-5 are 422, other bodies 415.
    let client = reqwest::Client::new();
    let missing = client.get(format!("{}/survey/{}", s.base, "0".repeat(32))).send().await.expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let wf = workflow(&s, "Survey now", "// on: ticket.updated when status\nrequest_survey();\n").await;
    assert!(wf["id"].is_i64());
    let (status, _) = s.patch(&format!("/api/v1/tickets/{}", t["id"]), json!({ "status": "open" })).await;
    assert_eq!(status, StatusCode::OK);
    let m = messages(&s, &t, 2).await;
    let invitation = m[1]["body"].as_str().unwrap_or_default();
    let link = invitation.split_whitespace().find(|w| w.contains("/survey/")).expect("link").to_owned();
    let path = &link[link.find("/survey/").unwrap_or(0)..];
    let bad = client.post(format!("{}{path}", s.base)).json(&json!({ "rating": 9 })).send().await.expect("post");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let long = json!({ "rating": 3, "comment": "x".repeat(4001) });
    let bad = client.post(format!("{}{path}", s.base)).json(&long).send().await.expect("post");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY, "a comment over 4,000 characters");
    let text = client.post(format!("{}{path}", s.base)).body("5").send().await.expect("post");
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let broken = client
        .post(format!("{}{path}", s.base))
        .header("content-type", "application/json")
        .body("{\"rating\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    // None of that answered it: a good answer still counts.
    let ok = client.post(format!("{}{path}", s.base)).json(&json!({ "rating": 4 })).send().await.expect("post");
    assert_eq!(ok.status(), StatusCode::OK);

    // A webhook payload over 64 KiB (as JSON) fails the workflow that sent it, with the reason.
    let (status, _) = s.post("/api/v1/webhooks", json!({ "name": "crm", "url": "http://127.0.0.1:9/x" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let big = workflow(
        &s,
        "Big",
        // 12,000 control characters: 12 KB in the script, 72 KB as escaped JSON.
        "// on: ticket.created\nlet s = \"\";\nfor i in 0..12000 { s += \"\\x01\"; }\nwebhook(\"crm\", #{ a: s });\n",
    )
    .await;
    s.ticket("Big payload", "ivo@example.com").await;
    let w = s
        .wait_for(&format!("/api/v1/workflows/{}", big["id"]), Duration::from_secs(10), |w| w["stats"]["errors"] == 1)
        .await;
    assert!(w["stats"]["last_error"].as_str().unwrap_or("").contains("at most 65536"), "{w}");
    let (_, d) = s.get("/api/v1/webhook-deliveries").await;
    assert_eq!(d["items"].as_array().map(Vec::len), Some(0), "nothing queued: {d}");
}

/// Regression (#11, SSRF): a workspace admin could point a webhook at loopback or private
/// addresses, and the delivery list turned the server into a port scanner. Now only the
/// operator's `[network] allow` opens them, checked on the address connected to.
#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_unless_the_operator_allows_them() {
    let listener = support::CountingListener::start(true);
    let port = listener.port;
    let fast = "[workflows]\ntick_ms = 50\nwebhook_retry_base_ms = 50\n";
    // The operator allows loopback: saved and delivered.
    let s = server_with(fast).await;
    let (status, hook) =
        s.post("/api/v1/webhooks", json!({ "name": "crm", "url": format!("http://127.0.0.1:{port}/in") })).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    workflow(&s, "Out", "// on: ticket.created\nwebhook(\"crm\", #{ n: 1 });\n").await;
    s.ticket("Allowed", "anna@example.com").await;
    s.wait_for("/api/v1/webhook-deliveries", Duration::from_secs(10), |d| d["items"][0]["status"] == "delivered").await;
    assert_eq!(listener.accepts(), 1);

    // Without it (the default), the stored webhook is refused when it would connect, at once.
    let (scratch, token) = s.stop();
    std::fs::write(scratch.dir.join("plugdesk.toml"), fast).expect("write config");
    let s = Server::serve(scratch, token).await;
    s.ticket("Refused", "ben@example.com").await;
    // The restarted node waits out the stopped one's dispatch lease (30 s) first.
    let d = s
        .wait_for("/api/v1/webhook-deliveries", Duration::from_secs(60), |d| d["items"][0]["status"] == "failed")
        .await;
    assert_eq!(
        d["items"][0]["last_error"],
        "outbound connections to loopback address 127.0.0.1 are not allowed; an operator may allow it with [network] allow in plugdesk.toml",
        "{d}"
    );
    assert_eq!(d["items"][0]["attempts"], 1, "a refusal is not retried: {d}");

    // A name that resolves to loopback is refused the same way.
    let (status, hook) =
        s.post("/api/v1/webhooks", json!({ "name": "crm", "url": format!("http://localhost:{port}/in") })).await;
    assert!(status.is_success(), "{hook}");
    s.ticket("Named", "cleo@example.com").await;
    let d = s
        .wait_for("/api/v1/webhook-deliveries", Duration::from_secs(10), |d| {
            d["items"].as_array().is_some_and(|i| i.len() == 3) && d["items"][0]["status"] == "failed"
        })
        .await;
    let error = d["items"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("outbound connections to loopback address") && error.contains("(localhost resolves to it)"),
        "{d}"
    );

    // An internal literal is refused when saved: 422, nothing written.
    assert_error(
        &s.post("/api/v1/webhooks", json!({ "name": "meta", "url": "http://169.254.169.254/latest/meta-data" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "outbound connections to link-local address 169.254.169.254 are not allowed",
    );
    let (_, hooks) = s.get("/api/v1/webhooks").await;
    assert!(!hooks.to_string().contains("meta"), "{hooks}");
    assert_eq!(listener.accepts(), 1, "no refused delivery reached the listener");
}
