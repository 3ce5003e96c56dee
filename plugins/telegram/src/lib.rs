//! The `telegram` channel: a Telegram bot that customers write to. Each chat with the bot is a
//! conversation, so a customer's messages land on their open ticket, and agents' replies go
//! back into that chat through the Bot API's `sendMessage`.
//!
//! Updates reach the channel in one of two ways; Telegram allows only one at a time, and the
//! `webhook_secret` secret chooses:
//!
//! - **Webhook** (recommended), when `webhook_secret` is set: Telegram posts every update to
//!   `POST /hooks/{channel}` with the `X-Telegram-Bot-Api-Secret-Token` header, which must match
//!   it. Polls then find nothing without asking Telegram, which refuses `getUpdates` while a
//!   webhook is set.
//! - **Polling**, when the helpdesk has no public URL and `webhook_secret` is not set: on the
//!   channel's poll interval the host asks `getUpdates` for what came since the last poll.
//!
//! # Settings
//!
//! - `api_base`: the Bot API's base URL, `https://api.telegram.org` unless you run a local Bot
//!   API server.
//!
//! # Secrets
//!
//! - `bot_token`: the token @BotFather gave the bot (`123456789:AA…`). It never enters the
//!   plugin: it stands in the URL as a placeholder the host fills in.
//! - `webhook_secret`: 1–256 characters of `A-Z`, `a-z`, `0-9`, `_` and `-`; the same value goes
//!   to `setWebhook` as `secret_token`. Set it for the webhook, leave it out to poll.
//!
//! # Grants
//!
//! `secrets`, and `http:api.telegram.org` (or `http:HOST:PORT` of `api_base`).
//!
//! # Setting up
//!
//! 1. Talk to @BotFather in Telegram: `/newbot` creates the bot and shows its token.
//! 2. Install the channel:
//!    ```json
//!    {"plugin": "telegram", "secrets": {"bot_token": "TOKEN", "webhook_secret": "SECRET"},
//!     "grants": ["secrets", "http:api.telegram.org"]}
//!    ```
//! 3. Either register the webhook once:
//!    ```text
//!    curl https://api.telegram.org/botTOKEN/setWebhook \
//!      -d url=https://helpdesk.example.com/hooks/CHANNEL_ID -d secret_token=SECRET \
//!      -d 'allowed_updates=["message","edited_message"]'
//!    ```
//!    or, to poll instead, install the channel without `webhook_secret`, call
//!    `https://api.telegram.org/botTOKEN/deleteWebhook`, and give the channel a
//!    `poll_interval_ms` if once a minute is not often enough.
//!
//! # Limits
//!
//! Replies are text only: attachments of a reply are left out (with a warning in the log).
//! Media a customer sends shows as its caption, or as a placeholder such as `[photo]` or
//! `[document: invoice.pdf]`; open the chat in Telegram to see it. A reply longer than
//! Telegram's 4096 characters goes out as several messages; if a later one fails, the retry
//! sends the earlier ones again.

use std::collections::BTreeMap;

use plugdesk_sdk::{
    Channel, Descriptor, HttpRequest, InboundMessage, OutboundMessage, PluginError, PollOutcome, SendError,
    WebhookOutcome, WebhookRequest, host,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the Bot API lives unless the `api_base` setting says otherwise.
const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// The bot token, as a placeholder the host replaces in the URL: the token never enters the
/// plugin.
const BOT_TOKEN: &str = "{{secret:bot_token}}";

/// The header that carries `setWebhook`'s `secret_token`.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Longest webhook body accepted, in bytes. An update with a 4096-character text and all its
/// entities is a few tens of KiB.
const MAX_BODY: usize = 1 << 20;

/// Longest text taken from a message, in bytes: four times Telegram's own 4096-character cap.
const MAX_TEXT: usize = 16 * 1024;

/// Longest name or placeholder detail, in bytes; Telegram caps names at 64 characters.
const MAX_NAME: usize = 256;

/// Telegram's cap on one message's text, in UTF-16 code units (how the Bot API counts).
const MAX_MESSAGE: usize = 4096;

/// Updates asked for in one `getUpdates` call; 100 is the Bot API's maximum.
const POLL_LIMIT: usize = 100;

/// What a message without text or caption carries: its field, the placeholder's label, and the
/// field of that object worth showing. Checked in this order because an animation also carries
/// a `document`, and a venue a `location`, for older clients.
const CONTENT_KINDS: [(&str, &str, Option<&str>); 15] = [
    ("animation", "animation", None),
    ("photo", "photo", None),
    ("sticker", "sticker", None),
    ("document", "document", Some("file_name")),
    ("voice", "voice message", None),
    ("video_note", "video message", None),
    ("video", "video", None),
    ("audio", "audio", Some("title")),
    ("venue", "venue", Some("title")),
    ("location", "location", None),
    ("contact", "contact", Some("first_name")),
    ("poll", "poll", Some("question")),
    ("dice", "dice", Some("emoji")),
    ("game", "game", Some("title")),
    ("story", "story", None),
];

/// Fields of service messages in groups (someone joined, the title changed, ...): not something
/// a customer wrote, so no ticket.
const SERVICE_KINDS: [&str; 14] = [
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "message_auto_delete_timer_changed",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
    "pinned_message",
    "forum_topic_created",
    "write_access_allowed",
];

struct Telegram;

/// A Telegram `Update`, with the fields the channel reads. Other kinds (`channel_post`,
/// `callback_query`, ...) bring no message.
#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
    edited_message: Option<Message>,
}

