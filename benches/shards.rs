//! The sharded log, in one run on real servers (PostgreSQL with fsync on, nats-server with
//! file storage), at S = 1, 2 and 4 shards, over 8 tenants (two a shard at S = 4):
//! 1. a drain: N commands (default 200,000) published before the ingestor starts, timed from
//!    its start to the commit of the last, beside one same-schema COPY of the same rows;
//! 2. a fold: the same log folded from scratch into the three read models by the projector
//!    (each projection's shards at once);
//! 3. at S = 4: 10,000 commands end to end (publish → commit), and the live lag at 80% of the
//!    drain rate (append → visible in `analytics.activity_feed`).
//!
//! `cargo bench --bench shards` or `cargo bench --bench shards -- 50000`; `LAG_SECONDS`
//! (default 10) sets the live part's length.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use activity_store::log::shards::partition;
use activity_store::project::{ProjectConfig, Projector};
use async_nats::jetstream;
use common::{
    Cmd, bar, commands_over, copy_ceiling, count_arg, create_stream, env_or, live_lag, percentile,
    publish, ready_store, stop,
};
use indicatif::ProgressBar;
use support::{TestDb, nats_url, unique_name};

/// Two slugs for each of 4 shards: at S = 2, four a shard; at S = 1, all on one.
fn tenants() -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..4 {
        out.extend(
            (0..)
                .map(|i| format!("tenant-{i}"))
                .filter(|t| partition(t, 4) == s)
                .take(2),
        );
    }
    out
}

