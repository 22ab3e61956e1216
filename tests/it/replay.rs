//! No skipped events and replay equals live: the projector never passes an append that is
//! still open, concurrent appenders end in the views a whole-log fold gives, and random
//! command sequences folded live in random windows equal one fold of the whole log.

use std::sync::Arc;
use std::time::Duration;

use activity_store::db::locks::appends_held_back_for;
use activity_store::log::{EventLog, append_in};
use activity_store::model::{EventType, Lineage, NewEvent};
use activity_store::project::{ProjectConfig, Projector, reinstall};
use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::project_support::{ReadSide, activity, change_email, forget, register, tenant};

fn activity_event(user: &str, minute: u32) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        command_id: uuid::Uuid::new_v4(),
        tenant: "acme".into(),
        user_id: Some(user.into()),
        event_type: EventType::ActivityRecorded,
        activity_type: Some("login".into()),
        data: serde_json::Map::new(),
        occurred_at: Utc
            .with_ymd_and_hms(2026, 11, 3, 8, minute % 60, 0)
            .unwrap(),
        received_at: Utc::now(),
        lineage: Lineage::default(),
    }
}

async fn feed_positions(r: &ReadSide) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM analytics.activity_feed ORDER BY position")
        .fetch_all(&r.db.pool)
        .await
        .unwrap()
}

/// Rebuilds every projection from the whole log, in one window each.
async fn whole_log_fold(r: &ReadSide) -> Vec<Vec<String>> {
    for p in r.projector.projections() {
        reinstall(&r.db.pool, p).await.unwrap();
    }
    let config = ProjectConfig {
        window: i64::MAX / 2,
        ..Default::default()
    };
    Projector::start(r.db.pool.clone(), config)
        .await
        .unwrap()
        .catch_up()
        .await
        .unwrap();
    r.snapshot().await
}

#[tokio::test]
async fn the_projector_waits_for_an_open_append_and_never_skips_it() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    r.catch_up().await;
    r.log.prepare(&[activity_event("ann", 0)]).await.unwrap();

    let mut open = r.db.pool.begin().await.unwrap();
    append_in(&mut open, &[activity_event("ann", 1)])
        .await
        .unwrap();
    let later_log = Arc::new(EventLog::open(r.db.pool.clone()).await.unwrap());
    let later = tokio::spawn(async move {
        later_log
            .append_batch(&[activity_event("ann", 2)])
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !later.is_finished(),
        "a later append waits for the open one"
    );
    let held_back = appends_held_back_for(&r.db.pool).await.unwrap();
    assert!(held_back >= 0.25, "the stall is measured: {held_back} s");
    r.catch_up().await;
    assert_eq!(
        feed_positions(&r).await,
        Vec::<i64>::new(),
        "nothing folded past the open append"
    );

    open.commit().await.unwrap();
    later.await.unwrap();
    assert_eq!(appends_held_back_for(&r.db.pool).await.unwrap(), 0.0);
    r.catch_up().await;
    let positions = feed_positions(&r).await;
    assert_eq!(positions.len(), 2, "both appends folded, none skipped");
    assert!(positions[0] < positions[1]);
}

#[tokio::test]
async fn concurrent_appenders_with_random_delays_end_in_the_whole_log_fold() {
    let r = Arc::new(ReadSide::with_window(7).await);
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    r.log.prepare(&[activity_event("ann", 0)]).await.unwrap();
    let mut appenders = Vec::new();
    for a in 0..6u64 {
        let pool = r.db.pool.clone();
        appenders.push(tokio::spawn(async move {
            let log = EventLog::open(pool).await.unwrap();
            let mut rng = StdRng::seed_from_u64(a);
            let mut appended = 0;
            for _ in 0..30 {
                let n = rng.random_range(1..=12);
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| activity_event("ann", (a * 7 + i) as u32))
                    .collect();
                log.append_batch(&events).await.unwrap();
                appended += n;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
            }
            appended
        }));
    }
    let folder = {
        let r = r.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                r.catch_up().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut total = 0;
    for a in appenders {
        total += a.await.unwrap();
    }
    folder.await.unwrap();
    r.catch_up().await;
    assert_eq!(feed_positions(&r).await.len() as u64, total);
    let live = r.snapshot().await;
    assert_eq!(whole_log_fold(&r).await, live);
}

/// A random but mostly valid command: users come and go, timestamps collide.
fn random_command(rng: &mut StdRng) -> Value {
    let user = format!("u{}", rng.random_range(0..6));
    let t = ["acme", "beta"][rng.random_range(0..2)];
    let at = [
        "2026-11-01 08:00:00",
        "2026-11-01 08:00:00",
        "2026-11-02 23:59:59",
        "2026-11-03 00:00:00",
    ][rng.random_range(0..4)];
    match rng.random_range(0..10) {
        0 | 1 => register(t, &user, &format!("Name {}", rng.random_range(0..3))),
        2 => change_email(
            t,
            &user,
            &format!("{user}.{}@example.com", rng.random_range(0..9)),
        ),
        3 => forget(t, &user),
        _ => activity(
            t,
            &user,
            ["login", "view", "buy"][rng.random_range(0..3)],
            at,
        ),
    }
}

#[tokio::test]
async fn replay_equals_live_for_random_commands_and_random_windows() {
    for case in 0..4 {
        let seed: u64 = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        let r = ReadSide::with_window(rng.random_range(1..=25)).await;
        r.apply(&[tenant("acme"), tenant("beta")]).await;
        for _ in 0..40 {
            let batch: Vec<Value> = (0..rng.random_range(1..=8))
                .map(|_| random_command(&mut rng))
                .collect();
            r.apply(&batch).await;
            if rng.random_bool(0.5) {
                r.catch_up().await;
            }
        }
        r.catch_up().await;
        let live = r.snapshot().await;
        assert!(
            !live[0].is_empty(),
            "case {case} (seed {seed}) folded no activity"
        );
        assert_eq!(
            whole_log_fold(&r).await,
            live,
            "case {case}: replay differs from live (seed {seed})"
        );
    }
}
