//! `activity-store publish`, the real binary: valid lines reach the stream with their id as
//! `Nats-Msg-Id`, invalid lines are reported by number and not sent.

use std::io::Write;

use crate::ingest_support::{Pipeline, activity, create_tenant, register};
use crate::support::{nats_url, unique_name};

#[tokio::test]
async fn publishes_valid_lines_and_reports_the_others() {
    let p = Pipeline::new().await;
    let file = std::env::temp_dir().join(unique_name("commands"));
    let mut f = std::fs::File::create(&file).unwrap();
    let with_id = |mut v: serde_json::Value| {
        v["id"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
        v
    };
    let create = with_id(create_tenant("acme"));
    for line in [
        create.to_string(),
        create.to_string(), // the same id again: JetStream drops it by Nats-Msg-Id
        with_id(register("acme", "u1")).to_string(),
        "{not json".to_owned(),
        String::new(),
        r#"{"type": "create_tenant", "name": "no tenant"}"#.to_owned(),
        with_id(activity("acme", "u1")).to_string(),
    ] {
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("publish")
        .arg(&file)
        .args([
            "--rate",
            "1000",
            "--subject-prefix",
            &format!("{}.commands", p.prefix),
        ])
        .env("NATS_URL", nats_url())
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not everything was sent: {stderr}"
    );
    assert!(stdout.starts_with("published 4\n"), "{stdout}");
    assert!(
        stdout.contains("line 4 not sent: not valid JSON"),
        "{stdout}"
    );
    assert!(stdout.contains("line 6 not sent: no `tenant`"), "{stdout}");
    assert!(
        stderr.contains("2 line(s) were not valid commands"),
        "{stderr}"
    );
    assert_eq!(
        p.drain().await,
        3,
        "the repeated id never reached the store"
    );
    assert_eq!(p.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn publishing_without_nats_is_explained() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["publish", "-", "--data-dir"])
        .arg(std::env::temp_dir().join(unique_name("nodata")))
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no NATS: set NATS_URL"));
}
