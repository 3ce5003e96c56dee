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
    // Every event so far handled, the workflow's own change included.
    s.settled(Duration::from_secs(20)).await;
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

/// An agent's token (role `agent`) in the server's workspace.
async fn agent_token(s: &Server, email: &str) -> String {
    let (status, agent) = s.post("/api/v1/agents", json!({ "name": "Agent", "email": email })).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, tok) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "agent" })).await;
    assert_eq!((status, tok["role"].as_str()), (StatusCode::CREATED, Some("agent")), "{tok}");
    tok["token"].as_str().expect("token").to_owned()
}

/// Issue #11: a self-including inline partial passed the template check and overflowed the
/// stack when rendered; an agent's preview aborted the whole server.
#[tokio::test]
async fn a_self_including_inline_partial_is_refused_and_the_server_lives_on() {
    let s = Server::start().await;
    let t = customer_ticket(&s, "Hallo", "inline@example.com", "en").await;
    let agent = agent_token(&s, "agent-inline@example.com").await;
    let bomb = "{{#*inline \"a\"}}{{> a}}{{/inline}}{{> a}}";
    let preview = json!({ "ticket_id": t["id"], "purpose": "acknowledgement", "draft": { "text": bomb } });
    let got = s.call(Method::POST, "/api/v1/templates/preview", Some(&agent), Some(preview)).await;
    assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "script_error",
        "partials would include each other in a cycle (inline a → inline a)",
    );
    assert_eq!((got.1["error"]["line"].as_u64(), got.1["error"]["column"].as_u64()), (Some(1), Some(21)), "{}", got.1);

    // Mutual inline partials over lines, saved by an admin: refused, nothing written.
    let mutual = "Hello\n{{#*inline \"a\"}}{{> b}}{{/inline}}\n{{#*inline \"b\"}}{{> a}}{{/inline}}{{> a}}";
    let got = s.put("/api/v1/templates/acknowledgement/chat/en", json!({ "text": mutual })).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "script_error", "(inline a → inline b → inline a)");
    assert_eq!((got.1["error"]["line"].as_u64(), got.1["error"]["column"].as_u64()), (Some(3), Some(21)), "{}", got.1);
    // A partial whose inline partial includes the partial itself.
    let got = s
        .put("/api/v1/template-partials/loop/en", json!({ "text": "{{#*inline \"a\"}}{{> loop}}{{/inline}}{{> a}}" }))
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "script_error", "(loop/en → loop/en)");
    assert_eq!((got.1["error"]["line"].as_u64(), got.1["error"]["column"].as_u64()), (Some(1), Some(21)), "{}", got.1);
    let (_, all) = s.get("/api/v1/templates").await;
    assert!(all["partials"].as_array().is_some_and(|p| p.iter().all(|p| p["name"] != "loop")), "{all}");
    assert!(
        all["templates"]
            .as_array()
            .is_some_and(|t| t.iter().filter(|t| t["purpose"] == "acknowledgement").all(|t| t["origin"] == "bundled")),
        "{all}"
    );

    // The server is alive and renders as before.
    let (status, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, p) = s
        .call(
            Method::POST,
            "/api/v1/templates/preview",
            Some(&agent),
            Some(json!({ "ticket_id": t["id"], "purpose": "acknowledgement" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
}

/// Issue #11: nested `{{#each}}` in an agent's preview (eight ticket fields per level, nine
/// levels: 134 million loop bodies) froze the server for 80 s per request.
#[tokio::test]
async fn a_nested_each_bomb_in_previews_is_a_422_and_the_server_keeps_answering() {
    // Four bombs share the pool's workers; none should give up waiting for one.
    let s = server_with("[compute]\nqueue_ms = 120000\n").await;
    let t = customer_ticket(&s, "Hallo", "each@example.com", "en").await;
    let agent = agent_token(&s, "agent-each@example.com").await;
    let bomb = format!("{}{}", "{{#each @root.ticket}}".repeat(9), "{{/each}}".repeat(9));
    let body = json!({ "ticket_id": t["id"], "purpose": "acknowledgement", "draft": { "text": bomb } });
    // A deadline for a server that hangs, not a measure of speed.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let bombs: Vec<_> = (0..4)
        .map(|_| {
            let request = client.post(format!("{}/api/v1/templates/preview", s.base)).bearer_auth(&agent).json(&body);
            tokio::spawn(async move {
                let response = request.send().await.expect("the preview is answered");
                let status = response.status();
                (status, response.json::<Value>().await.expect("a JSON answer"))
            })
        })
        .collect();
    let health = client.get(format!("{}/healthz", s.base)).send().await.expect("healthz is answered");
    assert_eq!(health.status(), StatusCode::OK);
    for bomb in bombs {
        let got = bomb.await.expect("the preview task");
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "script_error", "rendering takes");
        assert_eq!(got.1["error"]["line"].as_u64(), Some(1), "{}", got.1);
    }
    let (status, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Issue #11: any agent could replay workflows, 5,000 runs of up to 100 ms each per request.
/// Replays are an admin's now, and stop after `compute.replay_ms` with what they found.
#[tokio::test]
async fn replays_are_for_admins_and_stop_at_their_time_budget() {
    let s = server_with("[compute]\nreplay_ms = 1000\n").await;
    for i in 0..30 {
        s.ticket(&format!("Ticket {i}"), &format!("replay{i}@example.com")).await;
    }
    // Each run rewrites a 32 KiB string until the engine stops it at its 100 ms.
    let slow = "// on: ticket.created\nlet s = \"x\";\nfor i in 0..15 { s += s; }\nloop { s.replace(\"x\", \"y\"); s.replace(\"y\", \"x\"); }\n";
    let agent = agent_token(&s, "agent-replay@example.com").await;
    let got = s.call(Method::POST, "/api/v1/workflows/replay", Some(&agent), Some(json!({ "source": slow }))).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden", "replaying workflows needs an admin token");

    let (status, r) = s.post("/api/v1/workflows/replay", json!({ "source": slow })).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!((r["stopped"].as_str(), r["truncated"].as_bool()), (Some("time"), Some(true)), "{r}");
    assert_eq!(r["time_budget_ms"], 1000, "{r}");
    let examined = r["events_examined"].as_u64().unwrap_or(0);
    assert!((1..30).contains(&examined), "stopped before the 30 events: {r}");
    assert_eq!(r["errors"], r["events_fired"], "every run was stopped by the engine: {r}");
}

fn has_tag(t: &Value, tag: &str) -> bool {
    t["tags"].as_array().is_some_and(|tags| tags.contains(&json!(tag)))
}

/// Regression (#11, finding 2): an event whose handling killed the server was handled again
/// after every restart, so the server died again and again; now it is set aside after three
/// attempts (listed with its reason) and the events after it are handled.
#[tokio::test]
async fn an_event_that_kills_the_server_every_time_is_set_aside_and_later_events_run() {
    let mut s = Server::start().await;
    // Forty workflows that burn their whole budget on one ticket: seconds of work on its
    // event, time for the test to kill the server while it is at it.
    for i in 0..40 {
        let burn = "// on: ticket.created\nif ticket.subject == \"burn\" { let n = 0; loop { n += 1; } }\n";
        workflow(&s, &format!("Burn {i}"), burn).await;
    }
    // A rule that fails the ordinary way is recorded and holds nothing up.
    let broken = workflow(&s, "Broken", "// on: ticket.created\nthrow \"this workflow is broken\";\n").await;
    workflow(&s, "Seen", "// on: ticket.created\nadd_tag(\"seen\");\n").await;

    let burned = s.ticket("burn", "bert@example.com").await;
    let (_, events) = s.get(&format!("/api/v1/tickets/{}/events", burned["id"])).await;
    let event = events["items"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "ticket.created"))
        .and_then(|e| e["id"].as_i64())
        .expect("ticket.created event");
    for attempt in 1..=3 {
        // The pass is counted before it handles the event: kill the server while it does.
        s.wait_for("/api/v1/events/dispatcher", Duration::from_secs(60), |d| {
            d["attempts"] == attempt && d["last_event_id"].as_i64().is_some_and(|c| c < event)
        })
        .await;
        let (scratch, token) = s.kill();
        s = Server::serve(scratch, token).await;
    }
    let poisoned =
        s.wait_for("/api/v1/events/poisoned", Duration::from_secs(60), |p| p["items"][0]["event_id"] == event).await;
    let item = &poisoned["items"][0];
    assert_eq!(
        (item["ticket_id"].clone(), item["type"].clone(), item["attempts"].clone()),
        (burned["id"].clone(), json!("ticket.created"), json!(3)),
        "{poisoned}"
    );
    assert!(item["reason"].as_str().unwrap_or("").contains("stopped 3 times"), "{poisoned}");

    // The server stays up and handles what comes next.
    let next = s.ticket("hello", "nina@example.com").await;
    s.wait_for(&format!("/api/v1/tickets/{}", next["id"]), Duration::from_secs(30), |t| has_tag(t, "seen")).await;
    let (_, t) = s.get(&format!("/api/v1/tickets/{}", burned["id"])).await;
    assert!(!has_tag(&t, "seen"), "the set-aside event ran nothing: {t}");
    let w = s
        .wait_for(&format!("/api/v1/workflows/{}", broken["id"]), Duration::from_secs(10), |w| {
            w["stats"]["errors"] == 1
        })
        .await;
    assert!(w["stats"]["last_error"].as_str().unwrap_or("").contains("broken"), "{w}");
    let (_, d) = s.get("/api/v1/events/dispatcher").await;
    assert_eq!(d["attempts"], 0, "{d}");

    // Admins only.
    let (_, agent) =
        s.post("/api/v1/agents", json!({ "name": "Ida", "email": "ida@example.com", "presence": "online" })).await;
    let (_, tok) = s.post("/api/v1/tokens", json!({ "agent_id": agent["id"], "name": "ida" })).await;
    let agent_token = tok["token"].as_str().expect("token").to_owned();
    assert_error(
        &s.call(Method::GET, "/api/v1/events/poisoned", Some(&agent_token), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "admin",
    );
}

/// Regression (#11, finding 10): one cursor for all workspaces, one event after the other and
/// one webhook request at a time, so a workspace with slow workflows and a webhook endpoint
/// that never answers held up every other workspace; now B's event and B's webhook get
/// through while A's backlog and A's requests are still pending.
#[tokio::test]
async fn a_slow_workspace_does_not_hold_up_another_workspaces_events_or_webhooks() {
    let scratch = Scratch::new();
    let token_a = scratch.init("default");
    let token_b = scratch.init("other");
    // Requests to A's endpoint hang for the whole test.
    scratch.config("[workflows]\nwebhook_timeout_ms = 120000\n");
    let s = Server::serve(scratch, token_a).await;
    let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stall_addr = stall.local_addr().expect("addr");
    std::thread::spawn(move || {
        // Accepts and never answers.
        let held: Vec<_> = stall.incoming().collect();
        drop(held);
    });
    let remote = remote::Remote::start().await;

    let (status, _) =
        s.post("/api/v1/webhooks", json!({ "name": "slow", "url": format!("http://{stall_addr}/hook") })).await;
    assert_eq!(status, StatusCode::CREATED);
    workflow(&s, "Call", "// on: ticket.created\nwebhook(\"slow\", #{ n: ticket.number });\n").await;
    for i in 0..5 {
        workflow(&s, &format!("Slow {i}"), "// on: ticket.created\nlet i = 0;\nwhile i < 30000 { i += 1; }\n").await;
    }
    let b = |method: Method, path: &'static str, body: Option<Value>| {
        let (s, t) = (&s, token_b.clone());
        async move { s.call(method, path, Some(&t), body).await }
    };
    let (status, _) =
        b(Method::POST, "/api/v1/webhooks", Some(json!({ "name": "fast", "url": format!("{}/sink", remote.base) })))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let source = "// on: ticket.created\nadd_tag(\"b-done\");\nwebhook(\"fast\", #{ n: ticket.number });\n";
    let (status, _) = b(Method::POST, "/api/v1/workflows", Some(json!({ "name": "B", "source": source }))).await;
    assert_eq!(status, StatusCode::CREATED);

    for i in 0..60 {
        s.ticket(&format!("A {i}"), &format!("a{i}@example.com")).await;
    }
    // A's first requests hang at the endpoint.
    s.wait_for("/api/v1/webhook-deliveries", Duration::from_secs(60), |d| {
        d["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let (status, t) = b(
        Method::POST,
        "/api/v1/tickets",
        Some(json!({ "subject": "B", "body": "Hello", "customer": { "email": "b@example.com" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let path = format!("/api/v1/tickets/{}", t["id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, t) = s.call(Method::GET, &path, Some(&token_b), None).await;
        if has_tag(&t, "b-done") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B's workflow never ran: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each of A's handled events queued one call: not all 60 are handled yet.
    let (_, d) = s.get("/api/v1/webhook-deliveries").await;
    assert!(d["items"].as_array().is_some_and(|i| i.len() < 60), "A's backlog was still waiting: {d}");
    let (_, a) = s.get("/api/v1/events/dispatcher").await;
    assert!(a["pending"].as_i64().is_some_and(|n| n > 0), "{a}");

    // B's call is delivered while A's first call still hangs, never attempted to its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) = b(Method::GET, "/api/v1/webhook-deliveries", None).await;
        if d["items"][0]["status"] == "delivered" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B's webhook was never delivered: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, d) = s.get("/api/v1/webhook-deliveries").await;
    let items = d["items"].as_array().cloned().unwrap_or_default();
    let first = items.last().expect("A's deliveries");
    assert_eq!((first["status"].clone(), first["attempts"].clone()), (json!("queued"), json!(0)), "{d}");
    assert_eq!(remote.raw_received().len(), 1);
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

/// #13: the dispatcher works a backlog in waves of many tickets, each wave in one transaction
/// with its cursor. Killed in the middle of it, the server resumes after the restart where the
/// last committed wave ended: every ticket gets its workflow's note exactly once.
#[tokio::test]
async fn a_server_killed_while_the_dispatcher_works_a_backlog_handles_every_event_exactly_once() {
    let scratch = Scratch::new();
    let token = scratch.init("default");
    let mut s = Server::serve(scratch, token).await;
    workflow(
        &s,
        "Count",
        "// on: ticket.created\nlet i = 0;\nwhile i < 2000 { i += 1; }\nnote(\"counted\");\nadd_tag(\"counted\");\n",
    )
    .await;
    // Six clients create tickets until the server dies under them.
    let created = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for worker in 0..6 {
        let (base, token, created) = (s.base.clone(), s.token.clone(), created.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..400 {
                let body = json!({ "subject": format!("Backlog {worker}-{i}"), "body": "x", "customer": { "email": format!("b{worker}-{i}@example.com") } });
                match client.post(format!("{base}/api/v1/tickets")).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => created.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    _ => break,
                };
            }
        }));
    }
    // Kill it once some waves are committed and others are still to come.
    let d = s
        .wait_for("/api/v1/events/dispatcher", Duration::from_secs(60), |d| {
            d["last_event_id"].as_i64().is_some_and(|c| c > 0) && d["pending"].as_i64().is_some_and(|n| n > 20)
        })
        .await;
    let (scratch, token) = s.kill();
    for c in clients {
        c.await.expect("client");
    }
    let tickets: usize = scratch.sql("SELECT COUNT(*) FROM tickets").parse().expect("count");
    let noted: usize = scratch.sql("SELECT COUNT(*) FROM messages WHERE body_text = 'counted'").parse().expect("count");
    assert!(
        tickets >= created.load(std::sync::atomic::Ordering::Relaxed) && noted < tickets,
        "killed mid-backlog: {d}"
    );
    s = Server::serve(scratch, token).await;
    s.settled(Duration::from_secs(120)).await;
    let once = s.scratch.sql(
        "SELECT COUNT(*) FROM tickets t WHERE (SELECT COUNT(*) FROM messages m WHERE m.ticket_id = t.id AND m.body_text = 'counted') = 1",
    );
    assert_eq!(once, tickets.to_string(), "every ticket noted once");
    let notes = s.scratch.sql("SELECT COUNT(*) FROM messages WHERE body_text = 'counted'");
    assert_eq!(notes, tickets.to_string(), "and no ticket twice");
    let (_, poisoned) = s.get("/api/v1/events/poisoned").await;
    assert_eq!(poisoned["items"], json!([]), "nothing set aside: {poisoned}");
}
