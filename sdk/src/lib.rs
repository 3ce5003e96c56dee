//! Write Plugdesk channel plugins in a few lines.
//!
//! A channel plugin is a WebAssembly component that turns what a channel sends to Plugdesk (a
//! webhook request) into normalised customer messages. Implement [`Channel`] for a type and
//! export it with [`export_channel!`]; build with `cargo build --target wasm32-wasip2 --release`.
//!
//! ```
//! use plugdesk_sdk::{Channel, Descriptor, InboundMessage, PluginError, WebhookOutcome, WebhookRequest};
//!
//! struct Echo;
//!
//! impl Channel for Echo {
//!     fn describe() -> Descriptor {
//!         plugdesk_sdk::descriptor("echo", "Echo", "0.1.0", "echo")
//!     }
//!
//!     fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
//!         let text = String::from_utf8(request.body).map_err(|_| PluginError::Invalid("body is not UTF-8".into()))?;
//!         let message = InboundMessage::new(format!("echo-{}", text.len()), "email", "echo@example.com", text);
//!         Ok(WebhookOutcome { messages: vec![message], reply: None })
//!     }
//! }
//!
//! plugdesk_sdk::export_channel!(Echo);
//! ```
//!
//! The plugin runs in a sandbox: it has no file system, network, clock or environment of its
//! own; what it may use is in [`host`], and each capability (`secrets`, `kv`) only when the
//! admin granted it for the channel instance.

#![deny(missing_docs)]

/// The host functions and shared records, generated from `wit/plugin.wit`.
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit",
        world: "host-imports",
        default_bindings_module: "plugdesk_sdk::bindings",
    });
}

/// The channel world's exports (feature `channel`, on by default). A plugin is either a
/// channel or an automation: the component exports exactly one world.
#[cfg(feature = "channel")]
#[doc(hidden)]
pub mod channel_bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit",
        world: "channel-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_channel_plugin",
        default_bindings_module: "plugdesk_sdk::channel_bindings",
        with: {
            "plugdesk:plugin/types@0.2.0": crate::bindings::plugdesk::plugin::types,
            "plugdesk:plugin/host@0.2.0": crate::bindings::plugdesk::plugin::host,
        },
    });
}

/// The automation world's exports (feature `automation`; turn `channel` off with
/// `default-features = false`).
#[cfg(feature = "automation")]
#[doc(hidden)]
pub mod automation_bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit",
        world: "automation-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_automation_plugin",
        default_bindings_module: "plugdesk_sdk::automation_bindings",
        with: {
            "plugdesk:plugin/types@0.2.0": crate::bindings::plugdesk::plugin::types,
            "plugdesk:plugin/host@0.2.0": crate::bindings::plugdesk::plugin::host,
        },
    });
}

#[cfg(feature = "automation")]
pub use automation_bindings::plugdesk::plugin::automation_types::{
    Action, AutomationDescriptor, CustomerView, Event, MessageView, TicketView,
};

/// An automation rule: gets an event with a read-only view of its ticket and customer and
/// answers with actions. Export it with [`export_automation!`].
#[cfg(feature = "automation")]
pub trait Automation {
    /// Says what the plugin is and which events it wants.
    fn describe() -> AutomationDescriptor;

    /// Decides what to do about one event.
    ///
    /// # Errors
    /// A message; the host records it with the plugin's name and applies nothing.
    fn handle_event(event: Event) -> Result<Vec<Action>, String>;
}

#[cfg(feature = "automation")]
impl Action {
    /// Changes ticket fields: any of `status`, `priority`, `level`, `team_id`, `assignee_id`,
    /// `category`, `add_tags`, `remove_tags` (as in `PATCH /api/v1/tickets/{id}`).
    pub fn update(fields: serde_json::Value) -> Self {
        Action { name: "update".into(), args: fields.to_string() }
    }

    /// Adds an internal note.
    pub fn note(body: &str) -> Self {
        Action { name: "note".into(), args: serde_json::json!({ "body": body }).to_string() }
    }

    /// Answers the customer through the ticket's channel.
    pub fn reply(body: &str) -> Self {
        Action { name: "reply".into(), args: serde_json::json!({ "body": body }).to_string() }
    }
}

