//! End-to-end tests of the web application over real HTTP: the setup link, sign-in and
//! sessions, CSRF refusals, the sign-in throttle, roles and workspaces, escaping of what
//! customers write, and the composer's promises (send once, never over unseen messages).
//! The browser test (tests/browser/workspace.mjs) drives the same pages in Chromium.

mod support;

use std::time::Duration;

use reqwest::header;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Browser, PASSWORD, Scratch, Server, attr_after};

/// `plugdesk init`'s output lines, and the setup token of its link.
fn init(scratch: &Scratch, workspace: &str) -> (Vec<String>, String) {
    let out = scratch.command(&["init", "--workspace", workspace]).output().expect("init");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let link = lines.iter().find(|l| l.contains("/setup/")).expect("a setup link line").trim().to_owned();
    assert!(link.starts_with("http://") && !link.contains(' '), "the link stands alone on its line: {link:?}");
    let token = link.rsplit('/').next().expect("token").to_owned();
    (lines, token)
}

/// A server whose admin has set a password through the setup link, and that admin's browser.
async fn admin_server() -> (Server, Browser) {
    let scratch = Scratch::new();
    // With the default workflow library, as a real first start has it.
    let token = scratch.init_with("default", &[]);
    let server = Server::serve(scratch, token).await;
    let admin = support::admin_browser(&server).await;
    (server, admin)
}

