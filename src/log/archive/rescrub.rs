//! Erasures applied to what is out of the log: months detached but still in the database,
//! archives rewritten in place (`partitions rescrub DIR`), and the list of archives an
//! erasure has not reached yet.

use std::path::{Path, PathBuf};

use sqlx::{PgConnection, PgPool};

use super::files::{copy_in_gz, copy_out_gz, read_manifest, write_manifest};
use super::{ArchiveError, io};
use crate::db::{DbError, db};

/// The private table an archive's rows are staged in.
pub(super) const STAGE: &str = "pg_temp.archive_stage";

/// Creates the staging table, shaped like the log, dropped at the transaction's end.
pub(super) async fn stage(conn: &mut PgConnection) -> Result<(), DbError> {
    db(
        sqlx::query("CREATE TEMP TABLE archive_stage (LIKE events) ON COMMIT DROP")
            .execute(conn)
            .await,
        "stage an archive",
    )?;
    Ok(())
}

/// Stages an archive's rows (see [`stage`]); returns the rows restored. An archive written
/// before a column existed is staged without it, then given the column as the upgrade gave
/// the events still in the log: an event's tenant position is its position (before 0025),
/// its payload's version is 1 (before 0032).
pub(super) async fn restore(
    conn: &mut PgConnection,
    manifest: &super::Manifest,
    data_path: &Path,
) -> Result<i64, ArchiveError> {
    stage(conn).await?;
    let later = [
        (
            "tenant_position",
            manifest.tenant_positions,
            "bigint; UPDATE {STAGE} SET tenant_position = position",
        ),
        (
            "schema_version",
            manifest.schema_versions,
            "smallint NOT NULL DEFAULT 1",
        ),
    ];
    let lacking: Vec<_> = later.iter().filter(|(_, has, _)| !has).collect();
    for (column, _, _) in &lacking {
        let drop = format!("ALTER TABLE {STAGE} DROP COLUMN {column}");
        db(
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut *conn)
                .await,
            "stage an archive written before a column existed",
        )?;
    }
    let rows = copy_in_gz(conn, STAGE, data_path).await?;
    // Added back in the log's column order, so the stage's rows match the log's.
    for (column, _, add) in &lacking {
        let add =
            format!("ALTER TABLE {STAGE} ADD COLUMN {column} {add}").replace("{STAGE}", STAGE);
        db(
            sqlx::raw_sql(sqlx::AssertSqlSafe(add))
                .execute(&mut *conn)
                .await,
            "give an archive's events a column written after it",
        )?;
    }
    Ok(rows)
}

/// Applies every erasure to `table` (out of the log); returns the last erasure's id.
pub(super) async fn scrub_table(pool: &PgPool, table: &str) -> Result<i64, DbError> {
    db(
        sqlx::query_scalar(
            "SELECT coalesce((SELECT max(id) FROM erasures), 0) FROM scrub_erased_rows($1::regclass)",
        )
        .bind(table)
        .fetch_one(pool)
        .await,
        "apply the erasures to a detached month",
    )
}

/// Applies every erasure to the months detached from the log but still in the database;
/// returns the rows scrubbed.
pub async fn scrub_detached(pool: &PgPool) -> Result<i64, DbError> {
    let tables: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT c.relname::text FROM archived_months a \
             JOIN pg_class c ON c.relname = 'events_p' || replace(a.month, '-', '') AND c.relkind = 'r' \
             WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid) ORDER BY 1",
        )
        .fetch_all(pool)
        .await,
        "list the detached months",
    )?;
    let mut scrubbed = 0;
    for table in tables {
        let (n, through): (i64, i64) = db(
            sqlx::query_as(
                "SELECT n, coalesce((SELECT max(id) FROM erasures), 0) \
                 FROM scrub_erased_rows($1::regclass) n",
            )
            .bind(&table)
            .fetch_one(pool)
            .await,
            "apply the erasures to a detached month",
        )?;
        db(
            sqlx::query(
                "UPDATE archived_months SET erased_through = $2 \
                 WHERE 'events_p' || replace(month, '-', '') = $1 AND archive IS NULL",
            )
            .bind(&table)
            .bind(through)
            .execute(pool)
            .await,
            "record a detached month's erasures",
        )?;
        scrubbed += n;
    }
    Ok(scrubbed)
}

