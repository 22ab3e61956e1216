//! The fault suite (with `crash.rs`, `recovery.rs`, `hostile.rs`, `liveness.rs` and
//! `faults_cluster.rs`): a dead-letter storm, a slow database that times statements out, and
//! the projector killed with SIGKILL at random points. Each ends with every good command
//! applied exactly once, in stream order, and every bad one a dead letter with its reason.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use serde_json::{Value, json};

use crate::fixtures::login_in;
use crate::ingest_support::{Pipeline, create_tenant, register};
use crate::support::{TestDb, nats_url, unique_name};

/// Positions follow stream order, and each accepted command is one event.
async fn assert_once_in_order(pool: &sqlx::PgPool, good: i64, bad: i64) {
    let (events, distinct, dead, in_order): (i64, i64, i64, Option<bool>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT command_id) FROM events), \
         (SELECT count(*) FROM dead_letters), \
         (SELECT bool_and(ok) FROM (SELECT stream_seq > lag(stream_seq) OVER (ORDER BY position) \
            OR lag(stream_seq) OVER (ORDER BY position) IS NULL AS ok FROM events) s)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((events, distinct, dead), (good, good, bad));
    assert_eq!(in_order, Some(true), "log positions follow stream order");
}

fn good_activity(i: usize) -> Value {
    activity_of("acme", i)
}

fn activity_of(tenant: &str, i: usize) -> Value {
    json!({"type": "record_activity", "tenant": tenant, "user": format!("u{}", i % 10),
        "activity_type": "view", "occurred_at": "2026-11-03T08:00:00Z"})
}

#[tokio::test]
async fn a_dead_letter_storm_never_holds_back_the_good_commands() {
    const EACH: usize = 10_000;
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    for u in 0..10 {
        p.publish(register("acme", &format!("u{u}"))).await;
    }
    let js = &p.js;
    let subject = p.subject("acme");
    // Bad and good interleaved, published with acks in flight, as a flood arrives.
    let mut acks = std::collections::VecDeque::new();
    for i in 0..2 * EACH {
        let body = if i % 2 == 0 {
            match i % 6 {
                0 => b"{not json".to_vec(),
                2 => serde_json::to_vec(
                    &json!({"type": "record_activity", "id": uuid::Uuid::new_v4(),
                    "tenant": "acme", "user": "nobody", "activity_type": "view"}),
                )
                .unwrap(),
                _ => vec![0xff; 40],
            }
        } else {
            let mut c = good_activity(i);
            c["id"] = json!(uuid::Uuid::new_v4());
            serde_json::to_vec(&c).unwrap()
        };
        acks.push_back(js.publish(subject.clone(), body.into()).await.unwrap());
        if acks.len() >= 512 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let t = Instant::now();
    p.drain().await;
    eprintln!(
        "dead-letter storm: {} messages ingested in {:?}",
        2 * EACH,
        t.elapsed()
    );
    assert_once_in_order(&p.db.pool, 11 + EACH as i64, EACH as i64).await;
    let reasons: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 1")
            .fetch_all(&p.db.pool)
            .await
            .unwrap();
    let third = (EACH / 3) as i64;
    assert_eq!(
        reasons,
        [
            ("malformed".to_owned(), EACH as i64 - third),
            ("unknown_user".to_owned(), third)
        ]
    );
}

#[tokio::test]
async fn a_slow_database_that_times_statements_out_loses_and_duplicates_nothing() {
    const N: usize = 600;
    let db = TestDb::migrated().await;
    let (login, pool) = login_in(&db, "activity_writer").await;
    // The ingestor's statements give up after 100 ms; the append lock is held by someone else
    // for 300 ms at a time, so many of its commits time out (SQLSTATE 57014) and are retried.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {login} SET statement_timeout = '100ms'"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    pool.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.options_as(&login, "pw"))
        .await
        .unwrap();
    let p = Pipeline::on_pool(db, pool).await;
    p.publish(create_tenant("acme")).await;
    for u in 0..10 {
        p.publish(register("acme", &format!("u{u}"))).await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    // acme's shard's append lock.
    let lock = crate::fixtures::append_lock_of(&p.db.pool, "acme").await;
    let blocker = {
        let (pool, stop) = (p.db.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = 0;
            while !stop.is_cancelled() {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                tx.rollback().await.unwrap();
                held += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            held
        })
    };
    for i in 0..N {
        p.publish(good_activity(i)).await;
        if i % 100 == 0 {
            p.ingestor.step().await.unwrap();
        }
    }
    p.drain().await;
    stop.cancel();
    assert!(
        blocker.await.unwrap() > 2,
        "the database was slow while ingesting"
    );
    assert_once_in_order(&p.db.pool, 11 + N as i64, 0).await;
}

fn projector(db: &TestDb, metrics_port: u16) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["run", "--project", "--metrics-addr"])
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url())
        .env("RUST_LOG", "warn")
        .env("ACTIVITY_LIVENESS_TIMEOUT_SECS", "60")
        .kill_on_drop(true)
        .spawn()
        .expect("start the projector")
}

