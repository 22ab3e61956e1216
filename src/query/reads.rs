//! The three reads readers have; every one takes a tenant.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::db::{DbError, db};

/// One activity of a user's feed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FeedRow {
    pub tenant: String,
    pub user_id: String,
    pub event_id: uuid::Uuid,
    pub activity_type: String,
    pub occurred_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
}

/// One tenant's activity of one type on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DailyRow {
    pub tenant: String,
    pub day: NaiveDate,
    pub activity_type: String,
    pub events: i64,
    pub users: i64,
}

/// One user's summary, and the log position it reflects.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct UserRow {
    pub tenant: String,
    pub user_id: String,
    pub name: Option<String>,
    pub email: String,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub events: i64,
    pub last_activity_type: Option<String>,
    pub last_activity_position: Option<i64>,
    pub position: i64,
}

/// A user's feed, newest first (ties: by event id, descending: the HTTP API's page order).
pub const FEED_SQL: &str = "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata \
     FROM analytics.activity_feed WHERE tenant = $1 AND user_id = $2 \
     ORDER BY occurred_at DESC, event_id DESC LIMIT $3";

/// A user's feed, only the activities whose metadata contains `$4`.
pub const FEED_BY_METADATA_SQL: &str = "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata \
     FROM analytics.activity_feed WHERE tenant = $1 AND user_id = $2 AND metadata @> $4 \
     ORDER BY occurred_at DESC, event_id DESC LIMIT $3";

/// A transaction as `activity_reader`, scoped to `tenant` by row-level security.
async fn scoped<'a>(pool: &'a PgPool, tenant: &str) -> Result<Transaction<'a, Postgres>, DbError> {
    let mut tx = db(pool.begin().await, "begin a read")?;
    db(
        sqlx::query("SET LOCAL ROLE activity_reader")
            .execute(&mut *tx)
            .await,
        "read as activity_reader",
    )?;
    db(
        sqlx::query("SELECT set_config('activity.tenant', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await,
        "set the reader's tenant",
    )?;
    Ok(tx)
}

/// A user's latest activities, optionally only those whose metadata contains `metadata`.
pub async fn feed(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    limit: i64,
    metadata: Option<&serde_json::Value>,
) -> Result<Vec<FeedRow>, DbError> {
    let mut tx = scoped(pool, tenant).await?;
    let query = match metadata {
        None => sqlx::query_as(FEED_SQL),
        Some(_) => sqlx::query_as(FEED_BY_METADATA_SQL),
    };
    let mut query = query.bind(tenant).bind(user).bind(limit.max(0));
    if let Some(m) = metadata {
        query = query.bind(sqlx::types::Json(m));
    }
    db(query.fetch_all(&mut *tx).await, "read a feed")
}

/// A tenant's days, oldest first, between `from` and `to` inclusive when given.
pub async fn daily(
    pool: &PgPool,
    tenant: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<DailyRow>, DbError> {
    let mut tx = scoped(pool, tenant).await?;
    db(
        sqlx::query_as(
            "SELECT tenant, day, activity_type, events, users FROM analytics.daily_activity \
             WHERE tenant = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) \
             ORDER BY day, activity_type",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await,
        "read daily activity",
    )
}

/// One user's summary from the table, if the store knows the user.
pub async fn user(pool: &PgPool, tenant: &str, user: &str) -> Result<Option<UserRow>, DbError> {
    Ok(user_at(pool, tenant, user).await?.map(|(row, _, _)| row))
}

/// One user's summary with the projection's checkpoint and epoch it reflects, read in one
/// statement (one snapshot): what a cache fill needs to order itself against the projector's
/// writes and against a rebuild's swap.
pub async fn user_at(
    pool: &PgPool,
    tenant: &str,
    user: &str,
) -> Result<Option<(UserRow, i64, i64)>, DbError> {
    #[derive(sqlx::FromRow)]
    struct Read {
        #[sqlx(flatten)]
        row: UserRow,
        as_of: i64,
        epoch: i32,
    }
    let mut tx = scoped(pool, tenant).await?;
    let read: Option<Read> = db(
        sqlx::query_as(
            "SELECT tenant, user_id, name, email, first_seen, last_seen, events, last_activity_type, \
             last_activity_position, position, analytics.projection_position('user_summary') AS as_of, \
             analytics.projection_epoch('user_summary') AS epoch \
             FROM analytics.user_summary WHERE tenant = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await,
        "read a user summary",
    )?;
    Ok(read.map(|r| (r.row, r.as_of, i64::from(r.epoch))))
}