/// A Telegram `Message`.
#[derive(Deserialize)]
struct Message {
    message_id: i64,
    /// Absent in channels and for some anonymous senders.
    from: Option<User>,
    chat: Chat,
    edit_date: Option<i64>,
    text: Option<String>,
    caption: Option<String>,
    /// Every other field: what the message carries when it has no text.
    #[serde(flatten)]
    content: BTreeMap<String, Value>,
}

/// A Telegram `User`.
#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
}

/// A Telegram `Chat`.
#[derive(Deserialize)]
struct Chat {
    id: i64,
    title: Option<String>,
    username: Option<String>,
}

/// Every Bot API answer: `{"ok": true, "result": …}` or `{"ok": false, "error_code": …,
/// "description": …, "parameters": {"retry_after": …}}`.
#[derive(Deserialize)]
struct Answer<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

/// Telegram's `ResponseParameters`.
#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

/// The part of a sent `Message` the channel needs.
#[derive(Deserialize)]
struct Sent {
    message_id: i64,
}

/// The `api_base` setting without a trailing slash.
fn api_base() -> String {
    host::setting::<String>("api_base")
        .map(|base| base.trim().trim_end_matches('/').to_string())
        .filter(|base| !base.is_empty())
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string())
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// True when the channel takes updates by webhook, that is when its `webhook_secret` is set.
fn uses_webhook() -> bool {
    // `secret_equals` fails only when the secret is not set (or secrets are not granted, and
    // then `getUpdates` cannot use the bot token either); comparing with the empty string
    // tells nothing about the secret's value.
    host::secret_equals("webhook_secret", "").is_ok()
}

/// Checks the webhook's secret token header against the `webhook_secret` secret.
fn authenticate(request: &WebhookRequest) -> Result<(), PluginError> {
    let token = request.header(SECRET_HEADER).ok_or_else(|| {
        PluginError::Rejected(
            "no X-Telegram-Bot-Api-Secret-Token header: call setWebhook with secret_token set to this channel's \
             webhook_secret"
                .into(),
        )
    })?;
    match host::secret_equals("webhook_secret", token) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PluginError::Rejected(
            "the X-Telegram-Bot-Api-Secret-Token header does not match the webhook_secret secret: call setWebhook \
             again with secret_token set to it"
                .into(),
        )),
        Err(e) => Err(PluginError::Rejected(format!("cannot check the X-Telegram-Bot-Api-Secret-Token header: {e}"))),
    }
}

/// The text to store for a message: its text or caption, else a placeholder naming what it
/// carries; `None` for service messages.
fn text_of(message: &Message) -> Option<String> {
    let written = message.text.as_deref().or(message.caption.as_deref()).filter(|t| !t.trim().is_empty());
    if let Some(text) = written {
        return Some(truncate(text, MAX_TEXT));
    }
    for (field, label, detail) in CONTENT_KINDS {
        let Some(value) = message.content.get(field) else { continue };
        let detail = detail.and_then(|d| value.get(d)).and_then(Value::as_str).map(str::trim).filter(|d| !d.is_empty());
        return Some(match detail {
            Some(detail) => format!("[{label}: {}]", truncate(detail, MAX_NAME)),
            None => format!("[{label}]"),
        });
    }
    if SERVICE_KINDS.iter().any(|field| message.content.contains_key(*field)) {
        return None;
    }
    Some("[a kind of message Plugdesk cannot show: open the chat in Telegram]".into())
}

