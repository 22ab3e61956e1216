//! The reversible migrations of `migrations/`, embedded in the binary.

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use crate::db::{DbError, db};

/// Every migration, up and down, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration.
pub async fn up(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = acquire(pool).await?;
    let run = MIGRATOR.run(&mut *conn).await;
    settle(conn, run)
}

async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, DbError> {
    db(pool.acquire().await, "acquire a connection to migrate")
}

/// The migrator holds a session advisory lock while it runs and does not release it when a
/// migration fails (a down refused by its guard, say): the session that ran a failed
/// migration is closed rather than pooled, so its lock goes with it and the next run, in the
/// same process, does not wait for ever.
fn settle(
    mut conn: PoolConnection<Postgres>,
    run: Result<(), sqlx::migrate::MigrateError>,
) -> Result<(), DbError> {
    if run.is_err() {
        conn.close_on_drop();
    }
    run.map_err(DbError::Migrate)
}

/// Reverts the last `steps` applied migrations; returns the versions reverted, newest first.
pub async fn down(pool: &PgPool, steps: usize) -> Result<Vec<i64>, DbError> {
    let mut applied: Vec<i64> = status(pool)
        .await?
        .into_iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .collect();
    applied.sort_unstable();
    let keep = applied.len().saturating_sub(steps);
    let target = if keep == 0 { 0 } else { applied[keep - 1] };
    let mut conn = acquire(pool).await?;
    let run = MIGRATOR.undo(&mut *conn, target).await;
    settle(conn, run)?;
    Ok(applied[keep..].iter().rev().copied().collect())
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Its version, the number in its file name.
    pub version: i64,
    /// Its description, the rest of its file name.
    pub description: String,
    /// Whether the database has it.
    pub applied: bool,
}

/// Every known migration, oldest first, with whether it is applied.
pub async fn status(pool: &PgPool) -> Result<Vec<MigrationStatus>, DbError> {
    let has_table: bool = db(
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await,
        "read migration status",
    )?;
    let applied: Vec<i64> = if has_table {
        db(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await,
            "read migration status",
        )?
    } else {
        Vec::new()
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect())
}
