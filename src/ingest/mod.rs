//! Ingest: NATS JetStream commands into the log, decided against the registry, with every
//! refused command kept as a dead letter. A message is acked only after its outcome commits.

mod batch;
mod decide;
mod fanout;
mod inbound;
pub mod letters;
pub mod partitions;
mod pull;
mod recover;
pub mod redrive;
mod registry;
mod retry;
mod run;
mod source;
mod worker;
mod write;

use std::time::Duration;

pub use batch::{BatchOutcome, Decoded, commit_batch, commit_decoded, decode_all, decode_inbound};
pub use decide::{RegistryView, UserChange, UserRow};
pub use inbound::{DEAD_LETTER_RAW_PREFIX, DeadLetter, Inbound, Refusal};
pub use source::{StreamChange, StreamState, reconcile};
pub use worker::{Ingestor, Step};

use crate::db::DbError;
use crate::model::TimeWindow;

/// Where commands come from and how they are batched.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// The JetStream stream (created if missing, file storage).
    pub stream: String,
    /// The subjects it holds: one token, the tenant, after the prefix, so no subject like
    /// `activity.commands.evil.acme` can name another tenant.
    pub subjects: String,
    /// Each refusal is published on `<rejections>.<tenant>` after its batch commits (at most
    /// once: the dead letter and command status are the record).
    pub rejections: String,
    /// Replicas of the stream when the store creates it: 3 in a JetStream cluster, so the
    /// loss of one node loses no command.
    pub replicas: usize,
    /// The durable pull consumer that ingestors share.
    pub durable: String,
    /// How long JetStream drops a repeated `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Most messages in one batch: what a backlog is taken in.
    pub batch_max: usize,
    /// Most bytes of messages in one batch: what one batch may hold in memory. At least
    /// `max_message_bytes`, so that any message the stream accepts fits in a batch.
    pub batch_max_bytes: usize,
    /// The largest message the stream accepts (its `max_msg_size`, set when the store
    /// creates it).
    pub max_message_bytes: usize,
    /// How long an idle pull waits for a first message (a batch never waits to fill).
    pub batch_wait: Duration,
    /// How long a delivered, un-acked message waits before redelivery.
    pub ack_wait: Duration,
    /// The accepted range of `occurred_at`.
    pub window: TimeWindow,
    /// How long a hung leader keeps the stream's lead before PostgreSQL ends its lease's
    /// session and a standby takes over (a dead one's ends at once).
    pub lease_ttl: Duration,
    /// For one of several ingest partitions: (this partition, the count). Commands of
    /// tenants routed elsewhere are refused (see `partitions`).
    pub route: Option<(u32, u32)>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            stream: "ACTIVITY".into(),
            subjects: "activity.commands.*".into(),
            rejections: "activity.rejections".into(),
            durable: "activity-ingest".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            batch_max: 5_000,
            batch_max_bytes: 8 << 20,
            max_message_bytes: 1 << 20,
            batch_wait: Duration::from_millis(50),
            ack_wait: Duration::from_secs(30),
            window: TimeWindow::default(),
            lease_ttl: crate::db::lease::DEFAULT_TTL,
            route: None,
        }
    }
}

impl IngestConfig {
    /// The bytes one pull may bring: `batch_max_bytes`, but never less than the largest
    /// message the stream takes (and its subject and headers), or that message could never
    /// be pulled.
    pub fn batch_bytes(&self) -> usize {
        self.batch_max_bytes.max(self.max_message_bytes + 64 * 1024)
    }
}

/// What can stop the ingestor.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// NATS refused or could not be reached.
    #[error("NATS: {0}")]
    Nats(String),
    /// The log could not be written.
    #[error(transparent)]
    Log(DbError),
    /// Another ingestor became the stream's leader; this one committed nothing after that.
    #[error("another ingestor has taken over stream {stream}; this one stops")]
    Superseded {
        /// The stream.
        stream: String,
    },
    /// The session holding the stream's lead ended (the server ended it after the lease's
    /// time to live, or the connection broke): this ingestor stops and stands by again.
    #[error("lost the lead of stream {stream}: its lease's session ended")]
    LeaseLost {
        /// The stream.
        stream: String,
    },
    /// Shutdown came while the database was unreachable: the batch was left un-acked.
    #[error("stopped before the batch could be committed: {0}")]
    Interrupted(String),
}

impl From<DbError> for IngestError {
    /// A fence the database found lost is the ingestor's own `Superseded`.
    fn from(error: DbError) -> Self {
        match error {
            DbError::Superseded { stream } => IngestError::Superseded { stream },
            other => IngestError::Log(other),
        }
    }
}
