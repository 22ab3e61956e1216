//! The write side's SQL: which commands were applied, the registry view of a batch, the
//! registry changes and the dead letters a batch writes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::batch::Inbound;
use super::decide::{RegistryView, UserChange};
use crate::log::{LogError, db};
use crate::model::{Command, Rejection, escape_text, without_nul};

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
pub async fn checkpoint(conn: &mut PgConnection, stream: &str) -> Result<Checkpoint, LogError> {
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
) -> Result<Checkpoint, LogError> {
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

/// The last committed sequence of `stream`, in a transaction holding the append lock, if
/// `leader_epoch` is still its leader; `Superseded` if a successor has claimed it.
pub async fn checkpoint_as_leader(
    conn: &mut PgConnection,
    stream: &str,
    leader_epoch: i64,
) -> Result<u64, LogError> {
    let current = checkpoint(conn, stream).await?;
    if current.leader_epoch != leader_epoch {
        return Err(LogError::Superseded {
            stream: stream.to_owned(),
        });
    }
    Ok(current.last_seq)
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
) -> Result<(), LogError> {
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
        return Err(LogError::Superseded {
            stream: stream.to_owned(),
        });
    }
    Ok(())
}

/// Moves `stream`'s checkpoint forward to `seq`, in the batch's transaction.
pub async fn advance_checkpoint(
    conn: &mut PgConnection,
    stream: &str,
    seq: u64,
) -> Result<(), LogError> {
    db(
        sqlx::query(
            "INSERT INTO ingest_checkpoints (stream, last_seq) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET last_seq = GREATEST(ingest_checkpoints.last_seq, EXCLUDED.last_seq), \
             updated_at = now()",
        )
        .bind(stream)
        .bind(seq as i64)
        .execute(conn)
        .await,
        "advance the ingest checkpoint",
    )?;
    Ok(())
}

/// Which of these (tenant, command id) pairs the log has already applied.
pub async fn applied_commands(
    conn: &mut PgConnection,
    keys: &[(String, Uuid)],
) -> Result<HashSet<(String, Uuid)>, LogError> {
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) =
        keys.iter().map(|(t, id)| (t.as_str(), *id)).unzip();
    let found: Vec<(String, Uuid)> = db(
        sqlx::query_as(
            "SELECT l.tenant, l.command_id FROM command_ledger l \
             JOIN unnest($1::text[], $2::uuid[]) AS k(tenant, command_id) USING (tenant, command_id)",
        )
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(conn)
        .await,
        "look up applied commands",
    )?;
    Ok(found.into_iter().collect())
}

/// The registry rows a batch's commands refer to.
pub async fn load_view<'a>(
    conn: &mut PgConnection,
    commands: impl Iterator<Item = &'a Command>,
) -> Result<RegistryView, LogError> {
    let mut tenants: Vec<String> = Vec::new();
    let (mut user_tenants, mut user_ids): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for c in commands {
        tenants.push(c.tenant.clone());
        if let Some(u) = c.body.user() {
            user_tenants.push(c.tenant.clone());
            user_ids.push(u.to_owned());
        }
    }
    let known_tenants: Vec<String> = db(
        sqlx::query_scalar("SELECT tenant FROM tenants WHERE tenant = ANY($1)")
            .bind(&tenants)
            .fetch_all(&mut *conn)
            .await,
        "read the tenants of a batch",
    )?;
    let known_users: Vec<(String, String)> = db(
        sqlx::query_as(
            "SELECT u.tenant, u.user_id FROM users u \
             JOIN unnest($1::text[], $2::text[]) AS k(tenant, user_id) USING (tenant, user_id)",
        )
        .bind(&user_tenants)
        .bind(&user_ids)
        .fetch_all(&mut *conn)
        .await,
        "read the users of a batch",
    )?;
    Ok(RegistryView::new(known_tenants, known_users))
}

