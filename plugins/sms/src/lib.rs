//! The `sms` channel: text messages through an SMS gateway that speaks Twilio's Programmable
//! Messaging API (Twilio itself, or a gateway compatible with it). Each customer's phone number
//! is a conversation, so their messages land on their open ticket, and agents' replies go back
//! to the number as SMS.
//!
//! The gateway posts every incoming SMS to `POST /hooks/{channel}` as a form, signed in the
//! `X-Twilio-Signature` header with the account's Auth Token; the channel checks that signature
//! and answers with empty TwiML, so the gateway sends nothing back by itself. Replies go out
//! through `POST /2010-04-01/Accounts/{account_sid}/Messages.json`.
//!
//! # Settings
//!
//! - `public_url` (required): the exact URL the gateway posts to, as configured there, e.g.
//!   `https://helpdesk.example.com/hooks/CHANNEL_ID`. The signature covers it, so scheme, host,
//!   port and path must match what the gateway calls, character for character.
//! - `account_sid` (needed to send): the Account SID, `AC…`.
//! - `from` (needed to send): the number replies come from, in E.164 form (`+15005550006`).
//! - `api_base`: the gateway's API base URL, `https://api.twilio.com` by default.
//!
//! # Secrets
//!
//! - `auth_token`: the account's Auth Token, which signs the incoming webhooks.
//! - `basic_auth`: `ACCOUNT_SID:AUTH_TOKEN`, for HTTP Basic authentication of the replies (the
//!   host base64-encodes it into the `Authorization` header; it never enters the plugin). An API
//!   key works too: `API_KEY_SID:API_KEY_SECRET`.
//!
//! # Grants
//!
//! `secrets`, and `http:api.twilio.com` (or `http:HOST:PORT` of `api_base`).
//!
//! # Setting up
//!
//! 1. Install the channel:
//!    ```json
//!    {"plugin": "sms",
//!     "settings": {"public_url": "https://helpdesk.example.com/hooks/CHANNEL_ID",
//!                  "account_sid": "AC…", "from": "+15005550006"},
//!     "secrets": {"auth_token": "…", "basic_auth": "AC…:…"},
//!     "grants": ["secrets", "http:api.twilio.com"]}
//!    ```
//!    The channel's id is only known once it exists: set `public_url` with a second request.
//! 2. In the Twilio console, open the number (Phone Numbers → Active numbers) and under
//!    Messaging configuration set "A message comes in" to Webhook, the `public_url`, HTTP POST.
//!
//! # Limits
//!
//! Replies are text only (attachments are left out, with a warning in the log) and at most
//! 1600 characters, the gateway's limit: longer ones are cut and end in `...`. Media a customer
//! sends shows as lines `[media: image/jpeg] URL`. Delivery status callbacks posted to the same
//! URL are accepted and ignored.

use plugdesk_sdk::{
    Channel, Descriptor, Header, InboundMessage, OutboundMessage, PluginError, SendError, WebhookOutcome, WebhookReply,
    WebhookRequest, host,
};
use serde::Deserialize;

/// Where the API lives unless the `api_base` setting says otherwise.
const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Longest webhook body accepted, in bytes: an SMS is at most 1600 characters, and the rest of
/// the form (numbers, ids, ten media URLs) a few KiB.
const MAX_BODY: usize = 64 * 1024;

/// Most media items read from one message; Twilio delivers at most 10.
const MAX_MEDIA: usize = 10;

/// Longest sender name (WhatsApp's `ProfileName`) or media field, in bytes.
const MAX_FIELD: usize = 1024;

/// The gateway's cap on a message body, in characters.
const MAX_SMS: usize = 1600;

/// Empty TwiML: the gateway sends no automatic answer to the customer.
const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

struct Sms;

/// The answer to a message created: `{"sid": "SM…", "status": "queued", …}`.
#[derive(Deserialize)]
struct Created {
    sid: String,
}

/// An error answer: `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
#[derive(Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
    status: Option<u16>,
}

