//! Pulling batches that fit the load, decoded and ready to decide.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, consumer::pull::Batch};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::batch::{Decoded, decode_all};
use super::inbound::Inbound;
use super::source::inbound;
use super::{IngestConfig, IngestError};

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

/// Pulls one batch from `consumer` (of `generation`, on a stream created at `created`):
/// everything waiting, up to a batch, at once; when nothing is waiting, the first message to
/// arrive (within the batch wait) and whatever arrived with it. A backlog goes in full
/// batches, a trickle one message at a time, with no flag to tune.
pub(super) async fn pull(
    (consumer, generation, created): (PullConsumer, u64, DateTime<Utc>),
    config: &IngestConfig,
) -> Result<Pulled, IngestError> {
    let started = Instant::now();
    let (max, bytes) = (config.batch_max, config.batch_bytes());
    let waiting = consumer.fetch().max_messages(max).max_bytes(bytes);
    let mut messages = read(waiting.messages().await, NO_WAIT_REPLY).await?;
    if messages.is_empty() {
        let wait = config.batch_wait;
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
        .map(|m| {
            inbound(m, created).map(|i| Inbound {
                route: config.route,
                ..i
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|inbound| !inbound.is_empty())
        .map(|inbound| {
            let decoded = decode_all(&inbound, &config.window);
            (inbound, decoded)
        });
    Ok(Pulled {
        messages,
        generation,
        prepared,
    })
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
