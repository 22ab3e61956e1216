//! The stream's identity is part of the checkpoint: a stream deleted and created again (or
//! purged) while the store runs or while it is stopped is found, counted, and ingest goes on
//! from its first message, each command still applied once.

use std::time::{Duration, Instant};

use activity_store::ingest::{IngestConfig, Ingestor};
use async_nats::jetstream::{self, stream};
use serde_json::{Value, json};

use crate::ingest_support::{Pipeline, activity, create_tenant, register};

fn commands(n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let mut c = activity("acme", "ann");
            c["id"] = json!(uuid::Uuid::new_v4().to_string());
            c
        })
        .collect()
}

async fn recreate_stream(js: &jetstream::Context, config: &IngestConfig) {
    js.delete_stream(&config.stream).await.unwrap();
    js.create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![config.subjects.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Steps `ingestor` until `events` events are in the log (or fails after 30 s).
async fn ingest_until(ingestor: &Ingestor, p_pool: &sqlx::PgPool, events: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(p_pool)
            .await
            .unwrap();
        if n >= events {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {events} events");
        // A deleted stream makes a step fail until it is looked at again: keep stepping.
        let _ = ingestor.step().await;
    }
}

async fn assert_once_each(pool: &sqlx::PgPool, events: i64, resets: i64) {
    let (n, distinct, dead, counted): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT command_id) FROM events), \
         (SELECT count(*) FROM dead_letters), (SELECT resets FROM ingest_checkpoints)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((n, distinct, dead, counted), (events, events, 0, resets));
}

async fn publish_all(p: &Pipeline, commands: &[Value]) {
    for c in commands {
        p.publish(c.clone()).await;
    }
}

#[tokio::test]
async fn a_stream_recreated_under_a_running_ingestor_loses_nothing() {
    let p = Pipeline::new().await;
    let first = commands(10);
    publish_all(&p, &[create_tenant("acme"), register("acme", "ann")]).await;
    publish_all(&p, &first).await;
    p.drain().await;
    assert_once_each(&p.db.pool, 12, 0).await;

    recreate_stream(&p.js, &p.config).await;
    // M < N new commands, and one the log already has, sent again by its producer.
    let second = commands(5);
    publish_all(&p, &second).await;
    publish_all(&p, &first[..1]).await;
    ingest_until(&p.ingestor, &p.db.pool, 17).await;
    p.drain().await;
    assert_once_each(&p.db.pool, 17, 1).await;
}

#[tokio::test]
async fn a_stream_recreated_while_the_store_is_stopped_loses_nothing() {
    let p = Pipeline::new().await;
    publish_all(&p, &[create_tenant("acme"), register("acme", "ann")]).await;
    publish_all(&p, &commands(10)).await;
    p.drain().await;
    let stopped = p.stop();
    recreate_stream(&stopped.js, &stopped.config).await;
    for c in commands(5) {
        stopped.publish(c).await;
    }
    let p = stopped.start().await;
    p.drain().await;
    assert_once_each(&p.db.pool, 17, 1).await;
}

#[tokio::test]
async fn messages_purged_before_they_were_ingested_are_reported() {
    let p = Pipeline::new().await;
    publish_all(&p, &[create_tenant("acme"), register("acme", "ann")]).await;
    p.drain().await;
    let stopped = p.stop();
    for c in commands(3) {
        stopped.publish(c).await;
    }
    stopped
        .js
        .get_stream(&stopped.config.stream)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    for c in commands(2) {
        stopped.publish(c).await;
    }
    let p = stopped.start().await;
    p.drain().await;
    assert_once_each(&p.db.pool, 4, 1).await;
}

#[tokio::test]
async fn a_deleted_consumer_is_recreated_not_waited_on() {
    let p = Pipeline::new().await;
    publish_all(&p, &[create_tenant("acme"), register("acme", "ann")]).await;
    p.drain().await;
    p.js.get_stream(&p.config.stream)
        .await
        .unwrap()
        .delete_consumer(&p.config.durable)
        .await
        .unwrap();
    publish_all(&p, &commands(3)).await;
    ingest_until(&p.ingestor, &p.db.pool, 5).await;
    assert_once_each(&p.db.pool, 5, 0).await;
}
