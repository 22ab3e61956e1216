//! `append_batch`: one transaction, COPY, each command id once for ever.

use std::collections::HashSet;

use activity_store::log::{EventLog, append_in, partitions};
use chrono::Utc;
use serde_json::json;

use crate::fixtures::{activity, jan, login, many};
use crate::support::TestDb;

async fn log() -> (TestDb, EventLog) {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    (db, log)
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn a_batch_gets_consecutive_positions_and_its_lineage() {
    let (db, log) = log().await;
    let events = many("acme", 10, 1_000);
    let out = log.append_batch(&events).await.unwrap();
    // acme's shard: FNV-1a of its slug among the store's shards, as NATS routes it.
    let shard =
        activity_store::log::shards::partition("acme", crate::support::test_shards() as u32);
    let base = activity_store::project::shard_base(shard as i32);
    assert_eq!(
        (out.appended, out.positions, out.duplicates.len()),
        (1_000, Some((base + 1, base + 1_000)), 0)
    );
    let rows: Vec<(i64, uuid::Uuid, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT position, command_id, subject, stream_seq FROM events ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.command_id).collect();
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        ids,
        "positions follow the batch order"
    );
    assert_eq!(rows[0].2.as_deref(), Some("activity.commands.acme"));
    assert_eq!(rows[0].3, Some(1));
    assert_eq!(
        count(&db, "SELECT count(*) FROM command_ledger").await,
        1_000
    );
}

#[tokio::test]
async fn a_command_applied_twice_has_the_effect_of_once() {
    let (db, log) = log().await;
    let first = login("acme", "u1");
    let mut retry = first.clone();
    retry.occurred_at = jan(20); // a retry after the window: new time, new event id
    retry.event_id = uuid::Uuid::now_v7();
    log.append_batch(std::slice::from_ref(&first))
        .await
        .unwrap();
    let again = log
        .append_batch(&[retry.clone(), login("acme", "u2")])
        .await
        .unwrap();
    assert_eq!(again.appended, 1);
    assert_eq!(again.duplicates, vec![first.command_id]);
    let in_batch = log
        .append_batch(&[retry.clone(), retry.clone()])
        .await
        .unwrap();
    assert_eq!((in_batch.appended, in_batch.duplicates.len()), (0, 2));
    let twice = login("acme", "u3");
    let same_batch = log
        .append_batch(&[twice.clone(), twice.clone()])
        .await
        .unwrap();
    assert_eq!(
        (same_batch.appended, same_batch.duplicates),
        (1, vec![twice.command_id])
    );
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 3);
}

#[tokio::test]
async fn deduplication_has_no_time_limit() {
    let (db, log) = log().await;
    let e = login("acme", "u1");
    log.append_batch(std::slice::from_ref(&e)).await.unwrap();
    sqlx::query("UPDATE command_ledger SET recorded_at = now() - interval '10 years'")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut later = e.clone();
    later.occurred_at = Utc::now();
    assert_eq!(log.append_batch(&[later]).await.unwrap().appended, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn a_rolled_back_append_leaves_no_trace() {
    let (db, log) = log().await;
    let e = login("acme", "u1");
    log.prepare(std::slice::from_ref(&e)).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        append_in(&mut tx, std::slice::from_ref(&e))
            .await
            .unwrap()
            .appended,
        1
    );
    tx.rollback().await.unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM command_ledger").await, 0);
    assert_eq!(
        log.append_batch(&[e]).await.unwrap().appended,
        1,
        "the command can still be applied"
    );
}

#[tokio::test]
async fn partitions_are_created_for_the_months_a_batch_needs() {
    let (db, log) = log().await;
    let old = Utc::now() - chrono::Duration::days(3 * 365);
    let out = log
        .append_batch(&[activity("acme", "u1", old, json!({}))])
        .await
        .unwrap();
    assert_eq!(out.appended, 1);
    let mut conn = db.pool.acquire().await.unwrap();
    let names: Vec<String> = partitions::list(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        names.contains(&partitions::Month::of(old).table_name()),
        "{names:?}"
    );
    let this_month = partitions::Month::of(Utc::now());
    for m in partitions::Month::range(this_month, activity_store::log::MONTHS_AHEAD + 1) {
        assert!(
            names.contains(&m.table_name()),
            "{} created ahead: {names:?}",
            m.table_name()
        );
    }
    let again = partitions::ensure(&mut conn, &[this_month]).await.unwrap();
    assert!(
        again.created.is_empty() && again.archived.is_empty(),
        "ensuring an existing month creates nothing"
    );
}

#[tokio::test]
async fn concurrent_appenders_get_dense_distinct_positions() {
    let (db, log) = log().await;
    let log = std::sync::Arc::new(log);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let log = log.clone();
        tasks.spawn(async move {
            for b in 0..25 {
                log.append_batch(&many(&format!("t{w}"), 5, 20 + b))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let positions: Vec<i64> = sqlx::query_scalar("SELECT position FROM events ORDER BY position")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let expected: i64 = 4 * (0..25).map(|b| 20 + b).sum::<i64>();
    assert_eq!(positions.len() as i64, expected);
    assert_eq!(
        positions.iter().collect::<HashSet<_>>().len() as i64,
        expected
    );
    // Each shard's appends are serialised: its positions run 1, 2, 3, … with no gap.
    let mut shards: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
    for p in positions {
        let shard = activity_store::project::shard_of(p);
        shards
            .entry(shard)
            .or_default()
            .push(p - activity_store::project::shard_base(shard));
    }
    for (shard, within) in shards {
        let dense: Vec<i64> = (1..=within.len() as i64).collect();
        assert_eq!(
            within, dense,
            "shard {shard}: serialised appends leave no gaps"
        );
    }
    let commit_order_matches: bool = sqlx::query_scalar(
        "SELECT bool_and(ok) FROM (SELECT tx_id >= lag(tx_id) OVER w OR lag(tx_id) OVER w IS NULL AS ok \
         FROM events WINDOW w AS (PARTITION BY position >> 48 ORDER BY position)) s",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        commit_order_matches,
        "in each shard, position order is transaction order"
    );
}

#[tokio::test]
async fn a_months_rows_are_estimated_before_any_analyze() {
    let (db, log) = log().await;
    // `many` puts its events in January 2025; no ANALYZE or autovacuum has seen them.
    log.append_batch(&many("acme", 10, 500)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mut conn = db.pool.acquire().await.unwrap();
        let parts = partitions::list(&mut conn).await.unwrap();
        let jan = parts.iter().find(|p| p.name == "events_p202501").unwrap();
        if jan.estimated_rows == 500 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "estimated {} rows of 500",
            jan.estimated_rows
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
