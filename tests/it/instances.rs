//! Instances share the work: `run --ingest --project` processes on one database and one NATS
//! (routing commands to 4 partitions by the server's `partition()` mapping) divide the ingest
//! partitions and the shards' folds between them. Under load, one is killed with SIGKILL and
//! the other takes its partitions and shards; a third joins and is given a share; the
//! second is stopped with SIGSTOP and loses its share after the lease's time to live, then
//! wakes. Every command is applied exactly once, each tenant's in the order published, and
//! the views hold every activity.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use activity_store::ingest::partitions;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::mapped::{holdings, mapped_nats};
use crate::support::{TestDb, unique_name};

pub(crate) const PARTITIONS: u32 = 4;
pub(crate) const TENANTS: usize = 16;
pub(crate) const USERS: usize = 5;
const ACTIVITIES: usize = 6_000;

pub(crate) fn instance(db: &TestDb, nats: &str, stream: &str, prefix: &str) -> Child {
    instance_with(db, nats, (stream, prefix), &[])
}

/// `instance`, with `extra` flags.
pub(crate) fn instance_with(
    db: &TestDb,
    nats: &str,
    (stream, prefix): (&str, &str),
    extra: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "run",
            "--ingest",
            "--project",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--lease-ttl-secs", "2", "--ack-wait-secs", "2"])
        .args(["--stream", stream, "--subject-prefix", prefix])
        .args(extra)
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start an instance")
}

pub(crate) fn os_pid(child: &Child) -> i32 {
    child.id().expect("running") as i32
}

