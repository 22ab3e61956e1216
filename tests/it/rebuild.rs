//! Rebuilds never take reads down: the projection is folded into a shadow copy while the live
//! one serves and keeps folding, then swapped in whole.

use activity_store::project::shadow;

use crate::project_support::{ReadSide, activity, register, tenant};

#[tokio::test]
async fn a_rebuild_serves_the_live_tables_until_it_swaps_in_a_complete_copy() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    for day in 1..=3 {
        let at = format!("2026-11-0{day} 08:00:00");
        r.apply(&[activity("acme", "ann", "login", &at)]).await;
    }
    r.catch_up().await;
    let served = r.rows("analytics.activity_feed").await;
    let feed = r
        .projector
        .projections()
        .iter()
        .find(|p| p.name == "activity_feed")
        .unwrap()
        .clone();

    let built = shadow::prepare(&r.db.pool, &feed, 2, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        r.rows("analytics.activity_feed").await,
        served,
        "readers keep the live rows while the shadow is built"
    );
    let shadow_rows = r.rows(&format!("{}.activity_feed", built.schema())).await;
    assert_eq!(shadow_rows.len(), 3);

    // The log moves on, folded live, while the shadow waits to be swapped in.
    r.apply(&[activity("acme", "ann", "view", "2026-11-04 08:00:00")])
        .await;
    r.catch_up().await;
    let live = r.snapshot().await;
    let position = shadow::swap_in(&r.db.pool, &feed, built).await.unwrap();
    let last = crate::project_support::visible(&r.db.pool).await;
    assert_eq!(position, last, "the swap folded what arrived meanwhile");
    assert_eq!(
        r.snapshot().await,
        live,
        "the rebuilt copy equals the live one"
    );

    // The swapped-in table is the live one now: isolated, indexed, folded on.
    let (rls, forced, indexes): (bool, bool, i64) = sqlx::query_as(
        "SELECT c.relrowsecurity, c.relforcerowsecurity, \
                (SELECT count(*) FROM pg_indexes WHERE schemaname = 'analytics' \
                 AND tablename = 'activity_feed') \
         FROM pg_class c WHERE c.oid = 'analytics.activity_feed'::regclass",
    )
    .fetch_one(&r.db.pool)
    .await
    .unwrap();
    // The key, a user's and a tenant's feed in page order, the metadata search.
    assert_eq!((rls, forced, indexes), (true, true, 4));
    r.apply(&[activity("acme", "ann", "buy", "2026-11-05 08:00:00")])
        .await;
    r.catch_up().await;
    assert_eq!(r.rows("analytics.activity_feed").await.len(), 5);
    let shadows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(shadows, 0, "the shadow schema is gone");
}

#[tokio::test]
async fn a_swap_by_a_role_that_does_not_own_the_live_tables_is_refused() {
    let r = ReadSide::new().await;
    r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    r.catch_up().await;
    let owner = crate::support::unique_name("owner");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {owner} NOLOGIN; ALTER TABLE analytics.user_summary OWNER TO {owner}"
    )))
    .execute(&r.db.pool)
    .await
    .unwrap();
    let summary = r
        .projector
        .projections()
        .iter()
        .find(|p| p.name == "user_summary")
        .unwrap()
        .clone();
    let built = shadow::prepare(&r.db.pool, &summary, 100, |_, _| {})
        .await
        .unwrap();
    let refused = shadow::swap_in(&r.db.pool, &summary, built)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("belong to another role"),
        "{refused}"
    );
    assert_eq!(
        r.rows("analytics.user_summary").await.len(),
        1,
        "the live table stays"
    );
}
