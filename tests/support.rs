//! Test harness: starts the real `plugdesk` binary on a fresh database — an SQLite file in a
//! temporary directory, or, when `DATABASE_URL` points at PostgreSQL, a new database created
//! for the test on that server — and talks to it over loopback HTTP.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode, redirect};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_plugdesk");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The `/metrics` bearer token every test server is started with.
pub const METRICS_TOKEN: &str = "test-metrics-token";
/// The operator's allow-list every test server gets unless a test writes its own
/// `plugdesk.toml`: the mock APIs, mail servers and webhook receivers of the tests listen on
/// loopback, which the server refuses by default (`[network] allow`).
pub const LOOPBACK_ALLOWED: &str = "[network]\nallow = [\"127.0.0.0/8\", \"::1/128\", \"localhost\"]\n";

/// A scratch place for one test: a directory and, on PostgreSQL, a database of its own.
pub struct Scratch {
    pub dir: PathBuf,
    pub database_url: Option<String>,
    admin_url: Option<String>,
    db_name: Option<String>,
    owned: bool,
    /// Environment set on every `plugdesk` command, after the harness's defaults.
    pub env: Vec<(&'static str, String)>,
}

impl Scratch {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("plugdesk-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        std::fs::write(dir.join("plugdesk.toml"), LOOPBACK_ALLOWED).expect("write plugdesk.toml");
        match std::env::var("DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) {
            Some(admin) => {
                let name = format!("plugdesk_test_{}_{n}", std::process::id());
                psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"));
                psql(&admin, &format!("CREATE DATABASE {name}"));
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
                Scratch {
                    dir,
                    database_url: Some(format!("{base}/{name}")),
                    admin_url: Some(admin),
                    db_name: Some(name),
                    owned: true,
                    env: Vec::new(),
                }
            }
            None => Scratch { dir, database_url: None, admin_url: None, db_name: None, owned: true, env: Vec::new() },
        }
    }

    /// The same directory and database for a second node; dropping it removes nothing.
    pub fn share(&self) -> Scratch {
        Scratch {
            dir: self.dir.clone(),
            database_url: self.database_url.clone(),
            admin_url: None,
            db_name: None,
            owned: false,
            env: self.env.clone(),
        }
    }

    /// Writes `plugdesk.toml`: `text` and the loopback allow-list of the tests.
    pub fn config(&self, text: &str) {
        std::fs::write(self.dir.join("plugdesk.toml"), format!("{text}\n{LOOPBACK_ALLOWED}"))
            .expect("write plugdesk.toml");
    }

    /// A `plugdesk` command with this scratch's data directory and database.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        c.env("PLUGDESK_DATA", &self.dir);
        c.env_remove("PLUGDESK_LISTEN");
        c.env("PLUGDESK_LOG", "warn");
        c.env("PLUGDESK_METRICS_TOKEN", METRICS_TOKEN);
        c.env_remove("PLUGDESK_SECRET_KEY");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        match &self.database_url {
            Some(url) => c.env("DATABASE_URL", url),
            None => c.env_remove("DATABASE_URL"),
        };
        c.current_dir(&self.dir);
        c
    }

