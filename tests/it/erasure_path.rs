//! The log's one sanctioned rewrite: `erase_user_events`, as the log's owner, under an
//! erasure in progress, replacing only the user id (with the erasure's pseudonym) and the
//! data (with a scrubbed form). Every other rewrite is refused, the owner's included.

use crate::fixtures::{login_in, sqlstate};
use crate::ingest_support::{activity, create_tenant, register};
use crate::project_support::ReadSide;

const PSEUDONYM: &str = "erased-0123456789abcdef0123456789abcdef";

async fn with_erasure(side: &ReadSide) {
    let forgotten_at: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&side.db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO erasures (tenant, pseudonym, forgotten_at) VALUES ('acme', $1, $2)")
        .bind(PSEUDONYM)
        .bind(forgotten_at)
        .execute(&side.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_sanctioned_scrub_rewrites_the_log() {
    let side = ReadSide::new().await;
    side.apply(&[
        create_tenant("acme"),
        register("acme", "ann"),
        activity("acme", "ann"),
    ])
    .await;
    let mut conn = side.db.pool.acquire().await.unwrap();
    // No erasure in progress: refused, even to a superuser.
    let direct = sqlx::query("UPDATE events SET data = '{}' WHERE user_id = 'ann'")
        .execute(&mut *conn)
        .await;
    assert_eq!(sqlstate(direct), "42501");
    let unknown = sqlx::query(
        "SELECT set_config('activity.erasure', $1, false), erase_user_events($1, 'ann', 10)",
    )
    .bind(PSEUDONYM)
    .execute(&mut *conn)
    .await;
    assert_eq!(sqlstate(unknown), "P0002", "no erasure in progress");

    with_erasure(&side).await;
    sqlx::query("SELECT set_config('activity.erasure', $1, false)")
        .bind(PSEUDONYM)
        .execute(&mut *conn)
        .await
        .unwrap();
    for sql in [
        // Anything but the pseudonym and a scrubbed form, under the erasure's name.
        "UPDATE events SET user_id = 'someone-else' WHERE user_id = 'ann'",
        "UPDATE events SET user_id = current_setting('activity.erasure'), data = '{\"x\": 1}' WHERE user_id = 'ann'",
        "UPDATE events SET user_id = current_setting('activity.erasure'), data = '{}', tenant = 'globex' WHERE user_id = 'ann'",
        "UPDATE events SET user_id = current_setting('activity.erasure'), data = '{}', position = position + 100 WHERE user_id = 'ann'",
        "DELETE FROM events WHERE user_id = 'ann'",
    ] {
        let r = sqlx::query(sql).execute(&mut *conn).await;
        assert!(["42501", "23514"].contains(&sqlstate(r).as_str()), "{sql}");
    }
    sqlx::query("RESET activity.erasure")
        .execute(&mut *conn)
        .await
        .unwrap();

    // A writer may not call the sanctioned path at all.
    let (_, writer) = login_in(&side.db, "activity_writer").await;
    let r = sqlx::query("SELECT erase_user_events($1, 'ann', 10)")
        .bind(PSEUDONYM)
        .execute(&writer)
        .await;
    assert_eq!(sqlstate(r), "42501");

    // The owner, through it: every event of ann's up to the erasure, scrubbed in batches.
    let mut total = 0;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT erase_user_events($1, 'ann', 1)")
            .bind(PSEUDONYM)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 2);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE user_id = 'ann' OR data::text LIKE '%ann%'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(left, 0);
    let (events, logged): (i64, i64) = sqlx::query_as(
        "SELECT count(*), (SELECT log_events FROM erasures) FROM events WHERE user_id = $1",
    )
    .bind(PSEUDONYM)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!((events, logged), (2, 2));
}
