//! `status`: the store at a glance, read from where each figure lives (the log, the
//! checkpoints, PostgreSQL's lock table, the stream), with a verdict scripts can use: healthy,
//! or degraded with the reasons.

mod db;
mod export;
mod nats;
mod tenants;
mod text;

pub use crate::db::locks::Holder;
pub use db::partitions;
pub use export::{export, sample};
pub use tenants::{LAG_SCAN, MOST_LAGGING, TenantLag};

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::DbError;

/// What `status` looks at and when it calls something degraded.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The ingest stream.
    pub stream: String,
    /// Its durable consumer.
    pub durable: String,
    /// Put before every cache bucket's name.
    pub bucket_prefix: String,
    /// A projection whose oldest unfolded event is older than this is behind.
    pub max_lag: Duration,
    /// An append transaction open longer than this holds the projectors back.
    pub max_append: Duration,
    /// Whether to list (and count) the log's partitions.
    pub count_partitions: bool,
    /// Whether to name each projection's most-lagging tenants.
    pub name_lagging_tenants: bool,
    /// A tenant whose lag to show in every projection.
    pub tenant: Option<String>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            stream: "ACTIVITY".into(),
            durable: "activity-ingest".into(),
            bucket_prefix: String::new(),
            max_lag: Duration::from_secs(60),
            max_append: Duration::from_secs(10),
            count_partitions: true,
            name_lagging_tenants: true,
            tenant: None,
        }
    }
}

/// One shard of one projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardLag {
    /// The shard.
    pub shard: i32,
    /// Its positions folded (counted within the shard).
    pub position: i64,
    /// Its events logged past it.
    pub lag_events: i64,
    /// The projector holding the shard's fold lease, if any.
    pub lease: Option<Holder>,
}

/// One projection.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The version installed.
    pub version: i32,
    /// Positions folded, over every shard (with S = 1, the last log position folded).
    pub position: i64,
    /// Events logged past it.
    pub lag_events: i64,
    /// Each shard: its checkpoint and the events past it.
    pub shards: Vec<ShardLag>,
    /// Age of the oldest event not folded yet; none when up to date.
    pub lag_seconds: Option<f64>,
    /// A projector holding the fold lease of one of its shards (the first held), if any;
    /// each shard names its own in `shards`.
    pub lease: Option<Holder>,
    /// A rebuild in progress: its session names how far it has folded.
    pub rebuild: Option<Holder>,
    /// The tenants most behind in it, most first (none when it is up to date).
    pub lagging_tenants: Vec<TenantLag>,
}

/// The stream's side of ingest, read through NATS.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Its first sequence still held.
    pub first_seq: u64,
    /// Its last sequence.
    pub last_seq: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Messages the consumer has not delivered yet.
    pub pending: u64,
    /// Delivered and not acked yet.
    pub ack_pending: u64,
    /// Delivered more than once and not acked yet.
    pub redelivered: u64,
}

/// One stream's ingest.
#[derive(Debug, Clone, Serialize)]
pub struct IngestStatus {
    /// The stream.
    pub stream: String,
    /// The last stream sequence committed.
    pub checkpoint: i64,
    /// The current leader's fencing token.
    pub leader_epoch: i64,
    /// Times the stream was found recreated or purged.
    pub resets: i64,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// The ingestor holding the stream's leadership lock, if any.
    pub leader: Option<Holder>,
    /// The stream and its consumer, when NATS was asked.
    pub nats: Option<StreamStatus>,
}

/// One month of the log.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// The table.
    pub name: String,
    /// Its bounds, as PostgreSQL prints them.
    pub bound: String,
    /// Its rows: counted when the table is small, else the planner's estimate.
    pub rows: i64,
    /// Whether `rows` was counted (true) or estimated (false).
    pub rows_exact: bool,
    /// Table and index bytes on disk.
    pub bytes: i64,
}

/// Dead letters of one reason.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterCount {
    /// The reason code.
    pub reason: String,
    /// How many.
    pub count: i64,
}

/// One cache bucket.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// The projection it caches.
    pub projection: String,
    /// The NATS KV bucket.
    pub bucket: String,
    /// Entries it holds (deletion markers included), if it exists.
    pub entries: Option<u64>,
}

