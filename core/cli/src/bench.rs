//! `plugdesk bench`: starts this binary as a server on a scratch database and loads it over
//! loopback from this (second) process, then prints the figures `BENCHMARKS.md` records:
//! ticket creation with concurrent clients, reads by id, list and search latency at scale,
//! start-up time and resident memory, and the agent workspace's pages (`pages`).

mod pages;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tokio::process::Child;

use crate::config::Config;
use crate::error::{Error, Result};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Tickets to create through the API.
    #[arg(long, default_value_t = 20_000)]
    pub tickets: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u64,
    /// Reads by id.
    #[arg(long, default_value_t = 100_000)]
    pub gets: u64,
    /// Tickets to seed (with three messages each) before measuring list and search; 0 skips.
    #[arg(long, default_value_t = 0)]
    pub scale: u64,
    /// List and search requests to time.
    #[arg(long, default_value_t = 500)]
    pub queries: u64,
    /// Measure only the plugin host (compile, cached load, warm calls), without a server.
    #[arg(long)]
    pub plugins_only: bool,
    /// Measure only the web pages (after seeding `--scale` tickets): the inbox views, the
    /// ticket page, the live stream.
    #[arg(long)]
    pub pages_only: bool,
    /// Scratch directory (default: a new one under the system temp directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Messages to import from a local IMAP server through the e-mail channel (the mail test
    /// fixture `tests/mail/mailserver.py`, Dovecot; `bash tests/mail/setup.sh` once); 0 skips.
    #[arg(long, default_value_t = 0)]
    pub mail_import: u64,
    /// The mail fixture's script.
    #[arg(long, default_value = "tests/mail/mailserver.py")]
    pub mail_fixture: PathBuf,
    /// Grow each imported mail by a quoted history of about N KB (the generated mails are
    /// about 1 KB without it).
    #[arg(long, default_value_t = 0)]
    pub mail_quote_kb: u64,
    /// Messages to pipe through `plugdesk mail-in`, one process each, as an MTA does; 0 skips.
    #[arg(long, default_value_t = 100)]
    pub mail_in: u64,
    /// Seconds of tickets created at `--sustained-rate` a second in the workspace with the
    /// default library, measuring how far the automatic answers lag behind; 0 skips.
    #[arg(long, default_value_t = 0)]
    pub sustained_seconds: u64,
    /// Tickets a second for `--sustained-seconds`.
    #[arg(long, default_value_t = 1000)]
    pub sustained_rate: u64,
    /// The server binary to load (default: this one), to compare a build before and after a
    /// change under the same load generator. It must read the same data directory.
    #[arg(long)]
    pub server: Option<PathBuf>,
}

struct Stats {
    count: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }

    fn print(&self, what: &str, clients: u64) {
        println!(
            "{what:<44} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} requests, {clients} clients)",
            self.count as f64 / self.secs,
            self.pct(0.50),
            self.pct(0.99),
            self.count,
        );
    }
}

