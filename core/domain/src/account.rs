//! Agents in the browser: passwords (argon2id), one-time links that let an agent set one (the
//! admin's setup link at first start, invitations), sign-in sessions, and what an agent keeps
//! per ticket (drafts, how far they have read). Secrets — session ids and link tokens — are
//! random 256-bit values stored only as SHA-256, like API tokens.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sea_orm::ConnectionTrait;

use crate::auth::{Role, hash_token};
use crate::db;
use crate::error::{Error, Result};

/// argon2id with the parameters OWASP recommends as the first choice (19 MiB, 2 passes, one
/// lane): about 15 ms per hash on one core here, so ten sign-ins a second cost one core 15 %.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// argon2id passes.
pub const ARGON2_PASSES: u32 = 2;
/// argon2id lanes.
pub const ARGON2_LANES: u32 = 1;

/// Shortest password accepted. Length beats composition rules (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted: argon2 takes any length, but an unbounded input is a cheap way
/// to make the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// How long a setup or invitation link stays valid.
pub const LINK_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// Session lifetimes: `idle` without a request ends it; `absolute` ends it however busy.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Milliseconds without a request.
    pub idle_ms: i64,
    /// Milliseconds since sign-in.
    pub absolute_ms: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        // A working day without a request, and a week in all: an agent signs in about once a
        // week on their own machine, and a forgotten session on a shared one dies overnight.
        SessionLimits { idle_ms: 12 * 3600 * 1000, absolute_ms: 7 * 24 * 3600 * 1000 }
    }
}

fn argon2() -> Result<Argon2<'static>> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks a new password against the length rules.
///
/// # Errors
/// [`Error::Invalid`] naming the rule.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "password",
            format!("the password needs at least {MIN_PASSWORD_CHARS} characters; a few words make a good one"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid("password", format!("the password may have at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// Hashes a password (PHC string). CPU-heavy: call it from a blocking thread.
///
/// # Errors
/// [`Error::Invalid`] for a password the rules refuse.
pub fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt: {e}")))?;
    Ok(argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))?
        .to_string())
}

/// Whether `password` matches the stored hash. CPU-heavy: call it from a blocking thread.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    // The parameters come from the stored hash, so hashes made with older settings still verify.
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A hash that matches no password, verified when the e-mail is unknown so that a sign-in
/// takes as long for an unknown address as for a known one.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that nobody has").unwrap_or_default())
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a one-time link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// The first admin's password, printed at first start.
    Setup,
    /// An invited agent's password.
    Invite,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Setup => "setup",
            LinkPurpose::Invite => "invite",
        }
    }
}

/// The address of a one-time link: `{public_url}/setup/{token}` or `{public_url}/invite/{token}`
/// (the web application serves both).
pub fn link_url(public_url: &str, purpose: LinkPurpose, token: &str) -> String {
    format!("{}/{}/{token}", public_url.trim_end_matches('/'), purpose.as_str())
}

/// Stores a one-time link for `agent_id` and returns its token (shown once, never stored).
///
/// # Errors
/// Database errors.
pub async fn create_link<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: i64,
    purpose: LinkPurpose,
) -> Result<String> {
    let token = random_secret();
    let now = crate::now_ms();
    db::exec(
        db,
        "INSERT INTO agent_links (workspace_id, agent_id, token_hash, purpose, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![
            workspace_id.into(),
            agent_id.into(),
            hash_token(&token).into(),
            purpose.as_str().into(),
            now.into(),
            (now + LINK_LIFETIME_MS).into(),
        ],
    )
    .await?;
    Ok(token)
}

/// The agent a link is for, while it is valid.
#[derive(Debug, Clone)]
pub struct LinkHolder {
    /// Workspace.
    pub workspace_id: i64,
    /// Agent.
    pub agent_id: i64,
    /// Their name, to greet them.
    pub name: String,
    /// Their e-mail.
    pub email: String,
}

