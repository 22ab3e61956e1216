//! Versioned events, upcast on read: every event records its payload's version; folds read
//! today's shape through the upcasters (`events_current`); a log mixing versions replays to
//! exactly the views a log of today's versions gives; an event that cannot be upcast is
//! skipped and recorded while folding live and fails a rebuild, named.
//!
//! `UPCAST_CASES` sets how many random logs the property runs over (default 12).

use activity_store::model::EventType;
use activity_store::project::{CacheConfig, ProjectConfig, Projector};
use async_nats::jetstream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::project_support::{ReadSide, activity, change_email, forget, register, tenant};
use crate::support::{nats_url, unique_name};

/// A projector that may rebuild `user_summary`: its cache entries are cleared and refilled.
async fn rebuilder(side: &ReadSide) -> Projector {
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let config = CacheConfig {
        ttls: [(
            "user_summary".to_owned(),
            std::time::Duration::from_secs(60),
        )]
        .into(),
        bucket_prefix: unique_name("up"),
    };
    let mut p = Projector::start(side.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    p.attach_caches(&js, &config).await.unwrap();
    p
}

/// Runs `update` on the log past its guards, as a superuser's replica-role session (a
/// restore) can: the log refuses it to everyone else.
async fn past_the_guards(pool: &PgPool, update: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; {update}; RESET session_replication_role"
    )))
    .execute(&mut *pool.acquire().await.unwrap())
    .await
    .unwrap();
}

/// Rewrites the registrations at `positions` as the store of migration 0031 wrote them:
/// version 1, `name` for `display_name`.
async fn as_version_1(pool: &PgPool, positions: &[i64]) {
    let list: Vec<String> = positions.iter().map(i64::to_string).collect();
    past_the_guards(
        pool,
        format!(
            "UPDATE events SET schema_version = 1, \
               data = CASE WHEN data ? 'display_name' \
                 THEN (data - 'display_name') || jsonb_build_object('name', data->'display_name') \
                 ELSE data END \
             WHERE position = ANY('{{{}}}'::bigint[]) AND event_type = 'user_registered'",
            list.join(",")
        ),
    )
    .await;
}

async fn set_version(pool: &PgPool, position: i64, version: i16) {
    past_the_guards(
        pool,
        format!("UPDATE events SET schema_version = {version} WHERE position = {position}"),
    )
    .await;
}

/// A store with two registrations, ann's and bob's.
async fn ann_and_bob() -> ReadSide {
    let side = ReadSide::new().await;
    side.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        register("acme", "bob", "Bob"),
    ])
    .await;
    side
}

