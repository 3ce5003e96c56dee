//! API tokens: long random secrets shown once, stored as SHA-256 (a fast hash is enough for
//! 256-bit random secrets; a password hash on every request is what makes other helpdesks'
//! APIs crawl), each tied to an agent, a workspace and a role. Lookups are cached in memory for
//! a few seconds and dropped on every node when a token, or its agent, changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::entity::api_token;
use crate::error::{Error, Result};

/// Prefix that makes a Plugdesk token recognisable in logs and secret scanners.
const TOKEN_PREFIX: &str = "pd_";

/// What a token may do. Agents work tickets and customers; admins also change configuration
/// (tiers, teams, agents, tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Full access to the workspace.
    Admin,
    /// Tickets, customers, search; no configuration.
    Agent,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// Parses a stored or user-given role.
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything but `admin` or `agent`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            other => Err(Error::invalid("role", format!("unknown role {other:?}; use admin or agent"))),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The workspace every query of this request is confined to.
    pub workspace_id: i64,
    /// The agent the token belongs to.
    pub agent_id: i64,
    /// The token's id (for audit).
    pub token_id: i64,
    /// What it may do.
    pub role: Role,
}

impl Principal {
    /// The actor string recorded on events.
    pub fn actor(&self) -> String {
        format!("agent:{}", self.agent_id)
    }

    /// Fails unless the caller is an admin.
    ///
    /// # Errors
    /// [`Error::Forbidden`] naming what needs the admin role.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("{what} needs an admin token; this token has the agent role")))
        }
    }
}

/// A fresh random token: `pd_` and 64 hex digits (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares a presented secret with the expected one in time that does not depend on where
/// they differ (both are hashed first, so their lengths leak nothing either).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Stores a new token for `agent_id` and returns the secret, which is never stored or shown
/// again.
pub async fn create_token<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: i64,
    name: &str,
    role: Role,
) -> Result<(i64, String)> {
    use sea_orm::ActiveValue::{NotSet, Set};
    let secret = generate_token();
    let row = api_token::ActiveModel {
        id: NotSet,
        workspace_id: Set(workspace_id),
        agent_id: Set(agent_id),
        name: Set(name.to_owned()),
        role: Set(role.as_str().to_owned()),
        token_hash: Set(hash_token(&secret)),
        created_at: Set(crate::now_ms()),
        revoked_at: Set(None),
    };
    let id = api_token::Entity::insert(row).exec(db).await?.last_insert_id;
    Ok((id, secret))
}

/// One cached lookup and when it was made.
struct Cached {
    principal: Principal,
    at: Instant,
}

/// Caches token hash → principal for a short while ([`crate::config::Auth::token_cache_ms`]).
/// Revocations, role changes and deactivations drop entries at once on this node
/// ([`TokenCache::apply`]) and, on PostgreSQL, on every other node through [`announce`] and
/// [`follow_changes`]; the lifetime bounds what a lost notification can cost.
pub struct TokenCache {
    map: RwLock<HashMap<String, Cached>>,
    ttl: Duration,
    /// Raised by every [`TokenCache::apply`]: a lookup that raced a change (read the row
    /// before the change committed) does not cache what it read.
    generation: AtomicU64,
}

impl TokenCache {
    /// An empty cache whose entries live `cfg.token_cache_ms`.
    pub fn new(cfg: &crate::config::Auth) -> Self {
        TokenCache {
            map: RwLock::new(HashMap::new()),
            ttl: Duration::from_millis(cfg.token_cache_ms),
            generation: AtomicU64::new(0),
        }
    }

