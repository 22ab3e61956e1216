//! What the store owns in NATS is re-created when it is lost, and the loss is seen: the
//! stream deleted (once, twice in a row) or purged, and the cache bucket deleted, each
//! under load. New commands land, and cache entries flow, within seconds; a reset is counted
//! once per real re-creation, never in a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::json;

use crate::liveness::{Store, ingest_config};
use crate::support::{TestDb, nats_url};

/// Publishes activities of acme's ann until `stop`, ignoring refusals (the stream may be
/// gone); counts the publishes the stream acknowledged.
fn load(
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        while !stop.load(Ordering::SeqCst) {
            let c = json!({"type": "record_activity", "id": uuid::Uuid::new_v4(), "tenant": "acme",
                           "user": "ann", "activity_type": "login"});
            let subject = format!("{prefix}.commands.acme");
            if let Ok(ack) = js
                .publish(subject, serde_json::to_vec(&c).unwrap().into())
                .await
            {
                if ack.await.is_ok() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn events(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn resets(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(resets), 0) FROM ingest_checkpoints")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Waits until the log grows past `from` by 20 events; returns how long it took.
async fn lands_after(db: &TestDb, from: i64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if events(db).await >= from + 20 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "no new command landed within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stream_deleted_under_load_is_recreated_once_and_commands_land_again() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), false).await;
    store.wait_for("/readyz", 200, "ready").await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    for c in [
        json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme", "name": "A"}),
        json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "ann",
               "email": "ann@example.com"}),
    ] {
        crate::liveness::publish(&prefix, c).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let loader = load(prefix.clone(), stop.clone(), acked.clone());
    lands_after(&db, 0, Duration::from_secs(10)).await;
    for round in 0..2 {
        js.delete_stream(&config.stream).await.unwrap();
        if round == 1 {
            // Deleted twice in a row.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = js.delete_stream(&config.stream).await;
        }
        let before = events(&db).await;
        let took = lands_after(&db, before, Duration::from_secs(15)).await;
        eprintln!(
            "round {round}: commands land again after {took:?}; resets {}",
            resets(&db).await
        );
        store.wait_for("/readyz", 200, "ready").await;
    }
    // Purged under load: nothing to re-create, nothing to count.
    js.get_stream(&config.stream)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let before = events(&db).await;
    lands_after(&db, before, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted = resets(&db).await;
    assert!(
        (2..=3).contains(&counted),
        "{counted} resets for 3 deletions and a purge"
    );
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    store.stop().await;
}

async fn started(project: bool) -> (TestDb, String, activity_store::ingest::IngestConfig, Store) {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), project).await;
    store.wait_for("/readyz", 200, "ready").await;
    for c in [
        json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme", "name": "A"}),
        json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "ann",
               "email": "ann@example.com"}),
    ] {
        crate::liveness::publish(&prefix, c).await;
    }
    (db, prefix, config, store)
}

#[tokio::test]
async fn a_stream_the_store_cannot_recreate_is_named_by_readyz_and_fails_livez() {
    let (db, prefix, config, store) = started(false).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let loader = load(prefix.clone(), stop.clone(), acked.clone());
    lands_after(&db, 0, Duration::from_secs(10)).await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    // Another stream takes the subjects: the store's stream cannot be created again.
    js.delete_stream(&config.stream).await.unwrap();
    let squat = format!("{}_SQUAT", config.stream);
    js.create_stream(jetstream::stream::Config {
        name: squat.clone(),
        subjects: vec![config.subjects.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let lost = Instant::now();
    let said = store.wait_for("/readyz", 503, "ingest: stream").await;
    assert!(lost.elapsed() < Duration::from_secs(10), "{said}");
    let said = store.wait_for("/livez", 503, "ingest: stream").await;
    assert!(lost.elapsed() < Duration::from_secs(15), "{said}");
    let resets_while_broken = resets(&db).await;
    js.delete_stream(&squat).await.unwrap();
    store.wait_for("/readyz", 200, "ready").await;
    store.wait_for("/livez", 200, "ok").await;
    let before = events(&db).await;
    lands_after(&db, before, Duration::from_secs(15)).await;
    assert!(
        resets(&db).await <= resets_while_broken + 1,
        "one reset per re-creation"
    );
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    store.stop().await;
}

#[tokio::test]
async fn a_cache_bucket_deleted_under_load_is_recreated_and_entries_flow_again() {
    let (db, prefix, _config, store) = started(true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let loader = load(prefix.clone(), stop.clone(), acked.clone());
    lands_after(&db, 0, Duration::from_secs(10)).await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let (summary, bucket) = crate::erasure_support::summary_bucket(&store.bucket_prefix);
    js.delete_stream(format!("KV_{bucket}")).await.unwrap();
    let mac = activity_store::cache::CacheMac::load(&db.pool)
        .await
        .unwrap();
    let lost = events(&db).await;
    let deleted = Instant::now();
    // Entries of folds after the loss reach the bucket again within seconds.
    loop {
        assert!(
            deleted.elapsed() < Duration::from_secs(15),
            "no cache entry after the bucket was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(entries) = activity_store::cache::CacheEntries::open_for_reading(
            &js,
            (&summary.name, summary.version),
            &bucket,
            mac.clone(),
        )
        .await
        else {
            continue;
        };
        if let Ok(Some(activity_store::cache::Cached::Row { as_of, .. })) =
            entries.peek("acme", "ann").await
            && as_of > lost
        {
            break;
        }
    }
    eprintln!(
        "entries flow again {:?} after the bucket was deleted",
        deleted.elapsed()
    );
    store.wait_for("/readyz", 200, "ready").await;
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    store.stop().await;
}
