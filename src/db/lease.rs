//! A lease: a database session of its own that holds advisory locks for as long as this
//! process is alive and answering. A process that dies loses its session (and every lock on
//! it) the moment its socket closes; one that hangs (stopped, swapped out, stuck) stops
//! pinging, and PostgreSQL ends the idle session after the lease's time to live
//! (`idle_session_timeout`), so a standby takes over either way. A lease found dead is
//! `lost`: its holder must stop acting on it (commits are fenced by epoch besides).

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use super::{DbError, db};

/// How long a hung holder keeps its leases unless told otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// A session holding advisory locks, pinged while this process runs.
pub struct Lease {
    conn: Arc<Mutex<PgConnection>>,
    lost: CancellationToken,
    _pinger: tokio_util::sync::DropGuard,
}

impl Lease {
    /// Opens a session of its own from `pool` that PostgreSQL ends when it has been idle for
    /// `ttl` (at least a second), and pings it every `ttl / 5`.
    pub async fn open(pool: &PgPool, ttl: Duration) -> Result<Lease, DbError> {
        let ttl = ttl.max(Duration::from_secs(1));
        let mut conn = db(pool.acquire().await, "connect for a lease")?.detach();
        db(
            sqlx::query("SELECT set_config('idle_session_timeout', $1, false)")
                .bind(format!("{}ms", ttl.as_millis()))
                .execute(&mut conn)
                .await,
            "bound a lease's idle time",
        )?;
        let conn = Arc::new(Mutex::new(conn));
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        tokio::spawn(ping(conn.clone(), ttl / 5, lost.clone(), stop.clone()));
        Ok(Lease {
            conn,
            lost,
            _pinger: stop.drop_guard(),
        })
    }

    /// Cancelled once the session is found dead (ended by the server, or unreachable).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The session, for statements that must run on it (a blocking lock, a claim).
    pub async fn session(&self) -> MutexGuard<'_, PgConnection> {
        self.conn.lock().await
    }

    /// Takes lock (`class`, `key`) if it is free; true if this session holds it now.
    pub async fn try_take(&self, class: i32, key: i32) -> Result<bool, DbError> {
        let mut conn = self.conn.lock().await;
        self.checked(
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(class)
                .bind(key)
                .fetch_one(&mut *conn)
                .await,
            "take a lease",
        )
    }

    /// Lets lock (`class`, `key`) go.
    pub async fn release(&self, class: i32, key: i32) -> Result<(), DbError> {
        let mut conn = self.conn.lock().await;
        let _: bool = self.checked(
            sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
                .bind(class)
                .bind(key)
                .fetch_one(&mut *conn)
                .await,
            "release a lease",
        )?;
        Ok(())
    }

    /// Fails if the session is gone.
    pub async fn check(&self) -> Result<(), DbError> {
        let mut conn = self.conn.lock().await;
        self.checked(
            sqlx::query("SELECT 1").execute(&mut *conn).await,
            "check a lease",
        )
        .map(|_| ())
    }

    fn checked<T>(
        &self,
        result: Result<T, sqlx::Error>,
        action: &'static str,
    ) -> Result<T, DbError> {
        result.map_err(|e| {
            self.lost.cancel();
            DbError::Database { action, source: e }
        })
    }
}

/// Keeps the session from idling out while this process runs; cancels `lost` when a ping
/// fails, and stops.
async fn ping(
    conn: Arc<Mutex<PgConnection>>,
    every: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut conn = conn.lock().await;
        if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
            tracing::warn!(error = %e, "a lease's session is gone; its locks are lost");
            lost.cancel();
            return;
        }
    }
}

/// How many sessions of this database hold lock (`class`, anything): the members of a
/// group that each hold one of that class.
pub async fn members(conn: &mut PgConnection, class: i32) -> Result<i64, DbError> {
    db(
        sqlx::query_scalar(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 2 AND classid::bigint = ($1::bigint & 4294967295) \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(class)
        .fetch_one(conn)
        .await,
        "count a group's members",
    )
}
