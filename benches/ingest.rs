//! End-to-end ingest throughput, in one run on real servers (PostgreSQL with fsync on,
//! nats-server with file storage): N commands published to NATS and committed to the log by
//! the `activity-store run --ingest` binary, beside the raw publish ceiling of the same
//! messages, the same-schema COPY ceiling of the events they became, and the naive
//! one-INSERT-per-event baseline; plus the ingestor's peak RSS.
//!
//! `cargo bench --bench ingest` (10,000 then 1,000,000) or `cargo bench --bench ingest -- 100000`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use activity_store::log::EventLog;
use activity_store::log::copy::EVENT_COLUMNS;
use activity_store::model::{EventType, Lineage, NewEvent};
use async_nats::jetstream;
use chrono::Utc;
use common::{
    bar, commands, copy_ceiling, copy_rate, cpu_seconds, create_stream, empty_log_like,
    peak_rss_mib, publish, ready_store, stop,
};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use support::{TestDb, nats_url, unique_name};

const NAIVE_EVENTS: usize = 5_000;
/// Events per `append_batch` call when it is measured alone.
const APPEND_BATCH: usize = 10_000;

/// The ingestor's stages, as its histograms time them.
const STAGES: [(&str, &str); 5] = [
    (
        "pull (incl. waiting for messages)",
        "activity_ingest_pull_seconds_sum",
    ),
    ("decode", "activity_ingest_decode_seconds_sum"),
    (
        "commit (whole transaction)",
        "activity_ingest_commit_seconds_sum",
    ),
    (
        "  of which append (ledger + COPY)",
        "activity_append_seconds_sum",
    ),
    ("ack", "activity_ingest_ack_seconds_sum"),
];

/// (a) The same messages into a stream no one consumes.
async fn publish_ceiling(js: &jetstream::Context, commands: &[common::Cmd]) -> f64 {
    let prefix = unique_name("ceiling");
    create_stream(js, &prefix).await;
    let pb = bar(commands.len(), "raw publish ceiling");
    let t = Instant::now();
    publish(js, &prefix, commands, &pb, None).await;
    let rate = commands.len() as f64 / t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    js.delete_stream(prefix.to_uppercase()).await.unwrap();
    rate
}

struct EndToEnd {
    rate: f64,
    seconds: f64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    /// Seconds the ingestor spent in each stage, from its own histograms.
    stages: Vec<(&'static str, f64)>,
    /// The server's time by statement: (statement, calls, total ms).
    server: Vec<(String, i64, f64)>,
    /// The server's time in all the ingestor's statements, seconds.
    server_seconds: f64,
    db: TestDb,
}

/// The ingestor's `/metrics`, as a lookup of plain series by name.
async fn scrape(port: u16) -> impl Fn(&str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    move |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

/// Publish → ingest → commit, timed from the first publish to the commit of the last one.
async fn end_to_end(js: &jetstream::Context, commands: &[common::Cmd]) -> EndToEnd {
    let db = TestDb::migrated().await;
    let prefix = unique_name("e2e");
    let (child, port) = ready_store(&db, &prefix, &["--ingest"]).await;
    common::reset_statements(&db).await;
    let n = commands.len() as i64;
    let pb = bar(commands.len(), "end to end (committed)");
    let t = Instant::now();
    let hidden = ProgressBar::hidden();
    let publisher = publish(js, &prefix, commands, &hidden, None);
    let committed = async {
        loop {
            let seq = common::committed(&db, &prefix.to_uppercase()).await;
            pb.set_position(seq.unwrap_or(0) as u64);
            if seq == Some(n) {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let ((), elapsed) = tokio::join!(publisher, committed);
    pb.finish_and_clear();
    let peak_rss_mib = peak_rss_mib(child.id().unwrap());
    let cpu_seconds = cpu_seconds(child.id().unwrap());
    let metrics = scrape(port).await;
    stop(child).await;
    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(appended, n, "every command became one event");
    EndToEnd {
        rate: n as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        peak_rss_mib,
        cpu_seconds,
        stages: STAGES
            .iter()
            .map(|(label, series)| (*label, metrics(series)))
            .collect(),
        server: common::server_time(&db, 16).await,
        server_seconds: common::server_seconds(&db).await,
        db,
    }
}

/// The events of the run, read back in log order.
async fn events_of(source: &PgPool) -> Vec<NewEvent> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS}, event_type FROM events ORDER BY position"
    )))
    .fetch_all(source)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| NewEvent {
            event_id: r.1,
            command_id: r.2,
            tenant: r.3,
            user_id: r.4,
            event_type: match r.14.as_str() {
                "tenant_created" => EventType::TenantCreated,
                "user_registered" => EventType::UserRegistered,
                _ => EventType::ActivityRecorded,
            },
            activity_type: r.6,
            data: match r.7 {
                serde_json::Value::Object(map) => map,
                _ => Default::default(),
            },
            occurred_at: r.8,
            received_at: r.9,
            lineage: Lineage {
                subject: r.10,
                stream_seq: r.11.map(|s| s as u64),
                delivery_count: r.12.map(|d| d as u64),
            },
        })
        .collect()
}

