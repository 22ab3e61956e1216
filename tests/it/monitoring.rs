//! The dashboard and the alert rules in `monitoring/` name only series the store exports:
//! every `activity_*` name in them is found on a running store's `/metrics` (the cache's
//! counters come from the read path, exercised in the same process). `promtool check
//! rules` runs too when it is installed.

use std::collections::BTreeSet;

use activity_store::project::{CacheConfig, ProjectConfig, Projector};
use activity_store::query::user_through_cache;
use async_nats::jetstream;

use crate::ingest_support::{activity, create_tenant, register};
use crate::liveness::{Store, ingest_config, publish, wait_for_events};
use crate::support::{TestDb, nats_url, unique_name};

/// The `activity_*` series a file names, histogram suffixes taken off.
fn named(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("activity_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        // `activity-store` in prose is not a series.
        if name.len() > "activity_".len() {
            names.insert(base.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn every_series_the_dashboard_and_the_alerts_name_is_exported() {
    let wanted: BTreeSet<String> = named("monitoring/dashboard.json")
        .union(&named("monitoring/alerts.yml"))
        .cloned()
        .collect();
    assert!(wanted.len() > 15, "{wanted:?}");

    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let mut config = crate::liveness::config(db.url(), None, config, true);
    let api_port = activity_store::embedded::free_port().unwrap();
    let api_addr: std::net::SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
    config.api = Some(activity_store::api::ApiConfig {
        addr: api_addr,
        ..Default::default()
    });
    let store = Store::launch(config).await;
    store.wait_for("/readyz", 200, "ready").await;
    // The HTTP API's series: any request counts (this one is refused: no token).
    let answer = reqwest::get(format!("http://{api_addr}/v1/tenants/acme/daily"))
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    for c in [
        create_tenant("acme"),
        register("acme", "ann"),
        activity("acme", "ann"),
        activity("acme", "nobody"),
    ] {
        publish(&prefix, c).await;
    }
    wait_for_events(&db, 3).await;
    // The read path: one miss, then one hit, through the cache.
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut projector = Projector::start(db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let cache = CacheConfig {
        ttls: Default::default(),
        bucket_prefix: unique_name("mon"),
    };
    projector.attach_caches(&js, &cache).await.unwrap();
    let entries = projector.cache("user_summary").unwrap();
    for _ in 0..2 {
        user_through_cache(&db.pool, entries, "acme", "ann")
            .await
            .unwrap();
    }
    // The status gauges are refreshed in the background: wait for the refused command's.
    store
        .wait_for(
            "/metrics",
            200,
            "activity_dead_letters{reason=\"unknown_user\"} 1",
        )
        .await;
    let (_, metrics) = store.get("/metrics").await;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| {
            !metrics.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            })
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
    store.stop().await;

    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(format!(
            "{}/monitoring/alerts.yml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
