//! Which failures are worth retrying: decided by SQLSTATE class, never by message text. Only
//! failures caused by the data itself are final; anything the system did is retried.

use activity_store::db::DbError;
use activity_store::log::{EventLog, append_in};
use chrono::{TimeZone, Utc};
use sqlx::{Connection, PgConnection};

use crate::fixtures::{activity, insert_raw};
use crate::support::TestDb;

fn database(source: sqlx::Error) -> DbError {
    DbError::Database {
        action: "test",
        source,
    }
}

#[tokio::test]
async fn system_failures_are_retried_data_failures_are_not() {
    let unreachable = PgConnection::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(database(unreachable).is_transient());
    assert!(database(sqlx::Error::PoolTimedOut).is_transient());
    let db = TestDb::migrated().await;
    let refused = insert_raw(&db.pool, &[("tenant", "NULL")])
        .await
        .unwrap_err();
    let e = database(refused);
    assert!(!e.is_transient(), "23502: the row's fault");
    assert!(
        e.to_string()
            .starts_with("database error while trying to test:"),
        "{e}"
    );

    let mut conn = PgConnection::connect_with(&crate::support::pg_options(&db.name))
        .await
        .unwrap();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .unwrap();
    let read_only = sqlx::query("INSERT INTO tenants (tenant, name) VALUES ('a', 'A')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(
        database(read_only).is_transient(),
        "25006, as on a replica after failover"
    );
    sqlx::query("SET statement_timeout = 10")
        .execute(&mut conn)
        .await
        .unwrap();
    let timeout = sqlx::query("SELECT pg_sleep(1)")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(database(timeout).is_transient(), "57014");
    let bad_json = sqlx::query("SELECT '{'::jsonb")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(!database(bad_json).is_transient(), "22P02");

    let mut victim = PgConnection::connect_with(&crate::support::pg_options(&db.name))
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&db.pool)
        .await
        .unwrap();
    let terminated = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .unwrap_err();
    assert!(
        database(terminated).is_transient(),
        "a connection killed by the server"
    );
}

#[tokio::test]
async fn a_month_without_partition_is_named_as_such() {
    let db = TestDb::migrated().await;
    let _log = EventLog::open(db.pool.clone()).await.unwrap();
    let long_ago = Utc.with_ymd_and_hms(2022, 3, 3, 0, 0, 0).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let e = append_in(
        &mut tx,
        &[activity("acme", "u1", long_ago, serde_json::json!({}))],
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DbError::NoPartition(_)), "{e}");
    assert!(
        !e.is_transient(),
        "retrying the same batch would not help; splitting it does"
    );
    assert!(e.to_string().contains("partitions ensure"), "{e}");
}

#[tokio::test]
async fn the_servers_errors_are_said_without_the_drivers_source_line() {
    let db = TestDb::migrated().await;
    let raw = sqlx::query("SELECT no_such_column FROM events")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(raw.to_string().contains(" at line "), "{raw}");
    let said = database(raw).to_string();
    assert!(
        said.starts_with("database error while trying to test: column \"no_such_column\""),
        "{said}"
    );
    assert!(!said.contains(" at line "), "{said}");
}
