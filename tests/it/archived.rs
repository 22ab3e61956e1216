//! Old and detached months: a command for a month whose partition was detached is a dead
//! letter (`archived_month`), never a stopped loop; only accepted commands create months.

use activity_store::log::{EventLog, partitions};
use serde_json::{Value, json};

use crate::fixtures::jan;
use crate::ingest_support::{Pipeline, create_tenant, register};

fn activity_at(tenant: &str, user: &str, at: &str) -> Value {
    json!({"type": "record_activity", "tenant": tenant, "user": user, "activity_type": "login",
        "occurred_at": at})
}

async fn partition_exists(p: &Pipeline, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_command_for_a_detached_month_is_a_dead_letter_and_the_rest_land() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "ann")).await;
    p.publish(activity_at("acme", "ann", "2025-01-10 08:00:00"))
        .await;
    p.drain().await;
    // The ingestor believes January exists; an operator detaches it under it.
    sqlx::query("ALTER TABLE events DETACH PARTITION events_p202501")
        .execute(&p.db.pool)
        .await
        .unwrap();
    let archived = p
        .publish(activity_at("acme", "ann", "2025-01-20 08:00:00"))
        .await;
    p.publish(activity_at("acme", "ann", "2025-02-20 08:00:00"))
        .await;
    p.publish(register("acme", "bob")).await;
    p.drain().await;
    let (reason, field, message): (String, Option<String>, String) =
        sqlx::query_as("SELECT reason, field, message FROM dead_letters WHERE stream_seq = $1")
            .bind(archived as i64)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (reason.as_str(), field.as_deref()),
        ("archived_month", Some("occurred_at"))
    );
    assert!(message.contains("2025-01"), "{message}");
    // The log (without January) has the registrations and February's activity.
    assert_eq!(p.count("SELECT count(*) FROM events").await, 4);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 1);
}

#[tokio::test]
async fn ensuring_a_detached_month_reports_it_instead_of_failing() {
    let p = Pipeline::new().await;
    let log = EventLog::open(p.db.pool.clone()).await.unwrap();
    let january = partitions::Month::of(jan(1));
    log.ensure_months(&[january]).await.unwrap();
    sqlx::query("ALTER TABLE events DETACH PARTITION events_p202501")
        .execute(&p.db.pool)
        .await
        .unwrap();
    let fresh = EventLog::open(p.db.pool.clone()).await.unwrap();
    let archived = fresh.ensure_months(&[january]).await.unwrap();
    assert_eq!(archived, vec![january]);
}

#[tokio::test]
async fn only_accepted_commands_create_a_month() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "ann")).await;
    // Refused: an unknown tenant, an unknown user. Neither may add a partition.
    p.publish(activity_at("ghost", "ann", "2023-03-10 08:00:00"))
        .await;
    p.publish(activity_at("acme", "nobody", "2023-05-10 08:00:00"))
        .await;
    p.publish(activity_at("acme", "ann", "2023-04-10 08:00:00"))
        .await;
    p.drain().await;
    assert!(!partition_exists(&p, "events_p202303").await);
    assert!(!partition_exists(&p, "events_p202305").await);
    assert!(partition_exists(&p, "events_p202304").await);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 3);
}
