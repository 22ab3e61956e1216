//! Leases: locks held on a session of their own, kept alive by pings. A holder that dies
//! loses them at once; one that hangs (here: its pinger blocked, as in a stopped process)
//! loses them after the time to live, and learns so when it wakes.

use std::time::{Duration, Instant};

use activity_store::db::lease::Lease;

use crate::support::TestDb;

async fn free(db: &TestDb, key: i32) -> bool {
    let mut conn = db.pool.acquire().await.unwrap();
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(77, $1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if taken {
        sqlx::query("SELECT pg_advisory_unlock(77, $1)")
            .bind(key)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    taken
}

#[tokio::test]
async fn a_live_holder_keeps_its_lease_past_the_ttl() {
    let db = TestDb::migrated().await;
    let lease = Lease::open(&db.pool, Duration::from_secs(1)).await.unwrap();
    assert!(lease.try_take(77, 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!free(&db, 1).await, "held while the pings go on");
    assert!(!lease.lost().is_cancelled());
    lease.check().await.unwrap();
    lease.release(77, 1).await.unwrap();
    assert!(free(&db, 1).await, "released");
}

#[tokio::test]
async fn a_hung_holder_loses_its_lease_after_the_ttl_and_learns_it_on_waking() {
    let db = TestDb::migrated().await;
    let lease = Lease::open(&db.pool, Duration::from_secs(1)).await.unwrap();
    assert!(lease.try_take(77, 2).await.unwrap());
    assert!(!free(&db, 2).await);
    let hung = Instant::now();
    {
        // The session held and idle, the pinger blocked: a stopped process, to the server.
        let _stuck = lease.session().await;
        while !free(&db, 2).await {
            assert!(
                hung.elapsed() < Duration::from_secs(10),
                "the server never ended the hung session"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            hung.elapsed() >= Duration::from_millis(900),
            "not before the ttl"
        );
    }
    // Awake: the next ping finds the session gone.
    tokio::time::timeout(Duration::from_secs(5), lease.lost().cancelled())
        .await
        .expect("the holder learns its lease is lost");
    assert!(
        lease.try_take(77, 2).await.is_err(),
        "a lost lease takes nothing"
    );
}

#[tokio::test]
async fn a_dropped_holder_frees_its_locks_at_once() {
    let db = TestDb::migrated().await;
    let lease = Lease::open(&db.pool, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(lease.try_take(77, 3).await.unwrap());
    drop(lease);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !free(&db, 3).await {
        assert!(
            Instant::now() < deadline,
            "a closed session's locks are freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_running_store_s_sessions_are_ended_when_idle_inside_a_transaction() {
    // A process hung mid-transaction would otherwise hold its shard's append lock for ever.
    let db = TestDb::migrated().await;
    let pool = activity_store::db::worker_pool(
        &db.url(),
        ("ingest", 1),
        Duration::from_secs(5),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let set: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(set, "3s");
    let plain: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(plain, "0", "other sessions are left as the server has them");
}