/// The sender's display name: first and last name, else the username.
fn display_name(user: &User) -> Option<String> {
    let full = match &user.last_name {
        Some(last) => format!("{} {}", user.first_name.trim(), last.trim()),
        None => user.first_name.clone(),
    };
    let name = Some(full.trim().to_string()).filter(|n| !n.is_empty()).or_else(|| user.username.clone())?;
    Some(truncate(&name, MAX_NAME))
}

/// The message an update brings, if any.
fn inbound(update: Update) -> Option<InboundMessage> {
    let (message, edited) = match (update.message, update.edited_message) {
        (Some(message), _) => (message, false),
        (None, Some(message)) => (message, true),
        (None, None) => return None,
    };
    let text = text_of(&message)?;
    let mut external_id = format!("tg-{}-{}", message.chat.id, message.message_id);
    if edited {
        // An edit is a new message to the helpdesk; Telegram always sets `edit_date` on one,
        // and the update id keeps the id stable on redelivery should it ever be missing.
        let edit = message.edit_date.unwrap_or(update.update_id);
        external_id.push_str(&format!("-edit-{edit}"));
    }
    let (address, name, automatic) = match &message.from {
        Some(user) => (user.id.to_string(), display_name(user), user.is_bot),
        None => {
            let chat_name = message.chat.title.as_deref().or(message.chat.username.as_deref());
            (message.chat.id.to_string(), chat_name.map(|n| truncate(n, MAX_NAME)), false)
        }
    };
    let mut inbound = InboundMessage::new(external_id, "telegram", &address, text);
    inbound.conversation = Some(message.chat.id.to_string());
    inbound.sender_name = name;
    inbound.automatic = automatic;
    Some(inbound)
}

/// The error code (Telegram's, else the HTTP status) and description of a failed answer, with
/// a hint where one helps.
fn failure<T>(status: u16, answer: &Answer<T>) -> (u16, String) {
    let code = answer.error_code.unwrap_or(status);
    let mut detail = answer.description.clone().unwrap_or_else(|| "no description".into());
    match code {
        401 | 404 => detail.push_str(" (check the channel's bot_token secret)"),
        409 => detail.push_str(" (to take updates by webhook instead, set the channel's webhook_secret)"),
        429 => {
            if let Some(seconds) = answer.parameters.as_ref().and_then(|p| p.retry_after) {
                detail.push_str(&format!(" (Telegram asks to wait {seconds} s before retrying)"));
            }
        }
        _ => {}
    }
    (code, detail)
}

/// The message id in `in_reply_to` when it is a message of `chat`: `tg-{chat}-{id}`, or an
/// edit's `tg-{chat}-{id}-edit-{date}`. Chat ids of groups are negative: `tg--100123-7`.
fn replied_message(in_reply_to: &str, chat: &str) -> Option<i64> {
    let rest = in_reply_to.strip_prefix("tg-")?;
    let rest = rest.split_once("-edit-").map_or(rest, |(head, _)| head);
    let (of_chat, id) = rest.rsplit_once('-')?;
    if of_chat != chat {
        return None;
    }
    id.parse().ok()
}

/// Splits `text` into parts of at most `limit` UTF-16 code units: at the last line break that
/// fits, else the last space, else between two characters. The break itself is dropped, and so
/// are parts with nothing but white space, which Telegram refuses.
fn split(text: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut units = 0;
        let fits = rest.char_indices().find_map(|(i, c)| {
            units += c.len_utf16();
            (units > limit).then_some(i)
        });
        let (part, next) = match fits {
            None => (rest, ""),
            Some(end) => {
                let window = &rest[..end];
                match window.rfind('\n').or_else(|| window.rfind(' ')).filter(|&at| at > 0) {
                    Some(at) => (&rest[..at], &rest[at + 1..]),
                    // A limit below two units could leave nothing before the first character.
                    None if end == 0 => rest.split_at(rest.chars().next().map_or(rest.len(), char::len_utf8)),
                    None => rest.split_at(end),
                }
            }
        };
        if !part.trim().is_empty() {
            parts.push(part);
        }
        rest = next;
    }
    parts
}

/// Sends one `sendMessage` call and returns the sent message's id.
fn send_message(url: &str, body: &Value) -> Result<i64, SendError> {
    let response =
        host::post_json(url, body).map_err(|e| SendError::Retryable(format!("could not reach Telegram: {e}")))?;
    match response.json::<Answer<Sent>>() {
        Ok(Answer { ok: true, result: Some(sent), .. }) => Ok(sent.message_id),
        Ok(answer) if !answer.ok => {
            let (code, detail) = failure(response.status, &answer);
            Err(SendError::from_status(code, &detail))
        }
        // Retrying could send the message twice.
        _ if response.is_success() => Err(SendError::Permanent(format!(
            "Telegram answered {} without a message id; the message may have been sent, so it is not retried",
            response.status
        ))),
        _ => Err(SendError::from_status(response.status, "the answer is not Bot API JSON")),
    }
}