    /// Runs one SQL query on the scratch's database with the command-line client (`sqlite3`
    /// or `psql`) and returns its output, trimmed: for looking at raw rows.
    pub fn sql(&self, sql: &str) -> String {
        let out = match &self.database_url {
            Some(url) => Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql]).output(),
            None => Command::new("sqlite3").arg(self.dir.join("plugdesk.db")).arg(sql).output(),
        }
        .expect("run the database client");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `plugdesk init` (without the default workflow library, so tests see only what they
    /// do) and returns the token from the last line of its output.
    pub fn init(&self, workspace: &str) -> String {
        self.init_with(workspace, &["--no-default-workflows"])
    }

    /// Runs `plugdesk init` with extra flags and returns the token.
    pub fn init_with(&self, workspace: &str, flags: &[&str]) -> String {
        let mut args = vec!["init", "--workspace", workspace];
        args.extend_from_slice(flags);
        let out = self.command(&args).output().expect("run plugdesk init");
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The admin's setup link, for tests that sign in through the web pages.
        if let Some(link) = stdout.lines().find(|l| l.contains("/setup/")) {
            let token = link.trim().rsplit('/').next().unwrap_or_default();
            std::fs::write(self.dir.join(format!("setup-token-{workspace}")), token).expect("keep the setup token");
        }
        stdout.lines().last().expect("init printed nothing").trim().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let (Some(admin), Some(name)) = (&self.admin_url, &self.db_name) {
            psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out =
        Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]).output().expect("run psql");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running server.
pub struct Server {
    pub base: String,
    pub token: String,
    child: Child,
    pub stdout_lines: Vec<String>,
    pub scratch: Scratch,
    client: reqwest::Client,
}

impl Server {
    /// A fresh server with one workspace (`default`) made by `plugdesk init`.
    pub async fn start() -> Self {
        let scratch = Scratch::new();
        let token = scratch.init("default");
        Self::serve(scratch, token).await
    }

    /// Starts `plugdesk serve` on an initialised scratch.
    pub async fn serve(scratch: Scratch, token: String) -> Self {
        let mut child = scratch
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn plugdesk serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = Vec::new();
        let mut base = None;
        let mut reader = BufReader::new(stdout).lines();
        for line in reader.by_ref() {
            let line = line.expect("read stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = rest.split_whitespace().next().map(str::to_owned);
                lines.push(line);
                break;
            }
            lines.push(line);
        }
        // Keep draining so that a late line can never block or break the server.
        std::thread::spawn(move || reader.for_each(drop));
        let base = base.unwrap_or_else(|| panic!("server did not say where it listens: {lines:?}"));
        let client = reqwest::Client::new();
        Server { base, token, child, stdout_lines: lines, scratch, client }
    }

    /// Stops the server (SIGTERM, then waits) and returns its scratch for a restart.
    pub fn stop(mut self) -> (Scratch, String) {
        self.terminate();
        self.take()
    }

    /// Kills the server at once (SIGKILL to its PID: no shutdown code runs, as in a crash) and
    /// returns its scratch for a restart.
    pub fn kill(mut self) -> (Scratch, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take()
    }

    fn take(&mut self) -> (Scratch, String) {
        let token = self.token.clone();
        let scratch = std::mem::replace(
            &mut self.scratch,
            Scratch {
                dir: PathBuf::new(),
                database_url: None,
                admin_url: None,
                db_name: None,
                owned: false,
                env: Vec::new(),
            },
        );
        (scratch, token)
    }

    fn terminate(&mut self) {
        // Stopped already (`stop`, then drop): its PID may belong to someone else by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send request");
        let status = resp.status();
        let text = resp.text().await.expect("read body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.token), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&self.token), Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(&self.token), Some(body)).await
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.raw_as(&self.token, method, path, content_type, body).await
    }

    /// Sends raw bytes with a content type and another token.
    pub async fn raw_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send request");
        let status = resp.status();
        let text = resp.text().await.expect("read body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a ticket and returns it, asserting 201.
    pub async fn ticket(&self, subject: &str, email: &str) -> Value {
        let (status, t) = self.post("/api/v1/tickets", serde_json::json!({ "subject": subject, "body": format!("Body of {subject}"), "customer": { "email": email } })).await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        t
    }

    /// Answers a survey as the customer does on its public page (`path` is `/survey/TOKEN`),
    /// with the form's fields urlencoded in `form`.
    pub async fn answer_survey(&self, path: &str, form: &str) -> StatusCode {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .expect("answer the survey")
            .status()
    }

    /// Polls `path` until `check` accepts the body or `timeout` passes.
    pub async fn wait_for(&self, path: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, v) = self.get(path).await;
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {path}; last answer {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the event dispatcher has handled every event of the token's workspace
    /// logged so far: after it, an action no rule took is one no rule will take for them (the
    /// cursor moves with the actions, in their transaction). A restarted server may first
    /// wait out the stopped one's dispatch lease (30 s).
    pub async fn settled(&self, timeout: Duration) {
        self.wait_for("/api/v1/events/dispatcher", timeout, |d| d["pending"] == 0).await;
    }

    pub fn data_dir(&self) -> &Path {
        &self.scratch.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Asserts an error answer: status, code, and a message containing `needle`.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} should contain {needle:?}");
}

/// A TCP listener on 127.0.0.1 that counts the connections it accepts: proof that a refused
/// outbound connection never reached it. `http` answers each request with 200; otherwise
/// connections are held open and never answered.
pub struct CountingListener {
    pub port: u16,
    accepts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingListener {
    pub fn start(http: bool) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind counting listener");
        let port = listener.local_addr().expect("addr").port();
        let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepts.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                if !http {
                    held.push(stream);
                    continue;
                }
                std::thread::spawn(move || {
                    // Read the head and the body it announces, then answer and close.
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf) else { return };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if data.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                });
            }
        });
        CountingListener { port, accepts }
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Waits (polling, with a deadline) until at least `n` connections were accepted.
    pub async fn wait_accepts(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.accepts() < n {
            assert!(Instant::now() < deadline, "the listener accepted {} connections, waited for {n}", self.accepts());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The password tests give the admins they sign in.
pub const PASSWORD: &str = "a long admin password";

/// A browser without a browser: keeps its cookies, sends `Origin` like one, never follows a
/// redirect (the tests look at them).
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    pub cookies: Vec<(String, String)>,
    pub accept_language: &'static str,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first `name="csrf"` field.
    pub fn csrf(&self) -> String {
        attr_after(&self.body, "name=\"csrf\"", "value").unwrap_or_else(|| panic!("no csrf field in {}", self.body))
    }
}

/// The value of attribute `attr` in the element that contains `marker`.
pub fn attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let key = format!("{attr}=\"");
    let v = tag.split(&key).nth(1)?;
    Some(v.split('"').next()?.replace("&amp;", "&"))
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder().redirect(redirect::Policy::none()).build().expect("client");
        Browser { base: base.to_owned(), client, cookies: Vec::new(), accept_language: "en-US,en;q=0.9" }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub fn keep_cookies(&mut self, headers: &HeaderMap) {
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().expect("ascii cookie");
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').expect("cookie pair");
            self.cookies.retain(|(name, _)| name != k);
            if !c.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let resp = req
            .header(header::COOKIE, self.cookie_header())
            .header(header::ACCEPT_LANGUAGE, self.accept_language)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        self.keep_cookies(&headers);
        Page { status, headers, body: resp.text().await.expect("body") }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A form post from a page of this site.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).header(header::ORIGIN, self.base.clone()).form(form);
        self.send(req).await
    }

    /// A `multipart/form-data` post from a page of this site: text fields, then files as
    /// (field, file name, content type, bytes).
    pub async fn post_multipart(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        files: &[(&str, &str, &str, &[u8])],
    ) -> Page {
        let boundary = "----plugdesk-test-boundary-7d3a";
        let mut body = Vec::new();
        for (name, value) in form {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        for (name, filename, content_type, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::ORIGIN, self.base.clone())
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.send(req).await
    }

    /// Signs in through the sign-in form.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/signin").await;
        let csrf = form.csrf();
        self.post("/signin", &[("csrf", &csrf), ("email", email), ("password", password)]).await
    }
}

/// The admin of workspace `default` signed in through the setup link `plugdesk init` printed.
pub async fn admin_browser(server: &Server) -> Browser {
    let setup =
        std::fs::read_to_string(server.scratch.dir.join("setup-token-default")).expect("init kept the setup token");
    let mut admin = Browser::new(&server.base);
    let path = format!("/setup/{}", setup.trim());
    let form = admin.get(&path).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let done =
        admin.post(&path, &[("csrf", &form.csrf()), ("password", PASSWORD), ("password_confirm", PASSWORD)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    admin
}
