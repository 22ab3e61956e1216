//! The README's producer examples, run as they are against the real servers: each publishes a
//! tenant, a user and an activity, and the ingestor applies all three.

use std::process::Command;

use crate::ingest_support::Pipeline;
use crate::support::nats_url;

#[path = "../producers/publish.rs"]
mod rust_example;

async fn assert_applied(p: &Pipeline) {
    assert_eq!(p.drain().await, 3);
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events ORDER BY position")
        .fetch_all(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(
        kinds,
        ["tenant_created", "user_registered", "activity_recorded"]
    );
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn the_rust_async_nats_example_publishes_commands_the_store_applies() {
    let p = Pipeline::new().await;
    let prefix = format!("{}.commands", p.prefix);
    let sequences = rust_example::publish_example(&nats_url(), None, &prefix)
        .await
        .unwrap();
    assert_eq!(sequences, [1, 2, 3]);
    assert_applied(&p).await;
}

/// The Python that `scripts/setup.sh` prepares with nats-py, or `ACTIVITY_TEST_PYTHON`.
fn python() -> String {
    std::env::var("ACTIVITY_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/target/producers-venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

#[tokio::test]
async fn the_python_nats_py_example_publishes_commands_the_store_applies() {
    let p = Pipeline::new().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/producers/publish.py");
    let python = python();
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("{}.commands", p.prefix))
        .env("NATS_URL", nats_url())
        .output()
        .unwrap_or_else(|e| panic!("run {python} (scripts/setup.sh prepares it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2\n3\n");
    assert_applied(&p).await;
}
