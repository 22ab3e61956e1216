//! Committing a batch whatever happens: retried while the database is unreachable, split in
//! halves while PostgreSQL refuses part of it, the message at fault dead-lettered.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};

use super::IngestError;
use super::batch::{BatchOutcome, Decoded, commit_decoded};
use super::inbound::DeadLetter;
use super::inbound::Inbound;
use super::registry;
use super::worker::Ingestor;
use super::write::{Checkpoint, write_batch};
use crate::db::{DbError, db};
use crate::model::{Reason, Rejection};

impl Ingestor {
    /// Commits, retrying while the database is unreachable. A batch PostgreSQL refuses is
    /// split in halves, committed in stream order, until only the message at fault is left
    /// to become a dead letter: one bad message costs about 2·log2(batch) commits.
    pub(super) async fn commit_with_retry(
        &self,
        messages: &[jetstream::Message],
        inbound: &[Inbound],
        mut decoded: Option<Vec<Decoded>>,
    ) -> Result<BatchOutcome, IngestError> {
        // A stack of ranges still to commit; the next one is on top.
        let mut pending = Vec::new();
        pending.push(0..inbound.len());
        let mut total = BatchOutcome::default();
        while let Some(range) = pending.pop() {
            let part = &inbound[range.clone()];
            // Decoded ahead for the whole batch only; a split decodes its halves again.
            let ahead = decoded.take().filter(|d| d.len() == part.len());
            let outcome = match self.try_commit(messages, part, ahead).await? {
                Ok(outcome) => outcome,
                Err(refused) if part.len() == 1 => self.refuse(&part[0], refused).await?,
                Err(refused) => {
                    tracing::warn!(error = %refused, messages = part.len(), "batch refused; splitting it");
                    let middle = range.start + part.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                    continue;
                }
            };
            total.appended += outcome.appended;
            total.duplicates += outcome.duplicates;
            total.rejected.extend(
                outcome
                    .rejected
                    .into_iter()
                    .map(|(i, r)| (range.start + i, r)),
            );
            total.refusals.extend(outcome.refusals);
        }
        Ok(total)
    }

    /// Commits `part`, retrying while the failure is the system's; the inner error is
    /// PostgreSQL refusing the part's data.
    async fn try_commit(
        &self,
        messages: &[jetstream::Message],
        part: &[Inbound],
        mut decoded: Option<Vec<Decoded>>,
    ) -> Result<Result<BatchOutcome, DbError>, IngestError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.commit(part, decoded.take()).await {
                Ok(outcome) => return Ok(Ok(outcome)),
                // Misconfigured: stop rather than retry in silence or dead-letter the batch.
                Err(e) if e.is_fatal() => return Err(IngestError::Log(e)),
                // A month detached between our check and the COPY: check again.
                Err(DbError::NoPartition(e)) => {
                    tracing::warn!(error = %e, "a month's partition went away; checking the months again");
                    self.log.forget_known_months();
                    self.pause(DbError::NoPartition(e), &mut backoff).await?;
                }
                Err(e) if e.is_transient() => {
                    // Keep the whole batch from redelivery while we wait.
                    for m in messages {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    self.pause(e, &mut backoff).await?;
                }
                Err(e @ DbError::Superseded { .. }) => return Err(e.into()),
                Err(refused) => return Ok(Err(refused)),
            }
        }
    }

    async fn commit(
        &self,
        inbound: &[Inbound],
        decoded: Option<Vec<Decoded>>,
    ) -> Result<BatchOutcome, DbError> {
        commit_decoded(
            &self.log,
            &self.config.stream,
            self.epoch,
            inbound,
            decoded,
            &self.config.window,
        )
        .await
    }

    /// Waits before a retry of a transient failure; any other failure, or a shutdown,
    /// ends the retries with the error to return.
    pub(super) async fn pause(
        &self,
        error: DbError,
        backoff: &mut Duration,
    ) -> Result<(), IngestError> {
        if let DbError::Superseded { .. } = error {
            return Err(error.into());
        }
        let retried = error.is_transient() || matches!(error, DbError::NoPartition(_));
        if error.is_fatal() || !retried {
            return Err(IngestError::Log(error));
        }
        if self.shutdown.is_cancelled() {
            return Err(IngestError::Interrupted(error.to_string()));
        }
        tracing::warn!(error = %error, retry_in = ?backoff, "database unavailable; keeping the messages");
        self.health.beat();
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        Ok(())
    }

    /// Dead-letters a message PostgreSQL refused although the model accepted it, and moves
    /// the checkpoint past it; retried like a commit.
    async fn refuse(&self, m: &Inbound, error: DbError) -> Result<BatchOutcome, IngestError> {
        let letter = DeadLetter::of(
            m,
            None,
            Rejection {
                reason: Reason::InvalidField,
                field: None,
                message: format!("PostgreSQL refused this command: {error}"),
            },
        );
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.write_refusal(&letter, m.stream_seq).await {
                Ok(()) => {
                    return Ok(BatchOutcome {
                        rejected: vec![(0, Reason::InvalidField)],
                        refusals: letter.refusal().into_iter().collect(),
                        ..Default::default()
                    });
                }
                Err(e) => self.pause(e, &mut backoff).await?,
            }
        }
    }

    async fn write_refusal(&self, letter: &DeadLetter, seq: u64) -> Result<(), DbError> {
        let stream = &self.config.stream;
        let mut tx = db(self.log.pool().begin().await, "begin a dead letter")?;
        let view = registry::read_view(
            &mut tx,
            Some(stream),
            self.epoch,
            std::iter::empty(),
            self.log.contracts(),
        )
        .await?;
        if seq > view.checkpoint {
            let letter = std::slice::from_ref(letter);
            let checkpoint = Checkpoint::Move {
                stream,
                epoch: self.epoch,
                last_seq: seq,
            };
            write_batch(
                &mut tx,
                checkpoint,
                &view.registry,
                letter,
                &crate::log::Append::new(&[]),
            )
            .await?;
        }
        db(tx.commit().await, "commit a dead letter")
    }
}
