//! The write side of a batch in one statement before its COPY: the registry's net changes,
//! the dead letters and the checkpoint (fenced by the leader's epoch) ride in the statement
//! of the log's one append path (`log::Append`), which records the ledger, hands out the
//! positions and notifies the projectors.

use sqlx::PgConnection;

use super::decide::{RegistryView, UserChange};
use super::inbound::{DEAD_LETTER_RAW_PREFIX, DeadLetter};
use crate::db::{DbError, db};
use crate::log::{Append, GrantedRow};

/// One round trip for everything a batch writes before its COPY. Data-modifying CTEs all run
/// to completion whatever the final SELECT reads; they touch disjoint rows (the registry view
/// keeps one net change per user), so their order within the statement does not matter.
const WRITES: &str = "\
new_tenants AS (
    INSERT INTO tenants (tenant, name) SELECT * FROM unnest($1::text[], $2::text[])
), forgotten AS (
    DELETE FROM users u USING unnest($3::text[], $4::text[]) AS k(tenant, user_id)
    WHERE u.tenant = k.tenant AND u.user_id = k.user_id
), emails AS (
    UPDATE users u SET email = k.email
    FROM unnest($5::text[], $6::text[], $7::text[]) AS k(tenant, user_id, email)
    WHERE u.tenant = k.tenant AND u.user_id = k.user_id
), registered AS (
    INSERT INTO users (tenant, user_id, email, name)
    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[])
    ON CONFLICT (tenant, user_id) DO UPDATE
    SET email = EXCLUDED.email, name = EXCLUDED.name, registered_at = now()
), dead AS (
    INSERT INTO dead_letters (reason, field, message, subject, stream_seq, delivery_count,
        command_id, tenant, raw, raw_length, raw_sha256, received_at, stream_created)
    SELECT reason, field, message, subject, stream_seq, delivery_count, command_id, tenant,
           substring(raw FROM 1 FOR $12), length(raw), sha256(raw), received_at, stream_created
    FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::int8[], $18::int4[],
         $19::uuid[], $20::text[], $21::bytea[], $22::timestamptz[], $23::timestamptz[])
         AS d(reason, field, message, subject, stream_seq, delivery_count, command_id,
              tenant, raw, received_at, stream_created)
    ON CONFLICT (stream_seq, subject, raw_sha256, stream_created) WHERE stream_seq IS NOT NULL
    DO NOTHING
), checkpoint AS (
    INSERT INTO ingest_checkpoints AS c (stream, last_seq, leader_epoch)
    SELECT $24::text, $25, $26 WHERE $24::text IS NOT NULL
    ON CONFLICT (stream) DO UPDATE
    SET last_seq = GREATEST(c.last_seq, EXCLUDED.last_seq), updated_at = now()
    WHERE c.leader_epoch = EXCLUDED.leader_epoch
    RETURNING 1
),";

/// 0 when the checkpoint did not move: another leader's epoch holds the stream.
const CHECKPOINTED: &str =
    "(SELECT count(*) FROM checkpoint) + CASE WHEN $24::text IS NULL THEN 1 ELSE 0 END";

/// Where a batch leaves the stream's checkpoint.
#[derive(Debug, Clone, Copy)]
pub enum Checkpoint<'a> {
    /// No stream: a redrive of dead letters.
    None,
    /// Moved to `last_seq` if `epoch` still leads `stream`.
    Move {
        stream: &'a str,
        epoch: i64,
        last_seq: u64,
    },
    /// Left where it is, but the batch commits only if `epoch` still leads `stream`: the
    /// checkpoint row is share-locked until the commit, so a new leader's claim waits for
    /// it, and the shards of one batch commit at once (`super::fanout`).
    Hold { stream: &'a str, epoch: i64 },
}

