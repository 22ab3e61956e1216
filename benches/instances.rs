//! Instances sharing the work, on real servers: two `run --ingest --project` processes on
//! one database and one nats-server routing commands to 4 ingest partitions (the
//! `partition()` mapping), under a steady load over 20 tenants. One instance is killed with
//! `kill -9`; measured is how long until every partition it led commits again (a batch
//! committed after the kill, read from each partition's checkpoint time in the database) and
//! until the survivor holds every shard's fold lease. Then a new instance joins, and the
//! round is repeated (ROUNDS, default 3). Last, one instance is stopped with SIGSTOP: its
//! partitions commit again once its lease's session idles out (`--lease-ttl-secs`, 5).
//!
//! `cargo bench --bench instances`; `RATE` (default 3000 commands/s) sets the load.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use activity_store::ingest::partitions;
use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use support::mapped::{holdings, mapped_nats};
use support::{TestDb, unique_name};

const PARTITIONS: u32 = 4;
const GOAL: Duration = Duration::from_secs(5);

fn instance(db: &TestDb, nats: &str, stream: &str, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "run",
            "--ingest",
            "--project",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--stream", stream, "--subject-prefix", prefix])
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("start an instance")
}

fn pid(child: &Child) -> i32 {
    child.id().expect("running") as i32
}

/// Waits until the two named instances hold two leads and two fold leases each.
async fn divided(db: &TestDb, streams: &[String], (a, b): (i32, i32)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (leads, folds) = holdings(&db.pool, streams).await;
        let even = |m: &std::collections::BTreeMap<i32, usize>| {
            m.get(&a) == Some(&2) && m.get(&b) == Some(&2)
        };
        if even(&leads) && even(&folds) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never divided: {leads:?} {folds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The partitions' streams led by `who` now.
async fn led_by(db: &TestDb, streams: &[String], who: i32) -> Vec<String> {
    let mut out = Vec::new();
    for s in streams {
        let holder = activity_store::db::locks::named_holder(
            &mut db.pool.acquire().await.unwrap(),
            activity_store::db::locks::INGEST_LEADER,
            s,
        )
        .await
        .unwrap();
        if holder.is_some_and(|h| h.application_name.ends_with(&format!(":{who}"))) {
            out.push(s.clone());
        }
    }
    out
}

async fn now(db: &TestDb) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Waits until each of `streams` has committed a batch after `since`; returns the latest of
/// those first commits, measured from `since` (by the database's clock).
async fn commits_again(db: &TestDb, streams: &[String], since: DateTime<Utc>) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (behind, latest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE updated_at <= $2), max(updated_at) \
             FROM ingest_checkpoints WHERE stream = ANY($1)",
        )
        .bind(streams)
        .bind(since)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if behind == 0 {
            return (latest.unwrap() - since).to_std().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "{behind} partition(s) never committed again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `who` holds every shard's fold lease; returns how long that took.
async fn folds_taken(db: &TestDb, streams: &[String], who: i32, since: Instant) -> Duration {
    loop {
        let (_, folds) = holdings(&db.pool, streams).await;
        if folds.get(&who) == Some(&4) && folds.len() == 1 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "folds never taken: {folds:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn verdict(d: Duration) -> &'static str {
    if d < GOAL { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rate: f64 = std::env::var("RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000.0);
    let db = TestDb::migrated().await;
    partitions::set(&db.pool, PARTITIONS).await.unwrap();
    let name = unique_name("bench_inst");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let (stream, prefix) = (name.to_uppercase(), format!("{name}.commands"));
    let streams: Vec<String> = partitions::streams(&stream, "d", PARTITIONS)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let (_nats, nats) = mapped_nats(&dir, &prefix, PARTITIONS);
    let js = async_nats::jetstream::new(support::mapped::connect(&nats).await);

    let mut survivor = instance(&db, &nats, &stream, &prefix);
    let mut victim = instance(&db, &nats, &stream, &prefix);
    divided(&db, &streams, (pid(&survivor), pid(&victim))).await;
    // Enough load for the whole run; the publisher is stopped at the end.
    let tenants: Vec<String> = (0..20).map(|t| format!("t{t}")).collect();
    let seconds = 15.0 * (rounds as f64 + 2.0);
    let commands = common::commands_over((rate * seconds) as usize, &tenants);
    let pb = common::bar(commands.len(), "publishing at RATE");
    let load = {
        let (js, name) = (js.clone(), name.clone());
        tokio::spawn(async move {
            common::publish(&js, &name, &commands, &pb, Some(rate)).await;
            pb.finish();
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;

    println!(
        "\ninstances: 2 × run --ingest --project, {PARTITIONS} partitions, 4 shards, {rate:.0} commands/s"
    );
    let mut worst = Duration::ZERO;
    for round in 1..=rounds {
        let led = led_by(&db, &streams, pid(&victim)).await;
        let (at, started) = (now(&db).await, Instant::now());
        kill(Pid::from_raw(pid(&victim)), Signal::SIGKILL).unwrap();
        victim.wait().await.unwrap();
        let again = commits_again(&db, &led, at).await;
        let folds = folds_taken(&db, &streams, pid(&survivor), started).await;
        worst = worst.max(again);
        println!(
            "  round {round}: kill -9 → its {} partition(s) commit again after {:>5} ms; \
             every shard folded by the survivor after {:>5} ms",
            led.len(),
            again.as_millis(),
            folds.as_millis()
        );
        // A new instance joins and is given its share: the next round kills the old one.
        let joined = instance(&db, &nats, &stream, &prefix);
        divided(&db, &streams, (pid(&survivor), pid(&joined))).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        victim = std::mem::replace(&mut survivor, joined);
    }
    println!(
        "  kill -9 → commits again, worst of {rounds}: {} ms (goal < {} s): {}",
        worst.as_millis(),
        GOAL.as_secs(),
        verdict(worst)
    );

    let led = led_by(&db, &streams, pid(&victim)).await;
    let at = now(&db).await;
    kill(Pid::from_raw(pid(&victim)), Signal::SIGSTOP).unwrap();
    let again = commits_again(&db, &led, at).await;
    println!(
        "  SIGSTOP (a hang) → its {} partition(s) commit again after {} ms (lease ttl 5 s)",
        led.len(),
        again.as_millis()
    );
    kill(Pid::from_raw(pid(&victim)), Signal::SIGKILL).unwrap();
    load.abort();
    survivor.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
