//! The projector: holds its share of the shards' fold leases and folds the log of each
//! shard it holds into every projection, waking on the log's NOTIFY, with a timed poll as
//! fallback.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::fold::{fold_next, refill, shards_of};
use super::install::{Installed, install, rebuild_to_current};
use super::{ProjectError, Projection, projections};
use crate::cache::CacheEntries;
use crate::db::db;
use crate::health::Heartbeat;
use crate::log::APPEND_CHANNEL;

/// How projectors fold.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// Most log positions folded in one transaction.
    pub window: i64,
    /// Longest sleep between looks at the log when no NOTIFY comes, and between looks at
    /// the other projectors (to take or give shards).
    pub poll: Duration,
    /// How long a hung projector keeps its shards before PostgreSQL ends its lease's session
    /// and the others take them.
    pub lease_ttl: Duration,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            window: 10_000,
            poll: Duration::from_secs(1),
            lease_ttl: crate::db::lease::DEFAULT_TTL,
        }
    }
}

/// How cache buckets are set up.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// TTLs by projection name; a projection's default where absent.
    pub ttls: HashMap<String, Duration>,
    /// Put before every bucket name, to keep several stores (or tests) apart on one server.
    pub bucket_prefix: String,
}

/// Folds the log into every registered projection.
pub struct Projector {
    pub(super) pool: PgPool,
    pub(super) projections: Vec<Projection>,
    pub(super) config: ProjectConfig,
    pub(super) caches: HashMap<String, CacheEntries>,
    /// Projections this start installed fresh: their buckets are cleared.
    reinstalled: HashSet<String>,
    /// Projections installed at an older version: rebuilt beside it by whoever holds their
    /// lease, in the background, while the old version serves and ingest goes on.
    outdated: std::sync::Mutex<HashSet<String>>,
    /// Beaten by every projection's loop on every round.
    heartbeat: Heartbeat,
}

impl Projector {
    /// Installs every projection that is missing or at another version.
    pub async fn start(pool: PgPool, config: ProjectConfig) -> Result<Projector, ProjectError> {
        let projections = projections()?;
        let mut reinstalled = HashSet::new();
        let mut outdated = HashSet::new();
        for p in &projections {
            match install(&pool, p).await? {
                Installed::Current => {}
                Installed::Fresh => {
                    tracing::info!(projection = %p.name, version = p.version, "installed");
                    reinstalled.insert(p.name.clone());
                }
                Installed::Outdated { from } => {
                    tracing::info!(projection = %p.name, from, to = p.version, "older version installed: it serves until this one is rebuilt");
                    outdated.insert(p.name.clone());
                }
            }
        }
        Ok(Projector {
            pool,
            projections,
            config,
            caches: HashMap::new(),
            reinstalled,
            outdated: std::sync::Mutex::new(outdated),
            heartbeat: Heartbeat::new(),
        })
    }

    /// Opens the cache bucket of every cached projection, creating it if missing, with its
    /// TTL from `config` or the projection's default; from then on every fold writes its
    /// changes through.
    pub async fn attach_caches(
        &mut self,
        js: &jetstream::Context,
        config: &CacheConfig,
    ) -> Result<(), ProjectError> {
        let mac = crate::cache::CacheMac::load(&self.pool).await?;
        for p in &self.projections {
            if let Some(spec) = &p.cache {
                let ttl = config
                    .ttls
                    .get(&p.name)
                    .copied()
                    .unwrap_or(Duration::from_secs(spec.ttl_secs));
                let bucket = format!("{}{}", config.bucket_prefix, spec.bucket);
                let entries =
                    CacheEntries::open(js, (&p.name, p.version), &bucket, ttl, mac.clone()).await?;
                if self.reinstalled.contains(&p.name) {
                    // Refolded from scratch: no entry of an earlier fold may survive.
                    entries.clear().await?;
                }
                self.caches.insert(p.name.clone(), entries);
            }
        }
        Ok(())
    }

    /// Beats `heartbeat` on every round of every projection from now on.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The cache entries of projection `name`, if it is cached and caches are attached.
    pub fn cache(&self, name: &str) -> Option<&CacheEntries> {
        self.caches.get(name)
    }

    /// The projections it folds.
    pub fn projections(&self) -> &[Projection] {
        &self.projections
    }

    /// Folds every projection up to the log's last visible position; returns the positions
    /// folded. Without a lease: for tests and one-off catch-ups.
    pub async fn catch_up(&self) -> Result<i64, ProjectError> {
        let mut folded = 0;
        for p in &self.projections {
            folded += self.catch_up_one(p, None).await?;
        }
        Ok(folded)
    }

    /// Folds `p` up to date on every shard, or on those of `only`.
    async fn catch_up_one(
        &self,
        p: &Projection,
        only: Option<&BTreeSet<i32>>,
    ) -> Result<i64, ProjectError> {
        if !self.rebuild_if_outdated(p).await? {
            // Another process is building this version: nothing to fold until it swaps.
            return Ok(0);
        }
        // Every shard at once, each on a connection of its own.
        let shards = shards_of(&self.pool, p).await?;
        let folds = shards
            .into_iter()
            .filter(|shard| only.is_none_or(|only| only.contains(shard)))
            .map(|shard| self.catch_up_shard(p, shard));
        let folded = futures_util::future::try_join_all(folds).await?;
        Ok(folded.into_iter().sum())
    }

