//! Tenant isolation in PostgreSQL, tested through a login role that only has
//! `activity_reader` (a superuser bypasses row-level security and would prove nothing), and
//! index use proven with EXPLAIN.

use activity_store::query;
use sqlx::{Connection, PgConnection};

use crate::project_support::{ReadSide, activity, register, tenant};
use crate::support::unique_name;

const READ_MODELS: [&str; 3] = [
    "analytics.activity_feed",
    "analytics.daily_activity",
    "analytics.user_summary",
];

async fn two_tenants() -> ReadSide {
    let r = ReadSide::new().await;
    for t in ["a", "b"] {
        r.apply(&[tenant(t), register(t, "ann", "Ann")]).await;
        r.apply(&[activity(t, "ann", "login", "2026-11-03 08:00:00")])
            .await;
    }
    r.catch_up().await;
    r
}

/// A login that only has `activity_reader`, bound to `tenants`.
async fn reader_of(r: &ReadSide, tenants: &[&str]) -> PgConnection {
    let role = unique_name("reader");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE activity_reader"
    )))
    .execute(&r.db.pool)
    .await
    .unwrap();
    for t in tenants {
        sqlx::query("INSERT INTO reader_tenants (login, tenant) VALUES ($1, $2)")
            .bind(&role)
            .bind(t)
            .execute(&r.db.pool)
            .await
            .unwrap();
    }
    PgConnection::connect_with(&r.db.options_as(&role, "pw"))
        .await
        .unwrap()
}

async fn reader(r: &ReadSide) -> PgConnection {
    reader_of(r, &["a", "b"]).await
}

async fn tenants_seen(conn: &mut PgConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT tenant FROM {table} ORDER BY 1"
    )))
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_reader_sees_only_its_tenant_in_every_read_model_and_nothing_without_one() {
    let r = two_tenants().await;
    let mut conn = reader(&r).await;
    for table in READ_MODELS {
        assert_eq!(
            tenants_seen(&mut conn, table).await,
            Vec::<String>::new(),
            "{table}"
        );
    }
    sqlx::query("SET activity.tenant = 'a'")
        .execute(&mut conn)
        .await
        .unwrap();
    for table in READ_MODELS {
        assert_eq!(tenants_seen(&mut conn, table).await, ["a"], "{table}");
    }
    sqlx::query("SELECT set_config('activity.tenant', 'b', false)")
        .execute(&mut conn)
        .await
        .unwrap();
    for table in READ_MODELS {
        assert_eq!(tenants_seen(&mut conn, table).await, ["b"], "{table}");
    }
}

#[tokio::test]
async fn a_login_reads_only_the_tenants_it_is_bound_to_whatever_it_sets() {
    let r = two_tenants().await;
    let mut bound_to_a = reader_of(&r, &["a"]).await;
    for (set, expected) in [("a", vec!["a".to_owned()]), ("b", vec![])] {
        sqlx::query("SELECT set_config('activity.tenant', $1, false)")
            .bind(set)
            .execute(&mut bound_to_a)
            .await
            .unwrap();
        for table in READ_MODELS {
            assert_eq!(
                tenants_seen(&mut bound_to_a, table).await,
                expected,
                "{set} {table}"
            );
        }
    }
    let mut unbound = reader_of(&r, &[]).await;
    sqlx::query("SET activity.tenant = 'a'")
        .execute(&mut unbound)
        .await
        .unwrap();
    for table in READ_MODELS {
        assert!(
            tenants_seen(&mut unbound, table).await.is_empty(),
            "{table}"
        );
    }
    // Nor can a reader bind itself.
    let e = sqlx::query("INSERT INTO reader_tenants VALUES (session_user, '*')")
        .execute(&mut unbound)
        .await
        .unwrap_err();
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .unwrap_or_default();
    assert_eq!(code, "42501", "{e}");
}

#[tokio::test]
async fn a_reader_cannot_write_read_models_or_read_the_log() {
    let r = two_tenants().await;
    let mut conn = reader(&r).await;
    sqlx::query("SET activity.tenant = 'a'")
        .execute(&mut conn)
        .await
        .unwrap();
    for sql in [
        "DELETE FROM analytics.user_summary",
        "UPDATE analytics.daily_activity SET events = 0",
        "INSERT INTO analytics.activity_feed SELECT * FROM analytics.activity_feed",
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM projection_state.daily_activity_users",
    ] {
        let e = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{sql}: {e}");
    }
}

#[tokio::test]
async fn the_query_library_scopes_even_a_superuser_to_the_tenant_asked_for() {
    let r = two_tenants().await;
    let feed = query::feed(&r.db.pool, "a", "ann", 10, None).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert!(feed.iter().all(|f| f.tenant == "a"));
    let daily = query::daily(&r.db.pool, "b", None, None).await.unwrap();
    assert!(!daily.is_empty() && daily.iter().all(|d| d.tenant == "b"));
    let user = query::user(&r.db.pool, "a", "ann").await.unwrap().unwrap();
    assert_eq!((user.tenant.as_str(), user.events), ("a", 1));
}

#[tokio::test]
async fn every_analytics_relation_is_a_table_with_row_level_security_forced() {
    let r = ReadSide::new().await;
    let relations: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'analytics' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
    )
    .fetch_all(&r.db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = relations.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["activity_feed", "daily_activity", "user_summary"]);
    for (name, kind, rls, forced) in &relations {
        assert_eq!((kind.as_str(), rls, forced), ("r", &true, &true), "{name}");
    }
}

async fn explain<'q>(
    r: &ReadSide,
    query: sqlx::query::QueryScalar<'q, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
) -> String {
    query.fetch_all(&r.db.pool).await.unwrap().join("\n")
}

#[tokio::test]
async fn feed_and_metadata_queries_use_their_indexes() {
    let r = ReadSide::new().await;
    crate::fixtures::analysed_feed(&r.db.pool).await;
    let filter = query::Feed {
        tenant: "t1".into(),
        user: Some("u7".into()),
        limit: 20,
        ..Default::default()
    };
    let feed = explain(&r, filter.query("EXPLAIN ").build_query_scalar()).await;
    assert!(feed.contains("activity_feed_user_time"), "{feed}");
    let by_metadata = explain(
        &r,
        sqlx::query_scalar(
            "EXPLAIN SELECT event_id FROM analytics.activity_feed WHERE tenant = $1 AND metadata @> $2",
        )
        .bind("t0")
        .bind(serde_json::json!({"tag": "rare"})),
    )
    .await;
    assert!(
        by_metadata.contains("activity_feed_metadata"),
        "{by_metadata}"
    );
}
