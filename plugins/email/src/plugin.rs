//! The channel's entry points: thin glue between the host (settings, secrets, key-value store,
//! TCP, log, clock) and the conversions and protocol flows of the other modules.

// Natively nothing calls the entry points (they are exported only in the component, see
// below); their pure parts are unit-tested here.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use plugdesk_sdk::host::{self, TcpConnection};
use plugdesk_sdk::{
    Channel, Descriptor, OutboundMessage, PluginError, PollOutcome, SendError, WebhookOutcome, WebhookReply,
    WebhookRequest,
};
use serde_json::json;

use crate::inbound::{Converted, convert};
use crate::outbound::{
    compose_reply, decode_bucket, loop_address, loop_check, loop_key, loop_refusal, record_send, submit,
};
use crate::settings::{self, ImapSettings, Settings};
use crate::{Level, Transport, mailbox};

/// The key-value entry a poll holds while it runs: `CURSOR|MESSAGES|BYTES`.
const POLL_MARK: &str = "poll-running";

/// The entry written when a poll starts.
fn poll_mark(cursor: Option<&str>, messages: usize, bytes: usize) -> String {
    format!("{}|{messages}|{bytes}", cursor.unwrap_or(""))
}

/// The batch limits of this poll: the configured ones, or half of those of an unfinished poll
/// from the same cursor (at least one message and 64 KiB).
fn batch_after(mark: Option<&[u8]>, cursor: Option<&str>, configured: (usize, usize)) -> (usize, usize) {
    let Some(mark) = mark.and_then(|m| std::str::from_utf8(m).ok()).filter(|m| !m.is_empty()) else {
        return configured;
    };
    let mut parts = mark.rsplitn(3, '|');
    let (Some(bytes), Some(messages), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
        return configured;
    };
    match (messages.parse::<usize>(), bytes.parse::<usize>()) {
        (Ok(m), Ok(b)) if at == cursor.unwrap_or("") => {
            ((m / 2).clamp(1, configured.0), (b / 2).clamp(64 * 1024, configured.1.max(64 * 1024)))
        }
        _ => configured,
    }
}

/// The header that carries the pipe's token.
const TOKEN_HEADER: &str = "x-plugdesk-mail-token";

/// The envelope sender of a piped message (`plugdesk mail-in --sender`, Postfix `${sender}`).
const ENVELOPE_HEADER: &str = "x-plugdesk-envelope-sender";

/// The secret the pipe's token is checked against.
const TOKEN_SECRET: &str = "inbound_token";

struct Email;

/// The host's TCP connection as a [`Transport`]: secrets are filled in by the host.
struct HostTcp(TcpConnection);

impl Transport for HostTcp {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.0.write(data)
    }

    fn write_secret(&mut self, template: &str) -> Result<(), String> {
        self.0.write_with_secrets(template)
    }

    fn read(&mut self, max: usize, timeout_ms: u32) -> Result<Vec<u8>, String> {
        self.0.read(u32::try_from(max).unwrap_or(u32::MAX), timeout_ms)
    }

    fn start_tls(&mut self) -> Result<(), String> {
        self.0.start_tls()
    }
}

/// The instance's settings, read through the host.
fn settings() -> Result<Settings, String> {
    Settings::from_lookup(host::setting::<serde_json::Value>)
}

/// Writes to the host's log.
fn log(level: Level, message: &str) {
    match level {
        Level::Info => host::info(message),
        Level::Warn => host::warn(message),
    }
}

/// Checks the pipe's token (`x-plugdesk-mail-token`, or `Authorization: Bearer …`) with
/// `check`, which compares a candidate with the `inbound_token` secret.
fn authenticate(request: &WebhookRequest, check: impl Fn(&str) -> Result<bool, String>) -> Result<(), PluginError> {
    let bearer = request
        .header("authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer ").or_else(|| v.trim().strip_prefix("bearer ")));
    let token = request.header(TOKEN_HEADER).or(bearer).map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(PluginError::Rejected(format!("missing {TOKEN_HEADER}")));
    };
    match check(token) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PluginError::Rejected("wrong token".into())),
        Err(e) => Err(PluginError::Rejected(format!(
            "cannot check the token: set the channel's secret {TOKEN_SECRET} (and grant secrets): {e}"
        ))),
    }
}

