//! The database's side of `status`: the log, the checkpoints, the partitions, the dead
//! letters, and who holds the store's locks (from `pg_locks` and `pg_stat_activity`).

use sqlx::PgConnection;

use super::{
    DeadLetterCount, Holder, IngestStatus, PartitionStatus, ProjectionStatus, Status, StatusConfig,
};
use crate::ingest::INGEST_LEADER_LOCK;
use crate::log::{APPEND_LOCK, LogError, db};
use crate::project::LEASE_LOCK;
use crate::project::shadow::REBUILD_LOCK;

/// Partitions up to this size are counted; larger ones are estimated.
const EXACT_COUNT_BYTES: i64 = 64 << 20;

/// The session holding an advisory lock of this database, if any. A lock on two int4 keys
/// shows in `pg_locks` as (classid, objid, objsubid 2); on one bigint, as its high and low
/// halves with objsubid 1. Both halves are compared as unsigned 32-bit values.
const HOLDER: &str = "\
SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr),
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = ($1::bigint & 4294967295) AND l.objid::bigint = ($2::bigint & 4294967295)
  AND l.objsubid = $3
LIMIT 1";

type HolderRow = (i32, String, Option<String>, Option<f64>);

async fn holder(
    conn: &mut PgConnection,
    high: i64,
    low: i64,
    keys: i16,
) -> Result<Option<Holder>, LogError> {
    let row: Option<HolderRow> = db(
        sqlx::query_as(HOLDER)
            .bind(high)
            .bind(low)
            .bind(keys)
            .fetch_optional(conn)
            .await,
        "read who holds a lock",
    )?;
    Ok(
        row.map(|(pid, application_name, client_addr, seconds)| Holder {
            pid,
            application_name,
            client_addr,
            seconds,
        }),
    )
}

/// The holder of a lock taken as `pg_advisory_lock(key, hashtext(name))`.
async fn named_holder(
    conn: &mut PgConnection,
    key: i32,
    name: &str,
) -> Result<Option<Holder>, LogError> {
    let hash: i32 = db(
        sqlx::query_scalar("SELECT hashtext($1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await,
        "hash a lock's name",
    )?;
    holder(conn, i64::from(key), i64::from(hash), 2).await
}

/// Everything `status` reads from the database.
pub(super) async fn read(
    conn: &mut PgConnection,
    config: &StatusConfig,
) -> Result<Status, LogError> {
    let (at, last_position): (chrono::DateTime<chrono::Utc>, i64) = db(
        sqlx::query_as("SELECT now(), coalesce((SELECT max(position) FROM events), 0)")
            .fetch_one(&mut *conn)
            .await,
        "read the log's last position",
    )?;
    let watermark = holder(conn, APPEND_LOCK >> 32, APPEND_LOCK & 0xffff_ffff, 1).await?;
    let mut status = Status {
        at,
        problems: Vec::new(),
        last_position,
        watermark,
        projections: projections(conn, last_position).await?,
        ingest: ingest(conn).await?,
        partitions: if config.count_partitions {
            partitions(conn).await?
        } else {
            Vec::new()
        },
        dead_letters: dead_letters(conn).await?,
        caches: Vec::new(),
    };
    if !status.ingest.iter().any(|i| i.stream == config.stream) {
        // Not started yet: shown, so its stream and consumer are read too.
        status.ingest.push(IngestStatus {
            stream: config.stream.clone(),
            checkpoint: 0,
            leader_epoch: 0,
            resets: 0,
            updated_at: at,
            leader: named_holder(conn, INGEST_LEADER_LOCK, &config.stream).await?,
            nats: None,
        });
    }
    Ok(status)
}

async fn projections(
    conn: &mut PgConnection,
    last_position: i64,
) -> Result<Vec<ProjectionStatus>, LogError> {
    let rows: Vec<(String, i32, i64, Option<f64>)> = db(
        sqlx::query_as(
            "SELECT c.projection, c.version, c.position, \
                    (SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM events e \
                     WHERE e.position > c.position ORDER BY e.position LIMIT 1) \
             FROM projection_checkpoints c ORDER BY c.projection",
        )
        .fetch_all(&mut *conn)
        .await,
        "read the projection checkpoints",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, version, position, lag_seconds) in rows {
        out.push(ProjectionStatus {
            lease: named_holder(conn, LEASE_LOCK, &name).await?,
            rebuild: named_holder(conn, REBUILD_LOCK, &name).await?,
            lag_events: (last_position - position).max(0),
            lag_seconds: lag_seconds.map(|s| s.max(0.0)),
            name,
            version,
            position,
        });
    }
    Ok(out)
}

async fn ingest(conn: &mut PgConnection) -> Result<Vec<IngestStatus>, LogError> {
    type Row = (String, i64, i64, i64, chrono::DateTime<chrono::Utc>);
    let rows: Vec<Row> = db(
        sqlx::query_as(
            "SELECT stream, last_seq, leader_epoch, resets, updated_at \
             FROM ingest_checkpoints ORDER BY stream",
        )
        .fetch_all(&mut *conn)
        .await,
        "read the ingest checkpoints",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (stream, checkpoint, leader_epoch, resets, updated_at) in rows {
        out.push(IngestStatus {
            leader: named_holder(conn, INGEST_LEADER_LOCK, &stream).await?,
            stream,
            checkpoint,
            leader_epoch,
            resets,
            updated_at,
            nats: None,
        });
    }
    Ok(out)
}

/// The log's partitions, oldest first, with their rows counted when small.
pub async fn partitions(conn: &mut PgConnection) -> Result<Vec<PartitionStatus>, LogError> {
    let mut out = Vec::new();
    for p in crate::log::partitions::list(&mut *conn).await? {
        let (rows, rows_exact) = if p.total_bytes <= EXACT_COUNT_BYTES {
            let count: i64 = db(
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM \"{}\"",
                    p.name.replace('"', "\"\"")
                )))
                .fetch_one(&mut *conn)
                .await,
                "count a partition's rows",
            )?;
            (count, true)
        } else {
            (p.estimated_rows.max(0), false)
        };
        out.push(PartitionStatus {
            name: p.name,
            bound: p.bound,
            rows,
            rows_exact,
            bytes: p.total_bytes,
        });
    }
    Ok(out)
}

async fn dead_letters(conn: &mut PgConnection) -> Result<Vec<DeadLetterCount>, LogError> {
    let rows: Vec<(String, i64)> = db(
        sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
            .fetch_all(conn)
            .await,
        "count dead letters",
    )?;
    Ok(rows
        .into_iter()
        .map(|(reason, count)| DeadLetterCount { reason, count })
        .collect())
}
