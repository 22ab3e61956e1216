//! Read-your-writes: a request that asks for a position in its tenant's log waits, bounded,
//! until the projection it reads has folded that tenant that far. One task per process
//! watches the (projection, tenant) pairs someone waits for, and only while someone waits,
//! so a thousand waiters cost one query a tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks while someone waits.
const TICK: Duration = Duration::from_millis(20);
/// The most requests waiting at once; more are told to retry.
pub const MAX_WAITERS: usize = 1024;

/// A projection and a tenant.
type Key = (String, String);

/// The tenants' positions in the projections waited for, as last seen (`None`: the
/// projection is not installed).
pub struct Positions {
    latest: watch::Sender<HashMap<Key, Option<i64>>>,
    /// How many requests wait for each pair, and the digest of one of their tokens: the
    /// database tells a tenant's position only against its token.
    wanted: Mutex<HashMap<Key, (usize, String)>>,
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
    /// Starts the watcher on `pool`; it ends with `shutdown`.
    pub fn watch(pool: PgPool, shutdown: CancellationToken) -> Arc<Positions> {
        let positions = Arc::new(Positions {
            latest: watch::Sender::new(HashMap::new()),
            wanted: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
            permits: Semaphore::new(MAX_WAITERS),
        });
        let watcher = positions.clone();
        tokio::spawn(async move { watcher.run(pool, shutdown).await });
        positions
    }

    fn wanted(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let wanted = self.wanted.lock().expect("waiters poisoned");
        let mut columns = (Vec::new(), Vec::new(), Vec::new());
        for ((projection, tenant), (_, digest)) in wanted.iter() {
            columns.0.push(projection.clone());
            columns.1.push(tenant.clone());
            columns.2.push(digest.clone());
        }
        columns
    }

    async fn run(&self, pool: PgPool, shutdown: CancellationToken) {
        loop {
            if self.waiting.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let (projections, tenants, digests) = self.wanted();
            let read: Result<Vec<(String, String, Option<i64>)>, _> = sqlx::query_as(
                "SELECT k.p, k.t, CASE WHEN tp.tenant = k.t THEN tp.position END \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(p, t, d) \
                 LEFT JOIN LATERAL analytics.token_position(k.p, k.d) tp ON true",
            )
            .bind(&projections)
            .bind(&tenants)
            .bind(&digests)
            .fetch_all(&pool)
            .await;
            match read {
                Ok(rows) => {
                    let seen: HashMap<Key, Option<i64>> =
                        rows.into_iter().map(|(p, t, pos)| ((p, t), pos)).collect();
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

    /// Waits until `projection` has folded `tenant`'s log up to `min`, or `deadline`; `digest`
    /// is the SHA-256 of the request's token for `tenant`.
    pub async fn wait_for(
        &self,
        projection: &str,
        (tenant, digest): (&str, &str),
        min: i64,
        deadline: Instant,
    ) -> Result<(), NotYet> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(NotYet::Busy);
        };
        let key: Key = (projection.to_owned(), tenant.to_owned());
        let mut seen = self.latest.subscribe();
        let _leave = Waiter::enter(self, &key, digest);
        self.wake.notify_one();
        loop {
            // `None`: not read yet; `Some(None)`: the projection is not installed.
            let at = seen.borrow_and_update().get(&key).copied();
            match at {
                Some(Some(p)) if p >= min => return Ok(()),
                Some(None) => return Err(NotYet::Deadline(0)),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, seen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(NotYet::Deadline(at.flatten().unwrap_or(0))),
            }
        }
    }
}

/// One request waiting: counted, and its pair wanted, until it leaves.
struct Waiter<'a> {
    positions: &'a Positions,
    key: &'a Key,
}

impl<'a> Waiter<'a> {
    fn enter(positions: &'a Positions, key: &'a Key, digest: &str) -> Self {
        let mut wanted = positions.wanted.lock().expect("waiters poisoned");
        let entry = wanted
            .entry(key.clone())
            .or_insert_with(|| (0, digest.to_owned()));
        entry.0 += 1;
        positions.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter { positions, key }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut wanted = self.positions.wanted.lock().expect("waiters poisoned");
        if let Some((n, _)) = wanted.get_mut(self.key) {
            *n -= 1;
            if *n == 0 {
                wanted.remove(self.key);
            }
        }
        self.positions.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
