//! Customers: one person across every channel. Identities (e-mail address, phone number,
//! chat handle, …) are unique per workspace and all point to one customer; two customers can
//! be merged, and the merge keeps what is needed to see what moved.

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::db;
use crate::entity::{customer, identity};
use crate::error::{Error, Result};
use crate::event::{self, NewEvent};

/// Longest identity address accepted.
const MAX_ADDRESS_LEN: usize = 320;

/// An identity as given by a client or a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    /// `email`, `phone`, or a channel's handle kind such as `telegram`.
    pub kind: String,
    /// The address in that kind.
    pub address: String,
}

/// Normalises an identity so that the same person is found however the address was typed:
/// e-mail addresses are lower-cased, phone numbers reduced to `+` and digits.
///
/// # Errors
/// [`Error::Invalid`] naming the identity when it cannot be an address of its kind.
pub fn normalize_identity(kind: &str, address: &str) -> Result<(String, String)> {
    let kind = kind.trim().to_ascii_lowercase();
    let address = address.trim();
    if kind.is_empty() || kind.len() > 32 || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Error::invalid(
            "identity.kind",
            format!("identity kind {kind:?} must be 1-32 characters of a-z, 0-9, _ or -"),
        ));
    }
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return Err(Error::invalid(&kind, format!("{kind} address must be 1-{MAX_ADDRESS_LEN} characters")));
    }
    match kind.as_str() {
        "email" => {
            let a = address.to_lowercase();
            let valid = match a.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !a.contains(char::is_whitespace)
                        && !domain.contains('@')
                }
                None => false,
            };
            if !valid {
                return Err(Error::invalid("email", format!("{address:?} is not an e-mail address")));
            }
            Ok((kind, a))
        }
        "phone" => {
            let digits: String = address.chars().filter(|c| c.is_ascii_digit()).collect();
            let only_phone_chars = address.chars().all(|c| c.is_ascii_digit() || " +-()./".contains(c));
            if !only_phone_chars || !(5..=16).contains(&digits.len()) {
                return Err(Error::invalid(
                    "phone",
                    format!("{address:?} is not a phone number; use international form like +49 30 1234567"),
                ));
            }
            Ok((kind, format!("+{digits}")))
        }
        _ => Ok((kind, address.to_owned())),
    }
}

/// A customer as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    /// Id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Organisation.
    pub organization_id: Option<i64>,
    /// Tier id.
    pub tier_id: i64,
    /// Tier key.
    pub tier: String,
    /// Preferred language (`en`, `de`, …): the templates answer in it.
    pub language: String,
    /// Where `language` came from: `given` (a person or the API), `detected` (the customer's
    /// first message) or `default` (nobody said; the workspace's default).
    pub language_origin: String,
    /// Where `name` came from: `given`, `mail` (the display name of the latest mail) or
    /// `address` (derived from the address).
    pub name_origin: String,
    /// Free attributes.
    pub attributes: Json,
    /// Identities.
    pub identities: Vec<IdentityInput>,
    /// Set when this customer was merged into another; follow it.
    pub merged_into_id: Option<i64>,
    /// Creation time.
    pub created_at: String,
}

/// Input for creating a customer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// An existing customer's id (only when creating a ticket for a known customer).
    #[serde(default)]
    pub id: Option<i64>,
    /// Display name; derived from the first identity when missing.
    #[serde(default)]
    pub name: Option<String>,
    /// Shorthand for an `email` identity.
    #[serde(default)]
    pub email: Option<String>,
    /// Shorthand for a `phone` identity.
    #[serde(default)]
    pub phone: Option<String>,
    /// Further identities.
    #[serde(default)]
    pub identities: Vec<IdentityInput>,
    /// Organisation.
    #[serde(default)]
    pub organization_id: Option<i64>,
    /// Tier key; the workspace default when missing.
    #[serde(default)]
    pub tier: Option<String>,
    /// Language.
    #[serde(default)]
    pub language: Option<String>,
    /// Free attributes (a JSON object).
    #[serde(default)]
    pub attributes: Option<Json>,
    /// Set by a channel: `name` is the display name of the customer's mail and `language`
    /// was detected, not given by a person (see [`NameOrigin`]). Never read from JSON.
    #[serde(skip)]
    pub learned: bool,
}

/// Where a customer's name came from, stored as `customers.name_origin`: only a name nobody
/// gave follows the display name of the customer's latest mail.
pub struct NameOrigin;

