//! The ingest worker: pull a batch, commit it, ack it; one step at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, AckKind, consumer::DeliverPolicy, consumer::PullConsumer, consumer::pull, stream,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchOutcome, Inbound, commit_batch};
use super::registry::{self, DeadLetter, insert_dead_letters};
use super::{IngestConfig, IngestError};
use crate::log::{EventLog, LogError, db, lock_appends};
use crate::model::{Reason, Rejection};

/// The first key of the per-stream leadership lock ("ACTI"); the second is the stream's hash.
const INGEST_LEADER_LOCK: i32 = 0x4143_5449;

/// How long past the server's pull expiry a batch is still read.
const PULL_GRACE: Duration = Duration::from_millis(200);

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A batch was committed and acked.
    Progress {
        /// Messages in the batch.
        messages: usize,
        /// What became of them.
        outcome: BatchOutcome,
    },
    /// Nothing arrived within the batch wait.
    Idle,
    /// The batch skipped messages the stream still holds (delivered to a pull that was
    /// abandoned, or lost with a connection): nothing was committed, and the consumer now
    /// delivers again from `from`, so no message is ever passed over.
    Rewound {
        /// The first sequence delivered next.
        from: u64,
    },
}

/// Pulls commands from the stream and appends them to the log.
pub struct Ingestor {
    /// Holds the stream's leadership lock for as long as this ingestor lives.
    _leader: sqlx::PgConnection,
    /// The fencing token every commit checks: a successor's claim stops this ingestor.
    epoch: i64,
    stream: stream::Stream,
    consumer: std::sync::Mutex<PullConsumer>,
    /// The last stream sequence this leader committed; the next batch must follow it.
    last_seq: AtomicU64,
    log: Arc<EventLog>,
    config: IngestConfig,
    shutdown: CancellationToken,
}

