//! Workspaces: one business each. Every other row belongs to exactly one workspace, and every
//! query of a request is confined to the caller's.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::auth::{self, Role};
use crate::entity::{agent, workspace};
use crate::error::{Error, Result};

/// What `plugdesk init` reports.
#[derive(Debug, Clone)]
pub struct Created {
    /// The workspace.
    pub workspace_id: i64,
    /// Its name.
    pub name: String,
    /// The admin agent.
    pub admin_agent_id: i64,
    /// The admin's API token, shown once.
    pub admin_token: String,
    /// The token of the admin's one-time setup link (`/setup/{token}`), shown once.
    pub setup_token: String,
}

/// Checks a workspace name: 1-64 characters of `a-z 0-9 _ -`.
///
/// # Errors
/// [`Error::Invalid`].
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("workspace", format!("workspace name {name:?} must be 1-64 characters of a-z, 0-9, _ or -")))
    }
}

/// A workflow a new workspace starts with, enabled. The caller compiles it (the domain does not
/// know the workflow engine) and so knows its order.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'a> {
    /// The workflow's name.
    pub name: &'a str,
    /// Its script.
    pub source: &'a str,
    /// Its place among the workspace's workflows.
    pub order: i32,
}

/// Creates a workspace with the default tiers, an admin agent, the admin's token and the
/// workflows of `library`, all in one transaction.
///
/// # Errors
/// [`Error::Conflict`] when the name is taken, [`Error::Invalid`] for a bad name.
pub async fn create(db: &DatabaseConnection, name: &str, admin_email: &str, library: &[Seed<'_>]) -> Result<Created> {
    validate_name(name)?;
    let txn = crate::db::begin_write(db).await?;
    let exists = workspace::Entity::find().filter(workspace::Column::Name.eq(name)).one(&txn).await?;
    if exists.is_some() {
        return Err(Error::Conflict(format!("workspace {name:?} exists already")));
    }
    let now = crate::now_ms();
    let ws = workspace::ActiveModel {
        id: NotSet,
        name: Set(name.to_owned()),
        next_ticket_number: Set(1),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    for spec in crate::tier::defaults() {
        crate::tier::create(&txn, ws.id, &spec).await?;
    }
    let admin = agent::ActiveModel {
        id: NotSet,
        workspace_id: Set(ws.id),
        name: Set("Administrator".into()),
        email: Set(admin_email.to_owned()),
        role: Set(Role::Admin.as_str().into()),
        level: Set(2),
        skills: Set("[]".into()),
        capacity: Set(10),
        presence: Set("offline".into()),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let (_, token) = auth::create_token(&txn, ws.id, admin.id, "initial admin token", Role::Admin).await?;
    let setup_token = crate::account::create_link(&txn, ws.id, admin.id, crate::account::LinkPurpose::Setup).await?;
    for w in library {
        crate::db::exec(
            &txn,
            "INSERT INTO workflows (workspace_id, name, source, enabled, order_no, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                ws.id.into(),
                w.name.into(),
                w.source.into(),
                true.into(),
                w.order.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Created { workspace_id: ws.id, name: ws.name, admin_agent_id: admin.id, admin_token: token, setup_token })
}

/// Finds a workspace by name.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn find_by_name(db: &DatabaseConnection, name: &str) -> Result<workspace::Model> {
    workspace::Entity::find()
        .filter(workspace::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or(Error::NotFound("workspace"))
}

/// How many workspaces exist.
pub async fn count(db: &DatabaseConnection) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(workspace::Entity::find().count(db).await?)
}

/// A workspace's own settings, as `GET /api/v1/workspace` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// What a customer's reply to a closed ticket does: `reopen` it, or open a `follow_up`
    /// ticket (tagged `follow-up`, attribute `follow_up_of` = the closed ticket's number). A
    /// reply to a resolved ticket always reopens it.
    pub closed_ticket_reply: String,
}

/// A change of [`Settings`]; absent fields stay.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// `reopen` or `follow_up`.
    #[serde(default)]
    pub closed_ticket_reply: Option<String>,
}

/// The workspace's settings.
///
/// # Errors
/// [`Error::NotFound`].
pub async fn settings<C: sea_orm::ConnectionTrait>(db: &C, workspace_id: i64) -> Result<Settings> {
    let row = crate::db::query_one(
        db,
        "SELECT id, name, closed_ticket_reply FROM workspaces WHERE id = ?",
        vec![workspace_id.into()],
    )
    .await?
    .ok_or(Error::NotFound("workspace"))?;
    Ok(Settings {
        id: crate::db::col(&row, "id")?,
        name: crate::db::col(&row, "name")?,
        closed_ticket_reply: crate::db::col(&row, "closed_ticket_reply")?,
    })
}

/// Changes the workspace's settings.
///
/// # Errors
/// [`Error::Invalid`] for an unknown value.
pub async fn update_settings(db: &DatabaseConnection, workspace_id: i64, patch: &SettingsPatch) -> Result<Settings> {
    if let Some(v) = &patch.closed_ticket_reply {
        if v != "reopen" && v != "follow_up" {
            return Err(Error::invalid(
                "closed_ticket_reply",
                "closed_ticket_reply must be \"reopen\" or \"follow_up\"",
            ));
        }
        crate::db::exec(
            db,
            "UPDATE workspaces SET closed_ticket_reply = ? WHERE id = ?",
            vec![v.clone().into(), workspace_id.into()],
        )
        .await?;
    }
    settings(db, workspace_id).await
}