    async fn catch_up_shard(&self, p: &Projection, shard: i32) -> Result<i64, ProjectError> {
        let mut folded = 0;
        loop {
            let cache = self.caches.get(&p.name);
            let outcome = fold_next(&self.pool, p, shard, self.config.window, cache).await?;
            if outcome.caught_up() {
                return Ok(folded);
            }
            folded += outcome.upto - outcome.after;
        }
    }

    /// Builds the current version of `p` beside an older one still installed, swaps it in,
    /// then clears and refills its cache entries. Returns whether `p` is now at this
    /// version (false while another process rebuilds it: this one waits).
    async fn rebuild_if_outdated(&self, p: &Projection) -> Result<bool, ProjectError> {
        if !self.outdated.lock().expect("outdated").contains(&p.name) {
            return Ok(true);
        }
        let beat = |_, _| self.heartbeat.beat();
        let rebuilt = match rebuild_to_current(&self.pool, p, beat).await {
            Ok(rebuilt) => rebuilt,
            Err(ProjectError::RebuildBusy(name)) => {
                tracing::info!(projection = %name, "another process is rebuilding it; waiting");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if rebuilt && let Some(cache) = self.caches.get(&p.name) {
            cache.clear().await?;
            refill(&self.pool, p, cache).await?;
        }
        self.outdated.lock().expect("outdated").remove(&p.name);
        Ok(true)
    }

    /// Folds until `shutdown`, each projection in its own task so a slow one (a cache to
    /// write through) never delays another, over the shards this projector holds: it joins
    /// the projectors of the database and holds its share of the shards' fold leases (see
    /// `share`), so several projectors divide the shards, and one that dies or hangs has its
    /// shards taken by the others. Each task folds, then waits for a NOTIFY, a change of the
    /// shards held, or the poll. Database and cache outages are waited out; a fold
    /// PostgreSQL refuses for its data stops the projector rather than skip events.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectError> {
        let this = std::sync::Arc::new(self);
        // Its own token: one projection's failure stops this projector, not the process.
        let stop = shutdown.child_token();
        let _stopped = stop.clone().drop_guard();
        let held = super::share::Held::default();
        let changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn({
            let (pool, held, changed, stop) = (
                this.pool.clone(),
                held.clone(),
                changed.clone(),
                stop.clone(),
            );
            let timing = (this.config.lease_ttl, this.config.poll);
            async move {
                super::share::keep(pool, timing, held, changed, stop).await;
                Ok(())
            }
        });
        for i in 0..this.projections.len() {
            let (this, shutdown) = (this.clone(), stop.clone());
            let shards = (held.clone(), changed.clone());
            tasks.spawn(async move { this.run_one(&this.projections[i], shards, shutdown).await });
        }
        while let Some(ended) = tasks.join_next().await {
            let result = ended.unwrap_or_else(|e| {
                Err(ProjectError::Invalid {
                    name: "projector".into(),
                    problem: format!("a fold task panicked: {e}"),
                })
            });
            if let Err(e) = result {
                stop.cancel();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn run_one(
        &self,
        p: &Projection,
        (held, changed): (super::share::Held, std::sync::Arc<tokio::sync::Notify>),
        shutdown: CancellationToken,
    ) -> Result<(), ProjectError> {
        let mut listener = db(PgListener::connect_with(&self.pool).await, "listen")?;
        db(listener.listen(APPEND_CHANNEL).await, "listen")?;
        loop {
            self.heartbeat.beat();
            // Registered before the round, so a change during it wakes the wait after it.
            let change = changed.notified();
            tokio::pin!(change);
            change.as_mut().enable();
            let shards = held.read().expect("held shards").clone();
            let round = tokio::select! {
                // A round may be a whole rebuild: a shutdown does not wait for it (the shadow
                // is built again on the next start; the live tables are untouched).
                _ = shutdown.cancelled() => return Ok(()),
                round = self.round(p, &shards) => round,
            };
            let trouble = format!("cache {}", p.name);
            match round {
                Ok(()) => self.heartbeat.mended(&trouble),
                Err(ProjectError::Log(e)) if e.is_transient() && !e.is_fatal() => {
                    tracing::warn!(error = %e, projection = %p.name, "projection paused; retrying");
                }
                Err(ProjectError::Cache(e)) => {
                    tracing::warn!(error = %e, projection = %p.name, "cache unavailable; the fold waits");
                    self.heartbeat.trouble(&trouble, e.to_string());
                    // A deleted bucket is made again (with backoff: the poll), not waited on.
                    if let Some(entries) = self.caches.get(&p.name) {
                        match entries.restore().await {
                            Ok(()) => {
                                tracing::info!(projection = %p.name, "cache bucket checked and created if missing")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, projection = %p.name, "cache bucket cannot be created")
                            }
                        }
                    }
                }
                Err(other) => return Err(other),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = listener.recv() => {}
                _ = change => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Folds `p` up to date on the shards this projector holds.
    async fn round(&self, p: &Projection, held: &BTreeSet<i32>) -> Result<(), ProjectError> {
        if held.is_empty() {
            return Ok(());
        }
        self.catch_up_one(p, Some(held)).await?;
        let stall = crate::db::locks::appends_held_back_for(&self.pool).await?;
        metrics::gauge!("activity_projection_watermark_stall_seconds").set(stall);
        Ok(())
    }
}
