//! The three reads, each of one tenant: in a transaction the caller scoped (the HTTP API's
//! token session), or in one opened here as `activity_reader` with the tenant set, so
//! row-level security applies even to a privileged connection (the CLI).

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::rows::{DailyRow, FeedRow, UserRow};
use super::sql::{DAILY, Daily, Feed, USER_SUMMARY, USER_SUMMARY_AT};
use crate::db::{DbError, db};

/// A transaction as `activity_reader`, scoped to `tenant` by row-level security.
pub async fn scoped<'a>(
    pool: &'a PgPool,
    tenant: &str,
) -> Result<Transaction<'a, Postgres>, DbError> {
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

/// A feed's rows on `conn`, newest first.
pub async fn feed_in(conn: &mut PgConnection, feed: &Feed) -> Result<Vec<FeedRow>, DbError> {
    db(
        feed.query("").build_query_as().fetch_all(conn).await,
        "read a feed",
    )
}

/// A tenant's days on `conn`, oldest first.
pub async fn daily_in(conn: &mut PgConnection, daily: &Daily) -> Result<Vec<DailyRow>, DbError> {
    db(
        sqlx::query_as(DAILY)
            .bind(&daily.tenant)
            .bind(daily.from)
            .bind(daily.to)
            .bind(&daily.activity_type)
            .bind(daily.limit)
            .fetch_all(conn)
            .await,
        "read daily activity",
    )
}

/// One user's summary on `conn`, if the store knows the user.
pub async fn user_in(
    conn: &mut PgConnection,
    tenant: &str,
    user: &str,
) -> Result<Option<UserRow>, DbError> {
    db(
        sqlx::query_as(USER_SUMMARY)
            .bind(tenant)
            .bind(user)
            .fetch_optional(conn)
            .await,
        "read a user summary",
    )
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
    let filter = Feed {
        tenant: tenant.to_owned(),
        user: Some(user.to_owned()),
        metadata: metadata.cloned(),
        limit,
        ..Feed::default()
    };
    feed_in(&mut tx, &filter).await
}

/// A tenant's days, oldest first, between `from` and `to` inclusive when given.
pub async fn daily(
    pool: &PgPool,
    tenant: &str,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Result<Vec<DailyRow>, DbError> {
    let mut tx = scoped(pool, tenant).await?;
    let filter = Daily {
        tenant: tenant.to_owned(),
        from,
        to,
        ..Daily::default()
    };
    daily_in(&mut tx, &filter).await
}

/// One user's summary from the table, if the store knows the user.
pub async fn user(pool: &PgPool, tenant: &str, user: &str) -> Result<Option<UserRow>, DbError> {
    let mut tx = scoped(pool, tenant).await?;
    user_in(&mut tx, tenant, user).await
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
        sqlx::query_as(USER_SUMMARY_AT)
            .bind(tenant)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await,
        "read a user summary",
    )?;
    Ok(read.map(|r| (r.row, r.as_of, i64::from(r.epoch))))
}
