//! A plugin that misbehaves on purpose; the request path says how. The end-to-end tests
//! install it and check that the host stops it, reports it, and goes on serving.

use plugdesk_sdk::{Channel, Descriptor, InboundMessage, PluginError, WebhookOutcome, WebhookReply, WebhookRequest};

struct Hostile;

fn answer(body: String) -> Result<WebhookOutcome, PluginError> {
    Ok(WebhookOutcome {
        messages: vec![],
        reply: Some(WebhookReply { status: 200, content_type: "text/plain".into(), body: body.into_bytes() }),
    })
}

impl Channel for Hostile {
    fn describe() -> Descriptor {
        Descriptor {
            capabilities: vec!["kv".into(), "secrets".into(), "http".into()],
            ..plugdesk_sdk::descriptor("hostile", "Hostile test plugin", "0.1.0", "hostile")
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        match request.path.as_str() {
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/trap" => panic!("the hostile plugin panics on purpose"),
            "/big" => {
                let text = "x".repeat(30 << 20);
                Ok(WebhookOutcome { messages: vec![InboundMessage::new("big", "email", "big@example.com", text)], reply: None })
            }
            "/secret" => match plugdesk_sdk::host::secret_equals("token", "guess") {
                Ok(same) => answer(format!("secret matches: {same}")),
                Err(e) => Err(PluginError::Invalid(e)),
            },
            "/kv-set" => match plugdesk_sdk::host::kv_set("shared", &request.body) {
                Ok(()) => answer("stored".into()),
                Err(e) => Err(PluginError::Invalid(e)),
            },
            "/kv-get" => match plugdesk_sdk::host::kv_get("shared") {
                Ok(v) => answer(format!("value: {:?}", v.map(|v| String::from_utf8_lossy(&v).into_owned()))),
                Err(e) => Err(PluginError::Invalid(e)),
            },
            // An HTTP request to a server that never answers: the host cuts it at the call's time.
            "/hang" => {
                let port = request.query.strip_prefix("port=").unwrap_or("9");
                let asked = plugdesk_sdk::HttpRequest {
                    method: "GET".into(),
                    url: format!("http://127.0.0.1:{port}/"),
                    headers: vec![],
                    body: vec![],
                };
                match plugdesk_sdk::host::http_fetch(&asked) {
                    Ok(r) => answer(format!("answered {}", r.status)),
                    Err(e) => Err(PluginError::Invalid(e)),
                }
            }
            "/kv-huge" => match plugdesk_sdk::host::kv_set("huge", &vec![7u8; 65 * 1024]) {
                Ok(()) => answer("stored a 65 KiB value".into()),
                Err(e) => Err(PluginError::Invalid(e)),
            },
            // 200 keys a call (a call has 2 s), numbered from the query's `from`.
            "/kv-fill" => {
                let from: u32 = request.query.strip_prefix("from=").and_then(|n| n.parse().ok()).unwrap_or(0);
                for i in from..from + 200 {
                    if let Err(e) = plugdesk_sdk::host::kv_set(&format!("key-{i}"), b"x") {
                        return Err(PluginError::Invalid(format!("after {i} keys: {e}")));
                    }
                }
                answer(format!("stored keys {from}..{}", from + 200))
            }
            other => answer(format!("fine: {other}")),
        }
    }
}

plugdesk_sdk::export_channel!(Hostile);
