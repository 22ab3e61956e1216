//! Ingest of a batch whose tenants live on several shards: one transaction per shard, at
//! once; the checkpoint moves only once every part committed, a part's commit waits for no
//! other shard's append, and a batch cut short between its parts is taken again with
//! nothing applied twice.

use std::time::Duration;

use activity_store::ingest::commit_batch;
use activity_store::log::EventLog;
use activity_store::log::shards::partition;
use activity_store::model::{Reason, TimeWindow};
use serde_json::{Value, json};

use crate::fixtures::append_lock_of;
use crate::ingest_support::{activity, batch, create_tenant, register};
use crate::support::TestDb;

/// The first slug `t0`, `t1`, … of shards 0 and 1 of 4.
fn two_shards() -> (String, String) {
    let find = |s| {
        (0..)
            .map(|i| format!("t{i}"))
            .find(|t| partition(t, 4) == s)
            .unwrap()
    };
    (find(0), find(1))
}

async fn setup(log: &EventLog, tenants: &[&str]) {
    let mut cmds: Vec<Value> = Vec::new();
    for t in tenants {
        cmds.push(create_tenant(t));
        cmds.push(register(t, "ann"));
    }
    commit_batch(log, "S", 0, &batch(1, cmds), &TimeWindow::default())
        .await
        .unwrap();
}

async fn checkpoint(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = 'S'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn events_of(db: &TestDb, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_of_two_shards_commits_both_and_names_each_refusal_by_its_place() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (a, b) = two_shards();
    setup(&log, &[&a, &b]).await;
    let mut cmds = Vec::new();
    for _ in 0..10 {
        cmds.push(activity(&a, "ann"));
        cmds.push(activity(&b, "ann"));
    }
    cmds[7] = register(&b, "ann"); // user_exists, at 7
    cmds[12] = json!({"type": "record_activity", "tenant": a, "user": "nobody",
                      "activity_type": "login"}); // unknown_user, at 12
    let outcome = commit_batch(&log, "S", 0, &batch(5, cmds), &TimeWindow::default())
        .await
        .unwrap();
    assert_eq!(outcome.appended, 18);
    assert_eq!(
        outcome.rejected,
        vec![(7, Reason::UserExists), (12, Reason::UnknownUser)]
    );
    assert_eq!(checkpoint(&db).await, 24, "past the whole batch");
    for t in [&a, &b] {
        assert_eq!(events_of(&db, t).await, 2 + 9, "{t}");
    }
}

#[tokio::test]
async fn one_shard_waiting_holds_no_other_back_and_the_checkpoint_waits_for_both() {
    let db = TestDb::with_shards(4).await;
    let log = std::sync::Arc::new(EventLog::open(db.pool.clone()).await.unwrap());
    let (a, b) = two_shards();
    setup(&log, &[&a, &b]).await;
    let before = checkpoint(&db).await;
    // a's shard is busy with an append of someone else's.
    let lock = append_lock_of(&db.pool, &a).await;
    let mut busy = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *busy)
        .await
        .unwrap();
    let cmds = vec![activity(&a, "ann"), activity(&b, "ann")];
    let commit = {
        let log = log.clone();
        tokio::spawn(async move {
            commit_batch(&log, "S", 0, &batch(100, cmds), &TimeWindow::default()).await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while events_of(&db, &b).await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "b's part never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events_of(&db, &a).await, 2, "a's part waits for its shard");
    assert_eq!(
        checkpoint(&db).await,
        before,
        "the checkpoint waits for every part"
    );
    busy.rollback().await.unwrap();
    commit.await.unwrap().unwrap();
    assert_eq!(events_of(&db, &a).await, 3);
    assert_eq!(checkpoint(&db).await, 101);
}

#[tokio::test]
async fn a_batch_cut_short_between_its_parts_is_taken_again_with_nothing_twice() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (a, b) = two_shards();
    setup(&log, &[&a, &b]).await;
    let lock = append_lock_of(&db.pool, &a).await;
    let mut busy = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *busy)
        .await
        .unwrap();
    let mut cmds = vec![activity(&a, "ann"), activity(&b, "ann")];
    cmds.push(json!({"type": "no_such_type", "tenant": b, "id": uuid::Uuid::now_v7()}));
    let messages = batch(100, cmds);
    // The ingestor dies (its future dropped) while a's part waits: b's part has committed.
    let cut = tokio::time::timeout(
        Duration::from_millis(500),
        commit_batch(&log, "S", 0, &messages, &TimeWindow::default()),
    )
    .await;
    assert!(cut.is_err(), "cut short");
    busy.rollback().await.unwrap();
    assert_eq!((events_of(&db, &a).await, events_of(&db, &b).await), (2, 3));
    // Redelivered: b's command is a duplicate and its dead letter is not written twice.
    let again = commit_batch(&log, "S", 0, &messages, &TimeWindow::default())
        .await
        .unwrap();
    assert_eq!((again.appended, again.duplicates), (1, 1));
    assert_eq!((events_of(&db, &a).await, events_of(&db, &b).await), (3, 3));
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(letters, 1);
    assert_eq!(checkpoint(&db).await, 102);
}

#[tokio::test]
async fn a_superseded_leader_commits_no_part() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (a, b) = two_shards();
    setup(&log, &[&a, &b]).await;
    // A successor claimed the stream: epoch 2.
    sqlx::query("UPDATE ingest_checkpoints SET leader_epoch = 2 WHERE stream = 'S'")
        .execute(&db.pool)
        .await
        .unwrap();
    let cmds = vec![activity(&a, "ann"), activity(&b, "ann")];
    let refused = commit_batch(&log, "S", 1, &batch(100, cmds), &TimeWindow::default()).await;
    assert!(
        matches!(refused, Err(activity_store::db::DbError::Superseded { .. })),
        "{refused:?}"
    );
    assert_eq!((events_of(&db, &a).await, events_of(&db, &b).await), (2, 2));
}
