//! Retention that knows about replay: months of the log detached (`DETACH … CONCURRENTLY`,
//! so appends go on) only once every projection has folded past them, written to a
//! compressed archive with a SHA-256 and a manifest before they are dropped, and attached
//! again from that archive.
//!
//! An archive is two files in the chosen folder: `events_pYYYYMM[.eN].copy.gz`, the
//! partition's rows in PostgreSQL's binary COPY format, gzip-compressed; and
//! `events_pYYYYMM.manifest.json`: the month, its rows, its first and last positions, the
//! archive's SHA-256, when it was written and the last erasure it obeys.
//!
//! Archives obey erasures: a month is scrubbed of every erasure before it is archived, an
//! archive is scrubbed of every erasure recorded since before its rows become visible again
//! (in the attach's own transaction), and `rescrub` rewrites archives in place.

mod attach;
mod files;
mod rescrub;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::partitions::Month;
use crate::db::{DbError, db};

pub use attach::attach;
pub use rescrub::{Rescrubbed, holding, rescrub, scrub_detached};

/// What can stop a detach or an attach.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database.
    #[error(transparent)]
    Log(#[from] DbError),
    /// A projection still needs the month.
    #[error(
        "{month} cannot be detached: projection {projection} has folded up to position \
         {folded}, and the month holds events up to {needed}"
    )]
    NotFolded {
        /// The month.
        month: Month,
        /// The projection behind.
        projection: String,
        /// Where it stands.
        folded: i64,
        /// The month's last position.
        needed: i64,
    },
    /// Only past months may be detached.
    #[error("{0} is not over yet: only months before this one may be detached")]
    NotPast(Month),
    /// The archive cannot be read or written.
    #[error("archive: {0}")]
    Io(String),
    /// The path given is not a manifest.
    #[error("{path}: {message}")]
    NotManifest {
        /// The path given.
        path: PathBuf,
        /// What it is and what to pass instead.
        message: String,
    },
    /// The archive's bytes are not the ones its manifest describes.
    #[error("archive {0} does not match its manifest's SHA-256: refusing to attach it")]
    Checksum(PathBuf),
    /// The month's table exists already.
    #[error("{0} exists already: attach refused, nothing duplicated")]
    Exists(String),
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Io(format!("{}: {e}", path.display()))
}

/// An archive's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The partition's table.
    pub table: String,
    /// Rows archived.
    pub rows: i64,
    /// Its first and last log positions.
    pub positions: Option<(i64, i64)>,
    /// The archive file, beside the manifest.
    pub file: String,
    /// The archive file's SHA-256, in hex.
    pub sha256: String,
    /// When it was written.
    pub written_at: chrono::DateTime<chrono::Utc>,
    /// The last erasure (`erasures.id`) its rows obey; 0 for archives written before
    /// erasures were recorded with them.
    #[serde(default)]
    pub erased_through: i64,
    /// Whether its rows carry tenant positions; archives written before the log had them
    /// do not (each event's tenant position is then its position, as the upgrade gave the
    /// events still in the log).
    #[serde(default)]
    pub tenant_positions: bool,
    /// Whether its rows carry their payload's version; archives written before migration
    /// 0032 do not (every event was version 1 then).
    #[serde(default)]
    pub schema_versions: bool,
}

/// A month detached.
#[derive(Debug, Clone)]
pub struct Detached {
    /// The month.
    pub month: Month,
    /// Its rows.
    pub rows: i64,
    /// Its manifest, when it was archived and dropped.
    pub manifest: Option<PathBuf>,
}

/// A month attached again.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The month.
    pub month: Month,
    /// Its rows.
    pub rows: i64,
    /// Rows scrubbed on the way in, of users erased since the archive was written.
    pub scrubbed: i64,
}

/// Detaches every attached month before `before` (and, with `archive`, archives and drops
/// each, including months detached earlier and not yet archived), oldest first.
pub async fn detach_before(
    pool: &PgPool,
    before: Month,
    archive: Option<&Path>,
) -> Result<Vec<Detached>, ArchiveError> {
    if before > Month::of(chrono::Utc::now()) {
        return Err(ArchiveError::NotPast(before));
    }
    let attached: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'events'::regclass ORDER BY 1",
        )
        .fetch_all(pool)
        .await,
        "list partitions",
    )?;
    let mut out = Vec::new();
    for table in attached {
        let Some(month) = month_of_table(&table) else {
            continue;
        };
        if month >= before {
            continue;
        }
        out.push(detach_month(pool, &table, month, archive).await?);
    }
    Ok(out)
}

