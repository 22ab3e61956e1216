//! Append throughput, in one run on a real PostgreSQL (fsync on):
//! `append_batch` beside the naive one-INSERT-per-event baseline, the same-schema COPY ceiling
//! and the hardware's COPY ceiling; then what each index of the log costs.
//!
//! `cargo bench --bench append` (both sizes) or `cargo bench --bench append -- 10000`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Instant;

use activity_store::log::copy::{Place, encode_events};
use activity_store::log::{EventLog, partitions};
use activity_store::model::{EventType, Lineage, NewEvent};
use chrono::{Duration, TimeZone, Utc};
use common::copy_rate;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use support::TestDb;

const BATCH: usize = 10_000;
const NAIVE_EVENTS: usize = 10_000;
const INDEX_COST_EVENTS: usize = 200_000;

/// The same events with time-ordered (UUIDv7) command ids, as producers are advised to use.
fn with_v7_ids(events: &[NewEvent]) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| NewEvent {
            command_id: uuid::Uuid::now_v7(),
            ..e.clone()
        })
        .collect()
}

fn events(n: usize) -> Vec<NewEvent> {
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            let data = json!({"path": format!("/catalog/items/{}", i % 5000), "session": uuid::Uuid::new_v4().to_string(),
                "ua": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101", "ref": "https://example.com/landing?c=winter",
                "n": i, "tags": ["web", "eu"]});
            let serde_json::Value::Object(data) = data else { unreachable!() };
            NewEvent {
                event_id: uuid::Uuid::now_v7(),
                command_id: uuid::Uuid::new_v4(),
                tenant: format!("tenant-{}", i % 10),
                user_id: Some(format!("user-{}", i % 10_000)),
                event_type: EventType::ActivityRecorded,
                activity_type: Some(["page.view", "login", "cart:add"][i % 3].into()),
                data,
                occurred_at: start + Duration::seconds((i as i64 * 7) % (90 * 86_400)),
                received_at: Utc::now(),
                lineage: Lineage { subject: Some("activity.commands.tenant".into()), stream_seq: Some(i as u64 + 1), delivery_count: Some(1) },
            }
        })
        .collect()
}

fn bar(n: usize, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:<34} [{bar:30}] {pos}/{len} {per_sec}").unwrap(),
    );
    pb.set_message(label.to_owned());
    pb
}

async fn migrated_log() -> (TestDb, EventLog) {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let first = partitions::Month::of(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    log.ensure_months(&partitions::Month::range(first, 4))
        .await
        .unwrap();
    (db, log)
}

async fn bench_append_batch(events: &[NewEvent]) -> f64 {
    let (_db, log) = migrated_log().await;
    let pb = bar(events.len(), "append_batch");
    let t = Instant::now();
    for chunk in events.chunks(BATCH) {
        log.append_batch(chunk).await.unwrap();
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    events.len() as f64 / t.elapsed().as_secs_f64()
}

fn payload(events: &[NewEvent]) -> Vec<u8> {
    let place = |position| Place {
        position,
        tenant_position: position,
    };
    encode_events((1..).map(place).zip(events.iter()))
}

async fn bench_same_schema_ceiling(events: &[NewEvent]) -> f64 {
    let (db, _log) = migrated_log().await;
    copy_rate(&db.pool, "events", payload(events), events.len()).await
}

async fn bench_hardware_ceiling(events: &[NewEvent]) -> f64 {
    let db = TestDb::migrated().await;
    sqlx::query("CREATE UNLOGGED TABLE raw_events AS SELECT * FROM events WITH NO DATA")
        .execute(&db.pool)
        .await
        .unwrap();
    copy_rate(&db.pool, "raw_events", payload(events), events.len()).await
}

async fn bench_naive(events: &[NewEvent]) -> f64 {
    let (db, _log) = migrated_log().await;
    let pb = bar(events.len(), "naive INSERT + COMMIT per event");
    let t = Instant::now();
    for (i, e) in events.iter().enumerate() {
        sqlx::query("INSERT INTO events (position, event_id, command_id, tenant, user_id, event_type, activity_type, \
             data, occurred_at, received_at, subject, stream_seq, delivery_count, tenant_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $1)")
            .bind(i as i64 + 1).bind(e.event_id).bind(e.command_id).bind(&e.tenant).bind(&e.user_id)
            .bind(e.event_type.as_str()).bind(&e.activity_type).bind(sqlx::types::Json(&e.data))
            .bind(e.occurred_at).bind(e.received_at).bind(&e.lineage.subject)
            .bind(e.lineage.stream_seq.map(|s| s as i64)).bind(e.lineage.delivery_count.map(|d| d as i32))
            .execute(&db.pool).await.unwrap();
        pb.inc(1);
    }
    pb.finish_and_clear();
    events.len() as f64 / t.elapsed().as_secs_f64()
}

async fn index_costs(events: &[NewEvent]) {
    println!(
        "\nwhat each index of the log costs ({} events, same-schema COPY):",
        events.len()
    );
    let variants: [(&str, &str); 4] = [
        ("the log as it is (pkey + tenant_user_time)", ""),
        (
            "without events_tenant_user_time",
            "DROP INDEX events_tenant_user_time",
        ),
        (
            "without events_pkey (position)",
            "ALTER TABLE events DROP CONSTRAINT events_pkey",
        ),
        (
            "plus a GIN index on data",
            "CREATE INDEX events_data_gin ON events USING gin (data jsonb_path_ops)",
        ),
    ];
    let mut base = 0.0;
    for (label, ddl) in variants {
        let (db, _log) = migrated_log().await;
        if !ddl.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let rate = copy_rate(&db.pool, "events", payload(events), events.len()).await;
        if base == 0.0 {
            base = rate;
        }
        println!(
            "  {label:<44} {rate:>12.0} events/s  {:>+6.1}%",
            (rate / base - 1.0) * 100.0
        );
    }
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let sizes: Vec<usize> = match std::env::args().skip(1).find_map(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![10_000, 1_000_000],
    };
    let naive = bench_naive(&events(NAIVE_EVENTS)).await;
    println!(
        "append bench: PostgreSQL on loopback, fsync on, batches of {BATCH}, ~260-byte metadata"
    );
    println!(
        "{:>9}  {:<44} {:>12}  {:>7} {:>7}",
        "events", "variant", "events/s", "v4 ÷", "v7 ÷"
    );
    for n in sizes {
        let evs = events(n);
        let ours = bench_append_batch(&evs).await;
        let ours_v7 = bench_append_batch(&with_v7_ids(&evs)).await;
        let same = bench_same_schema_ceiling(&evs).await;
        let hw = bench_hardware_ceiling(&evs).await;
        let rows = [
            ("append_batch (random UUIDv4 command ids)", ours),
            ("append_batch (time-ordered UUIDv7 ids)", ours_v7),
            ("same-schema COPY ceiling", same),
            ("hardware ceiling (unlogged, no index COPY)", hw),
            ("naive INSERT + COMMIT per event (10k, extrap.)", naive),
        ];
        for (label, rate) in rows {
            println!(
                "{n:>9}  {label:<44} {rate:>12.0}  {:>6.2}x {:>6.2}x",
                ours / rate,
                ours_v7 / rate
            );
        }
    }
    index_costs(&events(INDEX_COST_EVENTS)).await;
}