/// Exports an [`Automation`] implementation as the plugin's entry points.
#[cfg(feature = "automation")]
#[macro_export]
macro_rules! export_automation {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __PlugdeskAutomation;

        impl $crate::automation_bindings::exports::plugdesk::plugin::automation::Guest for __PlugdeskAutomation {
            fn describe() -> $crate::AutomationDescriptor {
                $crate::__install_panic_hook();
                <$plugin as $crate::Automation>::describe()
            }

            fn handle_event(event: $crate::Event) -> Result<Vec<$crate::Action>, String> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Automation>::handle_event(event)
            }
        }

        $crate::automation_bindings::__export_automation_plugin!(__PlugdeskAutomation with_types_in $crate::automation_bindings);
    };
}

pub use bindings::plugdesk::plugin::types::{
    Attachment, DeliveryFailure, Descriptor, Header, HttpRequest, HttpResponse, Identity, InboundMessage,
    OutboundMessage, PluginError, PollOutcome, SendError, WebhookOutcome, WebhookReply, WebhookRequest,
};

/// The version of the plugin contract (WIT package `plugdesk:plugin`) this SDK builds against.
/// The host refuses a plugin built against a version it does not support, naming both.
pub const WIT_VERSION: &str = "0.2.0";

/// A channel connector.
#[cfg(feature = "channel")]
pub trait Channel {
    /// Says what the plugin is. See [`descriptor`] for the usual case.
    fn describe() -> Descriptor;

    /// Turns a webhook request into messages. Check the request's signature first and answer
    /// [`PluginError::Rejected`] when it does not match.
    ///
    /// # Errors
    /// [`PluginError::Rejected`] for a failed authenticity check (the host answers 401),
    /// [`PluginError::Invalid`] for a malformed request (422; the raw request stays stored).
    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError>;

    /// Fetches new messages after `cursor` from a pull source. Only called when the
    /// descriptor sets `polls`; the default finds nothing.
    ///
    /// # Errors
    /// [`PluginError::Invalid`] when the source answered something unusable; the host records
    /// it on the channel and keeps the cursor where it was.
    fn poll(cursor: Option<String>) -> Result<PollOutcome, PluginError> {
        let _ = cursor;
        Ok(PollOutcome { messages: vec![], cursor: None, more: false })
    }

    /// Sends a reply and returns the channel's id for it. Only called when the descriptor sets
    /// `sends`; the default refuses permanently.
    ///
    /// # Errors
    /// [`SendError::Retryable`] for passing failures (the host retries with backoff),
    /// [`SendError::Permanent`] for failures that will not go away (dead letter).
    fn send(message: OutboundMessage) -> Result<String, SendError> {
        let _ = message;
        Err(SendError::Permanent("this channel does not send messages".into()))
    }
}

/// A descriptor with no settings and no capabilities; set the fields for more.
pub fn descriptor(id: &str, name: &str, version: &str, channel_kind: &str) -> Descriptor {
    Descriptor {
        id: id.into(),
        name: name.into(),
        version: version.into(),
        channel_kind: channel_kind.into(),
        settings_schema: "{\"type\":\"object\"}".into(),
        capabilities: vec![],
        sends: false,
        polls: false,
    }
}

impl InboundMessage {
    /// A plain-text message from one identity, with no subject, conversation or attachments.
    pub fn new(external_id: impl Into<String>, kind: &str, address: &str, text: impl Into<String>) -> Self {
        InboundMessage {
            external_id: external_id.into(),
            conversation: None,
            sender: Identity { kind: kind.into(), address: address.into() },
            sender_name: None,
            subject: None,
            text: text.into(),
            html: None,
            attachments: vec![],
            automatic: false,
            replies_to: vec![],
            ticket_number: None,
            quoted: None,
            raw: None,
            delivery_failure: None,
        }
    }
}

impl OutboundMessage {
    /// The first recipient address of that identity kind (`email`, `phone`, `telegram`, ...).
    pub fn recipient(&self, kind: &str) -> Option<&str> {
        self.recipients.iter().find(|r| r.kind == kind).map(|r| r.address.as_str())
    }
}

