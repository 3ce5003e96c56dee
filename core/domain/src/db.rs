//! Storage: connecting to SQLite (the default, a file in the data directory) or PostgreSQL,
//! applying the append-only migrations, and the few raw-SQL helpers the batch writers need.

mod migrations;

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

use crate::error::{Error, Result};

pub use migrations::{MIGRATIONS, Migration};

/// Where the data lives: the SQLite file inside the data directory unless a PostgreSQL URL
/// is given.
pub fn database_url(data_dir: &Path, database_url: Option<&str>) -> String {
    match database_url {
        Some(url) if !url.is_empty() => url.to_owned(),
        _ => format!("sqlite://{}?mode=rwc", data_dir.join("plugdesk.db").display()),
    }
}

/// How a pool is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A command that runs and exits: SQLite checkpoints its WAL as it goes.
    Command,
    /// The server: SQLite's WAL is checkpointed by [`maintenance_loop`] instead of inside a
    /// committing transaction, so the ticket writer's commits never wait for a checkpoint's
    /// copy and fsync (which set create latency's p99 at a million tickets).
    Server {
        /// Most connections in the pool (default: 4 on SQLite, 16 on PostgreSQL).
        pool_size: Option<u32>,
    },
}

/// Opens a connection pool. SQLite runs in WAL mode with `synchronous=NORMAL` (durable across
/// process crashes, and the commit cost is one WAL append) and a busy timeout, so readers never
/// block the writer.
pub async fn connect(url: &str, usage: Usage) -> Result<DatabaseConnection> {
    let pool_size = match usage {
        Usage::Server { pool_size } => pool_size,
        Usage::Command => Some(2),
    };
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false).acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        // Several readers plus one writer at a time; more connections only add contention.
        // Each SQLite connection is a driver thread; on two cores, four readers served 8
        // concurrent clients as fast as eight did, and ticket creation 7 % faster.
        opts.max_connections(pool_size.unwrap_or(4)).min_connections(1);
        let autocheckpoint = if matches!(usage, Usage::Server { .. }) { "0" } else { "1000" };
        opts.map_sqlx_sqlite_opts(move |o: SqliteConnectOptions| {
            o.journal_mode(SqliteJournalMode::Wal)
                .pragma("wal_autocheckpoint", autocheckpoint)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .pragma("temp_store", "memory")
                .pragma("cache_size", "-32000")
        });
    } else {
        opts.max_connections(pool_size.unwrap_or(16)).min_connections(1);
    }
    Database::connect(opts).await.map_err(|e| Error::Config(format!("cannot open database {}: {e}", redact(url))))
}

/// SQLite housekeeping in the background, every second (see [`Usage::Server`]): a small step
/// of merging the full-text index's segments (FTS5's own merging is switched off in the
/// schema, because it ran inside whichever insert crossed a threshold and set the p99 of
/// ticket creation), then a `PASSIVE` WAL checkpoint, which never blocks readers or the
/// writer; what either cannot finish now it continues next time.
pub async fn maintenance_loop(db: DatabaseConnection) {
    if db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        for step in
            ["INSERT INTO search_docs (search_docs, rank) VALUES ('merge', 64)", "PRAGMA wal_checkpoint(PASSIVE)"]
        {
            if let Err(e) = db.execute_unprepared(step).await {
                tracing::warn!(error = %e, step, "database housekeeping failed; retrying in a second");
            }
        }
    }
}

/// Hides a password in a database URL before it is printed or logged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Applies every migration not yet recorded in `schema_migrations`, each in its own
/// transaction. Returns the names of the migrations applied now.
pub async fn migrate(db: &DatabaseConnection) -> Result<Vec<&'static str>> {
    let backend = db.get_database_backend();
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let done: Vec<i64> = query_all(db, "SELECT version FROM schema_migrations", vec![])
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<i64>(0))
        .collect::<std::result::Result<_, _>>()?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        if done.contains(&m.version) {
            continue;
        }
        let txn = begin_write(db).await?;
        for statement in m.statements(backend) {
            txn.execute_unprepared(&statement)
                .await
                .map_err(|e| Error::Internal(format!("migration {} ({}) failed: {e}", m.version, m.name)))?;
        }
        exec(
            &txn,
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            vec![m.version.into(), m.name.into(), crate::now_ms().into()],
        )
        .await?;
        txn.commit().await?;
        applied.push(m.name);
    }
    Ok(applied)
}

/// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that
/// reads first and writes later fails with "database is locked" when another writer got in
/// between, while an immediate one waits its turn under the busy timeout.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = if db.get_database_backend() == DbBackend::Sqlite {
        db.begin_with_options(options).await?
    } else {
        db.begin().await?
    };
    Ok(txn)
}

/// Builds a statement from SQL written with `?` placeholders, numbering them `$1, $2, …` for
/// PostgreSQL. Our SQL never contains a literal question mark.
pub fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    if backend == DbBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for ch in sql.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        Statement::from_sql_and_values(backend, out, values)
    } else {
        Statement::from_sql_and_values(backend, sql, values)
    }
}

/// Runs a statement that returns no rows; gives the number of rows affected.
pub async fn exec<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Result<u64> {
    let stmt = statement(db.get_database_backend(), sql, values);
    Ok(db.execute_raw(stmt).await?.rows_affected())
}

/// Runs a query and returns all rows.
pub async fn query_all<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Result<Vec<QueryResult>> {
    let stmt = statement(db.get_database_backend(), sql, values);
    Ok(db.query_all_raw(stmt).await?)
}

