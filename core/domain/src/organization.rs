//! Organisations: the companies customers belong to.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::entity::organization;
use crate::error::{Error, Result};

/// Input for an organisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSpec {
    /// Unique name in the workspace.
    pub name: String,
    /// Mail domain, e.g. `example.com`.
    #[serde(default)]
    pub domain: Option<String>,
    /// Free attributes.
    #[serde(default)]
    pub attributes: Option<Json>,
}

/// An organisation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Mail domain.
    pub domain: Option<String>,
    /// Free attributes.
    pub attributes: Json,
}

impl From<organization::Model> for Organization {
    fn from(m: organization::Model) -> Self {
        Organization {
            id: m.id,
            name: m.name,
            domain: m.domain,
            attributes: serde_json::from_str(&m.attributes).unwrap_or(Json::Null),
        }
    }
}

/// Creates (`id` = `None`) or replaces an organisation.
///
/// # Errors
/// [`Error::Invalid`], [`Error::Conflict`] for a taken name, [`Error::NotFound`].
pub async fn save<C: ConnectionTrait>(
    db: &C,
    workspace_id: i64,
    id: Option<i64>,
    spec: &OrganizationSpec,
) -> Result<Organization> {
    if spec.name.trim().is_empty() {
        return Err(Error::invalid("name", "organisation name must not be empty"));
    }
    let attributes = match &spec.attributes {
        None => Json::Object(Default::default()),
        Some(a @ Json::Object(_)) => a.clone(),
        Some(_) => return Err(Error::invalid("attributes", "attributes must be a JSON object")),
    };
    let result = match id {
        None => {
            organization::ActiveModel {
                id: NotSet,
                workspace_id: Set(workspace_id),
                name: Set(spec.name.trim().to_owned()),
                domain: Set(spec.domain.clone()),
                attributes: Set(attributes.to_string()),
                created_at: Set(crate::now_ms()),
            }
            .insert(db)
            .await
        }
        Some(id) => {
            let mut row: organization::ActiveModel = find(db, workspace_id, id).await?.into();
            row.name = Set(spec.name.trim().to_owned());
            row.domain = Set(spec.domain.clone());
            row.attributes = Set(attributes.to_string());
            row.update(db).await
        }
    };
    result.map(Organization::from).map_err(Error::from).map_err(|e| {
        if e.is_unique_violation() {
            Error::Conflict(format!("an organisation named {:?} exists already", spec.name))
        } else {
            e
        }
    })
}

/// One organisation of the workspace.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find<C: ConnectionTrait>(db: &C, workspace_id: i64, id: i64) -> Result<organization::Model> {
    organization::Entity::find_by_id(id)
        .filter(organization::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("organisation"))
}

/// Every organisation of the workspace.
pub async fn list<C: ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Vec<Organization>> {
    Ok(organization::Entity::find()
        .filter(organization::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(organization::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(Organization::from)
        .collect())
}
