//! Attaching a month again from its archive, scrubbed of every erasure recorded since it was
//! written before its rows become visible: all in one transaction.

use std::path::Path;

use sqlx::PgPool;

use super::files::read_manifest;
use super::rescrub::{STAGE, restore};
use super::{ArchiveError, Attached, io, month_of_table};
use crate::db::db;

/// Attaches a month again from its archive (its manifest's path, or its data file's):
/// checks the SHA-256, restores the rows into a private staging table, applies every
/// erasure to them, then creates the month's partition and moves them in, in one
/// transaction.
pub async fn attach(pool: &PgPool, path: &Path) -> Result<Attached, ArchiveError> {
    let (manifest_path, manifest, data_path) = read_manifest(path)?;
    let month = month_of_table(&manifest.table)
        .ok_or_else(|| io(&manifest_path, "the manifest names no month's table"))?;
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
    let rows = restore(&mut tx, &manifest, &data_path).await?;
    if rows != manifest.rows {
        return Err(io(
            &data_path,
            format!("holds {rows} rows, the manifest says {}", manifest.rows),
        ));
    }
    let scrubbed: i64 = db(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT scrub_erased_rows('{STAGE}'::regclass)"
        )))
        .fetch_one(&mut *tx)
        .await,
        "apply the erasures to an archive",
    )?;
    db(
        sqlx::query("SELECT create_event_partition($1)")
            .bind(month.start())
            .execute(&mut *tx)
            .await,
        "create the month's partition",
    )?;
    db(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} SELECT * FROM {STAGE}",
            manifest.table
        )))
        .execute(&mut *tx)
        .await,
        "restore a month's rows",
    )?;
    db(
        sqlx::query("UPDATE archived_months SET attached_at = now() WHERE month = $1")
            .bind(month.to_string())
            .execute(&mut *tx)
            .await,
        "record an attached month",
    )?;
    db(tx.commit().await, "commit an attach")?;
    Ok(Attached {
        month,
        rows,
        scrubbed,
    })
}