/// The store at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Why the store is degraded; empty when healthy.
    pub problems: Vec<String>,
    /// The log's positions, over every shard (with S = 1, its last position).
    pub last_position: i64,
    /// Each shard's last position, counted within the shard.
    pub shards: Vec<(i32, i64)>,
    /// The append transaction open now, if any: projectors see nothing it appends, nor
    /// anything after it, until it ends.
    pub watermark: Option<Holder>,
    /// Each projection.
    pub projections: Vec<ProjectionStatus>,
    /// Each stream ingested.
    pub ingest: Vec<IngestStatus>,
    /// Each month of the log.
    pub partitions: Vec<PartitionStatus>,
    /// Dead letters by reason.
    pub dead_letters: Vec<DeadLetterCount>,
    /// Events the folds skipped because they could not be upcast, and the first of them.
    pub upcast_failures: UpcastFailures,
    /// Cache buckets, when NATS was asked.
    pub caches: Vec<CacheStatus>,
    /// The tenant asked for (`status --tenant`), in every projection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Vec<TenantLag>>,
}

/// Events left out of the views because they could not be upcast (`event_upcast_failures`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpcastFailures {
    /// How many.
    pub count: i64,
    /// The first, by position: its position and the reason.
    pub first: Option<(i64, String)>,
}

impl Status {
    /// Healthy when nothing is degraded.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What can keep `status` from reading the store.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The database.
    #[error(transparent)]
    Log(#[from] DbError),
}

/// Reads the store's status. With `js`, also the stream, its consumer and the cache buckets;
/// NATS being unreachable is then a problem reported, not an error.
pub async fn gather(
    pool: &PgPool,
    js: Option<&jetstream::Context>,
    config: &StatusConfig,
) -> Result<Status, StatusError> {
    let mut conn = crate::db::db(pool.acquire().await, "connect for status")?;
    let partitions = crate::ingest::partitions::count(&mut *conn).await?;
    let streams = crate::ingest::partitions::streams(&config.stream, &config.durable, partitions);
    let mut status = db::read(&mut conn, config, &streams).await?;
    if let Some(js) = js {
        nats::read(js, config, &streams, &mut status).await;
    }
    judge(&mut status, config);
    Ok(status)
}

/// Fills in the problems.
fn judge(s: &mut Status, config: &StatusConfig) {
    let mut problems = Vec::new();
    for p in &s.projections {
        if let Some(lag) = p.lag_seconds.filter(|l| *l > config.max_lag.as_secs_f64()) {
            let most: Vec<&str> = p
                .lagging_tenants
                .iter()
                .map(|t| t.tenant.as_str())
                .collect();
            let most = if most.is_empty() {
                String::new()
            } else {
                format!("; most behind: {}", most.join(", "))
            };
            problems.push(format!(
                "projection {} is {lag:.0} s ({} events) behind the log{most}",
                p.name, p.lag_events
            ));
        }
        let unheld: Vec<&ShardLag> = p
            .shards
            .iter()
            .filter(|k| k.lag_events > 0 && k.lease.is_none())
            .collect();
        if !unheld.is_empty() && p.rebuild.is_none() {
            let events: i64 = unheld.iter().map(|k| k.lag_events).sum();
            let shards: Vec<String> = unheld.iter().map(|k| k.shard.to_string()).collect();
            problems.push(format!(
                "projection {} has {events} events to fold and no projector holds its lease \
                 on shard {}",
                p.name,
                shards.join(", ")
            ));
        }
    }
    if let Some(h) = &s.watermark
        && let Some(seconds) = h.seconds.filter(|s| *s > config.max_append.as_secs_f64())
    {
        problems.push(format!(
            "an append transaction has been open {seconds:.0} s and holds the projectors back: \
             pid {} ({})",
            h.pid, h.application_name
        ));
    }
    if let Some((position, reason)) = &s.upcast_failures.first {
        problems.push(format!(
            "{} events could not be upcast and are left out of the views (the first at \
             position {position}: {reason}); fix the upcaster and rebuild",
            s.upcast_failures.count
        ));
    }
    for i in &s.ingest {
        let pending = i.nats.as_ref().map_or(0, |n| n.pending + n.ack_pending);
        if i.leader.is_none() && pending > 0 {
            problems.push(format!(
                "stream {} holds {pending} commands and no ingestor leads it",
                i.stream
            ));
        }
    }
    s.problems.extend(problems);
}