/// `append_batch` alone: the run's events into an empty log, in batches of `APPEND_BATCH`,
/// through a writer login (the path the database checks), as the ingestor appends.
async fn append_alone(source: &PgPool) -> f64 {
    let events = events_of(source).await;
    let target = empty_log_like(source).await;
    let writer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&common::writer_url(&target).await)
        .await
        .unwrap();
    let log = EventLog::open(writer).await.unwrap();
    let pb = bar(events.len(), "append_batch alone");
    let t = Instant::now();
    for chunk in events.chunks(APPEND_BATCH) {
        log.append_batch(chunk).await.unwrap();
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    events.len() as f64 / t.elapsed().as_secs_f64()
}

/// The run's events for one shard: every other one, its tenant renamed, as binary COPY rows.
async fn shard_rows(source: &PgPool, shard: i64) -> (Vec<u8>, usize) {
    let columns =
        EVENT_COLUMNS.replacen("tenant,", &format!("'shard-{shard}'::text AS tenant,"), 1);
    let statement = format!(
        "COPY (SELECT {columns} FROM events WHERE position % 2 = {shard} ORDER BY position) \
         TO STDOUT (FORMAT binary)"
    );
    let mut out = source.copy_out_raw(&statement).await.unwrap();
    let mut payload = Vec::new();
    while let Some(chunk) = out.next().await {
        payload.extend_from_slice(&chunk.unwrap());
    }
    drop(out);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position % 2 = $1")
        .bind(shard)
        .fetch_one(source)
        .await
        .unwrap();
    (payload, n as usize)
}

/// Two appenders at once into one log, on disjoint tenants: two COPYs on two connections,
/// each in its own transaction. Returns their combined rate.
async fn two_appenders(source: &PgPool) -> f64 {
    let ((a, na), (b, nb)) = (shard_rows(source, 0).await, shard_rows(source, 1).await);
    let target = empty_log_like(source).await;
    let (ra, rb) = tokio::join!(
        copy_rate(&target.pool, "events", a, na),
        copy_rate(&target.pool, "events", b, nb)
    );
    let slowest = (na as f64 / ra).max(nb as f64 / rb);
    (na + nb) as f64 / slowest
}

type Row = (
    i64,
    uuid::Uuid,
    uuid::Uuid,
    String,
    Option<String>,
    String,
    Option<String>,
    serde_json::Value,
    chrono::DateTime<Utc>,
    chrono::DateTime<Utc>,
    Option<String>,
    Option<i64>,
    Option<i32>,
    i64,
    String,
);

