//! Support tiers: the service level a customer gets. A tier carries its SLA targets, the
//! business-hours calendar they are counted in, the default priority, the team that serves it,
//! the channels it may use, how much automation applies and the agent time budget per ticket.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::entity::tier;
use crate::error::{Error, Result};
use crate::ticket::Priority;

/// How much automation applies to a tier's tickets; workflows read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomationLevel {
    /// An automated answer comes first; an agent only if it did not help.
    AutomatedFirst,
    /// Automated acknowledgement, then an agent.
    Assisted,
    /// Agents handle everything; automation only routes.
    Personal,
}

impl AutomationLevel {
    fn as_str(self) -> &'static str {
        match self {
            AutomationLevel::AutomatedFirst => "automated_first",
            AutomationLevel::Assisted => "assisted",
            AutomationLevel::Personal => "personal",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "automated_first" => AutomationLevel::AutomatedFirst,
            "personal" => AutomationLevel::Personal,
            _ => AutomationLevel::Assisted,
        }
    }
}

/// A tier as the API shows and accepts it. Targets are minutes of business time (fractions
/// allowed, for short test SLAs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// Short stable key, e.g. `basic`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// First agent response due after this many business minutes.
    pub first_response_minutes: f64,
    /// Next response (after a customer follow-up) due after this many business minutes.
    pub next_response_minutes: f64,
    /// Resolution due after this many business minutes.
    pub resolution_minutes: f64,
    /// `sla.warning` fires this many business minutes before a due time.
    pub warning_minutes: f64,
    /// Business hours the targets count in.
    pub calendar: Calendar,
    /// Priority of a new ticket of this tier.
    pub default_priority: Priority,
    /// The team serving this tier.
    pub team_id: Option<i64>,
    /// Channels this tier may use; empty means all.
    pub channels: Vec<String>,
    /// How much automation applies.
    pub automation_level: AutomationLevel,
    /// Agent time budget per ticket, minutes.
    pub agent_minutes_budget: i64,
}

/// A stored tier with its id.
#[derive(Debug, Clone, Serialize)]
pub struct Tier {
    /// Id.
    pub id: i64,
    /// The tier's settings.
    #[serde(flatten)]
    pub spec: TierSpec,
}

fn secs(minutes: f64) -> i64 {
    (minutes * 60.0).round() as i64
}

impl TierSpec {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.key.is_empty()
            || self.key.len() > 64
            || !self.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid("key", "tier key must be 1-64 characters of a-z, 0-9, _ or -"));
        }
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "tier name must not be empty"));
        }
        for (field, v) in [
            ("first_response_minutes", self.first_response_minutes),
            ("next_response_minutes", self.next_response_minutes),
            ("resolution_minutes", self.resolution_minutes),
            ("warning_minutes", self.warning_minutes),
        ] {
            if !v.is_finite() || !(0.0..=525_600.0).contains(&v) {
                return Err(Error::invalid(field, format!("{field} must be between 0 and 525600 (one year)")));
            }
        }
        if self.first_response_minutes <= 0.0 || self.resolution_minutes <= 0.0 || self.next_response_minutes <= 0.0 {
            return Err(Error::invalid("first_response_minutes", "SLA targets must be greater than zero"));
        }
        if self.agent_minutes_budget < 0 {
            return Err(Error::invalid("agent_minutes_budget", "agent_minutes_budget must not be negative"));
        }
        self.calendar.compile()?;
        Ok(())
    }
}

impl TryFrom<tier::Model> for Tier {
    type Error = Error;
    fn try_from(m: tier::Model) -> Result<Self> {
        Ok(Tier {
            id: m.id,
            spec: TierSpec {
                key: m.key,
                name: m.name,
                first_response_minutes: m.first_response_secs as f64 / 60.0,
                next_response_minutes: m.next_response_secs as f64 / 60.0,
                resolution_minutes: m.resolution_secs as f64 / 60.0,
                warning_minutes: m.warning_secs as f64 / 60.0,
                calendar: serde_json::from_str(&m.calendar)?,
                default_priority: Priority::parse(&m.default_priority)?,
                team_id: m.team_id,
                channels: serde_json::from_str(&m.channels)?,
                automation_level: AutomationLevel::parse(&m.automation_level),
                agent_minutes_budget: m.agent_minutes_budget,
            },
        })
    }
}

/// The three tiers a new workspace starts with.
pub fn defaults() -> Vec<TierSpec> {
    let office = Calendar::weekdays("Europe/Berlin", "08:00", "18:00");
    vec![
        TierSpec {
            key: "basic".into(),
            name: "Basic".into(),
            first_response_minutes: 24.0 * 60.0,
            next_response_minutes: 24.0 * 60.0,
            resolution_minutes: 5.0 * 8.0 * 60.0,
            warning_minutes: 60.0,
            calendar: office.clone(),
            default_priority: Priority::Low,
            team_id: None,
            channels: vec![],
            automation_level: AutomationLevel::AutomatedFirst,
            agent_minutes_budget: 10,
        },
        TierSpec {
            key: "normal".into(),
            name: "Normal".into(),
            first_response_minutes: 8.0 * 60.0,
            next_response_minutes: 8.0 * 60.0,
            resolution_minutes: 3.0 * 8.0 * 60.0,
            warning_minutes: 60.0,
            calendar: office,
            default_priority: Priority::Normal,
            team_id: None,
            channels: vec![],
            automation_level: AutomationLevel::Assisted,
            agent_minutes_budget: 30,
        },
        TierSpec {
            key: "extended".into(),
            name: "Extended".into(),
            first_response_minutes: 60.0,
            next_response_minutes: 2.0 * 60.0,
            resolution_minutes: 8.0 * 60.0,
            warning_minutes: 15.0,
            calendar: Calendar::always_open(),
            default_priority: Priority::High,
            team_id: None,
            channels: vec![],
            automation_level: AutomationLevel::Personal,
            agent_minutes_budget: 120,
        },
    ]
}

