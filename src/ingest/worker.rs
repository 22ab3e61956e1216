//! The ingest worker: pull a batch, commit it, ack it; one step at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use tokio_util::sync::CancellationToken;

use super::batch::BatchOutcome;
use super::inbound::Inbound;
use super::pull::Pulled;
use super::registry;
use super::source::{self, Source, inbound, rebase};
use super::{IngestConfig, IngestError};
use crate::db::locks;
use crate::health::Heartbeat;
use crate::log::EventLog;

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
    /// Messages the stream holds were not delivered (taken by a pull that was abandoned, lost
    /// with a connection, or unreadable by the client): nothing was committed, and the
    /// consumer now delivers again from `from`, so no message is ever passed over.
    Rewound {
        /// The first sequence delivered next.
        from: u64,
    },
    /// The consumer failed twice to deliver the message at `sequence` (its subject or headers
    /// hold bytes the client cannot parse): it was read through the stream's JSON API and
    /// committed alone, as an event or a dead letter.
    Salvaged {
        /// Its stream sequence.
        sequence: u64,
    },
}

/// The sequence the consumer failed to deliver, and how many times in a row.
#[derive(Debug, Default)]
pub(super) struct Stall {
    pub(super) sequence: u64,
    pub(super) times: u32,
}

/// Pulls commands from the stream and appends them to the log.
pub struct Ingestor {
    /// Holds the stream's leadership lock for as long as this ingestor lives.
    leader: crate::db::lease::Lease,
    /// The fencing token every commit checks: a successor's claim stops this ingestor.
    pub(super) epoch: i64,
    pub(super) js: jetstream::Context,
    pub(super) source: std::sync::Mutex<Source>,
    /// The last stream sequence this leader committed; the next batch must follow it.
    pub(super) last_seq: AtomicU64,
    pub(super) log: Arc<EventLog>,
    pub(super) config: IngestConfig,
    pub(super) shutdown: CancellationToken,
    pub(super) health: Heartbeat,
    pub(super) stall: std::sync::Mutex<Stall>,
}

/// What the ingestor's trouble with its stream is filed under.
pub const STREAM_TROUBLE: &str = "stream";

impl Ingestor {
    /// Creates the stream if missing, becomes the stream's one active ingestor (a standby
    /// waits here until the active one's database session ends), checks the stream is the
    /// one the checkpoint was written for, and recreates the durable consumer to deliver from
    /// the sequence after the last one committed.
    pub async fn start(
        js: &jetstream::Context,
        log: Arc<EventLog>,
        config: IngestConfig,
    ) -> Result<Self, IngestError> {
        let started = Self::begin(js, log, config, true).await?;
        Ok(started.expect("a start that waits for the lead ends with it"))
    }

    /// `start`, if the stream's lead is free now; None if another ingestor holds it.
    pub async fn try_start(
        js: &jetstream::Context,
        log: Arc<EventLog>,
        config: IngestConfig,
    ) -> Result<Option<Self>, IngestError> {
        Self::begin(js, log, config, false).await
    }

    /// Creates the stream if it is missing (producers can publish before any lead exists).
    pub async fn open_stream(
        js: &jetstream::Context,
        config: &IngestConfig,
    ) -> Result<(), IngestError> {
        source::open_stream(js, config).await.map(|_| ())
    }

    async fn begin(
        js: &jetstream::Context,
        log: Arc<EventLog>,
        config: IngestConfig,
        wait: bool,
    ) -> Result<Option<Self>, IngestError> {
        // Created (if missing) before the lock, so producers can publish while a standby waits.
        source::open_stream(js, &config).await?;
        let leader = crate::db::lease::Lease::open(log.pool(), config.lease_ttl).await?;
        let mut session = leader.session().await;
        let (class, name) = (locks::INGEST_LEADER, config.stream.as_str());
        if wait {
            locks::session_named(&mut session, class, name, "take the ingest lock").await?;
        } else if !locks::try_session_named(&mut session, class, name, "take the ingest lock")
            .await?
        {
            return Ok(None);
        }
        let claimed = registry::claim_leadership(&mut session, &config.stream).await?;
        // Series exist from the start, at zero, as Prometheus expects.
        for name in [
            "activity_commands_received_total",
            "activity_events_appended_total",
            "activity_commands_duplicate_total",
            "activity_ingest_stream_resets_total",
            "activity_ingest_salvaged_total",
            "activity_ingest_rewinds_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        // A standby may have waited long for the lock: compare the checkpoint with the
        // stream as it is now, not as it was before the wait.
        let (stream, state) = source::open_stream(js, &config).await?;
        let last = rebase(&mut session, &config, claimed, state).await?;
        drop(session);
        let consumer = source::bind_consumer(&stream, &config, last + 1).await?;
        tracing::info!(stream = %config.stream, from_sequence = last + 1, "consumer bound");
        Ok(Some(Ingestor {
            leader,
            epoch: claimed.leader_epoch,
            js: js.clone(),
            source: std::sync::Mutex::new(Source {
                stream,
                consumer,
                created: state.created,
                generation: 0,
            }),
            last_seq: AtomicU64::new(last),
            log,
            config,
            shutdown: CancellationToken::new(),
            health: Heartbeat::new(),
            stall: std::sync::Mutex::new(Stall::default()),
        }))
    }

    /// Beats `heartbeat` on every step (and every wait for the database) from now on.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.health = heartbeat;
        self
    }

