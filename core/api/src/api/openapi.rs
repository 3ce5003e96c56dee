//! The OpenAPI 3 document served at `/api/v1/openapi.json`. It is generated from [`ROUTES`],
//! the table of every endpoint; a test sends a request to each entry and fails if the router
//! does not know it, so the table cannot drift from the code.

use serde_json::{Map, Value, json};

/// One documented endpoint.
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path with `{param}` placeholders.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Needs an admin token.
    pub admin: bool,
    /// Request body schema name, if any.
    pub body: Option<&'static str>,
    /// Success status.
    pub status: u16,
    /// Query parameters.
    pub query: &'static [&'static str],
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    status: u16,
) -> Route {
    Route { method, path, summary, admin: false, body, status, query: &[] }
}

const fn admin(route: Route) -> Route {
    Route { admin: true, ..route }
}

const fn q(route: Route, query: &'static [&'static str]) -> Route {
    Route { query, ..route }
}

/// Every endpoint of the API.
pub static ROUTES: &[Route] = &[
    r("GET", "/healthz", "Liveness: the process answers", None, 200),
    r("GET", "/readyz", "Readiness: the database answers", None, 200),
    r("GET", "/metrics", "Prometheus metrics (bearer metrics_token from plugdesk.toml; 404 without one)", None, 200),
    r("GET", "/api/v1/openapi.json", "This document", None, 200),
    r(
        "POST",
        "/api/v1/tickets",
        "Create a ticket with its first message; the customer is found or created by identity (200 instead of 201 when external_id was seen before)",
        Some("NewTicket"),
        201,
    ),
    q(
        r("GET", "/api/v1/tickets", "List tickets with filters, sorted, cursor-paginated", None, 200),
        &[
            "status",
            "tier",
            "team_id",
            "assignee",
            "tag",
            "priority",
            "channel",
            "customer_id",
            "sort",
            "cursor",
            "limit",
        ],
    ),
    r("GET", "/api/v1/tickets/{id}", "A ticket with its running SLA clocks", None, 200),
    r(
        "PATCH",
        "/api/v1/tickets/{id}",
        "Change status (enforced transitions), priority, level, team, assignee, category, tags, attributes",
        Some("TicketPatch"),
        200,
    ),
    r("POST", "/api/v1/tickets/{id}/reply", "An agent's reply to the customer", Some("MessageInput"), 201),
    r("POST", "/api/v1/tickets/{id}/notes", "An internal note", Some("MessageInput"), 201),
    r(
        "POST",
        "/api/v1/tickets/{id}/messages",
        "A customer's message on the ticket (reopens it)",
        Some("MessageInput"),
        201,
    ),
    r("GET", "/api/v1/tickets/{id}/messages", "The conversation, oldest first", None, 200),
    q(r("GET", "/api/v1/tickets/{id}/events", "The ticket's history", None, 200), &["after", "limit"]),
    r("POST", "/api/v1/customers", "Create a customer with identities", Some("NewCustomer"), 201),
    q(r("GET", "/api/v1/customers", "List customers", None, 200), &["after", "limit"]),
    r("GET", "/api/v1/customers/{id}", "A customer with identities", None, 200),
    r(
        "PATCH",
        "/api/v1/customers/{id}",
        "Change name, organisation, tier, language, attributes",
        Some("CustomerPatch"),
        200,
    ),
    r("POST", "/api/v1/customers/{id}/identities", "Add an identity", Some("Identity"), 201),
    r("POST", "/api/v1/customers/{id}/merge", "Merge this customer into into_id", Some("Merge"), 200),
    q(
        r(
            "GET",
            "/api/v1/customers/{id}/timeline",
            "Every message with the customer across channels, newest first",
            None,
            200,
        ),
        &["before", "limit"],
    ),
    r("POST", "/api/v1/organizations", "Create an organisation", Some("Organization"), 201),
    r("GET", "/api/v1/organizations", "List organisations", None, 200),
    r("GET", "/api/v1/organizations/{id}", "An organisation", None, 200),
    r("PUT", "/api/v1/organizations/{id}", "Replace an organisation", Some("Organization"), 200),
    admin(r("POST", "/api/v1/tiers", "Create a support tier", Some("Tier"), 201)),
    r("GET", "/api/v1/tiers", "List support tiers", None, 200),
    r("GET", "/api/v1/tiers/{id}", "A support tier", None, 200),
    admin(r("PUT", "/api/v1/tiers/{id}", "Replace a support tier", Some("Tier"), 200)),
    admin(r("POST", "/api/v1/agents", "Create an agent", Some("Agent"), 201)),
    r("GET", "/api/v1/agents", "List agents with load", None, 200),
    r("GET", "/api/v1/agents/{id}", "An agent", None, 200),
    admin(r("PUT", "/api/v1/agents/{id}", "Replace an agent", Some("Agent"), 200)),
    admin(r("POST", "/api/v1/teams", "Create a team", Some("Team"), 201)),
    r("GET", "/api/v1/teams", "List teams", None, 200),
    r("GET", "/api/v1/teams/{id}", "A team", None, 200),
    admin(r("PUT", "/api/v1/teams/{id}", "Rename a team or change its lead", Some("Team"), 200)),
    admin(r("POST", "/api/v1/tokens", "Create an API token for an agent (shown once)", Some("NewToken"), 201)),
    admin(q(
        r("GET", "/api/v1/tokens", "The workspace's API tokens (never their secrets), newest first", None, 200),
        &["agent_id"],
    )),
    admin(r("DELETE", "/api/v1/tokens/{id}", "Revoke an API token", None, 204)),
    q(r("GET", "/api/v1/search", "Full-text search over tickets, messages and customers", None, 200), &["q", "limit"]),
    q(
        r("GET", "/api/v1/events", "The workspace's event feed, oldest first after a cursor", None, 200),
        &["after", "limit"],
    ),
    admin(r(
        "GET",
        "/api/v1/events/poisoned",
        "Events the dispatcher set aside after they failed or stopped the server repeatedly, with the reason",
        None,
        200,
    )),
    admin(r(
        "GET",
        "/api/v1/events/dispatcher",
        "Where the dispatcher stands in the workspace's events: last handled, pending, attempts on the next",
        None,
        200,
    )),
    r("GET", "/api/v1/attachments/{id}", "An attachment's content", None, 200),
    r("GET", "/api/v1/me", "The caller: workspace, agent and role", None, 200),
    r("GET", "/api/v1/workspace", "The workspace's settings", None, 200),
    admin(r("PATCH", "/api/v1/workspace", "Change the workspace's settings", Some("WorkspacePatch"), 200)),
    r(
        "GET",
        "/api/v1/tickets/{id}/messages/{message}/source",
        "A message's original source (message/rfc822), when kept",
        None,
        200,
    ),
    r(
        "GET",
        "/api/v1/plugins",
        "The plugins this workspace may use (installation-wide and its own, `scope`) with their stored versions",
        None,
        200,
    ),
    admin(r(
        "POST",
        "/api/v1/plugins",
        "Upload a plugin for this workspace (body: the component, Content-Type application/wasm); it becomes the workspace's active version on every node; 403 for an installation-wide id",
        None,
        201,
    )),
    r("GET", "/api/v1/plugins/{key}", "A plugin with its stored versions", None, 200),
    admin(r(
        "POST",
        "/api/v1/plugins/{key}/rollback",
        "Make the previous version of one of the workspace's own plugins active again; 403 for an installation-wide plugin",
        None,
        200,
    )),
    admin(r(
        "POST",
        "/api/v1/channels",
        "Install a plugin as a channel: settings, secrets, granted capabilities",
        Some("NewChannel"),
        201,
    )),
    r("GET", "/api/v1/channels", "The workspace's channels with call counters", None, 200),
    r("GET", "/api/v1/channels/{id}", "A channel", None, 200),
    admin(r(
        "PATCH",
        "/api/v1/channels/{id}",
        "Change a channel's name, settings, secrets, grants, poll interval, or enable/disable it",
        Some("ChannelPatch"),
        200,
    )),
    admin(r(
        "POST",
        "/api/v1/channels/{id}/resume",
        "Resume a channel suspended after repeated plugin failures",
        None,
        200,
    )),
    q(
        r("GET", "/api/v1/channels/{id}/payloads", "Stored inbound requests of a channel, newest first", None, 200),
        &["status"],
    ),
    r("POST", "/api/v1/channels/{id}/payloads/{payload}/retry", "Process a stored inbound request again", None, 200),
    admin(r(
        "POST",
        "/api/v1/workflows",
        "Save a Rhai workflow (422 script_error with line and column when it does not compile)",
        Some("Workflow"),
        201,
    )),
    r("GET", "/api/v1/workflows", "The workspace's workflows in the order they run, with run counters", None, 200),
    r("GET", "/api/v1/workflows/{id}", "A workflow", None, 200),
    admin(r("PUT", "/api/v1/workflows/{id}", "Replace a workflow; the next event uses it", Some("Workflow"), 200)),
    admin(r("DELETE", "/api/v1/workflows/{id}", "Delete a workflow", None, 204)),
    r(
        "POST",
        "/api/v1/workflows/{id}/dry-run",
        "What a workflow would do about one ticket, without doing it",
        Some("DryRun"),
        200,
    ),
    r(
        "POST",
        "/api/v1/workflows/dry-run",
        "What a draft (its source in the body) would do, without saving it",
        Some("DryRun"),
        200,
    ),
    admin(r(
        "POST",
        "/api/v1/workflows/replay",
        "Run a draft or saved workflow over the last N days of events (at most 5,000, compute.replay_ms of time); \
         reports per ticket what it would have done",
        Some("Replay"),
        200,
    )),
    r(
        "GET",
        "/api/v1/templates",
        "Every template, partial and helper the workspace renders with (bundled or its own)",
        None,
        200,
    ),
    r(
        "POST",
        "/api/v1/templates/preview",
        "Render a saved template or a draft against a stored ticket (an SMS over one message is a 422)",
        Some("TemplatePreview"),
        200,
    ),
    admin(r(
        "PUT",
        "/api/v1/templates/{purpose}/{channel}/{language}",
        "Save the workspace's own variant (compiled with the whole set first: 422 with line and column)",
        Some("Template"),
        200,
    )),
    admin(r(
        "DELETE",
        "/api/v1/templates/{purpose}/{channel}/{language}",
        "Remove the workspace's own variant (the bundled one comes back)",
        None,
        204,
    )),
    admin(r("PUT", "/api/v1/template-partials/{name}/{language}", "Save a partial", Some("Template"), 200)),
    admin(r("DELETE", "/api/v1/template-partials/{name}/{language}", "Remove the workspace's own partial", None, 204)),
    admin(r("PUT", "/api/v1/template-helpers/{name}", "Save a helper written in Rhai", Some("Helper"), 200)),
    admin(r(
        "DELETE",
        "/api/v1/template-helpers/{name}",
        "Remove a helper (refused while a template calls it)",
        None,
        204,
    )),
    admin(r("POST", "/api/v1/webhooks", "Create or replace (by name) an outgoing webhook", Some("Webhook"), 201)),
    r("GET", "/api/v1/webhooks", "The workspace's outgoing webhooks", None, 200),
    admin(r("DELETE", "/api/v1/webhooks/{name}", "Delete an outgoing webhook", None, 204)),
    r("GET", "/api/v1/webhook-deliveries", "The latest webhook calls: queued, retrying, delivered, failed", None, 200),
    r("GET", "/api/v1/surveys", "Satisfaction surveys sent and answered, with the average rating", None, 200),
    q(r("GET", "/api/v1/notifications", "The calling agent's notifications, newest first", None, 200), &["unread"]),
    r("POST", "/api/v1/notifications/{id}/read", "Mark a notification read", None, 204),
    r("GET", "/survey/{token}", "The public survey page (the token is the key)", None, 200),
    r("POST", "/survey/{token}", "Answer a survey, once (form or JSON)", Some("SurveyAnswer"), 200),
    q(
        r(
            "GET",
            "/api/v1/outbox",
            "Replies queued for channels, newest first: pending, sending, sent, dead",
            None,
            200,
        ),
        &["status"],
    ),
    r("POST", "/api/v1/outbox/{id}/replay", "Send a dead or waiting reply again now", None, 200),
    r(
        "POST",
        "/hooks/{id}",
        "A channel's webhook (public; the plugin checks authenticity); stored before it is processed; 429 over the address's or channel's rate, 413 over max_request_bytes",
        None,
        200,
    ),
];

