//! sea-orm entities, one per table. They stay inside the core: the HTTP API has its own
//! response types (`api::dto`) and converts explicitly.

pub mod agent;
pub mod api_token;
pub mod customer;
pub mod event;
pub mod identity;
pub mod message;
pub mod organization;
pub mod sla_timer;
pub mod team;
pub mod ticket;
pub mod tier;
pub mod workspace;
