//! Retention that knows about replay: months of the log detached (`DETACH … CONCURRENTLY`,
//! so appends go on) only once every projection has folded past them, written to a
//! compressed archive with a SHA-256 and a manifest before they are dropped, and attached
//! again from that archive.
//!
//! An archive is two files in the chosen folder: `events_pYYYYMM.copy.gz`, the partition's
//! rows in PostgreSQL's binary COPY format, gzip-compressed; and
//! `events_pYYYYMM.manifest.json`: the month, its rows, its first and last positions, the
//! archive's SHA-256 and when it was written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;

use super::partitions::Month;
use super::{LogError, db};

/// What can stop a detach or an attach.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database.
    #[error(transparent)]
    Log(#[from] LogError),
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
    /// The archive's bytes are not the ones its manifest describes.
    #[error("archive {0} does not match its manifest's SHA-256: refusing to attach it")]
    Checksum(PathBuf),
    /// The month's table exists already.
    #[error("{0} exists already: attach refused, nothing duplicated")]
    Exists(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> ArchiveError {
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
        check_folded(pool, &table, month).await?;
        db(
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE events DETACH PARTITION {table} CONCURRENTLY"
            )))
            .execute(pool)
            .await,
            "detach a month",
        )?;
        let (rows, first, last): (i64, Option<i64>, Option<i64>) = db(
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*), min(position), max(position) FROM {table}"
            )))
            .fetch_one(pool)
            .await,
            "read a month's rows and positions",
        )?;
        let positions = first.zip(last);
        let manifest = match archive {
            Some(dir) => Some(write_archive(pool, &table, month, (rows, positions), dir).await?),
            None => None,
        };
        db(
            sqlx::query(
                "INSERT INTO archived_months (month, rows, first_position, last_position, archive) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (month) DO UPDATE \
                 SET rows = EXCLUDED.rows, first_position = EXCLUDED.first_position, \
                     last_position = EXCLUDED.last_position, archive = EXCLUDED.archive, \
                     detached_at = now(), attached_at = NULL",
            )
            .bind(month.to_string())
            .bind(rows)
            .bind(first)
            .bind(last)
            .bind(manifest.as_ref().map(|m| m.display().to_string()))
            .execute(pool)
            .await,
            "record a detached month",
        )?;
        out.push(Detached {
            month,
            rows,
            manifest,
        });
    }
    Ok(out)
}

fn month_of_table(table: &str) -> Option<Month> {
    let digits = table.strip_prefix("events_p")?;
    let date = chrono::NaiveDate::parse_from_str(&format!("{digits}01"), "%Y%m%d").ok()?;
    Some(Month::of(date.and_hms_opt(0, 0, 0)?.and_utc()))
}

/// Refuses a month some projection has not folded past.
async fn check_folded(pool: &PgPool, table: &str, month: Month) -> Result<(), ArchiveError> {
    let sql = format!(
        "SELECT c.projection, c.position, m.last FROM projection_checkpoints c, \
         (SELECT max(position) AS last FROM {table}) m \
         WHERE m.last IS NOT NULL AND c.position < m.last ORDER BY c.position LIMIT 1"
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

/// Writes the detached `table` to `dir`, checks what was written, then drops the table.
async fn write_archive(
    pool: &PgPool,
    table: &str,
    month: Month,
    (rows, positions): (i64, Option<(i64, i64)>),
    dir: &Path,
) -> Result<PathBuf, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let file = format!("{table}.copy.gz");
    let data_path = dir.join(&file);
    let out = std::fs::File::create(&data_path).map_err(|e| io(&data_path, e))?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let statement =
        format!("COPY (SELECT * FROM {table} ORDER BY position) TO STDOUT (FORMAT binary)");
    let mut copy = db(pool.copy_out_raw(&statement).await, "read a month's rows")?;
    while let Some(chunk) = copy.next().await {
        let chunk = db(chunk, "read a month's rows")?;
        gz.write_all(&chunk).map_err(|e| io(&data_path, e))?;
    }
    drop(copy);
    let out = gz.finish().map_err(|e| io(&data_path, e))?;
    out.sync_all().map_err(|e| io(&data_path, e))?;
    let sha256 = sha256_of(&data_path)?;
    let manifest = Manifest {
        month: month.to_string(),
        table: table.to_owned(),
        rows,
        positions,
        file,
        sha256,
        written_at: chrono::Utc::now(),
    };
    let manifest_path = dir.join(format!("{table}.manifest.json"));
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    std::fs::write(&manifest_path, json).map_err(|e| io(&manifest_path, e))?;
    // Read back what was written before anything is dropped.
    if decompressed_bytes(&data_path)? == 0 && rows > 0 {
        return Err(io(&data_path, "the archive written is empty"));
    }
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(pool)
            .await,
        "drop an archived month",
    )?;
    Ok(manifest_path)
}

fn sha256_of(path: &Path) -> Result<String, ArchiveError> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The decompressed size of an archive, in bytes (reading it whole checks the gzip stream).
fn decompressed_bytes(path: &Path) -> Result<u64, ArchiveError> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    std::io::copy(&mut flate2::read::GzDecoder::new(f), &mut std::io::sink())
        .map_err(|e| io(path, e))
}

/// Attaches a month again from its archive (the manifest's path): checks the SHA-256,
/// creates the month's partition and COPYs the rows back, in one transaction.
pub async fn attach(pool: &PgPool, manifest_path: &Path) -> Result<Attached, ArchiveError> {
    let text = std::fs::read(manifest_path).map_err(|e| io(manifest_path, e))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| io(manifest_path, e))?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let data_path = dir.join(&manifest.file);
    if sha256_of(&data_path)? != manifest.sha256 {
        return Err(ArchiveError::Checksum(data_path));
    }
    let month = month_of_table(&manifest.table)
        .ok_or_else(|| io(manifest_path, "the manifest names no month's table"))?;
    let exists: bool = db(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1)")
            .bind(&manifest.table)
            .fetch_one(pool)
            .await,
        "look for the month's table",
    )?;
    if exists {
        return Err(ArchiveError::Exists(manifest.table));
    }
    let mut tx = db(pool.begin().await, "begin an attach")?;
    db(
        sqlx::query("SELECT create_event_partition($1)")
            .bind(month.start())
            .execute(&mut *tx)
            .await,
        "create the month's partition",
    )?;
    let mut copy = db(
        tx.copy_in_raw(&format!(
            "COPY {} FROM STDIN (FORMAT binary)",
            manifest.table
        ))
        .await,
        "start restoring a month",
    )?;
    // Streamed in chunks: a month of any size is restored in bounded memory.
    let f = std::fs::File::open(&data_path).map_err(|e| io(&data_path, e))?;
    let mut rows_in = flate2::read::GzDecoder::new(f);
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        let n = rows_in.read(&mut chunk).map_err(|e| io(&data_path, e))?;
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        db(copy.send(chunk).await, "restore a month's rows")?;
    }
    let rows = db(copy.finish().await, "restore a month's rows")? as i64;
    if rows != manifest.rows {
        return Err(io(
            &data_path,
            format!("holds {rows} rows, the manifest says {}", manifest.rows),
        ));
    }
    db(
        sqlx::query("UPDATE archived_months SET attached_at = now() WHERE month = $1")
            .bind(month.to_string())
            .execute(&mut *tx)
            .await,
        "record an attached month",
    )?;
    db(tx.commit().await, "commit an attach")?;
    Ok(Attached { month, rows })
}
