//! The ingest worker: pull a batch, commit it, ack it; one step at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, AckKind, consumer::DeliverPolicy, consumer::PullConsumer, consumer::pull, stream,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::batch::{BatchOutcome, Inbound, commit_batch};
use super::registry::{self, DeadLetter, insert_dead_letters};
use super::{IngestConfig, IngestError};
use crate::log::{EventLog, LogError, db};
use crate::model::{Reason, Rejection};

/// The first key of the per-stream leadership lock ("ACTI"); the second is the stream's hash.
const INGEST_LEADER_LOCK: i32 = 0x4143_5449;

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
}

/// Pulls commands from the stream and appends them to the log.
pub struct Ingestor {
    /// Holds the stream's leadership lock for as long as this ingestor lives.
    _leader: sqlx::PgConnection,
    consumer: PullConsumer,
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
        let checkpoint = registry::checkpoint(&mut leader, &config.stream).await?;
        let deliver_policy = match checkpoint {
            0 => DeliverPolicy::All,
            seq => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        // Deleting fails harmlessly when there is no such consumer yet.
        let _ = stream.delete_consumer(&config.durable).await;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(config.durable.clone()),
                deliver_policy,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: (config.batch_max * 4) as i64,
                ..Default::default()
            })
            .await
            .map_err(|e| IngestError::Nats(format!("create consumer {}: {e}", config.durable)))?;
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
            consumer,
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
        let mut batch = self
            .consumer
            .batch()
            .max_messages(self.config.batch_max)
            .expires(self.config.batch_wait)
            .messages()
            .await
            .map_err(|e| IngestError::Nats(format!("pull a batch: {e}")))?;
        let mut messages = Vec::new();
        while let Some(m) = batch.next().await {
            messages.push(m.map_err(|e| IngestError::Nats(format!("receive a message: {e}")))?);
        }
        Ok(messages)
    }

    async fn commit_and_ack(&self, messages: Vec<jetstream::Message>) -> Result<Step, IngestError> {
        if messages.is_empty() {
            return Ok(Step::Idle);
        }
        let started = Instant::now();
        let inbound: Vec<Inbound> = messages.iter().map(inbound).collect::<Result<_, _>>()?;
        metrics::counter!("activity_commands_received_total").increment(inbound.len() as u64);
        let outcome = self.commit_with_retry(&messages, &inbound).await?;
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

    /// Commits, retrying while the database is unreachable; a batch PostgreSQL refuses is
    /// split so that only the message at fault becomes a dead letter.
    async fn commit_with_retry(
        &self,
        messages: &[jetstream::Message],
        inbound: &[Inbound],
    ) -> Result<BatchOutcome, IngestError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match commit_batch(&self.log, &self.config.stream, inbound, &self.config.window).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if e.is_transient() && self.shutdown.is_cancelled() => {
                    return Err(IngestError::Interrupted(e.to_string()));
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable; keeping the batch");
                    for m in messages {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) if inbound.len() > 1 => {
                    tracing::warn!(error = %e, "batch refused; committing its messages one by one");
                    return self.commit_one_by_one(inbound).await;
                }
                Err(_) => return self.commit_single(&inbound[0]).await,
            }
        }
    }

    async fn commit_one_by_one(&self, inbound: &[Inbound]) -> Result<BatchOutcome, IngestError> {
        let mut total = BatchOutcome::default();
        for (i, m) in inbound.iter().enumerate() {
            let outcome = self.commit_single(m).await?;
            total.appended += outcome.appended;
            total.duplicates += outcome.duplicates;
            total
                .rejected
                .extend(outcome.rejected.into_iter().map(|(_, r)| (i, r)));
        }
        Ok(total)
    }

    /// One message: retried while the system fails, dead-lettered if its data is refused.
    /// Never skipped: a later batch would move the checkpoint past it.
    async fn commit_single(&self, m: &Inbound) -> Result<BatchOutcome, IngestError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match commit_batch(
                &self.log,
                &self.config.stream,
                std::slice::from_ref(m),
                &self.config.window,
            )
            .await
            {
                Ok(o) => return Ok(o),
                Err(e) if !e.is_transient() => return self.refuse(m, e).await,
                Err(e) if self.shutdown.is_cancelled() => {
                    return Err(IngestError::Interrupted(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable; keeping the message");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Dead-letters a message PostgreSQL refused although the model accepted it.
    async fn refuse(&self, m: &Inbound, error: LogError) -> Result<BatchOutcome, IngestError> {
        let rejection = Rejection {
            reason: Reason::InvalidField,
            field: None,
            message: format!("PostgreSQL refused this command: {error}"),
        };
        let mut tx = db(self.log.pool().begin().await, "begin a dead letter")?;
        insert_dead_letters(&mut tx, &[DeadLetter::of(m, None, rejection)]).await?;
        db(tx.commit().await, "commit a dead letter")?;
        Ok(BatchOutcome {
            rejected: vec![(0, Reason::InvalidField)],
            ..Default::default()
        })
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
