//! Positions that belong to the tenant: every event has a place in its tenant's own log, and
//! everything a tenant sees (read tables, X-Activity-Position, min-position waits, command
//! status, cache entries, SQL) is one, so no tenant can learn how much another writes.

use activity_store::log::{EventLog, migrate};
use serde_json::json;

use crate::api_support::{Api, activity, register, tenant};
use crate::fixtures::{insert_raw, login, login_in, sqlstate};
use crate::project_support::{self as ps, ReadSide};
use crate::support::TestDb;

async fn tenant_positions(pool: &sqlx::PgPool, tenant: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT tenant_position FROM events WHERE tenant = $1 ORDER BY position")
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_tenant_numbers_its_events_from_one_in_log_order() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let mut batch = vec![login("acme", "u1"), login("globex", "g1")];
    batch.extend((0..300).map(|i| login("globex", &format!("g{i}"))));
    batch.push(login("acme", "u2"));
    let repeat = batch[0].clone();
    batch.push(repeat.clone());
    log.append_batch(&batch).await.unwrap();
    // A duplicate takes no position; a later batch goes on from the tenant's head.
    let again = log
        .append_batch(&[repeat, login("acme", "u3"), login("initech", "i1")])
        .await
        .unwrap();
    assert_eq!(again.appended, 2);
    assert_eq!(tenant_positions(&db.pool, "acme").await, vec![1, 2, 3]);
    assert_eq!(
        tenant_positions(&db.pool, "globex").await,
        (1..=301).collect::<Vec<i64>>()
    );
    assert_eq!(tenant_positions(&db.pool, "initech").await, vec![1]);
    let heads: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant, head FROM tenant_heads ORDER BY tenant")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let want = [("acme", 3), ("globex", 301), ("initech", 1)];
    let want: Vec<(String, i64)> = want.iter().map(|(t, h)| (t.to_string(), *h)).collect();
    assert_eq!(heads, want);
}

#[tokio::test]
async fn read_tables_hold_each_tenants_own_positions() {
    let rs = ReadSide::new().await;
    rs.apply(&[ps::tenant("acme"), ps::tenant("globex")]).await;
    let noise: Vec<_> = (0..50)
        .map(|i| ps::register("globex", &format!("g{i}"), "G"))
        .collect();
    rs.apply(&noise).await;
    rs.apply(&[
        ps::register("acme", "u1", "Ann"),
        ps::activity("acme", "u1", "login", "2025-01-15T10:00:00Z"),
    ])
    .await;
    rs.catch_up().await;
    let row: (i64, Option<i64>) = sqlx::query_as(
        "SELECT position, last_activity_position FROM analytics.user_summary \
         WHERE tenant = 'acme' AND user_id = 'u1'",
    )
    .fetch_one(&rs.db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (3, Some(3)),
        "acme's third event, whatever globex wrote"
    );
    let feed: i64 =
        sqlx::query_scalar("SELECT position FROM analytics.activity_feed WHERE tenant = 'acme'")
            .fetch_one(&rs.db.pool)
            .await
            .unwrap();
    assert_eq!(feed, 3);
}

