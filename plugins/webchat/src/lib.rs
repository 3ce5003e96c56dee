//! The `webchat` channel: a live-chat widget a business puts on its own site with one script
//! tag. Visitors' messages become tickets (one conversation per chat session); agents' replies
//! go back to the widget, which fetches them every 700 ms while the chat is open.
//!
//! The tag to embed (`CHANNEL_ID` is the channel's id; `GET /hooks/CHANNEL_ID/demo` shows a
//! page that has it):
//!
//! ```html
//! <script src="https://helpdesk.example.com/hooks/CHANNEL_ID/widget.js" async></script>
//! ```
//!
//! Settings (all optional):
//!
//! - `title` — heading of the chat panel and label of its button (default "Chat with us");
//! - `greeting` — the first line the panel shows, as if from the business;
//! - `color` — the button's and the visitor's bubbles' colour, `#rgb` or `#rrggbb` (anything
//!   else falls back to the default, so a setting can never inject CSS);
//! - `ask_email` — whether the panel asks for a name and an e-mail address before the first
//!   message (default true; both stay optional). With an address the sender is the customer
//!   of that e-mail, without one the session id (identity kind `webchat`).
//!
//! The settings reach the script as one JSON value, escaped for a `<script>` context; the
//! widget writes every text with `textContent`, never as HTML.
//!
//! # Endpoints below `/hooks/{instance}`
//!
//! - `GET /widget.js` — the widget (`src/widget.js` with the settings filled in);
//! - `GET /` or `/demo` — a demo page that embeds the widget;
//! - `POST /messages` — a visitor's message, JSON `{session, client_id, text, name?, email?}`,
//!   answered `{"accepted": 1}`. `client_id` is fresh per message and part of the external id,
//!   so a retried send is stored once;
//! - `GET /messages?session=S&after=N` — the agents' replies with `seq > N`, as
//!   `{"messages": [{"seq", "text", "at"}]}`.
//!
//! # How replies reach the widget
//!
//! `send` appends the reply to the session's log in the instance's key-value store and the
//! widget polls for it: every 700 ms while the panel is open, every 5 s while it is closed
//! (with an unread badge; every 60 s once the chat has been quiet for half an hour), and not
//! at all before the visitor's first message, so a page view costs nothing. Polling rather
//! than a held-open request because a webhook call has a 2 s budget and no way to wait.
//!
//! The store allows 1024 keys and no deletion, so a key per session would fill it for good
//! after a thousand chats. Sessions are instead hashed (FNV-1a) into 1000 buckets, key
//! `r:{0..999}`, each a JSON value `{"next": n, "sessions": {session: {"touched": ms,
//! "items": [{"seq", "id", "text", "at"}]}}}` of at most 60 KiB. `next` counts per bucket, so a
//! session's sequence numbers only grow, even after it was evicted and comes back. Writing a
//! bucket keeps the newest 50 replies of the session written to, drops sessions without a
//! reply for 30 days, then drops the least recently answered sessions until the value fits.
//! An evicted session's widget keeps its transcript in the visitor's browser; only replies it
//! has not fetched yet are lost, and only once the bucket filled with more recent chats.
//! Replies longer than 16 KiB are refused (the agent sees a failed delivery).
//!
//! # Privacy
//!
//! The widget keeps a random session id, the visitor's name, e-mail address and the transcript
//! in the browser's `localStorage`. The session id is the visitor's only key to the
//! conversation: whoever holds it can read the agents' replies. It is a random UUID (122 random
//! bits; 128 from `crypto.getRandomValues` where `randomUUID` is missing), never put in a URL
//! the visitor shares, and sent only to the helpdesk. The e-mail address is not verified; as
//! with a contact form, an agent should not disclose account details on a chat on the
//! strength of it.
//!
//! A site with a Content-Security-Policy must allow the helpdesk's origin in `script-src` and
//! `connect-src`.

mod replies;
mod widget;

