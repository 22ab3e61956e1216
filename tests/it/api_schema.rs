//! The database side of the HTTP API: tenant tokens as a second way row-level security lets
//! a session read a tenant, command status under the same rule, and the indexes the API's
//! reads and lookups use (proven with EXPLAIN).

use serde_json::json;
use sqlx::{PgPool, Row};

use activity_store::api::Cursor;
use activity_store::api::tokens::digest;
use activity_store::query::Feed;

use crate::fixtures::login_in;
use crate::project_support::{ReadSide, activity, register, tenant};

/// A token row for `tenant`, as `readers token create` makes it; returns the token.
async fn token(pool: &PgPool, tenant: &str, expires: &str) -> String {
    let token = format!("ast_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (tenant, name, hash, expires_at) \
         VALUES ($1, 'test', sha256(sha256(convert_to($2, 'UTF8'))), {expires})"
    )))
    .bind(tenant)
    .bind(&token)
    .execute(pool)
    .await
    .unwrap();
    token
}

/// A transaction of `pool` as `activity_reader`, with `activity.tenant` and
/// `activity.token` set as the API sets them.
async fn scoped(
    pool: &PgPool,
    tenant: &str,
    token_setting: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('role', 'activity_reader', true), \
         set_config('activity.tenant', $1, true), set_config('activity.token', $2, true)",
    )
    .bind(tenant)
    .bind(token_setting)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// What a session sees of `analytics.activity_feed` with `activity.token` set to `setting`.
async fn visible_raw(pool: &PgPool, tenant: &str, setting: &str) -> Vec<String> {
    let mut tx = scoped(pool, tenant, setting).await;
    sqlx::query_scalar("SELECT DISTINCT tenant FROM analytics.activity_feed ORDER BY 1")
        .fetch_all(&mut *tx)
        .await
        .unwrap()
}

/// As `visible_raw`, with the token's digest, as the API sends it.
async fn visible(pool: &PgPool, tenant: &str, token: &str) -> Vec<String> {
    visible_raw(pool, tenant, &digest(token)).await
}

async fn two_tenants() -> ReadSide {
    let r = ReadSide::new().await;
    r.apply(&[
        tenant("acme"),
        tenant("globex"),
        register("acme", "u1", "A"),
        register("globex", "u1", "G"),
        activity("acme", "u1", "login", "2026-01-05T10:00:00Z"),
        activity("globex", "u1", "login", "2026-01-05T10:00:00Z"),
    ])
    .await;
    r.catch_up().await;
    r
}

#[tokio::test]
async fn a_token_lets_an_unbound_reader_read_its_tenant_and_nothing_else() {
    let r = two_tenants().await;
    // A login of the API's kind, bound to no tenant: only a token can scope it.
    let (_, reader) = login_in(&r.db, "activity_http_reader").await;
    let acme = token(&r.db.pool, "acme", "NULL").await;
    assert_eq!(visible(&reader, "acme", &acme).await, ["acme"]);
    // The token of one tenant does not open another, nor does a made-up token.
    assert!(visible(&reader, "globex", &acme).await.is_empty());
    assert!(visible(&reader, "acme", "ast_made_up").await.is_empty());
    assert!(visible(&reader, "acme", "").await.is_empty());
    // Only the API's kind of login may scope by token: an SQL reader holding a digest (from a
    // statement log, say) reads nothing with it; nor does the digest stored in the table
    // (the table keeps the digest's digest).
    let (_, analyst) = login_in(&r.db, "activity_reader").await;
    assert!(visible(&analyst, "acme", &acme).await.is_empty());
    let stored: Vec<u8> = sqlx::query_scalar("SELECT hash FROM api_tokens LIMIT 1")
        .fetch_one(&r.db.pool)
        .await
        .unwrap();
    let stored_hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
    assert!(visible_raw(&reader, "acme", &stored_hex).await.is_empty());
    // The session is given the token's digest; the token itself, or anything not a digest,
    // opens nothing (and raises no error).
    assert!(visible_raw(&reader, "acme", &acme).await.is_empty());
    assert!(visible_raw(&reader, "acme", "zz").await.is_empty());
    // Revoked or expired tokens open nothing.
    let revoked = token(&r.db.pool, "acme", "NULL").await;
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE hash = sha256(sha256(convert_to($1, 'UTF8')))",
    )
    .bind(&revoked)
    .execute(&r.db.pool)
    .await
    .unwrap();
    assert!(visible(&reader, "acme", &revoked).await.is_empty());
    let expired = token(&r.db.pool, "acme", "now() - interval '1 second'").await;
    assert!(visible(&reader, "acme", &expired).await.is_empty());
    // The API's tenant check and the cache's check agree with row-level security.
    let row = sqlx::query(
        "SELECT analytics.token_tenant($1) AS a, analytics.token_tenant($2) AS b, \
         analytics.token_tenant($3) AS c",
    )
    .bind(digest(&acme))
    .bind(digest(&revoked))
    .bind(digest("ast_made_up"))
    .fetch_one(&reader)
    .await
    .unwrap();
    assert_eq!(row.get::<Option<String>, _>("a").as_deref(), Some("acme"));
    assert_eq!(row.get::<Option<String>, _>("b"), None);
    assert_eq!(row.get::<Option<String>, _>("c"), None);
    let mut tx = reader.begin().await.unwrap();
    sqlx::query("SELECT set_config('activity.token', $1, true)")
        .bind(digest(&acme))
        .execute(&mut *tx)
        .await
        .unwrap();
    let may: (bool, bool) =
        sqlx::query_as("SELECT analytics.may_read('acme'), analytics.may_read('globex')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(may, (true, false));
}