impl Channel for Telegram {
    fn describe() -> Descriptor {
        Descriptor {
            settings_schema: json!({
                "type": "object",
                "description": "Secrets: bot_token (from @BotFather) and webhook_secret (the secret_token given to \
                                setWebhook; set it to take updates by webhook, leave it out to poll getUpdates). \
                                Grants: secrets, http:api.telegram.org.",
                "properties": {
                    "api_base": {
                        "type": "string",
                        "format": "uri",
                        "default": DEFAULT_API_BASE,
                        "description": "Base URL of the Bot API; change it only for a local Bot API server"
                    }
                },
                "additionalProperties": false
            })
            .to_string(),
            capabilities: vec!["secrets".into(), "http".into()],
            sends: true,
            polls: true,
            ..plugdesk_sdk::descriptor("telegram", "Telegram", env!("CARGO_PKG_VERSION"), "telegram")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        if request.method != "POST" {
            return Err(PluginError::Invalid(format!("Telegram posts updates with POST, not {}", request.method)));
        }
        authenticate(&request)?;
        if request.body.len() > MAX_BODY {
            return Err(PluginError::Invalid(format!("the update is larger than {MAX_BODY} bytes")));
        }
        // No reply: the host's 200 tells Telegram the update arrived, also when it brings no
        // message; anything else and Telegram sends it again.
        let update: Update = request.json()?;
        Ok(WebhookOutcome { messages: inbound(update).into_iter().collect(), reply: None })
    }

    fn poll(cursor: Option<String>) -> Result<PollOutcome, PluginError> {
        // The host polls every channel of a plugin that polls; the webhook brings the updates.
        if uses_webhook() {
            return Ok(PollOutcome { messages: vec![], cursor: None, more: false });
        }
        let mut url = format!("{}/bot{BOT_TOKEN}/getUpdates?", api_base());
        if let Some(cursor) = &cursor {
            let offset: i64 = cursor.parse().map_err(|_| {
                PluginError::Invalid(format!(
                    "cursor {cursor:?} is not a Telegram update id; reset the channel's cursor"
                ))
            })?;
            url.push_str(&format!("offset={offset}&"));
        }
        url.push_str(&format!("timeout=0&limit={POLL_LIMIT}"));
        let request = HttpRequest { method: "GET".into(), url, headers: vec![], body: vec![] };
        let response =
            host::http_fetch(&request).map_err(|e| PluginError::Invalid(format!("getUpdates failed: {e}")))?;
        let answer: Answer<Vec<Value>> = response.json().map_err(|e| {
            PluginError::Invalid(format!("getUpdates failed: Telegram answered {}: {e}", response.status))
        })?;
        let updates = match answer.result {
            Some(updates) if answer.ok && response.is_success() => updates,
            _ => {
                let (code, detail) = failure(response.status, &answer);
                return Err(PluginError::Invalid(format!("getUpdates failed: Telegram answered {code}: {detail}")));
            }
        };
        // One update the channel cannot read must not hold back the others: it is skipped
        // (and logged), and the cursor moves past it all the same.
        let mut next: Option<i64> = None;
        let mut messages = Vec::new();
        for raw in &updates {
            let Some(id) = raw.get("update_id").and_then(Value::as_i64) else {
                host::warn("getUpdates returned an update without an update_id; skipped");
                continue;
            };
            next = next.max(Some(id.saturating_add(1)));
            match Update::deserialize(raw) {
                Ok(update) => messages.extend(inbound(update)),
                Err(e) => host::warn(&format!("skipped update {id}, which is not a Telegram Update: {e}")),
            }
        }
        Ok(PollOutcome { messages, cursor: next.map(|n| n.to_string()), more: updates.len() == POLL_LIMIT })
    }

    fn send(message: OutboundMessage) -> Result<String, SendError> {
        let chat = message
            .conversation
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .or_else(|| message.recipient("telegram"))
            .ok_or_else(|| SendError::Permanent("no Telegram chat for this customer".into()))?;
        let parts = split(&message.text, MAX_MESSAGE);
        if parts.is_empty() {
            return Err(SendError::Permanent(
                "the reply has no text, and Telegram cannot send an empty message".into(),
            ));
        }
        if !message.attachments.is_empty() {
            host::warn(&format!("reply {}: attachments are not sent to Telegram, only the text", message.id));
        }
        // Private chats and groups have numeric ids; a public channel may be `@name`.
        let chat_id = chat.parse::<i64>().map_or_else(|_| Value::from(chat), Value::from);
        let reply_to = message.in_reply_to.as_deref().and_then(|id| replied_message(id, chat));
        let url = format!("{}/bot{BOT_TOKEN}/sendMessage", api_base());
        let mut last = 0;
        for (i, part) in parts.into_iter().enumerate() {
            let mut body = json!({ "chat_id": chat_id, "text": part });
            if let (0, Some(id)) = (i, reply_to) {
                body["reply_parameters"] = json!({ "message_id": id, "allow_sending_without_reply": true });
            }
            last = send_message(&url, &body)?;
        }
        Ok(format!("tg-{chat}-{last}"))
    }
}

plugdesk_sdk::export_channel!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> Option<InboundMessage> {
        inbound(serde_json::from_str(json).expect("test update parses"))
    }

