//! The ingestor's loop, which pipelines batches: while one batch commits, the next is
//! pulled and decoded.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::pull::{Pulled, pull};
use super::worker::Ingestor;
use super::{IngestError, Step};

impl Ingestor {
    /// Pulls one batch from the consumer bound now.
    async fn pull(&self) -> Result<Pulled, IngestError> {
        pull(self.consumer(), &self.config).await
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
