//! What the benches share: the commands producers send, publishing them, running the store
//! binary, progress bars and memory readings.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::process::{Child, Command};

use activity_store::log::copy::EVENT_COLUMNS;
use activity_store::log::{EventLog, partitions};
use futures_util::StreamExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;

use crate::support::{TestDb, nats_url, unique_name};

mod statements;
#[allow(unused_imports)]
pub use statements::{reset_statements, server_seconds, server_time};

pub const USERS: usize = 1_000;
/// Publishes awaiting their acks at once, as `activity-store publish` keeps them.
const IN_FLIGHT: usize = 1_024;

/// A command as producers send it: its id, its tenant (the subject's last token), its body.
pub type Cmd = (String, String, Bytes);

/// A tenant, its users, then activities: `n` commands in all, as producers send them.
pub fn commands(n: usize) -> Vec<Cmd> {
    commands_over(n, &["acme".to_owned()])
}

/// `commands` over several tenants: each created first, then [`USERS`] users dealt out to
/// them in turn, then activities in turn (user `u` of tenant `t` has `u % tenants == t`).
pub fn commands_over(n: usize, tenants: &[String]) -> Vec<Cmd> {
    let first = Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap();
    let k = tenants.len();
    assert!(USERS % k == 0, "users dealt out evenly");
    let mut out: Vec<serde_json::Value> = tenants
        .iter()
        .map(|t| json!({"type": "create_tenant", "tenant": t, "name": t}))
        .collect();
    out.extend((0..USERS.min(n.saturating_sub(k))).map(|u| {
        json!({"type": "register_user", "tenant": tenants[u % k], "user": format!("user-{u}"),
            "email": format!("user-{u}@example.com"), "name": format!("User {u}")})
    }));
    let activities = n.saturating_sub(out.len());
    out.extend((0..activities).map(|i| {
        let at = first + chrono::Duration::seconds((i as i64 * 7) % (90 * 86_400));
        let user = i % USERS;
        json!({"type": "record_activity", "tenant": tenants[i % k], "user": format!("user-{user}"),
            "activity_type": (["page.view", "login", "cart:add"][i % 3]),
            "occurred_at": at.to_rfc3339(),
            "metadata": {"path": format!("/catalog/items/{}", i % 5000), "session": uuid::Uuid::new_v4().to_string(),
                "ua": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101", "ref": "https://example.com/landing?c=winter",
                "n": i, "tags": ["web", "eu"]}})
    }));
    out.into_iter()
        .map(|mut c| {
            let id = uuid::Uuid::now_v7().to_string();
            c["id"] = json!(id);
            let tenant = c["tenant"].as_str().unwrap().to_owned();
            (id, tenant, serde_json::to_vec(&c).unwrap().into())
        })
        .collect()
}

pub fn bar(n: usize, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:<34} [{bar:30}] {pos}/{len} {per_sec}").unwrap(),
    );
    pb.set_message(label.to_owned());
    pb
}

