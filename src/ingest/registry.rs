//! The write side's reads: the ingest checkpoint and its leader, and what a batch is decided
//! against, in one round trip; and the dead letters a batch writes.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::decide::RegistryView;
use crate::contracts::Cache;
use crate::db::{DbError, db};
use crate::model::{Command, CommandBody};

/// Where a stream's ingest stands, and which leader may move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last stream sequence committed.
    pub last_seq: u64,
    /// The fencing token of the stream's current leader.
    pub leader_epoch: i64,
    /// The creation time of the stream `last_seq` belongs to, once known.
    pub stream_created: Option<DateTime<Utc>>,
}

type CheckpointRow = (i64, i64, Option<DateTime<Utc>>);

impl From<CheckpointRow> for Checkpoint {
    fn from((last_seq, leader_epoch, stream_created): CheckpointRow) -> Self {
        Checkpoint {
            last_seq: last_seq.max(0) as u64,
            leader_epoch,
            stream_created,
        }
    }
}

/// The checkpoint of `stream` (sequence 0 before the first batch).
pub async fn checkpoint(conn: &mut PgConnection, stream: &str) -> Result<Checkpoint, DbError> {
    let row: Option<CheckpointRow> = db(
        sqlx::query_as(
            "SELECT last_seq, leader_epoch, stream_created FROM ingest_checkpoints WHERE stream = $1",
        )
        .bind(stream)
        .fetch_optional(conn)
        .await,
        "read the ingest checkpoint",
    )?;
    Ok(row.unwrap_or((0, 0, None)).into())
}

/// Becomes `stream`'s leader: bumps its epoch, which fences off every earlier leader.
/// Call it holding the stream's leadership lock.
pub async fn claim_leadership(
    conn: &mut PgConnection,
    stream: &str,
) -> Result<Checkpoint, DbError> {
    let row: CheckpointRow = db(
        sqlx::query_as(
            "INSERT INTO ingest_checkpoints (stream, last_seq, leader_epoch) VALUES ($1, 0, 1) \
             ON CONFLICT (stream) DO UPDATE SET leader_epoch = ingest_checkpoints.leader_epoch + 1 \
             RETURNING last_seq, leader_epoch, stream_created",
        )
        .bind(stream)
        .fetch_one(conn)
        .await,
        "claim the stream's leadership",
    )?;
    Ok(row.into())
}

/// Points `stream`'s checkpoint at the stream as it is now (its identity, and the sequence
/// ingest continues after), counting a reset, if `leader_epoch` is still its leader.
pub async fn rebase_checkpoint(
    conn: &mut PgConnection,
    stream: &str,
    leader_epoch: i64,
    last_seq: u64,
    stream_created: DateTime<Utc>,
    reset: bool,
) -> Result<(), DbError> {
    let updated = db(
        sqlx::query(
            "UPDATE ingest_checkpoints SET last_seq = $3, stream_created = $4, \
             resets = resets + $5, updated_at = now() WHERE stream = $1 AND leader_epoch = $2",
        )
        .bind(stream)
        .bind(leader_epoch)
        .bind(last_seq as i64)
        .bind(stream_created)
        .bind(i64::from(reset))
        .execute(conn)
        .await,
        "rebase the ingest checkpoint",
    )?;
    if updated.rows_affected() == 0 {
        return Err(DbError::Superseded {
            stream: stream.to_owned(),
        });
    }
    Ok(())
}

/// What a batch is decided against, read in one round trip under the append lock.
pub struct BatchView {
    /// The stream's last committed sequence (0 before the first batch).
    pub checkpoint: u64,
    /// The (tenant, command id) pairs of the batch the ledger already holds.
    pub applied: HashSet<(String, Uuid)>,
    /// The registry rows the batch's commands refer to.
    pub registry: RegistryView,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    checkpoint_seq: Option<i64>,
    checkpoint_epoch: Option<i64>,
    applied_tenants: Vec<String>,
    applied_commands: Vec<Uuid>,
    known_tenants: Vec<String>,
    known_user_tenants: Vec<String>,
    known_users: Vec<String>,
    schema_tenants: Vec<String>,
    schema_types: Vec<String>,
    schema_versions: Vec<i32>,
}

/// Takes the append lock for the caller's transaction and reads, in one round trip
/// (`ingest_view`), the checkpoint of `stream`, which of `commands` were applied and the
/// registry rows they refer to; `Superseded` if `leader_epoch` is no longer the stream's
/// leader.
pub async fn read_view<'a>(
    conn: &mut PgConnection,
    stream: Option<&str>,
    leader_epoch: i64,
    commands: impl Iterator<Item = &'a Command>,
    contracts: &Cache,
) -> Result<BatchView, DbError> {
    let (mut tenants, mut ids) = (Vec::new(), Vec::new());
    let (mut user_tenants, mut users) = (Vec::new(), Vec::new());
    let mut typed = BTreeSet::new();
    for c in commands {
        tenants.push(c.tenant.as_str());
        ids.push(c.id);
        if let Some(u) = c.body.user() {
            user_tenants.push(c.tenant.as_str());
            users.push(u);
        }
        if let CommandBody::RecordActivity { activity_type, .. } = &c.body {
            typed.insert((c.tenant.as_str(), activity_type.as_str()));
        }
    }
    let (typed_tenants, types): (Vec<&str>, Vec<&str>) = typed.into_iter().unzip();
    let v: ViewRow = db(
        sqlx::query_as(
            "SELECT checkpoint_seq, checkpoint_epoch, applied_tenants, applied_commands, \
             known_tenants, known_user_tenants, known_users, \
             schema_tenants, schema_types, schema_versions \
             FROM ingest_view($1, $2, $3::text[], $4::uuid[], $5::text[], $6::text[], \
                              $7::text[], $8::text[])",
        )
        .bind(stream)
        .bind(crate::db::locks::APPEND_LOCK_TIMEOUT)
        .bind(&tenants)
        .bind(&ids)
        .bind(&user_tenants)
        .bind(&users)
        .bind(&typed_tenants)
        .bind(&types)
        .fetch_one(&mut *conn)
        .await,
        "read what a batch is decided against",
    )?;
    if v.checkpoint_epoch.unwrap_or(0) != leader_epoch {
        return Err(DbError::Superseded {
            stream: stream.unwrap_or_default().to_owned(),
        });
    }
    // The versions current under the append lock, so a schema registered before this batch
    // binds it; a version not compiled yet costs one more round trip, once per process.
    let current = v
        .schema_tenants
        .into_iter()
        .zip(v.schema_types)
        .zip(v.schema_versions)
        .map(|((t, a), n)| (t, a, n))
        .collect();
    let contracts = contracts.compiled(conn, current).await?;
    Ok(BatchView {
        checkpoint: v.checkpoint_seq.unwrap_or(0).max(0) as u64,
        applied: v
            .applied_tenants
            .into_iter()
            .zip(v.applied_commands)
            .collect(),
        registry: RegistryView::new(
            v.known_tenants,
            v.known_user_tenants.into_iter().zip(v.known_users),
        )
        .with_contracts(contracts),
    })
}