/// A setting as a non-empty, trimmed string.
fn text_setting(key: &str) -> Option<String> {
    host::setting::<String>(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
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

/// Standard base64 with padding (RFC 4648, section 4), the form of Twilio's signature.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            // A chunk of k bytes makes k + 1 characters; `=` pads to four.
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Compares two strings in time that depends on their length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the gateway signs: the URL it requested, then every POST parameter's name and value,
/// sorted by name (byte order; by value among equal names) and joined with no separators. The
/// URL is `public_url` with the request's own query string, if it had one.
fn signed_data(public_url: &str, query: &str, params: &[(String, String)]) -> String {
    let mut data = public_url.split_once('?').map_or(public_url, |(base, _)| base).to_string();
    if !query.is_empty() {
        data.push('?');
        data.push_str(query);
    }
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    data
}

/// Checks the `X-Twilio-Signature` header.
fn authenticate(request: &WebhookRequest, params: &[(String, String)]) -> Result<(), PluginError> {
    let signature = request.header("x-twilio-signature").ok_or_else(|| {
        PluginError::Rejected(
            "no X-Twilio-Signature header: only the SMS gateway may post here, signing with the account's Auth Token"
                .into(),
        )
    })?;
    let public_url = text_setting("public_url").ok_or_else(|| {
        PluginError::Rejected(
            "the public_url setting is not set, so the signature cannot be checked: set it to the exact webhook URL \
             configured at the gateway"
                .into(),
        )
    })?;
    let data = signed_data(&public_url, &request.query, params);
    let mac = host::secret_hmac_sha1("auth_token", data.as_bytes())
        .map_err(|e| PluginError::Rejected(format!("cannot check the X-Twilio-Signature header: {e}")))?;
    if !constant_time_eq(base64(&mac).as_bytes(), signature.trim().as_bytes()) {
        return Err(PluginError::Rejected(
            "the X-Twilio-Signature header does not match: check that public_url is exactly the webhook URL configured \
             at the gateway and that auth_token is the account's current Auth Token"
                .into(),
        ));
    }
    Ok(())
}

/// The first value of a form field.
fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A required form field, non-empty.
fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, PluginError> {
    field(params, name).map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
        PluginError::Invalid(format!("the form has no {name}: the gateway must post its incoming-message webhook here"))
    })
}

/// The message's text: the body, then one line per media item.
fn text_of(params: &[(String, String)]) -> String {
    let mut text = field(params, "Body").unwrap_or("").to_string();
    let media = field(params, "NumMedia").and_then(|n| n.trim().parse::<usize>().ok()).unwrap_or(0);
    for i in 0..media.min(MAX_MEDIA) {
        let Some(url) = field(params, &format!("MediaUrl{i}")) else { continue };
        let content_type = field(params, &format!("MediaContentType{i}")).unwrap_or("application/octet-stream");
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!("[media: {}] {}", truncate(content_type, MAX_FIELD), truncate(url, MAX_FIELD)));
    }
    text
}

fn twiml_reply() -> WebhookReply {
    WebhookReply { status: 200, content_type: "text/xml".into(), body: EMPTY_TWIML.as_bytes().to_vec() }
}

/// `text` cut to the gateway's limit, marked with `...` when cut.
fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_SMS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_SMS - 3).collect();
    short.push_str("...");
    short
}

/// The error for a failed answer: the gateway's status, code and message when it sent them.
fn failure(status: u16, body: &[u8]) -> SendError {
    let error = serde_json::from_slice::<ApiError>(body).ok();
    let status = error.as_ref().and_then(|e| e.status).unwrap_or(status);
    let mut detail = match error {
        Some(ApiError { code: Some(code), message, .. }) => {
            format!("code {code}: {}", message.as_deref().unwrap_or("no message"))
        }
        Some(ApiError { code: None, message: Some(message), .. }) => message,
        _ => truncate(String::from_utf8_lossy(body).trim(), 200),
    };
    if status == 401 {
        detail.push_str(" (check the basic_auth secret: ACCOUNT_SID:AUTH_TOKEN)");
    }
    SendError::from_status(status, &detail)
}

