//! Projectors dividing the shards between them. Each running projector is a member (it holds
//! a member lock keyed by its session's pid on a [`Lease`]) and folds only the shards whose
//! fold lease it holds on that same session. Every round it counts the members, takes free
//! shards while it holds fewer than its share (the shards divided by the members, rounded
//! up) and lets the extras go when it holds more, so a projector that joins is given shards
//! within a round or two, and the shards of one that dies (its session closes) or hangs (its
//! session idles out) are taken by the others.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;

use crate::db::lease::{self, Lease};
use crate::db::{DbError, db, locks};

/// The shards one projector holds now, read by its fold tasks.
pub type Held = Arc<RwLock<BTreeSet<i32>>>;

/// One projector's membership and the shard leases it holds.
pub(super) struct Share {
    lease: Lease,
    held: BTreeSet<i32>,
}

impl Share {
    /// Joins the projectors of this database, holding no shard yet.
    pub(super) async fn join(pool: &PgPool, ttl: Duration) -> Result<Share, DbError> {
        let lease = Lease::open(pool, ttl).await?;
        let joined: bool = {
            let mut conn = lease.session().await;
            db(
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, pg_backend_pid())")
                    .bind(locks::PROJECT_MEMBER)
                    .fetch_one(&mut *conn)
                    .await,
                "join the projectors",
            )?
        };
        debug_assert!(joined, "a backend's pid is its own");
        Ok(Share {
            lease,
            held: BTreeSet::new(),
        })
    }

    /// Cancelled when this projector's session is found gone: every shard it held is lost.
    pub(super) fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lease.lost()
    }

    /// Takes or lets go of shards so this projector holds its share of `shards`; returns the
    /// shards it holds now.
    pub(super) async fn rebalance(&mut self, shards: &[i32]) -> Result<BTreeSet<i32>, DbError> {
        let members = {
            let mut conn = self.lease.session().await;
            lease::members(&mut conn, locks::PROJECT_MEMBER).await?
        };
        let share = shards.len().div_ceil(members.max(1) as usize);
        // Shards the store no longer has are let go (a shrink of an empty store).
        let gone: Vec<i32> = self
            .held
            .iter()
            .copied()
            .filter(|s| !shards.contains(s))
            .collect();
        for shard in gone {
            self.let_go(shard).await?;
        }
        while self.held.len() > share {
            let last = *self.held.last().expect("holds more than its share");
            self.let_go(last).await?;
        }
        for &shard in shards {
            if self.held.len() >= share {
                break;
            }
            if !self.held.contains(&shard) && self.lease.try_take(locks::SHARD_FOLD, shard).await? {
                tracing::info!(shard, "shard's fold lease taken");
                self.held.insert(shard);
            }
        }
        metrics::gauge!("activity_projector_shards_held").set(self.held.len() as f64);
        Ok(self.held.clone())
    }

    async fn let_go(&mut self, shard: i32) -> Result<(), DbError> {
        self.lease.release(locks::SHARD_FOLD, shard).await?;
        self.held.remove(&shard);
        tracing::info!(shard, "shard's fold lease let go to another projector");
        Ok(())
    }
}

/// The store's shards.
pub(super) async fn all_shards(pool: &PgPool) -> Result<Vec<i32>, DbError> {
    db(
        sqlx::query_scalar("SELECT shard FROM log_shards ORDER BY shard")
            .fetch_all(pool)
            .await,
        "list the log's shards",
    )
}

/// Until `shutdown`: keeps this projector a member and its share of the shards held,
/// looking every `every` (and at once when its session is lost), publishing what it holds
/// to `held` and waking `changed`'s waiters when that changes. A lost session is joined
/// again; meanwhile it holds nothing.
pub(super) async fn keep(
    pool: PgPool,
    (ttl, every): (Duration, Duration),
    held: Held,
    changed: Arc<tokio::sync::Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut share: Option<Share> = None;
    loop {
        let now = match round(&pool, ttl, &mut share).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "projector's shard leases lost; joining again");
                share = None;
                BTreeSet::new()
            }
        };
        let differs = *held.read().expect("held shards") != now;
        if differs {
            *held.write().expect("held shards") = now;
            changed.notify_waiters();
        }
        let lost = share.as_ref().map(Share::lost).unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = lost.cancelled() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn round(
    pool: &PgPool,
    ttl: Duration,
    share: &mut Option<Share>,
) -> Result<BTreeSet<i32>, DbError> {
    if share.as_ref().is_some_and(|s| s.lost().is_cancelled()) {
        *share = None;
    }
    let member = match share {
        Some(s) => s,
        None => share.insert(Share::join(pool, ttl).await?),
    };
    let shards = all_shards(pool).await?;
    member.rebalance(&shards).await
}
