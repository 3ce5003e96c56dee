//! `plugdesk import`: customers or tickets from a CSV file with a header row. Rows go through
//! the same code as the API (tickets through the group-commit writer, many in flight), so an
//! import obeys every rule the API does. A bad row is reported as `FILE:LINE: message` and
//! skipped; the other rows are imported.

use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::customer::NewCustomer;
use crate::error::{Error, Result};
use crate::ticket::NewTicket;
use crate::{Core, server, workspace};

/// Tickets in flight at once; enough to fill the writer's batches.
const IN_FLIGHT: usize = 256;

/// What a CSV file holds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Kind {
    /// name,email,phone,organization,tier,language
    Customers,
    /// subject,body,email,name,channel,priority,tags,external_id
    Tickets,
}

#[derive(Debug, Deserialize)]
struct CustomerRow {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    organization: Option<String>,
    tier: Option<String>,
    language: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TicketRow {
    subject: String,
    body: String,
    email: Option<String>,
    name: Option<String>,
    channel: Option<String>,
    priority: Option<String>,
    tags: Option<String>,
    external_id: Option<String>,
}

fn blank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// A progress bar on standard error: redrawn in place on a terminal, a line per 10% otherwise.
struct Progress {
    total: u64,
    done: u64,
    failed: u64,
    tty: bool,
    last: Instant,
    last_decile: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            done: 0,
            failed: 0,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            last_decile: 0,
        }
    }

    fn tick(&mut self, ok: bool) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        let decile = self.done * 10 / self.total.max(1);
        if (self.tty && self.last.elapsed() > Duration::from_millis(100))
            || (!self.tty && decile > self.last_decile)
            || self.done == self.total
        {
            self.draw();
            self.last = Instant::now();
            self.last_decile = decile;
        }
    }

    fn draw(&self) {
        let width = 30;
        let filled = (self.done * width / self.total.max(1)) as usize;
        let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width as usize - filled));
        let end = if self.tty && self.done < self.total { "\r" } else { "\n" };
        eprint!("[{bar}] {}/{} rows, {} failed{end}", self.done, self.total, self.failed);
        let _ = std::io::stderr().flush();
    }
}

/// Imports `file` into `workspace_name`.
///
/// # Errors
/// When the file cannot be read or has no usable header, or when rows failed (after
/// importing the others).
pub(crate) async fn run(cfg: &Config, workspace_name: &str, kind: Kind, file: &Path) -> Result<()> {
    let conn = server::open(cfg, crate::db::Usage::Command).await?;
    let ws = workspace::find_by_name(&conn, workspace_name)
        .await
        .map_err(|_| Error::invalid("workspace", format!("workspace {workspace_name:?} does not exist")))?;
    let core = Core::new(conn, cfg)?;
    let name = file.display().to_string();
    let open = || {
        csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(file)
            .map_err(|e| Error::Config(format!("{name}: {e}")))
    };
    let total = open()?.records().count() as u64;
    let mut reader = open()?;
    let mut progress = Progress::new(total);
    let started = Instant::now();
    let actor = "import";
    let mut errors: Vec<(u64, String)> = Vec::new();
    match kind {
        Kind::Customers => {
            let mut organizations = std::collections::HashMap::new();
            let mut line = 1;
            for row in reader.deserialize::<CustomerRow>() {
                line += 1;
                let result = match row {
                    Ok(r) => match organization_id(&core, ws.id, blank(r.organization), &mut organizations).await {
                        Ok(organization_id) => {
                            let input = NewCustomer {
                                id: None,
                                name: blank(r.name),
                                email: blank(r.email),
                                phone: blank(r.phone),
                                identities: vec![],
                                organization_id,
                                tier: blank(r.tier),
                                language: blank(r.language),
                                attributes: None,
                                learned: false,
                            };
                            crate::customer::create(&core, ws.id, actor, &input).await.map(|_| ())
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(csv_error(e)),
                };
                record(&mut errors, &mut progress, &name, line, result);
            }
        }
        Kind::Tickets => {
            let mut tasks: JoinSet<(u64, Result<()>)> = JoinSet::new();
            let mut records = reader.deserialize::<TicketRow>();
            let mut line = 1;
            loop {
                while tasks.len() < IN_FLIGHT {
                    let Some(row) = records.next() else { break };
                    line += 1;
                    let this_line = line;
                    match row {
                        Ok(r) => {
                            let input = ticket_input(r);
                            let core = core.clone();
                            let limits = cfg.limits.clone();
                            tasks.spawn(async move {
                                let r = match input {
                                    Ok(input) => core.writer().create(ws.id, actor, input, &limits).await.map(|_| ()),
                                    Err(e) => Err(e),
                                };
                                (this_line, r)
                            });
                        }
                        Err(e) => record(&mut errors, &mut progress, &name, this_line, Err(csv_error(e))),
                    }
                }
                match tasks.join_next().await {
                    Some(Ok((l, r))) => record(&mut errors, &mut progress, &name, l, r),
                    Some(Err(e)) => return Err(Error::Internal(format!("import task failed: {e}"))),
                    None => break,
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    errors.sort();
    for (_, e) in &errors {
        eprintln!("{e}");
    }
    let imported = progress.done - progress.failed;
    println!(
        "Imported {imported} of {total} rows from {name} in {secs:.1} s ({:.0} rows/s).",
        imported as f64 / secs.max(1e-9)
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: None,
            message: format!("{} row(s) of {name} were not imported; see the lines above", errors.len()),
        })
    }
}

/// The id of the organisation named in a row, created on first mention.
async fn organization_id(
    core: &Core,
    workspace_id: i64,
    name: Option<String>,
    known: &mut std::collections::HashMap<String, i64>,
) -> Result<Option<i64>> {
    let Some(name) = name else { return Ok(None) };
    if let Some(id) = known.get(&name) {
        return Ok(Some(*id));
    }
    let existing = crate::organization::list(core.db(), workspace_id).await?.into_iter().find(|o| o.name == name);
    let id = match existing {
        Some(o) => o.id,
        None => {
            let spec = crate::organization::OrganizationSpec { name: name.clone(), domain: None, attributes: None };
            crate::organization::save(core.db(), workspace_id, None, &spec).await?.id
        }
    };
    known.insert(name, id);
    Ok(Some(id))
}

fn ticket_input(r: TicketRow) -> Result<NewTicket> {
    let priority = blank(r.priority).map(|p| crate::ticket::Priority::parse(&p)).transpose()?;
    Ok(NewTicket {
        subject: r.subject,
        body: r.body,
        body_html: None,
        body_quoted: None,
        raw: None,
        customer: NewCustomer {
            id: None,
            name: blank(r.name),
            email: blank(r.email),
            phone: None,
            identities: vec![],
            organization_id: None,
            tier: None,
            language: None,
            attributes: None,
            learned: false,
        },
        channel: blank(r.channel),
        priority,
        tags: blank(r.tags).map(|t| t.split(';').map(str::to_owned).collect()).unwrap_or_default(),
        category: None,
        attributes: None,
        external_id: blank(r.external_id),
        team_id: None,
        assignee_id: None,
        attachments: vec![],
        conversation: None,
        channel_id: None,
        receipt: None,
    })
}

fn csv_error(e: csv::Error) -> Error {
    Error::Invalid { field: None, message: format!("cannot read the row: {e}") }
}

fn record(errors: &mut Vec<(u64, String)>, progress: &mut Progress, file: &str, line: u64, result: Result<()>) {
    if let Err(e) = &result {
        errors.push((line, format!("{file}:{line}: {e}")));
    }
    progress.tick(result.is_ok());
}
