//! The ingest role over P > 1 partitions: this instance joins the ingesting instances (a
//! member lock keyed by its session's pid), and every round holds its share of the
//! partitions' leads (P divided by the members, rounded up), starting an ingestor for each
//! free partition while under its share and stopping its last ones (each commits the batch
//! in hand and lets its lead go) while over it. A partition whose instance died (its session
//! closed) or hung (its lease's session idled out) is free, and taken within a round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Role, ServeConfig, ServeError};
use crate::db::lease::{self, Lease};
use crate::db::{db, locks};
use crate::ingest::{IngestError, Ingestor};
use crate::log::EventLog;

/// How often an instance looks at the others to take or give partitions.
const ROUND: Duration = Duration::from_secs(1);

type Running = BTreeMap<u32, (CancellationToken, JoinHandle<Result<(), IngestError>>)>;

/// Ingests its share of `partitions` partitions until `shutdown`.
pub(super) async fn ingest(
    log: Arc<EventLog>,
    js: jetstream::Context,
    (config, partitions): (&ServeConfig, u32),
    role: &Role,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let base = &config.ingest_config;
    // Every partition's stream exists from the start, so producers can publish to each.
    for p in 0..partitions {
        Ingestor::open_stream(&js, &base.partition(p, partitions)).await?;
    }
    let member = Lease::open(log.pool(), base.lease_ttl).await?;
    {
        let mut conn = member.session().await;
        db(
            sqlx::query("SELECT pg_advisory_lock($1, pg_backend_pid())")
                .bind(locks::INGEST_MEMBER)
                .execute(&mut *conn)
                .await,
            "join the ingesting instances",
        )?;
    }
    metrics::gauge!("activity_ingest_partitions_held").set(0.0);
    role.running();
    let mut running = Running::new();
    let result = rounds(
        &log,
        &js,
        (config, partitions),
        role,
        &member,
        &mut running,
        &shutdown,
    )
    .await;
    for (_, (stop, _)) in running.iter() {
        stop.cancel();
    }
    for (p, (_, task)) in running {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, partition = p, "partition's ingestor ended with an error");
        }
    }
    result
}

async fn rounds(
    log: &Arc<EventLog>,
    js: &jetstream::Context,
    (config, partitions): (&ServeConfig, u32),
    role: &Role,
    member: &Lease,
    running: &mut Running,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let lost = member.lost();
    loop {
        role.heartbeat.beat();
        reap(running).await;
        let members = {
            let mut conn = member.session().await;
            lease::members(&mut conn, locks::INGEST_MEMBER).await?
        };
        let share = (partitions as usize).div_ceil(members.max(1) as usize);
        while running.len() > share {
            let (p, (stop, task)) = running.pop_last().expect("more than its share");
            stop.cancel();
            if let Ok(Err(e)) = task.await {
                tracing::warn!(error = %e, partition = p, "partition's ingestor ended with an error");
            }
            tracing::info!(partition = p, "partition's lead let go to another instance");
        }
        for p in 0..partitions {
            if running.len() >= share || shutdown.is_cancelled() {
                break;
            }
            if running.contains_key(&p) {
                continue;
            }
            let part = config.ingest_config.partition(p, partitions);
            match Ingestor::try_start(js, log.clone(), part).await {
                Ok(Some(ingestor)) => {
                    tracing::info!(partition = p, "partition's lead taken");
                    let stop = shutdown.child_token();
                    let ingestor = ingestor.with_heartbeat(role.heartbeat.clone());
                    running.insert(
                        p,
                        (stop.clone(), tokio::spawn(ingest_one(ingestor, p, stop))),
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, partition = p, "partition's ingestor could not start; trying again")
                }
            }
        }
        metrics::gauge!("activity_ingest_partitions_held").set(running.len() as f64);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = lost.cancelled() => {
                return Err(IngestError::LeaseLost { stream: config.ingest_config.stream.clone() }.into())
            }
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
}

/// Runs one partition's ingestor until `stop`, or until its lead is lost.
async fn ingest_one(
    ingestor: Ingestor,
    p: u32,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let lost = ingestor.lead_lost();
    let stream = format!("partition {p}");
    tokio::select! {
        ran = ingestor.run(stop) => ran,
        _ = lost.cancelled() => Err(IngestError::LeaseLost { stream }),
    }
}

/// Forgets the ingestors that ended (an error is logged; the partition is taken again by
/// whoever is under their share, this instance included, on a later round).
async fn reap(running: &mut Running) {
    let ended: Vec<u32> = running
        .iter()
        .filter(|(_, (_, task))| task.is_finished())
        .map(|(p, _)| *p)
        .collect();
    for p in ended {
        let (_, task) = running.remove(&p).expect("listed");
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, partition = p, "partition's ingestor stopped; its lead is free again")
            }
            Err(e) => tracing::error!(error = %e, partition = p, "partition's ingestor panicked"),
        }
    }
}
