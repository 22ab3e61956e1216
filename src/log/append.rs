//! The one append path: a batch of events into the log in the caller's transaction, each
//! command once for ever (`append_in`), and `append_batch`, the same in a transaction of its own.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::{PgConnection, PgPool};

use super::grant::{Append, AppendOutcome};
use super::partitions::{self, Month};
use crate::db::{DbError, db};
use crate::model::NewEvent;

/// How many months past the current one are created when the log is opened.
pub const MONTHS_AHEAD: usize = 3;

/// The event log: appends, with a cache of the month partitions known to exist.
pub struct EventLog {
    pool: PgPool,
    known_months: Mutex<HashSet<Month>>,
    /// The log's shard count when it was opened: how ingest splits a batch by shard.
    shards: u32,
    /// The tenants' activity schemas, compiled once per version.
    contracts: crate::contracts::Cache,
}

impl EventLog {
    /// The log's shard count when it was opened.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Opens the log on a migrated database and creates this month's partition and a few ahead.
    pub async fn open(pool: PgPool) -> Result<EventLog, DbError> {
        let shards = super::shards::count(&pool).await?.max(1) as u32;
        let log = EventLog {
            pool,
            known_months: Mutex::new(HashSet::new()),
            shards,
            contracts: crate::contracts::Cache::default(),
        };
        let this_month = Month::of(chrono::Utc::now());
        let archived = log
            .ensure_months(&Month::range(this_month, MONTHS_AHEAD + 1))
            .await?;
        if !archived.is_empty() {
            tracing::warn!(
                ?archived,
                "months ahead are detached from the log; commands for them will be refused"
            );
        }
        Ok(log)
    }

    /// The schemas ingest holds activities to.
    pub fn contracts(&self) -> &crate::contracts::Cache {
        &self.contracts
    }

    /// Forgets which months are known to exist, so the next append checks again.
    pub fn forget_known_months(&self) {
        self.known_months
            .lock()
            .expect("month cache poisoned")
            .clear();
    }

    /// The pool the log writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the partitions for these months, unless known to exist; returns the months
    /// whose table exists but is detached from the log (archived), which it leaves alone.
    pub async fn ensure_months(&self, months: &[Month]) -> Result<Vec<Month>, DbError> {
        let missing = self.unknown_months(months);
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = db(self.pool.acquire().await, "connect to create partitions")?;
        let ensured = partitions::ensure(&mut conn, &missing).await?;
        let mut known = self.known_months.lock().expect("month cache poisoned");
        known.extend(missing.iter().filter(|m| !ensured.archived.contains(m)));
        Ok(ensured.archived)
    }

    /// The months among these not known to have a partition.
    pub fn unknown_months(&self, months: &[Month]) -> Vec<Month> {
        let known = self.known_months.lock().expect("month cache poisoned");
        let mut missing: Vec<Month> = months
            .iter()
            .copied()
            .filter(|m| !known.contains(m))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Makes sure every month these events fall in has its partition. Call before opening the
    /// transaction an `append_in` runs in: partition DDL must not wait behind it.
    pub async fn prepare(&self, events: &[NewEvent]) -> Result<(), DbError> {
        let mut months: Vec<Month> = events.iter().map(|e| Month::of(e.occurred_at)).collect();
        months.sort_unstable();
        months.dedup();
        self.ensure_months(&months).await.map(|_| ())
    }

    /// Appends a batch in one transaction of its own.
    pub async fn append_batch(&self, events: &[NewEvent]) -> Result<AppendOutcome, DbError> {
        self.prepare(events).await?;
        let mut tx = db(self.pool.begin().await, "begin append")?;
        let outcome = append_in(&mut tx, events).await;
        if let Err(DbError::NoPartition(_)) = outcome {
            // Someone detached a month we thought we had: check again next time.
            self.forget_known_months();
        }
        let outcome = outcome?;
        db(tx.commit().await, "commit append")?;
        Ok(outcome)
    }
}

/// The one append path: appends `events` inside the caller's transaction, after
/// `EventLog::prepare`. The tests, the benches and this log's `append_batch` call it; ingest
/// and redrive run the same [`Append`] with their own writes in its statement. It takes the
/// append locks of its tenants' shards (waiting at most `APPEND_LOCK_TIMEOUT`) until that
/// transaction ends; records
/// each command id in the ledger, once for ever (a command applied before, or twice in the
/// batch, is a duplicate and writes nothing); COPYs the fresh events at the positions handed
/// out; and notifies the projectors. Nothing is durable before the caller commits.
pub async fn append_in(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<AppendOutcome, DbError> {
    if events.is_empty() {
        return Ok(AppendOutcome::default());
    }
    // Made first, so the append's time includes its wait for the lock.
    let append = Append::new(events);
    crate::db::locks::bound_lock_waits(conn).await?;
    let granted = append.grant(conn).await?;
    append.copy(conn, granted).await
}
