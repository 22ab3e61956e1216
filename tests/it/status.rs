//! `status`: what an operator needs to see at once, each figure read from where it lives,
//! and a verdict (healthy or degraded, with the reasons) that scripts can use.

use std::time::Duration;

use activity_store::project::{ProjectConfig, Projector};
use activity_store::status::{self, StatusConfig};
use serde_json::json;

use crate::fixtures::login_in;
use crate::ingest_support::{Pipeline, activity, create_tenant, register};
use crate::project_support::ReadSide;

fn config(p: Option<&Pipeline>) -> StatusConfig {
    StatusConfig {
        stream: p.map_or("ACTIVITY".into(), |p| p.config.stream.clone()),
        durable: p.map_or("activity-ingest".into(), |p| p.config.durable.clone()),
        max_lag: Duration::from_secs(3600),
        max_append: Duration::from_secs(3600),
        ..Default::default()
    }
}

#[tokio::test]
async fn projection_lag_is_counted_in_events_and_seconds_and_a_late_projection_degrades() {
    let side = ReadSide::new().await;
    side.apply(&[create_tenant("acme"), register("acme", "u1")])
        .await;
    side.catch_up().await;
    let more: Vec<_> = (0..5).map(|_| activity("acme", "u1")).collect();
    side.apply(&more).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let s = status::gather(&side.db.pool, None, &config(None))
        .await
        .unwrap();
    let feed = s
        .projections
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap();
    assert_eq!(feed.lag_events, 5);
    assert!(feed.lag_seconds.unwrap() >= 1.0, "{feed:?}");
    assert!(
        !s.problems.iter().any(|p| p.contains("behind")),
        "within an hour's lag: {:?}",
        s.problems
    );
    // Folded here by hand: no projector holds the leases, and the status says so.
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("no projector holds its lease")),
        "{:?}",
        s.problems
    );

    let strict = StatusConfig {
        max_lag: Duration::from_millis(500),
        ..config(None)
    };
    let s = status::gather(&side.db.pool, None, &strict).await.unwrap();
    assert!(!s.healthy());
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("activity_feed") && p.contains("behind")),
        "{:?}",
        s.problems
    );

    side.catch_up().await;
    let s = status::gather(&side.db.pool, None, &strict).await.unwrap();
    let feed = s
        .projections
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap();
    assert_eq!((feed.lag_events, feed.lag_seconds), (0, None));
    assert!(s.healthy(), "{:?}", s.problems);
}

#[tokio::test]
async fn the_open_append_transaction_that_holds_projectors_back_is_named() {
    let side = ReadSide::new().await;
    side.apply(&[create_tenant("acme")]).await;
    let (_, writer) = login_in(&side.db, "activity_writer").await;
    let mut stuck = writer.begin().await.unwrap();
    sqlx::query("SET application_name = 'stuck-backfill'")
        .execute(&mut *stuck)
        .await
        .unwrap();
    sqlx::query("SELECT begin_append(ARRAY['acme'], ARRAY[gen_random_uuid()])")
        .execute(&mut *stuck)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *stuck)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let strict = StatusConfig {
        max_append: Duration::from_millis(500),
        ..config(None)
    };
    let s = status::gather(&side.db.pool, None, &strict).await.unwrap();
    let holder = s.watermark.as_ref().expect("the append lock's holder");
    assert_eq!(holder.pid, pid);
    assert_eq!(holder.application_name, "stuck-backfill");
    assert!(holder.seconds.unwrap() >= 1.0, "{holder:?}");
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("stuck-backfill") && p.contains(&pid.to_string())),
        "{:?}",
        s.problems
    );
    drop(stuck);
}

