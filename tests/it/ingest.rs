//! The write path through a real NATS JetStream: decide, dead-letter, deduplicate, ack.

use serde_json::json;

use crate::ingest_support::{Pipeline, activity, create_tenant, register};

#[tokio::test]
async fn tenant_user_and_activity_in_one_batch_all_land_with_lineage() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "u1")).await;
    let seq = p.publish(activity("acme", "u1")).await;
    assert_eq!(p.drain().await, 3);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
    let (subject, stream_seq, delivered, at): (String, i64, i32, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT subject, stream_seq, delivery_count, occurred_at FROM events WHERE event_type = 'activity_recorded'")
        .fetch_one(&p.db.pool).await.unwrap();
    assert_eq!(
        (subject, stream_seq, delivered),
        (p.subject("acme"), seq as i64, 1)
    );
    assert_eq!(at.to_rfc3339(), "2025-01-20T14:45:00+00:00");
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE tenant = 'acme' AND user_id = 'u1'")
            .await,
        1
    );
}

#[tokio::test]
async fn every_reason_code_reaches_the_dead_letters_through_nats() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "u1")).await;
    p.drain().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"\xff\xfenot utf-8 {".to_vec()),
        ("unknown_type", serde_json::to_vec(&json!({"type": "nope", "id": uuid::Uuid::new_v4(), "tenant": "acme"})).unwrap()),
        ("invalid_field", serde_json::to_vec(&json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "u9", "email": "bad"})).unwrap()),
        ("unknown_tenant", serde_json::to_vec(&json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": "ghost", "user": "u", "email": "u@x.io"})).unwrap()),
        ("tenant_exists", serde_json::to_vec(&json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme", "name": "A"})).unwrap()),
        ("unknown_user", serde_json::to_vec(&json!({"type": "record_activity", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "nobody", "activity_type": "x"})).unwrap()),
        ("user_exists", serde_json::to_vec(&json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "u1", "email": "u@x.io"})).unwrap()),
        ("tenant_mismatch", serde_json::to_vec(&json!({"type": "forget_user", "id": uuid::Uuid::new_v4(), "tenant": "other", "user": "u1"})).unwrap()),
        ("out_of_range", serde_json::to_vec(&json!({"type": "record_activity", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "u1", "activity_type": "x", "occurred_at": "2001-01-01T00:00:00Z"})).unwrap()),
        ("too_large", serde_json::to_vec(&json!({"type": "record_activity", "id": uuid::Uuid::new_v4(), "tenant": "acme", "user": "u1", "activity_type": "x", "metadata": {"blob": "x".repeat(20_000)}})).unwrap()),
    ];
    let mut seqs = Vec::new();
    for (reason, bytes) in &cases {
        // Each is published on the subject of tenant `acme` (the tenant_mismatch case's body says `other`).
        let subject_tenant = if *reason == "unknown_tenant" {
            "ghost"
        } else {
            "acme"
        };
        seqs.push(p.publish_raw(subject_tenant, bytes.clone(), None).await);
    }
    assert_eq!(p.drain().await, cases.len());
    for ((reason, bytes), seq) in cases.iter().zip(seqs) {
        let row: (String, String, String, i64, Vec<u8>) = sqlx::query_as(
            "SELECT reason, message, subject, stream_seq, raw FROM dead_letters WHERE stream_seq = $1")
            .bind(seq as i64).fetch_one(&p.db.pool).await.unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(row.0, *reason, "message: {}", row.1);
        assert!(!row.1.is_empty());
        assert!(row.2.starts_with(&format!("{}.commands.", p.prefix)));
        assert_eq!(&row.4, bytes, "raw bytes kept exactly");
    }
    assert_eq!(
        p.count("SELECT count(*) FROM events").await,
        2,
        "nothing bad reached the log"
    );
}

#[tokio::test]
async fn bad_messages_never_hold_back_good_ones_in_the_same_batch() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    for i in 0..20 {
        p.publish(register("acme", &format!("u{i}"))).await;
        p.publish_raw("acme", b"{broken".to_vec(), None).await;
        p.publish(activity("acme", "nobody")).await;
    }
    assert_eq!(p.drain().await, 61);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 21);
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters WHERE reason = 'malformed'")
            .await,
        20
    );
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters WHERE reason = 'unknown_user'")
            .await,
        20
    );
    assert_eq!(
        p.drain().await,
        0,
        "everything was acked: nothing comes back"
    );
}

