//! `readers grant` sends PostgreSQL a SCRAM verifier, never the password (so no statement
//! log, client's or server's, holds it), and refuses the store's own logins and groups.

use crate::fixtures::login_in;
use crate::readers::{feed_rows, readers, readers_logged, two_tenants};
use crate::support::unique_name;

#[tokio::test]
async fn a_new_readers_password_reaches_no_log_only_its_verifier_the_server() {
    let side = two_tenants().await;
    let login = unique_name("dora");
    let password = "pässwörd-9f27 \"q\" \\ ü";
    // Every statement sqlx runs, logged.
    let out = readers_logged(
        &side.db,
        &["grant", &login, "--tenant", "acme", "--create"],
        &format!("{password}\n"),
        "trace",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("CREATE ROLE"),
        "statements are logged at trace"
    );
    assert!(!said.contains("9f27"), "the password was logged");
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&login)
        .fetch_one(&side.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert_eq!(feed_rows(&side.db, &login, password, "acme").await, Ok(1));
}

#[tokio::test]
async fn the_stores_own_logins_and_groups_are_never_readers() {
    let side = two_tenants().await;
    let (writer, _pool) = login_in(&side.db, "activity_writer").await;
    for login in [
        writer.as_str(),
        "activity_writer",
        "activity_reader",
        "activity_http_reader",
        "activity_ingest",
        "activity_api",
    ] {
        let out = readers(&side.db, &["grant", login, "--tenant", "acme"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{login} was made a reader");
        assert!(err.contains("store's own"), "{login}: {err}");
    }
    let bound: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reader_tenants WHERE login = ANY ($1) OR login LIKE 'activity%'",
    )
    .bind(vec![writer.clone()])
    .fetch_one(&side.db.pool)
    .await
    .unwrap();
    assert_eq!(bound, 0);
}
