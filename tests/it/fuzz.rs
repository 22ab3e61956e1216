//! Fuzzing the write path in CI: a few thousand hostile inputs through decide and the
//! database, each an event, a duplicate or a dead letter, never a failed batch.
//! `cargo bench --bench fuzz` runs many more (see benches/README.md).

use activity_store::log::EventLog;

use crate::support::TestDb;
use crate::support::hostile::{input, registry, run, seeded};

#[tokio::test]
async fn every_hostile_input_is_an_event_a_duplicate_or_a_dead_letter() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (seed, mut rng) = seeded();
    let setup = registry();
    run(&log, &setup, 1, 100, seed).await;
    let inputs: Vec<_> = (0..3_000).map(|_| input(&mut rng)).collect();
    let tally = run(&log, &inputs, setup.len() as u64 + 1, 100, seed).await;
    let (events, dead): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(events as usize, setup.len() + tally.appended, "seed {seed}");
    assert_eq!(dead as usize, tally.rejected, "seed {seed}");
    // The mix reaches both sides: not all refused, not all accepted.
    assert!(
        tally.appended > 300 && tally.rejected > 300,
        "seed {seed}: {tally:?}"
    );
}
