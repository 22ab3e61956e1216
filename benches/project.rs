//! Projection speed, in one run on real servers (PostgreSQL with fsync on):
//! 1. folding N logged events (default 1,000,000) from scratch into the three read models, in
//!    the projector's windows, beside the limit: the same work as one set-based SQL pass per
//!    read model over the same log;
//! 2. live lag, from an append to its row in `analytics.activity_feed`, p50 and p99, while
//!    commands are published at a steady rate to `activity-store run --ingest --project`.
//!
//! `cargo bench --bench project` or `cargo bench --bench project -- 100000`;
//! `LAG_RATE` (commands/s, default 8,000: half the ingest bench's end-to-end rate) and
//! `LAG_SECONDS` (default 20) shape the live part.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Instant;

use activity_store::project::{
    CacheConfig, ProjectConfig, Projector, fold_next, projections, reinstall,
};
use activity_store::query;
use async_nats::jetstream;
use common::{bar, live_lag, percentile, seed_log};
use sqlx::PgPool;
use support::{TestDb, nats_url, unique_name};

async fn last_position(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The projector's way: every read model, in windows of 10,000 positions, from scratch.
async fn fold_in_windows(pool: &PgPool) -> f64 {
    let last = last_position(pool).await;
    let all = projections().unwrap();
    let t = Instant::now();
    Projector::start(pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let shards = activity_store::log::shards::count(pool).await.unwrap();
    for p in &all {
        let pb = bar(last as usize, &format!("fold {}", p.name));
        // Shard by shard (the seeded log is all in shard 0, as before shards).
        for shard in 0..shards {
            loop {
                let window = ProjectConfig::default().window;
                let outcome = fold_next(pool, p, shard, window, None).await.unwrap();
                pb.set_position((outcome.upto - activity_store::project::shard_base(shard)) as u64);
                if outcome.caught_up() {
                    break;
                }
            }
        }
        pb.finish_and_clear();
    }
    t.elapsed().as_secs_f64()
}

/// The limit: each read model filled by set-based statements over the whole log at once.
const LIMIT_SQL: [&str; 4] = [
    "INSERT INTO analytics.activity_feed \
         (tenant, user_id, event_id, activity_type, occurred_at, metadata, position) \
     SELECT tenant, user_id, event_id, activity_type, occurred_at, data, position \
     FROM events WHERE event_type = 'activity_recorded'",
    "INSERT INTO projection_state.daily_activity_users (tenant, day, activity_type, user_id) \
     SELECT DISTINCT tenant, (occurred_at AT TIME ZONE 'UTC')::date, activity_type, user_id \
     FROM events WHERE event_type = 'activity_recorded'",
    "INSERT INTO analytics.daily_activity (tenant, day, activity_type, events, users) \
     SELECT tenant, (occurred_at AT TIME ZONE 'UTC')::date, activity_type, count(*), \
            count(DISTINCT user_id) \
     FROM events WHERE event_type = 'activity_recorded' GROUP BY 1, 2, 3",
    "INSERT INTO analytics.user_summary (tenant, user_id, name, email, first_seen, last_seen, \
         events, last_activity_type, last_activity_position, position) \
     SELECT r.tenant, r.user_id, r.data->>'name', r.data->>'email', a.first_seen, l.occurred_at, \
            coalesce(a.n, 0), l.activity_type, l.position, greatest(r.position, a.max_position) \
     FROM events r \
     LEFT JOIN (SELECT tenant, user_id, min(occurred_at) AS first_seen, count(*) AS n, \
                       max(position) AS max_position \
                FROM events WHERE event_type = 'activity_recorded' GROUP BY 1, 2) a \
            USING (tenant, user_id) \
     LEFT JOIN (SELECT DISTINCT ON (tenant, user_id) tenant, user_id, occurred_at, position, \
                       activity_type \
                FROM events WHERE event_type = 'activity_recorded' \
                ORDER BY tenant, user_id, occurred_at DESC, position DESC) l \
            USING (tenant, user_id) \
     WHERE r.event_type = 'user_registered'",
];

async fn sql_limit(pool: &PgPool) -> f64 {
    for p in projections().unwrap() {
        reinstall(pool, &p).await.unwrap();
    }
    let pb = bar(LIMIT_SQL.len(), "limit: set-based SQL");
    let t = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    for sql in LIMIT_SQL {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
        pb.inc(1);
    }
    tx.commit().await.unwrap();
    pb.finish_and_clear();
    t.elapsed().as_secs_f64()
}

/// Every read model's rows, summarised, to check both ways made the same views.
async fn digest(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for t in [
        "analytics.activity_feed",
        "analytics.daily_activity",
        "analytics.user_summary",
    ] {
        let sql = format!(
            "SELECT count(*)::text || ' ' || coalesce(sum(hashtext(x::text)::bigint), 0)::text FROM {t} x"
        );
        out.push(
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap(),
        );
    }
    out
}

/// `query user` latency, p50 and p99: from the table, then through the cache (a first pass
/// of misses fills it, the second pass is all hits).
async fn read_latency(pool: &PgPool) -> [(String, f64, f64); 4] {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut projector = Projector::start(pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let config = CacheConfig {
        bucket_prefix: unique_name("bench"),
        ..Default::default()
    };
    projector.attach_caches(&js, &config).await.unwrap();
    let cache = projector.cache("user_summary").unwrap();
    let users: Vec<(String, String)> = (0..2_000)
        .map(|j| (format!("t{}", j % 10), format!("u{j}")))
        .collect();
    let mut table = Vec::new();
    let mut hits = Vec::new();
    let pb = bar(users.len() * 3, "read latency");
    for (t, u) in &users {
        let started = Instant::now();
        query::user(pool, t, u).await.unwrap().unwrap();
        table.push(started.elapsed().as_secs_f64());
        pb.inc(1);
    }
    for pass in 0..2 {
        for (t, u) in &users {
            let started = Instant::now();
            let read = query::user_through_cache(pool, cache, t, u).await.unwrap();
            if pass == 1 {
                assert!(read.from_cache);
                hits.push(started.elapsed().as_secs_f64());
            }
            pb.inc(1);
        }
    }
    // Where a hit's time goes: the tenant check in PostgreSQL and the NATS read, each alone.
    let (mut check, mut kv) = (Vec::new(), Vec::new());
    for (t, u) in &users {
        let started = Instant::now();
        assert!(query::may_read(pool, t).await.unwrap());
        check.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        cache.get(t, u).await.unwrap().unwrap();
        kv.push(started.elapsed().as_secs_f64());
    }
    pb.finish_and_clear();
    let summary = |label: &str, mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (label.to_owned(), percentile(&v, 0.5), percentile(&v, 0.99))
    };
    [
        summary("from the table (as activity_reader)", table),
        summary("from the cache (hits)", hits),
        summary("  of which the tenant check alone", check),
        summary("  of which the NATS read alone", kv),
    ]
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let n = common::count_arg(1_000_000);
    let env = common::env_or;
    let (rate, seconds) = (env("LAG_RATE", 8_000.0), env("LAG_SECONDS", 20.0));

    println!("project bench: PostgreSQL on loopback (fsync on), 10,000 users, 10 tenants");
    let db = seed_log(n).await;
    let logged = last_position(&db.pool).await as f64;
    let windowed = fold_in_windows(&db.pool).await;
    let folded = digest(&db.pool).await;
    let limit = sql_limit(&db.pool).await;
    assert_eq!(
        digest(&db.pool).await,
        folded,
        "both ways must build the same views"
    );
    println!(
        "{:>9}  {:<52} {:>10}  {:>8}",
        "events", "variant", "events/s", "÷ limit"
    );
    for (label, secs) in [
        ("projector: 3 read models, windows of 10,000", windowed),
        ("limit: set-based SQL over the whole log, per model", limit),
    ] {
        println!(
            "{:>9}  {label:<52} {:>10.0}  {:>7.2}x",
            logged as i64,
            logged / secs,
            limit / secs
        );
    }

    for (label, p50, p99) in read_latency(&db.pool).await {
        println!(
            "query user {label:<36} p50 {:.2} ms, p99 {:.2} ms",
            p50 * 1000.0,
            p99 * 1000.0
        );
    }

    let tenants = ["acme".to_owned()];
    let (lags, achieved) = live_lag(TestDb::migrated().await, rate, seconds, &tenants).await;
    println!(
        "live lag (append → visible in analytics.activity_feed) at {achieved:.0} commands/s \
         for {seconds} s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} events)",
        percentile(&lags, 0.50) * 1000.0,
        percentile(&lags, 0.99) * 1000.0,
        lags.last().copied().unwrap_or(f64::NAN) * 1000.0,
        lags.len()
    );
}
