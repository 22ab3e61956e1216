//! A version change never stops ingest: the new version is built in the background beside
//! the old one, which keeps serving reads; a second replica starting meanwhile waits rather
//! than fails; and the swap gives way to a long reader instead of queueing reads behind it.

use std::time::{Duration, Instant};

use crate::ingest_support::{activity, create_tenant, register};
use crate::liveness::{Store, ingest_config, publish, wait_for_events};
use crate::support::TestDb;

async fn versions(db: &TestDb) -> Vec<i32> {
    sqlx::query_scalar("SELECT version FROM projection_checkpoints ORDER BY projection")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_change_rebuilds_in_the_background_while_ingest_and_reads_go_on() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let first = Store::start_on(&db, config.clone(), true).await;
    first.wait_for("/readyz", 200, "ready").await;
    publish(&prefix, create_tenant("acme")).await;
    publish(&prefix, register("acme", "ann")).await;
    wait_for_events(&db, 2).await;
    wait_for_users(&db, 1).await;
    first.stop().await;
    // An older version recorded (0, below any real one): the next start must rebuild.
    sqlx::raw_sql(
        "ALTER TABLE projection_checkpoints DROP CONSTRAINT projection_checkpoints_version_positive; \
         UPDATE projection_checkpoints SET version = 0",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // A long reader of the old version: the swap cannot take its locks while it reads.
    let mut reader = db.pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM analytics.user_summary")
        .execute(&mut *reader)
        .await
        .unwrap();

    let active = Store::start_on(&db, config.clone(), true).await;
    let replica = Store::start_on(&db, config, true).await;
    publish(&prefix, activity("acme", "ann")).await;
    publish(&prefix, register("acme", "bob")).await;
    wait_for_events(&db, 4).await;
    active
        .wait_for("/metrics", 200, "activity_projection_swap_retries_total")
        .await;
    assert!(
        versions(&db).await.contains(&0),
        "user_summary's swap waits for the reader"
    );
    // Other reads are not queued behind the waiting swap for longer than its lock timeout.
    let t = Instant::now();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.user_summary")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a read waited {:?}",
        t.elapsed()
    );
    assert_eq!(rows, 1, "the old version serves what it had");
    for store in [&active, &replica] {
        store.wait_for("/livez", 200, "ok").await;
        let (_, ready) = store.get("/readyz").await;
        assert!(!ready.contains("project:"), "no projector failed: {ready}");
    }
    reader.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let current: Vec<i32> = activity_store::project::projections()
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect();
    while versions(&db).await != current {
        assert!(
            Instant::now() < deadline,
            "rebuilt: {:?}",
            versions(&db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_users(&db, 2).await;
    active.stop().await;
    replica.stop().await;
}

async fn wait_for_users(db: &TestDb, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.user_summary")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if users == n {
            return;
        }
        assert!(Instant::now() < deadline, "{users} users, not {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
