//! Running the store's roles in one process until shutdown: ingest and projectors, each
//! supervised, plus the metrics endpoint. Every task belongs to a tracker that is awaited.

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod maintain;
pub mod metrics;
mod partitions;
mod roles;

pub use roles::{Role, RoleState, supervise};

use crate::db::DbError;
use crate::ingest::{IngestConfig, IngestError, Ingestor};
use crate::log::EventLog;
use crate::project::{CacheConfig, ProjectConfig, ProjectError, Projector};
use crate::status::{self, StatusConfig};
use metrics::{Health, serve as serve_metrics};

/// Where the roles connect and what they run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store's database, as its owner (the projector installs and folds as it).
    pub database_url: String,
    /// The store's database as the ingestor's `activity_writer` login; `database_url` if
    /// unset.
    pub ingest_database_url: Option<String>,
    /// The NATS server.
    pub nats_url: String,
    /// Where `/metrics`, `/livez` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// `up`'s environment file: once every listener is bound, the store says it is up and
    /// names it.
    pub up_file: Option<std::path::PathBuf>,
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
    /// How long a running role may go without a heartbeat before `/livez` fails.
    pub liveness_timeout: std::time::Duration,
    /// A projection further behind than this makes the store degraded (`/status`).
    pub max_lag: std::time::Duration,
    /// An append transaction open longer than this makes the store degraded.
    pub max_append: std::time::Duration,
    /// How often the status gauges are refreshed.
    pub status_every: std::time::Duration,
    /// Months of the log kept created ahead of this one, by whichever process holds the
    /// maintenance lease, checked every `maintenance_every`.
    pub months_ahead: usize,
    /// How often the maintenance lease holder looks.
    pub maintenance_every: std::time::Duration,
    /// The HTTP API, if served.
    pub api: Option<crate::api::ApiConfig>,
    /// The store's database as the API's login: granted `activity_reader`, bound to no
    /// tenant, so only tokens scope it. `database_url` if unset (then the login's own
    /// bindings apply too, and isolation rests on the server's token check alone).
    pub api_database_url: Option<String>,
}

impl ServeConfig {
    /// What `/status` and the status gauges look at.
    pub fn status_config(&self) -> StatusConfig {
        StatusConfig {
            stream: self.ingest_config.stream.clone(),
            durable: self.ingest_config.durable.clone(),
            bucket_prefix: self.cache.bucket_prefix.clone(),
            max_lag: self.max_lag,
            max_append: self.max_append,
            // `/status` answers on the metrics port without a login: no tenant is named.
            name_lagging_tenants: false,
            ..StatusConfig::default()
        }
    }
}

/// What can stop the roles from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The log or its database.
    #[error(transparent)]
    Log(#[from] DbError),
    /// NATS or the ingestor.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The projector.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The API could not listen.
    #[error("could not listen for the API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error(
        "could not listen for metrics on {addr}: {source}; choose another address with \
         --metrics-addr HOST:PORT (or ACTIVITY_METRICS_ADDR)"
    )]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts the roles; they run until `shutdown` is cancelled, then this returns once all