use plugdesk_sdk::{
    Channel, Descriptor, InboundMessage, OutboundMessage, PluginError, SendError, WebhookOutcome, WebhookReply,
    WebhookRequest,
};
use serde_json::{Map, Value};

/// Largest `POST /messages` body, in bytes: the text's 8 KiB plus JSON escaping and the other
/// fields, with room to spare.
const MAX_BODY: usize = 32 * 1024;
/// Longest message text, in bytes: a chat line, not a document.
const MAX_TEXT: usize = 8 * 1024;
/// Longest name, in bytes.
const MAX_NAME: usize = 200;
/// Longest e-mail address, in bytes (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest agent reply, in bytes: a few fit in one 60 KiB bucket next to other sessions.
const MAX_REPLY: usize = 16 * 1024;

struct Webchat;

/// A session or client id: 8–64 of `[A-Za-z0-9-]`, so it is safe in a key, an external id and
/// a query string, and long enough to hold a random UUID.
fn is_id(s: &str) -> bool {
    (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A value for an error message: quoted when short, its size when not (the message is stored
/// with the request and logged).
fn shown(value: &str) -> String {
    if value.len() <= 80 { format!("{value:?}") } else { format!("a value of {} bytes", value.len()) }
}

fn check_id<'a>(field: &str, value: &'a str) -> Result<&'a str, PluginError> {
    if is_id(value) {
        Ok(value)
    } else {
        Err(PluginError::Invalid(format!(
            "{field} must be 8-64 characters of A-Z, a-z, 0-9 and '-', not {}",
            shown(value)
        )))
    }
}

fn json_reply(status: u16, body: &Value) -> WebhookReply {
    WebhookReply { status, content_type: "application/json".into(), body: body.to_string().into_bytes() }
}

fn not_found(path: &str) -> WebhookReply {
    let message =
        format!("nothing at {path:?}: the chat serves GET /widget.js, GET /messages and the demo page at GET /");
    json_reply(404, &serde_json::json!({ "error": { "code": "not_found", "message": message } }))
}

/// A string field of a message: `Ok(None)` when absent or null, an error naming the field when
/// it is something other than a string.
fn string_field<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, PluginError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(PluginError::Invalid(format!("{field} must be a string, not {other}"))),
    }
}

fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, PluginError> {
    string_field(body, field)?.ok_or_else(|| PluginError::Invalid(format!("{field} is missing")))
}

/// An optional field, trimmed; empty counts as absent.
fn optional<'a>(body: &'a Map<String, Value>, field: &str, max: usize) -> Result<Option<&'a str>, PluginError> {
    let value = string_field(body, field)?.map(str::trim).filter(|v| !v.is_empty());
    match value {
        Some(v) if v.len() > max => Err(PluginError::Invalid(format!("{field} is longer than {max} bytes"))),
        _ => Ok(value),
    }
}

/// `POST /messages`: one visitor message.
fn receive(request: &WebhookRequest) -> Result<WebhookOutcome, PluginError> {
    if request.body.len() > MAX_BODY {
        return Err(PluginError::Invalid(format!(
            "body is {} bytes; a chat message is at most {MAX_BODY}",
            request.body.len()
        )));
    }
    let body: Map<String, Value> = request.json()?;
    let session = check_id("session", required(&body, "session")?)?;
    let client_id = check_id("client_id", required(&body, "client_id")?)?;
    let text = required(&body, "text")?.trim();
    if text.is_empty() {
        return Err(PluginError::Invalid("text is empty".into()));
    }
    if text.len() > MAX_TEXT {
        return Err(PluginError::Invalid(format!(
            "text is {} bytes; a chat message is at most {MAX_TEXT}",
            text.len()
        )));
    }
    let name = optional(&body, "name", MAX_NAME)?;
    let email = optional(&body, "email", MAX_EMAIL)?;
    if let Some(email) = email
        && !email.contains('@')
    {
        return Err(PluginError::Invalid(format!("email {email:?} is not an e-mail address")));
    }
    let external_id = format!("webchat-{session}-{client_id}");
    let mut message = match email {
        Some(email) => InboundMessage::new(external_id, "email", email, text),
        None => InboundMessage::new(external_id, "webchat", session, text),
    };
    message.conversation = Some(session.to_string());
    message.sender_name = name.map(str::to_string);
    Ok(WebhookOutcome { messages: vec![message], reply: Some(json_reply(200, &serde_json::json!({ "accepted": 1 }))) })
}

