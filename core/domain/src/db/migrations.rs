//! The schema, as an append-only list of migrations. A migration that has shipped is never
//! edited: add a new one instead. One SQL text serves both databases; `{pk}` and `{blob}` are
//! replaced per backend, and the full-text index has a statement of its own per backend.
//!
//! Times are stored as Unix milliseconds (`BIGINT`) and JSON as `TEXT`: the same bytes on both
//! databases, sortable, and no driver-specific date handling.

use sea_orm::DbBackend;

/// One step of the schema.
pub struct Migration {
    /// Monotonic version number; the order of application.
    pub version: i64,
    /// A short name, recorded in `schema_migrations`.
    pub name: &'static str,
    /// Statements for both backends.
    common: &'static str,
    /// Statements for SQLite only.
    sqlite: &'static str,
    /// Statements for PostgreSQL only.
    postgres: &'static str,
}

impl Migration {
    /// The statements to run on `backend`, in order.
    pub fn statements(&self, backend: DbBackend) -> Vec<String> {
        let (pk, blob, extra) = match backend {
            DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA", self.postgres),
            _ => ("INTEGER PRIMARY KEY", "BLOB", self.sqlite),
        };
        self.common
            .split(";\n")
            .chain(extra.split(";\n"))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.replace("{pk}", pk).replace("{blob}", blob))
            .collect()
    }
}

/// Every migration, oldest first.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        common: r#"
CREATE TABLE workspaces (
    id {pk},
    name TEXT NOT NULL UNIQUE,
    next_ticket_number BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);
