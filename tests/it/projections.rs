//! The three read models, folded from the log: what each row says after every kind of event.

use crate::project_support::{ReadSide, activity, change_email, forget, register, tenant};

#[tokio::test]
async fn the_summary_follows_registration_email_changes_and_activities() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    r.apply(&[
        activity("acme", "ann", "login", "2026-11-02 09:00:00"),
        activity("acme", "ann", "view", "2026-11-03 10:00:00"),
        // The same instant as the latest: the later logged one is "last".
        activity("acme", "ann", "logout", "2026-11-03 10:00:00"),
        // Earlier than everything: changes first_seen, not last.
        activity("acme", "ann", "signup", "2026-11-01 08:00:00"),
        change_email("acme", "ann", "ann@new.example"),
    ])
    .await;
    r.catch_up().await;
    let rows = r.rows("analytics.user_summary").await;
    assert_eq!(rows.len(), 1);
    let row: (String, String, String, String, i64, String) = sqlx::query_as(
        "SELECT email, name, first_seen::text, last_seen::text, events, last_activity_type \
         FROM analytics.user_summary WHERE tenant = 'acme' AND user_id = 'ann'",
    )
    .fetch_one(&r.db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "ann@new.example".into(),
            "Ann".into(),
            "2026-11-01 08:00:00+00".into(),
            "2026-11-03 10:00:00+00".into(),
            4,
            "logout".into()
        )
    );
}

#[tokio::test]
async fn daily_activity_counts_events_and_distinct_users_per_utc_day() {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        register("acme", "bob", "Bob"),
    ])
    .await;
    r.apply(&[
        activity("acme", "ann", "login", "2026-11-02T23:30:00-02:00"), // 2026-11-03 UTC
        activity("acme", "ann", "login", "2026-11-03 08:00:00"),
        activity("acme", "bob", "login", "2026-11-03 09:00:00"),
        activity("acme", "bob", "view", "2026-11-03 09:05:00"),
    ])
    .await;
    r.catch_up().await;
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT day::text, activity_type, events, users FROM analytics.daily_activity ORDER BY 1, 2",
    )
    .fetch_all(&r.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("2026-11-03".into(), "login".into(), 3, 2),
            ("2026-11-03".into(), "view".into(), 1, 1)
        ]
    );
}

#[tokio::test]
async fn forget_user_erases_feed_and_summary_but_daily_keeps_counting_anonymously() {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        register("acme", "bob", "Bob"),
    ])
    .await;
    r.apply(&[
        activity("acme", "ann", "login", "2026-11-03 08:00:00"),
        activity("acme", "bob", "login", "2026-11-03 09:00:00"),
    ])
    .await;
    r.catch_up().await;
    // In one window: ann is forgotten, registered again, and active again on the same day.
    r.apply(&[
        forget("acme", "ann"),
        register("acme", "ann", "Ann Again"),
        activity("acme", "ann", "login", "2026-11-03 10:00:00"),
    ])
    .await;
    r.catch_up().await;
    let feed: Vec<(String, String)> = sqlx::query_as(
        "SELECT user_id, occurred_at::text FROM analytics.activity_feed ORDER BY 1, 2",
    )
    .fetch_all(&r.db.pool)
    .await
    .unwrap();
    assert_eq!(
        feed,
        [
            ("ann".into(), "2026-11-03 10:00:00+00".into()),
            ("bob".into(), "2026-11-03 09:00:00+00".into())
        ]
    );
    let summary: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT user_id, name, events FROM analytics.user_summary ORDER BY 1")
            .fetch_all(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(
        summary,
        [
            ("ann".into(), Some("Ann Again".into()), 1),
            ("bob".into(), Some("Bob".into()), 1)
        ]
    );
    // Three logins by three people as far as anyone can now tell: the old ann, bob, the new ann.
    let daily: (i64, i64) = sqlx::query_as("SELECT events, users FROM analytics.daily_activity")
        .fetch_one(&r.db.pool)
        .await
        .unwrap();
    assert_eq!(daily, (3, 3));
    let named: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM projection_state.daily_activity_users WHERE user_id = 'ann'",
    )
    .fetch_one(&r.db.pool)
    .await
    .unwrap();
    assert_eq!(
        named, 1,
        "only the new ann is named in the daily model's state"
    );
}

