//! An erasure finds a person's values whatever shape their events were stored in: the name
//! of a `user_registered` is `display_name` from version 2 on, `name` before. A copy that
//! holds the name but not the user's id (another user's refused command quoting it) is found
//! by that value alone.

use std::time::Duration;

use activity_store::erase::{self, EraseConfig};
use async_nats::jetstream;
use serde_json::json;

use crate::erasure_support::folded;
use crate::liveness::{Store, ingest_config, publish, wait_for_events};
use crate::support::{TestDb, nats_url};

const NAME: &str = "Zelda Quintessa-Marlowe";

#[tokio::test]
async fn a_display_name_quoted_by_someone_else_is_scrubbed_with_the_user() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config.clone(), true).await;
    store.wait_for("/readyz", 200, "ready").await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    for c in [
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        json!({"type": "register_user", "tenant": "acme", "user": "zq", "email": "zq@example.com", "name": NAME}),
        // Refused (bob is not registered), quoting zq's name and nothing else of zq's.
        json!({"type": "record_activity", "tenant": "acme", "user": "bob", "activity_type": "note",
               "metadata": {"about": NAME}}),
    ] {
        publish(&prefix, c).await;
    }
    wait_for_events(&db, 2).await;
    folded(&db).await;
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM events WHERE event_type = 'user_registered'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored["display_name"], NAME, "stored in version 2");
    let quoting = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM dead_letters WHERE position($1::bytea IN raw) > 0",
        )
        .bind(NAME.as_bytes())
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    for _ in 0..100 {
        if quoting(db.pool.clone()).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(quoting(db.pool.clone()).await, 1, "the refusal is kept");

    let config = EraseConfig {
        subject_prefix: format!("{prefix}.commands"),
        stream: config.stream.clone(),
        bucket_prefix: store.bucket_prefix.clone(),
        wait: Duration::from_secs(30),
    };
    let receipt = erase::forget(&db.pool, &js, &config, "acme", "zq", |_| {})
        .await
        .unwrap();
    assert_eq!(receipt.dead_letters, 1, "{receipt:?}");
    assert_eq!(
        quoting(db.pool.clone()).await,
        0,
        "no dead letter holds the name"
    );
    store.stop().await;
}