#[tokio::test]
async fn duplicates_inside_and_beyond_the_nats_window_apply_once() {
    let p = Pipeline::new().await;
    let create =
        json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme", "name": "A"});
    p.publish(create.clone()).await;
    p.publish(create.clone()).await; // same Nats-Msg-Id: JetStream drops it
    let raw = serde_json::to_vec(&create).unwrap();
    p.publish_raw("acme", raw, None).await; // no header: as if after the window, reaches the store
    let mut changed = create.clone();
    changed["name"] = json!("Different body, same id");
    p.publish_raw("acme", serde_json::to_vec(&changed).unwrap(), None)
        .await;
    assert_eq!(p.drain().await, 3);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters").await,
        0,
        "a duplicate is not a rejection"
    );
    let name: String = sqlx::query_scalar("SELECT name FROM tenants")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(name, "A", "the first one wins");
    p.publish_raw("acme", serde_json::to_vec(&create).unwrap(), None)
        .await;
    p.drain().await;
    assert_eq!(
        p.count("SELECT count(*) FROM events").await,
        1,
        "and in a later batch too"
    );
}

#[tokio::test]
async fn a_value_postgres_refuses_dead_letters_only_its_own_message() {
    let p = Pipeline::new().await;
    sqlx::query(
        "ALTER TABLE users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE '%@blocked.example')",
    )
    .execute(&p.db.pool)
    .await
    .unwrap();
    p.publish(create_tenant("acme")).await;
    p.drain().await;
    p.publish(register("acme", "ok1")).await;
    p.publish(json!({"type": "register_user", "tenant": "acme", "user": "bad", "email": "x@blocked.example"})).await;
    p.publish(register("acme", "ok2")).await;
    assert_eq!(p.drain().await, 3);
    assert_eq!(p.count("SELECT count(*) FROM users").await, 2);
    let (reason, message): (String, String) =
        sqlx::query_as("SELECT reason, message FROM dead_letters")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(reason, "invalid_field");
    assert!(
        message.contains("PostgreSQL refused") && message.contains("no_blocked"),
        "{message}"
    );
}

#[tokio::test]
async fn a_subject_with_more_tokens_cannot_name_another_tenant() {
    let p = Pipeline::new().await;
    let sneaky = format!("{}.commands.evil.acme", p.prefix);
    let published = async { p.js.publish(sneaky, "{}".into()).await?.await }.await;
    assert!(
        published.is_err(),
        "no stream takes multi-token subjects, so the publish is refused"
    );
}

#[tokio::test]
async fn forget_then_register_again() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "u1")).await;
    p.publish(json!({"type": "forget_user", "tenant": "acme", "user": "u1"}))
        .await;
    p.publish(activity("acme", "u1")).await;
    p.drain().await;
    assert_eq!(p.count("SELECT count(*) FROM users").await, 0);
    assert_eq!(
        p.count("SELECT count(*) FROM dead_letters WHERE reason = 'unknown_user'")
            .await,
        1
    );
    p.publish(register("acme", "u1")).await;
    p.publish(activity("acme", "u1")).await;
    p.drain().await;
    assert_eq!(p.count("SELECT count(*) FROM users").await, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM events WHERE event_type = 'activity_recorded'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_misconfigured_database_stops_the_ingestor_and_dead_letters_nothing() {
    let p = Pipeline::new().await;
    sqlx::query("ALTER TABLE tenants RENAME TO tenants_elsewhere")
        .execute(&p.db.pool)
        .await
        .unwrap();
    p.publish(create_tenant("acme")).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), p.ingestor.step())
        .await
        .expect("a missing table is not retried for ever");
    match stopped {
        Err(activity_store::ingest::IngestError::Log(e)) => assert!(e.is_fatal(), "{e}"),
        other => panic!("expected a fatal database error, got {other:?}"),
    }
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}
