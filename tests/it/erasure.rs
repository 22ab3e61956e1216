//! Erasure reaches every copy: after `forget`, the user's id, email, name and activity
//! metadata are in none of the database (a `pg_dump --data-only`), the stream (every
//! message it holds) or the cache buckets (every message of their streams, keys included);
//! counts survive anonymously, a rebuild gives the same views, and a receipt says what was
//! scrubbed where.

use std::time::Duration;

use activity_store::erase::{self, EraseConfig};
use activity_store::project::{CacheConfig, ProjectConfig, Projector};
use async_nats::jetstream;
use base64::Engine;
use serde_json::{Value, json};

use crate::erasure_support::{folded, pg_dump};
use crate::liveness::{Store, ingest_config, publish, wait_for_events};
use crate::support::{TestDb, nats_url};

const USER: &str = "zx-erase-7731";
const EMAIL: &str = "zx7731@erase.example";
const NAME: &str = "Zanzibar Quell";
const SECRET: &str = "mauve-octopus-9921";
const NEEDLES: [&str; 4] = [USER, EMAIL, NAME, SECRET];

/// Every message a stream holds, subject, headers and data, as text.
pub async fn stream_dump(js: &jetstream::Context, stream: &str) -> String {
    let Ok(mut s) = js.get_stream(stream).await else {
        return String::new();
    };
    let state = s.info().await.unwrap().state.clone();
    let mut out = String::new();
    for seq in state.first_sequence..=state.last_sequence {
        let reply: Value = js
            .request(format!("STREAM.MSG.GET.{stream}"), &json!({ "seq": seq }))
            .await
            .unwrap();
        let Some(m) = reply.get("message") else {
            continue;
        };
        out.push_str(&m.to_string());
        for field in ["data", "hdrs"] {
            if let Some(b) = m.get(field).and_then(|d| d.as_str()) {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        out.push('\n');
    }
    out
}

async fn views(db: &TestDb) -> Vec<String> {
    let mut rows = Vec::new();
    for t in [
        "analytics.activity_feed",
        "analytics.daily_activity",
        "analytics.user_summary",
    ] {
        let mut r: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {t} t ORDER BY 1"
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rows.append(&mut r);
    }
    rows
}

#[tokio::test]
async fn an_erased_user_is_in_no_store_and_a_rebuild_gives_the_same_views() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), true).await;
    store.wait_for("/readyz", 200, "ready").await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut commands = vec![
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        json!({"type": "register_user", "tenant": "acme", "user": USER, "email": EMAIL, "name": NAME}),
        json!({"type": "register_user", "tenant": "acme", "user": "keeper", "email": "keeper@example.com"}),
        json!({"type": "record_activity", "tenant": "acme", "user": "keeper", "activity_type": "login",
               "occurred_at": "2026-11-20T10:00:00Z", "metadata": {"note": "kept-value-4242"}}),
        // Refused (a bad activity type), so a dead letter carries the user's data.
        json!({"type": "record_activity", "tenant": "acme", "user": USER, "activity_type": "BAD TYPE!",
               "occurred_at": "2026-11-20T10:00:00Z", "metadata": {"secret": SECRET}}),
    ];
    commands.extend((0..20).map(|i| {
        json!({"type": "record_activity", "tenant": "acme", "user": USER, "activity_type": "login",
               "occurred_at": format!("2026-11-{:02}T10:00:00Z", 1 + i), "metadata": {"secret": SECRET}})
    }));
    for c in commands {
        publish(&prefix, c).await;
    }
    wait_for_events(&db, 24).await;
    folded(&db).await;
    // A cached read fills the user's entry.
    let (summary, bucket) = crate::erasure_support::summary_bucket(&store.bucket_prefix);
    let entries = activity_store::query::open_cache(&db.pool, &js, &summary, &store.bucket_prefix)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries.bucket(), bucket);
    let read = activity_store::query::user_through_cache(&db.pool, &entries, "acme", USER)
        .await
        .unwrap();
    assert!(read.row.is_some());

    let erase_config = EraseConfig {
        subject_prefix: format!("{prefix}.commands"),
        stream: config.stream.clone(),
        bucket_prefix: store.bucket_prefix.clone(),
        wait: Duration::from_secs(30),
    };
    let receipt = erase::forget(&db.pool, &js, &erase_config, "acme", USER, |_| {})
        .await
        .unwrap();
    // Its registration, 20 activities and the forget_user event itself.
    assert_eq!(receipt.log_events, 22, "{receipt:?}");
    assert_eq!(receipt.dead_letters, 1, "{receipt:?}");
    assert!(receipt.stream_messages >= 25, "{receipt:?}");
    assert_eq!(
        (receipt.cache_entries, receipt.read_model_rows),
        (1, 0),
        "{receipt:?}"
    );
    assert!(receipt.completed_at.is_some());
    // The entry is a tombstone now, as of a position past the erasure: a fill of a row read
    // before it is refused.
    let forgotten_at: i64 = sqlx::query_scalar(
        "SELECT max(tenant_position) FROM events WHERE event_type = 'user_forgotten'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    match entries.peek("acme", USER).await.unwrap() {
        Some(activity_store::cache::Cached::Tombstone { as_of, .. }) => {
            assert!(as_of >= forgotten_at, "{as_of} < {forgotten_at}")
        }
        other => panic!("not a tombstone: {other:?}"),
    }
    assert!(
        activity_store::query::user_through_cache(&db.pool, &entries, "acme", USER)
            .await
            .unwrap()
            .row
            .is_none()
    );

    let dump = pg_dump(&db);
    assert!(dump.contains("keeper@example.com") && dump.contains("kept-value-4242"));
    let stream = stream_dump(&js, &config.stream).await;
    let cache = stream_dump(&js, &format!("KV_{bucket}")).await;
    for needle in NEEDLES {
        assert!(!dump.contains(needle), "the database still holds {needle}");
        assert!(!stream.contains(needle), "the stream still holds {needle}");
        assert!(!cache.contains(needle), "the cache still holds {needle}");
    }
    // Counts survive anonymously: 21 activities of the day table, the erased one's included.
    let events: i64 =
        sqlx::query_scalar("SELECT sum(events)::bigint FROM analytics.daily_activity")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(events, 21);

    let before = views(&db).await;
    let mut projector = Projector::start(db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let caches = CacheConfig {
        ttls: Default::default(),
        bucket_prefix: store.bucket_prefix.clone(),
    };
    projector.attach_caches(&js, &caches).await.unwrap();
    for p in ["activity_feed", "daily_activity", "user_summary"] {
        projector.rebuild(p, |_, _| {}).await.unwrap();
    }
    assert_eq!(
        views(&db).await,
        before,
        "a rebuild after the erasure builds the same views"
    );
    store.stop().await;
}

