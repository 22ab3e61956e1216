//! Schema rules of the log, proven against a real PostgreSQL.

use activity_store::log::{EventLog, partitions};
use chrono::Utc;
use serde_json::Value;

use crate::fixtures::{activity, insert_raw, jan, login, many, sqlstate, tricky_metadata};
use crate::support::TestDb;

async fn log() -> (TestDb, EventLog) {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.expect("open the log");
    log.ensure_months(&partitions::Month::range(partitions::Month::of(jan(1)), 2))
        .await
        .unwrap();
    (db, log)
}

#[tokio::test]
async fn tenant_is_required_everywhere() {
    let (db, _log) = log().await;
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("tenant", "NULL")]).await),
        "23502"
    );
    let r = sqlx::query("INSERT INTO users (tenant, user_id, email) VALUES (NULL, 'u', 'u@x.io')")
        .execute(&db.pool)
        .await;
    assert_eq!(sqlstate(r), "23502");
    insert_raw(&db.pool, &[])
        .await
        .expect("the same row with a tenant is accepted");
}

#[tokio::test]
async fn tenant_slug_format_and_uniqueness() {
    let (db, _log) = log().await;
    let add = |t: &'static str| {
        sqlx::query("INSERT INTO tenants (tenant, name) VALUES ($1, 'x')").bind(t)
    };
    add("acme").execute(&db.pool).await.unwrap();
    assert_eq!(sqlstate(add("acme").execute(&db.pool).await), "23505");
    for bad in [
        "Acme",
        "-acme",
        "",
        "ac me",
        "a_very_long_tenant_name_that_goes_on_and_on_past_sixty_three_chars",
    ] {
        let r = sqlx::query("INSERT INTO tenants (tenant, name) VALUES ($1, 'x')")
            .bind(bad)
            .execute(&db.pool)
            .await;
        assert_eq!(sqlstate(r), "23514", "{bad}");
    }
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("tenant", "'Not A Slug'")]).await),
        "23514"
    );
}

#[tokio::test]
async fn user_id_is_unique_within_its_tenant_only() {
    let (db, _log) = log().await;
    sqlx::query("INSERT INTO tenants (tenant, name) VALUES ('a', 'A'), ('b', 'B')")
        .execute(&db.pool)
        .await
        .unwrap();
    let add = |t: &'static str| {
        sqlx::query("INSERT INTO users (tenant, user_id, email) VALUES ($1, 'u1', 'u@x.io')")
            .bind(t)
    };
    add("a").execute(&db.pool).await.unwrap();
    assert_eq!(sqlstate(add("a").execute(&db.pool).await), "23505");
    add("b")
        .execute(&db.pool)
        .await
        .expect("the same user id in another tenant is fine");
    let r =
        sqlx::query("INSERT INTO users (tenant, user_id, email) VALUES ('nope', 'u1', 'u@x.io')")
            .execute(&db.pool)
            .await;
    assert_eq!(sqlstate(r), "23503", "a user's tenant must exist");
}

#[tokio::test]
async fn email_format_is_checked() {
    let (db, _log) = log().await;
    sqlx::query("INSERT INTO tenants (tenant, name) VALUES ('a', 'A')")
        .execute(&db.pool)
        .await
        .unwrap();
    for (i, bad) in [
        "plain",
        "a@b",
        "a b@c.io",
        "@c.io",
        "a@@c.io",
        "a@c..io",
        "a\tb@c.io",
        "a@c.i\u{7f}o",
    ]
    .iter()
    .enumerate()
    {
        let r = sqlx::query("INSERT INTO users (tenant, user_id, email) VALUES ('a', $1, $2)")
            .bind(format!("u{i}"))
            .bind(bad)
            .execute(&db.pool)
            .await;
        assert_eq!(sqlstate(r), "23514", "{bad}");
    }
    sqlx::query("INSERT INTO users (tenant, user_id, email) VALUES ('a', 'ok', 'first.last+x@sub.example.org')")
        .execute(&db.pool).await.expect("a well-formed email is accepted");
}

#[tokio::test]
async fn activity_type_length_and_alphabet() {
    let (db, _log) = log().await;
    let fifty = format!("'{}'", "x".repeat(50));
    let fifty_one = format!("'{}'", "x".repeat(51));
    insert_raw(&db.pool, &[("activity_type", &fifty)])
        .await
        .expect("50 characters fit");
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("activity_type", &fifty_one)]).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("activity_type", "''")]).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("activity_type", "'Page View'")]).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("activity_type", "NULL")]).await),
        "23514",
        "an activity must have a type"
    );
}

