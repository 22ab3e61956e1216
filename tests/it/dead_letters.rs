//! Dead letters for operators: listed, shown safely, redriven against today's registry
//! (exactly once, in arrival order, with a dry run), and purged.

use std::process::Output;

use serde_json::{Value, json};

use crate::fixtures::sqlstate;
use crate::ingest_support::{activity, create_tenant, register};
use crate::project_support::ReadSide;
use crate::support::TestDb;

fn cli(db: &TestDb, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("dead-letters")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Activities of `u1` before `u1` exists: dead-lettered as unknown_user.
async fn early_activities(side: &ReadSide, n: usize) {
    let mut batch = vec![create_tenant("acme")];
    batch.extend((0..n).map(|i| {
        let mut a = activity("acme", "u1");
        a["metadata"] = json!({"n": i});
        a
    }));
    side.apply(&batch).await;
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resolution_is_one_of_the_known_ones_and_needs_its_time() {
    let side = ReadSide::new().await;
    early_activities(&side, 1).await;
    for sql in [
        "UPDATE dead_letters SET resolution = 'ignored', resolved_at = now()",
        "UPDATE dead_letters SET resolution = 'redriven'",
        "UPDATE dead_letters SET resolved_at = now()",
    ] {
        let r = sqlx::query(sql).execute(&side.db.pool).await;
        assert_eq!(sqlstate(r), "23514", "{sql}");
    }
}

#[tokio::test]
async fn redrive_accepts_what_the_registry_now_allows_exactly_once_in_arrival_order() {
    let side = ReadSide::new().await;
    early_activities(&side, 3).await;
    assert_eq!(
        count(&side.db, "SELECT count(*) FROM dead_letters").await,
        3
    );
    side.apply(&[register("acme", "u1")]).await;

    let dry = cli(
        &side.db,
        &["redrive", "--reason", "unknown_user", "--dry-run"],
    );
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        stdout(&dry).contains("3 would be accepted, 0 still refused"),
        "{}",
        stdout(&dry)
    );
    // Each line names the dead letter and the command: id, type, tenant and user.
    let ids: Vec<(i64, uuid::Uuid)> =
        sqlx::query_as("SELECT id, command_id FROM dead_letters ORDER BY id")
            .fetch_all(&side.db.pool)
            .await
            .unwrap();
    for (id, command) in ids {
        let line = stdout(&dry)
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .map(str::to_owned)
            .unwrap_or_default();
        for part in [
            command.to_string().as_str(),
            "record_activity",
            "tenant acme",
            "user u1",
            "would be accepted",
        ] {
            assert!(line.contains(part), "{part} missing from {line:?}");
        }
    }
    assert_eq!(
        count(&side.db, "SELECT count(*) FROM events").await,
        2,
        "a dry run writes nothing"
    );

    let first = cli(&side.db, &["redrive", "--reason", "unknown_user"]);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout(&first).contains("3 accepted, 0 duplicates, 0 still refused"),
        "{}",
        stdout(&first)
    );
    let again = cli(&side.db, &["redrive", "--reason", "unknown_user"]);
    assert!(
        stdout(&again).contains("nothing to redrive"),
        "{}",
        stdout(&again)
    );

    // In the order they first arrived, after everything already in the log.
    let order: Vec<i64> = sqlx::query_scalar(
        "SELECT (data->>'n')::bigint FROM events WHERE event_type = 'activity_recorded' ORDER BY position",
    )
    .fetch_all(&side.db.pool)
    .await
    .unwrap();
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(
        count(&side.db, "SELECT count(*) FROM dead_letters WHERE resolution = 'redriven' AND resolved_at IS NOT NULL").await,
        3
    );
    assert_eq!(
        count(&side.db, "SELECT count(*) FROM command_ledger").await,
        5
    );
}

