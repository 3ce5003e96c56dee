//! Handlebars response templates for Plugdesk: variants per purpose, channel and language,
//! partials per language, helpers for dates, money, links and names, workspace helpers written
//! in Rhai, and errors that say where (template, line, column) and what to do.
//!
//! The crate knows nothing of tickets, databases or HTTP: it takes template sources and JSON
//! data and returns text.
//!
//! ```
//! use plugdesk_template::{PartialSource, TemplateSet, TemplateSource};
//! use serde_json::json;
//!
//! let mut set = TemplateSet::new("en")?;
//! set.add_partial("greeting", "de", PartialSource::text("Guten Tag {{customer.name}},\n"))?;
//! set.add_template(
//!     "acknowledgement",
//!     "email",
//!     "de",
//!     TemplateSource {
//!         subject: Some("Ihre Anfrage {{ticket.number}}"),
//!         text: "{{> greeting}}\nwir haben Ihre Anfrage vom {{date ticket.created_at \"long\"}} erhalten.",
//!         html: Some("<p>{{> greeting}}</p>\n<p>Betreff: {{ticket.subject}}</p>"),
//!     },
//! )?;
//! let data = json!({
//!     "ticket": {"number": "10042", "subject": "<Paket> fehlt", "created_at": "2026-11-24T09:30:00Z"},
//!     "customer": {"name": "Anna Müller"},
//! });
//! // `de-AT` is served by the `de` variant.
//! let reply = set.render("acknowledgement", "email", "de-AT", &data)?;
//! assert_eq!(reply.subject.as_deref(), Some("Ihre Anfrage 10042"));
//! assert_eq!(reply.text, "Guten Tag Anna Müller,\nwir haben Ihre Anfrage vom 24. November 2026 erhalten.");
//! assert_eq!(reply.html.as_deref(), Some("<p>Guten Tag Anna Müller,\n</p>\n<p>Betreff: &lt;Paket&gt; fehlt</p>"));
//! # Ok::<(), plugdesk_template::Error>(())
//! ```
#![warn(missing_docs)]

mod budget;
mod compile;
mod directory;
mod error;
mod helper;
mod locale;
mod script;
mod set;
mod sms;

pub use error::Error;
pub use set::{
    DEFAULT_CHANNEL, DEFAULT_LANGUAGE, Limits, PartialSource, Rendered, SMS_CHANNEL, TemplateSet, TemplateSource,
    Variant,
};
