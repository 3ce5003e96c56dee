//! Agents (the people who work tickets: role, level 1 = front office or 2 = back office,
//! skills, capacity, presence) and the teams they belong to.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::db;
use crate::entity::{agent, team};
use crate::error::{Error, Result};

/// Whether an agent can take work now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Working and available.
    Online,
    /// Working, not taking new tickets.
    Away,
    /// Not working.
    Offline,
}

impl Presence {
    fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "online" => Presence::Online,
            "away" => Presence::Away,
            _ => Presence::Offline,
        }
    }
}

/// Input for creating or changing an agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Display name.
    pub name: String,
    /// Login e-mail, unique per workspace.
    pub email: String,
    /// `admin` or `agent`.
    #[serde(default = "default_role")]
    pub role: Role,
    /// 1 = front office, 2 = back office.
    #[serde(default = "one")]
    pub level: i32,
    /// Skills routing matches against (e.g. `billing`, `de`).
    #[serde(default)]
    pub skills: Vec<String>,
    /// How many open tickets the agent can carry.
    #[serde(default = "ten")]
    pub capacity: i32,
    /// Current presence.
    #[serde(default = "offline")]
    pub presence: Presence,
    /// Teams the agent belongs to.
    #[serde(default)]
    pub teams: Vec<i64>,
    /// `false` deactivates the agent: every token of theirs is revoked, on every node.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn default_role() -> Role {
    Role::Agent
}
fn one() -> i32 {
    1
}
fn ten() -> i32 {
    10
}
fn offline() -> Presence {
    Presence::Offline
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Role.
    pub role: Role,
    /// 1 or 2.
    pub level: i32,
    /// Skills.
    pub skills: Vec<String>,
    /// Capacity in open tickets.
    pub capacity: i32,
    /// Presence.
    pub presence: Presence,
    /// Team ids.
    pub teams: Vec<i64>,
    /// Open tickets assigned now.
    pub open_tickets: i64,
    /// Whether the agent may act (a deactivated agent's tokens are revoked).
    pub active: bool,
}

/// A team as the API shows and accepts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// Unique name in the workspace.
    pub name: String,
    /// The agent who leads it (escalation target).
    #[serde(default)]
    pub lead_agent_id: Option<i64>,
}

/// A stored team.
#[derive(Debug, Clone, Serialize)]
pub struct Team {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Lead agent.
    pub lead_agent_id: Option<i64>,
    /// Member agent ids.
    pub members: Vec<i64>,
}

impl AgentSpec {
    fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "agent name must not be empty"));
        }
        crate::customer::normalize_identity("email", &self.email)
            .map_err(|_| Error::invalid("email", format!("{:?} is not an e-mail address", self.email)))?;
        if !(1..=2).contains(&self.level) {
            return Err(Error::invalid("level", "level must be 1 (front office) or 2 (back office)"));
        }
        if !(0..=10_000).contains(&self.capacity) {
            return Err(Error::invalid("capacity", "capacity must be between 0 and 10000"));
        }
        Ok(())
    }
}

/// Creates an agent and its team memberships.
///
/// # Errors
/// [`Error::Invalid`] for bad input or unknown teams, [`Error::Conflict`] for a taken e-mail.
pub async fn create<C: ConnectionTrait>(db: &C, workspace_id: i64, spec: &AgentSpec) -> Result<Agent> {
    spec.validate()?;
    let row = agent::ActiveModel {
        id: NotSet,
        workspace_id: Set(workspace_id),
        name: Set(spec.name.trim().to_owned()),
        email: Set(spec.email.trim().to_lowercase()),
        role: Set(spec.role.as_str().to_owned()),
        level: Set(spec.level),
        skills: Set(serde_json::to_string(&spec.skills)?),
        capacity: Set(spec.capacity),
        presence: Set(spec.presence.as_str().to_owned()),
        created_at: Set(crate::now_ms()),
    }
    .insert(db)
    .await
    .map_err(Error::from)
    .map_err(|e| {
        if e.is_unique_violation() {
            Error::Conflict(format!("an agent with e-mail {} exists already", spec.email))
        } else {
            e
        }
    })?;
    set_teams(db, workspace_id, row.id, &spec.teams).await?;
    if !spec.active {
        db::exec(db, "UPDATE agents SET active = 0 WHERE id = ?", vec![row.id.into()]).await?;
    }
    get(db, workspace_id, row.id).await
}

