//! `activity-store up`, the real binary: serves, stops on SIGTERM, reuses its data.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::unique_name;

/// Starts `up` and returns it with the DATABASE_URL it printed once it was ready.
pub async fn start_up(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("up")
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DATABASE_URL")
        // Two tests may run `up` at once: the metrics port is any free one.
        .env("ACTIVITY_METRICS_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run activity-store up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut database_url = None;
    let ready = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("DATABASE_URL=") {
                database_url = Some(url.to_owned());
            }
            if line.starts_with("PRODUCER_NATS_URL=") {
                return;
            }
        }
        panic!("up exited before printing its URLs");
    });
    ready.await.expect("up printed its URLs in time");
    (child, database_url.expect("DATABASE_URL printed first"))
}

pub async fn stop(mut child: Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("up stops in time")
        .unwrap();
    assert!(status.success(), "up exits 0 on SIGTERM: {status}");
}

#[tokio::test]
async fn up_serves_stops_cleanly_and_reuses_its_data() {
    let dir = std::env::temp_dir().join(unique_name("up"));
    // The API's default port taken: up serves it on another, and must keep that one.
    let blocker = std::net::TcpListener::bind("127.0.0.1:8080").ok();
    let (child, url) = start_up(&dir).await;
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(
        env.contains(&format!("DATABASE_URL={url}\n"))
            && env.contains("NATS_URL=nats://activity-store:")
            && env.contains("PRODUCER_NATS_URL=nats://producer:")
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    // Least privilege by default: the owner and the ingestor are logins, neither a superuser.
    let (owner, owner_super): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((owner.as_str(), owner_super), ("activity_owner", false));
    let ingest_url = env
        .lines()
        .find_map(|l| l.strip_prefix("INGEST_DATABASE_URL="))
        .expect("the ingest login's URL is in the env file");
    let mut ingest = PgConnection::connect(ingest_url).await.unwrap();
    let (writer, ingest_super): (bool, bool) = sqlx::query_as(
        "SELECT pg_has_role(current_user, 'activity_writer', 'MEMBER'), rolsuper \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut ingest)
    .await
    .unwrap();
    assert_eq!((writer, ingest_super), (true, false));
    ingest.close().await.unwrap();
    // The HTTP API: served where the env file says, reading as a reader bound to no tenant.
    let api_url = env
        .lines()
        .find_map(|l| l.strip_prefix("API_URL="))
        .expect("the API's URL is in the env file");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(format!("{api_url}/v1/openapi.json"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "no API at {api_url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api_db = env
        .lines()
        .find_map(|l| l.strip_prefix("API_DATABASE_URL="))
        .expect("the API login's URL is in the env file");
    let mut api = PgConnection::connect(api_db).await.unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut api)
        .await
        .unwrap();
    assert_eq!(who, "activity_api");
    let (reader, api_super, bound): (bool, bool, i64) = sqlx::query_as(
        "SELECT pg_has_role('activity_api', 'activity_reader', 'MEMBER'), rolsuper, \
         (SELECT count(*) FROM reader_tenants WHERE login = 'activity_api') \
         FROM pg_roles WHERE rolname = 'activity_api'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (reader, api_super, bound),
        (true, false, 0),
        "only tokens scope the API"
    );
    api.close().await.unwrap();
    // The running store's sessions: the ingestor as the writer login, nothing as a superuser.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ingesting, superusers): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE a.usename = 'activity_ingest'), \
                    count(*) FILTER (WHERE usesuper) \
             FROM pg_stat_activity a JOIN pg_user u ON u.usesysid = a.usesysid \
             WHERE a.datname = 'activity'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(superusers, 0, "no session of the store is a superuser's");
        if ingesting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ingestor connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `status`, run as the owner, can tell how long the ingestor's sessions have been open.
    let visible: bool = sqlx::query_scalar(
        "SELECT bool_and(backend_start IS NOT NULL) FROM pg_stat_activity \
         WHERE usename = 'activity_ingest'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(visible, "the owner sees the ingestor's sessions");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        applied,
        activity_store::log::migrate::MIGRATOR.iter().count() as i64 / 2
    );
    sqlx::query("INSERT INTO tenants (tenant, name) VALUES ('kept', 'Kept')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    stop(child).await;
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "PostgreSQL stopped with up"
    );

    drop(blocker);
    let (child, url_again) = start_up(&dir).await;
    assert_eq!(
        url_again, url,
        "same password and, being free, the same port"
    );
    let env_again = std::fs::read_to_string(dir.join("env")).unwrap();
    let api_again = env_again
        .lines()
        .find_map(|l| l.strip_prefix("API_URL="))
        .unwrap();
    assert_eq!(api_again, api_url, "the API keeps its port too");
    let mut conn = PgConnection::connect(&url_again).await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE tenant = 'kept'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the second up reuses the first one's data");
    conn.close().await.unwrap();
    stop(child).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn up_takes_another_free_metrics_port_when_its_own_is_held_and_names_it() {
    let dir = std::env::temp_dir().join(unique_name("upm"));
    // The default port held (by this test, or already by someone else): up must not die.
    let _held = std::net::TcpListener::bind(("127.0.0.1", 9464));
    let mut child = Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("up")
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("ACTIVITY_METRICS_ADDR")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut metrics = None;
    tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("METRICS_URL=") {
                metrics = Some(url.to_owned());
            }
            if line.starts_with("PRODUCER_NATS_URL=") {
                return;
            }
        }
        panic!("up exited before printing its URLs");
    })
    .await
    .expect("up printed its URLs in time");
    let metrics = metrics.expect("up names its metrics URL");
    assert_ne!(
        metrics, "http://127.0.0.1:9464",
        "the held port was not taken"
    );
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(env.contains(&format!("METRICS_URL={metrics}\n")), "{env}");
    // It answers there, and says it is up only once it does.
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let said_up = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen_metrics = false;
        while let Some(line) = errors.next_line().await.unwrap() {
            seen_metrics |= line.contains("metrics on http://");
            if line.contains("activity-store is up") {
                return seen_metrics;
            }
        }
        panic!("up exited before saying it is up");
    })
    .await
    .expect("up said it is up in time");
    assert!(said_up, "'up' came before the metrics listener was bound");
    let live = reqwest::get(format!("{metrics}/livez")).await.unwrap();
    assert!(live.status().is_success(), "{}", live.status());
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
    stop(child).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