    #[test]
    fn text_messages_map_to_the_chat_and_sender() {
        let m = update(
            r#"{"update_id":7,"message":{"message_id":42,"date":1,"text":"hello",
                "from":{"id":11,"is_bot":false,"first_name":"Ada","last_name":"Lovelace","username":"ada"},
                "chat":{"id":11,"type":"private"}}}"#,
        )
        .expect("a message");
        assert_eq!(m.external_id, "tg-11-42");
        assert_eq!(m.conversation.as_deref(), Some("11"));
        assert_eq!((m.sender.kind.as_str(), m.sender.address.as_str()), ("telegram", "11"));
        assert_eq!(m.sender_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(m.text, "hello");
        assert!(!m.automatic);
    }

    #[test]
    fn edits_get_their_own_id_and_media_a_placeholder() {
        let m = update(
            r#"{"update_id":8,"edited_message":{"message_id":42,"date":1,"edit_date":99,
                "from":{"id":11,"is_bot":true,"first_name":"","username":"bot"},"chat":{"id":-100,"type":"group"},
                "document":{"file_id":"x","file_name":"invoice.pdf"}}}"#,
        )
        .expect("a message");
        assert_eq!(m.external_id, "tg--100-42-edit-99");
        assert_eq!(m.text, "[document: invoice.pdf]");
        assert_eq!(m.sender_name.as_deref(), Some("bot"));
        assert!(m.automatic);
    }

    #[test]
    fn captions_win_and_animations_are_not_documents() {
        let chat = r#""chat":{"id":1},"from":{"id":1,"first_name":"A"}"#;
        let with = |fields: &str| update(&format!(r#"{{"update_id":1,"message":{{"message_id":1,{chat},{fields}}}}}"#));
        assert_eq!(with(r#""photo":[],"caption":"look""#).expect("msg").text, "look");
        assert_eq!(with(r#""animation":{},"document":{"file_name":"a.mp4"}"#).expect("msg").text, "[animation]");
        assert_eq!(with(r#""voice":{}"#).expect("msg").text, "[voice message]");
        assert!(with(r#""new_chat_members":[]"#).is_none());
        assert!(update(r#"{"update_id":2,"callback_query":{"id":"q"}}"#).is_none());
        assert!(update(r#"{"update_id":3,"channel_post":{"message_id":1,"chat":{"id":5},"text":"x"}}"#).is_none());
    }

    #[test]
    fn replies_point_at_messages_of_the_same_chat_only() {
        assert_eq!(replied_message("tg-11-42", "11"), Some(42));
        assert_eq!(replied_message("tg--100123-7-edit-99", "-100123"), Some(7));
        assert_eq!(replied_message("tg-12-42", "11"), None);
        assert_eq!(replied_message("SM123", "11"), None);
    }

    #[test]
    fn long_text_splits_at_line_breaks_then_spaces_then_anywhere() {
        assert_eq!(split("short", 10), vec!["short"]);
        assert_eq!(split("line one\nline two", 12), vec!["line one", "line two"]);
        assert_eq!(split("aaa bbb ccc", 8), vec!["aaa bbb", "ccc"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(split("\n\n  \n", 2), Vec::<&str>::new());
        // An emoji is two UTF-16 units: three of them do not fit in five.
        assert_eq!(split("😀😀😀", 5), vec!["😀😀", "😀"]);
    }
}
