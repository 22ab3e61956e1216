//! `cargo bench --bench memory [MESSAGES]`: memory stays bounded whatever arrives. 2,000
//! messages of 900 KiB (by default) are published to a running `activity-store run
//! --ingest`; each is refused as too large and kept as a bounded dead letter. Prints the
//! ingestor's peak RSS beside the goal (< 150 MiB) and checks the dead letters' sizes.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::{bar, peak_rss_mib, publish, ready_store, stop};
use support::{TestDb, nats_url, unique_name};

const MESSAGE_BYTES: usize = 900 * 1024;
const GOAL_MIB: f64 = 150.0;

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let db = TestDb::migrated().await;
    let prefix = unique_name("mem");
    let (child, _port) = ready_store(&db, &prefix, &["--ingest"]).await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let messages: Vec<common::Cmd> = (0..n)
        .map(|i| {
            let mut body = format!(
                r#"{{"type":"create_tenant","id":"{}","tenant":"t{i}","name":"x"}}"#,
                uuid::Uuid::new_v4()
            )
            .into_bytes();
            body.resize(MESSAGE_BYTES, b' ');
            (
                uuid::Uuid::new_v4().to_string(),
                "acme".to_owned(),
                Bytes::from(body),
            )
        })
        .collect();
    let pb = bar(n, "900 KiB messages published");
    let t = Instant::now();
    publish(&js, &prefix, &messages, &pb, None).await;
    pb.finish_and_clear();
    loop {
        if common::committed(&db, &prefix.to_uppercase()).await == Some(n as i64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib(child.id().unwrap());
    stop(child).await;
    let (letters, largest, lengths): (i64, i32, i64) = sqlx::query_as(
        "SELECT count(*), max(length(raw)), min(raw_length) FROM dead_letters WHERE reason = 'too_large'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(letters, n as i64, "every message is a dead letter");
    assert!(largest as usize <= activity_store::ingest::DEAD_LETTER_RAW_PREFIX);
    assert_eq!(lengths as usize, MESSAGE_BYTES);
    let mark = if peak < GOAL_MIB { "✔" } else { "✘" };
    println!(
        "memory: {n} messages of 900 KiB ({:.0} MiB) ingested in {seconds:.1} s; each kept as a \
         {largest}-byte prefix with its length and SHA-256\n  ingestor peak RSS {peak:.1} MiB \
         (goal < {GOAL_MIB} MiB) {mark}",
        (n * MESSAGE_BYTES) as f64 / (1 << 20) as f64
    );
}
