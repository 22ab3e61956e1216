//! The log is append-only: for the application role by privileges, for everyone by trigger.

use sqlx::{Connection, PgConnection};

use crate::fixtures::{login, sqlstate};
use crate::support::TestDb;
use activity_store::log::{EventLog, partitions};

#[tokio::test]
async fn the_log_refuses_update_delete_and_truncate_even_from_its_owner() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(crate::fixtures::jan(1))])
        .await
        .unwrap();
    log.append_batch(&[login("acme", "u1")]).await.unwrap();
    for sql in [
        "UPDATE events SET tenant = 'other'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE events_p202501 SET data = '{}'",
        "TRUNCATE events_p202501",
        "DELETE FROM events_p202501",
    ] {
        let r = sqlx::query(sql).execute(&db.pool).await;
        assert_eq!(sqlstate(r), "42501", "{sql}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_application_role_may_append_and_read_but_not_rewrite() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(crate::fixtures::jan(1))])
        .await
        .unwrap();
    let (user, pool) = crate::fixtures::login_in(&db, "activity_writer").await;
    let as_app = EventLog::open(pool.clone())
        .await
        .expect("the writer opens the log");
    as_app
        .append_batch(&[login("acme", "u1")])
        .await
        .expect("the writer appends");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DELETE FROM command_ledger",
        "UPDATE dead_letters SET reason = 'malformed'",
    ] {
        assert_eq!(
            sqlstate(sqlx::query(sql).execute(&mut conn).await),
            "42501",
            "{sql}"
        );
    }
}