/// stopped. A role that ends with an error is restarted with backoff (see `roles`), so one
/// failure never leaves a process that answers `/livez` but does nothing.
pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    // The recorder first: series the roles declare at zero must not be lost before it.
    metrics::recorder();
    let idle = crate::db::IDLE_IN_TRANSACTION;
    let pool = connect(&config.database_url, ("project", 8), 5, idle).await?;
    // A pool of its own, whose sessions a hang loses within the lease's time to live.
    let ingest_pool = match &config.ingest_database_url {
        _ if !config.ingest => pool.clone(),
        url => {
            let url = url.as_ref().unwrap_or(&config.database_url);
            let idle = config.ingest_config.lease_ttl;
            connect(url, ("ingest", 4), 5, idle).await?
        }
    };
    let nats = crate::nats::connect(&config.nats_url).await.map_err(|e| {
        IngestError::Nats(format!(
            "connect to {}: {e}",
            crate::nats::redacted(&config.nats_url)
        ))
    })?;
    if config.ingest
        && let Err(e) =
            crate::log::partitions::set_window(&pool, &config.ingest_config.window).await
    {
        tracing::warn!(error = %e, "could not record the accepted window; the writer keeps the one recorded before");
    }
    let tracker = TaskTracker::new();
    let roles = spawn_roles(&tracker, &config, (&pool, &ingest_pool), &nats, &shutdown);
    spawn_upkeep(&tracker, &config, &pool, &nats, &shutdown);
    let api_role = roles.iter().find(|r| r.name == "api").cloned();
    let health = Health {
        pool: pool.clone(),
        nats: nats.clone(),
        roles,
        liveness_timeout: config.liveness_timeout,
        status: config.status_config(),
    };
    let (bound, metrics) = serve_metrics(config.metrics_addr, health, shutdown.clone())
        .await
        .map_err(|source| ServeError::Metrics {
            addr: config.metrics_addr,
            source,
        })?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    if let Some(env_file) = config.up_file.clone() {
        tracker.spawn(say_up(env_file, api_role, shutdown.clone()));
    }
    tracker.spawn(async move {
        if let Err(e) = metrics.await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Says the store is up once the API (if it serves one) listens too; the metrics endpoint
/// already does.
async fn say_up(env_file: std::path::PathBuf, api: Option<Role>, shutdown: CancellationToken) {
    while let Some(role) = &api
        && role.state() != RoleState::Running
    {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
    tracing::info!(env_file = %env_file.display(), "activity-store is up; Ctrl-C to stop");
}

/// Spawns the roles `config` asks for, each supervised; returns them for the health checks.
fn spawn_roles(
    tracker: &TaskTracker,
    config: &ServeConfig,
    (pool, ingest_pool): (&PgPool, &PgPool),
    nats: &async_nats::Client,
    shutdown: &CancellationToken,
) -> Vec<Role> {
    let mut roles = Vec::new();
    if config.project {
        let role = Role::new("project");
        roles.push(role.clone());
        let (pool, nats, config) = (pool.clone(), nats.clone(), config.clone());
        tracker.spawn(supervise(role, shutdown.clone(), move |role, token| {
            project(pool.clone(), nats.clone(), config.clone(), role, token)
        }));
    }
    if config.ingest {
        let role = Role::new("ingest");
        roles.push(role.clone());
        let (pool, nats, config) = (ingest_pool.clone(), nats.clone(), config.clone());
        tracker.spawn(supervise(role, shutdown.clone(), move |role, token| {
            ingest(pool.clone(), nats.clone(), config.clone(), role, token)
        }));
    }
    if let Some(api) = &config.api {
        let role = Role::new("api");
        roles.push(role.clone());
        let (nats, config, api) = (nats.clone(), config.clone(), api.clone());
        tracker.spawn(supervise(role, shutdown.clone(), move |role, token| {
            serve_api(config.clone(), api.clone(), nats.clone(), role, token)
        }));
    }
    roles
}

/// Spawns the upkeep every store does beside its roles: months ahead (on the maintenance
/// lease) and the status gauges.
fn spawn_upkeep(
    tracker: &TaskTracker,
    config: &ServeConfig,
    pool: &PgPool,
    nats: &async_nats::Client,
    shutdown: &CancellationToken,
) {
    tracker.spawn(maintain::months_ahead(
        pool.clone(),
        config.months_ahead,
        config.maintenance_every,
        shutdown.clone(),
    ));
    tracker.spawn(status::sample(
        pool.clone(),
        async_nats::jetstream::new(nats.clone()),
        config.status_config(),
        config.status_every,
        shutdown.clone(),
    ));
}

/// A pool for `role`: sessions named after it, at most `max` connections, waiting at most
/// `acquire_secs` for one.
async fn connect(
    url: &str,
    (role, max): (&str, u32),
    acquire_secs: u64,
    idle: std::time::Duration,
) -> Result<PgPool, ServeError> {
    let acquire = std::time::Duration::from_secs(acquire_secs);
    Ok(crate::db::worker_pool(url, (role, max), acquire, idle).await?)
}

/// One attempt at the API role: its own pool (as `api_database_url`'s login, an unbound
/// reader, when given), bind, serve until `shutdown`. Its heartbeat is a request to itself
/// every few seconds that must be answered: `/livez` fails if the server stops answering,
/// and an error that ends it is restarted like any role.
async fn serve_api(
    config: ServeConfig,
    api: crate::api::ApiConfig,
    nats: async_nats::Client,
    role: Role,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    if config.api_database_url.is_none() {
        tracing::warn!(
            "the API reads as the store's owner (no API database URL): tenant isolation then rests on the server's token check, not on the database"
        );
    }
    let url = config
        .api_database_url
        .as_ref()
        .unwrap_or(&config.database_url);
    let size = crate::api::POOL_SIZE as u32;
    let pool = connect(url, ("api", size), 2, crate::db::IDLE_IN_TRANSACTION).await?;
    // This attempt's tasks (the position watcher) end with it.
    let attempt = shutdown.child_token();
    let _ended = attempt.clone().drop_guard();
    let js = async_nats::jetstream::new(nats);
    let state = crate::api::ApiState::new(pool, Some(js), api.clone(), attempt);
    let (bound, server) = crate::api::serve(state, shutdown.clone())
        .await
        .map_err(|source| ServeError::Api {
            addr: api.addr,
            source,
        })?;
    tracing::info!(%bound, "API on http://{bound}/v1");
    role.running();
    let every = (config.liveness_timeout / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    let probe = async {
        loop {
            if crate::api::answers(bound).await {
                role.heartbeat.beat();
            }
            tokio::time::sleep(every).await;
        }
    };
    tokio::select! {
        served = server => served.map_err(|source| ServeError::Api { addr: bound, source }),
        _ = probe => unreachable!("the probe never ends"),
    }
}

/// One attempt at the projector role: install, attach caches, fold until shutdown.
async fn project(
    pool: PgPool,
    nats: async_nats::Client,
    config: ServeConfig,
    role: Role,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let projector = Projector::start(pool, config.project_config.clone()).await?;
    let mut projector = projector.with_heartbeat(role.heartbeat.clone());
    // Cache writes give up after seconds, not the client's default ten: a lost bucket is
    // found and made again quickly, and a fold never waits long on the cache.
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(CACHE_TIMEOUT)
        .ack_timeout(CACHE_TIMEOUT)
        .build(nats);
    projector.attach_caches(&js, &config.cache).await?;
    tracing::info!(projections = projector.projections().len(), "projecting");
    role.running();
    Ok(projector.run(shutdown).await?)
}

/// How long a cache write may wait for NATS.
const CACHE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One attempt at the ingest role: open the log, take the stream's lead (a standby waits
/// here), ingest until shutdown.
async fn ingest(
    pool: PgPool,
    nats: async_nats::Client,
    config: ServeConfig,
    role: Role,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let log = Arc::new(EventLog::open(pool).await?);
    let js = async_nats::jetstream::new(nats);
    let partitions = crate::ingest::partitions::count(log.pool()).await?;
    if partitions > 1 {
        return partitions::ingest(log, js, (&config, partitions), &role, shutdown).await;
    }
    let started = tokio::select! {
        started = Ingestor::start(&js, log, config.ingest_config.clone()) => started?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let ingestor = started.with_heartbeat(role.heartbeat.clone());
    tracing::info!(stream = %config.ingest_config.stream, "ingesting");
    role.running();
    // A lead lost (a hang outlived the lease) ends this attempt at once: a batch being
    // committed rolls back (a standby's epoch fences it besides) and is redelivered.
    let lost = ingestor.lead_lost();
    tokio::select! {
        ran = ingestor.run(shutdown) => Ok(ran?),
        _ = lost.cancelled() => Err(IngestError::LeaseLost {
            stream: config.ingest_config.stream.clone(),
        }
        .into()),
    }
}