/// `GET /messages?session=S&after=N`: the replies the widget has not shown yet.
fn replies_after(query: &str) -> Result<WebhookOutcome, PluginError> {
    let (mut session, mut after) = (None, 0);
    for (k, v) in plugdesk_sdk::parse_form(query)? {
        match k.as_str() {
            "session" => session = Some(v),
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| PluginError::Invalid(format!("after must be a whole number, not {}", shown(&v))))?
            }
            _ => {}
        }
    }
    let session = session.ok_or_else(|| PluginError::Invalid("session is missing from the query".into()))?;
    let session = check_id("session", &session)?;
    let reply = match replies::after(session, after) {
        Ok(items) => {
            let messages: Vec<Value> =
                items.iter().map(|i| serde_json::json!({ "seq": i.seq, "text": i.text, "at": i.at })).collect();
            json_reply(200, &serde_json::json!({ "messages": messages }))
        }
        Err(e) => {
            // Details go to the log, not to whoever polls.
            plugdesk_sdk::host::warn(&format!("cannot read chat replies (is the kv capability granted?): {e}"));
            let message = "replies cannot be read right now; try again shortly";
            json_reply(503, &serde_json::json!({ "error": { "code": "unavailable", "message": message } }))
        }
    };
    Ok(WebhookOutcome { messages: vec![], reply: Some(reply) })
}

/// The text a reply shows in the chat. The widget shows plain text only, so attachments are
/// named rather than silently dropped.
fn reply_text(message: &OutboundMessage) -> Result<String, SendError> {
    let mut text = message.text.trim().to_string();
    if !message.attachments.is_empty() {
        let names: Vec<&str> = message.attachments.iter().map(|a| a.filename.as_str()).collect();
        plugdesk_sdk::host::warn(&format!(
            "reply {}: the chat shows text only; {} attachment(s) not delivered",
            message.id,
            names.len()
        ));
        text.push_str(&format!("\n\n(Attachments cannot be shown in this chat: {})", names.join(", ")));
    }
    if text.trim().is_empty() {
        return Err(SendError::Permanent("the reply has no text, and the chat shows plain text only".into()));
    }
    if text.len() > MAX_REPLY {
        return Err(SendError::Permanent(format!(
            "the reply is {} bytes; a chat reply holds at most {MAX_REPLY}: shorten it or split it",
            text.len()
        )));
    }
    Ok(text)
}

