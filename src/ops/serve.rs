//! Running the store's roles in one process until shutdown: ingest (and later projectors),
//! plus the metrics endpoint. Every task belongs to a tracker that is awaited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{Health, serve as serve_metrics};
use crate::ingest::{IngestConfig, IngestError, Ingestor};
use crate::log::{EventLog, LogError, db};
use crate::project::{CacheConfig, ProjectConfig, ProjectError, Projector};

/// Where the roles connect and what they run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store's database.
    pub database_url: String,
    /// The NATS server.
    pub nats_url: String,
    /// Where `/metrics`, `/livez` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Whether to run the ingestor.
    pub ingest: bool,
    /// The ingestor's settings.
    pub ingest_config: IngestConfig,
    /// Whether to run the projector.
    pub project: bool,
    /// The projector's settings.
    pub project_config: ProjectConfig,
    /// How the projector's cache buckets are set up.
    pub cache: CacheConfig,
}

/// What can stop the roles from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The log or its database.
    #[error(transparent)]
    Log(#[from] LogError),
    /// NATS or the ingestor.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The projector.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The metrics endpoint could not listen.
    #[error("could not listen for metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts the roles; they run until `shutdown` is cancelled, then this returns once all stopped.
pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let pool = db(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&config.database_url)
            .await,
        "connect to the database",
    )?;
    let log = Arc::new(EventLog::open(pool.clone()).await?);
    let nats = async_nats::connect(&config.nats_url)
        .await
        .map_err(|e| IngestError::Nats(format!("connect to {}: {e}", config.nats_url)))?;
    // Ready means the consumer is bound when this process ingests.
    let consumer_bound = Arc::new(AtomicBool::new(!config.ingest));
    let projecting = Arc::new(AtomicBool::new(true));
    let health = Health {
        pool: pool.clone(),
        nats: nats.clone(),
        consumer_bound: consumer_bound.clone(),
        projecting: projecting.clone(),
    };
    let (bound, metrics) = serve_metrics(config.metrics_addr, health, shutdown.clone())
        .await
        .map_err(|source| ServeError::Metrics {
            addr: config.metrics_addr,
            source,
        })?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    let tracker = TaskTracker::new();
    tracker.spawn(async move {
        if let Err(e) = metrics.await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    if config.project {
        let mut projector = Projector::start(pool.clone(), config.project_config.clone()).await?;
        let js = async_nats::jetstream::new(nats.clone());
        projector.attach_caches(&js, &config.cache).await?;
        tracing::info!(projections = projector.projections().len(), "projecting");
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = projector.run(token).await {
                // /readyz turns 503; the other roles carry on.
                projecting.store(false, Ordering::SeqCst);
                tracing::error!(error = %e, "projector stopped; restart to resume from the checkpoints");
            }
        });
    }
    if config.ingest {
        let js = async_nats::jetstream::new(nats);
        let ingestor = Ingestor::start(&js, log, config.ingest_config.clone()).await?;
        consumer_bound.store(true, Ordering::SeqCst);
        tracing::info!(stream = %config.ingest_config.stream, "ingesting");
        let token = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = ingestor.run(token).await {
                // /readyz turns 503; a restart resumes from the last committed sequence.
                consumer_bound.store(false, Ordering::SeqCst);
                tracing::error!(error = %e, "ingestor stopped; restart to resume from the checkpoint");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}