/// Waits until every lead and fold lease is held and `want` says the division is right.
pub(crate) async fn divided(
    db: &TestDb,
    streams: &[String],
    what: &str,
    want: impl Fn(&BTreeMap<i32, usize>, &BTreeMap<i32, usize>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (leads, folds) = holdings(&db.pool, streams).await;
        if want(&leads, &folds) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{what}: leads {leads:?}, folds {folds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn commands() -> Vec<(String, Value)> {
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("t{t}")).collect();
    let mut out = Vec::new();
    for t in &tenants {
        out.push((
            t.clone(),
            json!({"type": "create_tenant", "tenant": t, "name": t}),
        ));
        for u in 0..USERS {
            out.push((
                t.clone(),
                json!({"type": "register_user", "tenant": t, "user": format!("u{u}"),
                                        "email": format!("u{u}@example.com")}),
            ));
        }
    }
    for i in 0..ACTIVITIES {
        let t = &tenants[i % TENANTS];
        out.push((
            t.clone(),
            json!({"type": "record_activity", "tenant": t,
            "user": format!("u{}", (i / TENANTS) % USERS), "activity_type": "view",
            "metadata": {"n": i}}),
        ));
    }
    for (_, c) in &mut out {
        c["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    out
}

/// Publishes every command to `<prefix>.<tenant>` with its id, each retried until acked.
pub(crate) async fn publish(nats: String, prefix: String, commands: Vec<(String, Value)>) {
    // Any of a cluster's seeds, comma-separated, as the store takes them.
    let js = async_nats::jetstream::new(activity_store::nats::connect(&nats).await.unwrap());
    for (tenant, c) in commands {
        let id = c["id"].as_str().unwrap().to_owned();
        let body: bytes::Bytes = serde_json::to_vec(&c).unwrap().into();
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let acked = match js
                .publish_with_headers(format!("{prefix}.{tenant}"), headers, body.clone())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until all `total` commands are applied, then checks each is in the log once, none
/// was refused, and each tenant's are in the order they were published.
pub(crate) async fn every_command_once_in_tenant_order(db: &TestDb, total: i64) {
    wait_until(
        db,
        "every command applied",
        "SELECT (SELECT count(*) FROM command_ledger) + (SELECT count(*) FROM dead_letters)",
        total,
    )
    .await;
    let (events, distinct, dead): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT command_id) FROM events), \
         (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (events, distinct, dead),
        (total, total, 0),
        "exactly once, none refused"
    );
    let out_of_order = count(
        db,
        "SELECT count(*) FROM (SELECT stream_seq AS n, \
         lag(stream_seq) OVER (PARTITION BY tenant ORDER BY tenant_position) AS prev \
         FROM events) s WHERE n <= prev",
    )
    .await;
    assert_eq!(
        out_of_order, 0,
        "each tenant's commands in the order published"
    );
}

pub(crate) async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

pub(crate) async fn wait_until(db: &TestDb, what: &str, sql: &'static str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = count(db, sql).await;
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n}, not {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn instances_divide_partitions_and_shards_and_take_over_from_a_killed_or_hung_one() {
    let db = TestDb::migrated().await;
    partitions::set(&db.pool, PARTITIONS).await.unwrap();
    let name = unique_name("inst");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let (stream, prefix) = (name.to_uppercase(), format!("{name}.commands"));
    let streams: Vec<String> = partitions::streams(&stream, "d", PARTITIONS)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let (_nats, nats) = mapped_nats(&dir, &prefix, PARTITIONS);

    let mut a = instance(&db, &nats, &stream, &prefix);
    let mut b = instance(&db, &nats, &stream, &prefix);
    let (pa, pb) = (os_pid(&a), os_pid(&b));
    divided(&db, &streams, "two divide", |leads, folds| {
        [leads, folds]
            .iter()
            .all(|m| m.get(&pa) == Some(&2) && m.get(&pb) == Some(&2))
    })
    .await;

    let all = commands();
    let activities = all.len() as i64 - (TENANTS * (USERS + 1)) as i64;
    let total = all.len() as i64;
    let publisher = tokio::spawn(publish(nats.clone(), prefix.clone(), all));
    while count(&db, "SELECT count(*) FROM events").await < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // kill -9 under load: the survivor takes every partition and shard.
    kill(Pid::from_raw(pa), Signal::SIGKILL).unwrap();
    a.wait().await.unwrap();
    let took = divided(&db, &streams, "the survivor takes all", |leads, folds| {
        [leads, folds]
            .iter()
            .all(|m| m.get(&pb) == Some(&4) && m.len() == 1)
    })
    .await;
    eprintln!("after kill -9, the survivor held every lead and shard in {took:?}");

    // A third joins and is given a share.
    let mut c = instance(&db, &nats, &stream, &prefix);
    let pc = os_pid(&c);
    divided(
        &db,
        &streams,
        "a newcomer is given a share",
        |leads, folds| {
            [leads, folds]
                .iter()
                .all(|m| m.get(&pb) == Some(&2) && m.get(&pc) == Some(&2))
        },
    )
    .await;

    // A hang: stopped, its sessions idle out after the 2 s lease and the other takes over.
    kill(Pid::from_raw(pb), Signal::SIGSTOP).unwrap();
    let took = divided(
        &db,
        &streams,
        "the other takes a hung one's share",
        |leads, folds| {
            [leads, folds]
                .iter()
                .all(|m| m.get(&pc) == Some(&4) && m.len() == 1)
        },
    )
    .await;
    eprintln!("after SIGSTOP, the other held every lead and shard in {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "not before the lease's ttl: {took:?}"
    );
    kill(Pid::from_raw(pb), Signal::SIGCONT).unwrap();

    publisher.await.unwrap();
    // Woken, it learns its leases are gone, and joins again: nothing it does is doubled.
    divided(&db, &streams, "the woken one rejoins", |leads, folds| {
        [leads, folds]
            .iter()
            .all(|m| m.get(&pb) == Some(&2) && m.get(&pc) == Some(&2))
    })
    .await;
    every_command_once_in_tenant_order(&db, total).await;
    // Each tenant's commands came through its one partition, as the server routed them.
    let routed = count(
        &db,
        "SELECT count(*) FROM (SELECT tenant FROM events GROUP BY tenant \
         HAVING count(DISTINCT subject) = 1) t",
    )
    .await;
    assert_eq!(routed, TENANTS as i64);
    wait_until(
        &db,
        "every activity folded",
        "SELECT count(*) FROM analytics.activity_feed",
        activities,
    )
    .await;
    wait_until(
        &db,
        "every summary folded",
        "SELECT coalesce(sum(events), 0)::bigint FROM analytics.user_summary",
        activities,
    )
    .await;
    // An erasure finds the tenant's commands in its own partition's stream.
    let config = activity_store::erase::EraseConfig {
        subject_prefix: prefix.clone(),
        stream: stream.clone(),
        bucket_prefix: String::new(),
        wait: Duration::from_secs(60),
    };
    let js = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap());
    let receipt = activity_store::erase::forget(&db.pool, &js, &config, "t0", "u0", |_| {})
        .await
        .unwrap();
    assert!(receipt.log_events > 0, "{receipt:?}");
    assert!(
        receipt.stream_messages > 0,
        "the partition's committed commands purged: {receipt:?}"
    );
    assert!(receipt.stream_left.is_empty(), "{receipt:?}");
    assert_eq!(receipt.read_model_rows, 0);
    // `status` shows each partition's stream, its lead and its consumer.
    let config = activity_store::status::StatusConfig {
        stream: stream.clone(),
        ..Default::default()
    };
    let status = activity_store::status::gather(&db.pool, Some(&js), &config)
        .await
        .unwrap();
    let mut listed: Vec<String> = status.ingest.iter().map(|i| i.stream.clone()).collect();
    listed.sort();
    assert_eq!(listed, streams);
    for i in &status.ingest {
        assert!(i.leader.is_some() && i.nats.is_some(), "{i:?}");
    }
    assert!(status.problems.is_empty(), "{:?}", status.problems);
    for child in [&mut b, &mut c] {
        child.kill().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_partition_count_is_one_row_between_1_and_1024_that_only_the_owner_sets() {
    let db = TestDb::migrated().await;
    assert_eq!(
        partitions::count(&db.pool).await.unwrap(),
        1,
        "the one stream of before"
    );
    for bad in [0_u32, 1025] {
        let refused = partitions::set(&db.pool, bad).await.unwrap_err();
        assert_eq!(refused.code().as_deref(), Some("23514"), "{bad}: {refused}");
    }
    let second =
        sqlx::query("INSERT INTO ingest_partitions (only_one, partitions) VALUES (false, 2)")
            .execute(&db.pool)
            .await;
    assert_eq!(crate::fixtures::sqlstate(second), "23514", "one row only");
    let (_, writer) = crate::fixtures::login_in(&db, "activity_writer").await;
    assert_eq!(
        partitions::count(&writer).await.unwrap(),
        1,
        "the writer reads it"
    );
    let set = partitions::set(&writer, 2).await.unwrap_err();
    assert_eq!(
        set.code().as_deref(),
        Some("42501"),
        "only the owner sets it: {set}"
    );
}