#[tokio::test]
async fn recorded_at_is_filled_in_by_the_database() {
    let (db, log) = log().await;
    let before = Utc::now() - chrono::Duration::microseconds(1);
    log.append_batch(&[login("acme", "u1")]).await.unwrap();
    let after = Utc::now() + chrono::Duration::microseconds(1);
    let recorded: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT recorded_at FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        before <= recorded && recorded <= after,
        "{before} <= {recorded} <= {after}"
    );
}

#[tokio::test]
async fn metadata_round_trips_exactly() {
    let (db, log) = log().await;
    log.append_batch(&[activity("acme", "u1", jan(3), tricky_metadata())])
        .await
        .unwrap();
    let data: Value = sqlx::query_scalar("SELECT data FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(data, tricky_metadata());
    assert_eq!(
        data["big"].as_u64(),
        Some(9007199254740993),
        "no float rounding of large integers"
    );
}

#[tokio::test]
async fn events_a_month_apart_land_in_different_partitions() {
    let (db, log) = log().await;
    let feb = jan(20) + chrono::Duration::days(31);
    log.append_batch(&[
        activity("acme", "u1", jan(20), Value::Object(Default::default())),
        activity("acme", "u1", feb, Value::Object(Default::default())),
    ])
    .await
    .unwrap();
    let parts: Vec<String> =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM events ORDER BY occurred_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(parts, ["events_p202501", "events_p202502"]);
}

#[tokio::test]
async fn the_log_has_no_default_partition() {
    let (db, _log) = log().await;
    let default_partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'events'::regclass AND partdefid <> 0")
        .fetch_one(&db.pool).await.unwrap();
    assert_eq!(default_partitions, 0);
    let strategy: String = sqlx::query_scalar(
        "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(strategy, "r", "range partitioned");
    let r = insert_raw(&db.pool, &[("occurred_at", "'1999-01-01T00:00:00Z'")]).await;
    assert_eq!(
        sqlstate(r),
        "23514",
        "a month with no partition is refused, not dumped in a default"
    );
}

#[tokio::test]
async fn tenant_user_query_uses_the_composite_index() {
    let (db, log) = log().await;
    for chunk in many("acme", 500, 20_000).chunks(5_000) {
        log.append_batch(chunk).await.unwrap();
    }
    sqlx::query("ANALYZE events")
        .execute(&db.pool)
        .await
        .unwrap();
    let children: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'events_tenant_user_time'::regclass",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!children.is_empty(), "every partition carries the index");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM events WHERE tenant = 'acme' AND user_id = 'user-7' ORDER BY occurred_at DESC LIMIT 20")
        .fetch_all(&db.pool).await.unwrap();
    let plan = plan.join("\n");
    assert!(
        children.iter().any(|c| plan.contains(c.as_str())),
        "plan uses the index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "no sequential scan:\n{plan}");
}

#[tokio::test]
async fn dead_letter_reasons_are_the_contracts() {
    let (db, _log) = log().await;
    let add =
        |reason: &'static str| {
            sqlx::query(
        "INSERT INTO dead_letters (reason, message, raw, raw_length, raw_sha256, received_at) \
         VALUES ($1, 'm', '\\x00ff', 2, sha256('\\x00ff'), now())").bind(reason)
        };
    for reason in activity_store::model::Reason::ALL {
        add(reason.code())
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{reason}: {e}"));
    }
    assert_eq!(sqlstate(add("bogus").execute(&db.pool).await), "23514");
}

#[tokio::test]
async fn event_rows_are_checked_by_kind() {
    let (db, _log) = log().await;
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("event_type", "'user_deleted'")]).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("data", "'[1]'")]).await),
        "23514",
        "data is an object"
    );
    let tenant_created_with_user = [
        ("event_type", "'tenant_created'"),
        ("activity_type", "NULL"),
    ];
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &tenant_created_with_user).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &[("user_id", "NULL")]).await),
        "23514",
        "an activity has a user"
    );
    let registered_with_type = [("event_type", "'user_registered'")];
    assert_eq!(
        sqlstate(insert_raw(&db.pool, &registered_with_type).await),
        "23514",
        "only activities have a type"
    );
    insert_raw(
        &db.pool,
        &[
            ("event_type", "'tenant_created'"),
            ("activity_type", "NULL"),
            ("user_id", "NULL"),
        ],
    )
    .await
    .expect("a well-formed tenant_created row");
}
