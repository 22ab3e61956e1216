//! The ground floor of the database: the error type every module's SQL returns, the
//! connection helpers that name each session after its role, and every advisory lock the
//! store takes. Everything above it may call it; it calls nothing of the store.

mod connect;
pub mod lease;
pub mod locks;

pub use connect::{IDLE_IN_TRANSACTION, Target, pool, session, worker_pool};

/// What can go wrong talking to PostgreSQL or managing the log in it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL refused a statement or could not be reached.
    #[error("database error while trying to {action}: {}", said(source))]
    Database {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// No connection could be made: where the store looked and why (never the password).
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable {
        /// Host, port, database and user.
        target: Box<Target>,
        /// Why the last attempt failed.
        reason: String,
    },
    /// The server refused a connection (a wrong password, no such database): where, and
    /// what it said.
    #[error("PostgreSQL at {target} refused the connection: {}", said(source))]
    Refused {
        /// Host, port, database and user.
        target: Box<Target>,
        /// The server's error.
        source: sqlx::Error,
    },
    /// A migration could not be applied or reverted.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// An event's month has no partition (detached while the store ran, or a bug).
    #[error(
        "an event's month has no partition of the log ({0}); run `activity-store partitions ensure`"
    )]
    NoPartition(String),
    /// Another ingestor became the stream's leader: this one must commit nothing more.
    #[error("another ingestor has taken over stream {stream}; this one stops")]
    Superseded {
        /// The stream.
        stream: String,
    },
}

impl DbError {
    /// Whether retrying later may succeed. Only failures caused by the data itself are
    /// final: SQLSTATE classes 22 (data exception), 23 (integrity constraint) and 54 (program
    /// limit). Anything else (unreachable server, disk full, too many connections, a
    /// read-only replica after failover, timeouts) is the system's fault, not the message's.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Database { source, .. } | DbError::Refused { source, .. } => !sqlstate(source)
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
            DbError::Unreachable { .. } => true,
            DbError::NoPartition(_) | DbError::Migrate(_) | DbError::Superseded { .. } => false,
        }
    }

    /// Whether retrying cannot help and no message is at fault: the store is misconfigured
    /// (SQLSTATE class 42: a missing table or function, a privilege or row-level security
    /// refusal; 28: authentication; 3D: no such database). Workers stop on these rather than
    /// retry in silence or dead-letter good messages.
    pub fn is_fatal(&self) -> bool {
        match self {
            DbError::Database { source, .. } | DbError::Refused { source, .. } => sqlstate(source)
                .is_some_and(|c| c.starts_with("42") || c.starts_with("28") || c.starts_with("3D")),
            DbError::Migrate(_) => true,
            DbError::Unreachable { .. } | DbError::NoPartition(_) | DbError::Superseded { .. } => {
                false
            }
        }
    }

    /// The SQLSTATE PostgreSQL answered with, if it answered.
    pub fn code(&self) -> Option<String> {
        match self {
            DbError::Database { source, .. } | DbError::Refused { source, .. } => sqlstate(source),
            _ => None,
        }
    }
}

/// What PostgreSQL said: its message and hint, without the driver's ` at line N` (a line of
/// the server's C source, no help to anyone reading the error).
fn said(e: &sqlx::Error) -> String {
    let Some(d) = e.as_database_error() else {
        return e.to_string();
    };
    let hint = d
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|p| p.hint())
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default();
    format!("{}{hint}", d.message())
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// Wraps a driver result with what was being done.
pub(crate) fn db<T>(r: Result<T, sqlx::Error>, action: &'static str) -> Result<T, DbError> {
    r.map_err(|source| DbError::Database { action, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_error_that_is_not_the_servers_is_said_whole() {
        let e = DbError::Database {
            action: "connect",
            source: sqlx::Error::PoolTimedOut,
        };
        assert_eq!(
            e.to_string(),
            format!(
                "database error while trying to connect: {}",
                sqlx::Error::PoolTimedOut
            )
        );
    }
}
