//! Read-through: a user's summary from its cache entry, or from the table on a miss, which
//! then fills the entry.

use sqlx::PgPool;

use super::reads::{UserRow, user_as_of};
use crate::cache::{CacheEntries, Cached};
use crate::log::LogError;

/// A read and where it was answered from.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRead {
    /// The summary, if the store knows the user.
    pub row: Option<UserRow>,
    /// Whether the cache answered (no database query was made).
    pub from_cache: bool,
}

/// One user's summary through the cache. A cache that cannot be reached or holds an entry
/// that does not parse counts as a miss: the table answers.
pub async fn user_through_cache(
    pool: &PgPool,
    cache: &CacheEntries,
    tenant: &str,
    user_id: &str,
) -> Result<CachedRead, LogError> {
    let labels = [("cache", cache.projection().to_owned())];
    match cache.get(tenant, user_id).await {
        Ok(Some(value)) => match serde_json::from_value::<UserRow>(value) {
            Ok(row) if row.tenant == tenant && row.user_id == user_id => {
                metrics::counter!("activity_cache_hits_total", &labels).increment(1);
                return Ok(CachedRead {
                    row: Some(row),
                    from_cache: true,
                });
            }
            Ok(_) | Err(_) => {
                tracing::warn!(tenant, user_id, "a cache entry did not match its key")
            }
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cache unavailable; reading the table"),
    }
    metrics::counter!("activity_cache_misses_total", &labels).increment(1);
    let read = user_as_of(pool, tenant, user_id).await?;
    if let Some((r, as_of)) = &read {
        let row = serde_json::to_value(r).expect("rows serialise");
        let fill = Cached::Row { row, as_of: *as_of };
        if let Err(e) = cache.write(tenant, user_id, &fill).await {
            tracing::warn!(error = %e, "could not fill a cache entry");
        }
    }
    Ok(CachedRead {
        row: read.map(|(r, _)| r),
        from_cache: false,
    })
}
