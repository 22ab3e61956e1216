//! Connections: pools whose sessions are named after the store's role, host and process (so
//! `status` and `pg_stat_activity` can tell who holds a lock), and an unreachable server
//! reported with where the store looked and why.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{DbError, db};

/// Where a connection was attempted: host, port, database and user, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name, address or socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database, when the URL names one.
    pub database: Option<String>,
    /// Login.
    pub user: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (database {}, user {})",
            self.host,
            self.port,
            self.database.as_deref().unwrap_or("(default)"),
            self.user
        )
    }
}

/// Connection options for `url` naming the session `activity-store <role> <host>:<pid>`.
pub fn session(url: &str, role: &str) -> Result<PgConnectOptions, DbError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = format!(
        "activity-store {role} {}:{}",
        host.trim(),
        std::process::id()
    );
    Ok(db(PgConnectOptions::from_str(url), "read the database URL")?.application_name(&name))
}

/// A pool for `role`: at most `max` sessions, waiting at most `acquire` for one. A server
/// that cannot be reached is [`DbError::Unreachable`], with one plain attempt's reason (the
/// pool itself says only that it timed out); one that refuses the login is
/// [`DbError::Refused`]. Both name where the store looked.
pub async fn pool(url: &str, role: &str, max: u32, acquire: Duration) -> Result<PgPool, DbError> {
    pool_of(session(url, role)?, max, acquire).await
}

/// How long a projector's (or the API's) session may sit idle inside a transaction before
/// the server ends it, rolling it back: a process that hangs mid-fold (stopped, swapped
/// out) holds its shard's checkpoint rows this long at most, not for ever. A fold's cache
/// writes (seconds at most each) are the longest waits inside its transaction. An
/// ingestor's sessions get the lease's time to live instead: nothing but statements runs
/// inside a batch's transaction, and a hung one holds its shards' append locks.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(30);

/// `pool`, for a running store's roles: a session idle inside a transaction for `idle` is
/// ended by the server.
pub async fn worker_pool(
    url: &str,
    (role, max): (&str, u32),
    acquire: Duration,
    idle: Duration,
) -> Result<PgPool, DbError> {
    let idle = format!("{}ms", idle.as_millis().max(1));
    let options = session(url, role)?.options([("idle_in_transaction_session_timeout", idle)]);
    pool_of(options, max, acquire).await
}

async fn pool_of(
    options: PgConnectOptions,
    max: u32,
    acquire: Duration,
) -> Result<PgPool, DbError> {
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire)
        .connect_with(options.clone())
        .await;
    let e = match pool {
        Ok(pool) => return Ok(pool),
        Err(e) => e,
    };
    let target = Box::new(Target {
        host: options.get_host().to_string(),
        port: options.get_port(),
        database: options.get_database().map(str::to_string),
        user: options.get_username().to_string(),
    });
    // One plain attempt, as long as the pool waited, says why.
    let direct = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options);
    let reason = match tokio::time::timeout(acquire, direct).await {
        // The server answered (a wrong password, no such database): its SQLSTATE decides,
        // as for any statement.
        Ok(Err(source)) if source.as_database_error().is_some() => {
            return Err(DbError::Refused { target, source });
        }
        Ok(Err(direct)) => direct.to_string(),
        Ok(Ok(_)) => e.to_string(),
        Err(_) => format!("no answer within {} s", acquire.as_secs_f64()),
    };
    Err(DbError::Unreachable { target, reason })
}
