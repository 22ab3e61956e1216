//! kill -9 at random moments, restart, repeat: every published command is applied exactly
//! once, every bad one is dead-lettered once, and order is kept (no activity is refused for
//! an unknown user whose registration was caught in a crashed batch).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{TestDb, nats_url, unique_name};

const USERS: usize = 40;
const ACTIVITIES: usize = 30_000;
const BAD: usize = 300;

fn ingestor(db: &TestDb, prefix: &str, metrics_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "run",
            "--ingest",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--ack-wait-secs",
            "2",
        ])
        .args([
            "--stream",
            &prefix.to_uppercase(),
            "--subject-prefix",
            &format!("{prefix}.commands"),
        ])
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the ingestor")
}

/// A bare HTTP/1.1 GET on loopback; the response as text, or "" if nothing listens yet.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).await.is_ok() {
        let _ = stream.read_to_string(&mut response).await;
    }
    response
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn kill_nine_at_random_points_loses_and_duplicates_nothing() {
    let db = TestDb::migrated().await;
    let prefix = unique_name("crash");
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    // The first ingestor creates the stream; it is killed as soon as the stream exists.
    let mut first = ingestor(&db, &prefix, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(prefix.to_uppercase()).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the ingestor never created its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.unwrap();

    let subject = format!("{prefix}.commands.acme");
    let mut commands = vec![json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"})];
    for u in 0..USERS {
        commands.push(json!({"type": "register_user", "tenant": "acme", "user": format!("u{u}"), "email": format!("u{u}@example.com")}));
    }
    for i in 0..ACTIVITIES + BAD {
        commands.push(if i % ((ACTIVITIES + BAD) / BAD) == 0 {
            json!({"type": "record_activity", "tenant": "acme", "user": "nobody", "activity_type": "x"})
        } else {
            json!({"type": "record_activity", "tenant": "acme", "user": format!("u{}", i % USERS), "activity_type": "view"})
        });
    }
    let bad = commands.iter().filter(|c| c["user"] == "nobody").count() as i64;
    let good = commands.len() as i64 - bad;
    // Settle the stream's acks in windows: async-nats bounds the acks in flight.
    let mut acks = std::collections::VecDeque::new();
    for mut c in commands {
        let id = uuid::Uuid::new_v4().to_string();
        c["id"] = json!(id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push_back(
            js.publish_with_headers(
                subject.clone(),
                headers,
                serde_json::to_vec(&c).unwrap().into(),
            )
            .await
            .unwrap(),
        );
        if acks.len() >= 512 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for a in acks {
        a.await.unwrap();
    }

    let handled = || async {
        count(&db, "SELECT count(*) FROM events").await
            + count(&db, "SELECT count(*) FROM dead_letters").await
    };
    let mut interrupted = 0;
    // From each kill to the next committed batch (a restarted ingestor's first commit).
    let mut recoveries = Vec::new();
    let mut killed_at: Option<Instant> = None;
    // Each ingestor is killed a random moment after its first commit, so the kill lands
    // while it works, however fast it starts or drains.
    for _ in 0..8 {
        let before = handled().await;
        if before >= good + bad {
            break;
        }
        let mut child = ingestor(&db, &prefix, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if handled().await > before {
                if let Some(killed) = killed_at {
                    recoveries.push(killed.elapsed());
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pause = Duration::from_millis(rand::rng().random_range(0..200));
        tokio::time::sleep(pause).await;
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
        killed_at = Some(Instant::now());
        child.wait().await.unwrap();
        let after = handled().await;
        if after > before && after < good + bad {
            interrupted += 1;
        }
    }
    recoveries.sort();
    eprintln!("kill -9 to the next committed batch (restarted at once): {recoveries:?}");
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed while work was in progress"
    );
    let port = activity_store::embedded::free_port().unwrap();
    let mut last = ingestor(&db, &prefix, port);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = count(&db, "SELECT count(*) FROM events").await
            + count(&db, "SELECT count(*) FROM dead_letters").await;
        if done >= good + bad {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} commands were handled",
            good + bad
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Ready means it also listens for signals: a SIGTERM before that would just kill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(port, "/readyz").await.starts_with("HTTP/1.1 200") {
        assert!(
            Instant::now() < deadline,
            "the last ingestor never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("activity_commands_received_total"),
        "{metrics}"
    );
    kill(Pid::from_raw(last.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    assert!(
        last.wait().await.unwrap().success(),
        "SIGTERM: a clean exit"
    );

    assert_eq!(
        count(&db, "SELECT count(*) FROM events").await,
        good,
        "every good command exactly once"
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT command_id) FROM events").await,
        good
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM command_ledger").await,
        good
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letters").await,
        bad,
        "every bad one, once"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters WHERE command_id IS NOT NULL AND reason <> 'unknown_user'").await, 0);
    let in_order: bool = sqlx::query_scalar(
        "SELECT bool_and(ok) FROM (SELECT stream_seq > lag(stream_seq) OVER (ORDER BY position) \
         OR lag(stream_seq) OVER (ORDER BY position) IS NULL AS ok FROM events) s",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(in_order, "log positions follow stream order");
}