/// The agent of an unused, unexpired link of `purpose`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown, used or expired link (we do not say which).
pub async fn link_holder<C: ConnectionTrait>(db: &C, token: &str, purpose: LinkPurpose) -> Result<LinkHolder> {
    let row = db::query_one(
        db,
        "SELECT l.workspace_id, l.agent_id, a.name, a.email FROM agent_links l JOIN agents a ON a.id = l.agent_id \
         WHERE l.token_hash = ? AND l.purpose = ? AND l.used_at IS NULL AND l.expires_at > ? AND a.active = 1",
        vec![hash_token(token).into(), purpose.as_str().into(), crate::now_ms().into()],
    )
    .await?
    .ok_or(Error::NotFound("link"))?;
    Ok(LinkHolder {
        workspace_id: db::col(&row, "workspace_id")?,
        agent_id: db::col(&row, "agent_id")?,
        name: db::col(&row, "name")?,
        email: db::col(&row, "email")?,
    })
}

/// Sets the agent's password through a one-time link and uses the link up, in one transaction;
/// every session of the agent ends (a password change signs out everywhere).
///
/// # Errors
/// [`Error::NotFound`] when the link is no longer valid (also when it was used meanwhile).
pub async fn redeem_link(
    db: &sea_orm::DatabaseConnection,
    token: &str,
    purpose: LinkPurpose,
    password_hash: &str,
) -> Result<LinkHolder> {
    let txn = db::begin_write(db).await?;
    let holder = link_holder(&txn, token, purpose).await?;
    let now = crate::now_ms();
    let used = db::exec(
        &txn,
        "UPDATE agent_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
        vec![now.into(), hash_token(token).into()],
    )
    .await?;
    if used != 1 {
        return Err(Error::NotFound("link"));
    }
    store_password(&txn, holder.agent_id, password_hash).await?;
    txn.commit().await?;
    Ok(holder)
}

async fn store_password<C: ConnectionTrait>(db: &C, agent_id: i64, password_hash: &str) -> Result<()> {
    let now = crate::now_ms();
    db::exec(
        db,
        "UPDATE agents SET password_hash = ?, password_changed_at = ? WHERE id = ?",
        vec![password_hash.into(), now.into(), agent_id.into()],
    )
    .await?;
    db::exec(
        db,
        "UPDATE web_sessions SET ended_at = ? WHERE agent_id = ? AND ended_at IS NULL",
        vec![now.into(), agent_id.into()],
    )
    .await?;
    Ok(())
}

/// An agent who may sign in with a password, found by e-mail.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Workspace.
    pub workspace_id: i64,
    /// Agent.
    pub agent_id: i64,
    /// The stored PHC hash.
    pub password_hash: String,
}

/// The active agents with this e-mail who have a password (an address may be an agent in
/// several workspaces; the password decides which one signs in).
///
/// # Errors
/// Database errors.
pub async fn credentials<C: ConnectionTrait>(db: &C, email: &str) -> Result<Vec<Credentials>> {
    let rows = db::query_all(
        db,
        "SELECT id, workspace_id, password_hash FROM agents \
         WHERE lower(email) = lower(?) AND active = 1 AND password_hash IS NOT NULL ORDER BY id",
        vec![email.trim().into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Credentials {
                workspace_id: db::col(r, "workspace_id")?,
                agent_id: db::col(r, "id")?,
                password_hash: db::col(r, "password_hash")?,
            })
        })
        .collect()
}

/// A new session: the cookie value (shown to the browser only) and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie's value.
    pub secret: String,
    /// The token forms and scripts send back.
    pub csrf: String,
}

/// Starts a session for an agent.
///
/// # Errors
/// Database errors.
pub async fn start_session<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64) -> Result<NewSession> {
    let (secret, csrf) = (random_secret(), random_secret());
    let now = crate::now_ms();
    db::exec(
        db,
        "INSERT INTO web_sessions (workspace_id, agent_id, session_hash, csrf, created_at, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![workspace_id.into(), agent_id.into(), hash_token(&secret).into(), csrf.clone().into(), now.into(), now.into()],
    )
    .await?;
    Ok(NewSession { secret, csrf })
}

/// The signed-in agent of a live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session's row id.
    pub id: i64,
    /// Workspace.
    pub workspace_id: i64,
    /// Agent.
    pub agent_id: i64,
    /// Their display name.
    pub name: String,
    /// Their e-mail.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Their chosen UI language, if any.
    pub language: Option<String>,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Don't write `seen_at` more often than this: a page load makes several requests.
const SEEN_RESOLUTION_MS: i64 = 60_000;

