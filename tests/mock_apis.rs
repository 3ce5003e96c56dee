//! Mocks of the remote APIs the channel plugins talk to — Telegram's Bot API and Twilio's
//! Programmable Messaging — speaking their wire formats on `127.0.0.1` and recording every
//! request, so a test can assert what a plugin sent. Each mock serves from a thread and a
//! runtime of its own, so a test that blocks (waiting on the server process, say) cannot stall
//! it; dropping the mock stops it.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// One request a mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method, upper-case.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Headers, names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as `application/x-www-form-urlencoded` pairs.
    pub fn form(&self) -> Vec<(String, String)> {
        form_decode(&self.text())
    }

    /// The first value of a form field of the body.
    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A message the Telegram mock accepted through `sendMessage`.
#[derive(Debug, Clone)]
pub struct TelegramSent {
    /// The id the mock gave it.
    pub message_id: i64,
    /// The request's JSON body (`chat_id`, `text`, `reply_parameters`, ...).
    pub request: Value,
}

/// A message the Twilio mock accepted.
#[derive(Debug, Clone)]
pub struct TwilioSent {
    /// The sid the mock gave it (`SM` and 32 hex digits).
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// `Body`.
    pub body: String,
}

/// A mock of the Telegram Bot API for one bot token: `POST /bot{token}/sendMessage` and
/// `GET /bot{token}/getUpdates`.
pub struct TelegramMock {
    /// Base URL, `http://127.0.0.1:PORT`: the plugin's `api_base`.
    pub base: String,
    state: Arc<Mutex<TelegramState>>,
    _server: Running,
}

struct TelegramState {
    token: String,
    requests: Vec<Recorded>,
    updates: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    sent: Vec<TelegramSent>,
    failures: Vec<u16>,
}

impl TelegramMock {
    /// Starts the mock; calls with another token in the path get 401.
    pub fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(TelegramState {
            token: token.to_owned(),
            requests: Vec::new(),
            updates: Vec::new(),
            next_update_id: 1,
            next_message_id: 1000,
            sent: Vec::new(),
            failures: Vec::new(),
        }));
        let server = Running::start(Router::new().fallback(telegram).with_state(state.clone()));
        TelegramMock { base: server.base.clone(), state, _server: server }
    }

    /// `127.0.0.1:PORT`, for the channel's `http:` grant.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// Queues an update for `getUpdates` and returns its `update_id` (given one is kept; a
    /// missing one is the next free id). Ids must increase, as Telegram's do.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let mut s = lock(&self.state);
        let id = update["update_id"].as_i64().unwrap_or(s.next_update_id);
        update["update_id"] = json!(id);
        s.next_update_id = s.next_update_id.max(id + 1);
        s.updates.push(update);
        id
    }

    /// The next `times` authenticated calls answer `status` with a Bot API error body (429
    /// carries `parameters.retry_after: 3`).
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state).failures.extend(std::iter::repeat_n(status, times));
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Every message accepted by `sendMessage`, oldest first. Ids count up from 1000.
    pub fn sent(&self) -> Vec<TelegramSent> {
        lock(&self.state).sent.clone()
    }

    /// The `update_id`s still queued: those no `getUpdates` offset has confirmed yet.
    pub fn pending_updates(&self) -> Vec<i64> {
        lock(&self.state).updates.iter().filter_map(|u| u["update_id"].as_i64()).collect()
    }
}

/// A Telegram `Update` with a text message in a private chat (chat id = sender id) from Ada
/// Lovelace (`@ada`). Change fields with `update["message"]["from"]["is_bot"] = json!(true)`.
pub fn telegram_text_update(update_id: i64, chat_id: i64, message_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "from": { "id": chat_id, "is_bot": false, "first_name": "Ada", "last_name": "Lovelace", "username": "ada" },
            "chat": { "id": chat_id, "first_name": "Ada", "last_name": "Lovelace", "username": "ada", "type": "private" },
            "date": 1_700_000_000,
            "text": text
        }
    })
}

