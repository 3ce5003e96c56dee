//! Configuration endpoints — tiers, agents, teams, organisations, API tokens. Reading is open
//! to every token of the workspace; changing needs an admin token (organisations excepted:
//! agents maintain the customer record).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{Auth, Json, Path, Query};
use crate::Core;
use crate::agent::{self, AgentSpec, TeamSpec};
use crate::auth::{self, Role};
use crate::organization::{self, OrganizationSpec};
use crate::tier::{self, Tier, TierSpec};

pub(super) async fn list_tiers(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    let tiers = tier::list(core.db(), p.workspace_id)
        .await?
        .into_iter()
        .map(Tier::try_from)
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(axum::Json(json!({ "items": tiers })))
}

pub(super) async fn workspace(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(crate::workspace::settings(core.db(), p.workspace_id).await?))
}

pub(super) async fn update_workspace(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(patch): Json<crate::workspace::SettingsPatch>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing workspace settings")?;
    Ok(axum::Json(crate::workspace::update_settings(core.db(), p.workspace_id, &patch).await?))
}

pub(super) async fn get_tier(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(Tier::try_from(tier::find(core.db(), p.workspace_id, id).await?)?))
}

pub(super) async fn create_tier(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(spec): Json<TierSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing tiers")?;
    let created = tier::create(core.db(), p.workspace_id, &spec).await?;
    core.writer().tiers_changed();
    Ok((StatusCode::CREATED, axum::Json(created)))
}

pub(super) async fn update_tier(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(spec): Json<TierSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("changing tiers")?;
    let updated = tier::update(core.db(), p.workspace_id, id, &spec).await?;
    core.writer().tiers_changed();
    Ok(axum::Json(updated))
}

pub(super) async fn list_agents(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": agent::list(core.db(), p.workspace_id).await? })))
}

pub(super) async fn get_agent(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(agent::get(core.db(), p.workspace_id, id).await?))
}

pub(super) async fn create_agent(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(spec): Json<AgentSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("managing agents")?;
    let txn = crate::db::begin_write(core.db()).await?;
    let a = agent::create(&txn, p.workspace_id, &spec).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

pub(super) async fn update_agent(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(spec): Json<AgentSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("managing agents")?;
    let txn = crate::db::begin_write(core.db()).await?;
    let a = agent::update(&txn, p.workspace_id, id, &spec).await?;
    if !spec.active {
        auth::revoke_agent_tokens(&txn, p.workspace_id, id).await?;
    }
    txn.commit().await?;
    // The role or active state may have changed: every node looks the agent's tokens up again.
    auth::announce(&core, auth::Change::Agent(id)).await;
    Ok(axum::Json(a))
}

pub(super) async fn list_teams(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": agent::list_teams(core.db(), p.workspace_id).await? })))
}

pub(super) async fn get_team(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(agent::get_team(core.db(), p.workspace_id, id).await?))
}

pub(super) async fn create_team(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(spec): Json<TeamSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("managing teams")?;
    Ok((StatusCode::CREATED, axum::Json(agent::save_team(core.db(), p.workspace_id, None, &spec).await?)))
}

pub(super) async fn update_team(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(spec): Json<TeamSpec>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("managing teams")?;
    Ok(axum::Json(agent::save_team(core.db(), p.workspace_id, Some(id), &spec).await?))
}

pub(super) async fn list_organizations(State(core): State<Core>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(json!({ "items": organization::list(core.db(), p.workspace_id).await? })))
}

pub(super) async fn get_organization(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(organization::Organization::from(organization::find(core.db(), p.workspace_id, id).await?)))
}

pub(super) async fn create_organization(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(spec): Json<OrganizationSpec>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, axum::Json(organization::save(core.db(), p.workspace_id, None, &spec).await?)))
}

pub(super) async fn update_organization(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
    Json(spec): Json<OrganizationSpec>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(organization::save(core.db(), p.workspace_id, Some(id), &spec).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// The agent the token acts as.
    agent_id: i64,
    /// A label, e.g. "zapier integration".
    name: String,
    /// `admin` or `agent`; at most the agent's own role. The token acts with the lower of this
    /// and its agent's role at each request.
    role: Option<Role>,
}

pub(super) async fn create_token(
    State(core): State<Core>,
    Auth(p): Auth,
    Json(input): Json<NewToken>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("creating API tokens")?;
    let a = agent::find(core.db(), p.workspace_id, input.agent_id)
        .await
        .map_err(|_| crate::Error::invalid("agent_id", format!("agent {} does not exist", input.agent_id)))?;
    if !agent::is_active(core.db(), p.workspace_id, a.id).await? {
        return Err(crate::Error::invalid(
            "agent_id",
            format!("agent {} is deactivated; reactivate it (PUT /api/v1/agents/{}) first", a.id, a.id),
        )
        .into());
    }
    let agent_role = Role::parse(&a.role)?;
    let role = input.role.unwrap_or(agent_role);
    if role == Role::Admin && agent_role != Role::Admin {
        return Err(crate::Error::invalid("role", "an admin token needs an agent with the admin role").into());
    }
    let (id, token) = auth::create_token(core.db(), p.workspace_id, a.id, &input.name, role).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "id": id, "agent_id": a.id, "role": role, "name": input.name, "token": token })),
    ))
}

pub(super) async fn revoke_token(
    State(core): State<Core>,
    Auth(p): Auth,
    Path(id): Path<i64>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("revoking API tokens")?;
    auth::revoke_token(&core, p.workspace_id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenFilter {
    agent_id: Option<i64>,
}

pub(super) async fn list_tokens(
    State(core): State<Core>,
    Auth(p): Auth,
    Query(f): Query<TokenFilter>,
) -> ApiResult<impl IntoResponse> {
    p.require_admin("listing API tokens")?;
    Ok(axum::Json(json!({ "items": auth::list_tokens(core.db(), p.workspace_id, f.agent_id).await? })))
}
