//! sea-orm entities, one per table. They stay behind the domain's functions: the HTTP API (in
//! plugdesk-core) has its own response types (`api::dto`) and converts explicitly.

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
