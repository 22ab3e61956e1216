//! The ingestor under outages: PostgreSQL stopped and restarted under load, nats-server
//! restarted under load, connections cut mid-batch, and a leader that lost its lock to a
//! successor. Each ends with every published command applied exactly once, in stream order,
//! with no manual step and no dead letter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_store::embedded::{NatsConfig, NatsServer, PgConfig, PgServer};
use activity_store::ingest::{IngestConfig, IngestError, Ingestor};
use activity_store::log::{EventLog, migrate};
use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::ingest_support::{Pipeline, activity, create_tenant, register};
use crate::support::{TestDb, nats_url, unique_name};

const USERS: usize = 20;

/// A tenant, its users, then `activities` activities spread over them, each with its id.
pub fn workload(activities: usize) -> Vec<Value> {
    let mut commands = vec![create_tenant("acme")];
    commands.extend((0..USERS).map(|u| register("acme", &format!("u{u}"))));
    commands.extend((0..activities).map(|i| activity("acme", &format!("u{}", i % USERS))));
    for c in &mut commands {
        c["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    commands
}

/// Publishes every command with `Nats-Msg-Id`, retrying each until the stream acks it, as
/// the README tells producers to: a retry with the same id is never stored twice.
pub async fn publish_all(client: async_nats::Client, subject: String, commands: Vec<Value>) {
    let js = jetstream::new(client);
    for c in commands {
        let id = c["id"].as_str().unwrap().to_owned();
        let body: bytes::Bytes = serde_json::to_vec(&c).unwrap().into();
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let acked = match js
                .publish_with_headers(subject.clone(), headers, body.clone())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the ledger and the dead letters hold `expected` commands in all.
pub async fn wait_for_ledger(pool: &PgPool, expected: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n: Result<i64, _> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM command_ledger) + (SELECT count(*) FROM dead_letters)",
        )
        .fetch_one(pool)
        .await;
        if n.as_ref().is_ok_and(|n| *n >= expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n:?} of {expected} commands were applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly once and in stream order: one event per accepted command, `dead` dead letters,
/// positions ascending with stream sequence.
pub async fn assert_exactly_once_in_order(pool: &PgPool, accepted: usize, dead_letters: i64) {
    let (events, distinct, dead): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT command_id) FROM events), \
         (SELECT count(*) FROM dead_letters)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (events, distinct, dead),
        (accepted as i64, accepted as i64, dead_letters)
    );
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_seq, lag(stream_seq) OVER (ORDER BY position) AS prev \
         FROM events) s WHERE stream_seq <= prev",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(out_of_order, 0, "positions must follow stream order");
}

