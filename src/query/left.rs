//! What an erasure checks after the projectors folded it: rows of the user still in the read
//! models (of every tenant the pool's login may see: the store's owner reads this).

use sqlx::PgPool;

use crate::db::{DbError, db};

/// The user's rows left in the read models installed (0 when the fold did its work).
pub async fn rows_left(pool: &PgPool, tenant: &str, user: &str, upto: i64) -> Result<i64, DbError> {
    let mut left = 0;
    for (table, by_position) in [
        ("analytics.activity_feed", true),
        ("analytics.user_summary", true),
        ("projection_state.daily_activity_users", false),
    ] {
        let installed: bool = db(
            sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(table)
                .fetch_one(pool)
                .await,
            "look for a read model",
        )?;
        if !installed {
            continue;
        }
        let bound = if by_position {
            " AND position <= $3"
        } else {
            " AND $3 = $3"
        };
        let n: i64 = db(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant = $1 AND user_id = $2{bound}"
            )))
            .bind(tenant)
            .bind(user)
            .bind(upto)
            .fetch_one(pool)
            .await,
            "check the read models",
        )?;
        left += n;
    }
    Ok(left)
}
