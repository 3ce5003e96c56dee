//! The `plugdesk` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::Role;
use crate::config::Config;
use crate::error::{Error, Result};

/// Plugdesk: a helpdesk you assemble yourself.
#[derive(Debug, Parser)]
#[command(
    name = "plugdesk",
    version,
    about,
    long_about = "Plugdesk: a customer-service helpdesk in one binary.\n\nStart with `plugdesk serve`: on first start it creates ./data with an SQLite database and a workspace called `default`, and prints the admin's API token. Set DATABASE_URL=postgres://… to use PostgreSQL instead."
)]
pub(crate) struct Cli {
    /// Configuration file (default: ./plugdesk.toml if it exists).
    #[arg(long, global = true, env = "PLUGDESK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DataArgs {
    /// Data directory holding the SQLite database [env: PLUGDESK_DATA] [default: ./data]
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates the database and a `default` workspace on first start).
    Serve {
        #[command(flatten)]
        data: DataArgs,
        /// Address to listen on [env: PLUGDESK_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create a workspace with an admin; prints the admin's API token on the last line.
    Init {
        #[command(flatten)]
        data: DataArgs,
        /// Workspace name (a-z, 0-9, _ and -).
        #[arg(long, default_value = "default")]
        workspace: String,
        /// The admin's e-mail address.
        #[arg(long, default_value = "admin@localhost")]
        admin_email: String,
        /// Start without the default workflow library (workflows/).
        #[arg(long)]
        no_default_workflows: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage the key that encrypts stored secrets (channel, automation and webhook secrets).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Import customers or tickets from a CSV file (header row required).
    Import {
        #[command(flatten)]
        data: DataArgs,
        /// Workspace to import into.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// What the file holds.
        #[arg(value_enum)]
        kind: crate::import::Kind,
        /// The CSV file. Customers: name,email,phone,organization,tier,language.
        /// Tickets: subject,body,email,name,channel,priority,tags,external_id (tags separated by `;`).
        file: PathBuf,
    },
    /// Measure the server: start it on a scratch database and load it from this process.
    Bench(crate::bench::Options),
    /// Deliver one e-mail read from standard input to an e-mail channel, as an MTA's pipe
    /// (`| plugdesk mail-in --instance 3 --sender ${sender}`). Exit codes follow sysexits:
    /// 0 stored where an agent sees it (a ticket, a message on one, a note), 65 the message was
    /// refused (kept as a failed payload), 77 the channel refused the token, 78 an unknown
    /// channel or one without an `inbound_token`, 75 a temporary failure or nothing stored (the
    /// MTA keeps the message and tries again later).
    MailIn {
        #[command(flatten)]
        data: DataArgs,
        /// The e-mail channel's id (`GET /api/v1/channels`).
        #[arg(long)]
        instance: i64,
        /// The envelope sender, as the mail server's pipe passes it (Postfix `${sender}`):
        /// the sender of a message whose headers name none.
        #[arg(long, value_name = "ADDRESS")]
        sender: Option<String>,
    },
    /// Write, build and test channel plugins.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
}

#[derive(Debug, Subcommand)]
enum PluginAction {
    /// Create a plugin crate NAME (with the SDK, a fixture and a README) in --dir.
    New {
        /// Plugin id: a-z, 0-9 and -, starting with a letter.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin crate in --dir for wasm32-wasip2 and check it in the plugin host.
    Build {
        /// The plugin crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build, then run every fixtures/*.toml against the plugin in the real sandbox.
    Test {
        /// The plugin crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Operator: install a plugin component for the whole installation (every workspace may
    /// use it; it replaces a bundled plugin of the same id). Running servers load it within
    /// seconds.
    Install {
        #[command(flatten)]
        data: DataArgs,
        /// The component (`*.wasm`, e.g. from `plugdesk plugin build`).
        file: PathBuf,
    },
    /// Operator: make the previous version of an installation-wide plugin active again.
    Rollback {
        #[command(flatten)]
        data: DataArgs,
        /// Plugin id.
        id: String,
    },
    /// Operator: list every stored plugin version, installation-wide and per workspace.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token for an agent (default: the workspace's first admin) and print it.
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// Workspace.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// The agent's e-mail address.
        #[arg(long)]
        agent: Option<String>,
        /// admin or agent.
        #[arg(long, default_value = "admin")]
        role: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsAction {
    /// Make a new key, re-encrypt every stored secret with it in one transaction, and keep the
    /// old key as secret.key.<id>.bak. Restart the server (every node) afterwards.
    Rotate {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn config(path: Option<&PathBuf>, data: &DataArgs) -> Result<Config> {
    let mut cfg = Config::load(path.map(PathBuf::as_path))?;
    if let Some(d) = &data.data {
        cfg.data = d.clone();
    }
    Ok(cfg)
}

/// Whether the channel's answer to a piped message says it is stored where an agent sees it:
/// on at least one ticket, or skipped as the channel's own message (a copy of a reply, which is
/// stored already).
fn stored_somewhere(body: &str) -> bool {
    let answer: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    answer["tickets"].as_array().is_some_and(|t| !t.is_empty()) || answer["skipped"] == "own message"
}

/// `plugdesk mail-in`: reads a message from standard input and hands it to the channel.
async fn mail_in(path: Option<&PathBuf>, data: &DataArgs, instance: i64, sender: Option<String>) -> ExitCode {
    const EX_DATAERR: u8 = 65;
    const EX_TEMPFAIL: u8 = 75;
    const EX_NOPERM: u8 = 77;
    const EX_CONFIG: u8 = 78;
    use std::io::Read as _;
    let started = std::time::Instant::now();
    let ms = |since: std::time::Instant| since.elapsed().as_secs_f64() * 1000.0;
    let result = async {
        let cfg = config(path, data)?;
        // An MTA keeps what a pipe writes to stderr: only what went wrong.
        init_tracing(&cfg.log_format, "warn");
        let mut raw = Vec::new();
        let max = cfg.limits.max_body_bytes;
        std::io::stdin().lock().take(max as u64 + 1).read_to_end(&mut raw)?;
        if raw.len() > max {
            return Ok((EX_DATAERR, format!("the message is larger than limits.max_body_bytes ({max} bytes)")));
        }
        let read = std::time::Instant::now();
        let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
        let core = crate::Core::new(conn, &cfg)?;
        let opened = std::time::Instant::now();
        // Only the channel's own plugin, as the server recorded it; the whole start-up pass over
        // every plugin only when that is not there yet.
        let key = crate::channel::plugin_key(&core, instance).await?;
        let loader = match core.channels().load_only(core.db(), &key).await {
            Ok(()) => None,
            Err(e) => {
                tracing::debug!(error = %e, plugin = %key, "loading every plugin");
                let plugins_dir = cfg.plugins_dir.clone().unwrap_or_else(|| cfg.data.join("plugins"));
                let loader = tokio::spawn(core.channels().clone().run(core.db().clone(), Some(plugins_dir)));
                core.channels().wait_loaded().await;
                Some(loader)
            }
        };
        let loaded = std::time::Instant::now();
        let reply = crate::channel::mail_in(&core, instance, raw, sender).await;
        if let Some(loader) = loader {
            loader.abort();
        }
        // Where a piped message's time goes (`PLUGDESK_LOG=plugdesk_core::cli=debug`; the
        // bench reads it): everything before `main` is not counted here.
        tracing::debug!(
            start_ms = format!("{:.2}", ms(started) - ms(read)),
            database_ms = format!("{:.2}", ms(read) - ms(opened)),
            plugins_ms = format!("{:.2}", ms(opened) - ms(loaded)),
            delivery_ms = format!("{:.2}", ms(loaded)),
            "mail-in timings"
        );
        let answer = reply?;
        let body = String::from_utf8_lossy(&answer.body()).into_owned();
        use crate::channel::{Answer, Refusal};
        let taken = match &answer {
            Answer::Taken(_) => true,
            Answer::Plugin(r) => (200..=299).contains(&r.status),
            Answer::Refused { .. } => false,
        };
        Ok(match answer {
            _ if taken && stored_somewhere(&body) => (0, body),
            // Success without a ticket would let the mail server delete a message nobody sees.
            _ if taken => (EX_TEMPFAIL, format!("the channel stored nothing for an agent to see: {body}")),
            Answer::Refused { why: Refusal::Rejected, .. } => (EX_NOPERM, body),
            Answer::Refused {
                why: Refusal::InvalidRequest | Refusal::InvalidPayload | Refusal::InvalidMessage | Refusal::TooLarge,
                ..
            } => (EX_DATAERR, body),
            Answer::Plugin(r) if (400..=499).contains(&r.status) => (EX_DATAERR, body),
            _ => (EX_TEMPFAIL, body),
        })
    }
    .await;
    match result {
        Ok((0, body)) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!("error: channel {instance} did not take the message: {body}");
            ExitCode::from(code)
        }
        Err(crate::Error::NotFound(_)) => {
            eprintln!("error: there is no channel {instance} (GET /api/v1/channels lists them)");
            ExitCode::from(EX_CONFIG)
        }
        Err(e @ crate::Error::Config(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e} (temporary; try again)");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}

/// Logs to stderr at `default` level unless `PLUGDESK_LOG` says otherwise.
fn init_tracing(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLUGDESK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: an MTA (mail-in), systemd or a log file keeps
    // the text as it is, escape codes and all.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Parses the command line and runs it; the exit code says whether it worked.
pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::MailIn { data, instance, sender } = &cli.command {
        return runtime.block_on(mail_in(cli.config.as_ref(), data, *instance, sender.clone()));
    }
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<()> {
    let path = cli.config.as_ref();
    match cli.command {
        Command::Serve { data, listen } => {
            let mut cfg = config(path, &data)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            init_tracing(&cfg.log_format, "info");
            crate::server::serve(cfg, plugdesk_web::router).await
        }
        Command::Init { data, workspace, admin_email, no_default_workflows } => {
            let cfg = config(path, &data)?;
            init_tracing(&cfg.log_format, "info");
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            let library = if no_default_workflows { Vec::new() } else { crate::workflow::library()? };
            let created = crate::workspace::create(&conn, &workspace, &admin_email, &library).await?;
            println!(
                "Created workspace {:?} (id {}) with admin {} in {}.",
                created.name,
                created.workspace_id,
                admin_email,
                crate::db::redact(&cfg.database_url())
            );
            println!("Admin setup link (open it in a browser to set the admin's password; once, within 7 days):");
            println!(
                "{}",
                crate::account::link_url(&cfg.public_url(), crate::account::LinkPurpose::Setup, &created.setup_token)
            );
            println!("Admin API token (shown once):");
            println!("{}", created.admin_token);
            Ok(())
        }
        Command::Migrate { data } => {
            let cfg = config(path, &data)?;
            init_tracing(&cfg.log_format, "info");
            if cfg.database_url.is_none() {
                std::fs::create_dir_all(&cfg.data)?;
            }
            let conn = crate::db::connect(&cfg.database_url(), crate::db::Usage::Command).await?;
            let applied = crate::db::migrate(&conn).await?;
            if applied.is_empty() {
                println!("Database is up to date.");
            } else {
                println!("Applied {} migration(s): {}", applied.len(), applied.join(", "));
            }
            Ok(())
        }
        Command::Secrets { action: SecretsAction::Rotate { data } } => {
            let cfg = config(path, &data)?;
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            let (id, n) = crate::secret::rotate(&conn, &cfg.data).await?;
            println!(
                "Re-encrypted {n} secret(s) with the new key {id}; the old key is kept as a secret.key.*.bak file."
            );
            println!("Copy secret.key to every node and restart them.");
            Ok(())
        }
        Command::Token { action: TokenAction::Create { data, workspace, agent, role, name } } => {
            let cfg = config(path, &data)?;
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            let ws = crate::workspace::find_by_name(&conn, &workspace).await.map_err(|_| {
                Error::invalid(
                    "workspace",
                    format!(
                        "workspace {workspace:?} does not exist; create it with plugdesk init --workspace {workspace}"
                    ),
                )
            })?;
            let role = Role::parse(&role)?;
            let agents = crate::agent::list(&conn, ws.id).await?;
            let agent = match &agent {
                Some(email) => agents.iter().find(|a| &a.email == email).ok_or_else(|| {
                    Error::invalid("agent", format!("no agent with e-mail {email} in workspace {workspace}"))
                })?,
                None => agents.iter().find(|a| a.role == Role::Admin && a.active).ok_or_else(|| {
                    Error::invalid("agent", "the workspace has no active admin; name an agent with --agent")
                })?,
            };
            if !agent.active {
                return Err(Error::invalid(
                    "agent",
                    format!("{} is deactivated; its tokens would be refused", agent.email),
                ));
            }
            if role == Role::Admin && agent.role != Role::Admin {
                return Err(Error::invalid("role", format!("{} is not an admin; use --role agent", agent.email)));
            }
            let (_, token) = crate::auth::create_token(&conn, ws.id, agent.id, &name, role).await?;
            println!("{token}");
            Ok(())
        }
        Command::Import { data, workspace, kind, file } => {
            let cfg = config(path, &data)?;
            init_tracing(&cfg.log_format, "info");
            crate::import::run(&cfg, &workspace, kind, &file).await
        }
        Command::Bench(opts) => crate::bench::run(opts).await,
        Command::MailIn { .. } => Err(Error::Internal("mail-in runs on its own path".into())),
        Command::Plugin { action: PluginAction::New { name, dir } } => {
            let root = crate::devkit::new_plugin(&name, &dir)?;
            println!("Created plugin {name} in {}.", root.display());
            println!("Next: cd {} && plugdesk plugin test", root.display());
            Ok(())
        }
        Command::Plugin { action: PluginAction::Build { dir } } => {
            let (path, wasm, d) = tokio::task::spawn_blocking(move || crate::devkit::build(&dir))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            println!("Built {} {} ({} bytes): {}", d.id, d.version, wasm.len(), path.display());
            println!(
                "Upload for your workspace: curl -X POST -H \"authorization: Bearer $TOKEN\" -H \"content-type: application/wasm\" --data-binary @{} http://127.0.0.1:8080/api/v1/plugins",
                path.display()
            );
            println!("Or, as the operator, for every workspace: plugdesk plugin install {}", path.display());
            Ok(())
        }
        Command::Plugin { action: PluginAction::Install { data, file } } => {
            let cfg = config(path, &data)?;
            let wasm = std::fs::read(&file)
                .map_err(|e| Error::invalid("file", format!("cannot read {}: {e}", file.display())))?;
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            let registry = std::sync::Arc::new(crate::plugin::Registry::new(
                plugdesk_host::Limits::default(),
                Some(cfg.data.join("cache").join("plugins")),
                cfg.tls_ca_file.as_deref(),
                std::sync::Arc::new(crate::egress::Policy::new(&cfg.network.allow)?),
                &cfg.server,
            )?);
            let (id, version) = registry.install_for_installation(&conn, wasm).await.map_err(|e| match e {
                Error::Invalid { message, .. } => Error::invalid("file", format!("{}: {message}", file.display())),
                other => other,
            })?;
            println!("Installed {id} {version} for the whole installation; running servers load it within seconds.");
            Ok(())
        }
        Command::Plugin { action: PluginAction::Rollback { data, id } } => {
            let cfg = config(path, &data)?;
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            let version = crate::plugin::Registry::rollback_installation(&conn, &id).await?;
            println!("{id} {version} is active again; running servers load it within seconds.");
            Ok(())
        }
        Command::Plugin { action: PluginAction::List { data } } => {
            let cfg = config(path, &data)?;
            let conn = crate::server::open(&cfg, crate::db::Usage::Command).await?;
            for line in crate::plugin::stored_versions(&conn).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Plugin { action: PluginAction::Test { dir } } => {
            tokio::task::spawn_blocking(move || crate::devkit::test(&dir))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        }
    }
}
