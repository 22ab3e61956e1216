//! `create_event_partition`: UTC months whatever the session's TimeZone, and no silent
//! success when a table of the partition's name is not a partition.

use crate::fixtures::sqlstate;
use crate::support::TestDb;

#[tokio::test]
async fn months_are_utc_months_in_any_session_time_zone() {
    let db = TestDb::migrated().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET TimeZone = 'America/New_York'")
        .execute(&mut *conn)
        .await
        .unwrap();
    for month in ["2025-03-15T12:00:00Z", "2025-11-01T02:00:00Z"] {
        sqlx::query("SELECT create_event_partition($1::timestamptz)")
            .bind(month)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query("SET TimeZone = 'UTC'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let bounds: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        bounds,
        [
            (
                "events_p202503".to_owned(),
                "FOR VALUES FROM ('2025-03-01 00:00:00+00') TO ('2025-04-01 00:00:00+00')"
                    .to_owned()
            ),
            (
                "events_p202511".to_owned(),
                "FOR VALUES FROM ('2025-11-01 00:00:00+00') TO ('2025-12-01 00:00:00+00')"
                    .to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn a_detached_month_is_an_error_not_a_silent_success() {
    let db = TestDb::migrated().await;
    sqlx::query("SELECT create_event_partition('2025-01-10T00:00:00Z')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events DETACH PARTITION events_p202501")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = sqlx::query("SELECT create_event_partition('2025-01-10T00:00:00Z')")
        .execute(&db.pool)
        .await;
    assert_eq!(sqlstate(r), "42P07");
}
