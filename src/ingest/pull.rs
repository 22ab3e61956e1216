//! Pulling batches that fit the load, and the loop that pipelines them: while one batch
//! commits, the next is pulled and decoded.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::Batch};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::batch::{Decoded, Inbound, decode_all};
use super::source::inbound;
use super::worker::Ingestor;
use super::{IngestError, Step};

/// How long past the server's pull expiry a batch is still read.
const PULL_GRACE: Duration = Duration::from_millis(200);
/// How long the reply to a pull that does not wait (`no_wait`) may take to arrive.
const NO_WAIT_REPLY: Duration = Duration::from_secs(2);

/// A pulled batch: its messages in stream order and, when their metadata could be read,
/// the same messages decoded, ready to decide.
pub(super) struct Pulled {
    /// The messages, in stream order.
    pub messages: Vec<jetstream::Message>,
    /// The consumer generation they came from: a batch pulled from a consumer since
    /// replaced is dropped, not committed.
    pub generation: u64,
    /// The messages as the ingestor decides them, and their decoding.
    pub prepared: Option<(Vec<Inbound>, Vec<Decoded>)>,
}

impl Ingestor {
    /// Pulls one batch: everything waiting, up to a batch, at once; when nothing is waiting,
    /// the first message to arrive (within the batch wait) and whatever arrived with it. A
    /// backlog goes in full batches, a trickle one message at a time, with no flag to tune.
    pub(super) async fn pull(&self) -> Result<Pulled, IngestError> {
        let started = Instant::now();
        let (consumer, generation, created) = self.consumer();
        let (max, bytes) = (self.config.batch_max, self.config.batch_bytes());
        let waiting = consumer.fetch().max_messages(max).max_bytes(bytes);
        let mut messages = read(waiting.messages().await, NO_WAIT_REPLY).await?;
        if messages.is_empty() {
            let wait = self.config.batch_wait;
            let first = consumer
                .batch()
                .max_messages(1)
                .max_bytes(bytes)
                .expires(wait);
            // nats-server 2.9 may send no status when a pull expires: stop reading once the
            // expiry has surely passed; what it delivers to the abandoned pull later is
            // caught by the sequence check.
            messages = read(first.messages().await, wait + PULL_GRACE).await?;
            if !messages.is_empty() && max > 1 {
                let rest = consumer.fetch().max_messages(max - 1).max_bytes(bytes);
                match read(rest.messages().await, NO_WAIT_REPLY).await {
                    Ok(more) => messages.extend(more),
                    // The first is a batch of its own; the rest come with the next pull.
                    Err(e) => tracing::debug!(error = %e, "pulling the rest of a batch failed"),
                }
            }
        }
        // Stream order, whatever order redeliveries came in.
        messages.sort_by_key(|m| m.info().map(|i| i.stream_sequence).unwrap_or(0));
        metrics::histogram!("activity_ingest_pull_seconds").record(started.elapsed().as_secs_f64());
        let prepared = messages
            .iter()
            .map(|m| inbound(m, created))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|inbound| !inbound.is_empty())
            .map(|inbound| {
                let decoded = decode_all(&inbound, &self.config.window);
                (inbound, decoded)
            });
        Ok(Pulled {
            messages,
            generation,
            prepared,
        })
    }

    /// Steps until `shutdown` is cancelled; a batch in hand is committed and acked first.
    /// While a batch commits, the next one is pulled and decoded. NATS failures are retried
    /// here; an error of the database that retrying cannot mend ends the loop (its
    /// supervisor restarts it) rather than let a later batch move the checkpoint past
    /// messages that were not committed.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        self.shutdown = shutdown.clone();
        let mut backoff = Duration::from_millis(250);
        let mut rewinds = 0_u32;
        let mut next: Option<(u64, Result<Pulled, IngestError>)> = None;
        loop {
            let pulled = match next.take() {
                // Pulled from the consumer still bound: nothing has moved under it.
                Some((generation, pulled)) if generation == self.generation() => pulled,
                _ => tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    pulled = self.pull() => pulled,
                },
            };
            // Only a batch that holds messages is pipelined: the idle check after an empty
            // pull counts messages in flight, and a pull running beside it would be counted.
            let busy = matches!(&pulled, Ok(p) if !p.messages.is_empty());
            let settled = if busy && !shutdown.is_cancelled() {
                let generation = self.generation();
                let (settled, pulled) = tokio::join!(self.settle(pulled), self.pull());
                next = Some((generation, pulled));
                settled
            } else {
                self.settle(pulled).await
            };
            match settled {
                // Looked at the stream again without committing: again at once would thrash
                // a stream that stays broken, so each rewind in a row waits longer.
                Ok(Step::Rewound { from }) => {
                    rewinds += 1;
                    if rewinds > 1 {
                        let wait = (Duration::from_millis(50) * 2_u32.pow(rewinds.min(7)))
                            .min(Duration::from_secs(5));
                        tracing::debug!(from_sequence = from, retry_in = ?wait, "rewound again");
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
                Ok(_) => {
                    backoff = Duration::from_millis(250);
                    rewinds = 0;
                }
                Err(IngestError::Interrupted(e)) => {
                    tracing::warn!(error = %e, "stopping with a batch un-acked; NATS will redeliver it");
                    return Ok(());
                }
                Err(IngestError::Nats(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "NATS unavailable; retrying");
                    next = None;
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pulls one batch and commits it: `run` without the pipeline, for tests and tools.
    pub async fn step(&self) -> Result<Step, IngestError> {
        let pulled = self.pull().await;
        self.settle(pulled).await
    }
}

/// Reads a pull's messages until it ends or `deadline` passes. A pull that ends with a
/// status after some messages (its byte budget spent, or the connection gone) is a batch of
/// what came before it.
async fn read(
    batch: Result<Batch, impl std::fmt::Display>,
    deadline: Duration,
) -> Result<Vec<jetstream::Message>, IngestError> {
    let mut batch = batch.map_err(|e| IngestError::Nats(format!("pull a batch: {e}")))?;
    let deadline = tokio::time::sleep(deadline);
    tokio::pin!(deadline);
    let mut messages = Vec::new();
    loop {
        tokio::select! {
            next = batch.next() => match next {
                Some(Ok(m)) => messages.push(m),
                Some(Err(_)) if !messages.is_empty() => break,
                Some(Err(e)) => return Err(IngestError::Nats(format!("receive a message: {e}"))),
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    Ok(messages)
}