impl NameOrigin {
    /// Given by a person or the API (an import, `POST /customers`, `PATCH`): never changed by mail.
    pub const GIVEN: &'static str = "given";
    /// The display name of the customer's first mail that had one (a chat's profile name…);
    /// kept from then on, as a name a person chose.
    pub const MAIL: &'static str = "mail";
    /// Derived from the address (its local part): the first message with a display name
    /// replaces it.
    pub const ADDRESS: &'static str = "address";
}

impl NewCustomer {
    /// Where [`display_name`](Self::display_name) takes the name from.
    pub fn name_origin(&self) -> &'static str {
        match self.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                if self.learned {
                    NameOrigin::MAIL
                } else {
                    NameOrigin::GIVEN
                }
            }
            _ => NameOrigin::ADDRESS,
        }
    }

    /// Every identity given, normalised, without duplicates.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed identity.
    pub fn identities(&self) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        let shorthand = [("email", &self.email), ("phone", &self.phone)];
        for (kind, v) in shorthand {
            if let Some(a) = v {
                out.push(normalize_identity(kind, a)?);
            }
        }
        for i in &self.identities {
            out.push(normalize_identity(&i.kind, &i.address)?);
        }
        out.dedup();
        let mut seen = std::collections::HashSet::new();
        out.retain(|i| seen.insert(i.clone()));
        Ok(out)
    }

    /// The name to store: the given one, or the local part of the first identity.
    pub fn display_name(&self, identities: &[(String, String)]) -> String {
        match self.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.chars().take(200).collect(),
            _ => identities
                .first()
                .map(|(_, a)| a.split('@').next().unwrap_or(a).to_owned())
                .unwrap_or_else(|| "Unknown customer".into()),
        }
    }
}

/// Changes to a customer; missing fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// New name.
    pub name: Option<String>,
    /// New organisation (`null` leaves it; use 0 to clear).
    pub organization_id: Option<i64>,
    /// New tier key.
    pub tier: Option<String>,
    /// New language.
    pub language: Option<String>,
    /// Replaces the attributes.
    pub attributes: Option<Json>,
}

/// Checks a language tag such as `de` or `en-GB`.
///
/// # Errors
/// [`Error::Invalid`].
pub fn validate_language(lang: &str) -> Result<String> {
    let ok = (2..=12).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_alphabetic() || c == '-');
    if ok {
        Ok(lang.to_owned())
    } else {
        Err(Error::invalid("language", format!("language {lang:?} must be a tag like en, de or en-GB")))
    }
}

fn attributes_object(v: Option<&Json>) -> Result<String> {
    match v {
        None => Ok("{}".into()),
        Some(a @ Json::Object(_)) => Ok(a.to_string()),
        Some(_) => Err(Error::invalid("attributes", "attributes must be a JSON object")),
    }
}

/// Loads the API view of several customers.
pub async fn views<C: ConnectionTrait>(db: &C, rows: Vec<customer::Model>) -> Result<Vec<Customer>> {
    let mut out = Vec::with_capacity(rows.len());
    // A page of customers shares a handful of tiers: read them once, not once per customer.
    let mut tier_keys: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    for m in rows {
        let ids = identity::Entity::find()
            .filter(identity::Column::CustomerId.eq(m.id))
            .order_by_asc(identity::Column::Id)
            .all(db)
            .await?;
        if !tier_keys.contains_key(&m.tier_id) {
            tier_keys.extend(crate::tier::list(db, m.workspace_id).await?.into_iter().map(|t| (t.id, t.key)));
        }
        let tier = tier_keys.get(&m.tier_id).cloned().ok_or(Error::NotFound("tier"))?;
        out.push(Customer {
            id: m.id,
            name: m.name,
            organization_id: m.organization_id,
            tier_id: m.tier_id,
            tier,
            language: m.language,
            language_origin: m.language_origin,
            name_origin: m.name_origin,
            attributes: serde_json::from_str(&m.attributes)?,
            identities: ids.into_iter().map(|i| IdentityInput { kind: i.kind, address: i.address }).collect(),
            merged_into_id: m.merged_into_id,
            created_at: crate::rfc3339(m.created_at),
        });
    }
    Ok(out)
}

/// One stored customer of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<customer::Model> {
    customer::Entity::find_by_id(id)
        .filter(customer::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("customer"))
}

/// The API view of one customer.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<Customer> {
    let m = find(db, workspace_id, id).await?;
    Ok(views(db, vec![m]).await?.remove(0))
}