/// The session a cookie names, if it is live (not ended, not idle too long, not too old, its
/// agent active). Refreshes its idle clock.
///
/// # Errors
/// Database errors.
pub async fn session<C: ConnectionTrait>(db: &C, secret: &str, limits: SessionLimits) -> Result<Option<Session>> {
    let now = crate::now_ms();
    let row = db::query_one(
        db,
        "SELECT s.id, s.workspace_id, s.agent_id, s.csrf, s.seen_at, a.name, a.email, a.role, a.language \
         FROM web_sessions s JOIN agents a ON a.id = s.agent_id \
         WHERE s.session_hash = ? AND s.ended_at IS NULL AND s.seen_at > ? AND s.created_at > ? AND a.active = 1",
        vec![hash_token(secret).into(), (now - limits.idle_ms).into(), (now - limits.absolute_ms).into()],
    )
    .await?;
    let Some(r) = row else { return Ok(None) };
    let id: i64 = db::col(&r, "id")?;
    if db::col::<i64>(&r, "seen_at")? < now - SEEN_RESOLUTION_MS {
        db::exec(db, "UPDATE web_sessions SET seen_at = ? WHERE id = ?", vec![now.into(), id.into()]).await?;
    }
    Ok(Some(Session {
        id,
        workspace_id: db::col(&r, "workspace_id")?,
        agent_id: db::col(&r, "agent_id")?,
        name: db::col(&r, "name")?,
        email: db::col(&r, "email")?,
        role: Role::parse(&db::col::<String>(&r, "role")?)?,
        language: db::col(&r, "language")?,
        csrf: db::col(&r, "csrf")?,
    }))
}

/// An agent's presence on a ticket as stored for the other nodes.
#[derive(Debug, Clone)]
pub struct PresenceRow {
    /// Workspace.
    pub workspace_id: i64,
    /// Ticket.
    pub ticket_id: i64,
    /// Agent.
    pub agent_id: i64,
    /// Their display name.
    pub name: String,
    /// `viewing`, `replying` or `left`.
    pub state: String,
    /// When they said so, Unix ms.
    pub at: i64,
    /// The node that wrote it.
    pub node: String,
}

/// Stores what an agent does on a ticket, for the other nodes (and forgets entries older than
/// `ttl_ms`).
///
/// # Errors
/// Database errors.
pub async fn set_presence<C: ConnectionTrait>(db: &C, p: &PresenceRow, ttl_ms: i64) -> Result<()> {
    db::exec(
        db,
        "INSERT INTO presence (workspace_id, ticket_id, agent_id, name, state, at, node) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (ticket_id, agent_id) DO UPDATE SET workspace_id = excluded.workspace_id, name = excluded.name, \
         state = excluded.state, at = excluded.at, node = excluded.node",
        vec![
            p.workspace_id.into(),
            p.ticket_id.into(),
            p.agent_id.into(),
            p.name.clone().into(),
            p.state.clone().into(),
            p.at.into(),
            p.node.clone().into(),
        ],
    )
    .await?;
    db::exec(db, "DELETE FROM presence WHERE at < ?", vec![(p.at - ttl_ms).into()]).await?;
    Ok(())
}

/// Presence entries written after `after` (Unix ms), oldest first.
///
/// # Errors
/// Database errors.
pub async fn presence_since<C: ConnectionTrait>(db: &C, after: i64, limit: u64) -> Result<Vec<PresenceRow>> {
    let rows = db::query_all(
        db,
        "SELECT workspace_id, ticket_id, agent_id, name, state, at, node FROM presence WHERE at > ? ORDER BY at LIMIT ?",
        vec![after.into(), (limit as i64).into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PresenceRow {
                workspace_id: db::col(r, "workspace_id")?,
                ticket_id: db::col(r, "ticket_id")?,
                agent_id: db::col(r, "agent_id")?,
                name: db::col(r, "name")?,
                state: db::col(r, "state")?,
                at: db::col(r, "at")?,
                node: db::col(r, "node")?,
            })
        })
        .collect()
}

/// The window over which failed sign-ins are counted.
pub const SIGNIN_WINDOW_MS: i64 = 60_000;

