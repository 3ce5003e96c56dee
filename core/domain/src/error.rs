//! The one error type of the domain, which plugdesk-core uses too. The HTTP layer maps each
//! variant to a status code (`api::error` in plugdesk-core, the only place that picks one);
//! the CLI prints the message.

use sea_orm::{DbErr, SqlErr};

/// Everything that can go wrong in the domain and the core. Messages are lowercase and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not exist in this workspace (or belongs to another one: we never say which).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is well-formed JSON but says something we cannot accept.
    #[error("{message}")]
    Invalid {
        /// The field at fault, when there is one.
        field: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The request conflicts with stored data (duplicate identity, taken name, …).
    #[error("{0}")]
    Conflict(String),
    /// A ticket status change the workflow does not allow.
    #[error("cannot change status from {from} to {to}; allowed from {from}: {allowed}")]
    Transition {
        /// The current status.
        from: String,
        /// The requested status.
        to: String,
        /// The statuses that may follow `from`.
        allowed: String,
    },
    /// A script that does not compile or failed to run, with where.
    #[error("line {line}, column {column}: {message}")]
    Script {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The caller is known but its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The server is too busy for this request now (its worker pool is full); retry later.
    #[error("{0}")]
    Busy(String),
    /// Configuration could not be read or is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The database failed; the message is logged, never sent to clients.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Filesystem trouble (data directory, import files).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A bug or an unexpected state; logged, never sent to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::Invalid`] naming a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Invalid { field: Some(field.to_owned()), message: message.into() }
    }

    /// True when the error comes from a unique constraint of the database, which means a
    /// concurrent writer got there first.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Db(e) => matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))),
            _ => false,
        }
    }
}

/// Result alias of the domain and the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("stored json is invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database};

    #[tokio::test]
    async fn unique_violations_are_told_by_the_database_error_kind_not_its_text() {
        let db = Database::connect("sqlite::memory:").await.expect("in-memory sqlite");
        db.execute_unprepared("CREATE TABLE t (name TEXT NOT NULL UNIQUE)").await.expect("create");
        db.execute_unprepared("INSERT INTO t (name) VALUES ('a')").await.expect("first insert");
        let taken = super::Error::from(
            db.execute_unprepared("INSERT INTO t (name) VALUES ('a')").await.expect_err("a violation"),
        );
        assert!(taken.is_unique_violation(), "{taken}");
        let other = super::Error::from(
            db.execute_unprepared("INSERT INTO t (name) VALUES (NULL)").await.expect_err("a violation"),
        );
        assert!(!other.is_unique_violation(), "{other}");
    }
}