fn obj(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert((*k).to_owned(), v.clone());
    }
    json!({ "type": "object", "additionalProperties": false, "properties": p, "required": required })
}

fn schemas() -> Value {
    let s = || json!({ "type": "string" });
    let i = || json!({ "type": "integer" });
    let n = || json!({ "type": "number" });
    let arr = |v: Value| json!({ "type": "array", "items": v });
    let any_obj = || json!({ "type": "object" });
    let identity = obj(&[("kind", s()), ("address", s())], &["kind", "address"]);
    let customer = obj(
        &[
            ("id", i()),
            ("name", s()),
            ("email", s()),
            ("phone", s()),
            ("identities", arr(identity.clone())),
            ("organization_id", i()),
            ("tier", s()),
            ("language", s()),
            ("attributes", any_obj()),
        ],
        &[],
    );
    let attachment = obj(
        &[("filename", s()), ("content_type", s()), ("data", json!({ "type": "string", "format": "byte" }))],
        &["filename", "data"],
    );
    let status = json!({ "type": "string", "enum": ["new", "open", "pending", "resolved", "closed"] });
    let priority = json!({ "type": "string", "enum": ["low", "normal", "high", "urgent"] });
    json!({
        "Error": obj(&[("error", obj(&[("code", s()), ("message", s()), ("field", s())], &["code", "message"]))], &["error"]),
        "Identity": identity,
        "NewCustomer": customer,
        "CustomerPatch": obj(&[("name", s()), ("organization_id", i()), ("tier", s()), ("language", s()), ("attributes", any_obj())], &[]),
        "Merge": obj(&[("into_id", i())], &["into_id"]),
        "NewTicket": obj(&[
            ("subject", s()), ("body", s()), ("body_html", s()), ("customer", json!({ "$ref": "#/components/schemas/NewCustomer" })),
            ("channel", s()), ("priority", priority.clone()), ("tags", arr(s())), ("category", s()), ("attributes", any_obj()),
            ("external_id", s()), ("team_id", i()), ("assignee_id", i()), ("attachments", arr(attachment.clone())), ("conversation", s()),
        ], &["subject", "body", "customer"]),
        "TicketPatch": obj(&[
            ("subject", s()), ("status", status), ("priority", priority), ("level", i()), ("team_id", i()), ("assignee_id", i()),
            ("category", s()), ("tags", arr(s())), ("add_tags", arr(s())), ("remove_tags", arr(s())), ("attributes", any_obj()),
        ], &[]),
        "MessageInput": obj(&[("body", s()), ("body_html", s()), ("body_quoted", s()), ("subject", s()), ("automatic", json!({ "type": "boolean" })), ("channel", s()), ("external_id", s()), ("attachments", arr(attachment)), ("reply_channel_id", i())], &["body"]),
        "WorkspacePatch": obj(&[("closed_ticket_reply", json!({ "type": "string", "enum": ["reopen", "follow_up"] }))], &[]),
        "Organization": obj(&[("name", s()), ("domain", s()), ("attributes", any_obj())], &["name"]),
        "Tier": obj(&[
            ("key", s()), ("name", s()), ("first_response_minutes", n()), ("next_response_minutes", n()), ("resolution_minutes", n()),
            ("warning_minutes", n()), ("calendar", any_obj()), ("default_priority", s()), ("team_id", i()), ("channels", arr(s())),
            ("automation_level", json!({ "type": "string", "enum": ["automated_first", "assisted", "personal"] })), ("agent_minutes_budget", i()),
        ], &["key", "name", "first_response_minutes", "next_response_minutes", "resolution_minutes", "warning_minutes", "calendar", "default_priority", "channels", "automation_level", "agent_minutes_budget"]),
        "Agent": obj(&[("name", s()), ("email", s()), ("role", s()), ("level", i()), ("skills", arr(s())), ("capacity", i()), ("presence", s()), ("teams", arr(i())), ("active", json!({ "type": "boolean" }))], &["name", "email"]),
        "Team": obj(&[("name", s()), ("lead_agent_id", i())], &["name"]),
        "NewToken": obj(&[("agent_id", i()), ("name", s()), ("role", s())], &["agent_id", "name"]),
        "NewChannel": obj(&[("plugin", s()), ("name", s()), ("settings", any_obj()), ("secrets", any_obj()), ("grants", arr(s())), ("poll_interval_ms", i()), ("max_request_bytes", i())], &["plugin"]),
        "Workflow": obj(&[("name", s()), ("source", s()), ("enabled", json!({ "type": "boolean" }))], &["name", "source"]),
        "Replay": obj(&[("source", s()), ("workflow_id", i()), ("days", i()), ("limit", i())], &[]),
        "Template": obj(&[("subject", s()), ("text", s()), ("html", s())], &["text"]),
        "TemplatePreview": obj(&[("ticket_id", i()), ("purpose", s()), ("channel", s()), ("language", s()), ("draft", json!({ "$ref": "#/components/schemas/Template" }))], &["ticket_id", "purpose"]),
        "Helper": obj(&[("source", s())], &["source"]),
        "Webhook": obj(&[("name", s()), ("url", s()), ("secret", s())], &["name", "url"]),
        "SurveyAnswer": obj(&[("rating", i()), ("comment", s())], &["rating"]),
        "DryRun": obj(&[("ticket_id", i()), ("event", s()), ("changes", any_obj()), ("source", s())], &["ticket_id"]),
        "NewAutomation": obj(&[("plugin", s()), ("name", s()), ("settings", any_obj()), ("secrets", any_obj()), ("grants", arr(s())), ("events", arr(s()))], &["plugin"]),
        "AutomationPatch": obj(&[("enabled", json!({ "type": "boolean" }))], &["enabled"]),
        "ChannelPatch": obj(&[("name", s()), ("settings", any_obj()), ("secrets", any_obj()), ("grants", arr(s())), ("poll_interval_ms", i()), ("max_request_bytes", i()), ("enabled", json!({ "type": "boolean" }))], &[]),
    })
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let kind = if name == "key" { "string" } else { "integer" };
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": kind } })
            })
            .collect();
        params.extend(route.query.iter().map(
            |name| json!({ "name": name, "in": "query", "required": *name == "q", "schema": { "type": "string" } }),
        ));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = route.body {
            op.insert("requestBody".into(), json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } } }));
        }
        let err = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut responses = Map::new();
        responses.insert(route.status.to_string(), json!({ "description": "success" }));
        responses.insert("default".into(), err);
        op.insert("responses".into(), Value::Object(responses));
        if route.path.starts_with("/api/v1/") && route.path != "/api/v1/openapi.json" {
            op.insert("security".into(), json!([{ "bearer": [] }]));
        }
        if route.admin {
            op.insert("description".into(), json!("Needs an admin token."));
        }
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(route.method.to_lowercase(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Plugdesk API", "version": env!("CARGO_PKG_VERSION"), "description": "The Plugdesk helpdesk: tickets, customers, tiers, agents, search and events. Every error answers {\"error\": {\"code\", \"message\"}}." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
    })
}
