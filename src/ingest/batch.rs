//! One batch of inbound messages into the log: decode, decide, write, in one transaction.

use std::collections::HashSet;
use std::time::Instant;

use sqlx::PgTransaction;

use super::inbound::{DeadLetter, Inbound, Refusal};
use super::registry::{self, BatchView};
use super::write::{self, Checkpoint};
use crate::db::DbError;
use crate::log::EventLog;
use crate::log::partitions::Month;
use crate::model::{
    Command, CommandBody, NewEvent, Reason, Rejection, TimeWindow, decode, escape_text,
};

/// What a committed batch did with each of its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events appended.
    pub appended: usize,
    /// Commands already applied (or repeated in the batch): acked, nothing written.
    pub duplicates: usize,
    /// The reason of each dead-lettered message, by its index in the batch.
    pub rejected: Vec<(usize, Reason)>,
    /// What the producers may learn of each refusal (`activity.rejections.<tenant>`).
    pub refusals: Vec<Refusal>,
}

/// Decodes a message and checks its subject: everything that needs no database.
pub fn decode_inbound(m: &Inbound, window: &TimeWindow) -> Result<Command, Rejection> {
    let command = decode(&m.payload, m.published, window)?;
    if let Some(refused) = super::partitions::misrouted(m, &command) {
        return Err(refused);
    }
    if command.tenant != m.subject_tenant() {
        return Err(Rejection::field(
            Reason::TenantMismatch,
            "tenant",
            format!(
                "is `{}` but the subject `{}` names `{}`",
                command.tenant,
                escape_text(&m.subject),
                escape_text(m.subject_tenant())
            ),
        ));
    }
    Ok(command)
}

/// Commits one batch: its events, its registry changes and its dead letters, in one
/// transaction, if `leader_epoch` is still the stream's leader. Messages may be acked once
/// this returns `Ok`.
///
/// Only commands that are accepted may cause a month's partition to be created: the batch
/// is decided first, and if its events need months the log does not have yet, the
/// transaction is rolled back, the months are created (in a transaction of their own, so the
/// DDL never waits behind the append lock) and the batch is decided again. A command for a
/// month whose table exists detached is refused as `archived_month`.
pub async fn commit_batch(
    log: &EventLog,
    stream: &str,
    leader_epoch: i64,
    batch: &[Inbound],
    window: &TimeWindow,
) -> Result<BatchOutcome, DbError> {
    commit_decoded(log, stream, leader_epoch, batch, None, window).await
}

/// What decoding one message came to.
pub type Decoded = Result<Command, Rejection>;

/// Decodes every message of a batch, in order.
pub fn decode_all(batch: &[Inbound], window: &TimeWindow) -> Vec<Decoded> {
    let started = Instant::now();
    let decoded = batch.iter().map(|m| decode_inbound(m, window)).collect();
    metrics::histogram!("activity_ingest_decode_seconds").record(started.elapsed().as_secs_f64());
    decoded
}

/// `commit_batch`, with the batch already decoded (`decode_all`) if `decoded` is given: the
/// ingestor decodes the next batch while this one commits. A batch whose tenants live on
/// several shards commits one transaction per shard, at once (`super::fanout`).
pub async fn commit_decoded(
    log: &EventLog,
    stream: &str,
    leader_epoch: i64,
    batch: &[Inbound],
    decoded: Option<Vec<Decoded>>,
    window: &TimeWindow,
) -> Result<BatchOutcome, DbError> {
    let decoded = decoded.unwrap_or_else(|| decode_all(batch, window));
    if super::fanout::one_shard(batch, &decoded, log.shards()) {
        let last_seq = batch.iter().map(|m| m.stream_seq).max().unwrap_or(0);
        let checkpoint = Checkpoint::Move {
            stream,
            epoch: leader_epoch,
            last_seq,
        };
        return commit_part(log, checkpoint, batch, Some(decoded), window).await;
    }
    let parts = super::fanout::split(batch, decoded, log.shards());
    super::fanout::commit(log, stream, leader_epoch, batch, parts, window).await
}

