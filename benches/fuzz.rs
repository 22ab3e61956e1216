//! `cargo bench --bench fuzz [CASES]`: many hostile inputs (100,000 by default) through the
//! real decide and write path against PostgreSQL; every one must become an event, a
//! duplicate or a dead letter, and no batch may fail. Replay a run with FUZZ_SEED.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Instant;

use activity_store::log::EventLog;
use support::TestDb;
use support::hostile::{input, registry, run, seeded};

const BATCH: usize = 500;

#[tokio::main]
async fn main() {
    let cases: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (seed, mut rng) = seeded();
    let setup = registry();
    run(&log, &setup, 1, BATCH, seed).await;
    let pb = common::bar(cases, "hostile inputs through the write path");
    let started = Instant::now();
    let mut next_seq = setup.len() as u64 + 1;
    let mut total = support::hostile::Tally::default();
    let mut left = cases;
    while left > 0 {
        let n = left.min(10 * BATCH);
        let inputs: Vec<_> = (0..n).map(|_| input(&mut rng)).collect();
        let tally = run(&log, &inputs, next_seq, BATCH, seed).await;
        next_seq += n as u64;
        left -= n;
        total.inputs += tally.inputs;
        total.appended += tally.appended;
        total.duplicates += tally.duplicates;
        total.rejected += tally.rejected;
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} inputs (seed {seed}) in {secs:.1} s, {:.0} inputs/s: {} events, {} duplicates, \
         {} dead letters, 0 failed batches",
        total.inputs,
        total.inputs as f64 / secs,
        total.appended,
        total.duplicates,
        total.rejected
    );
}
