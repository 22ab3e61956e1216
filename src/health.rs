//! A role's heartbeat: the last time its loop showed it was working, for `/livez`; and what
//! it cannot do right now (a stream or bucket it cannot use), for `/readyz` and `/livez`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When a role last went round its loop, and its troubles; cloned between the role and the
/// health checks.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    last: Arc<AtomicI64>,
    /// What the role cannot do, by what it concerns (`stream`, `cache user_summary`): why,
    /// and since when (milliseconds).
    troubles: Arc<Mutex<BTreeMap<String, (String, i64)>>>,
}

impl Heartbeat {
    /// A heartbeat that has beaten now.
    pub fn new() -> Self {
        let h = Heartbeat::default();
        h.beat();
        h
    }

    /// The role is working.
    pub fn beat(&self) {
        self.last.store(now_millis(), Ordering::Relaxed);
    }

    /// How long ago the role last beat.
    pub fn age(&self) -> Duration {
        let last = self.last.load(Ordering::Relaxed);
        Duration::from_millis(now_millis().saturating_sub(last).max(0) as u64)
    }

    /// The role cannot do what `about` concerns, because of `why` (kept since the first
    /// report, until [`Heartbeat::mended`]).
    pub fn trouble(&self, about: &str, why: impl Into<String>) {
        let mut troubles = self.troubles.lock().expect("troubles");
        let since = troubles
            .get(about)
            .map_or_else(now_millis, |(_, since)| *since);
        troubles.insert(about.to_owned(), (why.into(), since));
    }

    /// What `about` concerns works again.
    pub fn mended(&self, about: &str) {
        self.troubles.lock().expect("troubles").remove(about);
    }

    /// The oldest trouble, and how long it has lasted.
    pub fn worst_trouble(&self) -> Option<(String, Duration)> {
        let now = now_millis();
        self.troubles
            .lock()
            .expect("troubles")
            .iter()
            .min_by_key(|(_, (_, since))| *since)
            .map(|(about, (why, since))| {
                let age = Duration::from_millis(now.saturating_sub(*since).max(0) as u64);
                (format!("{about}: {why}"), age)
            })
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trouble_keeps_its_start_until_mended() {
        let h = Heartbeat::new();
        assert!(h.worst_trouble().is_none());
        h.trouble("stream", "gone");
        std::thread::sleep(Duration::from_millis(20));
        h.trouble("stream", "still gone");
        h.beat();
        let (why, age) = h.worst_trouble().unwrap();
        assert_eq!(why, "stream: still gone");
        assert!(age >= Duration::from_millis(20), "{age:?}");
        h.mended("stream");
        assert!(h.worst_trouble().is_none());
    }
}