/// The pipe's answer to one message's source.
fn pipe_outcome(converted: Converted) -> WebhookOutcome {
    match converted {
        Converted::Message(message) => WebhookOutcome { messages: vec![*message], reply: None },
        Converted::Skipped(skip) => WebhookOutcome {
            messages: vec![],
            reply: Some(WebhookReply {
                status: 200,
                content_type: "application/json".into(),
                body: json!({ "accepted": 0, "skipped": skip.reason() }).to_string().into_bytes(),
            }),
        },
    }
}

fn descriptor() -> Descriptor {
    Descriptor {
        settings_schema: settings::schema(),
        capabilities: vec!["secrets".into(), "kv".into(), "tcp".into()],
        sends: true,
        polls: true,
        ..plugdesk_sdk::descriptor("email", "E-mail (IMAP/SMTP)", env!("CARGO_PKG_VERSION"), "email")
    }
}

impl Channel for Email {
    fn describe() -> Descriptor {
        descriptor()
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        if request.method != "POST" {
            return Err(PluginError::Invalid(format!("mail is piped in with POST, not {}", request.method)));
        }
        authenticate(&request, |candidate| host::secret_equals(TOKEN_SECRET, candidate))?;
        if request.body.iter().all(u8::is_ascii_whitespace) {
            return Err(PluginError::Invalid("empty message".into()));
        }
        let settings = settings().map_err(PluginError::Invalid)?;
        let envelope = request.header(ENVELOPE_HEADER).map(str::to_owned);
        Ok(pipe_outcome(convert(request.body, envelope.as_deref(), &settings, &mut log)))
    }

    fn poll(cursor: Option<String>) -> Result<PollOutcome, PluginError> {
        let settings = settings().map_err(PluginError::Invalid)?;
        // A channel without IMAP sends only, or takes mail piped in by the mail server.
        let Some(configured) = &settings.imap else {
            return Ok(PollOutcome { messages: vec![], cursor: None, more: false });
        };
        // A poll that never returned (out of fuel or time on a batch of heavy mail) left its
        // mark in the store: this one takes half of that batch, so the mailbox cannot stall.
        let mark = host::kv_get(POLL_MARK).ok().flatten();
        let (messages, bytes) =
            batch_after(mark.as_deref(), cursor.as_deref(), (configured.batch_messages, configured.batch_bytes));
        if messages < configured.batch_messages {
            log(Level::Warn, &format!("the last poll did not finish; fetching at most {messages} messages this time"));
        }
        let imap = ImapSettings { batch_messages: messages, batch_bytes: bytes, ..configured.clone() };
        let _ = host::kv_set(POLL_MARK, poll_mark(cursor.as_deref(), messages, bytes).as_bytes());
        let connect = |tls| TcpConnection::connect(&imap.host, imap.port, tls).map(HostTcp);
        let result = mailbox::poll(&imap, &settings, cursor.as_deref(), connect, &mut log);
        // Returned, even with an error: the batch size was not the problem.
        let _ = host::kv_set(POLL_MARK, b"");
        result.map_err(PluginError::Invalid)
    }

    fn send(message: OutboundMessage) -> Result<String, SendError> {
        let settings = settings().map_err(SendError::Permanent)?;
        let Some(smtp) = &settings.smtp else {
            return Err(SendError::Permanent("setting smtp_host is not set: this channel does not send".into()));
        };
        let recipient = message
            .recipient("email")
            .ok_or_else(|| SendError::Permanent("the customer has no e-mail address".into()))?
            .to_owned();
        let now = host::now_ms();
        // Automatic mail (acknowledgements, auto-replies) to one address is capped per hour, so
        // that two robots answering each other stop soon.
        let loop_state = if message.automatic {
            let key = loop_key(&recipient);
            let stored = host::kv_get(&key)
                .map_err(|e| SendError::Permanent(format!("loop protection needs the kv grant: {e}")))?;
            let bucket = decode_bucket(stored.as_deref());
            let times = bucket.get(&loop_address(&recipient)).cloned().unwrap_or_default();
            let check = loop_check(&times, now, settings.automatic_per_hour);
            if !check.allowed {
                return Err(loop_refusal(check.recent.len(), &recipient, settings.automatic_per_hour));
            }
            Some((key, bucket))
        } else {
            None
        };
        let (id, bytes) = compose_reply(&message, &recipient, &settings, now)?;
        let connect = |tls| TcpConnection::connect(&smtp.host, smtp.port, tls).map(HostTcp);
        submit(smtp, &settings, connect, &recipient, &bytes)?;
        // Recorded only once the mail went out: a failed attempt does not count.
        if let Some((key, bucket)) = loop_state
            && let Err(e) = host::kv_set(&key, &record_send(bucket, &recipient, now))
        {
            host::warn(&format!("reply {}: sent, but its loop protection count was not stored: {e}", message.id));
        }
        Ok(id)
    }
}

