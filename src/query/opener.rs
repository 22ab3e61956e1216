//! The one way a reader opens a projection's cache: the bucket named by the projection's
//! spec (after the store's bucket prefix), sealed with the database's secret. Readers never
//! create a bucket; the projector owns it.

use async_nats::jetstream;
use sqlx::PgPool;

use crate::cache::{CacheEntries, CacheMac};
use crate::db::DbError;
use crate::project::{Projection, projections};

/// `projection`'s cache entries for reading: `None` when it has no cache or its bucket does
/// not exist yet. A login that may not read the cache's secret gets the error (such readers
/// read the tables).
pub async fn open_cache(
    pool: &PgPool,
    js: &jetstream::Context,
    projection: &Projection,
    bucket_prefix: &str,
) -> Result<Option<CacheEntries>, DbError> {
    let Some(spec) = &projection.cache else {
        return Ok(None);
    };
    let bucket = format!("{bucket_prefix}{}", spec.bucket);
    let mac = CacheMac::load(pool).await?;
    let version = (projection.name.as_str(), projection.version);
    Ok(CacheEntries::open_for_reading(js, version, &bucket, mac).await)
}

/// The `user_summary` cache, if it can be read (see [`open_cache`]); `None` otherwise.
pub async fn summary_cache(
    pool: &PgPool,
    js: &jetstream::Context,
    bucket_prefix: &str,
) -> Option<CacheEntries> {
    let projection = projections()
        .ok()?
        .into_iter()
        .find(|p| p.name == "user_summary")?;
    open_cache(pool, js, &projection, bucket_prefix)
        .await
        .ok()
        .flatten()
}
