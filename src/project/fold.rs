//! Folding one window of the log into a projection: the window's changes and the checkpoint
//! commit in one transaction, and the cache is written through.
//!
//! The log is folded shard by shard, each shard with its own checkpoint. A shard's appends
//! are serialised by its append lock, which is released only after an append's rows are
//! visible. So once position `m` of a shard is visible, every position of that shard below
//! it has committed or was never used: folding a shard up to its largest visible position
//! never passes over an event that is still to come. An append transaction left open holds
//! every later append to its shards (and so their folds) back;
//! `db::locks::appends_held_back_for` measures that.

use std::time::Instant;

use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, Transaction};

use super::tables::LIVE_STATE;
use super::{ProjectError, Projection};
use crate::cache::{CacheEntries, CacheError, Cached};
use crate::db::db;

/// The first position past shard `shard`'s.
pub fn shard_end(shard: i32) -> i64 {
    super::frontier::shard_base(shard + 1)
}

/// The shards `p` has checkpoints for, in order.
pub(super) async fn shards_of(
    conn: impl sqlx::PgExecutor<'_>,
    p: &Projection,
) -> Result<Vec<i32>, ProjectError> {
    Ok(db(
        sqlx::query_scalar(
            "SELECT shard FROM shard_checkpoints WHERE projection = $1 ORDER BY shard",
        )
        .bind(&p.name)
        .fetch_all(conn)
        .await,
        "read a projection's shards",
    )?)
}

/// What one fold did: it folded positions `(after, upto]` of one shard; nothing when they
/// are equal.
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

/// Folds the next window of at most `max_window` positions of `shard` into `p`, with the
/// shard's checkpoint, in one transaction. The shard's checkpoint row is locked first, so
/// two folders of one shard (a lease lost unnoticed) take turns rather than fold a window
/// twice; the projection's row is shared, so a swap (which locks it) waits for every shard.
///
/// With `cache`, the keys the fold changes get tombstones before the commit and their new
/// rows after it (see `crate::cache`).
pub async fn fold_next(
    pool: &PgPool,
    p: &Projection,
    shard: i32,
    max_window: i64,
    cache: Option<&CacheEntries>,
) -> Result<FoldOutcome, ProjectError> {
    let started = Instant::now();
    let mut tx = db(pool.begin().await, "begin a fold")?;
    let (after, epoch) = lock_checkpoint(&mut tx, p, shard).await?;
    let upto = window_end(&mut tx, shard, after, max_window).await?;
    if upto <= after {
        // Ended now, not when the pool next uses the connection: until then the checkpoint
        // rows stay locked, and a swap or a tenant move would wait for them.
        db(tx.rollback().await, "end a fold with nothing to fold")?;
        return Ok(FoldOutcome { after, upto: after });
    }
    fold_window(&mut tx, p, shard, after, upto).await?;
    let changed = match cache {
        Some(c) => Some(invalidate(&mut tx, p, c, after, upto, epoch).await?),
        None => None,
    };
    db(tx.commit().await, "commit a fold")?;
    if let (Some(c), Some(rows)) = (cache, changed) {
        write_through(c, p, rows, epoch).await;
    }
    let labels = [("projection", p.name.clone()), ("shard", shard.to_string())];
    let within = upto - super::frontier::shard_base(shard);
    metrics::gauge!("activity_projection_position", &labels).set(within as f64);
    metrics::counter!("activity_projection_folded_positions_total", &labels)
        .increment((upto - after) as u64);
    metrics::histogram!("activity_projection_fold_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    Ok(FoldOutcome { after, upto })
}

/// Locks `p`'s checkpoint of `shard` (and shares its projection's row); its position and
/// the projection's epoch, if this version is installed.
async fn lock_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    shard: i32,
) -> Result<(i64, i64), ProjectError> {
    let row: Option<(i64, i32, i32)> = db(
        sqlx::query_as(
            "SELECT s.position, c.version, c.epoch \
             FROM projection_checkpoints c JOIN shard_checkpoints s USING (projection) \
             WHERE c.projection = $1 AND s.shard = $2 FOR UPDATE OF s FOR SHARE OF c",
        )
        .bind(&p.name)
        .bind(shard)
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
            problem: format!(
                "version {} is not installed (with shard {shard})",
                p.version
            ),
        }),
    }
}

/// The end of the next window: the shard's largest visible position, at most `max_window`
/// past `after`.
async fn window_end(
    tx: &mut Transaction<'_, Postgres>,
    shard: i32,
    after: i64,
    max_window: i64,
) -> Result<i64, ProjectError> {
    let visible: Option<i64> = db(
        sqlx::query_scalar(
            "SELECT max(position) FROM events WHERE position > $1 AND position < $2",
        )
        .bind(after)
        .bind(shard_end(shard))
        .fetch_one(&mut **tx)
        .await,
        "read a shard's last position",
    )?;
    Ok(visible
        .unwrap_or(after)
        .min(after.saturating_add(max_window.max(1))))
}

/// Runs `p`'s fold over positions `(after, upto]` and moves its checkpoint of `shard` to
/// `upto`.
async fn fold_window(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    shard: i32,
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
            "UPDATE shard_checkpoints SET position = $3, updated_at = now() \
             WHERE projection = $1 AND shard = $2",
        )
        .bind(&p.name)
        .bind(shard)
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