    /// Resolves the `Authorization` header's token to a principal. The role is the lower of
    /// the token's role and its agent's current role: a token may be narrowed to `agent`, but
    /// never acts above what its agent is now.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an unknown or revoked token, or one whose agent is
    /// deactivated.
    pub async fn authenticate<C: ConnectionTrait>(&self, db: &C, token: &str) -> Result<Principal> {
        let hash = hash_token(token);
        if let Some(c) = self.map.read().map_err(|_| Error::Internal("token cache poisoned".into()))?.get(&hash)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.principal);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let row = crate::db::query_one(
            db,
            "SELECT t.id, t.workspace_id, t.agent_id, t.role AS token_role, a.role AS agent_role, a.active FROM api_tokens t JOIN agents a ON a.id = t.agent_id AND a.workspace_id = t.workspace_id WHERE t.token_hash = ? AND t.revoked_at IS NULL",
            vec![hash.clone().into()],
        )
        .await?;
        let Some(row) = row.filter(|r| crate::db::col::<i32>(r, "active").is_ok_and(|a| a != 0)) else {
            // A stale entry must not outlive what the database now says.
            self.map.write().map_err(|_| Error::Internal("token cache poisoned".into()))?.remove(&hash);
            return Err(Error::Unauthorized("unknown or revoked API token".into()));
        };
        let token_role = Role::parse(&crate::db::col::<String>(&row, "token_role")?)?;
        let agent_role = Role::parse(&crate::db::col::<String>(&row, "agent_role")?)?;
        let principal = Principal {
            workspace_id: crate::db::col(&row, "workspace_id")?,
            agent_id: crate::db::col(&row, "agent_id")?,
            token_id: crate::db::col(&row, "id")?,
            role: if token_role == Role::Admin && agent_role == Role::Admin { Role::Admin } else { Role::Agent },
        };
        let mut map = self.map.write().map_err(|_| Error::Internal("token cache poisoned".into()))?;
        if self.generation.load(Ordering::SeqCst) == generation {
            map.insert(hash, Cached { principal, at: Instant::now() });
        }
        Ok(principal)
    }

    /// Drops the entries a change makes stale.
    pub fn apply(&self, change: Change) {
        if let Ok(mut map) = self.map.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            match change {
                Change::Token(id) => map.retain(|_, c| c.principal.token_id != id),
                Change::Agent(id) => map.retain(|_, c| c.principal.agent_id != id),
                Change::All => map.clear(),
            }
        }
    }
}

/// What changed about tokens, as sent between nodes (`token:ID`, `agent:ID`, `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A token was revoked.
    Token(i64),
    /// An agent's role or active state changed (or its tokens were revoked).
    Agent(i64),
    /// Anything may have changed (a node lost its notification connection).
    All,
}

impl Change {
    fn encode(self) -> String {
        match self {
            Change::Token(id) => format!("token:{id}"),
            Change::Agent(id) => format!("agent:{id}"),
            Change::All => "all".into(),
        }
    }

    /// Reads a notification payload; anything unknown counts as [`Change::All`] (the safe side).
    fn decode(s: &str) -> Self {
        let parsed = match s.split_once(':') {
            Some(("token", id)) => id.parse().ok().map(Change::Token),
            Some(("agent", id)) => id.parse().ok().map(Change::Agent),
            _ => None,
        };
        parsed.unwrap_or(Change::All)
    }
}

/// The PostgreSQL notification channel token changes travel on.
const CHANNEL: &str = "plugdesk_auth";

/// Applies `change` to this node's cache and tells every other node (PostgreSQL
/// `NOTIFY`; a single SQLite node has no one to tell). Call it after the change committed.
/// A notification that cannot be sent is logged, not returned: the change is committed, and
/// the other nodes' entries expire within `auth.token_cache_ms` anyway.
pub async fn announce(core: &crate::Domain, change: Change) {
    core.tokens().apply(change);
    if core.backend() == DbBackend::Postgres {
        let sent =
            crate::db::exec(core.db(), "SELECT pg_notify(?, ?)", vec![CHANNEL.into(), change.encode().into()]).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, ?change, "could not tell the other nodes about a token change");
        }
    }
}

