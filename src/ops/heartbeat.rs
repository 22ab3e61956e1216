//! A role's heartbeat: the last time its loop showed it was working, for `/livez`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// When a role last went round its loop; cloned between the role and the health checks.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicI64>);

impl Heartbeat {
    /// A heartbeat that has beaten now.
    pub fn new() -> Self {
        let h = Heartbeat::default();
        h.beat();
        h
    }

    /// The role is working.
    pub fn beat(&self) {
        self.0.store(now_millis(), Ordering::Relaxed);
    }

    /// How long ago the role last beat.
    pub fn age(&self) -> Duration {
        let last = self.0.load(Ordering::Relaxed);
        Duration::from_millis(now_millis().saturating_sub(last).max(0) as u64)
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
