//! A batch whose tenants live on several shards: one transaction per shard, committed at
//! once, each holding only its own shards' append locks. Each share-locks the stream's
//! checkpoint row and checks the leader's epoch, so a new leader's claim waits for every one
//! of them; once all have committed, the checkpoint moves past the batch. A crash between
//! leaves the checkpoint behind: the redelivered messages find their commands in the ledger
//! and their dead letters already written, so nothing is applied twice.
//!
//! A tenant's messages all go to one part, in the batch's order, and the next batch starts
//! only after every part of this one committed: per-tenant order is kept.

use sqlx::Row;

use super::batch::{BatchOutcome, Decoded, commit_part};
use super::inbound::Inbound;
use super::write::Checkpoint;
use crate::db::{DbError, db};
use crate::log::EventLog;
use crate::log::shards::partition;
use crate::model::TimeWindow;

/// One shard's part of a batch: its messages, decoded, and where each was in the batch.
pub(super) struct Part {
    pub(super) batch: Vec<Inbound>,
    pub(super) decoded: Vec<Decoded>,
    index: Vec<usize>,
}

/// The shard a message goes with among `shards`: its tenant's hash (the subject's tenant
/// for a message that did not decode). A tenant placed elsewhere (the count grew since) is
/// still appended on its own shard: the database takes its lock.
fn shard_of(m: &Inbound, d: &Decoded, shards: u32) -> u32 {
    let tenant = match d {
        Ok(c) => c.tenant.as_str(),
        Err(_) => m.subject_tenant(),
    };
    partition(tenant, shards)
}

/// Whether every message of the batch goes with one shard: then it is one transaction,
/// and nothing is copied apart.
pub(super) fn one_shard(batch: &[Inbound], decoded: &[Decoded], shards: u32) -> bool {
    let mut all = batch
        .iter()
        .zip(decoded)
        .map(|(m, d)| shard_of(m, d, shards));
    let first = all.next();
    all.all(|s| Some(s) == first)
}

/// Splits a batch by shard, each part in the batch's order.
pub(super) fn split(batch: &[Inbound], decoded: Vec<Decoded>, shards: u32) -> Vec<Part> {
    let mut parts: Vec<(u32, Part)> = Vec::new();
    for (i, (m, d)) in batch.iter().zip(decoded).enumerate() {
        let shard = shard_of(m, &d, shards);
        let at = match parts.iter().position(|(s, _)| *s == shard) {
            Some(at) => at,
            None => {
                let part = Part {
                    batch: Vec::new(),
                    decoded: Vec::new(),
                    index: Vec::new(),
                };
                parts.push((shard, part));
                parts.len() - 1
            }
        };
        let part = &mut parts[at].1;
        part.batch.push(m.clone());
        part.decoded.push(d);
        part.index.push(i);
    }
    parts.into_iter().map(|(_, p)| p).collect()
}

/// Commits the parts at once, then moves the checkpoint past the batch.
pub(super) async fn commit(
    log: &EventLog,
    stream: &str,
    epoch: i64,
    batch: &[Inbound],
    parts: Vec<Part>,
    window: &TimeWindow,
) -> Result<BatchOutcome, DbError> {
    metrics::histogram!("activity_ingest_batch_shards").record(parts.len() as f64);
    let held = Checkpoint::Hold { stream, epoch };
    let (mut inputs, mut indexes) = (Vec::new(), Vec::new());
    for p in parts {
        inputs.push((p.batch, p.decoded));
        indexes.push(p.index);
    }
    let commits = inputs.iter_mut().map(|(batch, decoded)| {
        let decoded = Some(std::mem::take(decoded));
        commit_part(log, held, &*batch, decoded, window)
    });
    let outcomes = futures_util::future::try_join_all(commits).await?;
    let last_seq = batch.iter().map(|m| m.stream_seq).max().unwrap_or(0);
    let moved = db(
        sqlx::query(
            "INSERT INTO ingest_checkpoints AS c (stream, last_seq, leader_epoch) \
             VALUES ($1, $2, $3) ON CONFLICT (stream) DO UPDATE \
             SET last_seq = GREATEST(c.last_seq, EXCLUDED.last_seq), updated_at = now() \
             WHERE c.leader_epoch = EXCLUDED.leader_epoch RETURNING 1",
        )
        .bind(stream)
        .bind(last_seq.min(i64::MAX as u64) as i64)
        .bind(epoch)
        .fetch_optional(log.pool())
        .await,
        "move the ingest checkpoint",
    )?;
    if moved.map(|r| r.get::<i32, _>(0)).is_none() {
        return Err(DbError::Superseded {
            stream: stream.to_owned(),
        });
    }
    let mut all = BatchOutcome::default();
    for (index, outcome) in indexes.iter().zip(outcomes) {
        all.appended += outcome.appended;
        all.duplicates += outcome.duplicates;
        all.refusals.extend(outcome.refusals);
        all.rejected.extend(
            outcome
                .rejected
                .into_iter()
                .map(|(i, reason)| (index[i], reason)),
        );
    }
    all.rejected.sort_by_key(|(i, _)| *i);
    Ok(all)
}
