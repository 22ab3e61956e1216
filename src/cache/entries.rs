//! Cache entries of a projection's rows in its KV bucket, keyed
//! `<projection>.v<version>.<tenant>.<user>`, each value the row as JSON with the log
//! position it reflects.
//!
//! Every entry carries `as_of`: the projection's checkpoint when its content was read, and
//! every write is a compare-and-set on the KV revision that never lowers it, so an entry is
//! never wrong:
//! - the projector, inside each fold's transaction, first writes a tombstone (no row) as of
//!   the window's end on every key the fold changes; after the commit it writes the new rows
//!   as of the same position. A crash in between leaves tombstones: missing entries, never
//!   stale ones. A projector that stalled after its commit cannot overwrite what a later fold
//!   wrote;
//! - a reader that missed reads the row and the checkpoint in one statement and fills the
//!   entry as of that checkpoint: a fill that read the table before a fold committed is
//!   older than the fold's tombstone and is refused, and a fill after the commit replaces a
//!   tombstone a crashed projector left.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde_json::Value;

use super::bucket::{BucketError, ensure_bucket};
use super::cached::{Cached, key_token, user_key};
use super::mac::{CacheMac, Opened};

/// What can go wrong with cache entries.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The bucket could not be set up.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// NATS refused or could not be reached.
    #[error("cache bucket {bucket}: {message}")]
    Nats {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
}

/// One bucket's entries for one projection version.
#[derive(Clone)]
pub struct CacheEntries {
    kv: kv::Store,
    js: jetstream::Context,
    bucket: String,
    projection: String,
    version: i32,
    /// Seals every value written and checks every value read.
    mac: CacheMac,
    /// The TTL it was opened with by its owner (the projector); readers have none and never
    /// create the bucket.
    ttl: Option<Duration>,
}

impl std::fmt::Debug for CacheEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntries")
            .field("bucket", &self.bucket)
            .field("projection", &self.projection)
            .field("version", &self.version)
            .finish()
    }
}

impl CacheEntries {
    /// Opens (creating if missing) the entries of `projection` at `version` in `bucket`, with
    /// `ttl` as its `max_age`.
    pub async fn open(
        js: &jetstream::Context,
        (projection, version): (&str, i32),
        bucket: &str,
        ttl: Duration,
        mac: CacheMac,
    ) -> Result<CacheEntries, CacheError> {
        let kv = ensure_bucket(js, bucket, ttl).await?;
        Ok(CacheEntries {
            kv,
            js: js.clone(),
            bucket: bucket.to_owned(),
            projection: projection.to_owned(),
            version,
            mac,
            ttl: Some(ttl),
        })
    }

    /// Opens the entries of `projection` at `version` in `bucket` as a reader: never creates
    /// the bucket or changes its TTL (the projector owns both). `None` if the bucket does not
    /// exist yet.
    pub async fn open_for_reading(
        js: &jetstream::Context,
        (projection, version): (&str, i32),
        bucket: &str,
        mac: CacheMac,
    ) -> Option<CacheEntries> {
        let kv = js.get_key_value(bucket).await.ok()?;
        Some(CacheEntries {
            kv,
            js: js.clone(),
            bucket: bucket.to_owned(),
            projection: projection.to_owned(),
            version,
            mac,
            ttl: None,
        })
    }

    /// Creates the bucket again if it was deleted (its owner only; a reader's entries
    /// cannot). The handle keeps working: a bucket is found by its name.
    pub async fn restore(&self) -> Result<(), CacheError> {
        match self.ttl {
            Some(ttl) => ensure_bucket(&self.js, &self.bucket, ttl)
                .await
                .map(|_| ())
                .map_err(CacheError::from),
            None => Err(self.nats("restore the bucket", "only its projector may create it")),
        }
    }

    /// The bucket it reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The projection whose rows it keeps.
    pub fn projection(&self) -> &str {
        &self.projection
    }

