//! The database's side of `status`: the log, the checkpoints, the partitions, the dead
//! letters, and who holds the store's locks (from `pg_locks` and `pg_stat_activity`).

use sqlx::PgConnection;

use super::{
    DeadLetterCount, IngestStatus, PartitionStatus, ProjectionStatus, ShardLag, Status,
    StatusConfig,
};
use crate::db::locks::{self, named_holder};
use crate::db::{DbError, db};
use crate::log::shards::SHARD_LASTS;

/// Partitions up to this size are counted; larger ones are estimated.
const EXACT_COUNT_BYTES: i64 = 64 << 20;

/// Everything `status` reads from the database.
pub(super) async fn read(
    conn: &mut PgConnection,
    config: &StatusConfig,
    streams: &[(String, String)],
) -> Result<Status, DbError> {
    let at: chrono::DateTime<chrono::Utc> = db(
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *conn)
            .await,
        "read the time",
    )?;
    let shards: Vec<(i32, i64)> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT shard, last - (shard::bigint << 48) FROM ({SHARD_LASTS}) l ORDER BY shard"
        )))
        .fetch_all(&mut *conn)
        .await,
        "read each shard's last position",
    )?;
    let watermark = locks::append_holder(conn).await?;
    let mut status = Status {
        at,
        problems: Vec::new(),
        last_position: shards.iter().map(|(_, last)| last).sum(),
        shards,
        watermark,
        projections: projections(conn, config.name_lagging_tenants).await?,
        ingest: ingest(conn).await?,
        partitions: if config.count_partitions {
            partitions(conn).await?
        } else {
            Vec::new()
        },
        dead_letters: dead_letters(conn).await?,
        upcast_failures: upcast_failures(conn).await?,
        caches: Vec::new(),
        tenant: match &config.tenant {
            Some(t) => Some(super::tenants::of_tenant(conn, t).await?),
            None => None,
        },
    };
    for (stream, _) in streams {
        if !status.ingest.iter().any(|i| &i.stream == stream) {
            // Not started yet: shown, so its stream and consumer are read too.
            status.ingest.push(IngestStatus {
                stream: stream.clone(),
                checkpoint: 0,
                leader_epoch: 0,
                resets: 0,
                updated_at: at,
                leader: named_holder(conn, locks::INGEST_LEADER, stream).await?,
                nats: None,
            });
        }
    }
    Ok(status)
}

async fn projections(
    conn: &mut PgConnection,
    name_lagging: bool,
) -> Result<Vec<ProjectionStatus>, DbError> {
    type Row = (String, i32, i32, i64, i64, Option<f64>);
    let rows: Vec<Row> = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT c.projection, c.version, k.shard, k.position, l.last, \
                    (SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM events e \
                     WHERE e.position > k.position AND e.position < (k.shard::bigint + 1) << 48 \
                     ORDER BY e.position LIMIT 1) \
             FROM projection_checkpoints c JOIN shard_checkpoints k USING (projection) \
             JOIN ({SHARD_LASTS}) l USING (shard) ORDER BY c.projection, k.shard"
        )))
        .fetch_all(&mut *conn)
        .await,
        "read the projection checkpoints",
    )?;
    let mut leases = std::collections::HashMap::new();
    for &(_, _, shard, ..) in &rows {
        if let std::collections::hash_map::Entry::Vacant(v) = leases.entry(shard) {
            v.insert(locks::keyed_holder(conn, locks::SHARD_FOLD, shard).await?);
        }
    }
    let mut out: Vec<ProjectionStatus> = Vec::new();
    for (name, version, shard, position, last, lag_seconds) in rows {
        let base = crate::project::shard_base(shard);
        let lag = ShardLag {
            shard,
            position: position - base,
            lag_events: (last - position).max(0),
            lease: leases.get(&shard).cloned().flatten(),
        };
        match out.last_mut().filter(|p| p.name == name) {
            Some(p) => {
                p.lease = p.lease.take().or_else(|| lag.lease.clone());
                p.position += lag.position;
                p.lag_events += lag.lag_events;
                let older = lag_seconds.map(|s| s.max(0.0));
                p.lag_seconds = match (p.lag_seconds, older) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                p.shards.push(lag);
            }
            None => out.push(ProjectionStatus {
                lagging_tenants: Vec::new(),
                lease: lag.lease.clone(),
                rebuild: named_holder(conn, locks::REBUILD, &name).await?,
                position: lag.position,
                lag_events: lag.lag_events,
                shards: vec![lag],
                lag_seconds: lag_seconds.map(|s| s.max(0.0)),
                name,
                version,
            }),
        }
    }
    for p in out.iter_mut().filter(|p| name_lagging && p.lag_events > 0) {
        p.lagging_tenants = super::tenants::most_lagging(conn, &p.name).await?;
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

/// Events the folds could not upcast.
async fn upcast_failures(conn: &mut PgConnection) -> Result<super::UpcastFailures, DbError> {
    let (count, position, reason): (i64, Option<i64>, Option<String>) = db(
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM event_upcast_failures), f.position, f.reason \
             FROM (SELECT 1) one \
             LEFT JOIN (SELECT position, reason FROM event_upcast_failures \
                        ORDER BY position LIMIT 1) f ON true",
        )
        .fetch_one(conn)
        .await,
        "count the events that could not be upcast",
    )?;
    Ok(super::UpcastFailures {
        count,
        first: position.zip(reason),
    })
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
