//! A test channel: `POST /hooks/{id}` with `{"id", "from", "text", "conversation"}` brings a
//! message; `send` posts replies as JSON to the `sink` setting's URL with
//! `authorization: Bearer {{secret:token}}`; `poll` reads `{feed}?after={cursor}`. Version 0.2.0
//! (feature `v2`) marks the messages it parses with ` [v2]`. With feature `impostor` it calls
//! itself `webform` 0.9.9 — what a workspace admin would upload to take over the bundled form
//! channel — and marks messages ` [impostor]`.

use plugdesk_sdk::{
    Channel, Descriptor, InboundMessage, OutboundMessage, PluginError, PollOutcome, SendError, WebhookOutcome,
    WebhookReply, WebhookRequest,
};

struct Relay;

const VERSION: &str = if cfg!(feature = "impostor") {
    "0.9.9"
} else if cfg!(feature = "v2") {
    "0.2.0"
} else {
    "0.1.0"
};
const ID: &str = if cfg!(feature = "impostor") { "webform" } else { "relay" };

#[derive(serde::Deserialize)]
struct Item {
    id: String,
    from: String,
    text: String,
    #[serde(default)]
    conversation: Option<String>,
}

fn message(item: Item) -> InboundMessage {
    let text = if cfg!(feature = "impostor") {
        format!("{} [impostor]", item.text)
    } else if cfg!(feature = "v2") {
        format!("{} [v2]", item.text)
    } else {
        item.text
    };
    let mut m = InboundMessage::new(item.id, "relay", &item.from, text);
    m.conversation = item.conversation.or(Some(item.from));
    m
}

fn text_reply(body: &str) -> WebhookReply {
    WebhookReply { status: 200, content_type: "text/plain".into(), body: body.as_bytes().to_vec() }
}

impl Channel for Relay {
    fn describe() -> Descriptor {
        Descriptor {
            capabilities: vec!["secrets".into(), "http".into(), "tcp".into()],
            sends: true,
            polls: true,
            ..plugdesk_sdk::descriptor(ID, "Relay test channel", VERSION, "relay")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/version") => Ok(WebhookOutcome { messages: vec![], reply: Some(text_reply(VERSION)) }),
            // `?port=N&tls=0|1[&say=LINE][&secret=1]`: says LINE (default PING) to 127.0.0.1:N —
            // with the host filling in secret placeholders when `secret=1` — and answers what
            // came back.
            ("GET", "/tcp") => {
                let mut port = 0u16;
                let mut tls = false;
                let mut say = "PING".to_owned();
                let mut secret = false;
                for (k, v) in plugdesk_sdk::parse_form(&request.query)? {
                    match k.as_str() {
                        "port" => port = v.parse().map_err(|_| PluginError::Invalid("bad port".into()))?,
                        "tls" => tls = v == "1",
                        "say" => say = v,
                        "secret" => secret = v == "1",
                        _ => {}
                    }
                }
                let line = format!("{say}\r\n");
                let said = plugdesk_sdk::host::TcpConnection::connect("127.0.0.1", port, tls)
                    .and_then(|c| {
                        if secret { c.write_with_secrets(&line)? } else { c.write(line.as_bytes())? }
                        c.read(200, 2000)
                    })
                    .map_err(PluginError::Invalid)?;
                Ok(WebhookOutcome { messages: vec![], reply: Some(text_reply(&String::from_utf8_lossy(&said))) })
            }
            // Messages from a GET are refused by the host: GETs are not stored first.
            ("GET", "/sneaky") => Ok(WebhookOutcome {
                messages: vec![InboundMessage::new("sneaky", "relay", "sneaky", "from a GET")],
                reply: None,
            }),
            ("POST", _) => Ok(WebhookOutcome { messages: vec![message(request.json()?)], reply: None }),
            (method, path) => Err(PluginError::Invalid(format!("no {method} {path} here"))),
        }
    }

    fn poll(cursor: Option<String>) -> Result<PollOutcome, PluginError> {
        let feed: String =
            plugdesk_sdk::host::setting("feed").ok_or_else(|| PluginError::Invalid("setting feed is missing".into()))?;
        let url = format!("{feed}?after={}", cursor.as_deref().unwrap_or("0"));
        let response = plugdesk_sdk::host::http_fetch(&plugdesk_sdk::HttpRequest {
            method: "GET".into(),
            url,
            headers: vec![],
            body: vec![],
        })
        .map_err(PluginError::Invalid)?;
        if !response.is_success() {
            return Err(PluginError::Invalid(format!("feed answered {}", response.status)));
        }
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<Item>,
            next: Option<String>,
            more: bool,
        }
        let page: Page = response.json().map_err(PluginError::Invalid)?;
        Ok(PollOutcome { messages: page.items.into_iter().map(message).collect(), cursor: page.next, more: page.more })
    }

    fn send(message: OutboundMessage) -> Result<String, SendError> {
        let sink: String =
            plugdesk_sdk::host::setting("sink").ok_or_else(|| SendError::Permanent("setting sink is missing".into()))?;
        let to = message
            .conversation
            .clone()
            .or_else(|| message.recipient("relay").map(str::to_owned))
            .ok_or_else(|| SendError::Permanent("no relay address for this customer".into()))?;
        let body = serde_json::json!({
            "id": message.id, "to": to, "text": message.text, "ticket": message.ticket_number,
            "in_reply_to": message.in_reply_to, "references": message.references, "automatic": message.automatic,
        });
        let response = plugdesk_sdk::host::http_fetch(&plugdesk_sdk::HttpRequest {
            method: "POST".into(),
            url: sink,
            headers: vec![
                plugdesk_sdk::Header { name: "content-type".into(), value: "application/json".into() },
                plugdesk_sdk::Header { name: "authorization".into(), value: "Bearer {{secret:token}}".into() },
            ],
            body: body.to_string().into_bytes(),
        })
        .map_err(SendError::Retryable)?;
        if !response.is_success() {
            return Err(SendError::from_status(response.status, &String::from_utf8_lossy(&response.body)));
        }
        #[derive(serde::Deserialize)]
        struct Delivered {
            delivery_id: String,
        }
        let d: Delivered = response.json().map_err(SendError::Permanent)?;
        Ok(d.delivery_id)
    }
}

plugdesk_sdk::export_channel!(Relay);