CREATE TABLE teams (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    lead_agent_id BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE agents (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 1,
    skills TEXT NOT NULL DEFAULT '[]',
    capacity INTEGER NOT NULL DEFAULT 10,
    presence TEXT NOT NULL DEFAULT 'offline',
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, email)
);
CREATE TABLE team_members (
    team_id BIGINT NOT NULL REFERENCES teams(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    workspace_id BIGINT NOT NULL,
    PRIMARY KEY (team_id, agent_id)
);
CREATE TABLE api_tokens (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE tiers (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    first_response_secs BIGINT NOT NULL,
    next_response_secs BIGINT NOT NULL,
    resolution_secs BIGINT NOT NULL,
    warning_secs BIGINT NOT NULL,
    calendar TEXT NOT NULL,
    default_priority TEXT NOT NULL,
    team_id BIGINT REFERENCES teams(id),
    channels TEXT NOT NULL,
    automation_level TEXT NOT NULL,
    agent_minutes_budget BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, key)
);
CREATE TABLE organizations (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    domain TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE customers (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    organization_id BIGINT REFERENCES organizations(id),
    tier_id BIGINT NOT NULL REFERENCES tiers(id),
    language TEXT NOT NULL DEFAULT 'en',
    attributes TEXT NOT NULL DEFAULT '{}',
    merged_into_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_ws ON customers (workspace_id, id);
CREATE TABLE customer_identities (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, kind, address)
);
CREATE INDEX customer_identities_customer ON customer_identities (customer_id);
CREATE TABLE customer_merges (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    source_customer_id BIGINT NOT NULL,
    target_customer_id BIGINT NOT NULL,
    snapshot TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tickets (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    number BIGINT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 1,
    team_id BIGINT REFERENCES teams(id),
    assignee_id BIGINT REFERENCES agents(id),
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    tier_id BIGINT NOT NULL REFERENCES tiers(id),
    category TEXT,
    channel TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    attributes TEXT NOT NULL DEFAULT '{}',
    reopen_count INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    first_response_at BIGINT,
    resolved_at BIGINT,
    closed_at BIGINT,
    pending_since BIGINT,
    UNIQUE (workspace_id, number)
);
CREATE INDEX tickets_ws_status ON tickets (workspace_id, status, id);
CREATE INDEX tickets_ws_assignee ON tickets (workspace_id, assignee_id, id);
CREATE INDEX tickets_ws_team ON tickets (workspace_id, team_id, id);
CREATE INDEX tickets_ws_customer ON tickets (workspace_id, customer_id, id);
CREATE INDEX tickets_ws_tier ON tickets (workspace_id, tier_id, id);
CREATE INDEX tickets_ws_priority ON tickets (workspace_id, priority, id);
CREATE INDEX tickets_ws_channel ON tickets (workspace_id, channel, id);
CREATE INDEX tickets_ws_updated ON tickets (workspace_id, updated_at, id);
CREATE TABLE ticket_tags (
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    workspace_id BIGINT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (ticket_id, tag)
);
CREATE INDEX ticket_tags_ws_tag ON ticket_tags (workspace_id, tag, ticket_id);
CREATE TABLE messages (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    direction TEXT NOT NULL,
    channel TEXT NOT NULL,
    author_kind TEXT NOT NULL,
    author_id BIGINT,
    body_text TEXT NOT NULL,
    body_html TEXT,
    external_id TEXT,
    delivery_status TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_ticket ON messages (ticket_id, id);
CREATE UNIQUE INDEX messages_external ON messages (workspace_id, channel, external_id) WHERE external_id IS NOT NULL;
CREATE TABLE attachments (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    data {blob} NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (workspace_id, sha256)
);
CREATE TABLE message_attachments (
    message_id BIGINT NOT NULL REFERENCES messages(id),
    attachment_id BIGINT NOT NULL REFERENCES attachments(id),
    workspace_id BIGINT NOT NULL,
    filename TEXT NOT NULL,
    PRIMARY KEY (message_id, attachment_id, filename)
);
CREATE TABLE events (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    type TEXT NOT NULL,
    actor TEXT NOT NULL,
    ticket_id BIGINT,
    customer_id BIGINT,
    changes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_ws ON events (workspace_id, id);
CREATE INDEX events_ticket ON events (ticket_id, id);
CREATE TABLE sla_timers (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    kind TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    warn_at BIGINT NOT NULL,
    paused_at BIGINT,
    warned_at BIGINT,
    breached_at BIGINT,
    UNIQUE (ticket_id, kind)
);
CREATE INDEX sla_timers_warn ON sla_timers (warned_at, warn_at);
CREATE INDEX sla_timers_due ON sla_timers (breached_at, due_at)
"#,
        sqlite: r#"
CREATE VIRTUAL TABLE search_docs USING fts5 (
    body,
    workspace_id UNINDEXED,
    kind UNINDEXED,
    ref_id UNINDEXED,
    ticket_id UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO search_docs (search_docs, rank) VALUES ('automerge', 0)
"#,
        postgres: r#"
CREATE TABLE search_docs (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL,
    workspace_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    ref_id BIGINT NOT NULL,
    ticket_id BIGINT,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body) || to_tsvector('german', body)) STORED
);
CREATE INDEX search_docs_tsv ON search_docs USING GIN (tsv);
CREATE INDEX search_docs_ref ON search_docs (workspace_id, kind, ref_id)
"#,
    },
    Migration {
        version: 2,
        name: "channels and plugins",
        common: r#"
CREATE TABLE plugins (
    id {pk},
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    wit_version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wasm {blob} NOT NULL,
    descriptor TEXT NOT NULL,
    bundled BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (key, version)
);
CREATE TABLE channels (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    plugin_key TEXT NOT NULL,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    secrets TEXT NOT NULL,
    grants TEXT NOT NULL,
    status TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX channels_ws ON channels (workspace_id, id);
CREATE TABLE inbound_payloads (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body {blob} NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    processed_at BIGINT,
    result TEXT
);
CREATE INDEX inbound_payloads_channel ON inbound_payloads (channel_id, id);
CREATE TABLE plugin_kv (
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    key TEXT NOT NULL,
    value {blob} NOT NULL,
    PRIMARY KEY (channel_id, key)
);
ALTER TABLE tickets ADD COLUMN conversation TEXT;
CREATE INDEX tickets_conversation ON tickets (workspace_id, channel, conversation) WHERE conversation IS NOT NULL
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 3,
        name: "outbox, polling, plugin versions and automations",
        common: r#"
ALTER TABLE tickets ADD COLUMN channel_id BIGINT;
ALTER TABLE messages ADD COLUMN delivery_error TEXT;
CREATE TABLE outbox (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    channel_id BIGINT NOT NULL REFERENCES channels(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    message_id BIGINT NOT NULL UNIQUE REFERENCES messages(id),
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    delivery_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_ws ON outbox (workspace_id, status, id);
ALTER TABLE channels ADD COLUMN poll_interval_ms BIGINT;
ALTER TABLE channels ADD COLUMN next_poll_at BIGINT;
ALTER TABLE channels ADD COLUMN cursor TEXT;
ALTER TABLE channels ADD COLUMN last_error TEXT;
ALTER TABLE plugins ADD COLUMN source TEXT NOT NULL DEFAULT 'bundled';
CREATE TABLE plugin_active (
    key TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    previous TEXT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE automations (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    plugin_key TEXT NOT NULL,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    secrets TEXT NOT NULL,
    grants TEXT NOT NULL,
    events TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX automations_ws ON automations (workspace_id, id);
CREATE TABLE workflows (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    order_no INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workflows_ws ON workflows (workspace_id, order_no, id);
CREATE TABLE automation_cursor (
    id INTEGER PRIMARY KEY,
    last_event_id BIGINT NOT NULL,
    owner BIGINT NOT NULL,
    locked_until BIGINT NOT NULL
);
INSERT INTO automation_cursor (id, last_event_id, owner, locked_until) SELECT 1, COALESCE(MAX(id), 0), 0, 0 FROM events
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 4,
        name: "templates, notifications, surveys, follow-ups, webhooks, schedules",
        common: r#"
ALTER TABLE workspaces ADD COLUMN templates_revision BIGINT NOT NULL DEFAULT 0;
CREATE TABLE templates (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    channel TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL,
    body_html TEXT,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, kind, name, channel, language)
);
CREATE TABLE notifications (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    ticket_id BIGINT REFERENCES tickets(id),
    body TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notifications_agent ON notifications (agent_id, id);
CREATE TABLE surveys (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    token TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    answered_at BIGINT,
    rating INTEGER,
    comment TEXT
);
CREATE INDEX surveys_ticket ON surveys (ticket_id);
CREATE TABLE follow_ups (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    due_at BIGINT NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    fired_at BIGINT
);
CREATE INDEX follow_ups_due ON follow_ups (due_at) WHERE fired_at IS NULL;
CREATE INDEX follow_ups_ticket ON follow_ups (ticket_id);
CREATE TABLE webhooks (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE TABLE webhook_deliveries (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    webhook_id BIGINT NOT NULL REFERENCES webhooks(id),
    ticket_id BIGINT,
    actor TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    response_status INTEGER,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_ws ON webhook_deliveries (workspace_id, id);
CREATE INDEX tickets_ws_assignee_status ON tickets (workspace_id, assignee_id, status);
CREATE TABLE workflow_schedule (
    workflow_id BIGINT PRIMARY KEY,
    last_minute BIGINT NOT NULL
)
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 5,
        name: "e-mail: quoted text, message subjects, raw sources, replies to closed tickets",
        common: r#"
ALTER TABLE messages ADD COLUMN body_quoted TEXT;
ALTER TABLE messages ADD COLUMN subject TEXT;
ALTER TABLE messages ADD COLUMN automatic INTEGER NOT NULL DEFAULT 0;
CREATE TABLE message_sources (
    message_id BIGINT PRIMARY KEY REFERENCES messages(id),
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    data {blob} NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE workspaces ADD COLUMN closed_ticket_reply TEXT NOT NULL DEFAULT 'reopen'
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 6,
        name: "plugins owned by a workspace",
        // NULL: installation-wide (bundled, plugins directory, the operator's CLI). Keys of a
        // workspace's plugins are `w{workspace}/{id}` (see plugin::Scope).
        common: r#"
ALTER TABLE plugins ADD COLUMN workspace_id BIGINT REFERENCES workspaces(id);
CREATE INDEX plugins_workspace ON plugins (workspace_id)
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 7,
        name: "agents can be deactivated",
        common: r#"
ALTER TABLE agents ADD COLUMN active INTEGER NOT NULL DEFAULT 1
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 8,
        name: "inbound payloads: delivery lease and retries, stored size; per-channel request size limit",
        common: r#"
ALTER TABLE inbound_payloads ADD COLUMN locked_until BIGINT;
ALTER TABLE inbound_payloads ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE inbound_payloads ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE inbound_payloads SET size = LENGTH(body);
CREATE INDEX inbound_payloads_received ON inbound_payloads (next_attempt_at) WHERE status = 'received';
CREATE INDEX inbound_payloads_age ON inbound_payloads (status, received_at);
ALTER TABLE channels ADD COLUMN max_request_bytes BIGINT
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 9,
        name: "event dispatch per workspace: cursors with leases and attempts, poisoned events",
        // One cursor per workspace instead of the one global `automation_cursor` (kept, no
        // longer read): workspaces are dispatched concurrently, each by one node at a time.
        // `attempt_from`/`attempts` count the passes that started at the cursor without
        // finishing; they are written before a pass handles anything, so a pass the process
        // died in is counted too. An event that used up its attempts is set aside in
        // `poisoned_events` with the reason, and the cursor moves past it.
        common: r#"
CREATE TABLE dispatch_cursors (
    workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id),
    last_event_id BIGINT NOT NULL,
    owner BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    attempt_from BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
INSERT INTO dispatch_cursors (workspace_id, last_event_id) SELECT w.id, COALESCE((SELECT c.last_event_id FROM automation_cursor c WHERE c.id = 1), 0) FROM workspaces w;
CREATE TABLE poisoned_events (
    event_id BIGINT PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    ticket_id BIGINT,
    type TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX poisoned_events_ws ON poisoned_events (workspace_id, event_id)
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 10,
        name: "the language of inbound messages; where a customer's name and language came from",
        // Existing customers count as `given`: nothing that was there is changed by mail.
        common: r#"
ALTER TABLE messages ADD COLUMN language TEXT;
ALTER TABLE messages ADD COLUMN language_script TEXT;
ALTER TABLE messages ADD COLUMN language_confidence DOUBLE PRECISION;
ALTER TABLE customers ADD COLUMN name_origin TEXT NOT NULL DEFAULT 'given';
ALTER TABLE customers ADD COLUMN language_origin TEXT NOT NULL DEFAULT 'given'
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 11,
        name: "agents in the browser: passwords, sessions, setup and invitation links, drafts, read marks",
        // Secrets (session ids, link tokens) are stored as SHA-256 only, like API tokens.
        common: r#"
ALTER TABLE agents ADD COLUMN password_hash TEXT;
ALTER TABLE agents ADD COLUMN password_changed_at BIGINT;
ALTER TABLE agents ADD COLUMN language TEXT;
ALTER TABLE agents ADD COLUMN signature TEXT;
CREATE TABLE web_sessions (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    session_hash TEXT NOT NULL UNIQUE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX web_sessions_agent ON web_sessions (agent_id, id);
CREATE TABLE agent_links (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    token_hash TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE drafts (
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, ticket_id)
);
CREATE TABLE ticket_reads (
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    message_id BIGINT NOT NULL,
    PRIMARY KEY (agent_id, ticket_id)
);
CREATE INDEX messages_ticket_direction ON messages (ticket_id, direction, id);
ALTER TABLE notifications ADD COLUMN kind TEXT NOT NULL DEFAULT 'workflow';
CREATE TABLE ticket_merges (
    source_id BIGINT PRIMARY KEY REFERENCES tickets(id),
    target_id BIGINT NOT NULL REFERENCES tickets(id),
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    messages BIGINT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ticket_merges_target ON ticket_merges (target_id);
CREATE TABLE saved_views (
    id {pk},
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    name TEXT NOT NULL,
    query TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (agent_id, name)
)
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 12,
        name: "signatures per channel; failed sign-ins and presence shared across nodes",
        common: r#"
CREATE TABLE agent_signatures (
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (agent_id, channel)
);
CREATE TABLE signin_failures (
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX signin_failures_key ON signin_failures (key, at);
CREATE INDEX signin_failures_at ON signin_failures (at);
CREATE TABLE presence (
    ticket_id BIGINT NOT NULL,
    agent_id BIGINT NOT NULL,
    workspace_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    at BIGINT NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (ticket_id, agent_id)
);
CREATE INDEX presence_at ON presence (at)
"#,
        sqlite: "",
        postgres: "",
    },
];