#[tokio::test]
async fn a_reader_sees_its_tenants_position_and_cannot_ask_for_another() {
    let rs = ReadSide::new().await;
    rs.apply(&[ps::tenant("acme"), ps::tenant("globex")]).await;
    let noise: Vec<_> = (0..40)
        .map(|i| ps::register("globex", &format!("g{i}"), "G"))
        .collect();
    rs.apply(&noise).await;
    rs.apply(&[ps::register("acme", "u1", "Ann")]).await;
    rs.catch_up().await;
    let (login, pool) = login_in(&rs.db, "activity_reader").await;
    sqlx::query("INSERT INTO reader_tenants (login, tenant) VALUES ($1, 'acme')")
        .bind(&login)
        .execute(&rs.db.pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let unscoped: Option<i64> =
        sqlx::query_scalar("SELECT analytics.projection_position('user_summary')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(unscoped, None, "no tenant set: no position");
    sqlx::query("SET activity.tenant = 'acme'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mine: Option<i64> =
        sqlx::query_scalar("SELECT analytics.projection_position('user_summary')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(mine, Some(2), "acme's own log: created, then u1");
    // Another tenant set on the session: row-level security's rule, so no position.
    sqlx::query("SET activity.tenant = 'globex'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let theirs: Option<i64> =
        sqlx::query_scalar("SELECT analytics.projection_position('user_summary')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(theirs, None);
    let direct = sqlx::query("SELECT tenant_projection_position('user_summary', 'globex')")
        .execute(&mut *conn)
        .await;
    assert_eq!(
        sqlstate(direct),
        "42501",
        "readers cannot ask about a tenant"
    );
    for table in [
        "projection_checkpoints",
        "shard_checkpoints",
        "log_shards",
        "tenant_heads",
    ] {
        let global = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .execute(&mut *conn)
            .await;
        assert_eq!(
            sqlstate(global),
            "42501",
            "nor read the log's positions in {table}"
        );
    }

    // Any login may LISTEN: the append's notification carries no position.
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("activity_events").await.unwrap();
    rs.apply(&[ps::register("globex", "g99", "G")]).await;
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("notified")
        .unwrap();
    assert_eq!(note.payload(), "");

    // The API's login asks for positions only through a tenant's token.
    let (_, api) = login_in(&rs.db, "activity_http_reader").await;
    let direct = sqlx::query("SELECT tenant_projection_position('user_summary', 'globex')")
        .execute(&api)
        .await;
    assert_eq!(sqlstate(direct), "42501");
    let forged: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT * FROM analytics.token_position('user_summary', repeat('a', 64))")
            .fetch_all(&api)
            .await
            .unwrap();
    assert!(forged.is_empty(), "no token, no position: {forged:?}");
}

#[tokio::test]
async fn over_http_every_position_is_the_tenants_own() {
    let api = Api::start().await;
    let (acme, globex) = (api.token("acme").await, api.token("globex").await);
    let first = api
        .apply("acme", &acme, vec![tenant("acme"), register("acme", "u1")])
        .await;
    assert_eq!(first, 2, "command status: acme's second event");
    let mut noise = vec![tenant("globex")];
    noise.extend((0..200).map(|i| register("globex", &format!("g{i}"))));
    api.apply("globex", &globex, noise).await;
    let at = "2025-01-15T10:00:00Z";
    let third = api
        .apply(
            "acme",
            &acme,
            vec![activity("acme", "u1", "login", at, json!({}))],
        )
        .await;
    assert_eq!(third, 3, "globex's 201 events moved nothing of acme's");
    let summary = api
        .get(
            "/v1/tenants/acme/users/u1/summary?min_position=3",
            Some(&acme),
        )
        .await;
    assert_eq!(summary.status, 200, "{}", summary.text);
    assert_eq!(summary.position(), 3, "X-Activity-Position");
    assert_eq!(summary.json()["position"], 3);
    assert_eq!(summary.json()["last_activity_position"], 3);
    let feed = api.get("/v1/tenants/acme/activities", Some(&acme)).await;
    assert_eq!(feed.position(), 3);
    let daily = api.get("/v1/tenants/acme/daily", Some(&acme)).await;
    assert_eq!(daily.position(), 3);
    // Past acme's head: not reached, however far globex's log goes.
    let ahead = api
        .get("/v1/tenants/acme/daily?min_position=4", Some(&acme))
        .await;
    assert_eq!(ahead.status, 503, "{}", ahead.text);
    let theirs = api.get("/v1/tenants/globex/daily", Some(&globex)).await;
    assert_eq!(theirs.position(), 201);
    api.stop().await;
}

#[tokio::test]
async fn the_upgrade_keeps_old_positions_and_goes_on_past_them() {
    let db = TestDb::migrated().await;
    EventLog::open(db.pool.clone()).await.unwrap();
    crate::fixtures::down_to_before(&db.pool, 25).await.unwrap();
    // A log from before tenant positions: acme and globex interleaved.
    for (tenant, position) in [("acme", 1), ("globex", 2), ("acme", 3), ("globex", 4)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events (position, event_id, command_id, tenant, user_id, event_type, \
             activity_type, data, occurred_at, received_at) VALUES ({position}, \
             gen_random_uuid(), gen_random_uuid(), '{tenant}', 'u1', 'activity_recorded', \
             'login', '{{}}', now(), now())"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query("SELECT setval('events_position_seq', 4)")
        .execute(&db.pool)
        .await
        .unwrap();
    migrate::up(&db.pool).await.unwrap();
    assert_eq!(tenant_positions(&db.pool, "acme").await, vec![1, 3]);
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.append_batch(&[login("acme", "u1"), login("newco", "n1")])
        .await
        .unwrap();
    assert_eq!(tenant_positions(&db.pool, "acme").await, vec![1, 3, 4]);
    assert_eq!(
        tenant_positions(&db.pool, "newco").await,
        vec![1],
        "a tenant created after the upgrade starts at one"
    );
    // The owner may still write fixtures directly.
    insert_raw(&db.pool, &[("tenant", "'initech'")])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tenants_position_is_one_index_probe_a_month() {
    // 200 tenants of 30 events each: the log's own index would be walked past the others'.
    let db = TestDb::migrated().await;
    EventLog::open(db.pool.clone()).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, activity_type, data, occurred_at, received_at) \
         SELECT nextval('events_position_seq'), currval('events_position_seq'), \
                gen_random_uuid(), gen_random_uuid(), 't' || (i % 200), 'u' || (i % 50), \
                'activity_recorded', 'login', '{}', now(), now() \
         FROM generate_series(1, 6000) i; ANALYZE events",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT e.tenant_position FROM events e \
         WHERE e.tenant = 't1' AND e.position <= 3000 ORDER BY e.position DESC LIMIT 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Only Scan Backward using events_p")
            && plan.contains("_tenant_position_")
            && !plan.contains("pkey")
            && !plan.contains("Sort  ("),
        "{plan}"
    );
}

#[tokio::test]
async fn an_archive_from_before_the_upgrade_attaches_without_a_collision() {
    use activity_store::log::archive;
    use activity_store::log::partitions::Month;
    use chrono::TimeZone;
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let january = Month::of(chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    log.ensure_months(&[january]).await.unwrap();
    crate::fixtures::down_to_before(&db.pool, 25).await.unwrap();
    // acme's three events of January 2025, appended (ledger and all) before the upgrade.
    sqlx::raw_sql(
        "INSERT INTO events (position, event_id, command_id, tenant, user_id, event_type, \
         activity_type, data, occurred_at, received_at) \
         SELECT i, gen_random_uuid(), gen_random_uuid(), 'acme', 'u1', 'activity_recorded', \
                'login', '{}', '2025-01-15T10:00:00Z', now() FROM generate_series(1, 3) i; \
         INSERT INTO command_ledger (tenant, command_id) SELECT tenant, command_id FROM events; \
         SELECT setval('events_position_seq', 3); \
         CREATE VIEW shard_checkpoints AS \
             SELECT projection, 0 AS shard, position FROM projection_checkpoints",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // That store's detach checked projection_checkpoints.position; the view above stands
    // in for it, so this binary writes the archive the old store wrote (no tenant positions).
    let dir = std::env::temp_dir().join(crate::support::unique_name("archive"));
    let detached = archive::detach_before(&db.pool, january.next(), Some(&dir))
        .await
        .unwrap();
    let manifest = detached[0].manifest.clone().expect("archived");
    sqlx::query("DROP VIEW shard_checkpoints")
        .execute(&db.pool)
        .await
        .unwrap();
    migrate::up(&db.pool).await.unwrap();
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let now = crate::fixtures::activity("acme", "u1", chrono::Utc::now(), json!({}));
    log.append_batch(&[now]).await.unwrap();
    let attached = archive::attach(&db.pool, &manifest).await.unwrap();
    assert_eq!(attached.rows, 3);
    assert_eq!(tenant_positions(&db.pool, "acme").await, vec![1, 2, 3, 4]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_owners_direct_writes_move_the_tenants_head_too() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.append_batch(&[login("acme", "u1"), login("acme", "u2")])
        .await
        .unwrap();
    // A repair or a fixture, past begin_append: the shard's next position, tenant position 3.
    insert_raw(&db.pool, &[]).await.unwrap();
    let head: (i64, i64, i64) = sqlx::query_as(
        "SELECT head, at, (SELECT max(position) FROM events WHERE tenant = 'acme') \
         FROM tenant_heads WHERE tenant = 'acme'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((head.0, head.1), (3, head.2));
    log.append_batch(&[login("acme", "u3")]).await.unwrap();
    assert_eq!(tenant_positions(&db.pool, "acme").await, vec![1, 2, 3, 4]);
}
