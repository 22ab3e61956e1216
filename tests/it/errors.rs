//! Which failures are worth retrying: decided by error kind and SQLSTATE, never by message text.

use activity_store::log::LogError;
use sqlx::{Connection, PgConnection};

use crate::fixtures::insert_raw;
use crate::support::TestDb;

fn database(source: sqlx::Error) -> LogError {
    LogError::Database {
        action: "test",
        source,
    }
}

#[tokio::test]
async fn an_unreachable_database_is_transient_a_refused_row_is_not() {
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
    assert!(!e.is_transient());
    assert!(
        e.to_string()
            .starts_with("database error while trying to test:"),
        "{e}"
    );
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
        "a connection killed by the server is worth a retry"
    );
    assert!(LogError::NoPartition("x".into()).is_transient());
}