/// Invites an agent through the admin page and lets them set a password; their browser.
async fn invite_agent(server: &Server, admin: &mut Browser, email: &str) -> Browser {
    let page = admin.get("/settings/agents").await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let invited = admin
        .post(
            "/settings/agents/invite",
            &[("csrf", &csrf), ("name", "Anna Agent"), ("email", email), ("role", "agent")],
        )
        .await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.body);
    let start = invited.body.find("id=\"invite-link\">").expect("the link is shown") + "id=\"invite-link\">".len();
    let link = &invited.body[start..start + invited.body[start..].find('<').expect("end")];
    let path = link.strip_prefix(&server.base).unwrap_or(link).to_owned();
    assert!(path.starts_with("/invite/"), "{link}");
    let mut anna = Browser::new(&server.base);
    let form = anna.get(&path).await;
    let done =
        anna.post(&path, &[("csrf", &form.csrf()), ("password", PASSWORD), ("password_confirm", PASSWORD)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    anna
}

#[tokio::test]
async fn the_setup_link_signs_the_admin_in_once() {
    let scratch = Scratch::new();
    let (lines, setup) = init(&scratch, "default");
    let link_at = lines.iter().position(|l| l.contains("/setup/")).expect("link");
    assert!(link_at < lines.len() - 1, "the link comes before the token, which stays last: {lines:?}");
    assert!(lines.last().expect("last").starts_with("pd_"), "{lines:?}");
    let token = lines.last().expect("token").trim().to_owned();
    let server = Server::serve(scratch, token).await;
    let mut b = Browser::new(&server.base);

    let root = b.get("/").await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.location(), "/signin");

    let form = b.get(&format!("/setup/{setup}")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("type=\"password\"") && form.body.contains("name=\"password\""), "{}", form.body);
    // Too short a password is refused with the rule, and the link still works.
    let short = b
        .post(
            &format!("/setup/{setup}"),
            &[("csrf", &form.csrf()), ("password", "short"), ("password_confirm", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("At least 10 characters"), "{}", short.body);
    let done = b
        .post(
            &format!("/setup/{setup}"),
            &[("csrf", &form.csrf()), ("password", PASSWORD), ("password_confirm", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/");
    let cookie = done.headers.get(header::SET_COOKIE).expect("session cookie").to_str().expect("ascii");
    assert!(
        cookie.starts_with("pd_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "no Secure flag over plain http: {cookie}");
    let inbox = b.get("/").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("id=\"tickets\"") && inbox.body.contains("Administrator"), "{}", inbox.body);

    // The link is used up.
    let again = Browser::new(&server.base).get(&format!("/setup/{setup}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // The session is stored hashed: the cookie's value appears nowhere in the database.
    let secret = cookie.trim_start_matches("pd_session=").split(';').next().expect("value");
    let stored = server.scratch.sql("SELECT session_hash FROM web_sessions");
    assert!(!stored.contains(secret) && stored.len() >= 64, "{stored}");
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_the_signin_page_follows_the_browser_language() {
    let server = Server::start().await;
    let mut de = Browser::new(&server.base);
    de.accept_language = "de-DE,de;q=0.9,en;q=0.5";
    let page = de.get("/signin").await;
    assert!(page.body.contains("<html lang=\"de\">") && page.body.contains("Anmelden"), "{}", page.body);
    let csp = page.headers.get(header::CONTENT_SECURITY_POLICY).expect("csp").to_str().expect("ascii").to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    let en = Browser::new(&server.base).get("/signin").await;
    assert!(en.body.contains("<html lang=\"en\">") && en.body.contains("Sign in"), "{}", en.body);

    // Assets: hashed names, cached for a year, with their type.
    let css = attr_after(&en.body, "rel=\"stylesheet\"", "href").expect("stylesheet");
    let asset = Browser::new(&server.base).get(&css).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(asset.headers[header::CACHE_CONTROL].to_str().expect("ascii").contains("immutable"));
    assert!(asset.headers[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/css"));
}

#[tokio::test]
async fn a_cross_site_or_tokenless_post_is_refused_and_stores_nothing() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Where is my parcel?", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let page = admin.get(&format!("/tickets/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let before =
        server.get(&format!("/api/v1/tickets/{id}/messages")).await.1["items"].as_array().expect("items").len();

    let path = format!("{}/tickets/{id}/messages", server.base);
    let form = [("csrf", csrf.as_str()), ("kind", "note"), ("body", "from elsewhere"), ("request_id", "abc1")];
    let evil = admin.client.post(&path).header(header::ORIGIN, "http://evil.example").form(&form);
    let evil = admin.send(evil).await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN, "{}", evil.body);
    let no_token = admin
        .post(&format!("/tickets/{id}/messages"), &[("kind", "note"), ("body", "no token"), ("request_id", "abc2")])
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let wrong_token = admin
        .post(
            &format!("/tickets/{id}/messages"),
            &[("csrf", "0".repeat(64).as_str()), ("kind", "note"), ("body", "x"), ("request_id", "abc3")],
        )
        .await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    let after = server.get(&format!("/api/v1/tickets/{id}/messages")).await.1["items"].as_array().expect("items").len();
    assert_eq!(before, after, "nothing was stored");
}

#[tokio::test]
async fn the_eleventh_sign_in_within_a_minute_is_refused_even_with_the_right_password() {
    let (server, _admin) = admin_server().await;
    let mut b = Browser::new(&server.base);
    for i in 0..10 {
        let wrong = b.sign_in("admin@localhost", "not the password").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(wrong.body.contains("E-mail or password is wrong"));
    }
    let right = b.sign_in("admin@localhost", PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS, "{}", right.body);
    let retry: u64 = right.headers[header::RETRY_AFTER].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(right.body.contains("Too many failed sign-ins"), "{}", right.body);
    assert!(
        !right.headers.get_all(header::SET_COOKIE).iter().any(|c| c.to_str().unwrap_or("").starts_with("pd_session="))
    );
    // The failures are counted for every node: another node refuses the account too.
    let second = Server::serve(server.scratch.share(), server.token.clone()).await;
    let mut elsewhere = Browser::new(&second.base);
    let refused = elsewhere.sign_in("admin@localhost", PASSWORD).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
}

#[tokio::test]
async fn an_address_trying_many_accounts_is_refused_after_thirty_failures() {
    let (server, _admin) = admin_server().await;
    let mut b = Browser::new(&server.base);
    for i in 0..30 {
        let wrong = b.sign_in(&format!("nobody{i}@example.com"), "not the password").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // A new account from the same address: refused, although it never failed itself.
    let next = b.sign_in("admin@localhost", PASSWORD).await;
    assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS, "{}", next.body);
}

#[tokio::test]
async fn an_agent_is_refused_admin_pages_and_other_workspaces_records() {
    let (server, mut admin) = admin_server().await;
    let mut anna = invite_agent(&server, &mut admin, "anna@example.com").await;
    assert_eq!(anna.get("/").await.status, StatusCode::OK);
    // The admin assigns a ticket to Anna: her bell has it, in her language, until she looks.
    let t = server.ticket("Rückfrage zur Lieferung", "kunde@example.com").await;
    let anna_id = server.get("/api/v1/agents").await.1["items"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["email"] == "anna@example.com").map(|a| a["id"].clone()))
        .expect("anna");
    let csrf = admin.get("/").await.csrf();
    let assigned = admin
        .post(
            &format!("/tickets/{}/fields", t["id"]),
            &[("csrf", &csrf), ("assignee", &anna_id.to_string()), ("status", "open")],
        )
        .await;
    assert_eq!(assigned.status, StatusCode::SEE_OTHER, "{}", assigned.body);
    let bell = anna.get("/notifications").await;
    assert!(bell.body.contains("Assigned to you: Rückfrage zur Lieferung"), "{}", bell.body);
    let (status, unread) =
        server.call(Method::GET, "/api/v1/notifications?unread=true", Some(&server.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unread["items"].as_array().map(Vec::len), Some(0), "the admin assigned it and is not told: {unread}");
    let admin_page = anna.get("/settings/agents").await;
    assert_eq!(admin_page.status, StatusCode::FORBIDDEN);
    assert!(admin_page.body.contains("Only admins"), "{}", admin_page.body);

    // A ticket of another workspace on the same server is "not found", never shown.
    let other = {
        let (lines, _) = init(&server.scratch, "other");
        lines.last().expect("token").trim().to_owned()
    };
    let (status, t) = server
        .call(
            Method::POST,
            "/api/v1/tickets",
            Some(&other),
            Some(json!({ "subject": "Secret of other", "customer": { "email": "x@example.com" }, "body": "hidden" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let page = anna.get(&format!("/tickets/{}", t["id"])).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("Secret of other"));
    let csrf = anna.get("/").await.csrf();
    let reply = anna
        .post(
            &format!("/tickets/{}/messages", t["id"]),
            &[("csrf", &csrf), ("kind", "reply"), ("body", "hi"), ("request_id", "r1"), ("seen", "0")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_a_customer_writes_is_shown_as_text_never_as_markup() {
    let (server, mut admin) = admin_server().await;
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">";
    let (status, t) = server
        .post(
            "/api/v1/tickets",
            json!({ "subject": format!("Help {evil}"), "customer": { "email": "mallory@example.com", "name": "<b>Mallory</b>" }, "body": evil }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let inbox = admin.get("/inbox?view=open").await;
    let ticket = admin.get(&format!("/tickets/{}", t["id"])).await;
    for page in [&inbox.body, &ticket.body] {
        assert!(
            !page.contains("<script>window") && !page.contains("<img src=x") && !page.contains("<b>Mallory"),
            "{page}"
        );
    }
    assert!(ticket.body.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"), "{}", ticket.body);
    assert!(inbox.body.contains("&lt;b&gt;Mallory&lt;/b&gt;"), "{}", inbox.body);
}

#[tokio::test]
async fn a_reply_is_sent_once_per_form_and_never_over_an_unseen_message() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Broken parcel", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let page = admin.get(&format!("/tickets/{id}")).await;
    let csrf = page.csrf();
    // The library's acknowledgement may come after the page was loaded: an automatic answer
    // is no reason to refuse the agent's reply (the customer's message below is).
    server.settled(Duration::from_secs(10)).await;
    let seen = attr_after(&page.body, "name=\"seen\"", "value").expect("seen");
    let request_id = attr_after(&page.body, "name=\"request_id\"", "value").expect("request id");
    // An API ticket in a workspace without an e-mail channel: the composer says before the
    // agent writes that the reply will not reach the customer.
    assert!(
        page.body.contains("id=\"route\"") && page.body.contains("No channel can reach this customer"),
        "{}",
        page.body
    );

    // The customer writes while the agent types.
    let (status, _) =
        server.post(&format!("/api/v1/tickets/{id}/messages"), json!({ "body": "Any news? It is urgent." })).await;
    assert_eq!(status, StatusCode::CREATED);
    let text = "We are sending a new parcel today.";
    let form = [
        ("csrf", csrf.as_str()),
        ("kind", "reply"),
        ("body", text),
        ("seen", &seen),
        ("request_id", &request_id),
        ("then", "pending"),
    ];
    let refused = admin.post(&format!("/tickets/{id}/messages"), &form).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.body.contains("id=\"conflict\"") && refused.body.contains("Any news? It is urgent."),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(text), "the agent's text is kept");

    // Sent from the refreshed form: once, however often it is posted.
    let seen = attr_after(&refused.body, "name=\"seen\"", "value").expect("seen");
    let request_id = attr_after(&refused.body, "name=\"request_id\"", "value").expect("request id");
    let form = [
        ("csrf", csrf.as_str()),
        ("kind", "reply"),
        ("body", text),
        ("seen", &seen),
        ("request_id", &request_id),
        ("then", "pending"),
    ];
    for _ in 0..3 {
        let sent = admin.post(&format!("/tickets/{id}/messages"), &form).await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    }
    let messages = server.get(&format!("/api/v1/tickets/{id}/messages")).await.1;
    let replies: Vec<_> = messages["items"].as_array().expect("items").iter().filter(|m| m["body"] == text).collect();
    assert_eq!(replies.len(), 1, "{messages}");
    assert_eq!(replies[0]["direction"], "outbound");
    let ticket = server.get(&format!("/api/v1/tickets/{id}")).await.1;
    assert_eq!(ticket["status"], "pending", "send and set pending in one action");
    let shown = admin.get(&format!("/tickets/{id}")).await;
    assert!(shown.body.contains(text) && shown.body.contains("li class=\"message outbound\""), "{}", shown.body);
}

#[tokio::test]
async fn a_draft_follows_the_agent_and_signing_out_everywhere_ends_every_session() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Invoice question", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let csrf = admin.get("/").await.csrf();
    let save = admin
        .client
        .put(format!("{}/tickets/{id}/draft", server.base))
        .header(header::ORIGIN, server.base.clone())
        .header("x-csrf-token", csrf.clone())
        .json(&json!({ "body": "Dear Erika, half-written" }));
    assert_eq!(admin.send(save).await.status, StatusCode::NO_CONTENT);

    // Another device of the same agent sees the draft.
    let mut laptop = Browser::new(&server.base);
    assert_eq!(laptop.sign_in("admin@localhost", PASSWORD).await.status, StatusCode::SEE_OTHER);
    let page = laptop.get(&format!("/tickets/{id}")).await;
    assert!(page.body.contains("Dear Erika, half-written"), "{}", page.body);

    // A signature starts every new reply.
    let me = admin.get("/me").await;
    assert!(me.body.contains("id=\"signout-everywhere\""), "{}", me.body);
    let saved = admin.post("/me/signature", &[("csrf", &csrf), ("signature", "Anna Agent\nKundenservice")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let fresh = server.ticket("Another question", "erika@example.com").await;
    let page = admin.get(&format!("/tickets/{}", fresh["id"])).await;
    assert!(page.body.contains("\n\n-- \nAnna Agent\nKundenservice</textarea>"), "{}", page.body);

    let out = admin.post("/signout/everywhere", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/signin");
    let after = laptop.get("/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the other session ended too");
    assert_eq!(after.location(), "/signin");
}

#[tokio::test]
async fn the_inbox_lists_views_with_counts_and_bulk_changes_all_or_nothing() {
    let (server, mut admin) = admin_server().await;
    let a = server.ticket("First", "one@example.com").await;
    let b = server.ticket("Second", "two@example.com").await;
    server.settled(Duration::from_secs(10)).await;
    let inbox = admin.get("/inbox?view=unassigned").await;
    assert!(inbox.body.contains("data-count=\"unassigned\">2<"), "{}", inbox.body);
    assert!(inbox.body.contains(&format!("href=\"/tickets/{}\"", a["id"])), "{}", inbox.body);
    let csrf = inbox.csrf();
    let (ida, idb) = (a["id"].to_string(), b["id"].to_string());
    // A resolved ticket cannot become pending: neither changes, and the message names it.
    let (status, _) = server.patch(&format!("/api/v1/tickets/{idb}"), json!({ "status": "resolved" })).await;
    assert_eq!(status, StatusCode::OK);
    let refused = admin
        .post(
            "/inbox/bulk",
            &[("csrf", &csrf), ("ticket", &ida), ("ticket", &idb), ("action", "status"), ("value", "pending")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(refused.body.contains(&format!("ticket #{}", b["number"])), "{}", refused.body);
    assert_eq!(server.get(&format!("/api/v1/tickets/{ida}")).await.1["status"], "new", "all or nothing");
    let (status, _) = server.patch(&format!("/api/v1/tickets/{idb}"), json!({ "status": "open" })).await;
    assert_eq!(status, StatusCode::OK);
    let done = admin
        .post("/inbox/bulk", &[("csrf", &csrf), ("ticket", &ida), ("ticket", &idb), ("action", "assign_me")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(done.location().contains("done=2"), "{}", done.location());
    let mine = admin.get("/inbox?view=mine").await;
    assert!(mine.body.contains("data-count=\"mine\">2<") && mine.body.contains("Second"), "{}", mine.body);
    let counts = admin.get("/inbox/counts").await;
    let counts: serde_json::Value = serde_json::from_str(&counts.body).expect("json");
    assert_eq!(counts["mine"], "2");
    assert_eq!(counts["unassigned"], "0");
}

/// The ticket ids of a rows fragment, in order.
fn row_ids(html: &str) -> Vec<i64> {
    html.split("data-ticket-id=\"").skip(1).filter_map(|p| p.split('"').next()?.parse().ok()).collect()
}

#[tokio::test]
async fn the_inbox_sorts_by_sla_due_newest_and_last_customer_message() {
    let (server, mut admin) = admin_server().await;
    let mut ids = Vec::new();
    for (subject, email) in [("Oldest", "a@example.com"), ("Middle", "b@example.com"), ("Newest", "c@example.com")] {
        ids.push(server.ticket(subject, email).await["id"].as_i64().expect("id"));
    }
    server.settled(Duration::from_secs(10)).await;
    // The oldest ticket's customer writes again: it leads by last customer message.
    let (status, _) =
        server.post(&format!("/api/v1/tickets/{}/messages", ids[0]), json!({ "body": "Hello again" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let newest = admin.get("/inbox/rows?view=open&sort=newest").await;
    assert_eq!(row_ids(&newest.body), vec![ids[2], ids[1], ids[0]], "{}", newest.body);
    let customer = admin.get("/inbox/rows?view=open&sort=customer").await;
    assert_eq!(row_ids(&customer.body), vec![ids[0], ids[2], ids[1]], "{}", customer.body);
    // Same tier, so the first-response clocks fall due in creation order.
    let sla = admin.get("/inbox/rows?view=open").await;
    assert_eq!(row_ids(&sla.body), vec![ids[0], ids[1], ids[2]], "{}", sla.body);
    let bad = admin.get("/inbox?view=everything").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("unknown view"), "{}", bad.body);
}

#[tokio::test]
async fn a_customer_is_edited_and_merged_after_a_confirmation_naming_what_moves() {
    let (server, mut admin) = admin_server().await;
    let a = server.ticket("Order 1", "erika@example.com").await;
    let b = server.ticket("Order 2", "erika.privat@example.org").await;
    let (ca, cb) = (a["customer_id"].as_i64().expect("customer"), b["customer_id"].as_i64().expect("customer"));
    let page = admin.get(&format!("/tickets/{}", a["id"])).await;
    let csrf = page.csrf();
    let back = format!("/tickets/{}", a["id"]);
    let edited = admin
        .post(
            &format!("/customers/{ca}"),
            &[("csrf", &csrf), ("name", "Erika Mustermann"), ("language", "de"), ("back", &back)],
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER);
    assert_eq!(edited.location(), back);
    let (_, c) = server.get(&format!("/api/v1/customers/{ca}")).await;
    assert_eq!((c["name"].as_str(), c["language"].as_str()), (Some("Erika Mustermann"), Some("de")), "{c}");

    // Merging the second customer into the first: the confirmation names the identity and the ticket.
    let confirm = admin.get(&format!("/customers/{cb}/merge?into={ca}&back={back}")).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(confirm.body.contains("erika.privat@example.org") && confirm.body.contains("Order 2"), "{}", confirm.body);
    assert_eq!(server.get(&format!("/api/v1/tickets/{}", b["id"])).await.1["customer_id"], cb, "nothing moved yet");
    let merged = admin
        .post(&format!("/customers/{cb}/merge"), &[("csrf", &csrf), ("into", &ca.to_string()), ("back", &back)])
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    assert_eq!(server.get(&format!("/api/v1/tickets/{}", b["id"])).await.1["customer_id"], ca);
    // The whole timeline shows both tickets' messages, now of one customer.
    let timeline = admin.get(&format!("/customers/{ca}")).await;
    assert_eq!(timeline.status, StatusCode::OK);
    assert!(timeline.body.contains("Order 1") && timeline.body.contains("Order 2"), "{}", timeline.body);
    let panel = admin.get(&back).await;
    assert!(panel.body.contains("erika.privat@example.org") && panel.body.contains("Order 2"), "{}", panel.body);
    let itself = admin.get(&format!("/customers/{ca}/merge?into={ca}")).await;
    assert_eq!(itself.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn an_agent_saves_a_view_with_its_filters_and_deletes_it() {
    let (server, mut admin) = admin_server().await;
    server.ticket("Premium question", "p@example.com").await;
    let inbox = admin.get("/inbox?view=open&sort=newest&level=1").await;
    let csrf = inbox.csrf();
    let query = attr_after(&inbox.body, "name=\"query\"", "value").expect("the current query");
    assert_eq!(query, "view=open&level=1&sort=newest");
    let saved =
        admin.post("/inbox/views", &[("csrf", &csrf), ("name", "Front office, newest"), ("query", &query)]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = admin.get("/inbox").await;
    assert!(
        page.body.contains("Front office, newest")
            && page.body.contains("href=\"/inbox?view=open&amp;level=1&amp;sort=newest\""),
        "{}",
        page.body
    );
    // A query the inbox does not understand is refused, not stored.
    let bad = admin.post("/inbox/views", &[("csrf", &csrf), ("name", "Broken"), ("query", "view=everything")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!admin.get("/inbox").await.body.contains("Broken"));
    let action =
        page.body.split("action=\"/inbox/views/").nth(1).and_then(|r| r.split('"').next()).expect("delete form");
    let deleted = admin.post(&format!("/inbox/views/{action}"), &[("csrf", &csrf)]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(!admin.get("/inbox").await.body.contains("Front office, newest"));
}

#[tokio::test]
async fn two_tickets_of_one_customer_merge_with_their_messages_and_clocks() {
    let (server, mut admin) = admin_server().await;
    let first = server.ticket("Parcel missing", "erika@example.com").await;
    let second = server.ticket("Parcel still missing", "erika@example.com").await;
    let other = server.ticket("Unrelated", "otto@example.com").await;
    server.settled(Duration::from_secs(10)).await;
    let (first_id, second_id) = (first["id"].as_i64().expect("id"), second["id"].as_i64().expect("id"));
    let count = |v: &serde_json::Value| v["items"].as_array().map_or(0, Vec::len);
    let first_count = count(&server.get(&format!("/api/v1/tickets/{first_id}/messages")).await.1);
    let second_count = count(&server.get(&format!("/api/v1/tickets/{second_id}/messages")).await.1);
    assert!(first_count > 0 && second_count > 0);
    let csrf = admin.get("/").await.csrf();

    // Another customer's ticket is refused, and nothing moves.
    let refused = admin
        .post(&format!("/tickets/{second_id}/merge"), &[("csrf", &csrf), ("into", &other["number"].to_string())])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(refused.body.contains("another customer"), "{}", refused.body);

    let merged = admin
        .post(&format!("/tickets/{second_id}/merge"), &[("csrf", &csrf), ("into", &first["number"].to_string())])
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    assert_eq!(merged.location(), format!("/tickets/{first_id}"));
    let survivor = server.get(&format!("/api/v1/tickets/{first_id}/messages")).await.1;
    assert_eq!(count(&survivor), first_count + second_count, "every message moved to the survivor: {survivor}");
    let left = server.get(&format!("/api/v1/tickets/{second_id}/messages")).await.1;
    assert_eq!(left["items"].as_array().map(Vec::len), Some(0), "every message moved: {left}");
    let gone = server.get(&format!("/api/v1/tickets/{second_id}")).await.1;
    assert_eq!(gone["status"], "closed");
    assert_eq!(gone["sla"].as_array().map(Vec::len), Some(0), "{gone}");
    let page = admin.get(&format!("/tickets/{second_id}")).await;
    assert!(
        page.body.contains("id=\"merged\"") && page.body.contains(&format!("href=\"/tickets/{first_id}\"")),
        "{}",
        page.body
    );
    // A search for what the customer wrote in the merged ticket finds it where it lives now.
    let (_, found) = server.get("/api/v1/search?q=still+missing").await;
    let messages: Vec<&serde_json::Value> =
        found["items"].as_array().expect("items").iter().filter(|h| h["kind"] == "message").collect();
    assert!(!messages.is_empty() && messages.iter().all(|h| h["ticket_id"] == first_id), "{found}");
    // The survivor's history links to the merged ticket.
    let survivor_page = admin.get(&format!("/tickets/{first_id}")).await;
    assert!(survivor_page.body.contains(&format!("href=\"/tickets/{second_id}\"")), "{}", survivor_page.body);
    // Merged once only.
    let again = admin
        .post(&format!("/tickets/{second_id}/merge"), &[("csrf", &csrf), ("into", &first["number"].to_string())])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
}

/// The composer's fields of a ticket page, for a note (which is never refused over unseen
/// messages) with `body`.
fn note_form(page: &support::Page, body: &str) -> Vec<(String, String)> {
    vec![
        ("csrf".into(), page.csrf()),
        ("kind".into(), "note".into()),
        ("body".into(), body.into()),
        ("seen".into(), attr_after(&page.body, "name=\"seen\"", "value").expect("seen")),
        ("request_id".into(), attr_after(&page.body, "name=\"request_id\"", "value").expect("request id")),
        ("then".into(), "keep".into()),
    ]
}

fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn a_stale_fields_form_shows_what_changed_keeps_the_choices_and_saves_nothing() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Invoice wrong", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    server.settled(Duration::from_secs(10)).await;
    let page = admin.get(&format!("/tickets/{id}")).await;
    let csrf = page.csrf();
    let version = attr_after(&page.body, "name=\"version\"", "value").expect("version");
    // Changed meanwhile (another tab, a colleague, a workflow).
    let (status, _) = server.patch(&format!("/api/v1/tickets/{id}"), json!({ "priority": "urgent" })).await;
    assert_eq!(status, StatusCode::OK);
    let attributes = "order: 4711\nexpress: true\nnote: call back";
    let form = |version: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("version".to_owned(), version.to_owned()),
            ("priority".to_owned(), "low".to_owned()),
            ("level".to_owned(), "1".to_owned()),
            ("category".to_owned(), "billing".to_owned()),
            ("tags".to_owned(), "refund, vip".to_owned()),
            ("attributes".to_owned(), attributes.to_owned()),
        ]
    };
    let stale = admin.post(&format!("/tickets/{id}/fields"), &pairs(&form(&version))).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert!(stale.body.contains("id=\"stale\"") && stale.body.contains("priority: normal → urgent"), "{}", stale.body);
    assert!(
        stale.body.contains("value=\"billing\"") && stale.body.contains("order: 4711"),
        "choices kept: {}",
        stale.body
    );
    let stored = server.get(&format!("/api/v1/tickets/{id}")).await.1;
    assert_eq!((stored["priority"].as_str(), stored["category"].is_null()), (Some("urgent"), true), "{stored}");

    // Saved from the refreshed form; custom attributes keep their types.
    let version = attr_after(&stale.body, "name=\"version\"", "value").expect("version");
    let saved = admin.post(&format!("/tickets/{id}/fields"), &pairs(&form(&version))).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let stored = server.get(&format!("/api/v1/tickets/{id}")).await.1;
    assert_eq!((stored["priority"].as_str(), stored["category"].as_str()), (Some("low"), Some("billing")), "{stored}");
    assert_eq!(stored["attributes"], json!({ "order": 4711, "express": true, "note": "call back" }));
    assert!(stored["tags"].as_array().is_some_and(|t| t.contains(&json!("vip")) && t.contains(&json!("refund"))));

    // Attributes that are not `name: value` are refused with the line, and nothing changes.
    let page = admin.get(&format!("/tickets/{id}")).await;
    let version = attr_after(&page.body, "name=\"version\"", "value").expect("version");
    let mut bad = form(&version);
    bad.retain(|(k, _)| k != "attributes");
    bad.push(("attributes".into(), "order: 1\nno colon here".into()));
    let refused = admin.post(&format!("/tickets/{id}/fields"), &pairs(&bad)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(refused.body.contains("line 2"), "{}", refused.body);
    let after = server.get(&format!("/api/v1/tickets/{id}")).await.1;
    assert_eq!(after["attributes"], stored["attributes"]);
}

#[tokio::test]
async fn a_customers_message_splits_off_into_a_ticket_of_its_own_once() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Two things", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let (status, _) = server
        .post(&format!("/api/v1/tickets/{id}/messages"), json!({ "body": "Also: my address changed to Hauptstr. 5." }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    server.settled(Duration::from_secs(10)).await;
    let messages = server.get(&format!("/api/v1/tickets/{id}/messages")).await.1;
    let items = messages["items"].as_array().expect("items");
    let second = items.iter().find(|m| m["body"].as_str().is_some_and(|b| b.contains("Hauptstr"))).expect("second");
    let message = second["id"].as_i64().expect("id");
    let page = admin.get(&format!("/tickets/{id}")).await;
    let csrf = page.csrf();
    let split_path = format!("/tickets/{id}/messages/{message}/split");
    assert!(page.body.contains(&format!("action=\"{split_path}\"")), "{}", page.body);

    let split = admin.post(&split_path, &[("csrf", &csrf)]).await;
    assert_eq!(split.status, StatusCode::SEE_OTHER, "{}", split.body);
    let new_id: i64 = split.location().trim_start_matches("/tickets/").parse().expect("ticket path");
    assert_ne!(new_id, id);
    let new = server.get(&format!("/api/v1/tickets/{new_id}")).await.1;
    assert_eq!(new["customer_id"], t["customer_id"], "{new}");
    let first = server.get(&format!("/api/v1/tickets/{new_id}/messages")).await.1;
    assert!(first["items"][0]["body"].as_str().is_some_and(|b| b.contains("Hauptstr")), "{first}");
    let source = admin.get(&format!("/tickets/{id}")).await;
    assert!(source.body.contains(&format!("href=\"/tickets/{new_id}\"")), "the split is in the history");
    assert!(source.body.contains("Hauptstr"), "the message stays where it was written");
    // A second click lands on the same ticket.
    let again = admin.post(&split_path, &[("csrf", &csrf)]).await;
    assert_eq!(again.location(), split.location());
    // An agent's reply or an automatic answer does not start a ticket.
    if let Some(ours) = items.iter().find(|m| m["direction"] != "inbound") {
        let path = format!("/tickets/{id}/messages/{}/split", ours["id"]);
        let refused = admin.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    }
}

#[tokio::test]
async fn a_note_carries_uploaded_files_and_an_oversized_one_is_refused_with_the_text_kept() {
    let (server, mut admin) = admin_server().await;
    let t = server.ticket("Screenshot", "erika@example.com").await;
    let id = t["id"].as_i64().expect("id");
    server.settled(Duration::from_secs(10)).await;
    let page = admin.get(&format!("/tickets/{id}")).await;
    assert!(page.body.contains("enctype=\"multipart/form-data\"") && page.body.contains("type=\"file\""));
    let form = note_form(&page, "See the log attached.");
    let sent = admin
        .post_multipart(
            &format!("/tickets/{id}/messages"),
            &pairs(&form),
            &[("attachment", "server.log", "text/plain", b"line one\nline two\n")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let messages = server.get(&format!("/api/v1/tickets/{id}/messages")).await.1;
    let note = messages["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["body"] == "See the log attached.")
        .cloned()
        .expect("the note");
    assert_eq!(note["attachments"][0]["filename"], "server.log", "{note}");
    let file = admin.get(&format!("/attachments/{}", note["attachments"][0]["id"])).await;
    assert_eq!(file.body, "line one\nline two\n");

    // Over the limit per file: refused, the text is back in the composer, nothing is stored.
    let page = admin.get(&format!("/tickets/{id}")).await;
    let text = "Second try with a huge file.";
    let form = note_form(&page, text);
    let huge = vec![b'x'; 10 * 1024 * 1024 + 1];
    let refused = admin
        .post_multipart(
            &format!("/tickets/{id}/messages"),
            &pairs(&form),
            &[("attachment", "huge.bin", "application/octet-stream", &huge)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", &refused.body[..refused.body.len().min(2000)]);
    assert!(refused.body.contains(text), "the agent's text is kept");
    // Over the request limit: a clear refusal before anything is read.
    let larger = vec![b'x'; 17 * 1024 * 1024];
    let too_large = admin
        .post_multipart(
            &format!("/tickets/{id}/messages"),
            &pairs(&form),
            &[("attachment", "larger.bin", "application/octet-stream", &larger)],
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    let after = server.get(&format!("/api/v1/tickets/{id}/messages")).await.1;
    assert!(!after.to_string().contains(text), "nothing stored: {after}");
}

#[tokio::test]
async fn the_customer_panel_shows_survey_answers_and_replies_take_the_channels_signature() {
    let (server, mut admin) = admin_server().await;
    let csrf = admin.get("/me").await.csrf();
    let saved = admin
        .post(
            "/me/signature",
            &[
                ("csrf", &csrf),
                ("signature", "Erika from Support"),
                ("signature_email", "Erika Muster\nSupport team"),
                ("signature_sms", ""),
                ("signature_chat", "– Erika"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let me = admin.get("/me").await;
    assert!(me.body.contains("Erika Muster\nSupport team") && me.body.contains("– Erika"), "{}", me.body);

    // An API ticket is answered like a chat; a mail ticket with the mail signature.
    let chat = server.ticket("Quick question", "otto@example.com").await;
    let (status, mail) = server
        .post(
            "/api/v1/tickets",
            json!({ "subject": "By mail", "body": "Hello", "channel": "email", "customer": { "email": "otto@example.com" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{mail}");
    let chat_page = admin.get(&format!("/tickets/{}", chat["id"])).await;
    assert!(chat_page.body.contains("-- \n– Erika"), "{}", chat_page.body);
    let mail_page = admin.get(&format!("/tickets/{}", mail["id"])).await;
    assert!(mail_page.body.contains("-- \nErika Muster\nSupport team"), "{}", mail_page.body);

    // The customer answers the survey after the ticket is resolved: the panel shows it.
    let id = chat["id"].as_i64().expect("id");
    server.settled(Duration::from_secs(10)).await;
    for step in ["open", "resolved"] {
        let (status, body) = server.patch(&format!("/api/v1/tickets/{id}"), json!({ "status": step })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let msgs = server
        .wait_for(&format!("/api/v1/tickets/{id}/messages"), Duration::from_secs(10), |m| {
            m.to_string().contains("/survey/")
        })
        .await;
    let invitation = msgs.to_string();
    let at = invitation.find("/survey/").expect("link");
    let token: String = invitation[at + "/survey/".len()..].chars().take_while(char::is_ascii_alphanumeric).collect();
    let answered = server.answer_survey(&format!("/survey/{token}"), "rating=2&comment=took+too+long").await;
    assert_eq!(answered, StatusCode::OK);
    let page = admin.get(&format!("/tickets/{}", mail["id"])).await;
    assert!(page.body.contains("id=\"csat\"") && page.body.contains("2/5"), "{}", page.body);
    assert!(page.body.contains("took too long"), "the comment is shown");
}

#[tokio::test]
async fn the_live_stream_ends_when_its_session_is_signed_out() {
    let (server, mut admin) = admin_server().await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/live", server.base))
        .header(header::COOKIE, admin.cookie_header())
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let csrf = admin.get("/").await.csrf();
    let out = admin.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream closed: {text}");
    assert!(text.contains("event: signedout"), "{text}");
}

#[tokio::test]
async fn a_view_of_more_than_a_thousand_tickets_is_walked_in_every_sort_and_filter() {
    // Past the size at which a view is sorted whole, the inbox walks it: these are the pages
    // of a large workspace, checked against what the tickets say.
    let scratch = Scratch::new();
    // The API's per-token limit guards against a runaway client, not a test filling a view.
    scratch.config("[auth]\nrate_per_second = 0\n");
    let token = scratch.init("default");
    let server = Server::serve(scratch, token).await;
    let mut admin = support::admin_browser(&server).await;
    let mut ids = Vec::new();
    for n in 0..1100 {
        // All but the newest ten carry the tag, so the tag filter walks past them.
        let tags = if n < 1090 { json!(["bulk"]) } else { json!([]) };
        let (status, t) = server
            .post(
                "/api/v1/tickets",
                json!({ "subject": format!("Walk {n}"), "body": "Hello", "tags": tags, "customer": { "email": format!("c{n}@example.com") } }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        ids.push(t["id"].as_i64().expect("id"));
    }
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();

    let newest = admin.get("/inbox/rows?view=open&sort=newest").await;
    assert_eq!(row_ids(&newest.body), newest_first[..50], "{}", newest.body);
    let tagged = admin.get("/inbox/rows?view=open&sort=newest&tag=bulk").await;
    assert_eq!(row_ids(&tagged.body), newest_first[10..60], "the untagged newest are left out");
    let by_channel = admin.get("/inbox/rows?view=open&sort=newest&channel=email").await;
    assert!(row_ids(&by_channel.body).is_empty(), "no e-mail tickets: {}", by_channel.body);

    // An old ticket's customer writes again: it leads by last customer message, then the
    // others by their own (their first) message, newest first.
    let (status, _) = server.post(&format!("/api/v1/tickets/{}/messages", ids[5]), json!({ "body": "Again" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let customer = admin.get("/inbox/rows?view=open&sort=customer").await;
    let rows = row_ids(&customer.body);
    assert_eq!(rows[0], ids[5], "{}", customer.body);
    assert_eq!(rows[1..], newest_first[..49]);

    // By SLA due (the default): the clocks of one tier fall due in creation order.
    let sla = admin.get("/inbox/rows?view=open").await;
    let rows = row_ids(&sla.body);
    assert_eq!(rows.len(), 50);
    let mut dues = Vec::new();
    for id in &rows {
        let t = server.get(&format!("/api/v1/tickets/{id}")).await.1;
        let due = t["sla"]
            .as_array()
            .expect("clocks")
            .iter()
            .filter(|c| c["paused"] == false && c["breached"] == false)
            .filter_map(|c| c["due_at"].as_str())
            .min()
            .map(str::to_owned);
        dues.push(due.expect("a running clock"));
    }
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "soonest due first: {dues:?}");
    assert_eq!(rows[0], ids[0], "the oldest ticket's clock is due first");

    // The clock views (two clocks a ticket: 2,200, past the point where a clock view is walked
    // in its clocks' order rather than sorted whole): every running clock falls due within the
    // hour, the newest ticket's first; the oldest hundred tickets' clocks are breached.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    server.scratch.sql(&format!(
        "UPDATE sla_timers SET due_at = {} - ticket_id * 100 WHERE paused_at IS NULL AND breached_at IS NULL",
        now + 40 * 60_000
    ));
    server.scratch.sql(&format!(
        "UPDATE sla_timers SET breached_at = {now} - 3600000 + ticket_id WHERE ticket_id IN ({})",
        ids[..100].iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    ));
    let due = admin.get("/inbox/rows?view=due").await;
    assert_eq!(row_ids(&due.body), newest_first[..50], "{}", due.body);
    let due_tagged = admin.get("/inbox/rows?view=due&tag=bulk").await;
    assert_eq!(row_ids(&due_tagged.body), newest_first[10..60]);
    let breached = admin.get("/inbox/rows?view=breached&sort=newest").await;
    let expected: Vec<i64> = ids[..100].iter().rev().take(50).copied().collect();
    assert_eq!(row_ids(&breached.body), expected, "{}", breached.body);

    // The pending ones: a view of its own, newest first (their clocks are paused).
    for id in &ids[..3] {
        for status in ["open", "pending"] {
            let (code, body) = server.patch(&format!("/api/v1/tickets/{id}"), json!({ "status": status })).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
    }
    let pending = admin.get("/inbox/rows?view=pending").await;
    assert_eq!(row_ids(&pending.body), vec![ids[2], ids[1], ids[0]], "{}", pending.body);
    let open = admin.get("/inbox/rows?view=open").await;
    assert!(!row_ids(&open.body).contains(&ids[0]), "a pending ticket left the open view");
}

#[tokio::test]
async fn a_page_on_one_node_hears_what_another_node_writes() {
    // Two nodes on one database (the PostgreSQL deployment; on SQLite two nodes share the
    // file): an agent's page on node B hears of a ticket written through node A.
    let (a, admin) = admin_server().await;
    let b = Server::serve(a.scratch.share(), a.token.clone()).await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/live", b.base))
        .header(header::COOKIE, admin.cookie_header())
        .send()
        .await
        .expect("stream on node B");
    assert_eq!(stream.status(), StatusCode::OK);
    let t = a.ticket("Across nodes", "nodes@example.com").await;
    let wanted = format!("\"ticket_id\":{}", t["id"]);
    let mut text = String::new();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(&wanted) {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok() && text.contains(&wanted), "node B's stream: {text}");
    assert_eq!(text.matches(&format!("{wanted},\"type\":\"ticket.created\"")).count(), 1, "once: {text}");

    // Presence too: Anna replies on node A; the admin's page of that ticket on node B says so.
    let mut admin = admin;
    let anna = invite_agent(&a, &mut admin, "anna@example.com").await;
    let id = t["id"].as_i64().expect("id");
    let mut on_ticket = reqwest::Client::new()
        .get(format!("{}/live?ticket={id}", b.base))
        .header(header::COOKIE, admin.cookie_header())
        .send()
        .await
        .expect("ticket stream on node B");
    let mut anna_page = Browser { base: a.base.clone(), ..anna };
    let page = anna_page.get(&format!("/tickets/{id}")).await;
    let req = anna_page
        .client
        .post(format!("{}/tickets/{id}/presence", a.base))
        .header(header::ORIGIN, a.base.clone())
        .header("x-csrf-token", page.csrf())
        .json(&json!({ "state": "replying" }));
    let said = anna_page.send(req).await;
    assert_eq!(said.status, StatusCode::NO_CONTENT, "{}", said.body);
    let mut text = String::new();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = on_ticket.chunk().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("Anna Agent") && text.contains("\"replying\"") {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "node B's ticket stream: {text}");
    // Closed before the servers stop, which would otherwise wait for them.
    drop((stream, on_ticket));
}
