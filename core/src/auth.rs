//! API tokens: long random secrets shown once, stored as SHA-256 (a fast hash is enough for
//! 256-bit random secrets; a password hash on every request is what makes other helpdesks'
//! APIs crawl), each tied to an agent, a workspace and a role. Lookups are cached in memory.

use std::collections::HashMap;
use std::sync::RwLock;

use rand::RngCore;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
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

/// Caches token hash → principal. Revocation goes through [`TokenCache::forget`].
#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<String, Principal>>,
}

impl TokenCache {
    /// Resolves the `Authorization` header's token to a principal.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for an unknown or revoked token.
    pub async fn authenticate<C: ConnectionTrait>(&self, db: &C, token: &str) -> Result<Principal> {
        let hash = hash_token(token);
        if let Some(p) = self.map.read().map_err(|_| Error::Internal("token cache poisoned".into()))?.get(&hash) {
            return Ok(*p);
        }
        let row = api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(hash.clone()))
            .filter(api_token::Column::RevokedAt.is_null())
            .one(db)
            .await?
            .ok_or_else(|| Error::Unauthorized("unknown or revoked API token".into()))?;
        let principal = Principal {
            workspace_id: row.workspace_id,
            agent_id: row.agent_id,
            token_id: row.id,
            role: Role::parse(&row.role)?,
        };
        self.map.write().map_err(|_| Error::Internal("token cache poisoned".into()))?.insert(hash, principal);
        Ok(principal)
    }

    /// Drops a revoked token from the cache.
    pub fn forget(&self, token_id: i64) {
        if let Ok(mut map) = self.map.write() {
            map.retain(|_, p| p.token_id != token_id);
        }
    }
}

/// Revokes a token of the workspace.
///
/// # Errors
/// [`Error::NotFound`] when the workspace has no such token.
pub async fn revoke_token<C: ConnectionTrait>(
    db: &C,
    cache: &TokenCache,
    workspace_id: i64,
    token_id: i64,
) -> Result<()> {
    let n = crate::db::exec(
        db,
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL",
        vec![crate::now_ms().into(), token_id.into(), workspace_id.into()],
    )
    .await?;
    if n == 0 {
        return Err(Error::NotFound("token"));
    }
    cache.forget(token_id);
    Ok(())
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
}
