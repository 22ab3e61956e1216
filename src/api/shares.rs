//! Fair shares between tenants: each tenant may hold at most its share of what all tenants
//! share (database sessions, requests waiting for a position, command long-polls). A
//! request over its tenant's share gets 429 with `Retry-After`; other tenants keep theirs.
//!
//! Database sessions are taken before the token is checked, so they are shared by what the
//! token is known to open: a token the database verified in the last hour counts against
//! its tenant; any other (unknown, or not seen yet) against one small pool of its own, so a
//! flood of made-up tokens cannot take any tenant's share. This memory only counts; every
//! request's token is still checked by the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// How long a verified token counts against its tenant without being verified again: long,
/// so a tenant whose token was seen lately never queues with made-up tokens.
const REMEMBERED: Duration = Duration::from_secs(3_600);
/// Most tokens remembered; past that, the oldest are forgotten.
const MAX_REMEMBERED: usize = 10_000;

/// One kind of shared capacity, held per key up to a limit.
#[derive(Debug)]
pub struct Shares {
    what: &'static str,
    limit: usize,
    /// How long a request may wait for one of its key's shares before its 429.
    wait: Duration,
    held: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A share held; given back when dropped.
pub type Share = OwnedSemaphorePermit;

impl Shares {
    /// `limit` at once per key, of `what` (named in the 429), waited for at most `wait`.
    pub fn new(what: &'static str, limit: usize, wait: Duration) -> Arc<Shares> {
        Arc::new(Shares {
            what,
            limit: limit.max(1),
            wait,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one share for `key`, waiting for one of its own at most the set time; 429 if
    /// it holds all of them that long.
    pub async fn take(&self, key: &str) -> Result<Share, ApiError> {
        let semaphore = self
            .held
            .lock()
            .expect("shares")
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        let taken = match semaphore.clone().try_acquire_owned() {
            Ok(share) => Some(share),
            Err(_) if self.wait.is_zero() => None,
            Err(_) => tokio::time::timeout(self.wait, semaphore.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        taken.ok_or_else(|| {
            metrics::counter!("activity_http_share_refusals_total", "share" => self.what)
                .increment(1);
            ApiError::TooMany(format!(
                "this tenant already has {} {} at once, its share; retry shortly",
                self.limit, self.what
            ))
        })
    }
}

/// The tenants verified tokens opened lately, by digest.
#[derive(Debug, Default)]
pub struct Verified(Mutex<HashMap<String, (String, Instant)>>);

impl Verified {
    /// The key a request with `digest` is counted under: its tenant if the database
    /// verified it lately, else the pool of unverified requests.
    pub fn key(&self, digest: &str) -> String {
        let known = self.0.lock().expect("verified");
        match known.get(digest) {
            Some((tenant, at)) if at.elapsed() < REMEMBERED => format!("tenant {tenant}"),
            _ => UNVERIFIED.to_owned(),
        }
    }

    /// The database verified `digest` as `tenant`'s.
    pub fn remember(&self, digest: &str, tenant: &str) {
        let mut known = self.0.lock().expect("verified");
        if known.len() >= MAX_REMEMBERED {
            known.retain(|_, (_, at)| at.elapsed() < REMEMBERED);
            if known.len() >= MAX_REMEMBERED {
                known.clear();
            }
        }
        known.insert(digest.to_owned(), (tenant.to_owned(), Instant::now()));
    }
}

/// The key of requests whose token is not known to open a tenant.
pub const UNVERIFIED: &str = "unverified";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_holds_at_most_its_limit_and_gets_shares_back() {
        let s = Shares::new("reads", 2, Duration::from_millis(50));
        let a = s.take("acme").await.unwrap();
        let _b = s.take("acme").await.unwrap();
        assert!(matches!(s.take("acme").await, Err(ApiError::TooMany(_))));
        let _other = s
            .take("globex")
            .await
            .expect("another tenant keeps its share");
        drop(a);
        let _again = s.take("acme").await.expect("a share given back");
    }

    #[tokio::test]
    async fn a_request_waits_for_its_tenants_share_to_come_back() {
        let s = Shares::new("reads", 1, Duration::from_secs(5));
        let held = s.take("acme").await.unwrap();
        let later = tokio::spawn({
            let s = s.clone();
            async move { s.take("acme").await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(later.await.unwrap());
    }

    #[test]
    fn only_a_verified_token_counts_against_its_tenant() {
        let v = Verified::default();
        assert_eq!(v.key("d1"), UNVERIFIED);
        v.remember("d1", "acme");
        assert_eq!(v.key("d1"), "tenant acme");
        assert_eq!(v.key("d2"), UNVERIFIED);
    }
}
