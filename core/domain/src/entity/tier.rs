//! Row of `tiers`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tiers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub workspace_id: i64,
    pub key: String,
    pub name: String,
    pub first_response_secs: i64,
    pub next_response_secs: i64,
    pub resolution_secs: i64,
    pub warning_secs: i64,
    pub calendar: String,
    pub default_priority: String,
    pub team_id: Option<i64>,
    pub channels: String,
    pub automation_level: String,
    pub agent_minutes_budget: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