/// Detaches `table` (the month `month`), scrubs it of erased users, writes its archive
/// into `archive` when given, and records it in `archived_months`.
async fn detach_month(
    pool: &PgPool,
    table: &str,
    month: Month,
    archive: Option<&Path>,
) -> Result<Detached, ArchiveError> {
    check_folded(pool, table, month).await?;
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE events DETACH PARTITION {table} CONCURRENTLY"
        )))
        .execute(pool)
        .await,
        "detach a month",
    )?;
    // Out of the log, the month obeys every erasure before anything copies it.
    let erased_through = rescrub::scrub_table(pool, table).await?;
    let (rows, first, last, tenants): (i64, Option<i64>, Option<i64>, Vec<String>) = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), min(position), max(position), \
                    coalesce(array_agg(DISTINCT tenant), '{{}}') FROM {table}"
        )))
        .fetch_one(pool)
        .await,
        "read a month's rows, positions and tenants",
    )?;
    let manifest = match archive {
        Some(dir) => Some(
            files::write_archive(
                pool,
                table,
                month,
                (rows, first.zip(last), erased_through),
                dir,
            )
            .await?,
        ),
        None => None,
    };
    db(
        sqlx::query(
            "INSERT INTO archived_months (month, rows, first_position, last_position, archive, \
                                          tenants, erased_through) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (month) DO UPDATE \
             SET rows = EXCLUDED.rows, first_position = EXCLUDED.first_position, \
                 last_position = EXCLUDED.last_position, archive = EXCLUDED.archive, \
                 tenants = EXCLUDED.tenants, erased_through = EXCLUDED.erased_through, \
                 detached_at = now(), attached_at = NULL",
        )
        .bind(month.to_string())
        .bind(rows)
        .bind(first)
        .bind(last)
        .bind(manifest.as_ref().map(|m| m.display().to_string()))
        .bind(&tenants)
        .bind(erased_through)
        .execute(pool)
        .await,
        "record a detached month",
    )?;
    Ok(Detached {
        month,
        rows,
        manifest,
    })
}

pub(crate) fn month_of_table(table: &str) -> Option<Month> {
    let digits = table.strip_prefix("events_p")?;
    let date = chrono::NaiveDate::parse_from_str(&format!("{digits}01"), "%Y%m%d").ok()?;
    Some(Month::of(date.and_hms_opt(0, 0, 0)?.and_utc()))
}

/// Refuses a month some projection has not folded past.
async fn check_folded(pool: &PgPool, table: &str, month: Month) -> Result<(), ArchiveError> {
    let sql = format!(
        "SELECT c.projection, c.position, m.last FROM shard_checkpoints c \
         JOIN (SELECT (position >> 48)::int4 AS shard, max(position) AS last FROM {table} GROUP BY 1) m \
         USING (shard) WHERE c.position < m.last ORDER BY c.shard, c.position LIMIT 1"
    );
    let behind: Option<(String, i64, i64)> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_optional(pool)
            .await,
        "check the projections have folded a month",
    )?;
    match behind {
        Some((projection, folded, needed)) => Err(ArchiveError::NotFolded {
            month,
            projection,
            folded,
            needed,
        }),
        None => Ok(()),
    }
}

/// What of the log is not attached: where it starts now, and the months recorded as
/// detached. A rebuild folds only what is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    /// The first position held of a shard whose first positions are gone (`None`: every
    /// shard holds its first position, or nothing).
    pub first_position: Option<i64>,
    /// The months detached and not attached again, oldest first.
    pub months: Vec<String>,
}

impl Absent {
    /// Whether any of the log is missing: months detached, or its first positions gone.
    pub fn is_partial(&self) -> bool {
        !self.months.is_empty() || self.first_position.is_some()
    }
}

/// What of the log is not attached now.
pub async fn absent(pool: &PgPool) -> Result<Absent, DbError> {
    let (first_position, months) = db(
        sqlx::query_as(
            "SELECT (SELECT min(f.first) FROM log_shards s CROSS JOIN LATERAL ( \
                         SELECT min(e.position) AS first FROM events e \
                         WHERE e.position > s.shard::bigint << 48 \
                           AND e.position < (s.shard::bigint + 1) << 48) f \
                     WHERE f.first > (s.shard::bigint << 48) + 1), \
                    ARRAY(SELECT month FROM archived_months WHERE attached_at IS NULL ORDER BY 1)",
        )
        .fetch_one(pool)
        .await,
        "look at which months are detached",
    )?;
    Ok(Absent {
        first_position,
        months,
    })
}
