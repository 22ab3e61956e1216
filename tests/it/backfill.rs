//! Data migrations: batched (at most 10,000 rows a transaction), beside ingest, resumable
//! after `kill -9` from the last committed batch, shown in `migrate status`, reversed by
//! `migrate data down` before the schema migration goes.

use std::time::Duration;

use activity_store::log::backfill::{self, BackfillError, Direction};
use activity_store::log::migrate;
use sqlx::PgPool;

use crate::fixtures::down_to_before;
use crate::ingest_support::{Pipeline, create_tenant};
use crate::support::TestDb;

const NAME: &str = "dead_letter_command_type";
const ROWS: i64 = 100_000;

/// A store whose `dead_letters` holds `ROWS` rows written before migration 0031 (every
/// third names `record_activity`, every third `register_user`, the rest are not JSON), then
/// migrated up: the column exists and those rows wait for the backfill.
async fn store_with_old_dead_letters() -> TestDb {
    let db = TestDb::migrated().await;
    down_to_before(&db.pool, 31).await.unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (reason, message, raw, raw_length, raw_sha256, received_at) \
         SELECT 'malformed', 'm', r, length(r), sha256(r), now() FROM ( \
           SELECT CASE i % 3 \
             WHEN 0 THEN convert_to('{\"type\": \"record_activity\", \"n\": ' || i || '}', 'UTF8') \
             WHEN 1 THEN convert_to('{\"type\": \"register_user\", \"n\": ' || i || '}', 'UTF8') \
             ELSE '\\xff00'::bytea || int8send(i) END AS r \
           FROM generate_series(1, $1) i) s",
    )
    .bind(ROWS)
    .execute(&db.pool)
    .await
    .unwrap();
    migrate::up(&db.pool).await.unwrap();
    db
}