/// Archives not attached whose rows may hold `tenant`'s events at or before `position`
/// and that were written before erasure `erasure`: their manifests' paths.
pub async fn holding(
    pool: &PgPool,
    tenant: &str,
    position: i64,
    erasure: i64,
) -> Result<Vec<String>, DbError> {
    db(
        sqlx::query_scalar(
            "SELECT archive FROM archived_months \
             WHERE archive IS NOT NULL AND attached_at IS NULL AND erased_through < $3 \
               AND (tenants IS NULL OR $1 = ANY (tenants)) \
               AND (first_position IS NULL OR first_position <= $2) ORDER BY month",
        )
        .bind(tenant)
        .bind(position)
        .bind(erasure)
        .fetch_all(pool)
        .await,
        "list the archives an erasure has not reached",
    )
}

/// One archive rewritten.
#[derive(Debug, Clone)]
pub struct Rescrubbed {
    /// Its manifest.
    pub manifest: PathBuf,
    /// Its rows.
    pub rows: i64,
    /// Rows scrubbed now.
    pub scrubbed: i64,
    /// The last erasure it obeys now.
    pub erased_through: i64,
}

/// Rewrites every archive in `dir` that an erasure recorded since it was written reaches:
/// its rows scrubbed, a new data file and SHA-256, and its manifest replaced atomically (the
/// old data file is removed once the new manifest is in place).
pub async fn rescrub(pool: &PgPool, dir: &Path) -> Result<Vec<Rescrubbed>, ArchiveError> {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    manifests.sort();
    let mut out = Vec::new();
    for path in manifests {
        out.push(rescrub_one(pool, &path).await?);
    }
    Ok(out)
}

async fn rescrub_one(pool: &PgPool, path: &Path) -> Result<Rescrubbed, ArchiveError> {
    let (manifest_path, mut manifest, data_path) = read_manifest(path)?;
    let mut tx = db(pool.begin().await, "begin a rescrub")?;
    let rows = restore(&mut tx, &manifest, &data_path).await?;
    let (scrubbed, through): (i64, i64) = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT n, coalesce((SELECT max(id) FROM erasures), 0) \
             FROM scrub_erased_rows('{STAGE}'::regclass) n"
        )))
        .fetch_one(&mut *tx)
        .await,
        "apply the erasures to an archive",
    )?;
    if scrubbed > 0 {
        let file = format!("{}.e{through}.copy.gz", manifest.table);
        let new_path = data_path.with_file_name(&file);
        manifest.sha256 = copy_out_gz(
            &mut tx,
            &format!("COPY (SELECT * FROM {STAGE} ORDER BY position) TO STDOUT (FORMAT binary)"),
            &new_path,
        )
        .await?;
        manifest.file = file;
        manifest.written_at = chrono::Utc::now();
        manifest.tenant_positions = true;
        manifest.schema_versions = true;
    }
    manifest.erased_through = manifest.erased_through.max(through);
    write_manifest(&manifest_path, &manifest)?;
    if scrubbed > 0 && data_path.file_name() != Some(manifest.file.as_ref()) {
        std::fs::remove_file(&data_path).map_err(|e| io(&data_path, e))?;
    }
    db(
        sqlx::query(
            "UPDATE archived_months SET erased_through = greatest(erased_through, $2) \
             WHERE month = $1 AND attached_at IS NULL",
        )
        .bind(&manifest.month)
        .bind(manifest.erased_through)
        .execute(&mut *tx)
        .await,
        "record an archive's erasures",
    )?;
    db(tx.commit().await, "commit a rescrub")?;
    Ok(Rescrubbed {
        manifest: manifest_path,
        rows,
        scrubbed,
        erased_through: manifest.erased_through,
    })
}