pub async fn create_stream(js: &jetstream::Context, prefix: &str) {
    js.create_stream(stream::Config {
        name: prefix.to_uppercase(),
        subjects: vec![format!("{prefix}.commands.*")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Publishes every command with `Nats-Msg-Id`, keeping `IN_FLIGHT` acks outstanding.
/// With `rate`, at most that many a second.
pub async fn publish(
    js: &jetstream::Context,
    prefix: &str,
    commands: &[Cmd],
    pb: &ProgressBar,
    rate: Option<f64>,
) {
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let started = tokio::time::Instant::now();
    for (i, (id, tenant, body)) in commands.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due).await;
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers(format!("{prefix}.commands.{tenant}"), headers, body.clone())
            .await
            .unwrap();
        in_flight.push_back(ack);
        if in_flight.len() >= IN_FLIGHT {
            in_flight.pop_front().unwrap().await.unwrap();
            pb.inc(1);
        }
    }
    for ack in in_flight {
        ack.await.unwrap();
        pb.inc(1);
    }
}

/// The store binary running `roles` (e.g. `--ingest`) against the test servers; extra flags
/// come from `INGEST_ARGS`.
pub fn store(
    db: &TestDb,
    ingest_url: &str,
    prefix: &str,
    metrics_port: u16,
    roles: &[&str],
) -> Child {
    store_on(db, (ingest_url, &nats_url()), prefix, metrics_port, roles)
}

/// `store`, against the NATS server at `nats`.
pub fn store_on(
    db: &TestDb,
    (ingest_url, nats): (&str, &str),
    prefix: &str,
    metrics_port: u16,
    roles: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("run")
        .args(roles)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .args(["--stream", &prefix.to_uppercase(), "--subject-prefix"])
        .arg(format!("{prefix}.commands"))
        .env("DATABASE_URL", db.url())
        .env("INGEST_DATABASE_URL", ingest_url)
        .env("NATS_URL", nats)
        .env("RUST_LOG", "warn")
        .args(
            std::env::var("INGEST_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start the ingestor")
}

pub async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    s.write_all(req.as_bytes()).await.is_ok()
        && s.read_to_string(&mut response).await.is_ok()
        && response.starts_with("HTTP/1.1 200")
}

/// Peak resident set of a process, from the kernel's high-water mark, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// One plain binary COPY of pre-encoded rows into `table`, in one transaction; nothing else
/// is timed. Returns rows a second.
pub async fn copy_rate(pool: &sqlx::PgPool, table: &str, payload: Vec<u8>, n: usize) -> f64 {
    let columns = activity_store::log::copy::EVENT_COLUMNS;
    let mut conn = pool.acquire().await.unwrap();
    let t = std::time::Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .unwrap();
    copy.send(payload).await.unwrap();
    copy.finish().await.unwrap();
    tx.commit().await.unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the store binary and waits until it is ready.
pub async fn ready_store(db: &TestDb, prefix: &str, roles: &[&str]) -> (Child, u16) {
    ready_store_on(db, prefix, roles, &nats_url()).await
}

/// `ready_store`, against the NATS server at `nats`.
pub async fn ready_store_on(db: &TestDb, prefix: &str, roles: &[&str], nats: &str) -> (Child, u16) {
    let port = free_port();
    let ingest_url = writer_url(db).await;
    let mut child = store_on(db, (&ingest_url, nats), prefix, port, roles);
    while !ready(port).await {
        assert!(child.try_wait().unwrap().is_none(), "the store exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, port)
}

/// SIGTERM, and the clean exit it must lead to.
pub async fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().await.unwrap().success());
}

/// The last stream sequence the store committed for `stream` (its checkpoint), if any.
pub async fn committed(db: &TestDb, stream: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = $1")
        .bind(stream)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

/// A login in `activity_writer`, as `up` makes for the ingestor: its appends go through the
/// path the database checks, as in production.
pub async fn writer_url(db: &TestDb) -> String {
    let user = crate::support::unique_name("ingest");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'pw' IN ROLE activity_writer"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    db.url_as(&user, "pw")
}

/// Users `seed_log` registers, over 10 tenants (`t0`..`t9`; user `uJ` in tenant `t(J % 10)`).
pub const SEED_USERS: i64 = 10_000;

/// Registrations of 10,000 users over 10 tenants, then `n` activities over 3 months.
pub async fn seed_log(n: i64) -> TestDb {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let first = partitions::Month::of(Utc.with_ymd_and_hms(2026, 8, 1, 0, 0, 0).unwrap());
    let mut months = partitions::Month::range(first, 4);
    months.push(partitions::Month::of(Utc::now()));
    log.ensure_months(&months).await.unwrap();
    let pb = ProgressBar::new_spinner().with_message(format!("seeding the log with {n} events"));
    pb.enable_steady_tick(Duration::from_millis(200));
    sqlx::query(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, data, occurred_at, received_at) \
         SELECT nextval('events_position_seq'), currval('events_position_seq'), gen_random_uuid(), gen_random_uuid(), \
                't' || (j % 10), 'u' || j, 'user_registered', \
                jsonb_build_object('email', 'u' || j || '@example.com', 'name', 'User ' || j), \
                now(), now() \
         FROM generate_series(0, $1 - 1) j",
    )
    .bind(SEED_USERS)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, activity_type, data, occurred_at, received_at) \
         SELECT nextval('events_position_seq'), currval('events_position_seq'), gen_random_uuid(), gen_random_uuid(), \
                't' || (i % $2 % 10), 'u' || (i % $2), 'activity_recorded', \
                (ARRAY['page.view', 'login', 'cart:add'])[1 + i % 3], \
                jsonb_build_object('path', '/catalog/items/' || (i % 5000), 'n', i, 'tags', \
                                   jsonb_build_array('web', 'eu')), \
                timestamptz '2026-08-01 00:00:00+00' + ((i * 7) % (90 * 86400)) * interval '1 second', \
                now() \
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .bind(SEED_USERS)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events")
        .execute(&db.pool)
        .await
        .unwrap();
    pb.finish_and_clear();
    db
}

/// The bench's first numeric argument (`cargo bench --bench X -- 100000`), else `default`.
pub fn count_arg(default: i64) -> i64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A numeric setting from the environment, else `default`.
pub fn env_or(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Publishes at `rate` for `seconds` to the store running both roles, and samples, each time
/// the feed's checkpoint moves, how long ago each newly visible event was appended.
pub async fn live_lag(db: TestDb, rate: f64, seconds: f64, tenants: &[String]) -> (Vec<f64>, f64) {
    let prefix = unique_name("lag");
    let (child, _) = ready_store(&db, &prefix, &["--ingest", "--project"]).await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let cmds = commands_over((rate * seconds) as usize, tenants);
    let pb = bar(cmds.len(), "live lag: publishing");
    let publisher = publish(&js, &prefix, &cmds, &pb, Some(rate));
    let mut samples = Vec::new();
    let sampler = async {
        // Each shard's checkpoint of the feed, as last seen.
        let mut seen: std::collections::HashMap<i32, i64> = Default::default();
        let total = cmds.len();
        let mut folded = 0;
        while folded < total {
            let now: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT shard, position FROM shard_checkpoints WHERE projection = 'activity_feed'",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
            for (shard, now) in now {
                let was = *seen.entry(shard).or_insert((shard as i64) << 48);
                if now > was {
                    let lags: Vec<(String, f64)> = sqlx::query_as(
                        "SELECT event_type, extract(epoch FROM clock_timestamp() - recorded_at)::float8 \
                         FROM events WHERE position > $1 AND position <= $2",
                    )
                    .bind(was)
                    .bind(now)
                    .fetch_all(&db.pool)
                    .await
                    .unwrap();
                    folded += lags.len();
                    samples.extend(
                        lags.into_iter()
                            .filter(|(t, _)| t == "activity_recorded")
                            .map(|(_, lag)| lag),
                    );
                    seen.insert(shard, now);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let t = Instant::now();
    tokio::join!(publisher, sampler);
    let achieved = cmds.len() as f64 / t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    stop(child).await;
    samples.sort_by(f64::total_cmp);
    (samples, achieved)
}

/// The value at fraction `p` of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A fresh log with the partitions the events need.
pub async fn empty_log_like(source: &PgPool) -> TestDb {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let (lo, hi): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT min(occurred_at), max(occurred_at) FROM events")
            .fetch_one(source)
            .await
            .unwrap();
    let (first, last) = (partitions::Month::of(lo), partitions::Month::of(hi));
    let mut months = vec![first];
    while *months.last().unwrap() != last {
        months.push(months.last().unwrap().next());
    }
    log.ensure_months(&months).await.unwrap();
    db
}

/// (b) The events the run appended, copied out and COPYed into an empty log in one
/// transaction: the same rows, the same schema, nothing else timed.
pub async fn copy_ceiling(source: &PgPool) -> f64 {
    let statement = format!(
        "COPY (SELECT {EVENT_COLUMNS} FROM events ORDER BY position) TO STDOUT (FORMAT binary)"
    );
    let mut out = source.copy_out_raw(&statement).await.unwrap();
    let mut payload = Vec::new();
    while let Some(chunk) = out.next().await {
        payload.extend_from_slice(&chunk.unwrap());
    }
    drop(out);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(source)
        .await
        .unwrap();
    let target = empty_log_like(source).await;
    copy_rate(&target.pool, "events", payload, n as usize).await
}
