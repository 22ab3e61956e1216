//! `status` as Prometheus gauges, refreshed by every running store: lag per projection,
//! dead letters by reason, commands waiting in the stream, and the verdict.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Status, StatusConfig, gather};

/// The dead-letter reasons this process has exported a gauge for.
static DEAD_LETTER_REASONS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Sets the gauges from one status.
pub fn export(s: &Status) {
    for p in &s.projections {
        let name = p.name.clone();
        metrics::gauge!("activity_projection_lag_events", "projection" => name.clone())
            .set(p.lag_events as f64);
        metrics::gauge!("activity_projection_lag_seconds", "projection" => name)
            .set(p.lag_seconds.unwrap_or(0.0));
    }
    // A reason whose letters were all resolved or purged reads 0, not its last count.
    let mut exported = DEAD_LETTER_REASONS.lock().expect("reasons lock");
    for reason in exported.iter() {
        if !s.dead_letters.iter().any(|d| &d.reason == reason) {
            metrics::gauge!("activity_dead_letters", "reason" => reason.clone()).set(0.0);
        }
    }
    for d in &s.dead_letters {
        metrics::gauge!("activity_dead_letters", "reason" => d.reason.clone()).set(d.count as f64);
        exported.insert(d.reason.clone());
    }
    drop(exported);
    metrics::gauge!("activity_event_upcast_failures").set(s.upcast_failures.count as f64);
    let pending: u64 = s
        .ingest
        .iter()
        .filter_map(|i| i.nats.as_ref())
        .map(|n| n.pending + n.ack_pending)
        .sum();
    metrics::gauge!("activity_ingest_pending").set(pending as f64);
    for (shard, last) in &s.shards {
        metrics::gauge!("activity_log_last_position", "shard" => shard.to_string())
            .set(*last as f64);
    }
    let held = s.watermark.as_ref().and_then(|h| h.seconds).unwrap_or(0.0);
    metrics::gauge!("activity_append_open_seconds").set(held);
    metrics::gauge!("activity_store_healthy").set(if s.healthy() { 1.0 } else { 0.0 });
}

/// Reads the status every `every` and exports it, until `shutdown`. The partitions are not
/// counted here (that is `status`'s job, on demand); a failed read is logged and retried.
pub async fn sample(
    pool: PgPool,
    js: jetstream::Context,
    config: StatusConfig,
    every: Duration,
    shutdown: CancellationToken,
) {
    let config = StatusConfig {
        count_partitions: false,
        name_lagging_tenants: false,
        ..config
    };
    loop {
        match gather(&pool, Some(&js), &config).await {
            Ok(status) => export(&status),
            Err(e) => tracing::warn!(error = %e, "could not read the store's status"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