#[tokio::test]
async fn the_forget_command_prints_its_receipt_and_says_why_when_refused() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), true).await;
    store.wait_for("/readyz", 200, "ready").await;
    publish(
        &prefix,
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
    )
    .await;
    publish(&prefix, json!({"type": "register_user", "tenant": "acme", "user": "cli-user", "email": "c@example.com"})).await;
    wait_for_events(&db, 2).await;
    // The store runs on this test's runtime: the command runs as a child process awaited
    // without blocking it.
    let forget = |user: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
            .args([
                "forget",
                "--tenant",
                "acme",
                "--user",
                user,
                "--wait-secs",
                "30",
            ])
            .args([
                "--stream",
                &config.stream,
                "--subject-prefix",
                &format!("{prefix}.commands"),
            ])
            .env("DATABASE_URL", db.url())
            .env("NATS_URL", nats_url())
            .env("RUST_LOG", "warn")
            .output()
    };
    let done = forget("cli-user").await.unwrap();
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        out.contains("complete") && out.contains("log: 2 events now under erased-"),
        "{out}"
    );
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM erasures WHERE completed_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1, "the database keeps the receipt");
    let refused = forget("nobody-here").await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused (unknown_user)"));
    store.stop().await;
}

#[tokio::test]
async fn a_user_with_100_000_events_is_erased_in_batches_while_ingest_goes_on() {
    use activity_store::log::EventLog;
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), true).await;
    store.wait_for("/readyz", 200, "ready").await;
    for c in [
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        json!({"type": "create_tenant", "tenant": "other", "name": "Other"}),
        json!({"type": "register_user", "tenant": "acme", "user": "bulk", "email": "bulk@example.com"}),
        json!({"type": "register_user", "tenant": "other", "user": "busy", "email": "busy@example.com"}),
    ] {
        publish(&prefix, c).await;
    }
    wait_for_events(&db, 4).await;
    // The user's history, appended straight to the log.
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let history = crate::fixtures::many("acme", 1, 100_000)
        .into_iter()
        .map(|mut e| {
            e.user_id = Some("bulk".into());
            e
        })
        .collect::<Vec<_>>();
    for chunk in history.chunks(10_000) {
        log.append_batch(chunk).await.unwrap();
    }
    folded(&db).await;

    // Ingest goes on for another tenant the whole time.
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = tokio::spawn({
        let (stop, prefix) = (stop.clone(), prefix.clone());
        async move {
            while !stop.is_cancelled() {
                publish(&prefix, json!({"type": "record_activity", "tenant": "other", "user": "busy",
                    "activity_type": "login", "occurred_at": "2026-11-20T10:00:00Z", "metadata": {}}))
                .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let erase_config = EraseConfig {
        subject_prefix: format!("{prefix}.commands"),
        stream: config.stream.clone(),
        bucket_prefix: store.bucket_prefix.clone(),
        wait: Duration::from_secs(60),
    };
    let batches = std::sync::Mutex::new(Vec::new());
    let receipt = erase::forget(&db.pool, &js, &erase_config, "acme", "bulk", |n| {
        batches.lock().unwrap().push(n)
    })
    .await
    .unwrap();
    stop.cancel();
    producer.await.unwrap();
    assert_eq!(receipt.log_events, 100_002, "{receipt:?}");
    assert!(
        batches.lock().unwrap().len() >= 20,
        "bounded batches, with progress"
    );
    let committed_meanwhile: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e, erasures r \
         WHERE e.tenant = 'other' AND e.recorded_at > r.requested_at AND e.recorded_at < r.completed_at",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        committed_meanwhile > 0,
        "ingest committed while the log was scrubbed"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE user_id = 'bulk'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    store.stop().await;
}

#[tokio::test]
async fn an_erasure_the_projectors_were_too_late_for_is_finished_by_the_next_run() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    // The projections are installed, and no projector runs: the first run cannot scrub
    // anything yet.
    drop(
        Projector::start(db.pool.clone(), ProjectConfig::default())
            .await
            .unwrap(),
    );
    let store = Store::start_on(&db, config.clone(), false).await;
    store.wait_for("/readyz", 200, "ready").await;
    publish(
        &prefix,
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
    )
    .await;
    publish(&prefix, json!({"type": "register_user", "tenant": "acme", "user": "late", "email": "late@example.com"})).await;
    wait_for_events(&db, 2).await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut erase_config = EraseConfig {
        subject_prefix: format!("{prefix}.commands"),
        stream: config.stream.clone(),
        bucket_prefix: store.bucket_prefix.clone(),
        wait: Duration::from_secs(2),
    };
    let first = erase::forget(&db.pool, &js, &erase_config, "acme", "late", |_| {}).await;
    assert!(
        matches!(first, Err(erase::EraseError::Timeout(_))),
        "{first:?}"
    );
    store.stop().await;

    let store = Store::start_on(&db, config.clone(), true).await;
    store.wait_for("/readyz", 200, "ready").await;
    erase_config.wait = Duration::from_secs(30);
    erase_config.bucket_prefix = store.bucket_prefix.clone();
    let receipt = erase::forget(&db.pool, &js, &erase_config, "acme", "late", |_| {})
        .await
        .unwrap();
    assert_eq!(receipt.log_events, 2, "{receipt:?}");
    let dump = pg_dump(&db);
    assert!(!dump.contains("late@example.com"));
    store.stop().await;
}