// Only in the component: natively the crate is also a cdylib (beside the rlib the tests against
// real servers link), and the linker refuses the WIT export names (`plugdesk:plugin/…#send`) in
// a native shared library's symbol list.
#[cfg(target_arch = "wasm32")]
plugdesk_sdk::export_channel!(Email);

#[cfg(test)]
mod tests {
    use plugdesk_sdk::Header;

    use super::*;

    fn request(headers: &[(&str, &str)]) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: String::new(),
            query: String::new(),
            headers: headers.iter().map(|(n, v)| Header { name: (*n).into(), value: (*v).into() }).collect(),
            body: b"Subject: x\r\n\r\nhi".to_vec(),
        }
    }

    fn check(candidate: &str) -> Result<bool, String> {
        Ok(candidate == "s3cret")
    }

    #[test]
    fn an_unfinished_poll_halves_the_next_batch_from_the_same_cursor() {
        let configured = (200, 6 << 20);
        assert_eq!(batch_after(None, Some("v:1:10"), configured), configured);
        assert_eq!(batch_after(Some(b""), Some("v:1:10"), configured), configured);
        let mark = poll_mark(Some("v:1:10"), 200, 6 << 20);
        assert_eq!(batch_after(Some(mark.as_bytes()), Some("v:1:10"), configured), (100, 3 << 20));
        // Again and again: down to one message and 64 KiB, never below.
        let mut limits = configured;
        for _ in 0..20 {
            let mark = poll_mark(None, limits.0, limits.1);
            limits = batch_after(Some(mark.as_bytes()), None, configured);
        }
        assert_eq!(limits, (1, 64 * 1024));
        // A mark from another cursor (that poll moved on) or a broken one changes nothing.
        assert_eq!(batch_after(Some(mark.as_bytes()), Some("v:1:50"), configured), configured);
        assert_eq!(batch_after(Some(b"garbage"), Some("v:1:10"), configured), configured);
    }

    /// The refusal's text, or `None` when the request passed.
    fn refusal(request: &WebhookRequest, check: impl Fn(&str) -> Result<bool, String>) -> Option<String> {
        match authenticate(request, check) {
            Ok(()) => None,
            Err(PluginError::Rejected(m)) => Some(m),
            Err(PluginError::Invalid(m)) => panic!("a bad token is a rejection, not invalid: {m}"),
        }
    }

    #[test]
    fn pipe_token_from_header_or_bearer() {
        assert_eq!(refusal(&request(&[("x-plugdesk-mail-token", "s3cret")]), check), None);
        assert_eq!(refusal(&request(&[("authorization", "Bearer s3cret")]), check), None);
        assert_eq!(refusal(&request(&[]), check).as_deref(), Some("missing x-plugdesk-mail-token"));
        let basic = refusal(&request(&[("authorization", "Basic czNjcmV0")]), check);
        assert_eq!(basic.as_deref(), Some("missing x-plugdesk-mail-token"));
        assert_eq!(refusal(&request(&[("x-plugdesk-mail-token", "guess")]), check).as_deref(), Some("wrong token"));
        let unset = refusal(&request(&[("x-plugdesk-mail-token", "x")]), |_| Err("secret not set".into()));
        assert!(unset.as_deref().unwrap_or("").contains("set the channel's secret inbound_token"), "{unset:?}");
    }

    #[test]
    fn pipe_answers_skipped_mail_with_the_reason() {
        let outcome = pipe_outcome(Converted::Skipped(crate::inbound::Skip::OwnMessage));
        assert!(outcome.messages.is_empty());
        let reply = outcome.reply.expect("a reply");
        assert_eq!((reply.status, reply.content_type.as_str()), (200, "application/json"));
        assert_eq!(reply.body, br#"{"accepted":0,"skipped":"own message"}"#);
    }

    #[test]
    fn descriptor_says_what_the_channel_is() {
        let d = descriptor();
        assert_eq!((d.id.as_str(), d.name.as_str(), d.channel_kind.as_str()), ("email", "E-mail (IMAP/SMTP)", "email"));
        assert_eq!(d.capabilities, ["secrets", "kv", "tcp"]);
        assert!(d.sends && d.polls);
        assert!(d.settings_schema.contains("\"imap_host\""));
    }
}