/// Replaces an agent's settings and teams.
///
/// # Errors
/// As [`create`], plus [`Error::NotFound`].
pub async fn update<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64, spec: &AgentSpec) -> Result<Agent> {
    spec.validate()?;
    let existing = find(db, workspace_id, id).await?;
    let mut row: agent::ActiveModel = existing.into();
    row.name = Set(spec.name.trim().to_owned());
    row.email = Set(spec.email.trim().to_lowercase());
    row.role = Set(spec.role.as_str().to_owned());
    row.level = Set(spec.level);
    row.skills = Set(serde_json::to_string(&spec.skills)?);
    row.capacity = Set(spec.capacity);
    row.presence = Set(spec.presence.as_str().to_owned());
    row.update(db).await.map_err(Error::from).map_err(|e| {
        if e.is_unique_violation() {
            Error::Conflict(format!("an agent with e-mail {} exists already", spec.email))
        } else {
            e
        }
    })?;
    set_teams(db, workspace_id, id, &spec.teams).await?;
    db::exec(
        db,
        "UPDATE agents SET active = ? WHERE id = ? AND workspace_id = ?",
        vec![i32::from(spec.active).into(), id.into(), workspace_id.into()],
    )
    .await?;
    // Demoting or deactivating the last active admin would lock the workspace out of its own
    // configuration (only the operator's CLI could get it back).
    let admins = db::query_one(
        db,
        "SELECT COUNT(*) AS n FROM agents WHERE workspace_id = ? AND role = 'admin' AND active = 1",
        vec![workspace_id.into()],
    )
    .await?
    .map(|r| db::col::<i64>(&r, "n"))
    .transpose()?
    .unwrap_or(0);
    if admins == 0 {
        return Err(Error::Conflict(
            "this is the workspace's last active admin; make another agent an admin first".into(),
        ));
    }
    get(db, workspace_id, id).await
}

/// Whether an agent of the workspace is active.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn is_active<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<bool> {
    let row = db::query_one(
        db,
        "SELECT active FROM agents WHERE id = ? AND workspace_id = ?",
        vec![id.into(), workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("agent"))?;
    Ok(db::col::<i32>(&row, "active")? != 0)
}

async fn set_teams<C: ConnectionTrait>(db: &C, workspace_id: i64, agent_id: i64, teams: &[i64]) -> Result<()> {
    for t in teams {
        find_team(db, workspace_id, *t)
            .await
            .map_err(|_| Error::invalid("teams", format!("team {t} does not exist")))?;
    }
    db::exec(
        db,
        "DELETE FROM team_members WHERE agent_id = ? AND workspace_id = ?",
        vec![agent_id.into(), workspace_id.into()],
    )
    .await?;
    for t in teams {
        db::exec(
            db,
            "INSERT INTO team_members (team_id, agent_id, workspace_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            vec![(*t).into(), agent_id.into(), workspace_id.into()],
        )
        .await?;
    }
    Ok(())
}

/// The stored row of an agent of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<agent::Model> {
    agent::Entity::find_by_id(id)
        .filter(agent::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("agent"))
}

/// An agent with teams and current load.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<Agent> {
    let m = find(db, workspace_id, id).await?;
    Ok(list_models(db, workspace_id, vec![m]).await?.remove(0))
}

