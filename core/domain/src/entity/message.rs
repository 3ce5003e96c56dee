//! Row of `messages`.

use sea_orm::entity::prelude::*;

#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub workspace_id: i64,
    pub ticket_id: i64,
    pub direction: String,
    pub channel: String,
    pub author_kind: String,
    pub author_id: Option<i64>,
    pub body_text: String,
    pub body_html: Option<String>,
    pub external_id: Option<String>,
    pub delivery_status: Option<String>,
    pub created_at: i64,
    pub delivery_error: Option<String>,
    pub body_quoted: Option<String>,
    pub subject: Option<String>,
    pub automatic: i32,
    pub language: Option<String>,
    pub language_script: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
