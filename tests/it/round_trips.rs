//! The write side of an ingest batch is a fixed number of round trips, whatever the batch
//! holds: counted by the server itself (`pg_stat_statements`, which the test PostgreSQL
//! preloads), for a batch through a writer login, as the ingestor commits it.

use activity_store::ingest::commit_batch;
use activity_store::log::EventLog;
use activity_store::model::TimeWindow;
use serde_json::{Value, json};

use crate::fixtures::login_in;
use crate::ingest_support::{activity, batch, create_tenant, register};
use crate::support::TestDb;

/// Top-level statements the server ran in `db`'s database since the last reset. The check a
/// deferred trigger runs at COMMIT (every permit used) is counted as top-level too, but the
/// client sends nothing for it.
async fn statements(db: &TestDb) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT query, calls FROM pg_stat_statements \
         WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = $1) \
           AND userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user) \
           AND query NOT LIKE 'EXISTS (SELECT % FROM append_permits WHERE tx_id = NEW.tx_id)' \
         ORDER BY query",
    )
    .bind(&db.name)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_mixed_batch_commits_in_five_statements_a_shard_begin_read_write_copy_commit() {
    let db = TestDb::migrated().await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&db.pool)
        .await
        .expect("the test PostgreSQL preloads pg_stat_statements");
    let (_, writer) = login_in(&db, "activity_writer").await;
    let log = EventLog::open(writer).await.unwrap();
    let window = TimeWindow::default();
    let mut setup = vec![create_tenant("acme")];
    setup.extend((0..20).map(|u| register("acme", &format!("u{u}"))));
    setup.push(activity("acme", "u0"));
    commit_batch(&log, "RT", 0, &batch(1, setup), &window)
        .await
        .unwrap();

    // Every kind of write at once: new users, an email change, a forget, activities, refusals.
    let mut mixed: Vec<Value> = (0..200)
        .map(|i| activity("acme", &format!("u{}", i % 20)))
        .collect();
    mixed.push(register("acme", "new-user"));
    mixed.push(json!({"type": "change_user_email", "tenant": "acme", "user": "u1", "email": "x@example.com"}));
    mixed.push(json!({"type": "forget_user", "tenant": "acme", "user": "u2"}));
    mixed.push(create_tenant("acme"));
    mixed.push(activity("acme", "nobody"));
    mixed.push(create_tenant("globex"));
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = $1), 0)",
    )
    .bind(&db.name)
    .execute(&db.pool)
    .await
    .unwrap();
    let outcome = commit_batch(&log, "RT", 0, &batch(100, mixed), &window)
        .await
        .unwrap();
    assert_eq!(outcome.appended, 204, "{outcome:?}");
    assert_eq!(outcome.rejected.len(), 2, "{outcome:?}");

    let ran = statements(&db).await;
    let calls: i64 = ran.iter().map(|(_, c)| c).sum();
    // Per shard the batch touches; a batch of two shards also moves the checkpoint after.
    let shards = activity_store::log::shards::partition;
    let n = crate::support::test_shards() as u32;
    let expected = if shards("acme", n) == shards("globex", n) {
        5
    } else {
        11
    };
    assert_eq!(
        calls, expected,
        "BEGIN, the read, the write, the COPY, COMMIT (per shard); ran: {ran:#?}"
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(dead, 2);
    let (seq, email): (i64, String) = sqlx::query_as(
        "SELECT (SELECT last_seq FROM ingest_checkpoints WHERE stream = 'RT'), \
                (SELECT email FROM users WHERE tenant = 'acme' AND user_id = 'u1')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((seq, email.as_str()), (305, "x@example.com"));
}

#[tokio::test]
async fn every_registry_change_in_one_write_statement_lands_as_decided() {
    let db = TestDb::migrated().await;
    let (_, writer) = login_in(&db, "activity_writer").await;
    let log = EventLog::open(writer).await.unwrap();
    let window = TimeWindow::default();
    let setup = vec![
        create_tenant("acme"),
        register("acme", "gone"),
        register("acme", "back"),
        register("acme", "moved"),
    ];
    commit_batch(&log, "RT", 0, &batch(1, setup), &window)
        .await
        .unwrap();
    let email = |u: &str, e: &str| json!({"type": "change_user_email", "tenant": "acme", "user": u, "email": e});
    let forget = |u: &str| json!({"type": "forget_user", "tenant": "acme", "user": u});
    // In one batch: a new tenant and its user, a forget, a forget then a new registration
    // then an email change of the same user, an email change twice, and an activity of a
    // user registered earlier in the batch.
    let mixed = vec![
        create_tenant("globex"),
        register("globex", "g1"),
        activity("globex", "g1"),
        forget("gone"),
        forget("back"),
        register("back", "ignored"),
        json!({"type": "register_user", "tenant": "acme", "user": "back", "email": "back@new.example.com", "name": "Back"}),
        email("back", "back@final.example.com"),
        email("moved", "m1@example.com"),
        email("moved", "m2@example.com"),
        activity("acme", "gone"),
    ];
    let outcome = commit_batch(&log, "RT", 0, &batch(10, mixed), &window)
        .await
        .unwrap();
    // `register("back", …)` names tenant `back`, which does not exist; `gone` is forgotten.
    assert_eq!(outcome.appended, 9, "{outcome:?}");
    assert_eq!(outcome.rejected.len(), 2, "{outcome:?}");
    let users: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT tenant, user_id, email, name FROM users ORDER BY tenant, user_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let users: Vec<(&str, &str, &str, Option<&str>)> = users
        .iter()
        .map(|(t, u, e, n)| (t.as_str(), u.as_str(), e.as_str(), n.as_deref()))
        .collect();
    assert_eq!(
        users,
        [
            ("acme", "back", "back@final.example.com", Some("Back")),
            ("acme", "moved", "m2@example.com", None),
            ("globex", "g1", "g1@example.com", None),
        ]
    );
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = 'RT'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(checkpoint, 20);
}
