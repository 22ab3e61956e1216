//! Installing a projection, and folding one window of the log into it: the window's changes
//! and the checkpoint commit in one transaction.
//!
//! Appends are serialised by the append lock, which is released only after an append's rows
//! are visible. So once position `m` is visible, every position below it has committed or
//! was never used: folding up to the largest visible position never passes over an event
//! that is still to come. An append transaction left open holds every later append (and so
//! the projectors) back; `appends_held_back_for` measures that.

use std::time::Instant;

use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, Transaction};

use super::{ProjectError, Projection};
use crate::cache::{CacheEntries, CacheError, Cached};
use crate::db::db;
use crate::db::locks;

/// Positions folded per transaction while a new version is built at start.
const REBUILD_WINDOW: i64 = 50_000;

/// Where live projections keep their read tables and their private state.
pub(super) const LIVE_ANALYTICS: &str = "analytics";
pub(super) const LIVE_STATE: &str = "projection_state";

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

pub(super) async fn lock_projection(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    locks::xact_named(
        tx,
        locks::INSTALL,
        &p.name,
        "take a projection's install lock",
    )
    .await?;
    Ok(())
}

/// What `install` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The projection was already at this version.
    Current,
    /// It was missing and was created empty, at checkpoint 0.
    Fresh,
    /// An older version is installed: it keeps serving reads until `rebuild_to_current`
    /// builds this one beside it and swaps it in.
    Outdated {
        /// The version installed.
        from: i32,
    },
}

/// Creates `p`'s tables and fold if they are missing; reports an older installed version
/// (rebuilt later, in the background, by `rebuild_to_current`); refuses a newer one.
pub async fn install(pool: &PgPool, p: &Projection) -> Result<Installed, ProjectError> {
    let mut tx = db(pool.begin().await, "begin a projection install")?;
    lock_projection(&mut tx, p).await?;
    let installed = installed_version(&mut tx, p).await?;
    if installed == Some(p.version) {
        return Ok(Installed::Current);
    }
    if let Some(newer) = installed.filter(|v| *v > p.version) {
        return Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!(
                "version {newer} is installed, newer than this binary's {}: run the newer binary",
                p.version
            ),
        });
    }
    match installed {
        None => {
            reinstall_in(&mut tx, p).await?;
            db(tx.commit().await, "commit a projection install")?;
            Ok(Installed::Fresh)
        }
        Some(from) => Ok(Installed::Outdated { from }),
    }
}

async fn installed_version(
    conn: &mut sqlx::PgConnection,
    p: &Projection,
) -> Result<Option<i32>, ProjectError> {
    Ok(db(
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE projection = $1")
            .bind(&p.name)
            .fetch_optional(conn)
            .await,
        "read a projection's version",
    )?)
}

/// Builds this version of `p` beside the installed older one (which keeps serving reads) and
/// swaps it in, unless another process already has. Returns whether it rebuilt.
pub async fn rebuild_to_current(
    pool: &PgPool,
    p: &Projection,
    progress: impl Fn(i64, i64),
) -> Result<bool, ProjectError> {
    let mut conn = db(pool.acquire().await, "connect to check a version")?;
    let installed = installed_version(&mut conn, p).await?;
    drop(conn);
    match installed {
        Some(v) if v == p.version => Ok(false),
        Some(v) if v > p.version => Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!("version {v} was installed meanwhile, newer than this binary's"),
        }),
        old => {
            tracing::info!(projection = %p.name, from = ?old, to = p.version, "new version: rebuilding beside the old one");
            let shadow = super::shadow::prepare(pool, p, REBUILD_WINDOW, &progress).await?;
            super::shadow::swap_in_with(pool, p, shadow, &progress).await?;
            Ok(true)
        }
    }
}

/// Drops `p`'s tables and creates them empty at checkpoint 0: the next folds rebuild it
/// from the whole log.
pub async fn reinstall(pool: &PgPool, p: &Projection) -> Result<(), ProjectError> {
    let mut tx = db(pool.begin().await, "begin a projection rebuild")?;
    lock_projection(&mut tx, p).await?;
    reinstall_in(&mut tx, p).await?;
    db(tx.commit().await, "commit a projection rebuild")?;
    Ok(())
}

async fn reinstall_in(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    drop_tables(tx, p).await?;
    let schema = p.schema_sql(LIVE_ANALYTICS, LIVE_STATE);
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(&mut **tx)
            .await,
        "create a projection's tables",
    )?;
    install_fold(tx, p, LIVE_ANALYTICS, LIVE_STATE).await?;
    set_checkpoint(tx, p, 0).await
}

/// Drops `p`'s live tables.
pub(super) async fn drop_tables(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    for table in &p.tables {
        // Names were checked against [a-z0-9_] when the registry was read.
        let drop = format!("DROP TABLE IF EXISTS {table} CASCADE");
        db(
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut **tx)
                .await,
            "drop a projection's table",
        )?;
    }
    Ok(())
}