/// Runs a query and returns the first row, if any.
pub async fn query_one<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Result<Option<QueryResult>> {
    let stmt = statement(db.get_database_backend(), sql, values);
    Ok(db.query_one_raw(stmt).await?)
}

/// A statement with its values, for [`exec_all`].
pub type Sql = (String, Vec<Value>);

/// Most bind variables in one statement: below SQLite's limit (32,766) and PostgreSQL's
/// (65,535).
const MAX_VARIABLES: usize = 16_000;

/// Builds multi-row `INSERT`s (the statement count, not the row count, is what a batch costs
/// on SQLite), as few as the variable limit allows. Every row must have one value per column.
pub fn insert_statement(table: &str, columns: &[&str], rows: Vec<Vec<Value>>) -> Vec<Sql> {
    let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
    let per_statement = (MAX_VARIABLES / columns.len().max(1)).max(1);
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut values = Vec::with_capacity(per_statement * columns.len());
        for (i, row) in rows.by_ref().take(per_statement).enumerate() {
            debug_assert_eq!(row.len(), columns.len());
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&tuple);
            values.extend(row);
        }
        out.push((sql, values));
    }
    out
}

/// Inserts rows with one multi-row `INSERT`.
pub async fn insert_rows<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    exec_all(db, insert_statement(table, columns, rows)).await
}

/// Runs statements in order. On SQLite they go down as one multi-statement string in a single
/// round trip to the driver's worker thread (its `?` parameters are consumed across the
/// statements in order); that hop, not SQLite itself, is most of a small write's cost.
/// PostgreSQL does not allow several commands in one prepared statement, so there they run
/// one by one.
pub async fn exec_all<C: ConnectionTrait>(db: &C, statements: Vec<Sql>) -> Result<()> {
    if db.get_database_backend() == DbBackend::Sqlite {
        let mut sql = String::new();
        let mut values = Vec::new();
        for (s, v) in statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&s);
            values.extend(v);
        }
        if !sql.is_empty() {
            exec(db, &sql, values).await?;
        }
    } else {
        for (s, v) in statements {
            exec(db, &s, v).await?;
        }
    }
    Ok(())
}

/// Reserves keys in several tables at once (one round trip on SQLite); see [`reserve_ids`].
pub async fn reserve_ids_many<C: ConnectionTrait>(db: &C, wanted: &[(&str, usize)]) -> Result<Vec<Vec<i64>>> {
    if db.get_database_backend() == DbBackend::Postgres {
        let mut out = Vec::with_capacity(wanted.len());
        for (table, n) in wanted {
            out.push(reserve_ids(db, table, *n).await?);
        }
        return Ok(out);
    }
    let columns: Vec<String> =
        wanted.iter().map(|(table, _)| format!("(SELECT COALESCE(MAX(id), 0) FROM {table})")).collect();
    let row = query_one(db, &format!("SELECT {}", columns.join(", ")), vec![])
        .await?
        .ok_or_else(|| Error::Internal("no row from key reservation".into()))?;
    wanted
        .iter()
        .enumerate()
        .map(|(i, (_, n))| {
            let max = row.try_get_by_index::<i64>(i)?;
            Ok((max + 1..=max + *n as i64).collect())
        })
        .collect()
}

/// Reserves `n` fresh primary keys of `table` so that a batch can be written with one
/// multi-row insert and no `RETURNING` (whose row order neither database promises).
///
/// On SQLite the caller holds the write lock (`BEGIN IMMEDIATE`), so `MAX(id)` is stable until
/// it inserts; it must insert the rows before reserving again for the same table. On
/// PostgreSQL the keys come from the table's sequence and are unique across nodes.
pub async fn reserve_ids<C: ConnectionTrait>(db: &C, table: &str, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(vec![]);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let sql = format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, ?)");
        let rows = query_all(db, &sql, vec![(n as i64).into()]).await?;
        rows.iter().map(|r| r.try_get_by_index::<i64>(0).map_err(Error::from)).collect()
    } else {
        let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {table}");
        let row = query_one(db, &sql, vec![]).await?;
        let max = row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
        Ok((max + 1..=max + n as i64).collect())
    }
}

/// Reads one column of a row, turning a type mismatch into an internal error.
pub fn col<T: sea_orm::TryGetable>(row: &QueryResult, name: &str) -> Result<T> {
    row.try_get::<T>("", name).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_in_order() {
        let s = statement(DbBackend::Postgres, "SELECT ? + ?, ?", vec![1.into(), 2.into(), 3.into()]);
        assert_eq!(s.sql, "SELECT $1 + $2, $3");
        let s = statement(DbBackend::Sqlite, "SELECT ?", vec![1.into()]);
        assert_eq!(s.sql, "SELECT ?");
    }

    #[test]
    fn large_inserts_are_split_below_the_variable_limit() {
        let rows: Vec<Vec<Value>> = (0..20_000).map(|i: i64| vec![i.into(), i.into()]).collect();
        let stmts = insert_statement("t", &["a", "b"], rows);
        assert_eq!(stmts.len(), 3);
        assert!(stmts.iter().all(|(_, v)| v.len() <= MAX_VARIABLES));
        assert_eq!(stmts.iter().map(|(_, v)| v.len()).sum::<usize>(), 40_000);
        assert!(insert_statement("t", &["a"], vec![]).is_empty());
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