impl Channel for Webchat {
    fn describe() -> Descriptor {
        Descriptor {
            settings_schema: widget::settings_schema().to_string(),
            capabilities: vec!["kv".into()],
            sends: true,
            ..plugdesk_sdk::descriptor("webchat", "Live chat", env!("CARGO_PKG_VERSION"), "webchat")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        // "/messages/" is "/messages"; "/" and "" are the root.
        let path = request.path.trim_end_matches('/');
        let served = |reply| Ok(WebhookOutcome { messages: vec![], reply: Some(reply) });
        match (request.method.as_str(), path) {
            ("POST", "/messages") => receive(&request),
            ("POST", _) => Err(PluginError::Invalid(format!(
                "post chat messages to /messages, not {:?} (GET /widget.js serves the widget)",
                request.path
            ))),
            ("GET" | "HEAD", "/messages") => replies_after(&request.query),
            ("GET" | "HEAD", "/widget.js") => served(widget::script_reply(&widget::Config::from_settings())),
            ("GET" | "HEAD", "" | "/demo") => served(widget::demo_reply()),
            ("GET" | "HEAD", _) => served(not_found(&request.path)),
            (method, _) => Err(PluginError::Invalid(format!("the chat answers GET and POST, not {method}"))),
        }
    }

    fn send(message: OutboundMessage) -> Result<String, SendError> {
        let session = message.conversation.as_deref().filter(|c| !c.is_empty());
        let session = session.ok_or_else(|| SendError::Permanent("no chat session on this ticket".into()))?;
        if !is_id(session) {
            return Err(SendError::Permanent(format!("conversation {session:?} is not a chat session id")));
        }
        let text = reply_text(&message)?;
        let seq = replies::append(session, &message.id, &text, plugdesk_sdk::host::now_ms())?;
        Ok(format!("webchat-{session}-{seq}"))
    }
}

plugdesk_sdk::export_channel!(Webchat);

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &str) -> Result<WebhookOutcome, PluginError> {
        receive(&WebhookRequest {
            method: "POST".into(),
            path: "/messages".into(),
            query: String::new(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    fn invalid(body: &str) -> String {
        match post(body) {
            Err(PluginError::Invalid(m)) => m,
            Err(PluginError::Rejected(m)) => panic!("rejected instead of invalid: {m}"),
            Ok(_) => panic!("accepted {body}"),
        }
    }

    const S: &str = "0b5c1f3e-7d2a-4c4e-9a51-3f0f8d2b9e11";

    #[test]
    fn a_message_with_email_comes_from_the_email() {
        let body = format!(
            r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"  Hello  ","name":" Ann ","email":"ann@example.com"}}"#
        );
        let outcome = post(&body).unwrap();
        let m = &outcome.messages[0];
        assert_eq!(m.external_id, format!("webchat-{S}-c1a2b3c4d5"));
        assert_eq!(m.conversation.as_deref(), Some(S));
        assert_eq!((m.sender.kind.as_str(), m.sender.address.as_str()), ("email", "ann@example.com"));
        assert_eq!(m.sender_name.as_deref(), Some("Ann"));
        assert_eq!(m.text, "Hello");
        assert!(m.subject.is_none() && !m.automatic);
        let reply = outcome.reply.unwrap();
        assert_eq!((reply.status, reply.body), (200, br#"{"accepted":1}"#.to_vec()));
    }

    #[test]
    fn a_message_without_email_comes_from_the_session() {
        let outcome = post(&format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"hi","email":""}}"#)).unwrap();
        let m = &outcome.messages[0];
        assert_eq!((m.sender.kind.as_str(), m.sender.address.as_str()), ("webchat", S));
        assert!(m.sender_name.is_none());
    }

    #[test]
    fn bad_messages_name_the_field() {
        let cases = [
            (r#"{"client_id":"c1a2b3c4d5","text":"hi"}"#.to_string(), "session is missing"),
            (r#"{"session":"short","client_id":"c1a2b3c4d5","text":"hi"}"#.into(), "session must be 8-64"),
            (format!(r#"{{"session":"{S}","client_id":"c1a2 b3c4d5","text":"hi"}}"#), "client_id must be 8-64"),
            (format!(r#"{{"session":"{S}","text":"hi"}}"#), "client_id is missing"),
            (format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"  "}}"#), "text is empty"),
            (format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":5}}"#), "text must be a string"),
            (format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"{}"}}"#, "x".repeat(8193)), "text is 8193"),
            (format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"hi","email":"ann"}}"#), "email \"ann\""),
            (
                format!(r#"{{"session":"{S}","client_id":"c1a2b3c4d5","text":"hi","name":"{}"}}"#, "n".repeat(201)),
                "name is longer than 200",
            ),
            ("[1]".into(), "body is not the expected JSON"),
        ];
        for (body, expected) in cases {
            let m = invalid(&body);
            assert!(m.starts_with(expected), "{body}: {m}");
        }
    }

    #[test]
    fn ids_are_8_to_64_safe_characters() {
        assert!(is_id("abcdefgh") && is_id(&"a".repeat(64)) && is_id(S));
        assert!(!is_id("abcdefg") && !is_id(&"a".repeat(65)) && !is_id("abcdefg_") && !is_id("abcdefgé"));
    }
}
