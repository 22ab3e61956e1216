//! The database's side of `status`: the log, the checkpoints, the partitions, the dead
//! letters, and who holds the store's locks (from `pg_locks` and `pg_stat_activity`).

use sqlx::PgConnection;

use super::{
    DeadLetterCount, IngestStatus, PartitionStatus, ProjectionStatus, Status, StatusConfig,
};
use crate::db::locks::{self, named_holder};
use crate::db::{DbError, db};

/// Partitions up to this size are counted; larger ones are estimated.
const EXACT_COUNT_BYTES: i64 = 64 << 20;

/// Everything `status` reads from the database.
pub(super) async fn read(
    conn: &mut PgConnection,
    config: &StatusConfig,
) -> Result<Status, DbError> {
    let (at, last_position): (chrono::DateTime<chrono::Utc>, i64) = db(
        sqlx::query_as("SELECT now(), coalesce((SELECT max(position) FROM events), 0)")
            .fetch_one(&mut *conn)
            .await,
        "read the log's last position",
    )?;
    let watermark = locks::holder(conn, locks::APPEND).await?;
    let mut status = Status {
        at,
        problems: Vec::new(),
        last_position,
        watermark,
        projections: projections(conn, last_position, config.name_lagging_tenants).await?,
        ingest: ingest(conn).await?,
        partitions: if config.count_partitions {
            partitions(conn).await?
        } else {
            Vec::new()
        },
        dead_letters: dead_letters(conn).await?,
        caches: Vec::new(),
        tenant: match &config.tenant {
            Some(t) => Some(super::tenants::of_tenant(conn, t).await?),
            None => None,
        },
    };
    if !status.ingest.iter().any(|i| i.stream == config.stream) {
        // Not started yet: shown, so its stream and consumer are read too.
        status.ingest.push(IngestStatus {
            stream: config.stream.clone(),
            checkpoint: 0,
            leader_epoch: 0,
            resets: 0,
            updated_at: at,
            leader: named_holder(conn, locks::INGEST_LEADER, &config.stream).await?,
            nats: None,
        });
    }
    Ok(status)
}

async fn projections(
    conn: &mut PgConnection,
    last_position: i64,
    name_lagging: bool,
) -> Result<Vec<ProjectionStatus>, DbError> {
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
        let lagging_tenants = if name_lagging && position < last_position {
            super::tenants::most_lagging(conn, &name, position).await?
        } else {
            Vec::new()
        };
        out.push(ProjectionStatus {
            lagging_tenants,
            lease: named_holder(conn, locks::LEASE, &name).await?,
            rebuild: named_holder(conn, locks::REBUILD, &name).await?,
            lag_events: (last_position - position).max(0),
            lag_seconds: lag_seconds.map(|s| s.max(0.0)),
            name,
            version,
            position,
        });
    }
    Ok(out)
}

async fn ingest(conn: &mut PgConnection) -> Result<Vec<IngestStatus>, DbError> {
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
            leader: named_holder(conn, locks::INGEST_LEADER, &stream).await?,
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
pub async fn partitions(conn: &mut PgConnection) -> Result<Vec<PartitionStatus>, DbError> {
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

/// Dead letters no redrive has resolved, by reason.
async fn dead_letters(conn: &mut PgConnection) -> Result<Vec<DeadLetterCount>, DbError> {
    let rows: Vec<(String, i64)> = db(
        sqlx::query_as(
            "SELECT reason, count(*) FROM dead_letters WHERE resolved_at IS NULL \
             GROUP BY reason ORDER BY reason",
        )
        .fetch_all(conn)
        .await,
        "count dead letters",
    )?;
    Ok(rows
        .into_iter()
        .map(|(reason, count)| DeadLetterCount { reason, count })
        .collect())
}