async fn types(pool: &PgPool) -> Vec<(Option<String>, i64)> {
    sqlx::query_as(
        "SELECT command_type, count(*) FROM dead_letters GROUP BY 1 ORDER BY 1 NULLS LAST",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn fingerprint(pool: &PgPool) -> (i64, String) {
    sqlx::query_as(
        "SELECT count(*), md5(string_agg(encode(raw_sha256, 'hex'), '' ORDER BY id)) FROM dead_letters",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_data_migration_runs_in_batches_beside_ingest_and_goes_back_without_losing_a_row() {
    let db = store_with_old_dead_letters().await;
    let before = fingerprint(&db.pool).await;
    let pending = &backfill::status(&db.pool).await.unwrap()[0];
    assert_eq!(
        (pending.name, pending.direction, pending.rows_left),
        (NAME, None, ROWS)
    );

    let pool = db.pool.clone();
    let p = Pipeline::on_pool(db, pool.clone()).await;

    // The migration in the background; ingest commits a batch at a time meanwhile.
    let migrating = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut sizes = Vec::new();
            let mut last = 0;
            let ran = backfill::run(&pool, NAME, Direction::Up, 10_000, &mut |done, _| {
                sizes.push(done - last);
                last = done;
            })
            .await
            .unwrap();
            (ran, sizes)
        }
    });
    let (mut committed_while_migrating, mut published) = (0, 0);
    while !migrating.is_finished() {
        p.publish(create_tenant(&format!("t{published}"))).await;
        published += 1;
        if p.drain().await > 0 {
            committed_while_migrating += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (ran, sizes) = migrating.await.unwrap();
    assert_eq!(
        (ran.rows, ran.rows_done),
        (ROWS, ROWS),
        "processed = 100,000"
    );
    assert!(ran.batches >= 10, "{} batches", ran.batches);
    assert!(sizes.iter().all(|s| *s <= 10_000), "{sizes:?}");
    assert!(
        committed_while_migrating >= 2,
        "ingest committed {committed_while_migrating} times"
    );
    p.drain().await;
    let landed = p
        .count("SELECT count(*) FROM events WHERE event_type = 'tenant_created'")
        .await;
    assert_eq!(
        landed, published,
        "every command published meanwhile landed"
    );
    let third = ROWS / 3;
    assert_eq!(
        types(&pool).await,
        [
            (Some("record_activity".into()), third),
            (Some("register_user".into()), third + 1),
            (None, ROWS - 2 * third - 1)
        ]
    );
    let done = &backfill::status(&pool).await.unwrap()[0];
    assert_eq!(
        (
            done.direction,
            done.finished,
            done.rows_done,
            done.rows_left
        ),
        (Some(Direction::Up), true, ROWS, 0)
    );
    // Run again: nothing to do.
    let again = backfill::run(&pool, NAME, Direction::Up, 10_000, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.rows, again.batches), (0, 0));

    // The schema migration cannot go while its data migration is applied.
    let refused = down_to_before(&pool, 31).await.unwrap_err();
    assert!(refused.to_string().contains(NAME), "{refused}");
    let back = backfill::run(&pool, NAME, Direction::Down, 10_000, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!((back.rows, back.batches), (ROWS, 10));
    assert_eq!(types(&pool).await, [(None, ROWS)]);
    assert_eq!(down_to_before(&pool, 31).await.unwrap(), [31]);
    assert_eq!(
        fingerprint(&pool).await,
        before,
        "every row kept, every byte"
    );
    migrate::up(&pool).await.unwrap();
}

#[tokio::test]
async fn a_killed_run_resumes_after_its_last_committed_batch_and_status_shows_where_it_is() {
    let db = store_with_old_dead_letters().await;
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"));
        c.arg("migrate")
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut child = cli(&["data", "up", NAME, "--batch-rows", "500"])
        .spawn()
        .unwrap();
    let done_at_kill = loop {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT rows_done FROM data_migrations WHERE name = $1")
                .bind(NAME)
                .fetch_optional(&db.pool)
                .await
                .unwrap();
        if done.unwrap_or(0) >= 5_000 {
            break done.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stopped: (i64, i64, i64) =
        sqlx::query_as("SELECT rows_done, batches, cursor FROM data_migrations WHERE name = $1")
            .bind(NAME)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(stopped.0 >= done_at_kill && stopped.0 < ROWS, "{stopped:?}");
    assert_eq!(
        stopped.0,
        stopped.1 * 500,
        "whole batches only: {stopped:?}"
    );
    let typed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE command_type IS NOT NULL AND id > $1",
    )
    .bind(stopped.2)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(typed, 0, "nothing after the cursor was touched");

    let status = cli(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text.lines().find(|l| l.contains(NAME)).unwrap_or_default();
    for part in [
        "up, running",
        &format!("{} rows done", stopped.0),
        &format!("{} left", ROWS - stopped.0),
    ] {
        assert!(line.contains(part), "{part} missing from {line:?}");
    }

    let resumed = cli(&["data", "up", NAME]).output().unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    let total: (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT rows_done, finished_at FROM data_migrations WHERE name = $1")
            .bind(NAME)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(total.0, ROWS, "every row counted once across the kill");
    assert!(total.1.is_some());
    let untyped_json: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE command_type IS NULL AND get_byte(raw, 0) = 123",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(untyped_json, 0);

    // What it was for: operators find refused commands by type.
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "dead-letters",
            "list",
            "--type",
            "register_user",
            "--json",
            "--limit",
            "3",
        ])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{listed:?}");
    assert!(
        lines.iter().all(|l| l["command_type"] == "register_user"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_data_migration_is_refused_without_its_schema_a_name_or_a_sane_batch() {
    let db = TestDb::migrated().await;
    let run = |name: &'static str, rows: i64| {
        let pool = db.pool.clone();
        async move { backfill::run(&pool, name, Direction::Up, rows, &mut |_, _| {}).await }
    };
    assert!(matches!(
        run("nope", 100).await,
        Err(BackfillError::Unknown(_))
    ));
    for rows in [0, 10_001] {
        assert!(
            matches!(run(NAME, rows).await, Err(BackfillError::BatchSize(_))),
            "{rows}"
        );
    }
    down_to_before(&db.pool, 31).await.unwrap();
    assert!(matches!(
        run(NAME, 100).await,
        Err(BackfillError::NeedsSchema { .. })
    ));
    assert!(backfill::status(&db.pool).await.unwrap().is_empty());
}
