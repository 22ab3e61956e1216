//! `readers grant | revoke | list`: reader logins bound to tenants without hand-written SQL,
//! proven by reading through the login itself.

use std::io::Write;
use std::process::{Output, Stdio};

use sqlx::{Connection, PgConnection};

use crate::ingest_support::{activity, create_tenant, register};
use crate::project_support::ReadSide;
use crate::support::{TestDb, unique_name};

pub fn readers(db: &TestDb, args: &[&str], stdin: &str) -> Output {
    readers_logged(db, args, stdin, "warn")
}

/// `readers ARGS` with `stdin`, logging at `log` (RUST_LOG).
pub fn readers_logged(db: &TestDb, args: &[&str], stdin: &str, log: &str) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("readers")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Feed rows `login` reads for `tenant`, or the connection error.
pub async fn feed_rows(
    db: &TestDb,
    login: &str,
    password: &str,
    tenant: &str,
) -> Result<i64, String> {
    let mut conn = PgConnection::connect_with(&db.options_as(login, password))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("SELECT set_config('activity.tenant', $1, false)")
        .bind(tenant)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM analytics.activity_feed")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

pub async fn two_tenants() -> ReadSide {
    let side = ReadSide::new().await;
    side.apply(&[
        create_tenant("acme"),
        create_tenant("globex"),
        register("acme", "a1"),
        register("globex", "g1"),
        activity("acme", "a1"),
        activity("globex", "g1"),
        activity("globex", "g1"),
    ])
    .await;
    side.catch_up().await;
    side
}

#[tokio::test]
async fn a_granted_login_reads_its_tenant_only_until_revoked() {
    let side = two_tenants().await;
    let login = unique_name("alice");
    let password = "it's \"quoted\" \\ and long";
    let out = readers(
        &side.db,
        &["grant", &login, "--tenant", "acme", "--create"],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(feed_rows(&side.db, &login, password, "acme").await, Ok(1));
    assert_eq!(feed_rows(&side.db, &login, password, "globex").await, Ok(0));

    let list = readers(&side.db, &["list", "--json"], "");
    let text = String::from_utf8_lossy(&list.stdout);
    let mine: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["login"] == login.as_str())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(mine["tenants"], serde_json::json!(["acme"]));

    // A second tenant for an existing login, then revoked one at a time.
    let out = readers(&side.db, &["grant", &login, "--tenant", "globex"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(feed_rows(&side.db, &login, password, "globex").await, Ok(2));
    let out = readers(&side.db, &["revoke", &login, "--tenant", "acme"], "");
    assert!(out.status.success());
    assert_eq!(feed_rows(&side.db, &login, password, "acme").await, Ok(0));
    assert_eq!(feed_rows(&side.db, &login, password, "globex").await, Ok(2));
    // Revoked from everything: no longer a reader at all.
    let out = readers(&side.db, &["revoke", &login], "");
    assert!(out.status.success());
    let denied = feed_rows(&side.db, &login, password, "globex").await;
    assert!(denied.unwrap_err().contains("permission denied"));
}

#[tokio::test]
async fn names_and_tenants_are_checked_before_anything_runs() {
    let side = two_tenants().await;
    for (args, field) in [
        (
            vec![
                "grant",
                "bob; DROP TABLE events",
                "--tenant",
                "acme",
                "--create",
            ],
            "login",
        ),
        (
            vec!["grant", "bob", "--tenant", "Acme Corp", "--create"],
            "tenant",
        ),
        (vec!["grant", "postgres", "--tenant", "acme"], "login"),
    ] {
        let out = readers(&side.db, &args, "pw\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    let out = readers(
        &side.db,
        &["grant", "carol_no_password", "--tenant", "acme", "--create"],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&side.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 7);
}

#[tokio::test]
async fn a_token_is_shown_once_listed_without_its_secret_and_revoked_at_once() {
    let db = TestDb::migrated().await;
    let run = |args: &[&str]| readers(&db, args, "");
    for bad in [
        vec!["token", "create", "--tenant", "*"],
        vec!["token", "create", "--tenant", "Not A Slug"],
        vec![
            "token",
            "create",
            "--tenant",
            "acme",
            "--name",
            "dash\u{1b}[31m",
        ],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).is_empty(),
            "{bad:?} says why"
        );
    }
    let out = run(&[
        "token",
        "create",
        "--tenant",
        "acme",
        "--name",
        "dashboard",
        "--expires",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(activity_store::api::tokens::well_formed(&token), "{token}");
    // Only the digest is kept: no column of any row holds the token.
    let holding: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens t WHERE strpos(t::text, $1) > 0")
            .bind(&token)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(holding, 0);
    let digest = activity_store::api::tokens::digest(&token);
    let tenant_of = async |d: &str| -> Option<String> {
        sqlx::query_scalar("SELECT analytics.token_tenant($1)")
            .bind(d)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    assert_eq!(tenant_of(&digest).await.as_deref(), Some("acme"));
    let listed = run(&["token", "list", "--json"]);
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(!text.contains(&token), "the list never shows a token");
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (row["tenant"].as_str(), row["name"].as_str()),
        (Some("acme"), Some("dashboard"))
    );
    assert!(
        row["expires_at"].is_string() && row["revoked_at"].is_null(),
        "{row}"
    );
    let id = row["id"].as_str().unwrap();
    assert!(run(&["token", "revoke", id]).status.success());
    assert_eq!(
        tenant_of(&digest).await,
        None,
        "revoked for the next request"
    );
    assert!(
        !run(&["token", "revoke", id]).status.success(),
        "a second revoke says so"
    );
    let listed = String::from_utf8(run(&["token", "list"]).stdout).unwrap();
    assert!(listed.contains("revoked"), "{listed}");
}
