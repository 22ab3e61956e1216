//! Cache entries are sealed with a secret the database keeps: a value the store did not
//! write (forged with a far-future `as_of`, or copied from another tenant's key) is never
//! served, is counted, and the next fill or fold replaces it.

use std::time::Duration;

use activity_store::cache::CacheEntries;
use activity_store::project::{CacheConfig, ProjectConfig, Projector};
use activity_store::query::user_through_cache;
use async_nats::jetstream;

use crate::project_support::{ReadSide, activity, register, tenant};
use crate::support::{nats_url, unique_name};

fn forged_count(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("activity_cache_forged_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn an_entry_the_store_did_not_write_is_refused_counted_and_replaced() {
    let metrics = activity_store::serve::metrics::recorder();
    let r = ReadSide::new().await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let prefix = unique_name("f");
    let config = CacheConfig {
        ttls: [("user_summary".to_owned(), Duration::from_secs(60))].into(),
        bucket_prefix: prefix.clone(),
    };
    let mut projector = Projector::start(r.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    projector.attach_caches(&js, &config).await.unwrap();
    let entries: &CacheEntries = projector.cache("user_summary").unwrap();
    r.apply(&[
        tenant("acme"),
        tenant("globex"),
        register("acme", "ann", "Ann"),
        register("globex", "gus", "Gus"),
    ])
    .await;
    r.apply(&[activity("acme", "ann", "login", "2026-11-03 08:00:00")])
        .await;
    projector.catch_up().await.unwrap();
    let truth = user_through_cache(&r.db.pool, entries, "globex", "gus")
        .await
        .unwrap()
        .row
        .unwrap();

    let kv = js
        .get_key_value(format!("{prefix}activity_user_summary"))
        .await
        .unwrap();
    let key = entries.key("acme", "ann");
    let before = forged_count(&metrics.render());
    // Forged by anyone who may write to the bucket: valid JSON, far in the future.
    let forged = serde_json::json!({"tenant": "acme", "user_id": "ann", "name": "Mallory",
        "email": "mallory@evil.example", "events": 999, "as_of": i64::MAX / 2, "epoch": 1_000});
    kv.put(&key, serde_json::to_vec(&forged).unwrap().into())
        .await
        .unwrap();
    let read = user_through_cache(&r.db.pool, entries, "acme", "ann")
        .await
        .unwrap();
    let row = read.row.unwrap();
    assert!(!read.from_cache, "a forged entry was served");
    assert_eq!((row.name.as_deref(), row.events), (Some("Ann"), 1));
    assert!(
        forged_count(&metrics.render()) > before,
        "the forgery was not counted"
    );
    // The fill replaced it: the next read is a hit of the store's own entry.
    let again = user_through_cache(&r.db.pool, entries, "acme", "ann")
        .await
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(again.row.unwrap().name.as_deref(), Some("Ann"));

    // Another tenant's sealed entry copied under acme's key is no entry of acme's either.
    let theirs = kv.get(entries.key("globex", "gus")).await.unwrap().unwrap();
    let bob_key = entries.key("acme", "gus");
    kv.put(&bob_key, theirs).await.unwrap();
    let read = user_through_cache(&r.db.pool, entries, "acme", "gus")
        .await
        .unwrap();
    assert!(
        read.row.is_none(),
        "globex's gus served as acme's: {truth:?}"
    );
}
