//! Folding one window of the log into a projection: the window's changes and the checkpoint
//! commit in one transaction, and the cache is written through.
//!
//! Appends are serialised by the append lock, which is released only after an append's rows
//! are visible. So once position `m` is visible, every position below it has committed or
//! was never used: folding up to the largest visible position never passes over an event
//! that is still to come. An append transaction left open holds every later append (and so
//! the projectors) back; `db::locks::appends_held_back_for` measures that.

use std::time::Instant;

use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, Transaction};

use super::tables::LIVE_STATE;
use super::{ProjectError, Projection};
use crate::cache::{CacheEntries, CacheError, Cached};
use crate::db::db;

/// What one fold did: it folded positions `(after, upto]`; nothing when they are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldOutcome {
    /// The checkpoint before.
    pub after: i64,
    /// The checkpoint after.
    pub upto: i64,
}

impl FoldOutcome {
    /// Whether the projection had nothing left to fold.
    pub fn caught_up(&self) -> bool {
        self.after == self.upto
    }
}

/// Folds the next window of at most `max_window` positions into `p`, with its checkpoint, in
/// one transaction. The checkpoint row is locked first, so two folders of one projection
/// (a lease lost unnoticed) take turns rather than fold a window twice.
///
/// With `cache`, the keys the fold changes get tombstones before the commit and their new
/// rows after it (see `crate::cache`).
pub async fn fold_next(
    pool: &PgPool,
    p: &Projection,
    max_window: i64,
    cache: Option<&CacheEntries>,
) -> Result<FoldOutcome, ProjectError> {
    let started = Instant::now();
    let mut tx = db(pool.begin().await, "begin a fold")?;
    let (after, epoch) = lock_checkpoint(&mut tx, p).await?;
    let upto = window_end(&mut tx, after, max_window).await?;
    if upto <= after {
        return Ok(FoldOutcome { after, upto: after });
    }
    fold_window(&mut tx, p, after, upto).await?;
    let changed = match cache {
        Some(c) => Some(invalidate(&mut tx, p, c, after, upto, epoch).await?),
        None => None,
    };
    db(tx.commit().await, "commit a fold")?;
    if let (Some(c), Some(rows)) = (cache, changed) {
        write_through(c, p, rows, epoch).await;
    }
    let labels = [("projection", p.name.clone())];
    metrics::gauge!("activity_projection_position", &labels).set(upto as f64);
    metrics::counter!("activity_projection_folded_positions_total", &labels)
        .increment((upto - after) as u64);
    metrics::histogram!("activity_projection_fold_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    Ok(FoldOutcome { after, upto })
}

/// Locks `p`'s checkpoint row; its position and epoch, if this version is installed.
async fn lock_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(i64, i64), ProjectError> {
    let row: Option<(i64, i32, i32)> = db(
        sqlx::query_as(
            "SELECT position, version, epoch FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
        )
        .bind(&p.name)
        .fetch_optional(&mut **tx)
        .await,
        "lock a projection's checkpoint",
    )?;
    match row {
        Some((position, version, epoch)) if version == p.version => {
            Ok((position, i64::from(epoch)))
        }
        _ => Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!("version {} is not installed", p.version),
        }),
    }
}

/// The end of the next window: the largest visible position, at most `max_window` past
/// `after`.
async fn window_end(
    tx: &mut Transaction<'_, Postgres>,
    after: i64,
    max_window: i64,
) -> Result<i64, ProjectError> {
    let visible: Option<i64> = db(
        sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&mut **tx)
            .await,
        "read the log's last position",
    )?;
    Ok(visible
        .unwrap_or(0)
        .min(after.saturating_add(max_window.max(1))))
}

/// Runs `p`'s fold over positions `(after, upto]` and moves its checkpoint to `upto`.
async fn fold_window(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    after: i64,
    upto: i64,
) -> Result<(), ProjectError> {
    db(
        sqlx::query(sqlx::AssertSqlSafe(p.fold_call(LIVE_STATE)))
            .bind(after)
            .bind(upto)
            .execute(&mut **tx)
            .await,
        "fold a window",
    )?;
    db(
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE projection = $1",
        )
        .bind(&p.name)
        .bind(upto)
        .execute(&mut **tx)
        .await,
        "move a projection's checkpoint",
    )?;
    Ok(())
}