impl Ingestor {
    /// Creates the stream if missing, becomes the stream's one active ingestor (a standby
    /// waits here until the active one's database session ends), and recreates the durable
    /// consumer to deliver from the sequence after the last one committed.
    pub async fn start(
        js: &jetstream::Context,
        log: Arc<EventLog>,
        config: IngestConfig,
    ) -> Result<Self, IngestError> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![config.subjects.clone()],
                storage: stream::StorageType::File,
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| IngestError::Nats(format!("create stream {}: {e}", config.stream)))?;
        let mut leader = db(log.pool().acquire().await, "connect for the ingest lock")?.detach();
        db(
            sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
                .bind(INGEST_LEADER_LOCK)
                .bind(&config.stream)
                .execute(&mut leader)
                .await,
            "take the ingest lock",
        )?;
        let claimed = registry::claim_leadership(&mut leader, &config.stream).await?;
        let checkpoint = claimed.last_seq;
        let consumer = bind_consumer(&stream, &config, checkpoint + 1).await?;
        tracing::info!(stream = %config.stream, from_sequence = checkpoint + 1, "consumer bound");
        // Series exist from the start, at zero, as Prometheus expects.
        for name in [
            "activity_commands_received_total",
            "activity_events_appended_total",
            "activity_commands_duplicate_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        Ok(Ingestor {
            _leader: leader,
            epoch: claimed.leader_epoch,
            stream,
            consumer: std::sync::Mutex::new(consumer),
            last_seq: AtomicU64::new(checkpoint),
            log,
            config,
            shutdown: CancellationToken::new(),
        })
    }

    /// Pulls one batch (bounded by count and by time), commits it and acks it.
    pub async fn step(&self) -> Result<Step, IngestError> {
        let messages = self.fetch().await?;
        self.commit_and_ack(messages).await
    }

    async fn fetch(&self) -> Result<Vec<jetstream::Message>, IngestError> {
        let consumer = self.consumer.lock().expect("consumer lock").clone();
        let mut batch = consumer
            .batch()
            .max_messages(self.config.batch_max)
            .expires(self.config.batch_wait)
            .messages()
            .await
            .map_err(|e| IngestError::Nats(format!("pull a batch: {e}")))?;
        // nats-server 2.9 sends no timeout status when a pull it filled only in part
        // expires, so stop reading once the server's expiry has surely passed; anything it
        // still delivers to the abandoned pull is caught by the sequence check.
        let deadline = tokio::time::sleep(self.config.batch_wait + PULL_GRACE);
        tokio::pin!(deadline);
        let mut messages = Vec::new();
        loop {
            tokio::select! {
                next = batch.next() => match next {
                    Some(m) => messages
                        .push(m.map_err(|e| IngestError::Nats(format!("receive a message: {e}")))?),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        // Stream order, whatever order redeliveries came in.
        messages.sort_by_key(|m| m.info().map(|i| i.stream_sequence).unwrap_or(0));
        Ok(messages)
    }

    async fn commit_and_ack(&self, messages: Vec<jetstream::Message>) -> Result<Step, IngestError> {
        if messages.is_empty() {
            return Ok(Step::Idle);
        }
        let started = Instant::now();
        let inbound: Vec<Inbound> = messages.iter().map(inbound).collect::<Result<_, _>>()?;
        if let Some(lost) = self.first_skipped(&inbound).await? {
            return self.rewind(lost).await;
        }
        metrics::counter!("activity_commands_received_total").increment(inbound.len() as u64);
        let outcome = match self.commit_with_retry(&messages, &inbound).await {
            Ok(outcome) => outcome,
            Err(e @ IngestError::Superseded { .. }) => {
                // Hand the batch straight to the successor rather than after ack_wait.
                for m in &messages {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Some(last) = inbound.iter().map(|m| m.stream_seq).max() {
            self.last_seq.fetch_max(last, Ordering::SeqCst);
        }
        for m in &messages {
            // A lost ack means a redelivery, which the ledger turns into a duplicate.
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
            }
        }
        metrics::counter!("activity_commands_duplicate_total").increment(outcome.duplicates as u64);
        metrics::histogram!("activity_ingest_batch_size").record(messages.len() as f64);
        metrics::histogram!("activity_ingest_batch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Step::Progress {
            messages: messages.len(),
            outcome,
        })
    }

    /// The first sequence after the last commit that this (ordered) batch passes over while
    /// the stream still holds it. Sequences the stream no longer holds (deleted, or aged
    /// out by its limits) are gaps, not losses.
    async fn first_skipped(&self, inbound: &[Inbound]) -> Result<Option<u64>, IngestError> {
        let mut expected = self.last_seq.load(Ordering::SeqCst) + 1;
        let mut first_held: Option<u64> = None;
        for m in inbound {
            if m.stream_seq > expected {
                let first = match first_held {
                    Some(f) => f,
                    None => *first_held.insert(self.first_held().await?),
                };
                for seq in expected.max(first)..m.stream_seq {
                    if self.still_held(seq).await? {
                        return Ok(Some(seq));
                    }
                }
            }
            expected = expected.max(m.stream_seq + 1);
        }
        Ok(None)
    }

    async fn first_held(&self) -> Result<u64, IngestError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| IngestError::Nats(format!("read stream info: {e}")))?;
        Ok(info.state.first_sequence)
    }

    async fn still_held(&self, seq: u64) -> Result<bool, IngestError> {
        match self.stream.get_raw_message(seq).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(IngestError::Nats(format!(
                "look up stream sequence {seq}: {e}"
            ))),
        }
    }

    /// Recreates the consumer to deliver again from `from`; the batch in hand is dropped
    /// un-acked (the old consumer's deliveries die with it).
    async fn rewind(&self, from: u64) -> Result<Step, IngestError> {
        tracing::warn!(
            from_sequence = from,
            "a batch skipped messages the stream holds; delivering again from the first"
        );
        metrics::counter!("activity_ingest_rewinds_total").increment(1);
        let consumer = bind_consumer(&self.stream, &self.config, from).await?;
        *self.consumer.lock().expect("consumer lock") = consumer;
        Ok(Step::Rewound { from })
    }

    /// Commits, retrying while the database is unreachable. A batch PostgreSQL refuses is
    /// split in halves, committed in stream order, until only the message at fault is left
    /// to become a dead letter: one bad message costs about 2·log2(batch) commits.
    async fn commit_with_retry(
        &self,
        messages: &[jetstream::Message],
        inbound: &[Inbound],
    ) -> Result<BatchOutcome, IngestError> {
        // A stack of ranges still to commit; the next one is on top.
        let mut pending = Vec::new();
        pending.push(0..inbound.len());
        let mut total = BatchOutcome::default();
        while let Some(range) = pending.pop() {
            let part = &inbound[range.clone()];
            let outcome = match self.try_commit(messages, part).await? {
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
        }
        Ok(total)
    }

    /// Commits `part`, retrying while the failure is the system's; the inner error is
    /// PostgreSQL refusing the part's data.
    async fn try_commit(
        &self,
        messages: &[jetstream::Message],
        part: &[Inbound],
    ) -> Result<Result<BatchOutcome, LogError>, IngestError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.commit(part).await {
                Ok(outcome) => return Ok(Ok(outcome)),
                // Misconfigured: stop rather than retry in silence or dead-letter the batch.
                Err(e) if e.is_fatal() => return Err(IngestError::Log(e)),
                Err(e) if e.is_transient() => {
                    // Keep the whole batch from redelivery while we wait.
                    for m in messages {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    self.pause(e, &mut backoff).await?;
                }
                Err(e @ LogError::Superseded { .. }) => return Err(superseded(e)),
                Err(refused) => return Ok(Err(refused)),
            }
        }
    }

    async fn commit(&self, inbound: &[Inbound]) -> Result<BatchOutcome, LogError> {
        commit_batch(
            &self.log,
            &self.config.stream,
            self.epoch,
            inbound,
            &self.config.window,
        )
        .await
    }

    /// Waits before a retry of a transient failure; any other failure, or a shutdown,
    /// ends the retries with the error to return.
    async fn pause(&self, error: LogError, backoff: &mut Duration) -> Result<(), IngestError> {
        if let LogError::Superseded { .. } = error {
            return Err(superseded(error));
        }
        if error.is_fatal() || !error.is_transient() {
            return Err(IngestError::Log(error));
        }
        if self.shutdown.is_cancelled() {
            return Err(IngestError::Interrupted(error.to_string()));
        }
        tracing::warn!(error = %error, retry_in = ?backoff, "database unavailable; keeping the messages");
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        Ok(())
    }

    /// Dead-letters a message PostgreSQL refused although the model accepted it, and moves
    /// the checkpoint past it; retried like a commit.
    async fn refuse(&self, m: &Inbound, error: LogError) -> Result<BatchOutcome, IngestError> {
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
                        ..Default::default()
                    });
                }
                Err(e) => self.pause(e, &mut backoff).await?,
            }
        }
    }

    async fn write_refusal(&self, letter: &DeadLetter, seq: u64) -> Result<(), LogError> {
        let stream = &self.config.stream;
        let mut tx = db(self.log.pool().begin().await, "begin a dead letter")?;
        lock_appends(&mut tx).await?;
        if seq > registry::checkpoint_as_leader(&mut tx, stream, self.epoch).await? {
            insert_dead_letters(&mut tx, std::slice::from_ref(letter)).await?;
            registry::advance_checkpoint(&mut tx, stream, seq).await?;
        }
        db(tx.commit().await, "commit a dead letter")
    }

    /// Steps until `shutdown` is cancelled; a batch in hand is committed and acked first.
    /// An unexpected error stops the loop rather than let a later batch move the checkpoint
    /// past messages that were not committed; a restart resumes from the checkpoint.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        self.shutdown = shutdown.clone();
        loop {
            let messages = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                fetched = self.fetch() => fetched,
            };
            match messages {
                Ok(messages) => match self.commit_and_ack(messages).await {
                    Ok(_) => {}
                    Err(IngestError::Interrupted(e)) => {
                        tracing::warn!(error = %e, "stopping with a batch un-acked; NATS will redeliver it");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "pulling from NATS failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

/// (Re)creates the durable pull consumer to deliver from stream sequence `from`.
async fn bind_consumer(
    stream: &stream::Stream,
    config: &IngestConfig,
    from: u64,
) -> Result<PullConsumer, IngestError> {
    let deliver_policy = match from {
        0 | 1 => DeliverPolicy::All,
        seq => DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
    };
    // Deleting fails harmlessly when there is no such consumer yet.
    let _ = stream.delete_consumer(&config.durable).await;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(config.durable.clone()),
            deliver_policy,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_ack_pending: (config.batch_max * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| IngestError::Nats(format!("create consumer {}: {e}", config.durable)))
}

fn superseded(error: LogError) -> IngestError {
    match error {
        LogError::Superseded { stream } => IngestError::Superseded { stream },
        other => IngestError::Log(other),
    }
}

fn inbound(m: &jetstream::Message) -> Result<Inbound, IngestError> {
    let info = m
        .info()
        .map_err(|e| IngestError::Nats(format!("read message metadata: {e}")))?;
    Ok(Inbound {
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        stream_seq: info.stream_sequence,
        delivered: info.delivered.max(0) as u64,
        published: info.published,
    })
}