fn telegram_error(status: u16, description: &str) -> Response {
    let mut body = json!({ "ok": false, "error_code": status, "description": description });
    if status == 429 {
        body["parameters"] = json!({ "retry_after": 3 });
    }
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

fn telegram_failure(status: u16) -> Response {
    let description = match status {
        400 => "Bad Request: chat not found",
        401 => "Unauthorized",
        403 => "Forbidden: bot was blocked by the user",
        409 => {
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
        }
        429 => "Too Many Requests: retry after 3",
        _ => "Internal Server Error",
    };
    telegram_error(status, description)
}

async fn telegram(
    State(state): State<Arc<Mutex<TelegramState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = record(&method, &uri, &headers, &body);
    let mut s = lock(&state);
    s.requests.push(request.clone());
    let Some((token, call)) = uri.path().strip_prefix("/bot").and_then(|rest| rest.split_once('/')) else {
        return telegram_error(404, "Not Found");
    };
    if token != s.token {
        return telegram_error(401, "Unauthorized");
    }
    if !s.failures.is_empty() {
        let status = s.failures.remove(0);
        return telegram_failure(status);
    }
    match (method.as_str(), call) {
        ("POST", "sendMessage") => {
            let body = request.json();
            if body["chat_id"].is_null() {
                return telegram_error(400, "Bad Request: chat_id is empty");
            }
            // The Bot API counts UTF-16 code units.
            match body["text"].as_str().map(|t| t.encode_utf16().count()) {
                None | Some(0) => return telegram_error(400, "Bad Request: message text is empty"),
                Some(n) if n > 4096 => return telegram_error(400, "Bad Request: message is too long"),
                Some(_) => {}
            }
            let message_id = s.next_message_id;
            s.next_message_id += 1;
            let answer = json!({ "ok": true, "result": {
                "message_id": message_id,
                "from": { "id": 1, "is_bot": true, "first_name": "Helpdesk", "username": "helpdesk_bot" },
                "chat": { "id": body["chat_id"], "type": "private" },
                "date": 1_700_000_000,
                "text": body["text"],
            }});
            s.sent.push(TelegramSent { message_id, request: body });
            axum::Json(answer).into_response()
        }
        ("GET" | "POST", "getUpdates") => {
            let query = form_decode(&request.query);
            let param = |name: &str| query.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<i64>().ok());
            // A positive offset confirms, and so forgets, every update below it.
            if let Some(offset) = param("offset").filter(|o| *o > 0) {
                s.updates.retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= offset));
            }
            let limit = param("limit").unwrap_or(100).clamp(1, 100) as usize;
            let result: Vec<Value> = s.updates.iter().take(limit).cloned().collect();
            axum::Json(json!({ "ok": true, "result": result })).into_response()
        }
        _ => telegram_error(404, "Not Found: method not found"),
    }
}

/// A mock of Twilio's Messages API for one account:
/// `POST /2010-04-01/Accounts/{sid}/Messages.json` with HTTP Basic auth `sid:auth_token`.
pub struct TwilioMock {
    /// Base URL, `http://127.0.0.1:PORT`: the plugin's `api_base`.
    pub base: String,
    state: Arc<Mutex<TwilioState>>,
    _server: Running,
}

struct TwilioState {
    account_sid: String,
    auth_token: String,
    requests: Vec<Recorded>,
    sent: Vec<TwilioSent>,
    failures: Vec<u16>,
}

impl TwilioMock {
    /// Starts the mock for this account.
    pub fn start(account_sid: &str, auth_token: &str) -> Self {
        let state = Arc::new(Mutex::new(TwilioState {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            requests: Vec::new(),
            sent: Vec::new(),
            failures: Vec::new(),
        }));
        let server = Running::start(Router::new().fallback(twilio).with_state(state.clone()));
        TwilioMock { base: server.base.clone(), state, _server: server }
    }

