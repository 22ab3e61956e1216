//! The wire contract's version: a command may name it (`version`); one the store does not
//! know becomes an `unsupported_version` dead letter naming the field, the next command
//! lands, and the reason cannot be migrated away while such a dead letter is kept.

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

    // Kept, not lost: the reason cannot be migrated away under it.
    let refused = crate::fixtures::down_to_before(&p.db.pool, 29)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("unsupported_version"),
        "{refused}"
    );
    sqlx::query("DELETE FROM dead_letters")
        .execute(&p.db.pool)
        .await
        .unwrap();
    crate::fixtures::down_to_before(&p.db.pool, 29)
        .await
        .unwrap();
    activity_store::log::migrate::up(&p.db.pool).await.unwrap();
}