impl Channel for Sms {
    fn describe() -> Descriptor {
        Descriptor {
            settings_schema: serde_json::json!({
                "type": "object",
                "description": "Secrets: auth_token (the account's Auth Token, which signs webhooks) and basic_auth \
                                (ACCOUNT_SID:AUTH_TOKEN, for sending). Grants: secrets, http:api.twilio.com.",
                "properties": {
                    "public_url": {
                        "type": "string",
                        "format": "uri",
                        "description": "The exact URL the gateway posts incoming messages to, as configured there; \
                                        the signature covers it"
                    },
                    "account_sid": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9]+$",
                        "description": "Account SID (AC…); needed to send"
                    },
                    "from": {
                        "type": "string",
                        "pattern": "^\\+[1-9][0-9]{1,14}$",
                        "description": "The number replies are sent from, in E.164 form (+15005550006); needed to send"
                    },
                    "api_base": {
                        "type": "string",
                        "format": "uri",
                        "default": DEFAULT_API_BASE,
                        "description": "Base URL of the gateway's API"
                    }
                },
                "required": ["public_url"],
                "additionalProperties": false
            })
            .to_string(),
            capabilities: vec!["secrets".into(), "http".into()],
            sends: true,
            ..plugdesk_sdk::descriptor("sms", "SMS", env!("CARGO_PKG_VERSION"), "sms")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        if request.method != "POST" {
            return Err(PluginError::Invalid(format!("the gateway posts messages with POST, not {}", request.method)));
        }
        if request.body.len() > MAX_BODY {
            return Err(PluginError::Invalid(format!("the form is larger than {MAX_BODY} bytes")));
        }
        let content_type = request.header("content-type").unwrap_or("").to_ascii_lowercase();
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(PluginError::Invalid(format!(
                "the gateway posts application/x-www-form-urlencoded, not {content_type:?}"
            )));
        }
        let params = request.form()?;
        authenticate(&request, &params)?;
        // A delivery report for a reply, if the status callback points here too: incoming
        // messages carry no MessageStatus, or `received`.
        if field(&params, "MessageStatus").is_some_and(|status| status != "received") {
            return Ok(WebhookOutcome { messages: vec![], reply: Some(twiml_reply()) });
        }
        let sid = required(&params, "MessageSid")?;
        let from = required(&params, "From")?;
        let mut message = InboundMessage::new(sid, "phone", from, text_of(&params));
        message.conversation = Some(from.to_string());
        message.sender_name =
            field(&params, "ProfileName").map(str::trim).filter(|n| !n.is_empty()).map(|n| truncate(n, MAX_FIELD));
        Ok(WebhookOutcome { messages: vec![message], reply: Some(twiml_reply()) })
    }

    fn send(message: OutboundMessage) -> Result<String, SendError> {
        // The conversation is the number the customer texted from; a phone number on the
        // customer's record may be another one (a landline, an old number).
        let to = message
            .conversation
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .or_else(|| message.recipient("phone"))
            .map(str::trim)
            .filter(|to| !to.is_empty())
            .ok_or_else(|| SendError::Permanent("no phone number for this customer".into()))?;
        let account_sid = text_setting("account_sid").ok_or_else(|| {
            SendError::Permanent("the account_sid setting is not set: set it to the Account SID (AC…) to send".into())
        })?;
        if !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SendError::Permanent(format!(
                "the account_sid setting {account_sid:?} is not an Account SID: use the AC… value from the console"
            )));
        }
        let from = text_setting("from").ok_or_else(|| {
            SendError::Permanent("the from setting is not set: set it to the sending number, like +15005550006".into())
        })?;
        if message.text.trim().is_empty() {
            return Err(SendError::Permanent("the reply has no text, and an SMS needs some".into()));
        }
        if !message.attachments.is_empty() {
            host::warn(&format!("reply {}: attachments are not sent by SMS, only the text", message.id));
        }
        let api_base = text_setting("api_base").unwrap_or_else(|| DEFAULT_API_BASE.into());
        let url = format!("{}/2010-04-01/Accounts/{account_sid}/Messages.json", api_base.trim_end_matches('/'));
        let body = shorten(&message.text);
        let authorization = Header { name: "authorization".into(), value: "Basic {{secret_base64:basic_auth}}".into() };
        let response = host::post_form(&url, &[("To", to), ("From", &from), ("Body", &body)], vec![authorization])
            .map_err(|e| SendError::Retryable(format!("could not reach the SMS gateway: {e}")))?;
        if !response.is_success() {
            return Err(failure(response.status, &response.body));
        }
        // Retrying could send the message twice.
        response.json::<Created>().map(|created| created.sid).map_err(|e| {
            SendError::Permanent(format!(
                "the gateway answered {} without a message sid ({e}); the message may have been sent, so it is not \
                 retried",
                response.status
            ))
        })
    }
}

plugdesk_sdk::export_channel!(Sms);

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn signed_data_is_the_url_then_sorted_names_and_values() {
        // Twilio's documented example.
        let params = pairs(&[
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Digits", "1234"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(
            signed_data("https://example.com/myapp.php?ignored=1", "foo=1&bar=2", &params),
            "https://example.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675310Digits1234\
             From+14158675310To+18005551212"
        );
        assert_eq!(signed_data("https://h/hooks/1", "", &pairs(&[("b", "2"), ("B", "1")])), "https://h/hooks/1B1b2");
    }

    #[test]
    fn media_become_lines_after_the_body() {
        let params = pairs(&[
            ("Body", "see"),
            ("NumMedia", "2"),
            ("MediaUrl0", "https://m/0"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://m/1"),
        ]);
        assert_eq!(
            text_of(&params),
            "see\n[media: image/jpeg] https://m/0\n[media: application/octet-stream] https://m/1"
        );
    }

    #[test]
    fn long_replies_are_cut_to_1600_characters() {
        assert_eq!(shorten("hi"), "hi");
        let long = "é".repeat(2000);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 1600);
        assert!(short.ends_with("é..."));
    }

    #[test]
    fn errors_name_the_code_and_retry_only_passing_failures() {
        let bad = br#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#;
        match failure(400, bad) {
            SendError::Permanent(m) => assert!(m.contains("code 21211: The 'To' number"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(failure(503, b"<html>busy</html>"), SendError::Retryable(_)));
    }
}