impl SendError {
    /// The error for an HTTP status a channel's API answered: 408, 429 and 5xx are worth
    /// retrying, other statuses are not.
    pub fn from_status(status: u16, detail: &str) -> Self {
        let message = format!("the channel's API answered {status}: {detail}");
        if status == 408 || status == 429 || status >= 500 {
            SendError::Retryable(message)
        } else {
            SendError::Permanent(message)
        }
    }
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// A message naming what is wrong with the JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("answer is not the expected JSON: {e}"))
    }

    /// True for 2xx statuses.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl WebhookRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`PluginError::Invalid`] naming what is wrong with the JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| PluginError::Invalid(format!("body is not the expected JSON: {e}")))
    }

    /// The body parsed as `application/x-www-form-urlencoded` pairs.
    ///
    /// # Errors
    /// [`PluginError::Invalid`] when the body is not UTF-8 or a `%` escape is broken.
    pub fn form(&self) -> Result<Vec<(String, String)>, PluginError> {
        let text =
            std::str::from_utf8(&self.body).map_err(|_| PluginError::Invalid("form body is not UTF-8".into()))?;
        parse_form(text)
    }
}

fn percent_decode(s: &str) -> Result<String, PluginError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(hex.ok_or_else(|| PluginError::Invalid(format!("broken %-escape in {s:?}")))?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PluginError::Invalid("form value is not UTF-8".into()))
}

/// The host functions a plugin may call.
pub mod host {
    use crate::bindings::plugdesk::plugin::host as raw;

    /// Writes a line to the server log, tagged with the plugin and channel instance.
    pub fn info(message: &str) {
        raw::log(raw::Level::Info, message);
    }

    /// Writes a warning to the server log.
    pub fn warn(message: &str) {
        raw::log(raw::Level::Warn, message);
    }

    /// Milliseconds since the Unix epoch, from the host's clock.
    pub fn now_ms() -> i64 {
        raw::now_ms()
    }