/// Waits until the stream's checkpoint reaches `n`, showing progress; the time it took.
async fn until_committed(db: &TestDb, stream: &str, n: i64, pb: &ProgressBar) -> Duration {
    let t = Instant::now();
    loop {
        let seq = common::committed(db, stream).await.unwrap_or(0);
        pb.set_position(seq as u64);
        if seq >= n {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Run {
    shards: i32,
    drain: f64,
    fold: f64,
    db: TestDb,
}

/// Pre-loads the stream, then times the ingestor draining it, then the projector folding it.
async fn drain_and_fold(js: &jetstream::Context, shards: i32, cmds: &[Cmd]) -> Run {
    let db = TestDb::with_shards(shards).await;
    let prefix = unique_name("shards");
    create_stream(js, &prefix).await;
    let pb = bar(cmds.len(), &format!("S = {shards}: pre-loading the stream"));
    publish(js, &prefix, cmds, &pb, None).await;
    pb.finish_and_clear();
    let n = cmds.len() as i64;
    let pb = bar(cmds.len(), &format!("S = {shards}: drain (committed)"));
    let started = Instant::now();
    let (child, _) = ready_store(&db, &prefix, &["--ingest"]).await;
    until_committed(&db, &prefix.to_uppercase(), n, &pb).await;
    let drain = n as f64 / started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    stop(child).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, n, "every command became one event");
    let pb = ProgressBar::new_spinner().with_message(format!("S = {shards}: fold"));
    pb.enable_steady_tick(Duration::from_millis(200));
    let projector = Projector::start(db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let t = Instant::now();
    projector.catch_up().await.unwrap();
    let fold = n as f64 / t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Run {
        shards,
        drain,
        fold,
        db,
    }
}

/// The drain at S = 4 through 4 ingest partitions (the NATS server's `partition()`
/// mapping): four ingest leads in the one process, each with its own stream and consumer.
async fn drain_partitioned(cmds: &[Cmd]) -> f64 {
    use activity_store::ingest::{IngestConfig, Ingestor, partitions};
    let db = TestDb::with_shards(4).await;
    partitions::set(&db.pool, 4).await.unwrap();
    let prefix = unique_name("parts");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let (_nats, url) = support::mapped::mapped_nats(&dir, &format!("{prefix}.commands"), 4);
    let js = jetstream::new(support::mapped::connect(&url).await);
    let base = IngestConfig {
        stream: prefix.to_uppercase(),
        subjects: format!("{prefix}.commands.*"),
        ..Default::default()
    };
    for p in 0..4 {
        Ingestor::open_stream(&js, &base.partition(p, 4))
            .await
            .unwrap();
    }
    let pb = bar(cmds.len(), "S = 4, P = 4: pre-loading the streams");
    publish(&js, &prefix, cmds, &pb, None).await;
    pb.finish_and_clear();
    let n = cmds.len() as i64;
    let pb = bar(cmds.len(), "S = 4, P = 4: drain (events)");
    let started = Instant::now();
    let (child, _) = common::ready_store_on(&db, &prefix, &["--ingest"], &url).await;
    loop {
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        pb.set_position(events as u64);
        if events >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = n as f64 / started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    stop(child).await;
    let _ = std::fs::remove_dir_all(&dir);
    drain
}

/// 10,000 commands published to a running ingestor at S = 4: first publish to last commit.
async fn ten_thousand(js: &jetstream::Context, tenants: &[String]) -> f64 {
    let db = TestDb::with_shards(4).await;
    let prefix = unique_name("e2e");
    let (child, _) = ready_store(&db, &prefix, &["--ingest"]).await;
    let cmds = commands_over(10_000, tenants);
    let pb = bar(cmds.len(), "S = 4: 10,000 end to end (committed)");
    let t = Instant::now();
    let hidden = ProgressBar::hidden();
    let stream = prefix.to_uppercase();
    let committed = until_committed(&db, &stream, 10_000, &pb);
    tokio::join!(publish(js, &prefix, &cmds, &hidden, None), committed);
    let seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    stop(child).await;
    seconds
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let n = count_arg(200_000) as usize;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let tenants = tenants();
    let cmds = commands_over(n, &tenants);
    println!(
        "shards bench: {n} commands over {} tenants (two a shard at S = 4), PostgreSQL fsync on, \
         nats-server file storage",
        tenants.len()
    );
    let mut runs = Vec::new();
    for shards in [1, 2, 4] {
        runs.push(drain_and_fold(&js, shards, &cmds).await);
    }
    let copy = copy_ceiling(&runs[0].db.pool).await;
    println!(
        "{:>3}  {:>12} {:>8}  {:>12} {:>8}",
        "S", "drain ev/s", "× S=1", "fold ev/s", "× S=1"
    );
    for r in &runs {
        println!(
            "{:>3}  {:>12.0} {:>7.2}x  {:>12.0} {:>7.2}x",
            r.shards,
            r.drain,
            r.drain / runs[0].drain,
            r.fold,
            r.fold / runs[0].fold
        );
    }
    let partitioned = drain_partitioned(&cmds).await;
    println!(
        "  4  {partitioned:>12.0} {:>7.2}x  (P = 4 ingest partitions, four leads in one process)",
        partitioned / runs[0].drain
    );
    println!("one same-schema COPY of the same rows: {copy:.0} events/s");
    let best = runs.iter().map(|r| r.drain).fold(partitioned, f64::max);
    let ten = ten_thousand(&js, &tenants).await;
    let seconds = env_or("LAG_SECONDS", 10.0);
    let rate = 0.8 * runs[2].drain;
    let (lags, achieved) = live_lag(TestDb::with_shards(4).await, rate, seconds, &tenants).await;
    let p99 = percentile(&lags, 0.99);
    let s2 = runs[1].drain / runs[0].drain;
    println!("goals:");
    println!(
        "  S = 2 drain ÷ S = 1            {s2:>7.2}   goal >= 1.40   {}",
        verdict(s2 >= 1.4)
    );
    println!(
        "  best drain ÷ one COPY          {:>7.2}   goal >= 0.80   {}",
        best / copy,
        verdict(best / copy >= 0.8)
    );
    println!(
        "  10,000 end to end at S = 4, s  {ten:>7.3}   goal < 0.300   {}",
        verdict(ten < 0.3)
    );
    println!(
        "  live lag p99 at {achieved:.0}/s (80% of the S = 4 drain), ms {:>7.0}   goal < 200   {}",
        p99 * 1000.0,
        verdict(p99 < 0.2)
    );
    println!(
        "  (live lag p50 {:.0} ms, max {:.0} ms, {} events)",
        percentile(&lags, 0.5) * 1000.0,
        lags.last().copied().unwrap_or(f64::NAN) * 1000.0,
        lags.len()
    );
}