/// Runs the benchmark.
///
/// # Errors
/// When the server cannot be started or answers with errors.
pub(crate) async fn run(opts: Options) -> Result<()> {
    let dir =
        opts.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("plugdesk-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if !opts.pages_only {
        plugin_figures(&dir)?;
        email_figures()?;
        workflow_figures()?;
        template_figures()?;
        language_figures();
    }
    if opts.plugins_only {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let cfg = Config { data: dir.clone(), database_url: None, ..Config::default() };
    let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
    let ws = crate::workspace::create(&conn, "bench", "bench@localhost", &[]).await?;
    // A second workspace with the default workflow library, for the inbound path with rules.
    let with_library =
        crate::workspace::create(&conn, "bench-library", "bench@localhost", &crate::workflow::library()?).await?;
    if opts.scale > 0 {
        let t = Instant::now();
        seed(&conn, ws.workspace_id, opts.scale).await?;
        println!("seeded {} tickets and {} messages in {:.1} s", opts.scale, opts.scale * 3, t.elapsed().as_secs_f64());
    }
    conn.close().await?;

    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    // The load comes from one admin token and one address (loopback) at thousands of requests
    // a second: far over the per-token API limit meant for a runaway client and the
    // per-address limit that protects a real hook. The benchmark measures the server, so its
    // server runs with both limits off. Its mailbox (`--mail-import`) is the local test
    // Dovecot, an internal address the operator must allow.
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        "[auth]\nrate_per_second = 0\n\n[channels]\nhook_per_address_per_second = 0.0\n\n[network]\nallow = [\"127.0.0.1/32\"]\n",
    )?;
    println!(
        "(rate limits off for the benchmark: [auth] rate_per_second = 0, [channels] hook_per_address_per_second = 0)"
    );
    let started = Instant::now();
    let binary = match &opts.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    println!("server: {}", binary.display());
    let mut server = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--data"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PLUGDESK_LOG", std::env::var("PLUGDESK_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(http)?;
    let up = wait_ready(&client, &base, &mut server).await?;
    println!(
        "process start to first answered request          {:>9.1} ms",
        up.duration_since(started).as_secs_f64() * 1000.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.id().unwrap_or_default();
    println!("idle resident memory                              {:>9.1} MB", rss_mb(pid));

    let bench_token = ws.admin_token.clone();
    let token = Arc::new(ws.admin_token);
    let mut result = if opts.pages_only {
        Ok(())
    } else if opts.mail_import > 0 {
        // The import alone: nothing else competes for the writer.
        mail_import(&client, &base, &dir, &token, &opts).await
    } else {
        measure(&client, &base, &token, &opts).await
    };
    if result.is_ok() && opts.mail_import == 0 {
        let target = pages::Target {
            base: &base,
            setup_token: &ws.setup_token,
            api_token: &bench_token,
            pid,
            clients: opts.clients,
            queries: opts.queries,
        };
        result = pages::run(&client, &target).await;
    }
    if result.is_ok() && opts.mail_import == 0 && !opts.pages_only {
        result = library_inbound(&client, &base, &dir, &with_library.admin_token, &opts).await;
    }
    if result.is_ok() && opts.mail_import == 0 && !opts.pages_only {
        result = library_api(&client, &base, &dir, (with_library.workspace_id, &with_library.admin_token), &opts).await;
    }
    if result.is_ok() && opts.sustained_seconds > 0 && !opts.pages_only {
        result = sustained(&client, &base, &dir, (with_library.workspace_id, &with_library.admin_token), &opts).await;
    }
    if result.is_ok() && opts.mail_in > 0 && !opts.pages_only {
        result = mail_in(&client, &base, &dir, &config, &bench_token, opts.mail_in).await;
    }
    println!("resident memory after the load                    {:>9.1} MB", rss_mb(pid));
    let _ = server.start_kill();
    let _ = server.wait().await;
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn measure(client: &reqwest::Client, base: &str, token: &Arc<String>, opts: &Options) -> Result<()> {
    let (client, base, token) = (client.clone(), base.to_owned(), token.clone());
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, b, tk, ids2) = (client.clone(), base.clone(), token.clone(), ids.clone());
    let create = load(opts.clients, opts.tickets, move |i| {
        let (client, base, token, ids) = (c.clone(), b.clone(), tk.clone(), ids2.clone());
        async move {
            let body = json!({
                "subject": format!("Parcel {i} has not arrived"),
                "body": format!("Hello, my order {i} was due last week and the parcel is still missing. Can you check with the carrier? Regards"),
                "customer": { "email": format!("customer{i}@example.com"), "name": format!("Customer {i}") },
                "tags": ["bench"],
            });
            let r = client.post(format!("{base}/api/v1/tickets")).bearer_auth(token.as_str()).json(&body).send().await.map_err(http)?;
            if r.status() != reqwest::StatusCode::CREATED {
                return Err(Error::Internal(format!("create answered {}: {}", r.status(), r.text().await.unwrap_or_default())));
            }
            let t: Json = r.json().await.map_err(http)?;
            if let (Ok(mut ids), Some(id)) = (ids.lock(), t["id"].as_i64()) {
                ids.push(id);
            }
            Ok(())
        }
    })
    .await?;
    create.print("create ticket (customer+ticket+message+…)", opts.clients);

    let ids: Arc<Vec<i64>> = Arc::new(ids.lock().map(|v| v.clone()).unwrap_or_default());
    if ids.is_empty() {
        return Err(Error::Internal("no tickets were created".into()));
    }
    let (c, b, tk, ids2) = (client.clone(), base.clone(), token.clone(), ids.clone());
    let get = load(opts.clients, opts.gets, move |i| {
        let (client, base, token, ids) = (c.clone(), b.clone(), tk.clone(), ids2.clone());
        async move {
            let id = ids[(i as usize * 7919) % ids.len()];
            let r = client
                .get(format!("{base}/api/v1/tickets/{id}"))
                .bearer_auth(token.as_str())
                .send()
                .await
                .map_err(http)?;
            if !r.status().is_success() {
                return Err(Error::Internal(format!("get answered {}", r.status())));
            }
            r.bytes().await.map_err(http)?;
            Ok(())
        }
    })
    .await?;
    get.print("get ticket by id", opts.clients);

    let (c, b, tk) = (client.clone(), base.clone(), token.clone());
    let list = load(opts.clients, opts.queries, move |i| {
        let (client, base, token) = (c.clone(), b.clone(), tk.clone());
        async move {
            let filter =
                ["status=new", "priority=normal", "tag=bench", "status=new,open&sort=-updated_at"][i as usize % 4];
            let r = client
                .get(format!("{base}/api/v1/tickets?{filter}&limit=50"))
                .bearer_auth(token.as_str())
                .send()
                .await
                .map_err(http)?;
            if !r.status().is_success() {
                return Err(Error::Internal(format!("list answered {}", r.status())));
            }
            r.bytes().await.map_err(http)?;
            Ok(())
        }
    })
    .await?;
    list.print("filtered list page (50 tickets)", opts.clients);

    let (c, b, tk) = (client.clone(), base.clone(), token.clone());
    let search = load(opts.clients, opts.queries, move |i| {
        let (client, base, token) = (c.clone(), b.clone(), tk.clone());
        async move {
            let q =
                ["parcel carrier", &format!("order {}", i * 13), "missing", "Customer 42"][i as usize % 4].to_owned();
            let r = client
                .get(format!("{base}/api/v1/search"))
                .query(&[("q", q.as_str()), ("limit", "20")])
                .bearer_auth(token.as_str())
                .send()
                .await
                .map_err(http)?;
            if !r.status().is_success() {
                return Err(Error::Internal(format!("search answered {}", r.status())));
            }
            r.bytes().await.map_err(http)?;
            Ok(())
        }
    })
    .await?;
    search.print("full-text search (20 hits)", opts.clients);

    // The inbound path through a channel plugin: hook → stored raw → webform (Wasm) → ticket.
    let channel_id = install_webform(&client, &base, &token).await?;
    let inbound = post_forms(&client, &base, channel_id, opts, |i| {
        // About 1 KB, like a real contact form with a few paragraphs.
        let message = format!("Hello, this is message {i}. {}", "My order has not arrived and I would like to know where it is. ".repeat(14));
        json!({ "name": format!("Sender {i}"), "email": format!("form{i}@example.com"), "subject": format!("Order {i}"), "message": message })
    })
    .await?;
    inbound.print("inbound via webform plugin (hook → ticket)", opts.clients);

    let stats: Json = client
        .get(format!("{base}/api/v1/channels/{channel_id}"))
        .bearer_auth(token.as_str())
        .send()
        .await
        .map_err(http)?
        .json()
        .await
        .map_err(http)?;
    let calls = stats["stats"]["calls"].as_f64().unwrap_or(0.0);
    let micros = stats["stats"]["total_us"].as_f64().unwrap_or(0.0);
    println!("time inside the plugin per 1 KB webhook (fresh instance) {:>9.1} µs", micros / calls.max(1.0));
    Ok(())
}

/// Installs a `webform` channel; returns its id.
async fn install_webform(client: &reqwest::Client, base: &str, token: &str) -> Result<i64> {
    install_channel(client, base, token, json!({ "plugin": "webform", "settings": {}, "grants": [] })).await
}

/// Installs a channel (`POST /api/v1/channels`); returns its id.
async fn install_channel(client: &reqwest::Client, base: &str, token: &str, body: Json) -> Result<i64> {
    let channel: Json = client
        .post(format!("{base}/api/v1/channels"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(http)?
        .json()
        .await
        .map_err(http)?;
    channel["id"].as_i64().ok_or_else(|| Error::Internal(format!("channel install answered {channel}")))
}

/// Posts `opts.tickets` forms (`form(i)`) to a webform channel's hook from `opts.clients`
/// clients.
async fn post_forms(
    client: &reqwest::Client,
    base: &str,
    channel_id: i64,
    opts: &Options,
    form: fn(u64) -> Json,
) -> Result<Stats> {
    let (c, b) = (client.clone(), base.to_owned());
    load(opts.clients, opts.tickets, move |i| {
        let (client, base) = (c.clone(), b.clone());
        async move {
            let r = client.post(format!("{base}/hooks/{channel_id}")).json(&form(i)).send().await.map_err(http)?;
            if !r.status().is_success() {
                return Err(Error::Internal(format!(
                    "hook answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )));
            }
            r.bytes().await.map_err(http)?;
            Ok(())
        }
    })
    .await
}

/// The inbound path again, into a workspace running the default workflow library (agents
/// online, so routing assigns): the hook rate while the dispatcher works beside it, then how
/// long the dispatcher needs to finish every event (the library's answers, routing, tags).
async fn library_inbound(
    client: &reqwest::Client,
    base: &str,
    dir: &std::path::Path,
    token: &str,
    opts: &Options,
) -> Result<()> {
    let token = Arc::new(token.to_owned());
    for i in 0..4 {
        client
            .post(format!("{base}/api/v1/agents"))
            .bearer_auth(token.as_str())
            .json(&json!({ "name": format!("Agent {i}"), "email": format!("agent{i}@example.com"), "presence": "online", "capacity": 1_000_000 }))
            .send()
            .await
            .map_err(http)?;
    }
    let channel_id = install_webform(client, base, &token).await?;
    let started = Instant::now();
    let inbound = post_forms(client, base, channel_id, opts, |i| {
        // Every fourth one a lost parcel (categorised and answered by its playbook), the rest
        // acknowledged; all routed.
        let subject = if i % 4 == 0 { "Paket nicht angekommen" } else { "Frage zur Bestellung" };
        let message = format!("Guten Tag, Nachricht {i}. {}", "Meine Bestellung ist noch nicht da, wo ist sie? ".repeat(16));
        json!({ "name": format!("Kundin {i}"), "email": format!("lib{i}@example.com"), "subject": subject, "message": message })
    })
    .await?;
    inbound.print("inbound, default workflow library enabled", opts.clients);
    // Wait until the dispatcher has handled every event.
    let db = crate::db::connect(&crate::db::database_url(dir, None), crate::db::Usage::Command).await?;
    drained(&db).await?;
    let secs = started.elapsed().as_secs_f64();
    let answered =
        count(&db, "SELECT COUNT(*) AS n FROM messages WHERE author_kind = 'automation' AND direction = 'outbound'")
            .await?;
    db.close().await?;
    println!(
        "  … and every event through the library       {:>9.0} msg/s   ({} messages, {answered} automatic answers, {secs:.1} s hook to last action)",
        opts.tickets as f64 / secs,
        opts.tickets
    );
    Ok(())
}

/// A ticket for the API, `i`-th of a run: every fourth a lost parcel (its playbook answers),
/// the others acknowledged; all routed.
fn library_ticket(i: u64) -> Json {
    let subject =
        if i.is_multiple_of(4) { format!("Paket {i} nicht angekommen") } else { format!("Frage zur Bestellung {i}") };
    json!({
        "subject": subject,
        "body": format!("Guten Tag, meine Bestellung {i} ist noch nicht da. Wo ist sie? Viele Grüße"),
        "customer": { "email": format!("api{i}@example.com"), "name": format!("Kunde {i}") },
    })
}

/// Creates a ticket through the API.
async fn create_ticket(client: &reqwest::Client, base: &str, token: &str, body: &Json) -> Result<()> {
    let r = client.post(format!("{base}/api/v1/tickets")).bearer_auth(token).json(body).send().await.map_err(http)?;
    if r.status() != reqwest::StatusCode::CREATED {
        return Err(Error::Internal(format!("create answered {}: {}", r.status(), r.text().await.unwrap_or_default())));
    }
    r.bytes().await.map_err(http)?;
    Ok(())
}

/// Waits until the dispatcher has handled every event (at most ten minutes).
async fn drained(db: &sea_orm::DatabaseConnection) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !crate::dispatch::backlog(db).await?.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Internal("the dispatcher did not finish within ten minutes".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The highest ticket id of a workspace.
async fn last_ticket(db: &sea_orm::DatabaseConnection, workspace_id: i64) -> Result<i64> {
    Ok(crate::db::query_one(
        db,
        "SELECT COALESCE(MAX(id), 0) AS n FROM tickets WHERE workspace_id = ?",
        vec![workspace_id.into()],
    )
    .await?
    .map(|r| crate::db::col::<i64>(&r, "n"))
    .transpose()?
    .unwrap_or(0))
}

/// How long after its creation each ticket after `after` got its first automatic answer,
/// sorted (ms), and how many got none.
async fn answer_lag(db: &sea_orm::DatabaseConnection, workspace_id: i64, after: i64) -> Result<(Vec<u64>, i64)> {
    let rows = crate::db::query_all(
        db,
        "SELECT t.created_at AS created, (SELECT MIN(m.created_at) FROM messages m WHERE m.ticket_id = t.id AND m.author_kind = 'automation' AND m.direction = 'outbound') AS answered FROM tickets t WHERE t.workspace_id = ? AND t.id > ?",
        vec![workspace_id.into(), after.into()],
    )
    .await?;
    let mut lags = Vec::with_capacity(rows.len());
    let mut unanswered = 0;
    for r in rows {
        let created: i64 = crate::db::col(&r, "created")?;
        match crate::db::col::<Option<i64>>(&r, "answered")? {
            Some(at) => lags.push((at - created).max(0) as u64),
            None => unanswered += 1,
        }
    }
    lags.sort_unstable();
    Ok((lags, unanswered))
}

fn pct_ms(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Tickets created through the API in the workspace with the default library: the creation
/// rate and latency while the rules run beside it, then the rate at which every ticket went
/// through the nine workflows (acknowledgement or playbook answer rendered and stored,
/// routing, tags), and each ticket's wait for its answer.
async fn library_api(
    client: &reqwest::Client,
    base: &str,
    dir: &std::path::Path,
    (workspace_id, token): (i64, &str),
    opts: &Options,
) -> Result<()> {
    let db = crate::db::connect(&crate::db::database_url(dir, None), crate::db::Usage::Command).await?;
    let after = last_ticket(&db, workspace_id).await?;
    let (c, b, tk) = (client.clone(), base.to_owned(), Arc::new(token.to_owned()));
    let started = Instant::now();
    let create = load(opts.clients, opts.tickets, move |i| {
        let (client, base, token) = (c.clone(), b.clone(), tk.clone());
        async move { create_ticket(&client, &base, &token, &library_ticket(i)).await }
    })
    .await?;
    create.print("create ticket, default workflow library enabled", opts.clients);
    drained(&db).await?;
    let secs = started.elapsed().as_secs_f64();
    let (lags, unanswered) = answer_lag(&db, workspace_id, after).await?;
    db.close().await?;
    println!(
        "  … every ticket through the nine workflows        {:>9.0} tickets/s ({} tickets, {} answered, {unanswered} not, {secs:.1} s from the first create to the last action)",
        opts.tickets as f64 / secs,
        opts.tickets,
        lags.len(),
    );
    println!(
        "  … creation to automatic answer (burst)           p50 {} ms   p99 {} ms   max {} ms",
        pct_ms(&lags, 0.5),
        pct_ms(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// Tickets created at a steady rate (`--sustained-rate` a second for `--sustained-seconds`,
/// each request sent on time whether or not the ones before have answered) in the workspace
/// with the default library: the creation latency and how long each ticket waited for its
/// automatic answer.
async fn sustained(
    client: &reqwest::Client,
    base: &str,
    dir: &std::path::Path,
    (workspace_id, token): (i64, &str),
    opts: &Options,
) -> Result<()> {
    let db = crate::db::connect(&crate::db::database_url(dir, None), crate::db::Usage::Command).await?;
    let after = last_ticket(&db, workspace_id).await?;
    let total = opts.sustained_rate.max(1) * opts.sustained_seconds;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.sustained_rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let token = Arc::new(token.to_owned());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        tick.tick().await;
        let (client, base, token) = (client.clone(), base.to_owned(), token.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            create_ticket(&client, &base, &token, &library_ticket(1_000_000 + i)).await?;
            Ok::<_, Error>(t.elapsed().as_micros() as u64)
        }));
    }
    let sent = started.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.push(h.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    lat.sort_unstable();
    drained(&db).await?;
    let (lags, unanswered) = answer_lag(&db, workspace_id, after).await?;
    db.close().await?;
    let create = Stats { count: total, secs: sent, lat_us: lat };
    create.print(&format!("create at {}/s for {} s, library enabled", opts.sustained_rate, opts.sustained_seconds), 0);
    println!(
        "  … creation to automatic answer (sustained)       p50 {} ms   p99 {} ms   max {} ms   ({} answered, {unanswered} not)",
        pct_ms(&lags, 0.5),
        pct_ms(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        lags.len()
    );
    Ok(())
}

/// The `n` of a `SELECT COUNT(*) AS n` query.
async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> Result<i64> {
    Ok(crate::db::query_one(db, sql, vec![]).await?.map(|r| crate::db::col::<i64>(&r, "n")).transpose()?.unwrap_or(0))
}

/// The mail fixture (Dovecot and an SMTP sink), stopped by PID when dropped.
struct MailFixture {
    child: std::process::Child,
    info: Json,
}

impl Drop for MailFixture {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Imports `opts.mail_import` generated messages from a local Dovecot (plain IMAP) through the
/// e-mail channel: the time from installing the channel to the last message stored.
async fn mail_import(
    client: &reqwest::Client,
    base: &str,
    dir: &std::path::Path,
    token: &str,
    opts: &Options,
) -> Result<()> {
    use std::io::BufRead as _;
    // On tmpfs when there is one: the subject is Plugdesk, not the disk creating 10,000 files.
    let shm = std::path::Path::new("/dev/shm");
    let mail_dir =
        if shm.is_dir() { shm.join(format!("plugdesk-bench-mail-{}", std::process::id())) } else { dir.join("mail") };
    let _ = std::fs::remove_dir_all(&mail_dir);
    let mut child = std::process::Command::new("python3")
        .arg(&opts.mail_fixture)
        .args(["serve", "--dir"])
        .arg(&mail_dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start {}: {e}", opts.mail_fixture.display())))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let mut out = std::io::BufReader::new(out);
        out.read_line(&mut line)?;
        // Keep reading what it prints later, so that it never writes into a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
    }
    let info: Json = serde_json::from_str(&line).map_err(|_| {
        Error::Config(format!("{} did not start (run bash tests/mail/setup.sh once)", opts.mail_fixture.display()))
    })?;
    let fixture = MailFixture { child, info };
    let filled = std::process::Command::new("python3")
        .arg(&opts.mail_fixture)
        .args(["fill", "--dir"])
        .arg(&mail_dir)
        .args(["--count", &opts.mail_import.to_string(), "--quote-kb", &opts.mail_quote_kb.to_string()])
        .output()?;
    if !filled.status.success() {
        return Err(Error::Internal(format!("fill failed: {}", String::from_utf8_lossy(&filled.stderr))));
    }
    // The bench's server trusts the web PKI only, so it reads the fixture's plain IMAP port
    // (STARTTLS is offered, not required); TLS is covered by the e-mail tests.
    let imap = fixture.info["imap"].as_u64().unwrap_or_default();
    let started = Instant::now();
    let body = json!({
        "plugin": "email", "poll_interval_ms": 100,
        "settings": { "address": "support@plugdesk.test", "imap_host": "127.0.0.1", "imap_port": imap, "imap_security": "none" },
        "secrets": { "imap_password": fixture.info["password"] },
        "grants": ["secrets", "kv", format!("tcp:127.0.0.1:{imap}")],
    });
    let channel_id = install_channel(client, base, token, body).await?;
    let db = crate::db::connect(&crate::db::database_url(dir, None), crate::db::Usage::Command).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored =
            count(&db, "SELECT COUNT(*) AS n FROM messages WHERE channel = 'email' AND direction = 'inbound'").await?;
        if stored as u64 >= opts.mail_import {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let row = crate::db::query_one(
        &db,
        "SELECT COUNT(*) AS tickets, (SELECT COUNT(*) FROM inbound_payloads WHERE channel_id = ?) AS polls, (SELECT last_error FROM channels WHERE id = ?) AS error, (SELECT CAST(AVG(LENGTH(data)) AS BIGINT) FROM message_sources) AS size FROM tickets WHERE channel = 'email'",
        vec![channel_id.into(), channel_id.into()],
    )
    .await?
    .ok_or_else(|| Error::Internal("no answer".into()))?;
    let (tickets, polls): (i64, i64) = (crate::db::col(&row, "tickets")?, crate::db::col(&row, "polls")?);
    let error: Option<String> = crate::db::col(&row, "error")?;
    let size: Option<i64> = crate::db::col(&row, "size")?;
    db.close().await?;
    drop(fixture);
    let _ = std::fs::remove_dir_all(&mail_dir);
    println!(
        "e-mail import from IMAP (Dovecot, plain IMAP)     {:>9.0} msg/s   ({stored} of {} messages of {:.1} KB on average into {tickets} tickets in {polls} polls, {secs:.1} s)",
        stored as f64 / secs,
        opts.mail_import,
        size.unwrap_or(0) as f64 / 1024.0
    );
    if let Some(e) = error {
        println!("  the channel reports: {e}");
    }
    Ok(())
}

/// The e-mail plugin's parse in the sandbox: a 50 KB message (text, HTML, a quoted history,
/// an attachment) handed to the bundled `email` plugin's pipe entry, one fresh instance each.
fn email_figures() -> Result<()> {
    use plugdesk_host::{Host, Limits, Outcome, WebhookRequest};
    let wasm = crate::plugin::bundled("email").ok_or_else(|| Error::Internal("email is not bundled".into()))?;
    let limits = Limits::default();
    let settings = serde_json::Map::from_iter([("address".to_owned(), json!("support@plugdesk.test"))]);
    let secrets = std::collections::BTreeMap::from([("inbound_token".to_owned(), "bench".to_owned())]);
    let ctx = || Arc::new(crate::devkit::FixtureContext::with(settings.clone(), secrets.clone()));
    let host = Host::new(None).map_err(|e| Error::Internal(e.to_string()))?;
    let plugin = host.load(wasm, &limits, ctx()).map_err(|e| Error::Internal(e.to_string()))?;
    let raw = sample_mail(50 * 1024);
    let request = WebhookRequest {
        method: "POST".into(),
        path: String::new(),
        query: String::new(),
        headers: vec![("x-plugdesk-mail-token".into(), "bench".into())],
        body: raw.clone(),
    };
    let n = 500;
    let mut lat_us = Vec::with_capacity(n);
    let total = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let out = host
            .handle_webhook(&plugin, &limits, ctx(), request.clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !matches!(&out, Outcome::Accepted { messages, .. } if messages.len() == 1) {
            return Err(Error::Internal(format!("the email plugin did not take the sample message: {out:?}")));
        }
        lat_us.push(t.elapsed().as_nanos() as u64);
    }
    let secs = total.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let stats = Stats { count: n as u64, secs, lat_us };
    println!(
        "e-mail parse in the plugin ({} KB, fresh instance) mean {:>6.1} µs   p50 {:>6.1} µs   p99 {:>6.1} µs",
        raw.len() / 1024,
        secs * 1e6 / n as f64,
        stats.pct(0.50),
        stats.pct(0.99)
    );
    Ok(())
}

/// A typical customer mail of about `size` bytes: multipart/mixed with text and HTML
/// alternatives in quoted-printable (a reply with a quoted history) and a base64 PDF.
/// `plugdesk mail-in` per message, process start included: `n` runs of the real command, one
/// after another as an MTA's deliveries are, each a new customer's 3 KB mail, while the server
/// runs. Each run reports where
/// its time went (its debug line `mail-in timings`).
async fn mail_in(
    client: &reqwest::Client,
    base: &str,
    dir: &std::path::Path,
    config: &std::path::Path,
    token: &str,
    n: u64,
) -> Result<()> {
    let response = client
        .post(format!("{base}/api/v1/channels"))
        .bearer_auth(token)
        .json(&json!({
            "plugin": "email", "name": "Piped mail", "poll_interval_ms": 3_600_000,
            "settings": { "address": "support@bench.example" },
            "secrets": { "inbound_token": "bench-pipe" },
            "grants": ["secrets", "kv"],
        }))
        .send()
        .await
        .map_err(http)?;
    let channel: Json = response.json().await.map_err(http)?;
    let id = channel["id"]
        .as_i64()
        .ok_or_else(|| Error::Internal(format!("cannot install the e-mail channel: {channel}")))?;
    let mut lat_us = Vec::with_capacity(n as usize);
    let mut phases = [0.0f64; 4];
    let total = Instant::now();
    for i in 0..n {
        let raw = format!(
            "From: Kundin {i} <pipe{i}@example.com>\r\nTo: support@bench.example\r\nSubject: Bestellung {i}\r\nMessage-ID: <bench-pipe-{i}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
            "Guten Tag, meine Bestellung ist noch nicht angekommen. Können Sie bitte nachsehen, wo sie ist?\r\n"
                .repeat(30)
        );
        let t = Instant::now();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(config)
            .args(["mail-in", "--data"])
            .arg(dir)
            .args(["--instance", &id.to_string()])
            .env("PLUGDESK_LOG", "plugdesk_core::cli=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, raw.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        // Microseconds: `Stats::pct` then reads milliseconds.
        lat_us.push(t.elapsed().as_micros() as u64);
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(Error::Internal(format!("mail-in failed ({}): {err}", out.status)));
        }
        for (k, name) in ["start_ms", "database_ms", "plugins_ms", "delivery_ms"].iter().enumerate() {
            phases[k] += field(&err, name).unwrap_or(0.0);
        }
    }
    let secs = total.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let stats = Stats { count: n, secs, lat_us };
    println!(
        "plugdesk mail-in, one process per 3 KB message   mean {:>6.1} ms   p50 {:>6.1} ms   p99 {:>6.1} ms   ({n} messages)",
        secs * 1000.0 / n as f64,
        stats.pct(0.50),
        stats.pct(0.99)
    );
    let per = |k: usize| phases[k] / n as f64;
    println!(
        "  of which: runtime + config + reading the mail {:.1} ms, opening the database {:.1} ms, loading plugins {:.1} ms, the channel call and storing {:.1} ms; the rest is process start and exit",
        per(0),
        per(1),
        per(2),
        per(3)
    );
    Ok(())
}

/// The number after `name=` in a log line (`plugins_ms="12.5"` or `plugins_ms=12.5`).
fn field(text: &str, name: &str) -> Option<f64> {
    let at = text.find(&format!("{name}="))? + name.len() + 1;
    let rest = text[at..].trim_start_matches('"');
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The language detection every inbound message goes through, on a short customer message
/// and on a long one (detection looks at the first 4 KB).
fn language_figures() {
    let short = "Guten Tag, meine Bestellung ist noch nicht angekommen. Können Sie bitte nachsehen?";
    let long =
        "Sehr geehrte Damen und Herren, ich schreibe Ihnen wegen meiner Bestellung vom letzten Monat. ".repeat(60);
    for (what, text) in [("a 90-byte message", short), ("a 5 KB message", long.as_str())] {
        let n = 2_000u32;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(crate::language::detect(std::hint::black_box(text)));
        }
        println!("language detection of {what:<20} mean {:>6.1} µs", t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
}

fn sample_mail(size: usize) -> Vec<u8> {
    use base64::Engine as _;
    let line = "Sehr geehrte Damen und Herren, meine Bestellung ist noch nicht angekommen. Können Sie nachsehen?";
    let quoted: String = (0..40).map(|i| format!("> Frühere Nachricht, Zeile {i}: {line}\r\n")).collect();
    let text = format!("Guten Tag,\r\n\r\n{line}\r\n\r\nAm 20.11.2026 schrieb Support:\r\n{quoted}");
    let html = format!(
        "<html><body><p>Guten Tag,</p><p>{line}</p><blockquote>{}</blockquote></body></html>",
        quoted.replace("\r\n", "<br>")
    );
    let mut msg = String::from(
        "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@kunde.example>\r\nTo: support@plugdesk.test\r\nSubject: =?UTF-8?Q?Bestellung_f=C3=BCr_Herrn_M=C3=BCller?=\r\nMessage-ID: <bench-1@kunde.example>\r\nIn-Reply-To: <plugdesk.1.1@plugdesk.test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    msg.push_str(&text);
    msg.push_str("\r\n--a\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    msg.push_str(&html);
    msg.push_str("\r\n--a--\r\n--m\r\nContent-Type: application/pdf; name=\"rechnung.pdf\"\r\nContent-Disposition: attachment; filename=\"rechnung.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let pdf_len = size.saturating_sub(msg.len() + 200) * 3 / 4;
    let pdf: Vec<u8> = (0..pdf_len).map(|i| (i * 31 % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
    for chunk in b64.as_bytes().chunks(76) {
        msg.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        msg.push_str("\r\n");
    }
    msg.push_str("--m--\r\n");
    msg.into_bytes()
}

/// The plugin host on its own, in this process: compiling a plugin, loading it from the
/// artifact cache, and warm webhook calls (one at a time, a 1 KB form each).
fn plugin_figures(dir: &std::path::Path) -> Result<()> {
    use plugdesk_host::{Host, Limits, WebhookRequest};
    let wasm = crate::plugin::bundled("webform").ok_or_else(|| Error::Internal("webform is not bundled".into()))?;
    let cache = dir.join("bench-cache");
    let limits = Limits::default();
    let ctx = || Arc::new(crate::devkit::FixtureContext::default());
    let host = Host::new(Some(cache.clone())).map_err(|e| Error::Internal(e.to_string()))?;
    let t = Instant::now();
    host.load(wasm, &limits, ctx()).map_err(|e| Error::Internal(e.to_string()))?;
    let compile = t.elapsed();
    let host = Host::new(Some(cache)).map_err(|e| Error::Internal(e.to_string()))?;
    let t = Instant::now();
    let plugin = host.load(wasm, &limits, ctx()).map_err(|e| Error::Internal(e.to_string()))?;
    let cached = t.elapsed();
    println!(
        "load webform: compile {:>7.1} ms, from the artifact cache {:>6.2} ms",
        compile.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3
    );
    let message = "My order has not arrived and I would like to know where it is. ".repeat(14);
    let body =
        json!({ "name": "Sender", "email": "form@example.com", "subject": "Order", "message": message }).to_string();
    let request = WebhookRequest {
        method: "POST".into(),
        path: String::new(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into_bytes(),
    };
    // Nanoseconds, so that `Stats::pct` reads in microseconds.
    let mut lat_us = Vec::with_capacity(5000);
    let total = Instant::now();
    for _ in 0..5000 {
        let t = Instant::now();
        host.handle_webhook(&plugin, &limits, ctx(), request.clone()).map_err(|e| Error::Internal(e.to_string()))?;
        lat_us.push(t.elapsed().as_nanos() as u64);
    }
    let secs = total.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let stats = Stats { count: 5000, secs, lat_us };
    println!(
        "warm webhook call into webform (1 KB, fresh instance) mean {:>6.1} µs   p50 {:>6.1} µs   p99 {:>6.1} µs",
        secs * 1e6 / 5000.0,
        stats.pct(0.50),
        stats.pct(0.99)
    );
    Ok(())
}

/// The workflow stage on its own: the default library over and over (20 workflows) run
/// against one event view, as the dispatcher does for every event.
fn workflow_figures() -> Result<()> {
    let engine = plugdesk_workflow::Engine::new(plugdesk_workflow::Limits::default());
    let scripts: Vec<_> = crate::workflow::LIBRARY
        .iter()
        .cycle()
        .take(20)
        .map(|(name, source)| engine.compile(source).map_err(|e| Error::Internal(format!("{name}: {e}"))))
        .collect::<Result<_>>()?;
    let view = json!({
        "event": { "kind": "ticket.created", "changes": {} },
        "ticket": { "id": 1, "number": 7, "subject": "Paket nicht angekommen", "status": "new", "priority": "normal", "level": 1,
                    "team_id": null, "assignee_id": null, "category": null, "tags": [], "attributes": {}, "reopen_count": 0 },
        "customer": { "id": 3, "name": "Anna", "tier": "normal", "language": "de", "open_tickets": 1, "attributes": {},
                      "last_agent_id": null, "recent_tickets": [{ "id": 2, "status": "resolved", "category": null, "last_agent_id": 1 }] },
        "messages": [{ "direction": "inbound", "text": "Meine Sendung ist nicht angekommen, Bestellung 4711." }],
        "agents": (0..8).map(|i| json!({ "id": i, "presence": "online", "open_tickets": i % 3, "capacity": 10, "teams": [], "skills": [] })).collect::<Vec<_>>(),
        "teams": [{ "id": 1, "name": "Support", "lead_agent_id": 1, "members": [1, 2] }],
    });
    let rounds = 500;
    let started = Instant::now();
    let mut actions = 0;
    for _ in 0..rounds {
        // As the dispatcher does: the view converted once per event, shared by the workflows.
        let prepared = engine.view(&view).map_err(|e| Error::Internal(e.to_string()))?;
        for s in &scripts {
            if s.fires("ticket.created", &json!({})) {
                actions += engine.run_view(s, &prepared).map_err(|e| Error::Internal(e.to_string()))?.len();
            }
        }
    }
    let per_event = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    // Each library script on its own, to see which one costs what.
    let prepared = engine.view(&view).map_err(|e| Error::Internal(e.to_string()))?;
    let mut each = Vec::new();
    for ((name, _), s) in crate::workflow::LIBRARY.iter().zip(&scripts) {
        let t = Instant::now();
        for _ in 0..rounds {
            engine.run_view(s, &prepared).map_err(|e| Error::Internal(e.to_string()))?;
        }
        each.push(format!("{name} {:.1}", t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)));
    }
    let t = Instant::now();
    for _ in 0..rounds {
        engine.view(&view).map_err(|e| Error::Internal(e.to_string()))?;
    }
    let convert = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!(
        "workflow stage, {} workflows on one event (script runs only)  {per_event:>7.1} µs per event ({} actions)",
        scripts.len(),
        actions / rounds as usize
    );
    println!("  of which converting the view {convert:.1} µs; per script (µs): {}", each.join(", "));
    Ok(())
}

/// Rendering the bundled templates for a ticket (the data `template::data_for` builds): an
/// e-mail (subject, text and HTML with partials), a chat answer and an SMS.
fn template_figures() -> Result<()> {
    let set = crate::template::bundled()?;
    let data = json!({
        "ticket": { "number": 4217, "subject": "Paket nicht angekommen", "status": "open", "priority": "normal",
                    "category": "lost_parcel", "channel": "email", "created_at": 1_795_510_800_000_i64, "updated_at": 1_795_512_000_000_i64 },
        "customer": { "name": "Anna Müller", "language": "de", "tier": "normal" },
        "agent": { "name": "Jonas Weber" },
        "workspace": { "name": "Beispiel-Shop", "base_url": "https://support.example.com" },
    });
    for (purpose, channel) in [("lost_parcel", "email"), ("acknowledgement", "chat"), ("acknowledgement", "sms")] {
        let rounds = 10_000;
        let started = Instant::now();
        for _ in 0..rounds {
            set.render(purpose, channel, "de", &data).map_err(|e| Error::Internal(e.to_string()))?;
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("template render {purpose:<16} {channel:<6} (de, partials)      {us:>7.1} µs");
    }
    Ok(())
}

/// Runs `total` requests from `clients` concurrent clients; each client sends its next request
/// when the previous one answered. Request `i` is made by `make(i)`.
async fn load<F, Fut>(clients: u64, total: u64, make: F) -> Result<Stats>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients.max(1) {
        let (next, make) = (next.clone(), make.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                make(i).await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total as usize);
    for h in handles {
        lat.extend(h.await.map_err(|e| Error::Internal(e.to_string()))??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Ok(Stats { count: total, secs, lat_us: lat })
}

fn http(e: reqwest::Error) -> Error {
    Error::Internal(format!("http: {e}"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(client: &reqwest::Client, base: &str, server: &mut Child) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(Instant::now());
        }
        if let Some(status) = server.try_wait()? {
            return Err(Error::Internal(format!("server exited with {status}")));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Err(Error::Internal("server did not answer within 30 s".into()))
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Seeds `n` tickets with three messages each straight into the database, in transactions of
/// [`SEED_CHUNK`] tickets with multi-row inserts (the fastest honest way to a million rows; the
/// API path is measured separately). Texts vary so that search has realistic posting lists.
async fn seed(db: &sea_orm::DatabaseConnection, workspace_id: i64, n: u64) -> Result<()> {
    use crate::db::{insert_rows, reserve_ids};
    const WORDS: [&str; 16] = [
        "parcel",
        "invoice",
        "refund",
        "password",
        "delivery",
        "Rechnung",
        "Lieferung",
        "Passwort",
        "broken",
        "discount",
        "subscription",
        "Kündigung",
        "address",
        "warranty",
        "login",
        "Umtausch",
    ];
    let tiers = crate::tier::list(db, workspace_id).await?;
    let tier = tiers.first().ok_or_else(|| Error::Internal("no tiers".into()))?.id;
    let statuses = ["new", "open", "pending", "resolved", "closed"];
    let priorities = ["low", "normal", "high", "urgent"];
    let mut done = 0;
    while done < n {
        let k = SEED_CHUNK.min(n - done) as usize;
        let txn = crate::db::begin_write(db).await?;
        let now = crate::now_ms();
        let customers = reserve_ids(&txn, "customers", k).await?;
        insert_rows(
            &txn,
            "customers",
            &["id", "workspace_id", "name", "tier_id", "created_at", "updated_at"],
            customers
                .iter()
                .map(|id| {
                    vec![
                        (*id).into(),
                        workspace_id.into(),
                        format!("Seed customer {id}").into(),
                        tier.into(),
                        now.into(),
                        now.into(),
                    ]
                })
                .collect(),
        )
        .await?;
        let tickets = reserve_ids(&txn, "tickets", k).await?;
        let numbers: Vec<i64> = tickets.iter().map(|id| 1_000_000_000 + id).collect();
        let mut rows = Vec::with_capacity(k);
        let mut docs = Vec::with_capacity(k * 4);
        for (j, (id, c)) in tickets.iter().zip(&customers).enumerate() {
            let w = WORDS[(*id as usize) % WORDS.len()];
            let subject = format!("Question about {w} {id}");
            rows.push(vec![
                (*id).into(),
                workspace_id.into(),
                numbers[j].into(),
                subject.clone().into(),
                statuses[j % 5].into(),
                priorities[j % 4].into(),
                1.into(),
                (*c).into(),
                tier.into(),
                "email".into(),
                now.into(),
                now.into(),
            ]);
            docs.push(crate::search::Doc {
                workspace_id,
                kind: "ticket",
                ref_id: *id,
                ticket_id: Some(*id),
                body: subject,
            });
        }
        insert_rows(
            &txn,
            "tickets",
            &[
                "id",
                "workspace_id",
                "number",
                "subject",
                "status",
                "priority",
                "level",
                "customer_id",
                "tier_id",
                "channel",
                "created_at",
                "updated_at",
            ],
            rows,
        )
        .await?;
        // Active tickets carry their clocks as live ones do: a first-response clock due
        // between two hours ago (breached) and two days ahead, paused while pending.
        let mut clocks = Vec::with_capacity(k);
        for (j, id) in tickets.iter().enumerate() {
            let status = statuses[j % 5];
            if !matches!(status, "new" | "open" | "pending") {
                continue;
            }
            let due = now - 2 * HOUR_MS + (id * 7919) % (50 * HOUR_MS);
            let warn = due - HOUR_MS / 2;
            let paused: Option<i64> = (status == "pending").then_some(now);
            let warned: Option<i64> = (warn <= now).then_some(warn);
            let breached: Option<i64> = (due <= now && paused.is_none()).then_some(due);
            clocks.push(vec![
                workspace_id.into(),
                (*id).into(),
                "first_response".into(),
                now.into(),
                due.into(),
                warn.into(),
                paused.into(),
                warned.into(),
                breached.into(),
            ]);
        }
        insert_rows(
            &txn,
            "sla_timers",
            &[
                "workspace_id",
                "ticket_id",
                "kind",
                "started_at",
                "due_at",
                "warn_at",
                "paused_at",
                "warned_at",
                "breached_at",
            ],
            clocks,
        )
        .await?;
        let messages = reserve_ids(&txn, "messages", k * 3).await?;
        let mut rows = Vec::with_capacity(k * 3);
        for (m, id) in messages.iter().enumerate() {
            let t = tickets[m / 3];
            let (w1, w2) = (WORDS[(*id as usize * 7) % WORDS.len()], WORDS[(*id as usize * 13) % WORDS.len()]);
            let body = format!(
                "Message {id} on ticket {t}: the {w1} and the {w2} need attention, please get back to me soon."
            );
            rows.push(vec![
                (*id).into(),
                workspace_id.into(),
                t.into(),
                "inbound".into(),
                "email".into(),
                "customer".into(),
                body.clone().into(),
                now.into(),
            ]);
            docs.push(crate::search::Doc { workspace_id, kind: "message", ref_id: *id, ticket_id: Some(t), body });
        }
        insert_rows(
            &txn,
            "messages",
            &["id", "workspace_id", "ticket_id", "direction", "channel", "author_kind", "body_text", "created_at"],
            rows,
        )
        .await?;
        for chunk in docs.chunks(2000) {
            crate::search::index_many(&txn, chunk.to_vec()).await?;
        }
        txn.commit().await?;
        done += k as u64;
    }
    Ok(())
}

const HOUR_MS: i64 = 3_600_000;

/// Tickets per seeding transaction.
const SEED_CHUNK: u64 = 2_000;
