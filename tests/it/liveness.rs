//! Liveness tells the truth: a role that fails is restarted with backoff and counted,
//! `/readyz` names it, `/livez` fails for a role that stopped making progress, and a
//! standby takes over when the active process stops.

use std::time::{Duration, Instant};

use activity_store::embedded::free_port;
use activity_store::ingest::IngestConfig;
use activity_store::serve::{ServeConfig, serve};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::fixtures::login_in;
use crate::ingest_support::{activity, create_tenant, register};
use crate::support::{TestDb, nats_url, unique_name};

pub struct Store {
    /// Put before its cache buckets' names.
    pub bucket_prefix: String,
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Store {
    /// The store on `db`, projecting as its owner and ingesting as a writer login, as
    /// production runs it.
    pub async fn start_on(db: &TestDb, ingest: IngestConfig, project: bool) -> Store {
        let (login, _pool) = login_in(db, "activity_writer").await;
        Store::start_with(db.url(), Some(db.url_as(&login, "pw")), ingest, project).await
    }

    pub async fn start(database_url: String, ingest: IngestConfig, project: bool) -> Store {
        Store::start_with(database_url, None, ingest, project).await
    }

    async fn start_with(
        database_url: String,
        ingest_database_url: Option<String>,
        ingest: IngestConfig,
        project: bool,
    ) -> Store {
        Store::launch(config(database_url, ingest_database_url, ingest, project)).await
    }

    /// Runs the store `config` describes; its metrics address must be free.
    pub async fn launch(config: ServeConfig) -> Store {
        let bucket_prefix = config.cache.bucket_prefix.clone();
        let port = config.metrics_addr.port();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { serve(config, token).await.unwrap() });
        let store = Store {
            bucket_prefix,
            base: format!("http://127.0.0.1:{port}"),
            stop,
            task,
        };
        store.wait_for("/livez", 200, "ok").await;
        store
    }

    /// Where its metrics and health answer, `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        // A tiny HTTP/1.1 client: the test needs a status line and a body, nothing more.
        let addr = self.base.trim_start_matches("http://");
        let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
            return (0, String::new());
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    /// Waits (at most 30 s) until `path` answers `status` with a body containing `text`.
    pub async fn wait_for(&self, path: &str, status: u16, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (got, body) = self.get(path).await;
            if got == status && body.contains(text) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} answered {got} {body:?}, not {status} with {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// A store's settings as tests run it: metrics on a free port, its own cache buckets.
pub fn config(
    database_url: String,
    ingest_database_url: Option<String>,
    ingest: IngestConfig,
    project: bool,
) -> ServeConfig {
    let port = free_port().unwrap();
    ServeConfig {
        database_url,
        ingest_database_url,
        nats_url: nats_url(),
        metrics_addr: format!("127.0.0.1:{port}").parse().unwrap(),
        up_file: None,
        ingest: true,
        ingest_config: ingest,
        project,
        project_config: Default::default(),
        cache: activity_store::project::CacheConfig {
            ttls: Default::default(),
            bucket_prefix: unique_name("lv"),
        },
        liveness_timeout: Duration::from_secs(2),
        max_lag: Duration::from_secs(60),
        max_append: Duration::from_secs(10),
        status_every: Duration::from_millis(200),
        months_ahead: 5,
        maintenance_every: Duration::from_millis(200),
        api: None,
        api_database_url: None,
    }
}

pub fn ingest_config() -> (String, IngestConfig) {
    let prefix = unique_name("lv");
    let config = IngestConfig {
        stream: prefix.to_uppercase(),
        subjects: format!("{prefix}.commands.*"),
        batch_wait: Duration::from_millis(100),
        ..Default::default()
    };
    (prefix, config)
}

pub async fn publish(prefix: &str, command: serde_json::Value) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut command = command;
    command["id"] = json!(uuid::Uuid::new_v4().to_string());
    let subject = format!("{prefix}.commands.{}", command["tenant"].as_str().unwrap());
    js.publish(subject, serde_json::to_vec(&command).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

pub async fn wait_for_events(db: &TestDb, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if got >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {n} events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failed_ingest_role_is_restarted_named_and_recovers() {
    let db = TestDb::migrated().await;
    let (login, _pool) = login_in(&db, "activity_writer").await;
    let url = db.url_as(&login, "pw");
    let (prefix, config) = ingest_config();
    let store = Store::start(url, config, false).await;
    store.wait_for("/readyz", 200, "ready").await;
    publish(&prefix, create_tenant("acme")).await;
    wait_for_events(&db, 1).await;
    // A fault the role cannot mend itself: its login loses the writer's rights.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "REVOKE activity_writer FROM {login}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    publish(&prefix, register("acme", "ann")).await;
    let body = store.wait_for("/readyz", 503, "ingest: restarting").await;
    assert!(
        body.contains("permission denied") || body.contains("42501"),
        "{body}"
    );
    store.wait_for("/livez", 200, "ok").await;
    store
        .wait_for(
            "/metrics",
            200,
            "activity_role_restarts_total{role=\"ingest\"} ",
        )
        .await;
    // Mended: the role comes back by itself and the command lands.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT activity_writer TO {login}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    wait_for_events(&db, 2).await;
    store.wait_for("/readyz", 200, "ready").await;
    store.stop().await;
}

#[tokio::test]
async fn a_role_that_stops_making_progress_fails_livez() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let store = Store::start_on(&db, config, false).await;
    store.wait_for("/readyz", 200, "ready").await;
    publish(&prefix, create_tenant("acme")).await;
    wait_for_events(&db, 1).await;
    // An append transaction of acme's shard held open: the ingestor's next commit waits
    // behind it.
    let lock = crate::fixtures::append_lock_of(&db.pool, "acme").await;
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *holder)
        .await
        .unwrap();
    publish(&prefix, register("acme", "ann")).await;
    let body = store.wait_for("/livez", 503, "ingest: no progress").await;
    assert!(body.contains("limit 2 s"), "{body}");
    holder.rollback().await.unwrap();
    wait_for_events(&db, 2).await;
    store.wait_for("/livez", 200, "ok").await;
    store.stop().await;
}

#[tokio::test]
async fn a_standby_waits_ready_to_take_over_and_does() {
    let db = TestDb::migrated().await;
    let (prefix, config) = ingest_config();
    let active = Store::start_on(&db, config.clone(), true).await;
    active.wait_for("/readyz", 200, "ready").await;
    let standby = Store::start_on(&db, config, true).await;
    standby
        .wait_for("/readyz", 503, "ingest: starting (or standby")
        .await;
    standby.wait_for("/livez", 200, "ok").await;
    publish(&prefix, create_tenant("acme")).await;
    wait_for_events(&db, 1).await;
    active.stop().await;
    standby.wait_for("/readyz", 200, "ready").await;
    publish(&prefix, register("acme", "ann")).await;
    publish(&prefix, activity("acme", "ann")).await;
    wait_for_events(&db, 3).await;
    // The stream grew while the standby waited: it must compare the checkpoint with the
    // stream as it is at takeover, not take it for an older copy and replay it.
    let resets: i64 = sqlx::query_scalar("SELECT resets FROM ingest_checkpoints")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(resets, 0, "no reset at a takeover");
    standby.stop().await;
}
