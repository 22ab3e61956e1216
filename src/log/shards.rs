//! How many shards the log has. A tenant's shard is recorded with its first event (FNV-1a
//! of the slug modulo the count then), so the count can grow under a running store: tenants
//! already placed stay, new ones spread over every shard. A shard holding a tenant is never
//! removed.

use sqlx::PgPool;

use crate::db::{DbError, db};

/// Each shard (`shard`) and its largest visible position (`last`; the position before its
/// first when it holds none), one index probe a partition each.
pub const SHARD_LASTS: &str = "\
SELECT s.shard, coalesce((SELECT max(e.position) FROM events e
    WHERE e.position > s.shard::bigint << 48 AND e.position < (s.shard::bigint + 1) << 48),
    s.shard::bigint << 48) AS last
FROM log_shards s";

/// The shards a new store gets unless told otherwise.
pub const DEFAULT_SHARDS: i32 = 4;

/// The log's shard count.
pub async fn count(pool: &PgPool) -> Result<i32, DbError> {
    let n: i64 = db(
        sqlx::query_scalar("SELECT count(*) FROM log_shards")
            .fetch_one(pool)
            .await,
        "count the log's shards",
    )?;
    Ok(n as i32)
}

/// Sets the shard count to `n` (1 to 1024). Refused when it would remove a shard that
/// holds a tenant.
pub async fn set(pool: &PgPool, n: i32) -> Result<(), DbError> {
    db(
        sqlx::query("SELECT set_log_shards($1)")
            .bind(n)
            .execute(pool)
            .await,
        "set the log's shard count",
    )
    .map(|_| ())
}

/// At install: `wanted` shards, or [`DEFAULT_SHARDS`] for a store that holds no tenant yet
/// (one that does keeps its count unless `wanted` says otherwise). Returns the count now.
pub async fn install(pool: &PgPool, wanted: Option<i32>) -> Result<i32, DbError> {
    let fresh: bool = db(
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM tenant_heads)")
            .fetch_one(pool)
            .await,
        "check whether the store holds a tenant",
    )?;
    match (wanted, fresh) {
        (Some(n), _) => set(pool, n).await?,
        (None, true) => set(pool, DEFAULT_SHARDS).await?,
        (None, false) => {}
    }
    count(pool).await
}

/// How many tenants each shard holds, by shard.
pub async fn placement(pool: &PgPool) -> Result<Vec<(i32, i64)>, DbError> {
    db(
        sqlx::query_as(
            "SELECT s.shard, count(h.tenant) FROM log_shards s \
             LEFT JOIN tenant_heads h USING (shard) GROUP BY s.shard ORDER BY s.shard",
        )
        .fetch_all(pool)
        .await,
        "read where the tenants are",
    )
}

/// Moves `tenant` to shard `to` (`move_tenant`, migration 0027): its events take the
/// target's next positions, and nothing a client sees changes. The move needs every
/// projection to have folded the tenant and the target shard; until they have, it is tried
/// again every 100 ms, for at most `wait`. Returns how many events moved.
pub async fn move_tenant(
    pool: &PgPool,
    tenant: &str,
    to: i32,
    wait: std::time::Duration,
) -> Result<i64, DbError> {
    let started = std::time::Instant::now();
    loop {
        let moved = sqlx::query_scalar("SELECT move_tenant($1, $2)")
            .bind(tenant)
            .bind(to)
            .fetch_one(pool)
            .await;
        let not_yet = matches!(&moved, Err(e) if e.as_database_error()
            .and_then(|d| d.code()).as_deref() == Some("55000"));
        if !not_yet || started.elapsed() >= wait {
            return db(moved, "move a tenant");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The shard NATS's `partition(n, …)` and the store give `tenant` among `n`: FNV-1a (32
/// bits) of its bytes, modulo `n`. The database computes the same (`fnv1a32`).
pub fn partition(tenant: &str, n: u32) -> u32 {
    fnv1a32(tenant) % n.max(1)
}

/// FNV-1a, 32 bits, of `s`'s UTF-8 bytes.
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // FNV-1a 32 test vectors: "" → 0x811c9dc5, "a" → 0xe40c292c, "foobar" → 0xbf9cf968.
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
        assert!(partition("acme", 4) < 4);
        assert_eq!(partition("acme", 1), 0);
    }
}
