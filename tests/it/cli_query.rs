//! The binary end to end: commands published to NATS, `run --ingest --project`, and the
//! query CLI answering from the read models.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::{TestDb, nats_url, unique_name};

async fn query(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("query")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn published_commands_reach_every_read_model_and_the_query_cli() {
    let db = TestDb::migrated().await;
    let prefix = unique_name("q");
    // Ingesting as an activity_writer login, projecting as the owner, as production runs.
    let (writer, _pool) = crate::fixtures::login_in(&db, "activity_writer").await;
    let mut store = Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "run",
            "--ingest",
            "--project",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--stream", &prefix.to_uppercase(), "--subject-prefix"])
        .arg(format!("{prefix}.commands"))
        .env("DATABASE_URL", db.url())
        .env("INGEST_DATABASE_URL", db.url_as(&writer, "pw"))
        .env("NATS_URL", nats_url())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(prefix.to_uppercase()).await.is_err() {
        assert!(Instant::now() < deadline, "the stream was never created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let commands = [
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        json!({"type": "register_user", "tenant": "acme", "user": "ann", "email": "ann@example.com", "name": "Ann"}),
        json!({"type": "record_activity", "tenant": "acme", "user": "ann", "activity_type": "login",
            "occurred_at": "2026-11-03 08:00:00", "metadata": {"ip": "10.0.0.1"}}),
        json!({"type": "record_activity", "tenant": "acme", "user": "ann", "activity_type": "view",
            "occurred_at": "2026-11-03 09:00:00", "metadata": {"ip": "10.0.0.2"}}),
    ];
    for mut c in commands {
        c["id"] = json!(uuid::Uuid::now_v7().to_string());
        let subject = format!("{prefix}.commands.acme");
        js.publish(subject, serde_json::to_vec(&c).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let user = loop {
        let (ok, out, err) = query(
            &db,
            &["user", "--tenant", "acme", "--user", "ann", "--json"],
        )
        .await;
        if ok && out.contains("\"events\":2") {
            break serde_json::from_str::<Value>(out.trim()).unwrap();
        }
        assert!(Instant::now() < deadline, "never projected: {out} {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            &user["email"],
            &user["last_activity_type"],
            &user["last_seen"]
        ),
        (
            &json!("ann@example.com"),
            &json!("view"),
            &json!("2026-11-03T09:00:00Z")
        )
    );

    let (ok, table, _) = query(
        &db,
        &[
            "feed",
            "--tenant",
            "acme",
            "--user",
            "ann",
            "--metadata",
            r#"{"ip":"10.0.0.1"}"#,
        ],
    )
    .await;
    assert!(ok);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("occurred_at") && lines[1].contains("login"),
        "{table}"
    );

    let (ok, daily, _) = query(
        &db,
        &[
            "daily",
            "--tenant",
            "acme",
            "--from",
            "2026-11-03",
            "--json",
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(daily.lines().count(), 2, "{daily}");

    let (ok, _, err) = query(&db, &["user", "--tenant", "other", "--user", "ann"]).await;
    assert!(!ok && err.contains("no user ann in tenant other"), "{err}");
    // An empty feed or range is said so, not a bare header.
    let (ok, out, err) = query(&db, &["feed", "--tenant", "other", "--user", "ann"]).await;
    assert!(
        !ok && out.is_empty() && err.contains("no activities of user ann in tenant other"),
        "{out} {err}"
    );
    let (ok, out, err) = query(&db, &["daily", "--tenant", "other"]).await;
    assert!(
        !ok && out.is_empty() && err.contains("no activity in tenant other"),
        "{out} {err}"
    );
    // A reader that stops reading (`| head`) ends the command quietly, never with a panic.
    let mut head = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["query", "feed", "--tenant", "acme", "--user", "ann"])
        .env("DATABASE_URL", db.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(head.stdout.take());
    let ended = head.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        ended.status.signal(),
        Some(13),
        "killed by SIGPIPE, as `head` expects: {:?} {}",
        ended.status,
        String::from_utf8_lossy(&ended.stderr)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(store.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(store.wait().await.unwrap().success());
}