#[tokio::test]
async fn what_is_still_refused_keeps_its_dead_letter_with_the_new_reason() {
    let side = ReadSide::new().await;
    // Unknown tenant at first; after the tenant exists, the user is still unknown.
    side.apply(&[activity("acme", "u1")]).await;
    side.apply(&[create_tenant("acme")]).await;
    let dry = cli(
        &side.db,
        &["redrive", "--reason", "unknown_tenant", "--dry-run"],
    );
    assert!(stdout(&dry).contains("unknown_user"), "{}", stdout(&dry));
    let out = cli(&side.db, &["redrive", "--reason", "unknown_tenant"]);
    assert!(
        stdout(&out).contains("0 accepted, 0 duplicates, 1 still refused"),
        "{}",
        stdout(&out)
    );
    let (reason, redrives, resolved): (String, i32, bool) =
        sqlx::query_as("SELECT reason, redrives, resolved_at IS NOT NULL FROM dead_letters")
            .fetch_one(&side.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (reason.as_str(), redrives, resolved),
        ("unknown_user", 1, false)
    );
}

#[tokio::test]
async fn two_redrives_at_once_apply_each_command_once() {
    let side = ReadSide::new().await;
    early_activities(&side, 50).await;
    side.apply(&[register("acme", "u1")]).await;
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking({
            let url = side.db.url();
            move || redrive_with(&url)
        }),
        tokio::task::spawn_blocking({
            let url = side.db.url();
            move || redrive_with(&url)
        })
    );
    assert!(a.unwrap().status.success() && b.unwrap().status.success());
    assert_eq!(
        count(
            &side.db,
            "SELECT count(*) FROM events WHERE event_type = 'activity_recorded'"
        )
        .await,
        50
    );
    assert_eq!(
        count(
            &side.db,
            "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL"
        )
        .await,
        0
    );
}

fn redrive_with(url: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["dead-letters", "redrive", "--reason", "unknown_user"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn list_show_and_purge() {
    let side = ReadSide::new().await;
    early_activities(&side, 2).await;
    // Bytes that are not UTF-8, through the same path.
    sqlx::query(
        "INSERT INTO dead_letters (reason, message, subject, tenant, raw, raw_length, raw_sha256, received_at) \
         VALUES ('malformed', 'not JSON', 'activity.commands.globex', 'globex', '\\xff00c3283c', 5, sha256('\\xff00c3283c'), now() - interval '2 days')",
    )
    .execute(&side.db.pool)
    .await
    .unwrap();
    let list = cli(&side.db, &["list", "--json"]);
    let rows: Vec<Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{}", stdout(&list));
    let only = cli(&side.db, &["list", "--tenant", "globex", "--json"]);
    let rows: Vec<Value> = stdout(&only)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["reason"], "malformed");
    let id = rows[0]["id"].as_i64().unwrap().to_string();

    let show = stdout(&cli(&side.db, &["show", &id]));
    assert!(show.contains("5 bytes"), "{show}");
    assert!(show.contains("not UTF-8"), "{show}");
    assert!(show.contains(r"\xff\x00\xc3(<"), "{show}");
    let sha: String = sqlx::query_scalar("SELECT encode(sha256('\\xff00c3283c'), 'hex')")
        .fetch_one(&side.db.pool)
        .await
        .unwrap();
    assert!(show.contains(&sha), "{show}");
    let text = stdout(&cli(
        &side.db,
        &["show", &(id.parse::<i64>().unwrap() - 1).to_string()],
    ));
    assert!(text.contains("\"type\":\"record_activity\""), "{text}");

    let purged = cli(&side.db, &["purge", "--before", "1 day ago"]);
    assert!(stdout(&purged).contains("purged 1"), "{}", stdout(&purged));
    assert_eq!(
        count(&side.db, "SELECT count(*) FROM dead_letters").await,
        2
    );
}

#[tokio::test]
async fn a_command_published_again_and_applied_since_is_a_duplicate_not_a_second_event() {
    let side = ReadSide::new().await;
    side.apply(&[create_tenant("acme")]).await;
    let mut early = activity("acme", "u1");
    early["id"] = json!(uuid::Uuid::new_v4().to_string());
    side.apply(std::slice::from_ref(&early)).await;
    // The producer publishes the same command again once the user exists.
    side.apply(&[register("acme", "u1"), early.clone()]).await;
    let out = cli(&side.db, &["redrive", "--reason", "unknown_user"]);
    assert!(
        stdout(&out).contains("0 accepted, 1 duplicates, 0 still refused"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        count(
            &side.db,
            "SELECT count(*) FROM events WHERE event_type = 'activity_recorded'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &side.db,
            "SELECT count(*) FROM dead_letters WHERE resolution = 'duplicate'"
        )
        .await,
        1
    );
}
