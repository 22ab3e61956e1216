//! Read-your-writes: a request that asks for a position waits, bounded, until the
//! projection it reads has folded that far. One task per process watches the projections'
//! positions, and only while someone waits, so a thousand waiters cost one query a tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks while someone waits.
const TICK: Duration = Duration::from_millis(20);
/// The most requests waiting at once; more are told to retry.
pub const MAX_WAITERS: usize = 1024;

/// The projections' positions, as last seen.
pub struct Positions {
    latest: watch::Sender<HashMap<String, i64>>,
    wake: Notify,
    waiting: AtomicUsize,
    permits: Semaphore,
}

/// Why a wait ended without the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// The deadline passed; the projection was last seen here.
    Deadline(i64),
    /// Too many requests wait already.
    Busy,
}

impl Positions {
    /// Starts the watcher of `projections` on `pool`; it ends with `shutdown`.
    pub fn watch(
        pool: PgPool,
        projections: Vec<String>,
        shutdown: CancellationToken,
    ) -> Arc<Positions> {
        let positions = Arc::new(Positions {
            latest: watch::Sender::new(HashMap::new()),
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
            permits: Semaphore::new(MAX_WAITERS),
        });
        let watcher = positions.clone();
        tokio::spawn(async move { watcher.run(pool, projections, shutdown).await });
        positions
    }

    async fn run(&self, pool: PgPool, projections: Vec<String>, shutdown: CancellationToken) {
        loop {
            if self.waiting.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let read: Result<Vec<(String, Option<i64>)>, _> = sqlx::query_as(
                "SELECT p, analytics.projection_position(p) FROM unnest($1::text[]) p",
            )
            .bind(&projections)
            .fetch_all(&pool)
            .await;
            match read {
                Ok(rows) => {
                    let seen: HashMap<String, i64> = rows
                        .into_iter()
                        .map(|(p, pos)| (p, pos.unwrap_or(0)))
                        .collect();
                    self.latest.send_if_modified(|held| {
                        let changed = *held != seen;
                        *held = seen;
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "could not read the projections' positions"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Waits until `projection` has folded up to `min`, or `deadline`.
    pub async fn wait_for(
        &self,
        projection: &str,
        min: i64,
        deadline: Instant,
    ) -> Result<(), NotYet> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(NotYet::Busy);
        };
        let mut seen = self.latest.subscribe();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.waiting);
        self.wake.notify_one();
        loop {
            let (at, known) = {
                let map = seen.borrow_and_update();
                (
                    map.get(projection).copied(),
                    map.is_empty() || map.contains_key(projection),
                )
            };
            if at.is_some_and(|p| p >= min) {
                return Ok(());
            }
            // The watcher has read the positions and this projection is not among them.
            if !known {
                return Err(NotYet::Deadline(0));
            }
            match tokio::time::timeout_at(deadline, seen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(NotYet::Deadline(at.unwrap_or(0))),
            }
        }
    }
}