/// The statement: the writes above in the append's; with `hold`, the checkpoint is only
/// share-locked and checked.
fn statement(hold: bool) -> &'static str {
    static MOVE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static HOLD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if hold {
        HOLD.get_or_init(|| {
            let moved = &WRITES[WRITES.find("checkpoint AS (").expect("a checkpoint CTE")..];
            let held = WRITES.replace(
                moved,
                "checkpoint AS (\n    SELECT 1 FROM (SELECT 1 FROM ingest_checkpoints c \
                 WHERE c.stream = $24::text AND c.leader_epoch = $26 AND $25::int8 >= 0 \
                 FOR SHARE) held \
                 UNION ALL SELECT 1 WHERE $26 = 0 AND NOT EXISTS \
                 (SELECT 1 FROM ingest_checkpoints c WHERE c.stream = $24::text)\n),",
            );
            Append::statement(&held, CHECKPOINTED, 27)
        })
    } else {
        MOVE.get_or_init(|| Append::statement(WRITES, CHECKPOINTED, 27))
    }
}

/// Writes everything of a batch and takes its events' positions, in the caller's transaction
/// (which must hold the append locks of its shards, taken by `read_view`); the events are
/// then COPYed by `append.copy`. Leaves the checkpoint as `checkpoint` says, if its epoch
/// still leads its stream; `Superseded` otherwise.
pub async fn write_batch(
    conn: &mut PgConnection,
    checkpoint: Checkpoint<'_>,
    registry: &RegistryView,
    dead: &[DeadLetter],
    append: &Append<'_>,
) -> Result<GrantedRow, DbError> {
    let changes = Changes::of(registry);
    let col = |f: fn(&DeadLetter) -> String| dead.iter().map(f).collect::<Vec<_>>();
    let (stream, leader_epoch, last_seq, hold) = match checkpoint {
        Checkpoint::None => (None, 0, 0, false),
        Checkpoint::Move {
            stream,
            epoch,
            last_seq,
        } => (Some(stream), epoch, last_seq, false),
        Checkpoint::Hold { stream, epoch } => (Some(stream), epoch, 0, true),
    };
    let writes = sqlx::query_as(sqlx::AssertSqlSafe(statement(hold)))
        .bind(&changes.tenants.0)
        .bind(&changes.tenants.1)
        .bind(&changes.forget.0)
        .bind(&changes.forget.1)
        .bind(&changes.emails.0.0)
        .bind(&changes.emails.0.1)
        .bind(&changes.emails.1)
        .bind(&changes.registers.0.0)
        .bind(&changes.registers.0.1)
        .bind(&changes.registers.1)
        .bind(&changes.registers.2)
        .bind(DEAD_LETTER_RAW_PREFIX as i32)
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
        .bind(dead.iter().map(|d| d.stream_created).collect::<Vec<_>>())
        .bind(stream)
        .bind(last_seq.min(i64::MAX as u64) as i64)
        .bind(leader_epoch);
    let row: GrantedRow = db(append.bind(writes).fetch_one(conn).await, "write a batch")?;
    if row.0 == 0 {
        return Err(DbError::Superseded {
            stream: stream.unwrap_or_default().to_owned(),
        });
    }
    for d in dead {
        metrics::counter!("activity_commands_rejected_total", "reason" => d.rejection.reason.code()).increment(1);
    }
    Ok(row)
}

/// Text columns, by user: (tenants, users).
type UserColumns<'a> = (Vec<&'a str>, Vec<&'a str>);

/// A registry view's net changes, as the columns the write statement binds.
#[derive(Default)]
struct Changes<'a> {
    tenants: (Vec<&'a str>, Vec<&'a str>),
    forget: UserColumns<'a>,
    emails: (UserColumns<'a>, Vec<&'a str>),
    registers: (UserColumns<'a>, Vec<&'a str>, Vec<Option<&'a str>>),
}

impl<'a> Changes<'a> {
    fn of(view: &'a RegistryView) -> Self {
        let mut c = Changes {
            tenants: view
                .new_tenants()
                .iter()
                .map(|(t, n)| (t.as_str(), n.as_str()))
                .unzip(),
            ..Default::default()
        };
        for ((tenant, user), change) in view.user_changes() {
            match change {
                UserChange::Forget => {
                    c.forget.0.push(tenant);
                    c.forget.1.push(user);
                }
                UserChange::Email(email) => {
                    c.emails.0.0.push(tenant);
                    c.emails.0.1.push(user);
                    c.emails.1.push(email);
                }
                UserChange::Register(row) => {
                    c.registers.0.0.push(tenant);
                    c.registers.0.1.push(user);
                    c.registers.1.push(&row.email);
                    c.registers.2.push(row.name.as_deref());
                }
            }
        }
        c
    }
}