    fn nats(&self, what: &str, e: impl std::fmt::Display) -> CacheError {
        CacheError::Nats {
            bucket: self.bucket.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// The key of one user's entry: `<projection>.v<version>.<tenant>.<user key>`, where the
    /// user key is a digest, so no key (nor the tombstone an erasure leaves) names a user.
    pub fn key(&self, tenant: &str, user: &str) -> String {
        self.key_at(self.version, tenant, user)
    }

    fn key_at(&self, version: i32, tenant: &str, user: &str) -> String {
        format!(
            "{}.v{version}.{}.{}",
            self.projection,
            key_token(tenant),
            user_key(user)
        )
    }

    async fn current(&self, key: &str) -> Result<Option<(Cached, u64)>, CacheError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| self.nats("read an entry", e))?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => Some((
                match self.mac.open(key, &e.value) {
                    Opened::Sealed(cached) => cached,
                    // Never served; any write may replace it.
                    Opened::Forged => {
                        metrics::counter!("activity_cache_forged_total").increment(1);
                        tracing::warn!(bucket = %self.bucket, "a cache entry the store did not write was refused");
                        Cached::Tombstone {
                            as_of: -1,
                            epoch: -1,
                        }
                    }
                },
                e.revision,
            )),
            _ => None,
        }))
    }

    /// The row cached for a user, if there is one (a tombstone is no row), of any epoch.
    pub async fn get(&self, tenant: &str, user: &str) -> Result<Option<Value>, CacheError> {
        Ok(match self.current(&self.key(tenant, user)).await? {
            Some((Cached::Row { row, .. }, _)) => Some(row),
            _ => None,
        })
    }

    /// The row cached for a user, if there is one of the projection's `epoch`: an entry of
    /// another epoch was read from tables since replaced.
    pub async fn get_at(
        &self,
        tenant: &str,
        user: &str,
        epoch: i64,
    ) -> Result<Option<Value>, CacheError> {
        Ok(match self.current(&self.key(tenant, user)).await? {
            Some((Cached::Row { row, epoch: e, .. }, _)) if e == epoch => Some(row),
            _ => None,
        })
    }

    /// What the entry holds, tombstones included.
    pub async fn peek(&self, tenant: &str, user: &str) -> Result<Option<Cached>, CacheError> {
        Ok(self.current(&self.key(tenant, user)).await?.map(|(c, _)| c))
    }

    /// Writes `value` unless the entry holds something as new or newer (compare-and-set on
    /// the KV revision). Returns whether it was written.
    pub async fn write(
        &self,
        tenant: &str,
        user: &str,
        value: &Cached,
    ) -> Result<bool, CacheError> {
        let key = self.key(tenant, user);
        loop {
            let written = match self.current(&key).await? {
                Some((held, _)) if !value.replaces(&held) => return Ok(false),
                Some((_, revision)) => self
                    .kv
                    .update(&key, self.mac.seal(&key, value), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => self
                    .kv
                    .create(&key, self.mac.seal(&key, value))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(()) => return Ok(true),
                // Someone wrote in between: look again.
                Err(true) => continue,
                Err(false) => return Err(self.nats("write an entry", "refused")),
            }
        }
    }

    /// Purges one user's entry and its history (an erasure), and the user's entries of
    /// every earlier version of the projection, then leaves `tombstone` if given, so no
    /// fill read before the erasure can write the entry again. Returns how many entries
    /// there were.
    pub async fn purge(
        &self,
        tenant: &str,
        user: &str,
        tombstone: Option<&Cached>,
    ) -> Result<i64, CacheError> {
        let mut held = 0;
        for version in 1..=self.version {
            let key = self.key_at(version, tenant, user);
            let entry = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| self.nats("read an entry", e))?;
            if entry.is_some() {
                held += 1;
                self.kv
                    .purge(&key)
                    .await
                    .map_err(|e| self.nats("purge an entry", e))?;
            }
        }
        if let Some(t) = tombstone {
            self.kv
                .put(
                    self.key(tenant, user),
                    self.mac.seal(&self.key(tenant, user), t),
                )
                .await
                .map_err(|e| self.nats("leave a tombstone", e))?;
        }
        Ok(held)
    }

    /// Removes every entry of the bucket (every projection version): before a rebuild.
    pub async fn clear(&self) -> Result<(), CacheError> {
        let mut stream = self
            .js
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| self.nats("open the bucket's stream", e))?;
        stream
            .purge()
            .await
            .map_err(|e| self.nats("purge the bucket", e))?;
        let _ = stream.info().await;
        Ok(())
    }
}
