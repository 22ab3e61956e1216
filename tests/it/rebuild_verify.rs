//! `rebuild --verify`: the rebuilt tables are compared with the live ones at the same log
//! position before the swap; a difference stops the swap unless forced, and verifying
//! changes nothing, even when the live projector is behind.

use crate::project_support::{ReadSide, activity, register, tenant};

async fn side() -> ReadSide {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        register("acme", "bob", "Bob"),
    ])
    .await;
    for day in 1..=3 {
        let at = format!("2026-11-0{day} 08:00:00");
        r.apply(&[
            activity("acme", "ann", "login", &at),
            activity("acme", "bob", "view", &at),
        ])
        .await;
    }
    r
}

async fn position(r: &ReadSide, name: &str) -> activity_store::project::Frontier {
    crate::project_support::checkpoints(&r.db.pool, name).await
}

#[tokio::test]
async fn matching_tables_verify_and_swap_even_with_the_live_projector_behind() {
    let r = side().await;
    r.catch_up().await;
    // Logged, not folded live yet: verification folds the live side in a rolled-back
    // transaction, so both are compared at the same position and the live one is left alone.
    r.apply(&[activity("acme", "ann", "view", "2026-11-04 08:00:00")])
        .await;
    let live_before = position(&r, "daily_activity").await;
    let (verified, swapped) = r
        .projector
        .rebuild_verified("daily_activity", |_, _| {}, false)
        .await
        .unwrap();
    assert!(verified.differences.is_empty(), "{verified:?}");
    assert!(verified.rows > 0);
    let logged = crate::project_support::visible(&r.db.pool).await;
    assert_ne!(live_before, logged, "the live projection is behind");
    assert_eq!(verified.position, logged);
    assert_eq!(swapped, Some(logged));
}

#[tokio::test]
async fn a_difference_is_shown_and_stops_the_swap_unless_forced() {
    let r = side().await;
    r.catch_up().await;
    let one = "activity_type = 'login' AND day = '2026-11-01'";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE analytics.daily_activity SET events = 999 WHERE {one}"
    )))
    .execute(&r.db.pool)
    .await
    .unwrap();
    let before = r.rows("analytics.daily_activity").await;
    let (verified, swapped) = r
        .projector
        .rebuild_verified("daily_activity", |_, _| {}, false)
        .await
        .unwrap();
    assert_eq!(swapped, None, "not swapped");
    assert_eq!(verified.differences.len(), 1, "{verified:?}");
    let d = &verified.differences[0];
    assert_eq!(
        (d.table.as_str(), d.only_live, d.only_rebuilt),
        ("analytics.daily_activity", 1, 1)
    );
    assert!(
        d.examples
            .iter()
            .any(|e| e.starts_with("live: ") && e.contains("999")),
        "{d:?}"
    );
    assert!(
        d.examples
            .iter()
            .any(|e| e.starts_with("rebuilt: ") && !e.contains("999")),
        "{d:?}"
    );
    assert_eq!(
        r.rows("analytics.daily_activity").await,
        before,
        "the live table is untouched"
    );

    let (_, swapped) = r
        .projector
        .rebuild_verified("daily_activity", |_, _| {}, true)
        .await
        .unwrap();
    assert!(swapped.is_some());
    let events: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT events FROM analytics.daily_activity WHERE {one}"
    )))
    .fetch_one(&r.db.pool)
    .await
    .unwrap();
    assert_eq!(events, 1, "forced: the rebuilt row replaced the wrong one");
}

fn rebuild_cli(r: &ReadSide, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("rebuild")
        .args(args)
        .env("DATABASE_URL", r.db.url())
        .env("NATS_URL", crate::support::nats_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_rebuild_command_verifies_reports_progress_in_plain_lines_and_exits_1_on_a_difference()
{
    let r = side().await;
    r.catch_up().await;
    let ok = rebuild_cli(&r, &["daily_activity", "--verify"]);
    let (out, err) = (
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
    );
    assert!(ok.status.success(), "{out}{err}");
    assert!(out.contains("verified: the rebuilt tables match"), "{out}");
    // Not a terminal: progress comes as plain lines, the last one complete.
    assert!(
        err.lines()
            .any(|l| l.starts_with("rebuilding daily_activity: ")),
        "{err}"
    );

    sqlx::query("UPDATE analytics.daily_activity SET users = users + 5")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let refused = rebuild_cli(&r, &["daily_activity", "--verify"]);
    let out = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(out.contains("analytics.daily_activity: "), "{out}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing swapped"));
    let forced = rebuild_cli(&r, &["daily_activity", "--verify", "--force"]);
    assert!(forced.status.success());
    let wrong: i64 =
        sqlx::query_scalar("SELECT count(*) FROM analytics.daily_activity WHERE users > 2")
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn an_interrupted_rebuild_leaves_the_live_tables_and_the_next_one_succeeds() {
    let r = side().await;
    r.catch_up().await;
    let before = r.rows("analytics.daily_activity").await;
    // A reader holds the live table: the rebuild's swap waits (and retries) behind it.
    let mut reader = r.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE analytics.daily_activity IN ACCESS SHARE MODE")
        .execute(&mut *reader)
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["rebuild", "daily_activity"])
        .env("DATABASE_URL", r.db.url())
        .env("NATS_URL", crate::support::nats_url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut waiting = false;
    for _ in 0..200 {
        waiting = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted \
             AND relation = 'analytics.daily_activity'::regclass)",
        )
        .fetch_one(&r.db.pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waiting, "the rebuild reached its swap");
    // Ctrl-C.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait().await.unwrap();
    reader.rollback().await.unwrap();
    assert_eq!(
        r.rows("analytics.daily_activity").await,
        before,
        "live tables untouched"
    );
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(["rebuild", "daily_activity"])
        .env("DATABASE_URL", r.db.url())
        .env("NATS_URL", crate::support::nats_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(r.rows("analytics.daily_activity").await, before);
}
