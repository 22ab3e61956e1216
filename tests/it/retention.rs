//! Retention that knows about replay: a month is detached only once every projection has
//! folded past it, archived (compressed, with a checksum and a manifest) before it is
//! dropped, and attached again from its archive; ingest commits throughout, and detach,
//! attach and rebuild give the views they started from.

use activity_store::log::archive::{self, ArchiveError};
use activity_store::log::partitions::Month;
use chrono::TimeZone;

use crate::project_support::{ReadSide, activity, register, tenant};

fn jan_2025() -> Month {
    Month::of(chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap())
}

async fn views(r: &ReadSide) -> Vec<String> {
    let mut all = Vec::new();
    for t in [
        "analytics.activity_feed",
        "analytics.daily_activity",
        "analytics.user_summary",
    ] {
        all.extend(r.rows(t).await);
    }
    all
}

async fn tables(r: &ReadSide, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = $1")
        .bind(name)
        .fetch_one(&r.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn detach_archive_attach_and_rebuild_give_the_same_views_while_ingest_commits() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    let old: Vec<_> = (1..=9)
        .map(|d| activity("acme", "ann", "login", &format!("2025-01-0{d} 08:00:00")))
        .collect();
    r.apply(&old).await;
    // Logged, not folded yet: the month is still needed.
    let refused = archive::detach_before(&r.db.pool, jan_2025().next(), None).await;
    match refused {
        Err(ArchiveError::NotFolded {
            month, projection, ..
        }) => {
            assert_eq!(month, jan_2025());
            assert!(!projection.is_empty());
        }
        other => panic!("{other:?}"),
    }
    r.catch_up().await;
    let before = views(&r).await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("archive"));

    // Detached (concurrently) while ingest commits a batch after another.
    let ingest = async {
        for d in 1..=20 {
            r.apply(&[activity(
                "acme",
                "ann",
                "view",
                &format!("2026-11-{d:02} 08:00:00"),
            )])
            .await;
        }
    };
    let (detached, ()) = tokio::join!(
        archive::detach_before(&r.db.pool, jan_2025().next(), Some(&dir)),
        ingest
    );
    let detached = detached.unwrap();
    assert_eq!(detached.len(), 1, "{detached:?}");
    assert_eq!((detached[0].month, detached[0].rows), (jan_2025(), 9));
    let manifest = detached[0].manifest.clone().expect("archived");
    assert!(manifest.exists());
    assert_eq!(
        tables(&r, "events_p202501").await,
        0,
        "dropped once archived"
    );
    r.catch_up().await;
    let with_ingest = views(&r).await;

    let attached = archive::attach(&r.db.pool, &manifest).await.unwrap();
    assert_eq!((attached.month, attached.rows), (jan_2025(), 9));
    // Attached twice: refused, nothing duplicated.
    assert!(matches!(
        archive::attach(&r.db.pool, &manifest).await,
        Err(ArchiveError::Exists(_))
    ));
    // (user_summary is cached: rebuilding it needs NATS, which this side has not.)
    for p in ["activity_feed", "daily_activity"] {
        r.projector.rebuild(p, |_, _| {}).await.unwrap();
    }
    r.catch_up().await;
    assert_eq!(
        views(&r).await,
        with_ingest,
        "rebuilt from the attached month, the same"
    );
    assert!(with_ingest.len() > before.len());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_damaged_archive_is_refused_and_the_current_month_is_never_detached() {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        activity("acme", "ann", "login", "2025-01-05 08:00:00"),
    ])
    .await;
    r.catch_up().await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("archive"));
    let detached = archive::detach_before(&r.db.pool, jan_2025().next(), Some(&dir))
        .await
        .unwrap();
    let manifest = detached[0].manifest.clone().unwrap();
    let data = dir.join("events_p202501.copy.gz");
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    assert!(matches!(
        archive::attach(&r.db.pool, &manifest).await,
        Err(ArchiveError::Checksum(_))
    ));
    assert_eq!(
        tables(&r, "events_p202501").await,
        0,
        "nothing half-attached"
    );

    let this_month = Month::of(chrono::Utc::now());
    assert!(matches!(
        archive::detach_before(&r.db.pool, this_month.next(), None).await,
        Err(ArchiveError::NotPast(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the binary without blocking this test's runtime: the read side's pool must be free
/// to finish (roll back) its sessions, or the concurrent detach would wait for them.
async fn cli(r: &ReadSide, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args(args)
        .env("DATABASE_URL", r.db.url())
        .env("NATS_URL", crate::support::nats_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_commands_detach_attach_and_a_rebuild_warns_while_months_are_away() {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        register("acme", "ann", "Ann"),
        activity("acme", "ann", "login", "2025-01-05 08:00:00"),
    ])
    .await;
    r.catch_up().await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("archive"));
    let dir_text = dir.to_string_lossy().to_string();
    let out = cli(
        &r,
        &[
            "partitions",
            "detach",
            "--before",
            "2025-02",
            "--archive",
            &dir_text,
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2025-01: 1 rows detached, archived to"),
        "{text}"
    );
    let rebuilt = cli(&r, &["rebuild", "daily_activity"]).await;
    let warned = String::from_utf8_lossy(&rebuilt.stderr);
    assert!(rebuilt.status.success(), "{warned}");
    assert!(
        warned.contains("warning: the log starts at position"),
        "{warned}"
    );
    let manifest = dir.join("events_p202501.manifest.json");
    let out = cli(&r, &["partitions", "attach", &manifest.to_string_lossy()]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("2025-01: 1 rows attached again"));
    let rebuilt = cli(&r, &["rebuild", "daily_activity"]).await;
    assert!(!String::from_utf8_lossy(&rebuilt.stderr).contains("warning"));
    let _ = std::fs::remove_dir_all(dir);
}