/// How long (ms) until a sign-in under `keys` may be tried again: for each `(key, limit)` with
/// `limit` failures within [`SIGNIN_WINDOW_MS`], until the newest `limit`-th of them leaves the
/// window. Failures are counted in the database, so every node sees every failure.
///
/// # Errors
/// Database errors.
pub async fn signin_wait<C: ConnectionTrait>(db: &C, keys: &[(&str, usize)], now: i64) -> Result<Option<i64>> {
    let mut wait: Option<i64> = None;
    for (key, limit) in keys {
        let rows = db::query_all(
            db,
            "SELECT at FROM signin_failures WHERE key = ? AND at > ? ORDER BY at DESC LIMIT ?",
            vec![(*key).into(), (now - SIGNIN_WINDOW_MS).into(), (*limit as i64).into()],
        )
        .await?;
        if rows.len() >= *limit
            && let Some(last) = rows.last()
        {
            let left = (db::col::<i64>(last, "at")? + SIGNIN_WINDOW_MS - now).max(1);
            wait = Some(wait.map_or(left, |w| w.max(left)));
        }
    }
    Ok(wait)
}

/// Counts a failed sign-in against each of `keys` (and forgets failures older than the
/// window).
///
/// # Errors
/// Database errors.
pub async fn signin_failed<C: ConnectionTrait>(db: &C, keys: &[&str], now: i64) -> Result<()> {
    for key in keys {
        db::exec(db, "INSERT INTO signin_failures (key, at) VALUES (?, ?)", vec![(*key).into(), now.into()]).await?;
    }
    db::exec(db, "DELETE FROM signin_failures WHERE at <= ?", vec![(now - SIGNIN_WINDOW_MS).into()]).await?;
    Ok(())
}

/// Whether a session is still live (a long-lived stream asks now and then; a session ended on
/// any node, expired or whose agent was deactivated is not).
///
/// # Errors
/// Database errors.
pub async fn session_live<C: ConnectionTrait>(db: &C, session_id: i64, limits: SessionLimits) -> Result<bool> {
    let now = crate::now_ms();
    let row = db::query_one(
        db,
        "SELECT 1 AS one FROM web_sessions s JOIN agents a ON a.id = s.agent_id \
         WHERE s.id = ? AND s.ended_at IS NULL AND s.seen_at > ? AND s.created_at > ? AND a.active = 1",
        vec![session_id.into(), (now - limits.idle_ms).into(), (now - limits.absolute_ms).into()],
    )
    .await?;
    Ok(row.is_some())
}

/// Ends one session (sign-out).
///
/// # Errors
/// Database errors.
pub async fn end_session<C: ConnectionTrait>(db: &C, session_id: i64) -> Result<()> {
    db::exec(
        db,
        "UPDATE web_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
        vec![crate::now_ms().into(), session_id.into()],
    )
    .await?;
    Ok(())
}

/// Ends every session of an agent ("sign out everywhere"); returns how many were live.
///
/// # Errors
/// Database errors.
pub async fn end_all_sessions<C: ConnectionTrait>(db: &C, agent_id: i64) -> Result<u64> {
    db::exec(
        db,
        "UPDATE web_sessions SET ended_at = ? WHERE agent_id = ? AND ended_at IS NULL",
        vec![crate::now_ms().into(), agent_id.into()],
    )
    .await
}

/// Remembers an agent's UI language (the web layer checks it is one it speaks).
///
/// # Errors
/// Database errors.
pub async fn set_language<C: ConnectionTrait>(db: &C, agent_id: i64, language: &str) -> Result<()> {
    db::exec(db, "UPDATE agents SET language = ? WHERE id = ?", vec![language.into(), agent_id.into()]).await?;
    Ok(())
}

/// Longest signature kept.
pub const MAX_SIGNATURE_CHARS: usize = 1000;

/// The channels (as templates know them: `email`, `sms`, `chat`) an agent may give a signature
/// of its own; any other reply takes the agent's general signature.
pub const SIGNATURE_CHANNELS: [&str; 3] = ["email", "sms", "chat"];