/// Finds the customer owning an identity.
pub async fn find_by_identity<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    kind: &str,
    address: &str,
) -> Result<Option<i64>> {
    let row = identity::Entity::find()
        .filter(identity::Column::WorkspaceId.eq(workspace_id))
        .filter(identity::Column::Kind.eq(kind))
        .filter(identity::Column::Address.eq(address))
        .one(db)
        .await?;
    Ok(row.map(|r| r.customer_id))
}

/// Creates a customer with its identities. Every identity must be new.
///
/// # Errors
/// [`Error::Conflict`] naming an identity that belongs to someone already; [`Error::Invalid`].
pub async fn create(core: &crate::Domain, workspace_id: i64, actor: &str, input: &NewCustomer) -> Result<Customer> {
    if input.id.is_some() {
        return Err(Error::invalid("id", "id is assigned by the server; leave it out"));
    }
    let identities = input.identities()?;
    if identities.is_empty() {
        return Err(Error::invalid(
            "identities",
            "a customer needs at least one identity (email, phone or identities[])",
        ));
    }
    let language = validate_language(input.language.as_deref().unwrap_or("en"))?;
    let language_origin = if input.language.is_some() { "given" } else { "default" };
    let attributes = attributes_object(input.attributes.as_ref())?;
    let txn = db::begin_write(core.db()).await?;
    for (kind, address) in &identities {
        if let Some(owner) = find_by_identity(&txn, workspace_id, kind, address).await? {
            return Err(Error::Conflict(format!("identity {kind}:{address} belongs to customer {owner} already")));
        }
    }
    let tier = match &input.tier {
        Some(key) => crate::tier::find_by_key(&txn, workspace_id, key).await?,
        None => crate::tier::default_for_new_customers(&txn, workspace_id).await?,
    };
    if let Some(org) = input.organization_id {
        crate::organization::find(&txn, workspace_id, org)
            .await
            .map_err(|_| Error::invalid("organization_id", format!("organisation {org} does not exist")))?;
    }
    let now = crate::now_ms();
    let id = db::reserve_ids(&txn, "customers", 1).await?[0];
    let name = input.display_name(&identities);
    db::exec(
        &txn,
        "INSERT INTO customers (id, workspace_id, name, name_origin, organization_id, tier_id, language, language_origin, attributes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![id.into(), workspace_id.into(), name.clone().into(), input.name_origin().into(), input.organization_id.into(), tier.id.into(), language.into(), language_origin.into(), attributes.into(), now.into(), now.into()],
    )
    .await?;
    for (kind, address) in &identities {
        db::exec(
            &txn,
            "INSERT INTO customer_identities (workspace_id, customer_id, kind, address, created_at) VALUES (?, ?, ?, ?, ?)",
            vec![workspace_id.into(), id.into(), kind.clone().into(), address.clone().into(), now.into()],
        )
        .await?;
    }
    crate::search::index(&txn, workspace_id, "customer", id, None, &customer_search_text(&name, &identities)).await?;
    let events = event::append(
        &txn,
        workspace_id,
        vec![NewEvent {
            kind: "customer.created",
            actor: actor.to_owned(),
            ticket_id: None,
            customer_id: Some(id),
            changes: json!({ "name": name }),
        }],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    get(core.db(), workspace_id, id).await
}

/// The text a customer is found by in search.
pub fn customer_search_text(name: &str, identities: &[(String, String)]) -> String {
    let mut s = name.to_owned();
    for (_, a) in identities {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Changes a customer's name, organisation, tier, language or attributes.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`].
pub async fn update(
    core: &crate::Domain,
    workspace_id: i64,
    id: i64,
    actor: &str,
    patch: &CustomerPatch,
) -> Result<Customer> {
    let txn = db::begin_write(core.db()).await?;
    let events = update_in(&txn, workspace_id, id, actor, patch).await?;
    txn.commit().await?;
    core.bus().publish(events);
    get(core.db(), workspace_id, id).await
}

/// [`update`] inside the caller's transaction; returns the events to publish after commit.
///
/// # Errors
/// As [`update`].
pub async fn update_in<C: ConnectionTrait>(
    txn: &C,
    workspace_id: i64,
    id: i64,
    actor: &str,
    patch: &CustomerPatch,
) -> Result<Vec<event::Event>> {
    let before = find(txn, workspace_id, id).await?;
    let mut row: customer::ActiveModel = before.clone().into();
    let mut changes = serde_json::Map::new();
    if let Some(name) = &patch.name {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "name must not be empty"));
        }
        event::diff(&mut changes, "name", json!(before.name), json!(name.trim()));
        row.name = Set(name.trim().to_owned());
        row.name_origin = Set(NameOrigin::GIVEN.to_owned());
    }
    if let Some(org) = patch.organization_id {
        let org = if org == 0 { None } else { Some(org) };
        if let Some(o) = org {
            crate::organization::find(txn, workspace_id, o)
                .await
                .map_err(|_| Error::invalid("organization_id", format!("organisation {o} does not exist")))?;
        }
        event::diff(&mut changes, "organization_id", json!(before.organization_id), json!(org));
        row.organization_id = Set(org);
    }
    if let Some(key) = &patch.tier {
        let tier = crate::tier::find_by_key(txn, workspace_id, key).await?;
        event::diff(&mut changes, "tier_id", json!(before.tier_id), json!(tier.id));
        row.tier_id = Set(tier.id);
    }
    if let Some(lang) = &patch.language {
        let lang = validate_language(lang)?;
        event::diff(&mut changes, "language", json!(before.language), json!(lang));
        row.language = Set(lang);
        row.language_origin = Set("given".to_owned());
    }
    if let Some(attrs) = &patch.attributes {
        let a = attributes_object(Some(attrs))?;
        event::diff(&mut changes, "attributes", serde_json::from_str(&before.attributes)?, attrs.clone());
        row.attributes = Set(a);
    }
    row.updated_at = Set(crate::now_ms());
    row.update(txn).await?;
    let events = if changes.is_empty() {
        vec![]
    } else {
        event::append(
            txn,
            workspace_id,
            vec![NewEvent {
                kind: "customer.updated",
                actor: actor.to_owned(),
                ticket_id: None,
                customer_id: Some(id),
                changes: Json::Object(changes),
            }],
        )
        .await?
    };
    Ok(events)
}

