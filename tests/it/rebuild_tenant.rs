//! Rebuilding one tenant: its rows refolded from its own log and swapped in; every other
//! tenant's rows, and the tenant's own until the swap, serve as they were.

use std::sync::Mutex;

use activity_store::project::{ProjectError, tenant};

use crate::project_support::{
    ReadSide, activity, change_email, forget, register, tenant as create,
};

async fn rows(r: &ReadSide, table: &str, tenant: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT t::text FROM {table} t WHERE tenant = $1 ORDER BY 1"
    )))
    .bind(tenant)
    .fetch_all(&r.db.pool)
    .await
    .unwrap()
}

async fn epoch(r: &ReadSide, projection: &str) -> i32 {
    sqlx::query_scalar("SELECT epoch FROM projection_checkpoints WHERE projection = $1")
        .bind(projection)
        .fetch_one(&r.db.pool)
        .await
        .unwrap()
}

async fn two_tenants() -> ReadSide {
    let r = ReadSide::new().await;
    let at = |d: u32| format!("2026-11-{d:02}T10:00:00Z");
    r.apply(&[create("acme"), create("globex")]).await;
    r.apply(&[
        register("acme", "u1", "Ann"),
        register("acme", "u2", "Bob"),
        register("globex", "g1", "Gus"),
    ])
    .await;
    for d in 1..=6 {
        r.apply(&[
            activity("acme", "u1", "login", &at(d)),
            activity("acme", "u2", "view", &at(d)),
            activity("globex", "g1", "login", &at(d)),
        ])
        .await;
    }
    r.apply(&[
        change_email("acme", "u1", "ann@new.example"),
        forget("acme", "u2"),
    ])
    .await;
    r.catch_up().await;
    r
}

#[tokio::test]
async fn one_tenant_is_refolded_from_its_log_and_the_others_are_left_alone() {
    let r = two_tenants().await;
    let want = rows(&r, "analytics.activity_feed", "acme").await;
    let want_daily = rows(&r, "analytics.daily_activity", "acme").await;
    let want_users = rows(&r, "projection_state.daily_activity_users", "acme").await;
    assert!(!want.is_empty() && !want_daily.is_empty());
    // Damage behind the projector's back, in both tenants.
    sqlx::raw_sql(
        "UPDATE analytics.activity_feed SET activity_type = 'tampered'; \
         DELETE FROM analytics.daily_activity WHERE tenant = 'acme'",
    )
    .execute(&r.db.pool)
    .await
    .unwrap();
    let globex_damaged = rows(&r, "analytics.activity_feed", "globex").await;
    let epoch_before = epoch(&r, "activity_feed").await;

    // Verified: the difference is found and, without --force, nothing is swapped.
    let (verified, swapped) = r
        .projector
        .rebuild_tenant("activity_feed", "acme", |_, _| {}, (true, false))
        .await
        .unwrap();
    let verified = verified.expect("verified");
    assert_eq!(swapped, None);
    assert_eq!(verified.differences.len(), 1, "{verified:?}");
    assert_eq!(verified.differences[0].only_rebuilt, want.len() as i64);
    assert_ne!(rows(&r, "analytics.activity_feed", "acme").await, want);

    let reports = Mutex::new(Vec::new());
    let (_, swapped) = r
        .projector
        .rebuild_tenant(
            "activity_feed",
            "acme",
            |done, total| reports.lock().unwrap().push((done, total)),
            (false, false),
        )
        .await
        .unwrap();
    assert_eq!(swapped, Some(17), "acme's 17 events: its own log's head");
    assert_eq!(rows(&r, "analytics.activity_feed", "acme").await, want);
    assert_eq!(
        rows(&r, "analytics.activity_feed", "globex").await,
        globex_damaged,
        "another tenant's rows are not touched"
    );
    let last = *reports.lock().unwrap().last().unwrap();
    assert_eq!(last, (17, 17), "progress in acme's events: {reports:?}");
    assert_eq!(
        epoch(&r, "activity_feed").await,
        epoch_before,
        "uncached: no new epoch"
    );

    r.projector
        .rebuild_tenant("daily_activity", "acme", |_, _| {}, (false, false))
        .await
        .unwrap();
    assert_eq!(
        rows(&r, "analytics.daily_activity", "acme").await,
        want_daily
    );
    assert_eq!(
        rows(&r, "projection_state.daily_activity_users", "acme").await,
        want_users,
        "acme's counted users, the forgotten one anonymous"
    );
}

#[tokio::test]
async fn a_tenant_shadow_catches_up_at_the_swap_and_holds_the_rebuild_lock() {
    let r = two_tenants().await;
    let p = r
        .projector
        .projections()
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap()
        .clone();
    let shadow = tenant::prepare(&r.db.pool, &p, "acme", |_, _| {})
        .await
        .unwrap();
    let busy = r
        .projector
        .rebuild_tenant("activity_feed", "globex", |_, _| {}, (false, false))
        .await;
    assert!(
        matches!(busy, Err(ProjectError::RebuildBusy(_))),
        "{busy:?}"
    );
    // The log and the live tables go on meanwhile.
    r.apply(&[activity("acme", "u1", "late", "2026-11-20T10:00:00Z")])
        .await;
    r.catch_up().await;
    let want = rows(&r, "analytics.activity_feed", "acme").await;
    let position = tenant::swap_in(&r.db.pool, &p, shadow).await.unwrap();
    assert_eq!(position, 18);
    assert_eq!(rows(&r, "analytics.activity_feed", "acme").await, want);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "the shadow schema is dropped");
    let odd = r
        .projector
        .rebuild_tenant("activity_feed", "Acme'; DROP", |_, _| {}, (false, false))
        .await;
    assert!(matches!(odd, Err(ProjectError::Invalid { .. })), "{odd:?}");
    let unknown = r
        .projector
        .rebuild_tenant("activity_feed", "initech", |_, _| {}, (false, false))
        .await;
    assert!(
        matches!(&unknown, Err(ProjectError::Invalid { problem, .. }) if problem.contains("no tenant")),
        "{unknown:?}"
    );
    // An older version installed (its rebuild to this one not finished): refused.
    sqlx::query("UPDATE projection_checkpoints SET version = version - 1 WHERE projection = 'activity_feed'")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let outdated = r
        .projector
        .rebuild_tenant("activity_feed", "acme", |_, _| {}, (false, false))
        .await;
    assert!(
        matches!(&outdated, Err(ProjectError::Invalid { problem, .. }) if problem.contains("not the one installed")),
        "{outdated:?}"
    );
}

#[tokio::test]
async fn the_command_line_rebuilds_one_tenant_with_its_progress() {
    let r = two_tenants().await;
    sqlx::query("DELETE FROM analytics.daily_activity WHERE tenant = 'acme'")
        .execute(&r.db.pool)
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .args([
            "rebuild",
            "daily_activity",
            "--tenant",
            "acme",
            "--verify",
            "--force",
        ])
        .env("DATABASE_URL", r.db.url())
        .env_remove("NATS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("analytics.daily_activity: 0 rows only live"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("rebuilt daily_activity for tenant acme from its log, up to its position 17"),
        "{stdout}"
    );
    assert!(
        stderr.contains("rebuilding daily_activity for acme: 17 of 17 events"),
        "{stderr}"
    );
    assert!(
        !rows(&r, "analytics.daily_activity", "acme")
            .await
            .is_empty()
    );
}