#[tokio::test]
async fn partitions_dead_letters_and_leases_are_reported() {
    let side = ReadSide::new().await;
    let mut batch = vec![create_tenant("acme"), register("acme", "u1")];
    batch.extend((0..300).map(|_| activity("acme", "u1")));
    batch.push(activity("acme", "nobody"));
    batch.push(json!({"type": "no_such_command", "tenant": "acme"}));
    side.apply(&batch).await;
    // A projector that holds its leases while folding.
    let projector = Projector::start(side.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(projector.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let s = status::gather(&side.db.pool, None, &config(None))
        .await
        .unwrap();
    // Never analyzed, yet counted exactly: small partitions are counted, not estimated.
    let jan = s
        .partitions
        .iter()
        .find(|p| p.name == "events_p202501")
        .unwrap();
    assert_eq!((jan.rows, jan.rows_exact), (300, true), "{jan:?}");
    assert!(jan.bytes > 0);
    let reasons: Vec<(&str, i64)> = s
        .dead_letters
        .iter()
        .map(|d| (d.reason.as_str(), d.count))
        .collect();
    assert!(reasons.contains(&("unknown_user", 1)), "{reasons:?}");
    assert_eq!(reasons.iter().map(|r| r.1).sum::<i64>(), 2, "{reasons:?}");
    // A dead letter a redrive resolved is no longer counted.
    sqlx::query(
        "UPDATE dead_letters SET resolved_at = now(), resolution = 'redriven' \
         WHERE reason = 'unknown_user'",
    )
    .execute(&side.db.pool)
    .await
    .unwrap();
    let after = status::gather(&side.db.pool, None, &config(None))
        .await
        .unwrap();
    assert!(
        after
            .dead_letters
            .iter()
            .all(|d| d.reason != "unknown_user"),
        "{:?}",
        after.dead_letters
    );
    for p in &s.projections {
        let lease = p
            .lease
            .as_ref()
            .unwrap_or_else(|| panic!("{} has a lease holder", p.name));
        assert!(lease.pid > 0);
        // One projector runs: it holds every shard's fold lease, and each shard names it.
        for shard in &p.shards {
            let held = shard.lease.as_ref().map(|h| h.pid);
            assert_eq!(held, Some(lease.pid), "{} shard {}", p.name, shard.shard);
        }
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn ingest_shows_its_checkpoint_leader_and_what_the_consumer_holds() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    assert_eq!(p.drain().await, 1);
    for _ in 0..3 {
        p.publish(register("acme", &uuid::Uuid::new_v4().simple().to_string()))
            .await;
    }
    let s = status::gather(&p.db.pool, Some(&p.js), &config(Some(&p)))
        .await
        .unwrap();
    let ingest = s
        .ingest
        .iter()
        .find(|i| i.stream == p.config.stream)
        .unwrap();
    assert_eq!(ingest.checkpoint, 1);
    assert!(
        ingest.leader.is_some(),
        "the running ingestor holds the stream's lock"
    );
    let nats = ingest.nats.as_ref().expect("the stream, read through NATS");
    assert_eq!(nats.last_seq, 4);
    assert_eq!(nats.pending, 3);
    assert!(s.healthy(), "{:?}", s.problems);
}

#[tokio::test]
async fn a_running_store_serves_status_and_exports_it_as_gauges() {
    use crate::liveness::{Store, ingest_config, publish, wait_for_events};
    let db = crate::support::TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config, true).await;
    store.wait_for("/readyz", 200, "ready").await;
    publish(&prefix, create_tenant("acme")).await;
    publish(&prefix, activity("acme", "nobody")).await;
    wait_for_events(&db, 1).await;
    let body = store.wait_for("/status", 200, "\"projections\"").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["problems"].as_array().unwrap().is_empty(), "{doc}");
    let names: Vec<&str> = doc["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["activity_feed", "daily_activity", "user_summary"]);
    // The store names its sessions, so a lock's holder says who it is.
    let lease = doc["projections"][0]["lease"]["application_name"]
        .as_str()
        .unwrap();
    assert!(lease.starts_with("activity-store project "), "{lease}");
    for series in [
        "activity_projection_lag_events{projection=\"activity_feed\"} ",
        "activity_projection_lag_seconds{projection=\"user_summary\"} ",
        "activity_dead_letters{reason=\"unknown_user\"} 1",
        "activity_ingest_pending ",
        "activity_store_healthy 1",
    ] {
        store.wait_for("/metrics", 200, series).await;
    }
    store.stop().await;
}

fn status_cli(db: &crate::support::TestDb, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("status")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", crate::support::nats_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_status_command_exits_1_with_the_reason_when_degraded() {
    let side = ReadSide::new().await;
    side.apply(&[create_tenant("acme")]).await;
    side.catch_up().await;
    let js = async_nats::jetstream::new(
        async_nats::connect(crate::support::nats_url())
            .await
            .unwrap(),
    );
    let stream = crate::support::unique_name("st").to_uppercase();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{}.commands.*", stream.to_lowercase())],
        ..Default::default()
    })
    .await
    .unwrap();
    let out = status_cli(&side.db, &["--json", "--stream", &stream]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{doc}");
    assert_eq!(doc["last_position"], 1);
    // A stream that is not there is a problem: producers' commands have nowhere to go.
    let out = status_cli(&side.db, &["--stream", "NO_SUCH_STREAM"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NO_SUCH_STREAM"));

    let mut stuck = side.db.pool.begin().await.unwrap();
    sqlx::query("SET application_name = 'a-long-import'")
        .execute(&mut *stuck)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(activity_store::db::locks::APPEND)
        .execute(&mut *stuck)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = status_cli(&side.db, &["--max-append-secs", "0", "--stream", &stream]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(text.starts_with("DEGRADED"), "{text}");
    assert!(err.contains("a-long-import"), "{err}");
    drop(stuck);
}

#[tokio::test]
async fn a_rebuild_in_progress_shows_how_far_it_has_folded() {
    use activity_store::project::{projections, shadow};
    let side = ReadSide::new().await;
    side.apply(&[
        create_tenant("acme"),
        register("acme", "u1"),
        activity("acme", "u1"),
    ])
    .await;
    side.catch_up().await;
    let feed = projections()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "activity_feed")
        .unwrap();
    // Built, not swapped in yet: the shadow still holds the rebuild lock.
    let built = shadow::prepare(&side.db.pool, &feed, 1, |_, _| {})
        .await
        .unwrap();
    let s = status::gather(&side.db.pool, None, &config(None))
        .await
        .unwrap();
    let p = s
        .projections
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap();
    let rebuild = p.rebuild.as_ref().expect("the rebuild's session");
    assert_eq!(
        rebuild.application_name,
        "activity-store rebuild activity_feed: folded 3 of 3"
    );
    drop(built);
}

#[tokio::test]
async fn one_store_holds_the_maintenance_lease_and_keeps_months_created_ahead() {
    use crate::liveness::{Store, ingest_config};
    let db = crate::support::TestDb::migrated().await;
    let a = Store::start_on(&db, ingest_config().1, false).await;
    let b = Store::start_on(&db, ingest_config().1, false).await;
    // The test stores keep five months ahead (EventLog::open creates three).
    let fifth = activity_store::log::partitions::Month::range(
        activity_store::log::partitions::Month::of(chrono::Utc::now()),
        6,
    )[5]
    .table_name();
    let mut created = false;
    for _ in 0..100 {
        let (exists, holders): (bool, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1), \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND objsubid = 1 AND classid::bigint = ($2 >> 32) AND objid::bigint = ($2 & 4294967295))",
        )
        .bind(&fifth)
        .bind(activity_store::db::locks::MAINTENANCE)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(holders <= 1, "one lease holder at most");
        if exists && holders == 1 {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "{fifth} created by the lease holder");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_reason_whose_dead_letters_are_all_resolved_is_exported_as_zero() {
    let metrics = activity_store::serve::metrics::recorder();
    let db = crate::support::TestDb::migrated().await;
    let mut s = status::gather(&db.pool, None, &config(None)).await.unwrap();
    let reason = crate::support::unique_name("reason");
    let series = format!("activity_dead_letters{{reason=\"{reason}\"}}");
    let value = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .map(|v| v.trim().to_owned())
    };
    s.dead_letters = vec![status::DeadLetterCount {
        reason: reason.clone(),
        count: 3,
    }];
    status::export(&s);
    assert_eq!(value(&metrics.render()).as_deref(), Some("3"));
    // Resolved by a redrive, or purged: the reason is no longer listed, and reads 0.
    s.dead_letters.clear();
    status::export(&s);
    assert_eq!(value(&metrics.render()).as_deref(), Some("0"));
}

#[tokio::test]
async fn lag_is_shown_per_tenant_and_the_most_lagging_tenants_are_named() {
    let side = ReadSide::new().await;
    side.apply(&[
        create_tenant("acme"),
        create_tenant("globex"),
        register("acme", "u1"),
        register("globex", "g1"),
    ])
    .await;
    side.catch_up().await;
    let mut more: Vec<_> = (0..7).map(|_| activity("globex", "g1")).collect();
    more.extend((0..2).map(|_| activity("acme", "u1")));
    side.apply(&more).await;
    let asked = StatusConfig {
        tenant: Some("acme".into()),
        ..config(None)
    };
    let s = status::gather(&side.db.pool, None, &asked).await.unwrap();
    let feed = s
        .projections
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap();
    let named: Vec<(&str, i64)> = feed
        .lagging_tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.lag_events))
        .collect();
    assert_eq!(named, vec![("globex", 7), ("acme", 2)]);
    let acme = s.tenant.as_ref().expect("the tenant asked for");
    let acme_feed = acme
        .iter()
        .find(|t| t.projection == "activity_feed")
        .unwrap();
    assert_eq!(
        (acme_feed.position, acme_feed.head, acme_feed.lag_events),
        (2, 4, 2),
        "acme's own log: 2 folded of 4"
    );
    assert!(acme_feed.lag_seconds.is_some());
    let text = s.to_text();
    assert!(
        text.contains("most behind: globex (7 events), acme (2 events)"),
        "{text}"
    );
    assert!(text.contains("tenant acme: last position 4"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["tenant"][0]["tenant"], "acme");

    side.catch_up().await;
    let s = status::gather(&side.db.pool, None, &asked).await.unwrap();
    assert!(s.projections.iter().all(|p| p.lagging_tenants.is_empty()));
    let caught_up = s.tenant.unwrap();
    assert!(
        caught_up
            .iter()
            .all(|t| (t.position, t.lag_events, t.lag_seconds) == (4, 0, None)),
        "{caught_up:?}"
    );
}
