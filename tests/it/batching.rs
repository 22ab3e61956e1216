//! Batches fit the load: a lone command goes at once, a backlog goes in full batches, one
//! ack covers a batch, and the pipelined loop (the next batch pulled while one commits)
//! keeps every command exactly once and in stream order, even when the consumer is
//! recreated under it.

use std::time::Duration;

use async_nats::jetstream::consumer::AckPolicy;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::ingest_support::{Pipeline, activity, create_tenant, register};
use activity_store::ingest::Step;

/// Far longer than any step below may take: a step that waited for its batch to fill would
/// wait this long.
const LONG_WAIT: Duration = Duration::from_secs(30);
/// A guard against a hung test, well short of `LONG_WAIT`.
const GUARD: Duration = Duration::from_secs(10);

async fn step(p: &Pipeline) -> Step {
    tokio::time::timeout(GUARD, p.ingestor.step())
        .await
        .expect("the step waited for its batch to fill")
        .unwrap()
}

#[tokio::test]
async fn a_lone_command_is_committed_without_waiting_for_the_batch_to_fill() {
    let p = Pipeline::with_config(|c| c.batch_wait = LONG_WAIT).await;
    p.publish(create_tenant("acme")).await;
    assert!(matches!(step(&p).await, Step::Progress { messages: 1, .. }));

    // And one that arrives while the step is already waiting.
    let later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.publish(register("acme", "u1")).await
    };
    let (stepped, _) = tokio::join!(step(&p), later);
    assert!(
        matches!(stepped, Step::Progress { messages: 1, .. }),
        "{stepped:?}"
    );
}

#[tokio::test]
async fn a_backlog_is_taken_in_full_batches_and_one_ack_covers_each() {
    let p = Pipeline::with_config(|c| c.batch_max = 500).await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "u1")).await;
    join_all((0..1198).map(|_| p.publish(activity("acme", "u1")))).await;
    let mut sizes = Vec::new();
    while let Step::Progress { messages, .. } = step(&p).await {
        sizes.push(messages);
    }
    assert_eq!(sizes, [500, 500, 200]);
    let mut consumer =
        p.js.get_stream(&p.config.stream)
            .await
            .unwrap()
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&p.config.durable)
            .await
            .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.ack_policy, AckPolicy::All);
    assert_eq!(info.ack_floor.stream_sequence, 1200);
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test]
async fn the_pipelined_loop_keeps_every_command_once_and_in_order_across_a_lost_consumer() {
    let p = Pipeline::with_config(|c| c.batch_max = 100).await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "u1")).await;
    join_all((0..1498).map(|_| p.publish(activity("acme", "u1")))).await;
    let stop = CancellationToken::new();
    let Pipeline {
        db,
        js,
        ingestor,
        config,
        prefix,
    } = p;
    let running = tokio::spawn(ingestor.run(stop.clone()));
    // Delete the consumer under the running loop, batches in flight, then publish more.
    let stream = js.get_stream(&config.stream).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.delete_consumer(&config.durable).await.unwrap();
    let subject = format!("{prefix}.commands.acme");
    let more = (0..500).map(|i| {
        let id = uuid::Uuid::new_v4();
        let mut command = activity("acme", "u1");
        command["id"] = serde_json::json!(id.to_string());
        let body = serde_json::to_vec(&command).unwrap();
        let js = js.clone();
        let subject = subject.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(i)).await;
            js.publish(subject, body.into())
                .await
                .unwrap()
                .await
                .unwrap()
        }
    });
    join_all(more).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let seq: Option<i64> =
                sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = $1")
                    .bind(&config.stream)
                    .fetch_optional(&db.pool)
                    .await
                    .unwrap();
            if seq == Some(2000) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every message committed");
    stop.cancel();
    running.await.unwrap().unwrap();
    // One event per message, positions in stream order, no repeat.
    let (events, distinct, in_order): (i64, i64, bool) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT stream_seq), bool_and(by_position = by_seq) FROM ( \
             SELECT stream_seq, row_number() OVER (ORDER BY position) AS by_position, \
                    row_number() OVER (ORDER BY stream_seq) AS by_seq FROM events) e",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((events, distinct, in_order), (2000, 2000, true));
}
