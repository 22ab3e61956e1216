//! What the store needs from JetStream, proven against the nats-server the project installs
//! (Debian's 2.9): a file stream with a dedupe window, `Nats-Msg-Id`, a durable pull consumer
//! with explicit acks and redelivery, and a KV bucket whose `max_age` is the entries' TTL.

use std::time::Duration;

use activity_store::cache::ensure_bucket;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;

use crate::support::{nats_url, unique_name};

#[tokio::test]
async fn stream_dedupe_pull_consumer_and_redelivery() {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let name = unique_name("S").to_uppercase();
    let subject = format!("{}.commands.>", name.to_lowercase());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("create a file stream with a duplicate window");
    let subj = format!("{}.commands.acme", name.to_lowercase());
    for id in ["a", "a", "b"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let ack = js
            .publish_with_headers(subj.clone(), headers, "{}".into())
            .await
            .unwrap();
        ack.await.expect("the stream acknowledges the publish");
    }
    let consumer = stream
        .get_or_create_consumer(
            "ingest",
            pull::Config {
                durable_name: Some("ingest".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await
        .expect("create a durable pull consumer");
    let batch: Vec<_> = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(
        batch.len(),
        2,
        "the second publish with id `a` was deduplicated"
    );
    let first = batch.into_iter().next().unwrap().unwrap();
    assert_eq!(first.info().unwrap().stream_sequence, 1);
    first.ack().await.unwrap();
    // The un-acked one comes back after ack_wait, with a higher delivery count.
    let again: Vec<_> = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(again.len(), 1);
    let m = again.into_iter().next().unwrap().unwrap();
    let info = m.info().unwrap();
    assert_eq!((info.stream_sequence, info.delivered), (2, 2));
    m.ack().await.unwrap();
}

#[tokio::test]
async fn bucket_names_are_checked() {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let e = ensure_bucket(&js, "has.dot", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`has.dot` is not a valid KV bucket name"),
        "{e}"
    );
}

#[tokio::test]
async fn kv_bucket_with_max_age_as_ttl() {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let bucket = unique_name("kv");
    let store = ensure_bucket(&js, &bucket, Duration::from_secs(60))
        .await
        .expect("create a KV bucket");
    assert_eq!(
        store.status().await.unwrap().max_age(),
        Duration::from_secs(60)
    );
    let store = ensure_bucket(&js, &bucket, Duration::from_secs(1))
        .await
        .expect("a new TTL updates the bucket");
    let rev = store
        .put("user_summary.v1.acme.u1", "{}".into())
        .await
        .unwrap();
    assert_eq!(
        store
            .get("user_summary.v1.acme.u1")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{}"[..])
    );
    store
        .update("user_summary.v1.acme.u1", "{\"n\":1}".into(), rev)
        .await
        .expect("compare-and-set on the revision");
    assert!(
        store
            .update("user_summary.v1.acme.u1", "{}".into(), rev)
            .await
            .is_err(),
        "a stale revision is refused"
    );
    let status = store.status().await.unwrap();
    assert_eq!(status.max_age(), Duration::from_secs(1));
    // Server-side expiry: poll with a deadline rather than sleep a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store
        .get("user_summary.v1.acme.u1")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the entry outlived max_age"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