    /// Cancelled when the session holding the stream's lead is found gone: the ingestor
    /// must stop, for a standby may lead now.
    pub fn lead_lost(&self) -> CancellationToken {
        self.leader.lost()
    }

    pub(super) fn source(&self) -> Source {
        self.source.lock().expect("source lock").clone()
    }

    /// The consumer to pull from, its generation (bumped whenever it is replaced) and the
    /// identity of its stream.
    pub(super) fn consumer(&self) -> (PullConsumer, u64, chrono::DateTime<chrono::Utc>) {
        let source = self.source.lock().expect("source lock");
        (source.consumer.clone(), source.generation, source.created)
    }

    /// The generation of the consumer bound now.
    pub(super) fn generation(&self) -> u64 {
        self.source.lock().expect("source lock").generation
    }

    /// The identity of the stream being read; copied, not cloned with the rest, on the
    /// per-batch path.
    pub(super) fn created(&self) -> chrono::DateTime<chrono::Utc> {
        self.source.lock().expect("source lock").created
    }

    /// Commits and acks a pulled batch. A pull that failed, or messages the stream holds
    /// that never arrive, make it look at the stream again: recreated streams and deleted
    /// consumers are found here.
    pub(super) async fn settle(
        &self,
        pulled: Result<Pulled, IngestError>,
    ) -> Result<Step, IngestError> {
        self.health.beat();
        let step = self.settle_pulled(pulled).await;
        // What the stream allows is judged by the outcome: a batch, an idle stream or a
        // salvaged message mend it; a failure is a trouble until then.
        match &step {
            Ok(Step::Rewound { .. }) => {}
            Ok(_) => self.health.mended(STREAM_TROUBLE),
            Err(e) => self.health.trouble(STREAM_TROUBLE, e.to_string()),
        }
        step
    }

    async fn settle_pulled(
        &self,
        pulled: Result<Pulled, IngestError>,
    ) -> Result<Step, IngestError> {
        let expected = self.last_seq.load(Ordering::SeqCst) + 1;
        let pulled = match pulled {
            Ok(pulled) => pulled,
            Err(e) => {
                tracing::warn!(error = %e, "pulling from the stream failed; looking at the stream again");
                self.health
                    .trouble(STREAM_TROUBLE, format!("pulling failed: {e}"));
                self.resync().await?;
                // The resync may have moved the checkpoint (a recreated stream): ask again.
                let from = self.last_seq.load(Ordering::SeqCst) + 1;
                if self.count_stall(from) < 2 {
                    return Ok(Step::Rewound { from });
                }
                return self.salvage().await;
            }
        };
        if pulled.messages.is_empty() {
            return match self.undelivered().await {
                Ok(true) => self.stalled(expected).await,
                Ok(false) => Ok(Step::Idle),
                // The consumer (or its stream) is gone: recreate it rather than wait.
                Err(e) => {
                    tracing::warn!(error = %e, "the consumer is gone; looking at the stream again");
                    self.health
                        .trouble(STREAM_TROUBLE, format!("the consumer is gone: {e}"));
                    self.resync().await?;
                    let from = self.last_seq.load(Ordering::SeqCst) + 1;
                    Ok(Step::Rewound { from })
                }
            };
        }
        let step = self.commit_and_ack(pulled).await?;
        match step {
            Step::Rewound { from } => self.stalled(from).await,
            step => {
                *self.stall.lock().expect("stall lock") = Stall::default();
                Ok(step)
            }
        }
    }