    /// A setting of the channel instance, parsed into `T`; `None` when unset or not a `T`.
    pub fn setting<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        raw::setting(key).and_then(|json| serde_json::from_str(&json).ok())
    }

    /// Compares `candidate` with a secret of the instance in constant time. The secret itself
    /// never enters the plugin.
    ///
    /// # Errors
    /// When the `secrets` capability is not granted or the secret is not set.
    pub fn secret_equals(name: &str, candidate: &str) -> Result<bool, String> {
        raw::secret_equals(name, candidate)
    }

    /// HMAC-SHA256 of `data` keyed with a secret of the instance (for signature checks).
    ///
    /// # Errors
    /// When the `secrets` capability is not granted or the secret is not set.
    pub fn secret_hmac_sha256(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        raw::secret_hmac_sha256(name, data)
    }

    /// HMAC-SHA1 of `data` keyed with a secret of the instance, for channels whose signatures
    /// still use SHA-1.
    ///
    /// # Errors
    /// When the `secrets` capability is not granted or the secret is not set.
    pub fn secret_hmac_sha1(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
        raw::secret_hmac_sha1(name, data)
    }

    /// Reads the instance's key-value store.
    ///
    /// # Errors
    /// When the `kv` capability is not granted.
    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, String> {
        raw::kv_get(key)
    }

    /// Writes the instance's key-value store (keys ≤ 256 bytes, values ≤ 64 KiB).
    ///
    /// # Errors
    /// When the `kv` capability is not granted or a limit is exceeded.
    pub fn kv_set(key: &str, value: &[u8]) -> Result<(), String> {
        raw::kv_set(key, value)
    }

    /// Makes an HTTP request through the host. The URL's host must be granted to the instance
    /// (`http:HOST` or `http:HOST:PORT`).
    ///
    /// # Errors
    /// When the host is not granted, cannot be reached, or answers too slowly or too much.
    pub fn http_fetch(request: &crate::HttpRequest) -> Result<crate::HttpResponse, String> {
        raw::http_fetch(request)
    }

    /// A TCP connection through the host (capability `tcp:HOST:PORT`); closed when dropped or
    /// when the call ends.
    pub struct TcpConnection(u32);

    impl TcpConnection {
        /// Connects to `host:port`; with `tls`, the host does the TLS handshake.
        ///
        /// # Errors
        /// When the address is not granted, cannot be reached, or the handshake fails.
        pub fn connect(host: &str, port: u16, tls: bool) -> Result<Self, String> {
            raw::tcp_connect(host, port, tls).map(TcpConnection)
        }

        /// Switches to TLS (STARTTLS).
        ///
        /// # Errors
        /// When the handshake fails.
        pub fn start_tls(&self) -> Result<(), String> {
            raw::tcp_start_tls(self.0)
        }

        /// Writes all of `data`.
        ///
        /// # Errors
        /// When the connection failed.
        pub fn write(&self, data: &[u8]) -> Result<(), String> {
            raw::tcp_write(self.0, data)
        }

        /// Writes `template` with `{{secret:NAME}}`, `{{secret_base64:NAME}}` and
        /// `{{secret_quoted:NAME}}` filled in by the host (capability `secrets`), e.g.
        /// `a1 LOGIN support {{secret_quoted:password}}\r\n`: the plugin never holds the secret.
        ///
        /// # Errors
        /// When `secrets` is not granted, a secret is not set, or the connection failed.
        pub fn write_with_secrets(&self, template: &str) -> Result<(), String> {
            raw::tcp_write_secret(self.0, template)
        }

        /// Reads up to `max` bytes, waiting at most `timeout_ms`; empty means the peer closed.
        ///
        /// # Errors
        /// On a timeout or a failed connection.
        pub fn read(&self, max: u32, timeout_ms: u32) -> Result<Vec<u8>, String> {
            raw::tcp_read(self.0, max, timeout_ms)
        }
    }

    impl Drop for TcpConnection {
        fn drop(&mut self) {
            raw::tcp_close(self.0);
        }
    }

    /// POSTs a JSON body and returns the answer (any status).
    ///
    /// # Errors
    /// As [`http_fetch`].
    pub fn post_json(url: &str, body: &serde_json::Value) -> Result<crate::HttpResponse, String> {
        http_fetch(&crate::HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![crate::Header { name: "content-type".into(), value: "application/json".into() }],
            body: body.to_string().into_bytes(),
        })
    }

    /// POSTs `application/x-www-form-urlencoded` pairs with extra headers and returns the
    /// answer (any status).
    ///
    /// # Errors
    /// As [`http_fetch`].
    pub fn post_form(
        url: &str,
        pairs: &[(&str, &str)],
        headers: Vec<crate::Header>,
    ) -> Result<crate::HttpResponse, String> {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", crate::percent_encode(k), crate::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = headers;
        headers.push(crate::Header { name: "content-type".into(), value: "application/x-www-form-urlencoded".into() });
        http_fetch(&crate::HttpRequest { method: "POST".into(), url: url.into(), headers, body: body.into_bytes() })
    }
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`: space as `+`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Parses `application/x-www-form-urlencoded` text into pairs.
///
/// # Errors
/// [`PluginError::Invalid`] when a `%` escape is broken or a value is not UTF-8.
pub fn parse_form(text: &str) -> Result<Vec<(String, String)>, PluginError> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Reports a panic through the host log (the standard hook would read the environment, which
/// the sandbox does not provide); the host names the message when it reports the crash.
#[doc(hidden)]
pub fn __install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            bindings::plugdesk::plugin::host::log(
                bindings::plugdesk::plugin::host::Level::Error,
                &format!("panic: {info}"),
            );
        }));
    });
}

/// Exports a [`Channel`] implementation as the plugin's entry points.
#[cfg(feature = "channel")]
#[macro_export]
macro_rules! export_channel {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __PlugdeskExport;

        impl $crate::channel_bindings::exports::plugdesk::plugin::channel::Guest for __PlugdeskExport {
            fn describe() -> $crate::Descriptor {
                $crate::__install_panic_hook();
                <$plugin as $crate::Channel>::describe()
            }

            fn handle_webhook(request: $crate::WebhookRequest) -> Result<$crate::WebhookOutcome, $crate::PluginError> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Channel>::handle_webhook(request)
            }

            fn poll(cursor: Option<String>) -> Result<$crate::PollOutcome, $crate::PluginError> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Channel>::poll(cursor)
            }

            fn send(message: $crate::OutboundMessage) -> Result<String, $crate::SendError> {
                $crate::__install_panic_hook();
                <$plugin as $crate::Channel>::send(message)
            }
        }

        $crate::channel_bindings::__export_channel_plugin!(__PlugdeskExport with_types_in $crate::channel_bindings);
    };
}
