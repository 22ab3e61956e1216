//! When the consumer and the stream disagree: a batch that passes over messages the stream
//! still holds, a message the consumer cannot deliver (read past the client and committed
//! alone), and a stream deleted or recreated under the ingestor (rebound after the sequence
//! ingest continues from).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::inbound::Inbound;
use super::registry;
use super::source::{self, Source, rebase};
use super::worker::{Ingestor, Stall, record};
use super::{IngestError, Step};
use crate::db::db;

impl Ingestor {
    /// The first sequence after the last commit that this (ordered) batch passes over while
    /// the stream still holds it. Sequences the stream no longer holds (deleted, or aged
    /// out by its limits) are gaps, not losses.
    pub(super) async fn first_skipped(
        &self,
        inbound: &[Inbound],
    ) -> Result<Option<u64>, IngestError> {
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

    pub(super) async fn first_held(&self) -> Result<u64, IngestError> {
        let info = self
            .source()
            .stream
            .get_info()
            .await
            .map_err(|e| IngestError::Nats(format!("read stream info: {e}")))?;
        Ok(info.state.first_sequence)
    }

    pub(super) async fn still_held(&self, seq: u64) -> Result<bool, IngestError> {
        let created = self.created();
        Ok(
            source::read_raw(&self.js, &self.config.stream, seq, created)
                .await?
                .is_some(),
        )
    }

    /// The consumer did not deliver `seq`. The first time, it is recreated to deliver again
    /// from there; the second time in a row, the message is read past the client and
    /// committed alone, so one message the client cannot parse never stops ingest.
    pub(super) async fn stalled(&self, seq: u64) -> Result<Step, IngestError> {
        if self.count_stall(seq) < 2 {
            tracing::warn!(
                from_sequence = seq,
                "messages the stream holds were not delivered; delivering again"
            );
            metrics::counter!("activity_ingest_rewinds_total").increment(1);
            self.rebind(seq).await?;
            return Ok(Step::Rewound { from: seq });
        }
        self.salvage().await
    }

    /// Counts one more failure to deliver `seq`; returns how many in a row.
    pub(super) fn count_stall(&self, seq: u64) -> u32 {
        let mut stall = self.stall.lock().expect("stall lock");
        if stall.sequence != seq {
            *stall = Stall {
                sequence: seq,
                times: 0,
            };
        }
        stall.times += 1;
        stall.times
    }

    /// Reads the first message the stream holds after the checkpoint through its JSON API,
    /// past the client, and commits it alone.
    pub(super) async fn salvage(&self) -> Result<Step, IngestError> {
        let from = self.last_seq.load(Ordering::SeqCst) + 1;
        let Source {
            stream, created, ..
        } = self.source();
        let last = stream
            .get_info()
            .await
            .map_err(|e| IngestError::Nats(format!("read stream info: {e}")))?
            .state
            .last_sequence;
        for seq in from..=last {
            let Some(mut message) =
                source::read_raw(&self.js, &self.config.stream, seq, created).await?
            else {
                continue;
            };
            message.route = self.config.route;
            tracing::warn!(
                sequence = seq,
                "the consumer cannot deliver this message; reading it from the stream"
            );
            let outcome = self
                .commit_with_retry(&[], std::slice::from_ref(&message), None)
                .await?;
            metrics::counter!("activity_ingest_salvaged_total").increment(1);
            record(&outcome, 1, Instant::now());
            self.last_seq.fetch_max(seq, Ordering::SeqCst);
            *self.stall.lock().expect("stall lock") = Stall::default();
            self.rebind(seq + 1).await?;
            return Ok(Step::Salvaged { sequence: seq });
        }
        // Nothing left to read past: the stream moved on (purged or recreated).
        self.resync().await?;
        Ok(Step::Rewound { from })
    }

    pub(super) async fn rebind(&self, from: u64) -> Result<(), IngestError> {
        let stream = self.source().stream;
        let consumer = source::bind_consumer(&stream, &self.config, from).await?;
        let mut source = self.source.lock().expect("source lock");
        source.consumer = consumer;
        source.generation += 1;
        Ok(())
    }

    /// Opens the stream again (creating it if it was deleted), compares it with the
    /// checkpoint, and rebinds the consumer after the sequence ingest continues from.
    pub(super) async fn resync(&self) -> Result<(), IngestError> {
        let (stream, state) = source::open_stream(&self.js, &self.config).await?;
        let mut conn = db(self.log.pool().acquire().await, "connect to resync")?;
        let checkpoint = registry::checkpoint(&mut conn, &self.config.stream).await?;
        if checkpoint.leader_epoch != self.epoch {
            return Err(IngestError::Superseded {
                stream: self.config.stream.clone(),
            });
        }
        let last = rebase(&mut conn, &self.config, checkpoint, state).await?;
        let consumer = source::bind_consumer(&stream, &self.config, last + 1).await?;
        self.last_seq.store(last, Ordering::SeqCst);
        let mut source = self.source.lock().expect("source lock");
        *source = Source {
            stream,
            consumer,
            created: state.created,
            generation: source.generation + 1,
        };
        Ok(())
    }
}