#[tokio::test]
async fn a_version_bump_rebuilds_the_projection_from_the_whole_log() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    r.apply(&[activity("acme", "ann", "login", "2026-11-03 08:00:00")])
        .await;
    r.catch_up().await;
    let before = r.snapshot().await;
    // A row the fold would never write: a refold must not keep it.
    sqlx::query("UPDATE analytics.activity_feed SET activity_type = 'tampered'")
        .execute(&r.db.pool)
        .await
        .unwrap();
    // A newer version recorded: this older binary must refuse, not rebuild backwards.
    sqlx::query("UPDATE projection_checkpoints SET version = version + 100")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let refused = activity_store::project::Projector::start(r.db.pool.clone(), Default::default())
        .await
        .err()
        .expect("a newer installed version is refused");
    assert!(
        refused.to_string().contains("newer than this binary"),
        "{refused}"
    );
    // An older version recorded (0, below any real one): the next start must refold, beside
    // the old tables.
    sqlx::query(
        "ALTER TABLE projection_checkpoints DROP CONSTRAINT projection_checkpoints_version_positive",
    )
    .execute(&r.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE projection_checkpoints SET version = 0")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let restarted =
        activity_store::project::Projector::start(r.db.pool.clone(), Default::default())
            .await
            .unwrap();
    let still_old: Vec<i32> = sqlx::query_scalar("SELECT version FROM projection_checkpoints")
        .fetch_all(&r.db.pool)
        .await
        .unwrap();
    assert_eq!(
        still_old,
        [0, 0, 0],
        "a start rebuilds nothing itself: the old version serves"
    );
    // Whoever holds the lease rebuilds in the background; catch_up does it here.
    restarted.catch_up().await.unwrap();
    let mut checkpoints = Vec::new();
    for (version, name) in sqlx::query_as::<_, (i32, String)>(
        "SELECT version, projection FROM projection_checkpoints ORDER BY projection",
    )
    .fetch_all(&r.db.pool)
    .await
    .unwrap()
    {
        checkpoints.push((
            version,
            crate::project_support::checkpoints(&r.db.pool, &name).await,
        ));
    }
    let last = crate::project_support::visible(&r.db.pool).await;
    assert_eq!(
        checkpoints,
        activity_store::project::projections()
            .unwrap()
            .iter()
            .map(|p| (p.version, last.clone()))
            .collect::<Vec<_>>(),
        "rebuilt to the log's end"
    );
    assert_eq!(r.snapshot().await, before);
}

/// The backend pid holding each shard's fold lease, by shard.
async fn fold_leases(r: &ReadSide) -> Vec<(i32, i32)> {
    sqlx::query_as(
        "SELECT objid::int, pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objsubid = 2 AND classid = x'464f4c44'::int::oid \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY objid",
    )
    .fetch_all(&r.db.pool)
    .await
    .unwrap()
}

/// Waits until the fold leases satisfy `ok`; returns them.
async fn leases_until(
    r: &ReadSide,
    what: &str,
    ok: impl Fn(&[(i32, i32)]) -> bool,
) -> Vec<(i32, i32)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = fold_leases(r).await;
        if ok(&now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn wait_for(r: &ReadSide, what: &str, sql: &'static str, expected: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&r.db.pool).await.unwrap();
        if n == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {n}, not {expected}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Tenants enough that every shard holds some.
fn tenants() -> Vec<String> {
    (0..16).map(|i| format!("t{i}")).collect()
}

#[tokio::test]
async fn projectors_divide_the_shards_and_one_takes_over_the_shards_of_one_that_stops() {
    use activity_store::project::{ProjectConfig, Projector};
    use tokio_util::sync::CancellationToken;
    let r = ReadSide::new().await;
    let shards = activity_store::log::shards::count(&r.db.pool)
        .await
        .unwrap() as usize;
    for t in tenants() {
        r.apply(&[tenant(&t), register(&t, "ann", "Ann")]).await;
    }
    let config = ProjectConfig {
        poll: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let start = || Projector::start(r.db.pool.clone(), config.clone());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = tokio::spawn(start().await.unwrap().run(stop_a.clone()));
    let alone = leases_until(&r, "the first takes every shard", |l| l.len() == shards).await;
    let first = alone[0].1;
    assert!(
        alone.iter().all(|(_, pid)| *pid == first),
        "one projector: {alone:?}"
    );

    let b = tokio::spawn(start().await.unwrap().run(stop_b.clone()));
    let divided = leases_until(&r, "the shards divided", |l| {
        l.len() == shards && l.iter().filter(|(_, pid)| *pid == first).count() == shards.div_ceil(2)
    })
    .await;
    let second: Vec<i32> = divided
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| *p != first)
        .collect();
    assert_eq!(
        second.len(),
        shards / 2,
        "the second holds the rest: {divided:?}"
    );

    // Both fold their shards: every tenant's activity is folded, whichever shard it is on.
    let mut expected = 0;
    for t in tenants() {
        r.apply(&[activity(&t, "ann", "login", "2026-11-03 08:00:00")])
            .await;
        expected += 1;
    }
    let feed = "SELECT count(*) FROM analytics.activity_feed";
    wait_for(&r, "folded by the two", feed, expected).await;

    stop_a.cancel();
    a.await.unwrap().unwrap();
    let taken = leases_until(&r, "the second takes every shard", |l| {
        l.len() == shards && l.iter().all(|(_, pid)| *pid != first)
    })
    .await;
    assert!(taken.iter().all(|(_, pid)| *pid == taken[0].1), "{taken:?}");
    for t in tenants() {
        r.apply(&[activity(&t, "ann", "view", "2026-11-03 09:00:00")])
            .await;
        expected += 1;
    }
    wait_for(&r, "folded by the one left", feed, expected).await;
    wait_for(
        &r,
        "summaries by the one left",
        "SELECT sum(events)::bigint FROM analytics.user_summary",
        expected,
    )
    .await;
    stop_b.cancel();
    b.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_projector_that_cannot_fold_stops_with_the_error_instead_of_retrying_in_silence() {
    use activity_store::project::{ProjectConfig, ProjectError, Projector};
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    sqlx::query("ALTER TABLE analytics.user_summary RENAME TO user_summary_elsewhere")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let projector = Projector::start(r.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let stopped = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        projector.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the projector stops");
    match stopped {
        Err(ProjectError::Log(e)) => assert!(e.is_fatal(), "{e}"),
        other => panic!("expected a fatal database error, got {other:?}"),
    }
}
