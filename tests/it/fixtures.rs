//! Events and raw rows for tests.

use activity_store::model::{EventType, Lineage, NewEvent};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// An `activity_recorded` event with fresh ids.
pub fn activity(tenant: &str, user: &str, at: DateTime<Utc>, metadata: Value) -> NewEvent {
    let Value::Object(data) = metadata else {
        panic!("metadata must be an object")
    };
    NewEvent {
        event_id: Uuid::now_v7(),
        command_id: Uuid::new_v4(),
        tenant: tenant.into(),
        user_id: Some(user.into()),
        event_type: EventType::ActivityRecorded,
        activity_type: Some("login".into()),
        data,
        occurred_at: at,
        received_at: Utc::now(),
        lineage: Lineage {
            subject: Some(format!("activity.commands.{tenant}")),
            stream_seq: Some(1),
            delivery_count: Some(1),
        },
    }
}

/// A plain activity at a fixed time.
pub fn login(tenant: &str, user: &str) -> NewEvent {
    activity(tenant, user, jan(15), json!({"ip": "10.0.0.1"}))
}

/// 2025-01-DAY 10:30 UTC.
pub fn jan(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, day, 10, 30, 0).unwrap()
}

/// `n` activities for `users` users of one tenant, spread over January 2025, metadata ~200 bytes.
pub fn many(tenant: &str, users: usize, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let at = jan(1) + chrono::Duration::seconds((i as i64 * 97) % (28 * 86_400));
            let meta = json!({"path": format!("/items/{i}"), "ua": "Mozilla/5.0 (X11; Linux x86_64)",
                "ref": "https://example.com/landing?campaign=winter", "n": i, "tags": ["a", "b"]});
            activity(tenant, &format!("user-{}", i % users), at, meta)
        })
        .collect()
}

/// Inserts one row straight into `events` with SQL, overriding columns: for constraint tests.
pub async fn insert_raw(
    pool: &sqlx::PgPool,
    overrides: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let mut cols: Map<String, Value> = Map::new();
    for (k, v) in [
        // The next position of the tenant's shard, and its next tenant position.
        (
            "position",
            "nextval((SELECT seq FROM log_shards WHERE shard = tenant_shard({tenant})))",
        ),
        (
            "tenant_position",
            "coalesce((SELECT head FROM tenant_heads WHERE tenant = {tenant}), 0) + 1",
        ),
        ("event_id", "gen_random_uuid()"),
        ("command_id", "gen_random_uuid()"),
        ("tenant", "'acme'"),
        ("user_id", "'u1'"),
        ("event_type", "'activity_recorded'"),
        ("activity_type", "'login'"),
        ("data", "'{}'"),
        ("occurred_at", "'2025-01-15T10:30:00Z'"),
        ("received_at", "now()"),
    ] {
        cols.insert(k.into(), Value::String(v.into()));
    }
    for (k, v) in overrides {
        cols.insert((*k).into(), Value::String((*v).into()));
    }
    // A slug the overrides give (a quoted literal), else acme's shard.
    let tenant = match cols["tenant"].as_str().unwrap() {
        t if t.starts_with('\'') => t.to_owned(),
        _ => "'acme'".to_owned(),
    };
    let names: Vec<&str> = cols.keys().map(String::as_str).collect();
    let values: Vec<String> = cols
        .values()
        .map(|v| v.as_str().unwrap().replace("{tenant}", &tenant))
        .collect();
    let sql = format!(
        "INSERT INTO events ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .map(|_| ())
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(r: Result<impl std::fmt::Debug, sqlx::Error>) -> String {
    let e = r.expect_err("the statement should have been refused");
    e.as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()))
        .unwrap_or_else(|| panic!("not a database error: {e}"))
}

/// A JSON value with nesting, unicode and numbers of every kind.
pub fn tricky_metadata() -> Value {
    json!({
        "nested": {"deeper": {"list": [1, 2.5, -3, null, true, {"k": "v"}]}},
        "unicode": "naïve café — 日本語 🎉 \u{2028}",
        "escapes": "quote \" backslash \\ tab \t newline \n",
        "big": 9007199254740993u64,
        "neg": -12345678901234i64,
        "float": 0.1,
        "empty_obj": {}, "empty_list": [],
        "emoji_key_🔑": "x"
    })
}

/// A new login role granted `role` (activity_writer or activity_reader), with a pool as it.
pub async fn login_in(db: &crate::support::TestDb, role: &str) -> (String, PgPool) {
    let user = crate::support::unique_name("login");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'pw' IN ROLE {role}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.options_as(&user, "pw"))
        .await
        .unwrap();
    (user, pool)
}

/// 40,000 activities straight into `analytics.activity_feed` (two tenants `t0` and `t1`,
/// 2,000 users, one in 1,000 tagged `rare`, metadata of realistic size), analysed: what the
/// EXPLAIN tests of the feed's indexes plan against.
pub async fn analysed_feed(pool: &PgPool) {
    // PostgreSQL's estimate for a rare `@>` key swings between 0.01% and 4% with the
    // ANALYZE sample; at any of them the GIN index must win.
    sqlx::query(
        "INSERT INTO analytics.activity_feed \
         SELECT 't' || (i % 2), 'u' || (i % 2000), gen_random_uuid(), 'login', \
                now() - i * interval '1 minute', \
                jsonb_build_object('n', i, 'tag', CASE WHEN i % 1000 = 0 THEN 'rare' ELSE 'common' END, \
                                   'ua', repeat('x', 800)), i \
         FROM generate_series(1, 40000) i",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE analytics.activity_feed")
        .execute(pool)
        .await
        .unwrap();
}

/// How many (projection, shard) checkpoints have events of their shard still to fold.
pub const BEHIND: &str = "SELECT count(*) FROM shard_checkpoints c WHERE EXISTS ( \
     SELECT 1 FROM events e \
     WHERE e.position > c.position AND e.position < (c.shard::bigint + 1) << 48)";

/// The append lock of `tenant`'s shard (recorded, or where its first event will go).
pub async fn append_lock_of(pool: &sqlx::PgPool, tenant: &str) -> i64 {
    let shard: i32 = sqlx::query_scalar("SELECT tenant_shard($1)")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap();
    activity_store::db::locks::append_shard(shard)
}

/// Reverts every applied migration from `version` on, the newest first: a store as it was
/// before that migration, however many came after it.
pub async fn down_to_before(
    pool: &sqlx::PgPool,
    version: i64,
) -> Result<Vec<i64>, activity_store::db::DbError> {
    let applied = activity_store::log::migrate::status(pool)
        .await
        .unwrap()
        .iter()
        .filter(|m| m.applied && m.version >= version)
        .count();
    activity_store::log::migrate::down(pool, applied).await
}