fn config(prefix: &str) -> IngestConfig {
    IngestConfig {
        stream: prefix.to_uppercase(),
        subjects: format!("{prefix}.commands.*"),
        batch_max: 200,
        ack_wait: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Runs an ingestor in the background until the token is cancelled.
async fn spawn_ingestor(
    pool: PgPool,
    js: &jetstream::Context,
    prefix: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), IngestError>> {
    let log = Arc::new(EventLog::open(pool).await.unwrap());
    let ingestor = Ingestor::start(js, log, config(prefix)).await.unwrap();
    tokio::spawn(ingestor.run(stop))
}

fn private_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pg_config(dir: &std::path::Path, port: Option<u16>) -> PgConfig {
    PgConfig {
        data_dir: dir.join("pg"),
        password: "recovery".into(),
        port,
        durable: false,
        log_file: dir.join("postgres.log"),
    }
}

#[tokio::test]
async fn postgres_stopped_and_restarted_under_load_loses_and_duplicates_nothing() {
    let dir = private_dir("pgrestart");
    let pg = PgServer::start(&pg_config(&dir, None)).await.unwrap();
    let port = pg.port();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&pg.url("postgres"))
        .await
        .unwrap();
    migrate::up(&pool).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let prefix = unique_name("pgr");
    let stop = CancellationToken::new();
    let ingest = spawn_ingestor(pool.clone(), &js, &prefix, stop.clone()).await;

    let commands = workload(6_000);
    let publisher = tokio::spawn(publish_all(
        client,
        format!("{prefix}.commands.acme"),
        commands.clone(),
    ));
    wait_for_ledger(&pool, 1_000, Duration::from_secs(60)).await;
    pg.stop().await.unwrap();
    // Commands keep arriving in NATS while the database is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ingest.is_finished(),
        "the ingestor must wait out the outage"
    );
    let pg = PgServer::start(&pg_config(&dir, Some(port))).await.unwrap();

    publisher.await.unwrap();
    wait_for_ledger(&pool, commands.len() as i64, Duration::from_secs(90)).await;
    assert_exactly_once_in_order(&pool, commands.len(), 0).await;
    stop.cancel();
    ingest
        .await
        .unwrap()
        .expect("the ingestor recovered by itself");
    pool.close().await;
    pg.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nats_restarted_under_load_loses_and_duplicates_nothing() {
    // The ingestor's log, shown if the test fails (it once stalled after the restart on a
    // loaded machine, and left nothing to say why).
    let _logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("activity_store=info")
            .finish(),
    );
    let dir = private_dir("natsrestart");
    let nats_config = |port| NatsConfig {
        store_dir: dir.join("nats"),
        port,
        log_file: dir.join("nats.log"),
        auth: None,
    };
    let nats = NatsServer::start(&nats_config(None)).await.unwrap();
    let port = nats.port();
    let db = TestDb::migrated().await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let prefix = unique_name("natsr");
    let stop = CancellationToken::new();
    let ingest = spawn_ingestor(db.pool.clone(), &js, &prefix, stop.clone()).await;

    let commands = workload(6_000);
    let publisher = tokio::spawn(publish_all(
        client,
        format!("{prefix}.commands.acme"),
        commands.clone(),
    ));
    wait_for_ledger(&db.pool, 1_000, Duration::from_secs(60)).await;
    nats.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nats = NatsServer::start(&nats_config(Some(port))).await.unwrap();

    publisher.await.unwrap();
    let mut ingest = ingest;
    // An ingestor whose loop ended (it has no supervisor here) says why at once.
    tokio::select! {
        _ = wait_for_ledger(&db.pool, commands.len() as i64, Duration::from_secs(90)) => {}
        ended = &mut ingest => panic!("the ingestor stopped after NATS came back: {ended:?}"),
    }
    assert_exactly_once_in_order(&db.pool, commands.len(), 0).await;
    stop.cancel();
    ingest
        .await
        .unwrap()
        .expect("the ingestor recovered by itself");
    nats.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cuts the ingestor's database connections over and over, mid-batch, while a batch that
/// PostgreSQL refuses in part is being split: every cut is retried, never dead-lettered, and
/// no later batch moves the checkpoint past a message that did not commit.
#[tokio::test]
async fn connections_cut_mid_batch_are_retried_and_nothing_is_skipped() {
    let db = TestDb::migrated().await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let prefix = unique_name("cut");
    let stop = CancellationToken::new();
    let ingest = spawn_ingestor(db.pool.clone(), &js, &prefix, stop.clone()).await;

    // Registrations PostgreSQL refuses although the model accepts them: each one forces its
    // batch down the one-by-one path.
    sqlx::query(
        "ALTER TABLE users ADD CONSTRAINT no_blocked CHECK (email NOT LIKE '%@blocked.example')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut commands = workload(4_000);
    let refused: Vec<Value> = (0..10)
        .map(|i| {
            json!({"type": "register_user", "tenant": "acme", "user": format!("bad{i}"),
                "email": "x@blocked.example", "id": uuid::Uuid::new_v4().to_string()})
        })
        .collect();
    for (k, r) in refused.iter().enumerate() {
        commands.insert(500 + k * 300, r.clone());
    }
    let publisher = tokio::spawn(publish_all(
        client,
        format!("{prefix}.commands.acme"),
        commands.clone(),
    ));
    let cutter = {
        let pool = db.pool.clone();
        let name = db.name.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(75)).await;
                let _ = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'",
                )
                .bind(&name)
                .execute(&pool)
                .await;
            }
        })
    };
    publisher.await.unwrap();
    cutter.await.unwrap();
    wait_for_ledger(&db.pool, commands.len() as i64, Duration::from_secs(90)).await;
    assert_exactly_once_in_order(&db.pool, commands.len() - refused.len(), 10).await;
    stop.cancel();
    ingest.await.unwrap().expect("the ingestor kept running");
}

#[tokio::test]
async fn an_ingestor_whose_lock_passed_to_a_successor_commits_nothing_more() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    assert_eq!(p.drain().await, 1);
    // The leader's lock session dies (a network cut, a restarted server) while it runs on.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND objsubid = 2 AND classid = x'41435449'::int::oid \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(cut, vec![true], "the leader held exactly one lock session");
    let log = Arc::new(EventLog::open(p.db.pool.clone()).await.unwrap());
    let successor = Ingestor::start(&p.js, log, p.config.clone()).await.unwrap();

    p.publish(register("acme", "ann")).await;
    let stale = p.ingestor.step().await;
    assert!(
        matches!(stale, Err(IngestError::Superseded { .. })),
        "the old leader must be fenced off, got {stale:?}"
    );
    let mut handled = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while handled == 0 && Instant::now() < deadline {
        if let activity_store::ingest::Step::Progress { messages, .. } =
            successor.step().await.unwrap()
        {
            handled += messages;
        }
    }
    assert_eq!(handled, 1, "the successor gets the message at once");
    assert_eq!(p.count("SELECT count(*) FROM users").await, 1);
    assert_eq!(p.count("SELECT count(*) FROM events").await, 2);
}

#[tokio::test]
async fn messages_delivered_to_an_abandoned_pull_are_delivered_again_not_skipped() {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.publish(register("acme", "ann")).await;
    for _ in 0..5 {
        p.publish(activity("acme", "ann")).await;
    }
    // Another pull on the same durable takes the first two messages and never acks them, as
    // a pull abandoned mid-delivery or a connection lost with messages in flight would.
    let consumer: jetstream::consumer::PullConsumer =
        p.js.get_stream(&p.config.stream)
            .await
            .unwrap()
            .get_consumer(&p.config.durable)
            .await
            .unwrap();
    let mut taken = consumer.fetch().max_messages(2).messages().await.unwrap();
    let mut n = 0;
    while let Some(m) = taken.next().await {
        m.unwrap();
        n += 1;
    }
    assert_eq!(n, 2);
    assert_eq!(p.drain().await, 7, "the two taken messages come back first");
    assert_eq!(p.count("SELECT count(*) FROM events").await, 7);
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}
