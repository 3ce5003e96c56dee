//! `plugdesk serve`: opens (and on first start, creates) the database, starts the SLA
//! scheduler and serves the HTTP API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
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

/// Runs the server until a shutdown signal.
///
/// # Errors
/// When the database cannot be opened or the address cannot be bound.
pub async fn serve(cfg: Config) -> Result<()> {
    let conn = open(&cfg, db::Usage::Server { pool_size: cfg.pool_size }).await?;
    if workspace::count(&conn).await? == 0 {
        let created = workspace::create(&conn, "default", "admin@localhost", true).await?;
        println!("First start: created workspace \"default\" with an admin.");
        println!("Admin API token (shown once; keep it): {}", created.admin_token);
    }
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
    let core = Core::new(conn, &cfg)?;
    let plugins_dir = cfg.plugins_dir.clone().unwrap_or_else(|| cfg.data.join("plugins"));
    tokio::spawn(core.channels().clone().run(core.db().clone(), Some(plugins_dir)));
    tokio::spawn(outbox::run(core.clone()));
    tokio::spawn(crate::dispatch::run(core.clone()));
    tokio::spawn(channel::run_polls(core.clone(), Duration::from_millis(cfg.outbox.poll_tick_ms.max(10))));
    tokio::spawn(channel::run_deliveries(core.clone()));
    tokio::spawn(channel::run_cleanup(core.clone()));
    tokio::spawn(sla::run(core.clone(), Duration::from_millis(cfg.sla_tick_ms.max(10))));
    tokio::spawn(db::maintenance_loop(core.db().clone()));
    tokio::spawn(crate::webhook::run(core.clone()));
    tokio::spawn(crate::schedule::run(core.clone()));
    tokio::spawn(crate::auth::follow_changes(core.clone()));
    println!(
        "Plugdesk {} listening on http://{local} (database: {})",
        env!("CARGO_PKG_VERSION"),
        db::redact(&cfg.database_url())
    );
    tracing::info!(%local, "listening");
    // The peer's address reaches handlers (rate limits of the public endpoints).
    axum::serve(listener, api::app(core).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await?;
    tracing::info!("stopped");
    Ok(())
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
