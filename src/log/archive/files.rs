//! An archive's files: the rows streamed through gzip to and from COPY in bounded memory,
//! their SHA-256, and the manifest beside them (found from either file).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::{ArchiveError, Manifest, io, month_of_table};
use crate::db::db;
use crate::log::partitions::Month;

/// Writes the detached `table` to `dir`, checks what was written, then drops the table.
pub(super) async fn write_archive(
    pool: &PgPool,
    table: &str,
    month: Month,
    (rows, positions, erased_through): (i64, Option<(i64, i64)>, i64),
    dir: &Path,
) -> Result<PathBuf, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let file = format!("{table}.copy.gz");
    let data_path = dir.join(&file);
    let mut conn = db(pool.acquire().await, "connect to archive a month")?;
    // A month detached before the log had tenant positions (or versions) lacks the column.
    let (tenant_positions, schema_versions): (bool, bool) = db(
        sqlx::query_as(
            "SELECT bool_or(attname = 'tenant_position'), bool_or(attname = 'schema_version') \
             FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await,
        "read a month's columns",
    )?;
    let sha256 = copy_out_gz(
        &mut conn,
        &format!("COPY (SELECT * FROM {table} ORDER BY position) TO STDOUT (FORMAT binary)"),
        &data_path,
    )
    .await?;
    let manifest = Manifest {
        month: month.to_string(),
        table: table.to_owned(),
        rows,
        positions,
        file,
        sha256,
        written_at: chrono::Utc::now(),
        erased_through,
        tenant_positions,
        schema_versions,
    };
    let manifest_path = dir.join(format!("{table}.manifest.json"));
    write_manifest(&manifest_path, &manifest)?;
    // Read back what was written before anything is dropped.
    if decompressed_bytes(&data_path)? == 0 && rows > 0 {
        return Err(io(&data_path, "the archive written is empty"));
    }
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&mut *conn)
            .await,
        "drop an archived month",
    )?;
    Ok(manifest_path)
}

/// Runs `statement` (a `COPY … TO STDOUT (FORMAT binary)`) into a gzip file at `path`,
/// synced to disk; returns the file's SHA-256.
pub(super) async fn copy_out_gz(
    conn: &mut PgConnection,
    statement: &str,
    path: &Path,
) -> Result<String, ArchiveError> {
    let out = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut copy = db(conn.copy_out_raw(statement).await, "read a month's rows")?;
    while let Some(chunk) = copy.next().await {
        let chunk = db(chunk, "read a month's rows")?;
        gz.write_all(&chunk).map_err(|e| io(path, e))?;
    }
    drop(copy);
    let out = gz.finish().map_err(|e| io(path, e))?;
    out.sync_all().map_err(|e| io(path, e))?;
    sha256_of(path)
}

/// COPYs an archive's rows into `table`, streamed in chunks (a month of any size in bounded
/// memory); returns the rows copied.
pub(super) async fn copy_in_gz(
    conn: &mut PgConnection,
    table: &str,
    path: &Path,
) -> Result<i64, ArchiveError> {
    let mut copy = db(
        conn.copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
            .await,
        "start restoring a month",
    )?;
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut rows_in = flate2::read::GzDecoder::new(f);
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        let n = rows_in.read(&mut chunk).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        db(copy.send(chunk).await, "restore a month's rows")?;
    }
    Ok(db(copy.finish().await, "restore a month's rows")? as i64)
}

/// Reads the manifest at `path`, or beside `path` when it names an archive's data file;
/// returns its path, the manifest, and the data file's path, checked against its SHA-256.
pub(super) fn read_manifest(path: &Path) -> Result<(PathBuf, Manifest, PathBuf), ArchiveError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let manifest_path = match name.find(".copy.gz").map(|_| name.split('.').next()) {
        Some(Some(table)) => {
            let beside = path.with_file_name(format!("{table}.manifest.json"));
            if !beside.exists() {
                return Err(ArchiveError::NotManifest {
                    path: path.to_owned(),
                    message: format!(
                        "this is an archive's data file; pass its manifest, {} (not found)",
                        beside.display()
                    ),
                });
            }
            beside
        }
        _ => path.to_owned(),
    };
    let text = std::fs::read(&manifest_path).map_err(|e| io(&manifest_path, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| ArchiveError::NotManifest {
            path: manifest_path.clone(),
            message: format!(
                "not an archive manifest ({e}); pass the events_pYYYYMM.manifest.json that \
                 `partitions detach --archive` wrote"
            ),
        })?;
    // The manifest is read from disk, not trusted: its table must be a month's canonical
    // name (it reaches SQL) and its file a plain name beside it.
    let canonical = month_of_table(&manifest.table).map(|m| m.table_name());
    if canonical.as_deref() != Some(manifest.table.as_str()) {
        return Err(io(
            &manifest_path,
            format!(
                "`{}` is not a month's table (events_pYYYYMM)",
                manifest.table
            ),
        ));
    }
    if manifest.file.is_empty()
        || manifest.file.contains(['/', '\\'])
        || manifest.file.starts_with('.')
    {
        return Err(io(
            &manifest_path,
            format!("`{}` is not a file name beside the manifest", manifest.file),
        ));
    }
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let data_path = dir.join(&manifest.file);
    if sha256_of(&data_path)? != manifest.sha256 {
        return Err(ArchiveError::Checksum(data_path));
    }
    Ok((manifest_path, manifest, data_path))
}

/// Writes a manifest atomically: to a temporary file, synced, then renamed over `path`.
pub(super) fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), ArchiveError> {
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&json).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
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
