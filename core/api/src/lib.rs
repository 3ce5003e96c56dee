//! Plugdesk's HTTP API: the router (`api::app`), its extractors and error answers, and the
//! server loop (`server::serve`). The only crate that speaks HTTP to clients and chooses status
//! codes; below it, `plugdesk-core` and `plugdesk-domain` speak in domain types and errors.

pub mod api;
pub mod server;

// The layers below, named as `crate::ticket`, `crate::channel`, ... in this crate.
#[allow(unused_imports)]
use plugdesk_core::*;
