//! One batch of inbound messages into the log: decode, decide, write, in one transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgTransaction;
use uuid::Uuid;

use super::registry;
use crate::log::partitions::Month;
use crate::log::{EventLog, LogError, append_in, lock_appends};
use crate::model::{
    Command, CommandBody, Lineage, NewEvent, Reason, Rejection, TimeWindow, decode,
};

/// A message as the ingestor received it from the stream.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The subject it was published to.
    pub subject: String,
    /// Its bytes, exactly as published.
    pub payload: bytes::Bytes,
    /// Its stream sequence.
    pub stream_seq: u64,
    /// How many times it has been delivered.
    pub delivered: u64,
    /// When the stream stored it: the default `occurred_at`, the same on every redelivery.
    pub published: DateTime<Utc>,
}

impl Inbound {
    /// The tenant named by the subject's last token (`activity.commands.<tenant>`).
    pub fn subject_tenant(&self) -> &str {
        self.subject.rsplit('.').next().unwrap_or_default()
    }

    fn lineage(&self) -> Lineage {
        Lineage {
            subject: Some(self.subject.clone()),
            stream_seq: Some(self.stream_seq),
            delivery_count: Some(self.delivered),
        }
    }
}

/// What a committed batch did with each of its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events appended.
    pub appended: usize,
    /// Commands already applied (or repeated in the batch): acked, nothing written.
    pub duplicates: usize,
    /// The reason of each dead-lettered message, by its index in the batch.
    pub rejected: Vec<(usize, Reason)>,
}

/// Decodes a message and checks its subject: everything that needs no database.
pub fn decode_inbound(m: &Inbound, window: &TimeWindow) -> Result<Command, Rejection> {
    let command = decode(&m.payload, m.published, window)?;
    if command.tenant != m.subject_tenant() {
        return Err(Rejection::field(
            Reason::TenantMismatch,
            "tenant",
            format!(
                "is `{}` but the subject `{}` names `{}`",
                command.tenant,
                m.subject,
                m.subject_tenant()
            ),
        ));
    }
    Ok(command)
}

/// Commits one batch: its events, its registry changes and its dead letters, in one
/// transaction, if `leader_epoch` is still the stream's leader. Messages may be acked once
/// this returns `Ok`.
pub async fn commit_batch(
    log: &EventLog,
    stream: &str,
    leader_epoch: i64,
    batch: &[Inbound],
    window: &TimeWindow,
) -> Result<BatchOutcome, LogError> {
    let decoded: Vec<Result<Command, Rejection>> =
        batch.iter().map(|m| decode_inbound(m, window)).collect();
    let months: Vec<Month> = decoded
        .iter()
        .zip(batch)
        .filter_map(|(d, m)| match d {
            Ok(Command {
                body: CommandBody::RecordActivity { occurred_at, .. },
                ..
            }) => Some(Month::of(*occurred_at)),
            Ok(_) => Some(Month::of(m.published)),
            Err(_) => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    log.ensure_months(&months).await?;
    let mut tx = crate::log::db(log.pool().begin().await, "begin a batch")?;
    let outcome = match write_batch(&mut tx, stream, leader_epoch, batch, decoded).await {
        Err(LogError::NoPartition(e)) => {
            log.forget_known_months();
            return Err(LogError::NoPartition(e));
        }
        other => other?,
    };
    crate::log::db(tx.commit().await, "commit a batch")?;
    Ok(outcome)
}

async fn write_batch(
    tx: &mut PgTransaction<'_>,
    stream: &str,
    leader_epoch: i64,
    batch: &[Inbound],
    decoded: Vec<Result<Command, Rejection>>,
) -> Result<BatchOutcome, LogError> {
    // The append lock first: the ledger and registry read below cannot change under us.
    lock_appends(tx).await?;
    let ids: Vec<Uuid> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().map(|c| c.id))
        .collect();
    let checkpoint = registry::checkpoint_as_leader(tx, stream, leader_epoch).await?;
    let mut applied: HashSet<Uuid> = registry::applied_commands(tx, &ids).await?;
    let mut view = registry::load_view(tx, decoded.iter().filter_map(|d| d.as_ref().ok())).await?;
    let mut outcome = BatchOutcome::default();
    let mut events: Vec<NewEvent> = Vec::new();
    let mut dead: Vec<registry::DeadLetter> = Vec::new();
    for (i, (m, d)) in batch.iter().zip(decoded).enumerate() {
        if m.stream_seq <= checkpoint {
            // Committed before a crash or a lost ack: its outcome is already in the database.
            outcome.duplicates += 1;
            continue;
        }
        let command_id = d.as_ref().ok().map(|c| c.id);
        let result = d.and_then(|command| {
            if applied.contains(&command.id) {
                return Ok(None);
            }
            let id = command.id;
            view.decide(command, m.published, m.lineage())
                .map(|e| Some((id, e)))
        });
        match result {
            Ok(Some((id, event))) => {
                applied.insert(id);
                events.push(event);
            }
            Ok(None) => outcome.duplicates += 1,
            Err(rejection) => {
                outcome.rejected.push((i, rejection.reason));
                dead.push(registry::DeadLetter::of(m, command_id, rejection));
            }
        }
    }
    registry::apply(tx, &view).await?;
    let appended = append_in(tx, &events).await?;
    outcome.appended = appended.appended;
    outcome.duplicates += appended.duplicates.len();
    registry::insert_dead_letters(tx, &dead).await?;
    if let Some(last) = batch
        .iter()
        .map(|m| m.stream_seq)
        .max()
        .filter(|s| *s > checkpoint)
    {
        registry::advance_checkpoint(tx, stream, last).await?;
    }
    Ok(outcome)
}
