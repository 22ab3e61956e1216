//! The wire contract's version: a command may name it (`version`); one the store does not
//! know becomes an `unsupported_version` dead letter naming the field, and the next command
//! lands. (Migration 0029's down refusing while such dead letters are kept is proven in
//! `migrations.rs`.)

use serde_json::json;

use crate::ingest_support::{Pipeline, activity, create_tenant, register};

#[tokio::test]
async fn a_command_of_an_unknown_contract_version_is_dead_lettered_and_the_next_lands() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    let mut v1 = register("acme", "ann");
    v1["version"] = json!(1);
    p.publish(v1).await;
    let mut v2 = activity("acme", "ann");
    v2["version"] = json!(2);
    p.publish(v2).await;
    p.publish(activity("acme", "ann")).await;
    p.drain().await;
    assert_eq!(p.count("SELECT count(*) FROM events").await, 3);
    let (reason, field, message): (String, Option<String>, String) =
        sqlx::query_as("SELECT reason, field, message FROM dead_letters")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (reason.as_str(), field.as_deref()),
        ("unsupported_version", Some("version"))
    );
    assert!(message.contains("supports version 1"), "{message}");
}
