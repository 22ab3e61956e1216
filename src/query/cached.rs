//! The one read-through: a user's summary from its cache entry, or from the table on a miss,
//! which then fills the entry. An entry is served only to a session the database would let
//! read that tenant (the same rule as row-level security, asked before the entry is used),
//! of the projection's current epoch, at least as new as asked. The CLI and the HTTP API both
//! read through here.

use std::time::Duration;

use sqlx::PgPool;

use super::reads::user_at;
use super::rows::UserRow;
use crate::cache::{CacheEntries, Cached};
use crate::db::{DbError, db};

/// The longest a read waits for the cache before it reads the table instead.
pub const CACHE_WAIT: Duration = Duration::from_millis(50);

/// A read and where it was answered from.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRead {
    /// The summary, if the store knows the user.
    pub row: Option<UserRow>,
    /// Whether the cache answered (the table was not read).
    pub from_cache: bool,
}

/// Whether this pool's login may read `tenant`, by the rule row-level security applies.
pub async fn may_read(pool: &PgPool, tenant: &str) -> Result<bool, DbError> {
    db(
        sqlx::query_scalar("SELECT analytics.may_read($1)")
            .bind(tenant)
            .fetch_one(pool)
            .await,
        "check the reader's tenant",
    )
}

/// Whether this pool's login may read `tenant`, and the current epoch of `projection`: an
/// entry of another epoch was read from tables a rebuild has since replaced.
async fn check(pool: &PgPool, tenant: &str, projection: &str) -> Result<(bool, i64), DbError> {
    let (allowed, epoch): (bool, Option<i32>) = db(
        sqlx::query_as("SELECT analytics.may_read($1), analytics.projection_epoch($2)")
            .bind(tenant)
            .bind(projection)
            .fetch_one(pool)
            .await,
        "check the reader's tenant",
    )?;
    Ok((allowed, epoch.map_or(-1, i64::from)))
}

/// The entry of `tenant`'s `user`, waiting at most [`CACHE_WAIT`]: a cache that cannot be
/// reached or answers late is no entry (the table answers).
pub async fn peek(cache: &CacheEntries, tenant: &str, user: &str) -> Option<Cached> {
    match tokio::time::timeout(CACHE_WAIT, cache.peek(tenant, user)).await {
        Ok(Ok(entry)) => entry,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cache unavailable; reading the table");
            None
        }
        Err(_) => None,
    }
}

/// What `entry` may serve (see [`servable`]), counted as a hit or a miss of `cache`.
pub fn serve(
    cache: &CacheEntries,
    entry: Option<Cached>,
    epoch: i64,
    min: Option<i64>,
    tenant: &str,
    user: &str,
) -> Option<(UserRow, i64)> {
    let labels = [("cache", cache.projection().to_owned())];
    let served = servable(entry, epoch, min, tenant, user);
    let counter = if served.is_some() {
        "activity_cache_hits_total"
    } else {
        "activity_cache_misses_total"
    };
    metrics::counter!(counter, &labels).increment(1);
    served
}

/// One user's summary through the cache, for a pool whose login row-level security binds
/// (the CLI's). A login not bound to `tenant` never gets the entry: it reads the table,
/// where row-level security shows it nothing.
pub async fn user_through_cache(
    pool: &PgPool,
    cache: &CacheEntries,
    tenant: &str,
    user_id: &str,
) -> Result<CachedRead, DbError> {
    // Both questions at once: the check costs no more time than the cache read.
    let (checked, entry) = tokio::join!(
        check(pool, tenant, cache.projection()),
        peek(cache, tenant, user_id)
    );
    let (allowed, epoch) = checked?;
    let entry = entry.filter(|_| allowed);
    if let Some((row, _)) = serve(cache, entry, epoch, None, tenant, user_id) {
        return Ok(CachedRead {
            row: Some(row),
            from_cache: true,
        });
    }
    let read = user_at(pool, tenant, user_id).await?;
    if let Some((r, as_of, epoch)) = &read {
        fill(cache, tenant, user_id, r, *as_of, *epoch).await;
    }
    Ok(CachedRead {
        row: read.map(|(r, _, _)| r),
        from_cache: false,
    })
}

/// The row a cache entry may serve, and the position it is as of: a row (not a tombstone)
/// of the projection's current `epoch`, at least as of `min` when given, whose tenant and
/// user are the key's. Anything else is a miss (an entry not matching its key is logged).
/// The caller has already held the reader to the tenant rule.
pub fn servable(
    entry: Option<Cached>,
    epoch: i64,
    min: Option<i64>,
    tenant: &str,
    user: &str,
) -> Option<(UserRow, i64)> {
    let Some(Cached::Row {
        row,
        as_of,
        epoch: e,
    }) = entry
    else {
        return None;
    };
    if e != epoch || min.is_some_and(|m| as_of < m) {
        return None;
    }
    match serde_json::from_value::<UserRow>(row) {
        Ok(r) if r.tenant == tenant && r.user_id == user => Some((r, as_of)),
        _ => {
            tracing::warn!(tenant, user, "a cache entry did not match its key");
            None
        }
    }
}

/// Fills a user's entry with `row`, read at projection position `as_of` of `epoch`, unless
/// the entry holds something newer; a cache that cannot be written is logged, not an error.
pub async fn fill(
    cache: &CacheEntries,
    tenant: &str,
    user: &str,
    row: &UserRow,
    as_of: i64,
    epoch: i64,
) {
    let value = Cached::Row {
        row: serde_json::to_value(row).expect("rows serialise"),
        as_of,
        epoch,
    };
    if let Err(e) = cache.write(tenant, user, &value).await {
        tracing::warn!(error = %e, "could not fill a cache entry");
    }
}
