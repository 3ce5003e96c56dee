//! Row of `customers`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub workspace_id: i64,
    pub name: String,
    pub organization_id: Option<i64>,
    pub tier_id: i64,
    pub language: String,
    /// `given`, `mail` or `address` (see `customer::NameOrigin`).
    pub name_origin: String,
    /// `given`, `detected` or `default` (see `crate::language`).
    pub language_origin: String,
    pub attributes: String,
    pub merged_into_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