fn active(workspace_id: i64, spec: &TierSpec, now: i64) -> Result<tier::ActiveModel> {
    Ok(tier::ActiveModel {
        id: NotSet,
        workspace_id: Set(workspace_id),
        key: Set(spec.key.clone()),
        name: Set(spec.name.clone()),
        first_response_secs: Set(secs(spec.first_response_minutes)),
        next_response_secs: Set(secs(spec.next_response_minutes)),
        resolution_secs: Set(secs(spec.resolution_minutes)),
        warning_secs: Set(secs(spec.warning_minutes)),
        calendar: Set(serde_json::to_string(&spec.calendar)?),
        default_priority: Set(spec.default_priority.as_str().to_owned()),
        team_id: Set(spec.team_id),
        channels: Set(serde_json::to_string(&spec.channels)?),
        automation_level: Set(spec.automation_level.as_str().to_owned()),
        agent_minutes_budget: Set(spec.agent_minutes_budget),
        created_at: Set(now),
        updated_at: Set(now),
    })
}

async fn check_team<C: ConnectionTrait>(db: &C, workspace_id: i64, team_id: Option<i64>) -> Result<()> {
    if let Some(team) = team_id {
        crate::agent::find_team(db, workspace_id, team).await?;
    }
    Ok(())
}

/// Creates a tier.
///
/// # Errors
/// [`Error::Invalid`] for bad settings, [`Error::Conflict`] when the key is taken.
pub async fn create<C: ConnectionTrait>(db: &C, workspace_id: i64, spec: &TierSpec) -> Result<Tier> {
    spec.validate()?;
    check_team(db, workspace_id, spec.team_id).await?;
    let model = active(workspace_id, spec, crate::now_ms())?.insert(db).await.map_err(Error::from);
    match model {
        Ok(m) => Tier::try_from(m),
        Err(e) if e.is_unique_violation() => {
            Err(Error::Conflict(format!("a tier with key {:?} exists already", spec.key)))
        }
        Err(e) => Err(e),
    }
}

/// Replaces a tier's settings. Open tickets keep their clocks; new clocks use the new targets.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`], [`Error::Conflict`] as for [`create`].
pub async fn update<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64, spec: &TierSpec) -> Result<Tier> {
    spec.validate()?;
    check_team(db, workspace_id, spec.team_id).await?;
    let existing = find(db, workspace_id, id).await?;
    let mut model = active(workspace_id, spec, crate::now_ms())?;
    model.id = Set(existing.id);
    model.created_at = NotSet;
    match model.update(db).await.map_err(Error::from) {
        Ok(m) => Tier::try_from(m),
        Err(e) if e.is_unique_violation() => {
            Err(Error::Conflict(format!("a tier with key {:?} exists already", spec.key)))
        }
        Err(e) => Err(e),
    }
}

/// One tier of the workspace.
///
/// # Errors
/// [`Error::NotFound`] when the workspace has no such tier.
pub async fn find<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<tier::Model> {
    tier::Entity::find_by_id(id)
        .filter(tier::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("tier"))
}

/// A tier by its key.
///
/// # Errors
/// [`Error::Invalid`] when the key is unknown (it names what the caller typed).
pub async fn find_by_key<C: ConnectionTrait>(db: &C, workspace_id: i64, key: &str) -> Result<tier::Model> {
    tier::Entity::find()
        .filter(tier::Column::WorkspaceId.eq(workspace_id))
        .filter(tier::Column::Key.eq(key))
        .one(db)
        .await?
        .ok_or_else(|| Error::invalid("tier", format!("unknown tier {key:?}")))
}

/// All tiers of the workspace, oldest first.
pub async fn list<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<tier::Model>> {
    Ok(tier::Entity::find()
        .filter(tier::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(tier::Column::Id)
        .all(db)
        .await?)
}

/// The tier a new customer gets: `normal` if the workspace has it, else its first tier.
pub async fn default_for_new_customers<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<tier::Model> {
    let tiers = list(db, workspace_id).await?;
    tiers
        .iter()
        .find(|t| t.key == "normal")
        .or_else(|| tiers.first())
        .cloned()
        .ok_or_else(|| Error::Internal(format!("workspace {workspace_id} has no tiers")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tiers_are_valid() {
        for t in defaults() {
            assert!(t.validate().is_ok(), "{}", t.key);
        }
    }

    #[test]
    fn zero_targets_are_rejected() {
        let mut t = defaults().remove(0);
        t.first_response_minutes = 0.0;
        assert!(matches!(t.validate(), Err(Error::Invalid { .. })));
    }
}
