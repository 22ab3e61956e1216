//! Erasure matches by meaning: a dead letter whose JSON spells the user with escapes is the
//! user's, and neither a redrive nor an archive attached again brings an erased user back.

use activity_store::erase;
use activity_store::ingest::redrive::{self, Selection};
use activity_store::log::EventLog;
use activity_store::log::archive::{self, ArchiveError};
use activity_store::log::partitions::Month;
use chrono::{Datelike, Utc};
use serde_json::json;

use crate::erasure_support::{Erasable, Style, archives, found, pg_dump};

const USER: &str = "josé-ñandú-4417";
const EMAIL: &str = "josé.4417@example.com";
const NAME: &str = "José Ñandú 🚀";

fn values() -> Vec<String> {
    [USER, EMAIL, NAME, "zqsecret4417"]
        .map(str::to_owned)
        .to_vec()
}

async fn count(e: &Erasable, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&e.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_escaped_spelling_is_scrubbed_and_a_redrive_cannot_bring_the_user_back() {
    let e = Erasable::start().await;
    e.publish_as(
        "acme",
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        Style::Raw,
    )
    .await;
    let register = json!({"type": "register_user", "tenant": "acme", "user": USER,
                          "email": EMAIL, "name": NAME});
    e.publish_as("acme", register.clone(), Style::Raw).await;
    // The same registration again from an encoder that escapes non-ASCII: refused
    // (user_exists), and a redrive would register the user once they are forgotten.
    e.publish_as("acme", register, Style::Ascii).await;
    // Another tenant's subject, the body of acme's user: refused (tenant_mismatch).
    e.publish_as(
        "globex",
        json!({"type": "record_activity", "tenant": "acme", "user": USER,
               "activity_type": "login", "metadata": {"note": "zqsecret4417"}}),
        Style::Escaped,
    )
    .await;
    e.settled(2).await;
    e.until("SELECT count(*) FROM dead_letters", 2).await;

    let receipt = erase::forget(&e.db.pool, &e.js, &e.erase, "acme", USER, |_| {})
        .await
        .unwrap();
    assert_eq!(receipt.dead_letters, 2, "{receipt:?}");
    assert!(receipt.stream_left.is_empty(), "{receipt:?}");

    let letters = redrive::unresolved(&e.db.pool, &Selection::default())
        .await
        .unwrap();
    assert!(letters.is_empty(), "{letters:?}");
    // Even redriven by id, a scrubbed dead letter decides nothing.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM dead_letters")
        .fetch_all(&e.db.pool)
        .await
        .unwrap();
    let all = Selection {
        ids,
        ..Default::default()
    };
    let letters = redrive::unresolved(&e.db.pool, &all).await.unwrap();
    let log = EventLog::open(e.db.pool.clone()).await.unwrap();
    redrive::redrive(&log, &letters, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!(
        count(&e, "SELECT count(*) FROM users WHERE tenant = 'acme'").await,
        0
    );
    let dump = pg_dump(&e.db);
    assert_eq!(found(&dump, &values()), None);
    e.store.stop().await;
}

/// The first day of the month before this one, at 10:00, as RFC 3339.
pub fn last_month() -> (Month, String) {
    let now = Utc::now();
    let (y, m) = if now.month() == 1 {
        (now.year() - 1, 12)
    } else {
        (now.year(), now.month() - 1)
    };
    let at = format!("{y}-{m:02}-02T10:00:00Z");
    let month = Month::of(at.parse().unwrap());
    (month, at)
}

#[tokio::test]
async fn archives_and_detached_months_obey_erasures_recorded_after_them() {
    let e = Erasable::start().await;
    let (month, at) = last_month();
    for c in [
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        json!({"type": "register_user", "tenant": "acme", "user": USER, "email": EMAIL, "name": NAME}),
        json!({"type": "register_user", "tenant": "acme", "user": "keeper", "email": "k@example.com"}),
        json!({"type": "record_activity", "tenant": "acme", "user": USER, "activity_type": "login",
               "occurred_at": at, "metadata": {"note": "zqsecret4417"}}),
        json!({"type": "record_activity", "tenant": "acme", "user": "keeper", "activity_type": "login",
               "occurred_at": at, "metadata": {"note": "zqkept0001"}}),
    ] {
        e.publish_as("acme", c, Style::Raw).await;
    }
    e.settled(5).await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("erasure-archive"));
    let detached = archive::detach_before(&e.db.pool, month.next(), Some(&dir))
        .await
        .unwrap();
    let manifest = detached
        .iter()
        .find(|d| d.month == month)
        .and_then(|d| d.manifest.clone())
        .unwrap();
    let copy = dir.with_extension("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    assert!(
        archives(&dir).contains("zqsecret4417"),
        "the archive holds her"
    );

    let receipt = erase::forget(&e.db.pool, &e.js, &e.erase, "acme", USER, |_| {})
        .await
        .unwrap();
    assert_eq!(
        receipt.archives,
        vec![manifest.display().to_string()],
        "{receipt:?}"
    );

    // Rewritten in place: new data file, checksum and manifest; the old file is gone.
    let rewritten = archive::rescrub(&e.db.pool, &copy).await.unwrap();
    assert_eq!(rewritten.len(), 1, "{rewritten:?}");
    assert_eq!(rewritten[0].scrubbed, 1, "{rewritten:?}");
    let left = archives(&copy);
    assert_eq!(found(&left, &values()), None);
    assert!(left.contains("zqkept0001"), "another user's rows stay");
    let again = archive::rescrub(&e.db.pool, &copy).await.unwrap();
    assert_eq!(again[0].scrubbed, 0, "{again:?}");

    // The original archive, attached by its data file's path: scrubbed before it is visible.
    let data = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".copy.gz"))
        .unwrap();
    let attached = archive::attach(&e.db.pool, &data).await.unwrap();
    assert_eq!((attached.rows, attached.scrubbed), (2, 1), "{attached:?}");
    let dump = pg_dump(&e.db);
    assert_eq!(found(&dump, &values()), None);
    assert!(dump.contains("zqkept0001"));
    e.store.stop().await;
}

#[tokio::test]
async fn attach_names_the_file_to_pass_when_given_something_else() {
    let db = crate::support::TestDb::migrated().await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("not-an-archive"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("events_p202501.copy.gz");
    std::fs::write(&data, b"\x1f\x8b not really").unwrap();
    match archive::attach(&db.pool, &data).await {
        Err(ArchiveError::NotManifest { message, .. }) => {
            assert!(
                message.contains("events_p202501.manifest.json"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let junk = dir.join("notes.txt");
    std::fs::write(&junk, b"hello").unwrap();
    match archive::attach(&db.pool, &junk).await {
        Err(ArchiveError::NotManifest { message, .. }) => {
            assert!(message.contains("manifest.json"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A manifest is not trusted: its table reaches SQL and its file is read.
    for (table, file) in [
        (
            "events_p202501; DROP TABLE events",
            "events_p202501.copy.gz",
        ),
        ("events_p+20251", "events_p202501.copy.gz"),
        ("events_p202501", "../../etc/passwd"),
    ] {
        let m = dir.join("events_p202501.manifest.json");
        let manifest = json!({"month": "2025-01", "table": table, "rows": 0, "positions": null,
                              "file": file, "sha256": "00", "written_at": "2026-01-01T00:00:00Z"});
        std::fs::write(&m, manifest.to_string()).unwrap();
        match archive::attach(&db.pool, &m).await {
            Err(ArchiveError::Io(message)) => assert!(message.contains("not a"), "{message}"),
            other => panic!("{table} {file}: {other:?}"),
        }
    }
}
