//! What evolving data costs, in one run on a real PostgreSQL:
//! 1. reading N `user_registered` payloads (default 200,000) in today's shape: stored in
//!    version 1 and upcast by `events_current`, stored in version 2 (the view's fast path),
//!    and straight from `events` with no view (the floor); 3 rounds each, medians;
//! 2. a data migration: `dead_letter_command_type` over N dead letters written before its
//!    schema migration, 10,000 rows a batch, up and then down, in rows/s.
//!
//! `cargo bench --bench evolution` or `cargo bench --bench evolution -- 50000`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Instant;

use activity_store::log::backfill::{self, Direction};
use common::{count_arg, percentile};
use indicatif::ProgressBar;
use sqlx::PgPool;
use support::TestDb;

const ROUNDS: usize = 3;

async fn seed_registrations(pool: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, data, occurred_at, received_at) \
         SELECT nextval('events_position_seq'), currval('events_position_seq'), gen_random_uuid(), \
                gen_random_uuid(), 't' || (j % 10), 'u' || j, 'user_registered', \
                jsonb_build_object('email', 'u' || j || '@example.com', 'name', 'User ' || j), \
                now(), now() \
         FROM generate_series(1, $1) j",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE events")
        .execute(pool)
        .await
        .unwrap();
}

/// Seconds to read every registration's display name through `source`.
async fn read_all(pool: &PgPool, source: &str, key: &str) -> f64 {
    let sql = format!(
        "SELECT sum(length(data->>'{key}')) FROM {source} WHERE event_type = 'user_registered'"
    );
    let t = Instant::now();
    let total: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(total.unwrap_or(0) > 0, "{source} read no names");
    t.elapsed().as_secs_f64()
}

async fn to_version_2(pool: &PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "SET session_replication_role = replica; \
         UPDATE events SET schema_version = 2, \
           data = (data - 'name') || jsonb_build_object('display_name', data->'name') \
         WHERE event_type = 'user_registered'; \
         RESET session_replication_role",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE events")
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn median_rate(pool: &PgPool, n: i64, source: &str, key: &str) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        rates.push(n as f64 / read_all(pool, source, key).await);
    }
    rates.sort_by(f64::total_cmp);
    percentile(&rates, 0.5)
}

async fn upcasting(n: i64) {
    let db = TestDb::migrated().await;
    // This month's partition, which the registrations fall in.
    activity_store::log::EventLog::open(db.pool.clone())
        .await
        .unwrap();
    let pb = ProgressBar::new_spinner().with_message(format!("seeding {n} registrations"));
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    seed_registrations(&db.pool, n).await;
    pb.set_message("reading them");
    let upcast = median_rate(&db.pool, n, "events_current", "display_name").await;
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM event_upcast_failures")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(failures, 0);
    to_version_2(&db.pool).await;
    let current = median_rate(&db.pool, n, "events_current", "display_name").await;
    let raw = median_rate(&db.pool, n, "events", "display_name").await;
    pb.finish_and_clear();
    println!("reading {n} registrations' display names (median of {ROUNDS}):");
    println!("  stored in version 1, upcast by events_current  {upcast:>12.0} rows/s");
    println!("  stored in version 2, through events_current     {current:>12.0} rows/s");
    println!("  stored in version 2, straight from events       {raw:>12.0} rows/s");
    println!(
        "  the view's fast path costs {:.1}% against the table; upcasting {:.1}%",
        (1.0 - current / raw) * 100.0,
        (1.0 - upcast / raw) * 100.0
    );
}

async fn data_migration(n: i64) {
    let db = TestDb::migrated().await;
    // The dead letters are written before migration 0031, as an upgraded store has them.
    let applied = activity_store::log::migrate::status(&db.pool)
        .await
        .unwrap();
    let newer = applied.iter().filter(|m| m.version >= 31).count();
    activity_store::log::migrate::down(&db.pool, newer)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (reason, message, raw, raw_length, raw_sha256, received_at) \
         SELECT 'unknown_user', 'm', r, length(r), sha256(r), now() FROM ( \
           SELECT convert_to('{\"type\": \"record_activity\", \"tenant\": \"acme\", \"n\": ' || i || '}', 'UTF8') AS r \
           FROM generate_series(1, $1) i) s",
    )
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
    activity_store::log::migrate::up(&db.pool).await.unwrap();
    for direction in [Direction::Up, Direction::Down] {
        let pb = common::bar(n as usize, &format!("data migration {direction:?}"));
        let t = Instant::now();
        let ran = backfill::run(
            &db.pool,
            "dead_letter_command_type",
            direction,
            backfill::MAX_BATCH_ROWS,
            &mut |done, _| pb.set_position(done as u64),
        )
        .await
        .unwrap();
        pb.finish_and_clear();
        let seconds = t.elapsed().as_secs_f64();
        println!(
            "data migration {direction:?}: {} rows in {} batches, {:.2} s, {:.0} rows/s",
            ran.rows,
            ran.batches,
            seconds,
            ran.rows as f64 / seconds
        );
    }
}

#[tokio::main]
async fn main() {
    let n = count_arg(200_000);
    upcasting(n).await;
    data_migration(n / 2).await;
}