/// Every agent of the workspace.
pub async fn list<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<Agent>> {
    let rows = agent::Entity::find()
        .filter(agent::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(agent::Column::Id)
        .all(db)
        .await?;
    list_models(db, workspace_id, rows).await
}

async fn list_models<C: ConnectionTrait>(db: &C, workspace_id: i64, rows: Vec<agent::Model>) -> Result<Vec<Agent>> {
    let members = db::query_all(
        db,
        "SELECT agent_id, team_id FROM team_members WHERE workspace_id = ?",
        vec![workspace_id.into()],
    )
    .await?;
    let inactive =
        db::query_all(db, "SELECT id FROM agents WHERE workspace_id = ? AND active = 0", vec![workspace_id.into()])
            .await?
            .iter()
            .map(|r| db::col::<i64>(r, "id"))
            .collect::<Result<std::collections::HashSet<i64>>>()?;
    let load = db::query_all(
        db,
        "SELECT assignee_id, COUNT(*) AS n FROM tickets WHERE workspace_id = ? AND assignee_id IS NOT NULL AND status IN ('new', 'open', 'pending') GROUP BY assignee_id",
        vec![workspace_id.into()],
    )
    .await?;
    rows.into_iter()
        .map(|m| {
            let mut teams = Vec::new();
            for r in &members {
                if db::col::<i64>(r, "agent_id")? == m.id {
                    teams.push(db::col::<i64>(r, "team_id")?);
                }
            }
            let mut open_tickets = 0;
            for r in &load {
                if db::col::<i64>(r, "assignee_id")? == m.id {
                    open_tickets = db::col::<i64>(r, "n")?;
                }
            }
            Ok(Agent {
                id: m.id,
                name: m.name,
                email: m.email,
                role: Role::parse(&m.role)?,
                level: m.level,
                skills: serde_json::from_str(&m.skills)?,
                capacity: m.capacity,
                presence: Presence::parse(&m.presence),
                active: !inactive.contains(&m.id),
                teams,
                open_tickets,
            })
        })
        .collect()
}

/// The stored row of a team of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find_team<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<team::Model> {
    team::Entity::find_by_id(id)
        .filter(team::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("team"))
}

async fn team_view<C: ConnectionTrait>(db: &C, m: team::Model) -> Result<Team> {
    let rows =
        db::query_all(db, "SELECT agent_id FROM team_members WHERE team_id = ? ORDER BY agent_id", vec![m.id.into()])
            .await?;
    let members = rows.iter().map(|r| db::col::<i64>(r, "agent_id")).collect::<Result<_>>()?;
    Ok(Team { id: m.id, name: m.name, lead_agent_id: m.lead_agent_id, members })
}

/// Creates or renames a team (`id` = `None` creates).
///
/// # Errors
/// [`Error::Invalid`] for an empty name or unknown lead, [`Error::Conflict`] for a taken name.
pub async fn save_team<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    id: Option<i64>,
    spec: &TeamSpec,
) -> Result<Team> {
    if spec.name.trim().is_empty() {
        return Err(Error::invalid("name", "team name must not be empty"));
    }
    if let Some(lead) = spec.lead_agent_id {
        find(db, workspace_id, lead)
            .await
            .map_err(|_| Error::invalid("lead_agent_id", format!("agent {lead} does not exist")))?;
    }
    let result = match id {
        None => {
            team::ActiveModel {
                id: NotSet,
                workspace_id: Set(workspace_id),
                name: Set(spec.name.trim().to_owned()),
                lead_agent_id: Set(spec.lead_agent_id),
                created_at: Set(crate::now_ms()),
            }
            .insert(db)
            .await
        }
        Some(id) => {
            let mut row: team::ActiveModel = find_team(db, workspace_id, id).await?.into();
            row.name = Set(spec.name.trim().to_owned());
            row.lead_agent_id = Set(spec.lead_agent_id);
            row.update(db).await
        }
    };
    let m = result.map_err(Error::from).map_err(|e| {
        if e.is_unique_violation() {
            Error::Conflict(format!("a team named {:?} exists already", spec.name))
        } else {
            e
        }
    })?;
    team_view(db, m).await
}

/// Every team of the workspace.
pub async fn list_teams<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<Team>> {
    let rows = team::Entity::find()
        .filter(team::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(team::Column::Id)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for m in rows {
        out.push(team_view(db, m).await?);
    }
    Ok(out)
}

/// One team with its members.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn get_team<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<Team> {
    let m = find_team(db, workspace_id, id).await?;
    team_view(db, m).await
}