/// Creates (or replaces) `p`'s fold functions, placed in `analytics` and `state`.
pub(super) async fn install_fold(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    analytics: &str,
    state: &str,
) -> Result<(), ProjectError> {
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(p.fold_sql(analytics, state)))
            .execute(&mut **tx)
            .await,
        "create a projection's fold",
    )?;
    Ok(())
}

/// Records `p` as installed at its version and folded up to `position`.
pub(super) async fn set_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    position: i64,
) -> Result<(), ProjectError> {
    db(
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, version, position) VALUES ($1, $2, $3) \
             ON CONFLICT (projection) DO UPDATE \
             SET version = EXCLUDED.version, position = EXCLUDED.position, updated_at = now(), \
                 epoch = projection_checkpoints.epoch + 1",
        )
        .bind(&p.name)
        .bind(p.version)
        .bind(position)
        .execute(&mut **tx)
        .await,
        "set a projection's checkpoint",
    )?;
    Ok(())
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
    let row: Option<(i64, i32, i32)> = db(
        sqlx::query_as(
            "SELECT position, version, epoch FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
        )
        .bind(&p.name)
        .fetch_optional(&mut *tx)
        .await,
        "lock a projection's checkpoint",
    )?;
    let (after, epoch) = match row {
        Some((position, version, epoch)) if version == p.version => (position, i64::from(epoch)),
        _ => {
            return Err(ProjectError::Invalid {
                name: p.name.clone(),
                problem: format!("version {} is not installed", p.version),
            });
        }
    };
    let visible: Option<i64> = db(
        sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&mut *tx)
            .await,
        "read the log's last position",
    )?;
    let upto = visible
        .unwrap_or(0)
        .min(after.saturating_add(max_window.max(1)));
    if upto <= after {
        return Ok(FoldOutcome { after, upto: after });
    }
    db(
        sqlx::query(sqlx::AssertSqlSafe(p.fold_call(LIVE_STATE)))
            .bind(after)
            .bind(upto)
            .execute(&mut *tx)
            .await,
        "fold a window",
    )?;
    db(
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE projection = $1",
        )
        .bind(&p.name)
        .bind(upto)
        .execute(&mut *tx)
        .await,
        "move a projection's checkpoint",
    )?;
    let changed = match cache {
        Some(c) => Some(invalidate(&mut tx, p, c, after, upto, epoch).await?),
        None => None,
    };
    db(tx.commit().await, "commit a fold")?;
    if let (Some(c), Some(rows)) = (cache, changed) {
        let rows: Vec<(String, String, Cached)> = rows
            .into_iter()
            .map(|(tenant, user, row)| {
                let as_of = upto;
                (tenant, user, Cached::Row { row, as_of, epoch })
            })
            .collect();
        if let Err(e) = put_all(c, rows).await {
            // The tombstones stay: missing entries, which readers fill from the table.
            tracing::warn!(error = %e, projection = %p.name, "cache write-through failed");
        }
    }
    let labels = [("projection", p.name.clone())];
    metrics::gauge!("activity_projection_position", &labels).set(upto as f64);
    metrics::counter!("activity_projection_folded_positions_total", &labels)
        .increment((upto - after) as u64);
    metrics::histogram!("activity_projection_fold_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    Ok(FoldOutcome { after, upto })
}

type ChangedRow = (String, String, serde_json::Value);

/// In the fold's transaction: tombstones every key the fold changed (rows it wrote, users it
/// erased) at the window's end, and returns the rows to write once it commits.
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
            "SELECT tenant, user_id, to_jsonb(t) FROM {} t WHERE position > $1 AND position <= $2",
            p.table()
        )))
        .bind(after)
        .bind(upto)
        .fetch_all(&mut **tx)
        .await,
        "read the rows a fold changed",
    )?;
    let erased: Vec<(String, String)> = db(
        sqlx::query_as(
            "SELECT DISTINCT tenant, user_id FROM events \
             WHERE position > $1 AND position <= $2 AND event_type = 'user_forgotten'",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&mut **tx)
        .await,
        "read the users a fold erased",
    )?;
    let tombstone = Cached::Tombstone { as_of: upto, epoch };
    let mut tombstones: Vec<(String, String, Cached)> = Vec::with_capacity(rows.len());
    for (t, u, _) in &rows {
        tombstones.push((t.clone(), u.clone(), tombstone.clone()));
    }
    for (t, u) in erased {
        tombstones.push((t, u, tombstone.clone()));
    }
    put_all(cache, tombstones).await?;
    Ok(rows)
}

/// Writes every row of `p`'s table to its cache, as of the checkpoint read with the rows in
/// one statement: after a rebuild, every entry equals its row.
pub(super) async fn refill(
    pool: &PgPool,
    p: &Projection,
    cache: &CacheEntries,
) -> Result<(), ProjectError> {
    let rows: Vec<(String, String, serde_json::Value, i64, i32)> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT tenant, user_id, to_jsonb(t), c.position, c.epoch FROM {} t \
             CROSS JOIN (SELECT position, epoch FROM projection_checkpoints WHERE projection = $1) c",
            p.table()
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