    /// Publishes each committed refusal on `<rejections>.<tenant>` for its producer to
    /// see: reason, field, message and id, never the bytes. Core NATS, at most once; a
    /// failure is logged, never retried: the dead letter is the record.
    async fn announce(&self, refusals: &[super::Refusal]) {
        if refusals.is_empty() {
            return;
        }
        let client = self.js.client();
        let publish = async {
            for r in refusals {
                let subject = format!("{}.{}", self.config.rejections, r.tenant);
                let body = serde_json::to_vec(r).expect("refusals serialise");
                client.publish(subject, body.into()).await?;
            }
            Ok::<_, async_nats::PublishError>(())
        };
        // Never held up by a slow or absent NATS: the ingest loop goes on.
        match tokio::time::timeout(Duration::from_secs(1), publish).await {
            Ok(Ok(())) => metrics::counter!("activity_rejections_published_total")
                .increment(refusals.len() as u64),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not publish refusals"),
            Err(_) => {
                tracing::warn!("publishing refusals took over a second; the rest are dropped")
            }
        }
    }

    /// Whether the consumer delivered messages this ingestor never received: after an idle
    /// pull, they can only have gone to a pull that was abandoned or cut off. Judged by the
    /// last sequence it delivered, not by its acks pending: the server applies acks
    /// asynchronously, so a batch acked a moment ago can still count as pending.
    async fn undelivered(&self) -> Result<bool, IngestError> {
        let info = self
            .source()
            .consumer
            .get_info()
            .await
            .map_err(|e| IngestError::Nats(format!("read consumer info: {e}")))?;
        Ok(info.delivered.stream_sequence > self.last_seq.load(Ordering::SeqCst))
    }

    async fn commit_and_ack(&self, pulled: Pulled) -> Result<Step, IngestError> {
        let started = Instant::now();
        let Pulled {
            messages,
            generation,
            prepared,
        } = pulled;
        let (inbound, decoded) = match prepared.filter(|_| generation == self.generation()) {
            Some((inbound, decoded)) => (inbound, Some(decoded)),
            None => {
                let created = self.created();
                let inbound: Vec<Inbound> = messages
                    .iter()
                    .map(|m| inbound(m, created))
                    .collect::<Result<_, _>>()?;
                (inbound, None)
            }
        };
        if let Some(lost) = self.first_skipped(&inbound).await? {
            // What came before the gap is committed and acked first, so a stall is always
            // counted at the sequence right after the checkpoint.
            let before = inbound.iter().take_while(|m| m.stream_seq < lost).count();
            if before > 0 {
                let prefix = Pulled {
                    messages: messages[..before].to_vec(),
                    generation,
                    prepared: None,
                };
                Box::pin(self.commit_and_ack(prefix)).await?;
            }
            return Ok(Step::Rewound { from: lost });
        }
        metrics::counter!("activity_commands_received_total").increment(inbound.len() as u64);
        let committing = Instant::now();
        let committed = self.commit_with_retry(&messages, &inbound, decoded).await;
        metrics::histogram!("activity_ingest_commit_seconds")
            .record(committing.elapsed().as_secs_f64());
        let outcome = match committed {
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
        // One ack, after the commit, for the whole batch: the consumer acks all (`AckAll`)
        // up to its last message, and the batch was checked to hold every sequence the
        // stream has after the checkpoint.
        let acking = Instant::now();
        if let Some(last) = messages.last()
            && let Err(e) = last.ack().await
        {
            // A lost ack means a redelivery, which the checkpoint turns into a duplicate.
            tracing::warn!(error = %e, "ack failed; the batch will be redelivered and deduplicated");
        }
        metrics::histogram!("activity_ingest_ack_seconds").record(acking.elapsed().as_secs_f64());
        self.announce(&outcome.refusals).await;
        record(&outcome, messages.len(), started);
        Ok(Step::Progress {
            messages: messages.len(),
            outcome,
        })
    }
}

pub(super) fn record(outcome: &BatchOutcome, messages: usize, started: Instant) {
    metrics::counter!("activity_commands_duplicate_total").increment(outcome.duplicates as u64);
    metrics::histogram!("activity_ingest_batch_size").record(messages as f64);
    metrics::histogram!("activity_ingest_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
}