/// Adds an identity to a customer.
///
/// # Errors
/// [`Error::Conflict`] when another customer (or this one) has it already.
pub async fn add_identity(
    core: &crate::Domain,
    workspace_id: i64,
    id: i64,
    actor: &str,
    input: &IdentityInput,
) -> Result<Customer> {
    let (kind, address) = normalize_identity(&input.kind, &input.address)?;
    let txn = db::begin_write(core.db()).await?;
    let c = find(&txn, workspace_id, id).await?;
    if c.merged_into_id.is_some() {
        return Err(Error::Conflict(format!(
            "customer {id} was merged into {}; add the identity there",
            c.merged_into_id.unwrap_or_default()
        )));
    }
    if let Some(owner) = find_by_identity(&txn, workspace_id, &kind, &address).await? {
        return Err(Error::Conflict(format!("identity {kind}:{address} belongs to customer {owner} already")));
    }
    db::exec(
        &txn,
        "INSERT INTO customer_identities (workspace_id, customer_id, kind, address, created_at) VALUES (?, ?, ?, ?, ?)",
        vec![workspace_id.into(), id.into(), kind.clone().into(), address.clone().into(), crate::now_ms().into()],
    )
    .await?;
    let events = event::append(
        &txn,
        workspace_id,
        vec![NewEvent {
            kind: "customer.identity_added",
            actor: actor.to_owned(),
            ticket_id: None,
            customer_id: Some(id),
            changes: json!({ "kind": kind, "address": address }),
        }],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    get(core.db(), workspace_id, id).await
}

/// Merges `source` into `target`: identities and tickets move to the target, the source stays
/// as a tombstone pointing at the target, and `customer_merges` keeps a snapshot of what
/// moved (so the merge can be understood and, by hand, undone).
///
/// # Errors
/// [`Error::Invalid`] for a merge into itself, [`Error::Conflict`] when either side was merged
/// already, [`Error::NotFound`].
pub async fn merge(core: &crate::Domain, workspace_id: i64, source: i64, target: i64, actor: &str) -> Result<Customer> {
    if source == target {
        return Err(Error::invalid("into_id", "cannot merge a customer into itself"));
    }
    let txn = db::begin_write(core.db()).await?;
    let src = find(&txn, workspace_id, source).await?;
    let dst = find(&txn, workspace_id, target)
        .await
        .map_err(|_| Error::invalid("into_id", format!("customer {target} does not exist")))?;
    for c in [&src, &dst] {
        if let Some(into) = c.merged_into_id {
            return Err(Error::Conflict(format!("customer {} was merged into {into} already", c.id)));
        }
    }
    let identities: Vec<i64> = identity::Entity::find()
        .filter(identity::Column::CustomerId.eq(source))
        .all(&txn)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    let tickets = db::query_all(
        &txn,
        "SELECT id FROM tickets WHERE customer_id = ? AND workspace_id = ?",
        vec![source.into(), workspace_id.into()],
    )
    .await?;
    let tickets: Vec<i64> = tickets.iter().map(|r| db::col::<i64>(r, "id")).collect::<Result<_>>()?;
    let snapshot = json!({
        "source": { "id": src.id, "name": src.name, "organization_id": src.organization_id, "tier_id": src.tier_id, "language": src.language, "attributes": serde_json::from_str::<Json>(&src.attributes)? },
        "identity_ids": identities,
        "ticket_ids": tickets,
    });
    let now = crate::now_ms();
    db::exec(
        &txn,
        "UPDATE customer_identities SET customer_id = ? WHERE customer_id = ?",
        vec![target.into(), source.into()],
    )
    .await?;
    db::exec(
        &txn,
        "UPDATE tickets SET customer_id = ?, updated_at = ? WHERE customer_id = ?",
        vec![target.into(), now.into(), source.into()],
    )
    .await?;
    db::exec(
        &txn,
        "UPDATE customers SET merged_into_id = ?, updated_at = ? WHERE id = ?",
        vec![target.into(), now.into(), source.into()],
    )
    .await?;
    db::exec(
        &txn,
        "INSERT INTO customer_merges (workspace_id, source_customer_id, target_customer_id, snapshot, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![workspace_id.into(), source.into(), target.into(), snapshot.to_string().into(), actor.into(), now.into()],
    )
    .await?;
    let events = event::append(
        &txn,
        workspace_id,
        vec![NewEvent {
            kind: "customer.merged",
            actor: actor.to_owned(),
            ticket_id: None,
            customer_id: Some(target),
            changes: snapshot,
        }],
    )
    .await?;
    txn.commit().await?;
    core.bus().publish(events);
    get(core.db(), workspace_id, target).await
}

/// One entry of a customer's timeline: a message on any of their tickets.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// Message id (the pagination cursor).
    pub message_id: i64,
    /// Ticket id.
    pub ticket_id: i64,
    /// Ticket number.
    pub ticket_number: i64,
    /// Ticket subject.
    pub subject: String,
    /// Channel the message came or went through.
    pub channel: String,
    /// `inbound`, `outbound` or `internal`.
    pub direction: String,
    /// Plain-text body.
    pub body: String,
    /// When.
    pub created_at: String,
}

