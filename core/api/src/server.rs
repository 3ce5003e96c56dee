//! `plugdesk serve`: opens (and on first start, creates) the database, starts the SLA
//! scheduler and serves the HTTP API until SIGINT or SIGTERM, with the `[server]` limits
//! against slow and greedy clients.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::api::error::ApiError;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::{Core, api, channel, db, outbox, sla, workspace};

/// Opens the database named by the configuration, creating the data directory for SQLite, and
/// applies pending migrations.
///
/// # Errors
/// [`Error::Config`] when the directory or database cannot be opened.
pub async fn open(cfg: &Config, usage: db::Usage) -> Result<sea_orm::DatabaseConnection> {
    if cfg.database_url.is_none() {
        std::fs::create_dir_all(&cfg.data)
            .map_err(|e| Error::Config(format!("cannot create data directory {}: {e}", cfg.data.display())))?;
    }
    crate::secret::install(&cfg.data)?;
    let conn = db::connect(&cfg.database_url(), usage).await?;
    let applied = db::migrate(&conn).await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "database migrated");
    }
    let sealed = crate::secret::seal_plaintext(&conn).await?;
    if sealed > 0 {
        tracing::info!(secrets = sealed, "encrypted secrets stored before encryption");
    }
    Ok(conn)
}

/// Runs the server until a shutdown signal: the JSON API and, merged beside it, the routes of
/// `pages` (the web application, from a crate above this one).
///
/// # Errors
/// When the database cannot be opened or the address cannot be bound.
pub async fn serve(cfg: Config, pages: fn(Core) -> Router) -> Result<()> {
    let conn = open(&cfg, db::Usage::Server { pool_size: cfg.pool_size }).await?;
    let created = if workspace::count(&conn).await? == 0 {
        Some(workspace::create(&conn, "default", "admin@localhost", &crate::workflow::library()?).await?)
    } else {
        None
    };
    let addr: SocketAddr =
        cfg.listen.parse().map_err(|_| Error::Config(format!("listen address {:?} is not HOST:PORT", cfg.listen)))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let mut cfg = cfg;
    if cfg.public_url.is_none() {
        // Links in templates point at the address actually bound (port 0 picks one).
        cfg.public_url = Some(format!("http://{local}"));
    }
    if let Some(created) = created {
        println!("First start: created workspace \"default\" with an admin.");
        println!("Open this link to set the admin's password (once, within 7 days):");
        println!(
            "{}",
            crate::account::link_url(&cfg.public_url(), crate::account::LinkPurpose::Setup, &created.setup_token)
        );
        println!("Admin API token (shown once; keep it): {}", created.admin_token);
    }
    let core = Core::new(conn, &cfg)?;
    let plugins_dir = cfg.plugins_dir.clone().unwrap_or_else(|| cfg.data.join("plugins"));
    tokio::spawn(core.channels().clone().run(core.db().clone(), Some(plugins_dir)));
    tokio::spawn(outbox::run(core.clone()));
    tokio::spawn(crate::dispatch::run(core.clone()));
    tokio::spawn(channel::run_polls(core.clone(), Duration::from_millis(cfg.outbox.poll_tick_ms.max(10))));
    tokio::spawn(channel::run_deliveries(core.clone()));
    tokio::spawn(channel::run_cleanup(core.clone()));
    tokio::spawn(sla::run(core.domain().clone(), Duration::from_millis(cfg.sla_tick_ms.max(10))));
    tokio::spawn(db::maintenance_loop(core.db().clone()));
    tokio::spawn(crate::webhook::run(core.clone()));
    tokio::spawn(crate::schedule::run(core.clone()));
    tokio::spawn(crate::auth::follow_changes(core.domain().clone()));
    println!(
        "Plugdesk {} listening on http://{local} (database: {})",
        env!("CARGO_PKG_VERSION"),
        db::redact(&cfg.database_url())
    );
    tracing::info!(%local, "listening");
    let app = api::app(core.clone()).merge(pages(core));
    serve_http(listener, app, &cfg.server, shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The connection limits of `[server]`, as durations.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Serves `app` on `listener` until `stop` resolves, then lets open requests finish.
///
/// Not `axum::serve`: it gives no way to set hyper's header-read timer, so a client that
/// stalls in the middle of its headers would hold a connection (and a task) for ever.
async fn serve_http(listener: TcpListener, app: Router, limits: &config::Server, stop: impl Future<Output = ()>) {
    let request_timeout = Duration::from_millis(limits.request_timeout_ms.max(1));
    let app = app
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| request_deadline(request_timeout, req, next)));
    let timeouts = Timeouts {
        header: Duration::from_millis(limits.header_timeout_ms.max(1)),
        idle: Duration::from_millis(limits.idle_timeout_ms.max(1)),
    };
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let slots = Arc::new(Semaphore::new(max as usize));
    let (closing, closing_rx) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        // A slot first, then accept: beyond `max_connections` new connections wait in the
        // kernel's listen backlog (not served, costing us nothing) until one closes.
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: give closing connections a moment.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(stream, peer, app.clone(), timeouts, closing_rx.clone(), slot));
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a slot until it ends: all slots back means all requests answered.
    let _ = slots.acquire_many(max).await;
}

/// Answers 408 when a request (reading its body included) takes longer than `limit`.
async fn request_deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {} ms; send the body at once, or in smaller requests",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Serves one connection: hyper's header-read timer, and a close when no byte has moved for
/// the idle timeout (a client that stopped reading our answer or sending its body).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    t: Timeouts,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched { inner: stream, started, last: last.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(t.header);
    // The peer's address reaches handlers as axum's `ConnectInfo` (rate limits of the public
    // endpoints), as `into_make_service_with_connect_info` would give it.
    let app = tower::ServiceExt::map_request(app, move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        req
    });
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(app)));
    let mut draining = false;
    // Set at shutdown: a response still going then (an agent page's live stream never ends by
    // itself; its browser reconnects to another node) is cut.
    let mut cut_at: Option<Instant> = None;
    loop {
        let idle_until = started + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            _ = closing.changed(), if !draining => {
                draining = true;
                cut_at = Some(Instant::now() + SHUTDOWN_GRACE);
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until_some(cut_at) => {
                tracing::debug!("connection cut at shutdown");
                return;
            }
            () = tokio::time::sleep_until(idle_until) => {
                if Instant::now() >= started + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle {
                    tracing::debug!("idle connection closed");
                    return;
                }
            }
        }
    }
}

/// How long requests in flight at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A socket that remembers when a byte last moved (milliseconds after `started`).
struct Watched {
    inner: TcpStream,
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        self.last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
