//! The `webform` channel: a contact form a business embeds on its site. The form posts JSON or
//! an ordinary HTML form (`application/x-www-form-urlencoded`) to the channel's webhook,
//! `POST /hooks/{instance}`. A hidden honeypot field (`website`) that a person leaves empty and
//! a bot fills in drops the submission silently.
//!
//! The HTML to embed:
//!
//! ```html
//! <form method="post" action="https://helpdesk.example.com/hooks/CHANNEL_ID">
//!   <input name="name" placeholder="Your name">
//!   <input name="email" type="email" required>
//!   <input name="subject">
//!   <textarea name="message" required></textarea>
//!   <input name="website" style="display:none" tabindex="-1" autocomplete="off">
//!   <button>Send</button>
//! </form>
//! ```

use plugdesk_sdk::{Channel, Descriptor, InboundMessage, PluginError, WebhookOutcome, WebhookReply, WebhookRequest};

/// Longest accepted field, in bytes: a contact form is not a file upload.
const MAX_FIELD: usize = 64 * 1024;

struct Webform;

#[derive(Default, serde::Deserialize)]
struct Submission {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    message: String,
    /// The honeypot.
    #[serde(default)]
    website: String,
}

impl Submission {
    fn from_request(request: &WebhookRequest) -> Result<Self, PluginError> {
        let content_type = request.header("content-type").unwrap_or("").to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            return request.json();
        }
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let mut s = Submission::default();
            for (k, v) in request.form()? {
                match k.as_str() {
                    "name" => s.name = v,
                    "email" => s.email = v,
                    "subject" => s.subject = v,
                    "message" => s.message = v,
                    "website" => s.website = v,
                    _ => {}
                }
            }
            return Ok(s);
        }
        Err(PluginError::Invalid(format!(
            "send the form as application/json or application/x-www-form-urlencoded, not {content_type:?}"
        )))
    }
}

/// FNV-1a: a stable id for a submission, so a double-clicked "Send" makes one ticket.
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("webform-{h:016x}")
}

fn reply(accepted: usize, thank_you: &str) -> WebhookReply {
    let body = serde_json::json!({ "accepted": accepted, "message": thank_you });
    WebhookReply { status: 200, content_type: "application/json".into(), body: body.to_string().into_bytes() }
}

impl Channel for Webform {
    fn describe() -> Descriptor {
        Descriptor {
            settings_schema: serde_json::json!({
                "type": "object",
                "properties": {
                    "thank_you": { "type": "string", "description": "What the sender sees after sending" },
                    "default_subject": { "type": "string", "description": "Subject when the form has none" }
                },
                "additionalProperties": false
            })
            .to_string(),
            ..plugdesk_sdk::descriptor("webform", "Contact form", env!("CARGO_PKG_VERSION"), "webform")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        if request.method != "POST" {
            return Err(PluginError::Invalid(format!("the form posts with POST, not {}", request.method)));
        }
        let thank_you: String =
            plugdesk_sdk::host::setting("thank_you").unwrap_or_else(|| "Thank you, we will get back to you.".into());
        let s = Submission::from_request(&request)?;
        if !s.website.is_empty() {
            plugdesk_sdk::host::info("honeypot filled in: submission dropped");
            return Ok(WebhookOutcome { messages: vec![], reply: Some(reply(0, &thank_you)) });
        }
        for (field, value) in [("name", &s.name), ("email", &s.email), ("subject", &s.subject), ("message", &s.message)]
        {
            if value.len() > MAX_FIELD {
                return Err(PluginError::Invalid(format!("{field} is longer than {MAX_FIELD} bytes")));
            }
        }
        let email = s.email.trim();
        if !email.contains('@') {
            return Err(PluginError::Invalid(format!("email {email:?} is not an e-mail address")));
        }
        if s.message.trim().is_empty() {
            return Err(PluginError::Invalid("message is empty".into()));
        }
        let subject = match s.subject.trim() {
            "" => plugdesk_sdk::host::setting("default_subject").unwrap_or_else(|| "Contact form".to_string()),
            given => given.to_string(),
        };
        let mut message = InboundMessage::new(fingerprint(&request.body), "email", email, s.message.trim());
        message.subject = Some(subject);
        message.sender_name = Some(s.name.trim().to_string()).filter(|n| !n.is_empty());
        Ok(WebhookOutcome { messages: vec![message], reply: Some(reply(1, &thank_you)) })
    }
}

plugdesk_sdk::export_channel!(Webform);