/// The agent's signature for replies on `channel` (one of [`SIGNATURE_CHANNELS`]): the one
/// set for that channel, else the general one.
///
/// # Errors
/// Database errors.
pub async fn signature<C: ConnectionTrait>(db: &C, agent_id: i64, channel: &str) -> Result<Option<String>> {
    let own = db::query_one(
        db,
        "SELECT body FROM agent_signatures WHERE agent_id = ? AND channel = ?",
        vec![agent_id.into(), channel.into()],
    )
    .await?;
    if let Some(r) = own {
        return Ok(Some(db::col(&r, "body")?));
    }
    Ok(signatures(db, agent_id).await?.remove(""))
}

/// Every signature the agent set: the general one under `""`, the others under their channel.
///
/// # Errors
/// Database errors.
pub async fn signatures<C: ConnectionTrait>(db: &C, agent_id: i64) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let row = db::query_one(db, "SELECT signature FROM agents WHERE id = ?", vec![agent_id.into()]).await?;
    if let Some(sig) = row.map(|r| db::col::<Option<String>>(&r, "signature")).transpose()?.flatten() {
        out.insert(String::new(), sig);
    }
    let rows =
        db::query_all(db, "SELECT channel, body FROM agent_signatures WHERE agent_id = ?", vec![agent_id.into()])
            .await?;
    for r in &rows {
        out.insert(db::col(r, "channel")?, db::col(r, "body")?);
    }
    out.retain(|_, v| !v.trim().is_empty());
    Ok(out)
}

/// Sets (or, blank, removes) the agent's general signature (`channel` `None`) or the one for a
/// channel of [`SIGNATURE_CHANNELS`].
///
/// # Errors
/// [`Error::Invalid`] for a signature over [`MAX_SIGNATURE_CHARS`] or an unknown channel.
pub async fn set_signature<C: ConnectionTrait>(
    db: &C,
    agent_id: i64,
    channel: Option<&str>,
    signature: &str,
) -> Result<()> {
    if signature.chars().count() > MAX_SIGNATURE_CHARS {
        return Err(Error::invalid("signature", format!("a signature has at most {MAX_SIGNATURE_CHARS} characters")));
    }
    let value = Some(signature.trim_end().to_owned()).filter(|s| !s.trim().is_empty());
    let Some(channel) = channel else {
        db::exec(db, "UPDATE agents SET signature = ? WHERE id = ?", vec![value.into(), agent_id.into()]).await?;
        return Ok(());
    };
    if !SIGNATURE_CHANNELS.contains(&channel) {
        return Err(Error::invalid(
            "channel",
            format!("signatures are kept for {SIGNATURE_CHANNELS:?}, not {channel:?}"),
        ));
    }
    match value {
        Some(body) => {
            db::exec(
                db,
                "INSERT INTO agent_signatures (agent_id, channel, body) VALUES (?, ?, ?) \
                 ON CONFLICT (agent_id, channel) DO UPDATE SET body = excluded.body",
                vec![agent_id.into(), channel.into(), body.into()],
            )
            .await?
        }
        None => {
            db::exec(
                db,
                "DELETE FROM agent_signatures WHERE agent_id = ? AND channel = ?",
                vec![agent_id.into(), channel.into()],
            )
            .await?
        }
    };
    Ok(())
}

/// The agent's draft for a ticket, if any.
///
/// # Errors
/// Database errors.
pub async fn draft<C: ConnectionTrait>(db: &C, agent_id: i64, ticket_id: i64) -> Result<Option<String>> {
    let row = db::query_one(
        db,
        "SELECT body FROM drafts WHERE agent_id = ? AND ticket_id = ?",
        vec![agent_id.into(), ticket_id.into()],
    )
    .await?;
    row.map(|r| db::col(&r, "body")).transpose()
}

/// Saves (or, when `body` is blank, drops) the agent's draft for a ticket of the workspace.
///
/// # Errors
/// [`Error::NotFound`] for a ticket of another workspace, [`Error::Invalid`] for an oversized draft.
pub async fn save_draft<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: i64,
    ticket_id: i64,
    body: &str,
    max_bytes: usize,
) -> Result<()> {
    if body.len() > max_bytes {
        return Err(Error::invalid("body", format!("the draft is larger than {max_bytes} bytes")));
    }
    crate::ticket::find(db, workspace_id, ticket_id).await?;
    if body.trim().is_empty() {
        return clear_draft(db, agent_id, ticket_id).await;
    }
    db::exec(
        db,
        "INSERT INTO drafts (workspace_id, agent_id, ticket_id, body, updated_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (agent_id, ticket_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        vec![workspace_id.into(), agent_id.into(), ticket_id.into(), body.into(), crate::now_ms().into()],
    )
    .await?;
    Ok(())
}