/// Writes the batch's net registry changes.
pub async fn apply(conn: &mut PgConnection, view: &RegistryView) -> Result<(), LogError> {
    let (names, titles): (Vec<&str>, Vec<&str>) = view
        .new_tenants()
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .unzip();
    if !names.is_empty() {
        db(
            sqlx::query(
                "INSERT INTO tenants (tenant, name) SELECT * FROM unnest($1::text[], $2::text[])",
            )
            .bind(&names)
            .bind(&titles)
            .execute(&mut *conn)
            .await,
            "create tenants",
        )?;
    }
    let mut forget = (Vec::new(), Vec::new());
    let mut emails = (Vec::new(), Vec::new(), Vec::new());
    let mut registers = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((tenant, user), change) in view.user_changes() {
        match change {
            UserChange::Forget => {
                forget.0.push(tenant.as_str());
                forget.1.push(user.as_str());
            }
            UserChange::Email(email) => {
                emails.0.push(tenant.as_str());
                emails.1.push(user.as_str());
                emails.2.push(email.as_str());
            }
            UserChange::Register(row) => {
                registers.0.push(tenant.as_str());
                registers.1.push(user.as_str());
                registers.2.push(row.email.as_str());
                registers.3.push(row.name.as_deref());
            }
        }
    }
    if !forget.0.is_empty() {
        db(
            sqlx::query(
                "DELETE FROM users u USING unnest($1::text[], $2::text[]) AS k(tenant, user_id) \
                         WHERE u.tenant = k.tenant AND u.user_id = k.user_id",
            )
            .bind(&forget.0)
            .bind(&forget.1)
            .execute(&mut *conn)
            .await,
            "forget users",
        )?;
    }
    if !emails.0.is_empty() {
        db(
            sqlx::query("UPDATE users u SET email = k.email \
                         FROM unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, user_id, email) \
                         WHERE u.tenant = k.tenant AND u.user_id = k.user_id")
                .bind(&emails.0)
                .bind(&emails.1)
                .bind(&emails.2)
                .execute(&mut *conn)
                .await,
            "change emails",
        )?;
    }
    if !registers.0.is_empty() {
        db(
            sqlx::query(
                "INSERT INTO users (tenant, user_id, email, name) \
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                         ON CONFLICT (tenant, user_id) DO UPDATE \
                         SET email = EXCLUDED.email, name = EXCLUDED.name, registered_at = now()",
            )
            .bind(&registers.0)
            .bind(&registers.1)
            .bind(&registers.2)
            .bind(&registers.3)
            .execute(&mut *conn)
            .await,
            "register users",
        )?;
    }
    Ok(())
}

/// How many bytes of a refused message a dead letter keeps: the largest command accepted, so
/// a refusal of any command within the limit keeps all of it.
pub const DEAD_LETTER_RAW_PREFIX: usize = crate::model::fields::MAX_COMMAND_BYTES;

/// A refused message, as stored in `dead_letters`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    rejection: Rejection,
    subject: String,
    stream_seq: i64,
    delivered: i32,
    command_id: Option<Uuid>,
    tenant: String,
    raw: bytes::Bytes,
    received_at: DateTime<Utc>,
    stream_created: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// The dead letter of message `m`, refused for `rejection`. Every text is made storable
    /// (the subject escaped, NUL kept out of the message), so writing it never fails on the
    /// message's bytes.
    pub fn of(m: &Inbound, command_id: Option<Uuid>, rejection: Rejection) -> Self {
        let rejection = Rejection {
            message: without_nul(&rejection.message).into_owned(),
            ..rejection
        };
        DeadLetter {
            rejection,
            subject: escape_text(&m.subject).into_owned(),
            stream_seq: m.stream_seq.min(i64::MAX as u64) as i64,
            delivered: m.delivered.min(i32::MAX as u64) as i32,
            command_id,
            tenant: escape_text(m.subject_tenant()).into_owned(),
            raw: m.payload.clone(),
            received_at: m.published,
            stream_created: m.stream_created,
        }
    }
}

/// Stores a batch's dead letters and counts them by reason. Each keeps the first
/// `DEAD_LETTER_RAW_PREFIX` bytes of its message, with the full length and SHA-256.
pub async fn insert_dead_letters(
    conn: &mut PgConnection,
    dead: &[DeadLetter],
) -> Result<(), LogError> {
    if dead.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DeadLetter) -> String| dead.iter().map(f).collect::<Vec<_>>();
    db(
        sqlx::query(
            "INSERT INTO dead_letters (reason, field, message, subject, stream_seq, delivery_count, \
             command_id, tenant, raw, raw_length, raw_sha256, received_at, stream_created) \
             SELECT reason, field, message, subject, stream_seq, delivery_count, command_id, tenant, \
                    substring(raw FROM 1 FOR $11), length(raw), sha256(raw), received_at, stream_created \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int4[], \
                  $7::uuid[], $8::text[], $9::bytea[], $10::timestamptz[], $12::timestamptz[]) \
                  AS d(reason, field, message, subject, stream_seq, delivery_count, command_id, \
                       tenant, raw, received_at, stream_created) \
             ON CONFLICT (stream_seq, subject, raw_sha256, stream_created) WHERE stream_seq IS NOT NULL \
             DO NOTHING",
        )
        .bind(col(|d| d.rejection.reason.code().to_owned()))
        .bind(dead.iter().map(|d| d.rejection.field).collect::<Vec<_>>())
        .bind(col(|d| d.rejection.message.clone()))
        .bind(col(|d| d.subject.clone()))
        .bind(dead.iter().map(|d| d.stream_seq).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.delivered).collect::<Vec<_>>())
        .bind(dead.iter().map(|d| d.command_id).collect::<Vec<_>>())
        .bind(col(|d| d.tenant.clone()))
        .bind(dead.iter().map(|d| d.raw.as_ref()).collect::<Vec<&[u8]>>())
        .bind(dead.iter().map(|d| d.received_at).collect::<Vec<_>>())
        .bind(DEAD_LETTER_RAW_PREFIX as i32)
        .bind(dead.iter().map(|d| d.stream_created).collect::<Vec<_>>())
        .execute(conn)
        .await,
        "store dead letters",
    )?;
    for d in dead {
        metrics::counter!("activity_commands_rejected_total", "reason" => d.rejection.reason.code()).increment(1);
    }
    Ok(())
}