/// After the fold's commit: the rows it changed into their entries, each as of its tenant's
/// position. A write that fails leaves its tombstone: a missing entry, which readers fill
/// from the table.
async fn write_through(cache: &CacheEntries, p: &Projection, rows: Vec<ChangedRow>, epoch: i64) {
    let rows: Vec<(String, String, Cached)> = rows
        .into_iter()
        .filter_map(|(tenant, user, as_of, row)| {
            let row = row?;
            Some((tenant, user, Cached::Row { row, as_of, epoch }))
        })
        .collect();
    if let Err(e) = put_all(cache, rows).await {
        tracing::warn!(error = %e, projection = %p.name, "cache write-through failed");
    }
}

/// A key the fold touched: tenant, user, the tenant's position at the window's end, and the
/// row now in the table (none once the user is erased).
type ChangedRow = (String, String, i64, Option<serde_json::Value>);

/// In the fold's transaction: tombstones every key of a user with an event in the window (the
/// rows it wrote, the users it erased), each as of its tenant's position at the window's end
/// (its last event in the window), and returns the rows to write once it commits.
async fn invalidate(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    cache: &CacheEntries,
    after: i64,
    upto: i64,
    epoch: i64,
) -> Result<Vec<ChangedRow>, ProjectError> {
    let rows: Vec<ChangedRow> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH w AS (SELECT tenant, user_id, tenant_position FROM events \
                        WHERE position > $1 AND position <= $2), \
                  heads AS (SELECT tenant, max(tenant_position) AS at FROM w GROUP BY tenant), \
                  touched AS (SELECT DISTINCT tenant, user_id FROM w WHERE user_id IS NOT NULL) \
             SELECT k.tenant, k.user_id, h.at, to_jsonb(t) \
             FROM touched k JOIN heads h USING (tenant) \
             LEFT JOIN {} t ON t.tenant = k.tenant AND t.user_id = k.user_id",
            p.table()
        )))
        .bind(after)
        .bind(upto)
        .fetch_all(&mut **tx)
        .await,
        "read the keys a fold changed",
    )?;
    let tombstones = rows
        .iter()
        .map(|(t, u, as_of, _)| {
            let tombstone = Cached::Tombstone {
                as_of: *as_of,
                epoch,
            };
            (t.clone(), u.clone(), tombstone)
        })
        .collect();
    put_all(cache, tombstones).await?;
    Ok(rows)
}

/// Writes every row of `p`'s table to its cache, each as of its tenant's position at the
/// checkpoint read with the rows in one statement: after a rebuild, every entry equals its row.
pub(super) async fn refill(
    pool: &PgPool,
    p: &Projection,
    cache: &CacheEntries,
) -> Result<(), ProjectError> {
    let rows: Vec<(String, String, serde_json::Value, i64, i32)> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH at AS (SELECT k.tenant, tenant_projection_position($1, k.tenant) AS at \
                         FROM (SELECT DISTINCT tenant FROM {table}) k) \
             SELECT t.tenant, t.user_id, to_jsonb(t), at.at, c.epoch \
             FROM {table} t JOIN at ON at.tenant = t.tenant \
             CROSS JOIN (SELECT epoch FROM projection_checkpoints WHERE projection = $1) c",
            table = p.table()
        )))
        .bind(&p.name)
        .fetch_all(pool)
        .await,
        "read rows to refill a cache",
    )?;
    let entries = rows
        .into_iter()
        .map(|(tenant, user, row, as_of, epoch)| {
            let epoch = i64::from(epoch);
            (tenant, user, Cached::Row { row, as_of, epoch })
        })
        .collect();
    put_all(cache, entries).await?;
    Ok(())
}

/// Writes entries (each a compare-and-set that never goes back), many in flight at once.
async fn put_all(
    cache: &CacheEntries,
    entries: Vec<(String, String, Cached)>,
) -> Result<(), CacheError> {
    let mut writes = futures_util::stream::iter(entries)
        .map(|(tenant, user, value)| async move { cache.write(&tenant, &user, &value).await })
        .buffer_unordered(256);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}
