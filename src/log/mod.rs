//! The event log: migrations, month partitions and batched, idempotent appends.

mod append;
pub mod archive;
pub mod copy;
pub mod migrate;
pub mod partitions;

pub use append::{
    APPEND_CHANNEL, APPEND_LOCK, APPEND_LOCK_TIMEOUT, AppendOutcome, EventLog, MONTHS_AHEAD,
    append_in, copy_rows, lock_appends,
};

/// What can go wrong writing to or managing the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// PostgreSQL refused a statement or could not be reached.
    #[error("database error while trying to {action}: {source}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
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

impl LogError {
    /// Whether retrying later may succeed. Only failures caused by the data itself are
    /// final: SQLSTATE classes 22 (data exception), 23 (integrity constraint) and 54 (program
    /// limit). Anything else (unreachable server, disk full, too many connections, a
    /// read-only replica after failover, timeouts) is the system's fault, not the message's.
    pub fn is_transient(&self) -> bool {
        match self {
            LogError::Database { source, .. } => !source
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
            LogError::NoPartition(_) | LogError::Migrate(_) | LogError::Superseded { .. } => false,
        }
    }
}

impl LogError {
    /// Whether retrying cannot help and no message is at fault: the store is misconfigured
    /// (SQLSTATE class 42: a missing table or function, a privilege or row-level security
    /// refusal; 28: authentication; 3D: no such database). Workers stop on these rather than
    /// retry in silence or dead-letter good messages.
    pub fn is_fatal(&self) -> bool {
        match self {
            LogError::Database { source, .. } => source
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c.starts_with("42") || c.starts_with("28") || c.starts_with("3D")),
            LogError::Migrate(_) => true,
            LogError::NoPartition(_) | LogError::Superseded { .. } => false,
        }
    }
}

/// Takes transaction-scoped advisory lock `key`.
pub(crate) async fn xact_lock(
    conn: &mut sqlx::PgConnection,
    key: i64,
    action: &'static str,
) -> Result<(), LogError> {
    db(
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(conn)
            .await,
        action,
    )
    .map(|_| ())
}

/// Wraps a driver result with what was being done.
pub(crate) fn db<T>(r: Result<T, sqlx::Error>, action: &'static str) -> Result<T, LogError> {
    r.map_err(|source| LogError::Database { action, source })
}

/// The secret cache entries are sealed with, as the database keeps it (the log's owner and
/// the HTTP API's logins may read it; SQL readers may not).
pub async fn cache_mac(pool: &sqlx::PgPool) -> Result<crate::cache::CacheMac, LogError> {
    let secret: Vec<u8> = db(
        sqlx::query_scalar("SELECT cache_mac_secret()")
            .fetch_one(pool)
            .await,
        "read the cache secret",
    )?;
    Ok(crate::cache::CacheMac::new(&secret))
}