/// A customer's contact history across channels, newest first, `limit` entries before the
/// message id `before`.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn timeline<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    id: i64,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<TimelineEntry>> {
    find(db, workspace_id, id).await?;
    let rows = db::query_all(
        db,
        "SELECT m.id, m.ticket_id, t.number, t.subject, m.channel, m.direction, m.body_text, m.created_at \
         FROM messages m JOIN tickets t ON t.id = m.ticket_id \
         WHERE t.customer_id = ? AND t.workspace_id = ? AND m.id < ? ORDER BY m.id DESC LIMIT ?",
        vec![id.into(), workspace_id.into(), before.unwrap_or(i64::MAX).into(), (limit as i64).into()],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TimelineEntry {
                message_id: db::col(r, "id")?,
                ticket_id: db::col(r, "ticket_id")?,
                ticket_number: db::col(r, "number")?,
                subject: db::col(r, "subject")?,
                channel: db::col(r, "channel")?,
                direction: db::col(r, "direction")?,
                body: db::col(r, "body_text")?,
                created_at: crate::rfc3339(db::col(r, "created_at")?),
            })
        })
        .collect()
}

/// A page of customers, by id ascending after `after`.
pub async fn list<C: ConnectionTrait>(db: &C, workspace_id: i64, after: i64, limit: u64) -> Result<Vec<Customer>> {
    use sea_orm::QuerySelect;
    let rows = customer::Entity::find()
        .filter(customer::Column::WorkspaceId.eq(workspace_id))
        .filter(customer::Column::Id.gt(after))
        .order_by_asc(customer::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    views(db, rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_normalised() {
        let n = |k: &str, a: &str| normalize_identity(k, a).map_err(|e| e.to_string());
        assert_eq!(n("email", " Anna@Example.COM "), Ok(("email".into(), "anna@example.com".into())));
        assert_eq!(n("phone", "+49 (30) 123-4567"), Ok(("phone".into(), "+49301234567".into())));
        assert_eq!(n("Telegram", "@anna"), Ok(("telegram".into(), "@anna".into())));
        assert!(n("email", "not-an-address").is_err());
        assert!(n("email", "a@b").is_err());
        assert!(n("phone", "call me").is_err());
        assert!(n("", "x").is_err());
    }
}