/// Every read model's rows, as text, in key order.
async fn read_models(pool: &sqlx::PgPool) -> Vec<String> {
    let mut all = Vec::new();
    for table in [
        "analytics.activity_feed",
        "analytics.daily_activity",
        "analytics.user_summary",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t ORDER BY t::text"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        all.extend(rows);
    }
    all
}

#[tokio::test]
async fn the_projector_killed_at_random_points_folds_every_event_once() {
    let p = Pipeline::new().await;
    // A tenant of its own: the binary writes through to the shared server's default bucket.
    let tenant = unique_name("kill");
    p.publish(create_tenant(&tenant)).await;
    for u in 0..10 {
        p.publish(register(&tenant, &format!("u{u}"))).await;
    }
    let mut interrupted = 0;
    for round in 0..6 {
        // The log grows while the projector works; it is killed at a random moment of that.
        let mut child = projector(&p.db, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let grow = async {
            for i in 0..2_000 {
                let mut c = activity_of(&tenant, round * 2_000 + i);
                c["occurred_at"] = json!(format!("2026-11-{:02}T08:00:00Z", 1 + i % 28));
                p.publish(c).await;
                if i % 200 == 199 {
                    p.drain().await;
                }
            }
        };
        let killer = async {
            let pause = rand::rng().random_range(200..1_500);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
        };
        tokio::join!(grow, killer);
        child.wait().await.unwrap();
        let behind: i64 = p.count(crate::fixtures::BEHIND).await;
        interrupted += (behind > 0) as usize;
    }
    let kills = 6;
    // How many kills caught a projection behind the log depends on the machine's speed;
    // the views must equal a replay either way.
    eprintln!("{interrupted} of {kills} kills left a projection behind the log");
    let port = activity_store::embedded::free_port().unwrap();
    let mut last = projector(&p.db, port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let end: i64 = p.count("SELECT max(position) FROM events").await;
    loop {
        let behind: i64 = p.count(crate::fixtures::BEHIND).await;
        let installed: i64 = p.count("SELECT count(*) FROM projection_checkpoints").await;
        if behind == 0 && installed == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector never caught up to {end}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(Pid::from_raw(last.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    last.wait().await.unwrap();
    let live = read_models(&p.db.pool).await;
    // Replay equals live: a rebuild of every projection from the log gives the same rows.
    let projector =
        activity_store::project::Projector::start(p.db.pool.clone(), Default::default())
            .await
            .unwrap();
    for name in ["activity_feed", "daily_activity"] {
        projector.rebuild(name, |_, _| {}).await.unwrap();
    }
    let user_summary = projector
        .projections()
        .iter()
        .find(|x| x.name == "user_summary")
        .unwrap()
        .clone();
    let shadow =
        activity_store::project::shadow::prepare(&p.db.pool, &user_summary, 1_000, |_, _| {})
            .await
            .unwrap();
    activity_store::project::shadow::swap_in(&p.db.pool, &user_summary, shadow)
        .await
        .unwrap();
    assert_eq!(
        read_models(&p.db.pool).await,
        live,
        "after {kills} kills, live = replay"
    );
}
