//! Handlebars response templates for Plugdesk (being written: issue #5).