/// (c) The naive baseline: the first events of the run, one INSERT and COMMIT each.
async fn naive(source: &PgPool) -> f64 {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS}, event_type FROM events ORDER BY position LIMIT {NAIVE_EVENTS}"
    )))
    .fetch_all(source)
    .await
    .unwrap();
    let target = empty_log_like(source).await;
    let insert = format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    );
    let pb = bar(rows.len(), "naive INSERT + COMMIT per event");
    let t = Instant::now();
    for r in &rows {
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(r.0)
            .bind(r.1)
            .bind(r.2)
            .bind(&r.3)
            .bind(&r.4)
            .bind(&r.5)
            .bind(&r.6)
            .bind(&r.7)
            .bind(r.8)
            .bind(r.9)
            .bind(&r.10)
            .bind(r.11)
            .bind(r.12)
            .bind(r.13)
            .execute(&target.pool)
            .await
            .unwrap();
        pb.inc(1);
    }
    pb.finish_and_clear();
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let sizes: Vec<usize> = match std::env::args().skip(1).find_map(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![10_000, 1_000_000],
    };
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    println!(
        "ingest bench: PostgreSQL on loopback (fsync on), nats-server file storage, ~330-byte commands"
    );
    println!(
        "{:>9}  {:<44} {:>12}  {:>9}",
        "commands", "variant", "events/s", "e2e ÷"
    );
    for n in sizes {
        let cmds = commands(n);
        let ceiling = publish_ceiling(&js, &cmds).await;
        let e2e = end_to_end(&js, &cmds).await;
        let copy = copy_ceiling(&e2e.db.pool).await;
        let naive = naive(&e2e.db.pool).await;
        let append = append_alone(&e2e.db.pool).await;
        let two = two_appenders(&e2e.db.pool).await;
        let rows = [
            ("end to end: publish → ingest → commit", e2e.rate),
            ("(a) raw publish ceiling (same messages)", ceiling),
            ("(b) same-schema COPY ceiling (same events)", copy),
            ("(c) naive INSERT + COMMIT per event (5k)", naive),
            ("append_batch alone (10k batches, writer)", append),
            ("two COPYs at once, disjoint tenants", two),
        ];
        for (label, rate) in rows {
            println!(
                "{n:>9}  {label:<44} {rate:>12.0}  {:>8.2}x",
                e2e.rate / rate
            );
        }
        println!("{n:>9}  goals:");
        let goals = [
            (
                "end to end ÷ COPY ceiling",
                e2e.rate / copy,
                ">= 0.80",
                e2e.rate / copy >= 0.8,
            ),
            (
                "end to end ÷ naive",
                e2e.rate / naive,
                ">= 20",
                e2e.rate / naive >= 20.0,
            ),
            (
                "append_batch ÷ COPY ceiling",
                append / copy,
                ">= 0.90",
                append / copy >= 0.9,
            ),
            ("two COPYs ÷ one COPY", two / copy, "(measured)", true),
            (
                "ingestor peak RSS, MiB",
                e2e.peak_rss_mib,
                "< 150",
                e2e.peak_rss_mib < 150.0,
            ),
        ];
        let mut goals = goals.to_vec();
        if n == 10_000 {
            goals.push((
                "10,000 end to end, s",
                e2e.seconds,
                "< 0.3",
                e2e.seconds < 0.3,
            ));
        }
        for (label, value, goal, met) in goals {
            let verdict = if met { "met" } else { "MISSED" };
            println!("{n:>9}    {label:<32} {value:>9.2}  goal {goal:<10} {verdict}");
        }
        println!(
            "{n:>9}  end to end took {:.3} s; ingestor peak RSS {:.1} MiB, {:.1} CPU seconds",
            e2e.seconds, e2e.peak_rss_mib, e2e.cpu_seconds
        );
        println!("{n:>9}  where the ingestor's time went (seconds, stages may overlap):");
        for (label, seconds) in &e2e.stages {
            println!("{n:>9}    {label:<42} {seconds:>8.2}");
        }
        println!(
            "{n:>9}  where the server's time went (pg_stat_statements): {:.2} s in the ingestor's \
             statements, one after another under the append lock: a limit of {:.0} events/s",
            e2e.server_seconds,
            n as f64 / e2e.server_seconds
        );
        for (statement, calls, ms) in &e2e.server {
            println!("{n:>9}    {ms:>9.0} ms {calls:>7} calls  {statement}");
        }
    }
}