#[tokio::test]
async fn a_reader_cannot_read_or_write_the_tokens() {
    let r = two_tenants().await;
    let (_, reader) = login_in(&r.db, "activity_reader").await;
    token(&r.db.pool, "acme", "NULL").await;
    let read = sqlx::query("SELECT hash FROM api_tokens")
        .fetch_all(&reader)
        .await;
    assert_eq!(crate::fixtures::sqlstate(read), "42501");
    let write =
        sqlx::query("INSERT INTO api_tokens (tenant, hash) VALUES ('acme', sha256('x'::bytea))")
            .execute(&reader)
            .await;
    assert_eq!(crate::fixtures::sqlstate(write), "42501");
    // The table keeps only well-formed rows: a tenant slug and a 32-byte digest.
    for (tenant, hash) in [("Acme!", "sha256('x'::bytea)"), ("acme", "'\\x01'::bytea")] {
        let bad = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (tenant, hash) VALUES ('{tenant}', {hash})"
        )))
        .execute(&r.db.pool)
        .await;
        assert_eq!(crate::fixtures::sqlstate(bad), "23514", "{tenant}");
    }
}

/// `analytics.command_status(id)` as a reader holding `token` for `tenant`.
async fn status(
    pool: &PgPool,
    tenant: &str,
    token: &str,
    id: uuid::Uuid,
) -> Option<(String, Option<i64>, Option<String>, Option<String>)> {
    let mut tx = scoped(pool, tenant, &digest(token)).await;
    sqlx::query_as("SELECT status, position, reason, field FROM analytics.command_status($1)")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn command_status_tells_applied_refused_and_unknown_only_to_its_tenant() {
    let r = two_tenants().await;
    let (applied, refused, unknown) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let mut ok = activity("acme", "u1", "login", "2026-01-06T10:00:00Z");
    ok["id"] = json!(applied);
    let bad = json!({"type": "record_activity", "tenant": "acme", "user": "nobody",
        "activity_type": "login", "id": refused});
    r.apply(&[ok, bad]).await;
    let (_, reader) = login_in(&r.db, "activity_http_reader").await;
    let acme = token(&r.db.pool, "acme", "NULL").await;
    let globex = token(&r.db.pool, "globex", "NULL").await;

    let (state, position, _, _) = status(&reader, "acme", &acme, applied).await.unwrap();
    assert_eq!(state, "applied");
    let logged: i64 =
        sqlx::query_scalar("SELECT tenant_position FROM events WHERE command_id = $1")
            .bind(applied)
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(position, Some(logged));
    let (state, position, reason, field) = status(&reader, "acme", &acme, refused).await.unwrap();
    assert_eq!((state.as_str(), position), ("refused", None));
    assert_eq!(
        (reason.as_deref(), field.as_deref()),
        (Some("unknown_user"), Some("user"))
    );
    assert_eq!(status(&reader, "acme", &acme, unknown).await, None);
    // Another tenant's token, or the right token naming another tenant, learns nothing.
    assert_eq!(status(&reader, "globex", &globex, applied).await, None);
    assert_eq!(status(&reader, "globex", &globex, refused).await, None);
    assert_eq!(status(&reader, "globex", &acme, applied).await, None);
}

#[tokio::test]
async fn a_refused_command_is_found_by_its_id_even_when_another_field_is_invalid() {
    let r = two_tenants().await;
    let id = uuid::Uuid::new_v4();
    r.apply(&[
        json!({"type": "record_activity", "tenant": "acme", "user": "u1",
        "activity_type": "NOT VALID", "id": id}),
    ])
    .await;
    let (_, reader) = login_in(&r.db, "activity_http_reader").await;
    let acme = token(&r.db.pool, "acme", "NULL").await;
    let (state, _, reason, field) = status(&reader, "acme", &acme, id).await.unwrap();
    assert_eq!(state, "refused");
    assert_eq!(
        (reason.as_deref(), field.as_deref()),
        (Some("invalid_field"), Some("activity_type"))
    );
}

async fn explain(conn: &mut sqlx::PgConnection, sql: &str, binds: &[serde_json::Value]) -> String {
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")));
    for b in binds {
        q = match b {
            serde_json::Value::String(s) => q.bind(s.clone()),
            serde_json::Value::Number(n) => q.bind(n.as_i64().unwrap()),
            other => q.bind(sqlx::types::Json(other.clone())),
        };
    }
    q.fetch_all(conn).await.unwrap().join("\n")
}

/// The plan of a feed's page.
async fn plan(conn: &mut sqlx::PgConnection, feed: &Feed) -> String {
    let lines: Vec<String> = feed
        .query("EXPLAIN ")
        .build_query_scalar()
        .fetch_all(conn)
        .await
        .unwrap();
    lines.join("\n")
}

#[tokio::test]
async fn command_lookups_and_the_tenant_feed_use_their_indexes() {
    let r = ReadSide::new().await;
    crate::fixtures::analysed_feed(&r.db.pool).await;
    let mut conn = r.db.pool.acquire().await.unwrap();
    let cursor = Cursor {
        at: chrono::Utc::now() - chrono::Duration::days(3),
        event_id: uuid::Uuid::max(),
    };
    let mut filter = Feed {
        tenant: "t1".into(),
        after: Some(cursor),
        limit: 51,
        ..Default::default()
    };
    let page = plan(&mut conn, &filter).await;
    assert!(page.contains("activity_feed_tenant_time"), "{page}");
    assert!(
        page.contains("Index Cond") && page.contains("occurred_at"),
        "{page}"
    );
    assert!(
        !page.contains("Sort"),
        "keyset pages come in index order: {page}"
    );
    filter.metadata = Some(json!({"tag": "rare"}));
    let by_metadata = plan(&mut conn, &filter).await;
    assert!(
        by_metadata.contains("activity_feed_metadata"),
        "{by_metadata}"
    );
    let user_filter = Feed {
        tenant: "t1".into(),
        user: Some("u7".into()),
        after: Some(cursor),
        limit: 51,
        ..Default::default()
    };
    let user_page = plan(&mut conn, &user_filter).await;
    assert!(user_page.contains("activity_feed_user_time"), "{user_page}");
    assert!(
        user_page.contains("Index Cond") && !user_page.contains("Sort"),
        "{user_page}"
    );

    // A tenant with thousands of events, analysed: its (tenant, position) index would walk
    // them all, the command's index finds one. Scans are priced out, so the index shows.
    sqlx::raw_sql(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, activity_type, data, occurred_at, received_at) \
         SELECT nextval('events_position_seq'), currval('events_position_seq'), \
                gen_random_uuid(), gen_random_uuid(), 't1', 'u' || (i % 50), \
                'activity_recorded', 'login', '{}', now(), now() \
         FROM generate_series(1, 5000) i; ANALYZE events",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let events = explain(
        &mut conn,
        "SELECT position FROM events WHERE command_id = $1::uuid AND tenant = $2",
        &[json!(uuid::Uuid::new_v4().to_string()), json!("t1")],
    )
    .await;
    assert!(
        events.contains("events_") && events.contains("command_id_idx"),
        "{events}"
    );
    assert!(!events.contains("Seq Scan"), "{events}");
    let dead = explain(
        &mut conn,
        "SELECT reason FROM dead_letters WHERE tenant = $1 AND command_id = $2::uuid",
        &[json!("t1"), json!(uuid::Uuid::new_v4().to_string())],
    )
    .await;
    assert!(dead.contains("dead_letters_command"), "{dead}");
}
