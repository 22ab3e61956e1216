//! The projector: holds a lease per projection and folds the log into each one it holds,
//! waking on the log's NOTIFY, with a timed poll as fallback.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::fold::{appends_held_back_for, fold_next, install};
use super::{ProjectError, Projection, projections};
use crate::log::{APPEND_CHANNEL, LogError, db};

/// The first key of a projection's lease ("LEAS"); the second is its name's hash.
const LEASE_LOCK: i32 = 0x4c45_4153;

/// How projectors fold.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// Most log positions folded in one transaction.
    pub window: i64,
    /// Longest sleep between looks at the log when no NOTIFY comes.
    pub poll: Duration,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig {
            window: 10_000,
            poll: Duration::from_secs(1),
        }
    }
}

/// Folds the log into every registered projection.
pub struct Projector {
    pool: PgPool,
    projections: Vec<Projection>,
    config: ProjectConfig,
}

impl Projector {
    /// Installs every projection that is missing or at another version.
    pub async fn start(pool: PgPool, config: ProjectConfig) -> Result<Projector, ProjectError> {
        let projections = projections()?;
        for p in &projections {
            if install(&pool, p).await? {
                tracing::info!(projection = %p.name, version = p.version, "installed");
            }
        }
        Ok(Projector {
            pool,
            projections,
            config,
        })
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
            folded += self.catch_up_one(p).await?;
        }
        Ok(folded)
    }

    async fn catch_up_one(&self, p: &Projection) -> Result<i64, ProjectError> {
        let mut folded = 0;
        loop {
            let outcome = fold_next(&self.pool, p, self.config.window).await?;
            if outcome.caught_up() {
                return Ok(folded);
            }
            folded += outcome.upto - outcome.after;
        }
    }

    /// Folds until `shutdown`: takes the lease of each projection no other projector holds
    /// (a standby takes over when the holder's session ends), folds what it holds, then
    /// waits for a NOTIFY or the poll. Database outages are waited out; a fold PostgreSQL
    /// refuses for its data stops the projector rather than skip events.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectError> {
        let mut listener = db(PgListener::connect_with(&self.pool).await, "listen")?;
        db(listener.listen(APPEND_CHANNEL).await, "listen")?;
        let mut lease: Option<PgConnection> = None;
        let mut held: HashSet<String> = HashSet::new();
        loop {
            if let Err(e) = self.round(&mut lease, &mut held).await {
                match e {
                    ProjectError::Log(ref l) if l.is_transient() => {
                        tracing::warn!(error = %e, "projection paused; retrying");
                        lease = None;
                        held.clear();
                    }
                    other => return Err(other),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = listener.recv() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    async fn round(
        &self,
        lease: &mut Option<PgConnection>,
        held: &mut HashSet<String>,
    ) -> Result<(), ProjectError> {
        let conn = match lease {
            Some(c) => c,
            None => lease.insert(db(self.pool.acquire().await, "connect for leases")?.detach()),
        };
        for p in &self.projections {
            if !held.contains(&p.name) && take_lease(conn, &p.name).await? {
                tracing::info!(projection = %p.name, "lease taken");
                held.insert(p.name.clone());
            }
        }
        for p in self.projections.iter().filter(|p| held.contains(&p.name)) {
            self.catch_up_one(p).await?;
        }
        let stall = appends_held_back_for(&self.pool).await?;
        metrics::gauge!("activity_projection_watermark_stall_seconds").set(stall);
        Ok(())
    }
}

async fn take_lease(conn: &mut PgConnection, name: &str) -> Result<bool, LogError> {
    db(
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LEASE_LOCK)
            .bind(name)
            .fetch_one(conn)
            .await,
        "take a projection's lease",
    )
}