/// Drops the agent's draft for a ticket (after it was sent).
///
/// # Errors
/// Database errors.
pub async fn clear_draft<C: ConnectionTrait>(db: &C, agent_id: i64, ticket_id: i64) -> Result<()> {
    db::exec(db, "DELETE FROM drafts WHERE agent_id = ? AND ticket_id = ?", vec![agent_id.into(), ticket_id.into()])
        .await?;
    Ok(())
}

/// Records that the agent has seen a ticket's messages up to `message_id`.
///
/// # Errors
/// Database errors.
pub async fn mark_read<C: ConnectionTrait>(db: &C, agent_id: i64, ticket_id: i64, message_id: i64) -> Result<()> {
    db::exec(
        db,
        "INSERT INTO ticket_reads (agent_id, ticket_id, message_id) VALUES (?, ?, ?) \
         ON CONFLICT (agent_id, ticket_id) DO UPDATE SET message_id = excluded.message_id \
         WHERE excluded.message_id > ticket_reads.message_id",
        vec![agent_id.into(), ticket_id.into(), message_id.into()],
    )
    .await?;
    Ok(())
}

/// Saved views an agent may keep.
pub const MAX_SAVED_VIEWS: usize = 30;

/// An agent's saved inbox view: a name and the inbox's query string.
#[derive(Debug, Clone)]
pub struct SavedView {
    /// Id.
    pub id: i64,
    /// The agent's name for it.
    pub name: String,
    /// The inbox query string (`view=open&tier=premium&sort=newest`).
    pub query: String,
}

/// The agent's saved views, by name.
///
/// # Errors
/// Database errors.
pub async fn saved_views<C: ConnectionTrait>(db: &C, agent_id: i64) -> Result<Vec<SavedView>> {
    let rows = db::query_all(
        db,
        "SELECT id, name, query FROM saved_views WHERE agent_id = ? ORDER BY name",
        vec![agent_id.into()],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(SavedView { id: db::col(r, "id")?, name: db::col(r, "name")?, query: db::col(r, "query")? }))
        .collect()
}

/// Saves (or, under a name the agent used before, replaces) a view. The caller checks the
/// query is one the inbox understands.
///
/// # Errors
/// [`Error::Invalid`] for a blank or long name, a long query, or one view too many.
pub async fn save_view<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: i64,
    name: &str,
    query: &str,
) -> Result<()> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 60 {
        return Err(Error::invalid("name", "a view's name needs 1-60 characters"));
    }
    if query.len() > 2000 {
        return Err(Error::invalid("query", "the view's filters are too long"));
    }
    let existing = saved_views(db, agent_id).await?;
    if existing.len() >= MAX_SAVED_VIEWS && !existing.iter().any(|v| v.name == name) {
        return Err(Error::invalid(
            "name",
            format!("an agent keeps at most {MAX_SAVED_VIEWS} views; delete one first"),
        ));
    }
    db::exec(
        db,
        "INSERT INTO saved_views (workspace_id, agent_id, name, query, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (agent_id, name) DO UPDATE SET query = excluded.query",
        vec![workspace_id.into(), agent_id.into(), name.into(), query.into(), crate::now_ms().into()],
    )
    .await?;
    Ok(())
}

/// Deletes one of the agent's views.
///
/// # Errors
/// [`Error::NotFound`] when it is not the agent's.
pub async fn delete_view<C: ConnectionTrait>(db: &C, agent_id: i64, id: i64) -> Result<()> {
    let n =
        db::exec(db, "DELETE FROM saved_views WHERE id = ? AND agent_id = ?", vec![id.into(), agent_id.into()]).await?;
    if n == 1 { Ok(()) } else { Err(Error::NotFound("saved view")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn short_and_huge_passwords_are_refused_with_the_rule() {
        let short = check_password("short").expect_err("short");
        assert!(short.to_string().contains("at least 10 characters"), "{short}");
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_password("ten chars!").is_ok());
    }
}
