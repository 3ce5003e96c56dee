//! Row of `tickets`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tickets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub workspace_id: i64,
    pub number: i64,
    pub subject: String,
    pub status: String,
    pub priority: String,
    pub level: i32,
    pub team_id: Option<i64>,
    pub assignee_id: Option<i64>,
    pub customer_id: i64,
    pub tier_id: i64,
    pub category: Option<String>,
    pub channel: String,
    pub tags: String,
    pub attributes: String,
    pub reopen_count: i32,
    pub created_at: i64,
    pub updated_at: i64,
    pub first_response_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub pending_since: Option<i64>,
    pub conversation: Option<String>,
    pub channel_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