    /// `127.0.0.1:PORT`, for the channel's `http:` grant.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The next `times` authenticated calls answer `status` with a Twilio error body: 400 is
    /// code 21211 (the 'To' number is not valid), 429 code 20429, anything else code 20500.
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state).failures.extend(std::iter::repeat_n(status, times));
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Every message accepted, oldest first.
    pub fn sent(&self) -> Vec<TwilioSent> {
        lock(&self.state).sent.clone()
    }
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
}

fn twilio_failure(status: u16) -> Response {
    match status {
        400 => twilio_error(400, 21211, "The 'To' number is not a valid phone number."),
        401 => twilio_error(401, 20003, "Authenticate"),
        429 => twilio_error(429, 20429, "Too Many Requests"),
        _ => twilio_error(status, 20500, "Internal Server Error"),
    }
}

async fn twilio(
    State(state): State<Arc<Mutex<TwilioState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = record(&method, &uri, &headers, &body);
    let mut s = lock(&state);
    s.requests.push(request.clone());
    let account = uri.path().strip_prefix("/2010-04-01/Accounts/").and_then(|rest| rest.strip_suffix("/Messages.json"));
    let Some(account) = account.filter(|_| method == Method::POST) else {
        return twilio_error(404, 20404, "The requested resource was not found");
    };
    let expected = format!("Basic {}", STANDARD.encode(format!("{}:{}", s.account_sid, s.auth_token)));
    if account != s.account_sid || request.header("authorization") != Some(expected.as_str()) {
        return twilio_error(401, 20003, "Authenticate");
    }
    if !s.failures.is_empty() {
        let status = s.failures.remove(0);
        return twilio_failure(status);
    }
    let to = request.form_value("To").unwrap_or_default();
    let from = request.form_value("From").unwrap_or_default();
    let text = request.form_value("Body").unwrap_or_default();
    if to.is_empty() {
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    }
    if from.is_empty() {
        return twilio_error(400, 21603, "A 'From' phone number is required.");
    }
    if text.is_empty() {
        return twilio_error(400, 21602, "Message body is required.");
    }
    if text.chars().count() > 1600 {
        return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.");
    }
    let sid = format!("SM{:032x}", s.sent.len() + 1);
    let answer = json!({
        "sid": sid,
        "account_sid": s.account_sid,
        "to": to,
        "from": from,
        "body": text,
        "status": "queued",
        "num_segments": "1",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", s.account_sid),
    });
    s.sent.push(TwilioSent { sid, to, from, body: text });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// The `X-Twilio-Signature` of a webhook: base64 of HMAC-SHA1, keyed with the auth token, of
/// `url` (with its query string) followed by every parameter's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A webhook as Twilio posts it to `url`: the form body and its `X-Twilio-Signature`.
pub fn twilio_webhook(auth_token: &str, url: &str, params: &[(&str, &str)]) -> (String, String) {
    (form_encode(params), twilio_signature(auth_token, url, params))
}

/// Encodes pairs as `application/x-www-form-urlencoded` (space as `+`).
pub fn form_encode(params: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => char::from(b).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// Decodes `application/x-www-form-urlencoded` text; a broken escape stays as it is.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked mid-request leaves nothing half-done worth refusing to read.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Recorded {
    Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    }
}

/// A server on its own thread and runtime; dropping it shuts the server down.
struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    fn start(app: Router) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port for the mock API");
        listener.set_nonblocking(true).expect("make the mock's listener non-blocking");
        let base = format!("http://{}", listener.local_addr().expect("the mock's address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the mock");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("the mock's listener");
                let shutdown = async {
                    let _ = stopped.await;
                };
                axum::serve(listener, app).with_graceful_shutdown(shutdown).await.expect("serve the mock API");
            });
        });
        Running { base, stop: Some(stop) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