async fn registrations(pool: &PgPool) -> Vec<(i64, i16, Value)> {
    sqlx::query_as(
        "SELECT position, schema_version, data FROM events \
         WHERE event_type = 'user_registered' ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn events_record_their_version_and_the_upcaster_is_pure_and_total() {
    let side = ReadSide::new().await;
    side.apply(&[tenant("acme"), register("acme", "ann", "Ann A.")])
        .await;
    let versions: Vec<(String, i16)> =
        sqlx::query_as("SELECT event_type, schema_version FROM events ORDER BY position")
            .fetch_all(&side.db.pool)
            .await
            .unwrap();
    assert_eq!(
        versions,
        [("tenant_created".into(), 1), ("user_registered".into(), 2)]
    );
    assert_eq!(
        registrations(&side.db.pool).await[0].2,
        json!({"email": "ann@example.com", "display_name": "Ann A."})
    );
    // The database's idea of today's versions is the writer's.
    for t in [
        EventType::TenantCreated,
        EventType::UserRegistered,
        EventType::UserEmailChanged,
        EventType::ActivityRecorded,
        EventType::UserForgotten,
    ] {
        let db: i16 = sqlx::query_scalar("SELECT event_schema_version($1)")
            .bind(t.as_str())
            .fetch_one(&side.db.pool)
            .await
            .unwrap();
        assert_eq!(db, t.schema_version(), "{t:?}");
    }
    for (v1, v2) in [
        (
            json!({"email": "a@x.io", "name": "A"}),
            json!({"email": "a@x.io", "display_name": "A"}),
        ),
        (json!({"email": "a@x.io"}), json!({"email": "a@x.io"})),
        // What an erasure leaves, in either version.
        (
            json!({"email": "erased@erased.invalid"}),
            json!({"email": "erased@erased.invalid"}),
        ),
        (json!({}), json!({})),
        (
            json!({"email": "a@x.io", "name": null}),
            json!({"email": "a@x.io", "display_name": null}),
        ),
    ] {
        let up: Value = sqlx::query_scalar("SELECT upcast_user_registered_1($1)")
            .bind(&v1)
            .fetch_one(&side.db.pool)
            .await
            .unwrap();
        assert_eq!(up, v2, "{v1}");
    }
    // Only the log's owner records upcast failures: a writer or reader login cannot.
    for role in ["activity_writer", "activity_reader"] {
        let (_, login) = crate::fixtures::login_in(&side.db, role).await;
        let r = sqlx::query("SELECT upcast_event(1, 'user_registered', 9::smallint, '{}')")
            .execute(&login)
            .await;
        assert_eq!(crate::fixtures::sqlstate(r), "42501", "{role}");
    }
    // The stored version never changes, even for the log's owner.
    let r =
        sqlx::query("UPDATE events SET schema_version = 1 WHERE event_type = 'user_registered'")
            .execute(&side.db.pool)
            .await;
    assert!(r.is_err(), "the log refused to rewrite a version");
}

/// A random log of a few tenants' users: registrations (some without a name), email
/// changes, activities, erasures and registrations again after them.
fn random_log(rng: &mut StdRng) -> Vec<Value> {
    let mut out = vec![tenant("t0"), tenant("t1")];
    let mut live: Vec<(String, String)> = Vec::new();
    for i in 0..rng.random_range(20..60) {
        let t = format!("t{}", rng.random_range(0..2));
        let roll = rng.random_range(0..10);
        if live.is_empty() || roll < 3 {
            let u = format!("u{}", rng.random_range(0..12));
            if live.contains(&(t.clone(), u.clone())) {
                continue;
            }
            let mut r = register(&t, &u, &format!("Name \"{i}\" é"));
            if rng.random_bool(0.3) {
                r.as_object_mut().unwrap().remove("name");
            }
            out.push(r);
            live.push((t, u));
            continue;
        }
        let (t, u) = live[rng.random_range(0..live.len())].clone();
        match roll {
            3 => out.push(change_email(&t, &u, &format!("{u}.{i}@example.org"))),
            4 => {
                out.push(forget(&t, &u));
                live.retain(|x| *x != (t.clone(), u.clone()));
            }
            _ => out.push(activity(
                &t,
                &u,
                "login",
                &format!("2026-01-{:02} 10:00:00", 1 + i % 28),
            )),
        }
    }
    out
}

#[tokio::test]
async fn a_log_mixing_versions_replays_to_exactly_the_views_of_todays_versions() {
    let cases: u64 = std::env::var("UPCAST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 0..cases {
        let mut rng = StdRng::seed_from_u64(seed);
        let side = ReadSide::new().await;
        // One command a batch, so registrations after erasures land as they would live.
        for c in random_log(&mut rng) {
            side.apply(&[c]).await;
        }
        side.catch_up().await;
        let newest = side.snapshot().await;
        let all: Vec<i64> = registrations(&side.db.pool)
            .await
            .iter()
            .map(|r| r.0)
            .collect();
        let old: Vec<i64> = all
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        as_version_1(&side.db.pool, &old).await;
        let versions: Vec<i16> = registrations(&side.db.pool)
            .await
            .iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(
            versions.iter().filter(|v| **v == 1).count(),
            old.len(),
            "seed {seed}"
        );

        side.replay().await;
        assert_eq!(
            side.snapshot().await,
            newest,
            "seed {seed}: live fold of a mixed log"
        );
        rebuilder(&side)
            .await
            .rebuild("user_summary", |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(
            side.snapshot().await,
            newest,
            "seed {seed}: rebuild of a mixed log"
        );
        let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM event_upcast_failures")
            .fetch_one(&side.db.pool)
            .await
            .unwrap();
        assert_eq!(failures, 0, "seed {seed}");
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_upcast_is_skipped_and_recorded_live_and_fails_a_rebuild() {
    let side = ann_and_bob().await;
    let regs = registrations(&side.db.pool).await;
    let broken = regs[0].0;
    // A version no store wrote: from a newer binary, or a restore gone wrong.
    set_version(&side.db.pool, broken, 9).await;

    side.catch_up().await;
    let users: Vec<String> = sqlx::query_scalar("SELECT user_id FROM analytics.user_summary")
        .fetch_all(&side.db.pool)
        .await
        .unwrap();
    assert_eq!(users, ["bob"], "the rest is folded");
    let (position, reason): (i64, String) =
        sqlx::query_as("SELECT position, reason FROM event_upcast_failures")
            .fetch_one(&side.db.pool)
            .await
            .unwrap();
    assert_eq!(position, broken);
    assert!(
        reason.contains("unknown version 9 of user_registered"),
        "{reason}"
    );
    // Operators see it: status is degraded and names the first.
    let config = activity_store::status::StatusConfig {
        max_lag: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let s = activity_store::status::gather(&side.db.pool, None, &config)
        .await
        .unwrap();
    assert_eq!(s.upcast_failures.count, 1);
    let named = format!("position {broken}");
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("could not be upcast") && p.contains(&named)),
        "{:?}",
        s.problems
    );

    let e = rebuilder(&side)
        .await
        .rebuild("user_summary", |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    for part in [
        &format!("position {broken}"),
        "cannot be upcast",
        "unknown version 9",
    ] {
        assert!(e.contains(part), "{part} missing from {e}");
    }
    let still: Vec<String> = sqlx::query_scalar("SELECT user_id FROM analytics.user_summary")
        .fetch_all(&side.db.pool)
        .await
        .unwrap();
    assert_eq!(still, ["bob"], "a failed rebuild swaps nothing in");

    // Nor can the store go back to before versions with it in the log.
    let e = crate::fixtures::down_to_before(&side.db.pool, 32)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("position {broken}")), "{e}");
}

#[tokio::test]
async fn migrating_down_past_versions_writes_registrations_back_in_version_1() {
    let side = ann_and_bob().await;
    crate::fixtures::down_to_before(&side.db.pool, 32)
        .await
        .unwrap();
    let data: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM events WHERE event_type = 'user_registered' ORDER BY position",
    )
    .fetch_all(&side.db.pool)
    .await
    .unwrap();
    assert_eq!(
        data,
        [
            json!({"email": "ann@example.com", "name": "Ann"}),
            json!({"email": "bob@example.com", "name": "Bob"})
        ]
    );
    activity_store::log::migrate::up(&side.db.pool)
        .await
        .unwrap();
    let versions: Vec<i16> = registrations(&side.db.pool)
        .await
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(versions, [1, 1], "what was written back is version 1 again");
}

#[tokio::test]
async fn a_fold_through_the_upcasting_view_still_reads_its_window_by_index() {
    let side = ReadSide::new().await;
    side.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    sqlx::query("ANALYZE events")
        .execute(&side.db.pool)
        .await
        .unwrap();
    let mut conn = side.db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT tenant, user_id, data->>'display_name' FROM events_current \
         WHERE position > 0 AND position <= 1000 AND event_type = 'user_registered' \
           AND data IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}