/// Listens for other nodes' token changes (PostgreSQL only) until the process ends. Whenever
/// the listening connection is (re)established the whole cache is dropped: a notification
/// may have been missed in between.
pub async fn follow_changes(core: crate::Domain) {
    if core.backend() != DbBackend::Postgres {
        return;
    }
    let pool = core.db().get_postgres_connection_pool().clone();
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for token changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for token changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        core.tokens().apply(Change::All);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => core.tokens().apply(Change::decode(n.payload())),
                // The connection dropped and was re-established: changes may have been missed.
                Ok(None) => core.tokens().apply(Change::All),
                Err(e) => {
                    tracing::warn!(error = %e, "lost the token change listener; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Revokes a token of the workspace, on every node.
///
/// # Errors
/// [`Error::NotFound`] when the workspace has no such token.
pub async fn revoke_token(core: &crate::Domain, workspace_id: i64, token_id: i64) -> Result<()> {
    let n = crate::db::exec(
        core.db(),
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL",
        vec![crate::now_ms().into(), token_id.into(), workspace_id.into()],
    )
    .await?;
    if n == 0 {
        return Err(Error::NotFound("token"));
    }
    announce(core, Change::Token(token_id)).await;
    Ok(())
}

/// Revokes every live token of an agent (when the agent is deactivated). Call [`announce`]
/// with [`Change::Agent`] after the transaction commits.
pub async fn revoke_agent_tokens<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64) -> Result<u64> {
    crate::db::exec(
        db,
        "UPDATE api_tokens SET revoked_at = ? WHERE agent_id = ? AND workspace_id = ? AND revoked_at IS NULL",
        vec![crate::now_ms().into(), agent_id.into(), workspace_id.into()],
    )
    .await
}

/// A token as the API lists it: never the secret or its hash.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// Id.
    pub id: i64,
    /// The agent it acts as.
    pub agent_id: i64,
    /// Its label.
    pub name: String,
    /// The role it was created with (it acts with at most its agent's current role).
    pub role: Role,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// The workspace's tokens, optionally of one agent, newest first.
pub async fn list_tokens<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    agent_id: Option<i64>,
) -> Result<Vec<TokenInfo>> {
    let mut q = api_token::Entity::find().filter(api_token::Column::WorkspaceId.eq(workspace_id));
    if let Some(a) = agent_id {
        q = q.filter(api_token::Column::AgentId.eq(a));
    }
    q.order_by_desc(api_token::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|t| {
            Ok(TokenInfo {
                id: t.id,
                agent_id: t.agent_id,
                name: t.name,
                role: Role::parse(&t.role)?,
                created_at: crate::rfc3339(t.created_at),
                revoked_at: t.revoked_at.map(crate::rfc3339),
            })
        })
        .collect()
}

/// A token bucket per API token: `rate_per_second` refill, `rate_burst` capacity. Kept per
/// node, in memory: a limit against a runaway client, not an accounting system.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before full (idle) ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter from the configuration (`rate_per_second` 0 = no limit).
    pub fn new(cfg: &crate::config::Auth) -> Self {
        RateLimiter {
            per_second: f64::from(cfg.rate_per_second),
            burst: f64::from(cfg.rate_burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the token's bucket.
    ///
    /// # Errors
    /// The time until the next request would be allowed.
    pub fn check(&self, token_id: i64) -> std::result::Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut map) = self.buckets.lock() else { return Ok(()) };
        let now = Instant::now();
        if map.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(token_id).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with("pd_") && a.len() == 3 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn change_notifications_round_trip_and_unknown_ones_clear_everything() {
        for c in [Change::Token(7), Change::Agent(3), Change::All] {
            assert_eq!(Change::decode(&c.encode()), c);
        }
        assert_eq!(Change::decode("token:x"), Change::All);
        assert_eq!(Change::decode("garbage"), Change::All);
    }

    #[test]
    fn a_token_bucket_allows_the_burst_then_refuses_with_a_wait() {
        let cfg = crate::config::Auth { token_cache_ms: 0, rate_per_second: 1, rate_burst: 3 };
        let limiter = RateLimiter::new(&cfg);
        for _ in 0..3 {
            assert_eq!(limiter.check(1), Ok(()));
        }
        let wait = limiter.check(1).err().unwrap_or_default();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(limiter.check(2), Ok(()), "buckets are per token");
        let off = RateLimiter::new(&crate::config::Auth { rate_per_second: 0, ..cfg });
        assert!((0..1000).all(|_| off.check(1).is_ok()));
    }
}
