//! The database enforces the append path: a login in `activity_writer` appends only through
//! `begin_append` and the rows it allowed, never touches the ledger or the position sequence
//! directly, and sees nothing of the read side. Command ids are scoped to their tenant.

use activity_store::log::{EventLog, partitions};
use sqlx::{Connection, PgConnection};

use crate::fixtures::{jan, login, login_in, sqlstate};
use crate::ingest_support::{Pipeline, create_tenant};
use crate::support::TestDb;

async fn writer() -> (TestDb, String, sqlx::PgPool) {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(jan(1))])
        .await
        .unwrap();
    let (user, pool) = login_in(&db, "activity_writer").await;
    (db, user, pool)
}

const ROW: &str = "INSERT INTO events (position, event_id, command_id, tenant, user_id, event_type, \
    activity_type, data, occurred_at, received_at, tenant_position) VALUES ($1, gen_random_uuid(), $2, \
    'acme', 'u1', 'activity_recorded', 'login', '{}', '2025-01-15T10:30:00Z', now(), $3)";

#[tokio::test]
async fn a_writer_cannot_insert_into_the_log_or_the_ledger_or_move_positions() {
    let (db, user, _pool) = writer().await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    let direct = sqlx::query(ROW)
        .bind(1_i64)
        .bind(uuid::Uuid::new_v4())
        .bind(1_i64)
        .execute(&mut conn)
        .await;
    assert_eq!(sqlstate(direct), "42501", "a direct INSERT into events");
    for sql in [
        "INSERT INTO command_ledger (tenant, command_id) VALUES ('acme', gen_random_uuid())",
        "SELECT setval('events_position_seq', 1000)",
        "SELECT nextval('events_position_seq')",
        "INSERT INTO append_permits VALUES (pg_current_xact_id(), 1, 1, '{acme}', ARRAY[gen_random_uuid()])",
        "SELECT count(*) FROM projection_checkpoints",
        "CREATE TABLE analytics.mine (x int)",
    ] {
        assert_eq!(
            sqlstate(sqlx::query(sql).execute(&mut conn).await),
            "42501",
            "{sql}"
        );
    }
    let reads_analytics: bool =
        sqlx::query_scalar("SELECT has_schema_privilege('analytics', 'USAGE')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(
        !reads_analytics,
        "the ingest role has no way into analytics"
    );
}

/// Asks `begin_append` for one command of acme; returns the position and the tenant
/// position it handed out.
async fn permit(tx: &mut sqlx::PgConnection, id: uuid::Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT last, tenant_last FROM begin_append(ARRAY['acme'], ARRAY[$1::uuid])")
        .bind(id)
        .fetch_one(tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_must_be_exactly_what_begin_append_handed_out() {
    let (db, user, _pool) = writer().await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    // One event of acme already in the log, so a forgery can aim at its tenant position.
    let mut tx = conn.begin().await.unwrap();
    let earlier = uuid::Uuid::new_v4();
    let (last, tenant_last) = permit(&mut tx, earlier).await;
    let row = sqlx::query(ROW).bind(last).bind(earlier).bind(tenant_last);
    row.execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let id = uuid::Uuid::new_v4();
    // (position offset from the one handed out, command id, tenant position offset) of a
    // forged row.
    let forgeries = [
        (1_i64, id, 0_i64),           // a position not handed out
        (0, uuid::Uuid::new_v4(), 0), // a command id not recorded in the ledger
        (-5, id, 0),                  // an old position, to overwrite history
        (0, id, 1),                   // a tenant position not handed out
        (0, id, -1),                  // the tenant position of the event before
    ];
    for (offset, command, tenant_offset) in forgeries {
        let mut tx = conn.begin().await.unwrap();
        let (last, tenant_last) = permit(&mut tx, id).await;
        let r = sqlx::query(ROW)
            .bind(last + offset)
            .bind(command)
            .bind(tenant_last + tenant_offset)
            .execute(&mut *tx)
            .await;
        assert_eq!(sqlstate(r), "42501", "offsets {offset} {tenant_offset}");
        tx.rollback().await.unwrap();
    }
    // Two rows for one permit: the second statement has no permit left.
    let mut tx = conn.begin().await.unwrap();
    let (last, tenant_last) = permit(&mut tx, id).await;
    sqlx::query(ROW)
        .bind(last)
        .bind(id)
        .bind(tenant_last)
        .execute(&mut *tx)
        .await
        .expect("the row begin_append allowed");
    let again = sqlx::query(ROW)
        .bind(last + 1_000)
        .bind(id)
        .bind(tenant_last + 1)
        .execute(&mut *tx)
        .await;
    assert_eq!(sqlstate(again), "42501");
}

#[tokio::test]
async fn the_append_path_works_for_a_writer_and_a_repeat_is_a_duplicate() {
    let (_db, _user, pool) = writer().await;
    let log = EventLog::open(pool.clone()).await.unwrap();
    let e = login("acme", "u1");
    let first = log.append_batch(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(first.appended, 1);
    let again = log.append_batch(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!((again.appended, again.duplicates.len()), (0, 1));
    // The same id from another tenant is another command.
    let mut other = e.clone();
    other.tenant = "globex".into();
    other.event_id = uuid::Uuid::new_v4();
    let theirs = log.append_batch(&[other]).await.unwrap();
    assert_eq!(
        theirs.appended, 1,
        "another tenant's command with the same id"
    );
}

#[tokio::test]
async fn the_same_command_id_from_two_tenants_lands_for_both_through_nats() {
    let p = Pipeline::new().await;
    let id = uuid::Uuid::new_v4().to_string();
    for tenant in ["acme", "globex"] {
        let mut c = create_tenant(tenant);
        c["id"] = serde_json::json!(id);
        p.publish(c).await;
    }
    p.drain().await;
    assert_eq!(p.count("SELECT count(*) FROM tenants").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn the_ingestor_runs_as_a_writer_login() {
    let db = TestDb::migrated().await;
    let (_user, pool) = login_in(&db, "activity_writer").await;
    let p = Pipeline::on_pool(db, pool).await;
    p.publish(create_tenant("acme")).await;
    p.publish(crate::ingest_support::register("acme", "ann"))
        .await;
    p.publish(crate::ingest_support::activity("acme", "ann"))
        .await;
    p.publish(crate::ingest_support::activity("acme", "nobody"))
        .await;
    p.drain().await;
    assert_eq!(p.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 1);
}

#[tokio::test]
async fn positions_handed_out_and_never_appended_fail_the_commit() {
    let (db, user, _pool) = writer().await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    let mut tx = conn.begin().await.unwrap();
    permit(&mut tx, id).await;
    let committed = tx.commit().await;
    assert_eq!(sqlstate(committed), "42501", "ledger rows without events");
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM command_ledger")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 0, "the command stays unapplied");
}

#[tokio::test]
async fn no_permit_is_left_behind_by_any_appender() {
    let (db, _user, pool) = writer().await;
    for p in [&db.pool, &pool] {
        let log = EventLog::open(p.clone()).await.unwrap();
        log.append_batch(&[login("acme", "u1"), login("acme", "u2")])
            .await
            .unwrap();
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM append_permits")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the owner's appends consume their permits too");
}