/// Commits `batch` in one transaction, leaving the checkpoint as `checkpoint` says.
pub(super) async fn commit_part(
    log: &EventLog,
    checkpoint: Checkpoint<'_>,
    batch: &[Inbound],
    mut decoded: Option<Vec<Decoded>>,
    window: &TimeWindow,
) -> Result<BatchOutcome, DbError> {
    let mut archived: HashSet<Month> = HashSet::new();
    loop {
        let decoded = decoded.take().unwrap_or_else(|| decode_all(batch, window));
        let mut tx = crate::db::db(log.pool().begin().await, "begin a batch")?;
        let written = write_batch(&mut tx, checkpoint, batch, decoded, log, &archived);
        match written.await {
            Ok(Written::Done(outcome)) => {
                crate::db::db(tx.commit().await, "commit a batch")?;
                return Ok(outcome);
            }
            Ok(Written::NeedMonths(months)) => {
                drop(tx);
                let detached = log.ensure_months(&months).await?;
                if detached.is_empty() && log.unknown_months(&months).len() == months.len() {
                    // Nothing moved: never loop for ever.
                    return Err(DbError::NoPartition(format!("months {months:?}")));
                }
                archived.extend(detached);
            }
            Err(DbError::NoPartition(e)) => {
                log.forget_known_months();
                return Err(DbError::NoPartition(e));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What deciding a batch came to.
enum Written {
    /// Written in the transaction, ready to commit.
    Done(BatchOutcome),
    /// Its accepted events need these months' partitions first.
    NeedMonths(Vec<Month>),
}

/// The month a command's event falls in.
pub(super) fn month_of(command: &Command, m: &Inbound) -> Month {
    match &command.body {
        CommandBody::RecordActivity { occurred_at, .. } => Month::of(*occurred_at),
        _ => Month::of(m.published),
    }
}

pub(super) fn archived_month(month: Month) -> Rejection {
    Rejection::field(
        Reason::ArchivedMonth,
        "occurred_at",
        format!(
            "falls in {month}, whose partition was detached from the log (archived); \
             re-attach it to accept commands for that month"
        ),
    )
}

async fn write_batch(
    tx: &mut PgTransaction<'_>,
    checkpoint: Checkpoint<'_>,
    batch: &[Inbound],
    decoded: Vec<Decoded>,
    log: &EventLog,
    archived: &HashSet<Month>,
) -> Result<Written, DbError> {
    // One round trip: the append locks, then the checkpoint, the ledger and the registry,
    // which no other append can change until this transaction ends.
    let commands = decoded.iter().filter_map(|d| d.as_ref().ok());
    let (stream, leader_epoch) = match checkpoint {
        Checkpoint::Move { stream, epoch, .. } | Checkpoint::Hold { stream, epoch } => {
            (Some(stream), epoch)
        }
        Checkpoint::None => (None, 0),
    };
    let BatchView {
        checkpoint: committed,
        mut applied,
        registry: mut view,
    } = registry::read_view(tx, stream, leader_epoch, commands, log.contracts()).await?;
    let mut outcome = BatchOutcome::default();
    let mut events: Vec<NewEvent> = Vec::new();
    let mut dead: Vec<super::inbound::DeadLetter> = Vec::new();
    for (i, (m, d)) in batch.iter().zip(decoded).enumerate() {
        if m.stream_seq <= committed {
            // Committed before a crash or a lost ack: its outcome is already in the database.
            outcome.duplicates += 1;
            continue;
        }
        let command_id = d.as_ref().ok().map(|c| c.id);
        let result = d.and_then(|command| {
            let key = (command.tenant.clone(), command.id);
            if applied.contains(&key) {
                return Ok(None);
            }
            let month = month_of(&command, m);
            if archived.contains(&month) {
                return Err(archived_month(month));
            }
            view.decide(command, m.published, m.lineage())
                .map(|e| Some((key, e)))
        });
        match result {
            Ok(Some((key, event))) => {
                applied.insert(key);
                events.push(event);
            }
            Ok(None) => outcome.duplicates += 1,
            Err(rejection) => {
                outcome.rejected.push((i, rejection.reason));
                let letter = DeadLetter::of(m, command_id, rejection);
                outcome.refusals.extend(letter.refusal());
                dead.push(letter);
            }
        }
    }
    let months: Vec<Month> = events.iter().map(|e| Month::of(e.occurred_at)).collect();
    let missing = log.unknown_months(&months);
    if !missing.is_empty() {
        return Ok(Written::NeedMonths(missing));
    }
    // One round trip for the registry, the dead letters, the checkpoint and the positions;
    // then the COPY of the rows the ledger took.
    let append = crate::log::Append::new(&events);
    let granted = write::write_batch(tx, checkpoint, &view, &dead, &append).await?;
    outcome.appended = append.copy(tx, granted).await?.appended;
    outcome.duplicates += events.len() - outcome.appended;
    Ok(Written::Done(outcome))
}
