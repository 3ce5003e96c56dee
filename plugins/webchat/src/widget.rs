//! The widget a site embeds (`widget.js`), its settings, and the demo page that shows it.

use plugdesk_sdk::{WebhookReply, host};
use serde::Serialize;

/// The widget's source; `/*@config*/null` in it becomes the settings.
const SCRIPT: &str = include_str!("widget.js");
const CONFIG_SLOT: &str = "/*@config*/null";
/// A page that embeds the widget from the channel it is served by.
const DEMO: &str = include_str!("demo.html");

const DEFAULT_TITLE: &str = "Chat with us";
const DEFAULT_GREETING: &str = "Hi! How can we help you?";
const DEFAULT_COLOR: &str = "#2563eb";
/// Longest title and greeting, in characters: a heading and a line, not a page.
const MAX_TITLE: usize = 80;
const MAX_GREETING: usize = 500;

/// The settings as the widget reads them.
#[derive(Debug, Serialize)]
pub(crate) struct Config {
    pub(crate) title: String,
    pub(crate) greeting: String,
    pub(crate) color: String,
    pub(crate) ask_email: bool,
}

/// `#rgb` or `#rrggbb`: the only colours let through, so a setting cannot smuggle in CSS.
fn is_color(s: &str) -> bool {
    (s.len() == 4 || s.len() == 7) && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Config {
    /// The channel instance's settings, with defaults for what is unset or unusable.
    pub(crate) fn from_settings() -> Config {
        let text = |key: &str, default: &str, max: usize| {
            let value: String = host::setting::<String>(key).unwrap_or_else(|| default.into());
            value.trim().chars().take(max).collect::<String>()
        };
        let color = match host::setting::<String>("color") {
            Some(c) if is_color(c.trim()) => c.trim().to_string(),
            Some(c) => {
                host::warn(&format!("setting color {c:?} is not #rgb or #rrggbb; using {DEFAULT_COLOR}"));
                DEFAULT_COLOR.into()
            }
            None => DEFAULT_COLOR.into(),
        };
        Config {
            title: Some(text("title", DEFAULT_TITLE, MAX_TITLE))
                .filter(|t| !t.is_empty())
                .unwrap_or(DEFAULT_TITLE.into()),
            greeting: text("greeting", DEFAULT_GREETING, MAX_GREETING),
            color,
            ask_email: host::setting("ask_email").unwrap_or(true),
        }
    }

    /// The settings as a JavaScript expression. JSON is one, and with `<`, `>`, `&`, U+2028
    /// and U+2029 escaped (they can only occur inside strings) it stays one even if someone
    /// pastes the script inline into HTML.
    fn to_js(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|_| "null".into());
        json.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
    }
}

/// The JSON Schema of the settings.
pub(crate) fn settings_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "title": {
                "type": "string", "maxLength": MAX_TITLE, "default": DEFAULT_TITLE,
                "description": "Heading of the chat panel and label of the chat button"
            },
            "greeting": {
                "type": "string", "maxLength": MAX_GREETING, "default": DEFAULT_GREETING,
                "description": "The first line the chat shows, as if from you; empty for none"
            },
            "color": {
                "type": "string", "pattern": "^#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$", "default": DEFAULT_COLOR,
                "description": "Colour of the chat button and the visitor's messages, #rgb or #rrggbb"
            },
            "ask_email": {
                "type": "boolean", "default": true,
                "description": "Ask for a name and an e-mail address (both optional) before the first message"
            }
        },
        "additionalProperties": false
    })
}

fn reply(content_type: &str, body: String) -> WebhookReply {
    WebhookReply { status: 200, content_type: content_type.into(), body: body.into_bytes() }
}

/// `GET /widget.js`.
pub(crate) fn script_reply(config: &Config) -> WebhookReply {
    reply("application/javascript; charset=utf-8", SCRIPT.replacen(CONFIG_SLOT, &config.to_js(), 1))
}

/// `GET /` and `GET /demo`.
pub(crate) fn demo_reply() -> WebhookReply {
    reply("text/html; charset=utf-8", DEMO.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(title: &str) -> Config {
        Config { title: title.into(), greeting: "Hi\u{2028}there".into(), color: "#abc".into(), ask_email: false }
    }

    #[test]
    fn the_script_has_one_config_slot() {
        assert_eq!(SCRIPT.matches(CONFIG_SLOT).count(), 1);
        let body = String::from_utf8(script_reply(&config("Help")).body).unwrap();
        assert!(body.contains(r##"{"title":"Help","greeting":"Hi\u2028there","color":"#abc","ask_email":false}"##));
        assert!(!body.contains(CONFIG_SLOT));
    }

    #[test]
    fn settings_cannot_break_out_of_the_script() {
        let js = config("</script><script>alert(1)</script>\"; alert(2); \"").to_js();
        assert!(!js.contains('<') && !js.contains('>'), "{js}");
        let back: serde_json::Value = serde_json::from_str(&js).unwrap();
        assert_eq!(back["title"], "</script><script>alert(1)</script>\"; alert(2); \"");
    }

    #[test]
    fn only_hex_colours_pass() {
        for ok in ["#abc", "#A1b2C3"] {
            assert!(is_color(ok), "{ok}");
        }
        for bad in ["red", "#abcd", "#ggg", "#abc;x", "abc", "#12345", "", "url(x)"] {
            assert!(!is_color(bad), "{bad}");
        }
    }
}
