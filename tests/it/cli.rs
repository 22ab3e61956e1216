//! The operator commands through the real binary: `migrate` and `partitions`.

use std::process::Output;

use crate::support::{TestDb, unique_name};

fn run(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"));
    cmd.args(args).env_remove("DATABASE_URL");
    let empty_dir = std::env::temp_dir().join(unique_name("nodata"));
    cmd.arg("--data-dir").arg(&empty_dir);
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run activity-store")
}

pub fn stdout_of(args: &[&str], url: &str) -> String {
    let out = run(args, Some(url));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn migrate_up_down_and_status() {
    let db = TestDb::empty().await;
    let url = db.url();
    let status = stdout_of(&["migrate", "status"], &url);
    assert!(
        status.lines().count() >= 5 && status.lines().all(|l| l.contains("pending")),
        "{status}"
    );
    assert_eq!(
        stdout_of(&["migrate", "up"], &url).trim(),
        "all migrations applied; the log has 4 shards",
        "a new store gets the default shards"
    );
    assert!(
        stdout_of(&["migrate", "status"], &url)
            .lines()
            .filter(|l| !l.starts_with("data "))
            .all(|l| l.contains("applied"))
    );
    let reverted = stdout_of(&["migrate", "down", "2"], &url);
    let versions: Vec<&str> = reverted.lines().collect();
    assert_eq!(versions.len(), 2, "{reverted}");
    let status = stdout_of(&["migrate", "status"], &url);
    assert_eq!(
        status.lines().filter(|l| l.contains("pending")).count(),
        2,
        "{status}"
    );
    stdout_of(&["migrate", "up"], &url);
}

const ENSURE_FROM_JANUARY: &[&str] = &[
    "partitions",
    "ensure",
    "--from",
    "2025-01",
    "--months-ahead",
    "1",
];

#[tokio::test]
async fn partitions_ensure_and_list() {
    let db = TestDb::migrated().await;
    let url = db.url();
    let out = stdout_of(ENSURE_FROM_JANUARY, &url);
    assert!(out.contains("created events_p202501"), "{out}");
    let again = stdout_of(ENSURE_FROM_JANUARY, &url);
    assert!(
        again.trim_end().ends_with("0 created, 24 already there") || again.contains("0 created"),
        "{again}"
    );
    let list = stdout_of(&["partitions", "list"], &url);
    let line = list
        .lines()
        .find(|l| l.starts_with("events_p202501"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains("FROM ('2025-01-01 00:00:00+00') TO ('2025-02-01 00:00:00+00')"),
        "{line}"
    );
}

#[tokio::test]
async fn bad_arguments_and_no_database_are_explained() {
    let out = run(
        &["partitions", "ensure", "--from", "2025-13"],
        Some("postgres://unused"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`2025-13` is not a month like 2025-01"));
    let out = run(&["migrate", "status"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no database: set DATABASE_URL") && err.contains("activity-store up"),
        "{err}"
    );
    // A store that is not running: where the command looked, as whom, and what to do; never
    // the password, never only "pool timed out".
    let out = run(
        &["migrate", "status"],
        Some("postgres://nobody:s3cret-pw@127.0.0.1:1/none"),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "127.0.0.1:1",
        "nobody",
        "none",
        "activity-store up",
        "DATABASE_URL",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(!err.contains("pool timed out"), "{err}");
}

#[tokio::test]
async fn a_database_out_of_reach_or_refusing_the_login_is_named_never_with_its_password() {
    // Nothing listens on port 1.
    let out = run(
        &["partitions", "list"],
        Some("postgres://nobody:secret-pw@127.0.0.1:1/none"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach PostgreSQL at 127.0.0.1:1 (database none, user nobody)")
            && err.contains("scripts/up.sh"),
        "{err}"
    );
    assert!(!err.contains("secret-pw"), "{err}");
    // The server answers, and refuses the password.
    let db = TestDb::migrated().await;
    let (login, _pool) = crate::fixtures::login_in(&db, "activity_reader").await;
    let wrong = db.url_as(&login, "not-the-pw");
    let out = run(&["partitions", "list"], Some(&wrong));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refused the connection") && err.contains(&format!("user {login})")),
        "{err}"
    );
    assert!(
        !err.contains("not-the-pw") && !err.contains(" at line "),
        "{err}"
    );
}
