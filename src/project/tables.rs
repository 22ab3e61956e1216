//! A projection's live tables and its row in `projection_checkpoints`: the steps that
//! installing, folding and rebuilding share.

use sqlx::{Postgres, Transaction};

use super::frontier::Frontier;
use super::{ProjectError, Projection};
use crate::db::{db, locks};

/// Where live projections keep their read tables and their private state.
pub(super) const LIVE_ANALYTICS: &str = "analytics";
pub(super) const LIVE_STATE: &str = "projection_state";

/// Takes `p`'s install lock until the transaction ends.
pub(super) async fn lock_projection(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    locks::xact_named(
        tx,
        locks::INSTALL,
        &p.name,
        "take a projection's install lock",
    )
    .await?;
    Ok(())
}

pub(super) async fn installed_version(
    conn: &mut sqlx::PgConnection,
    p: &Projection,
) -> Result<Option<i32>, ProjectError> {
    Ok(db(
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE projection = $1")
            .bind(&p.name)
            .fetch_optional(conn)
            .await,
        "read a projection's version",
    )?)
}

/// Drops `p`'s live tables.
pub(super) async fn drop_tables(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    for table in &p.tables {
        // Names were checked against [a-z0-9_] when the registry was read.
        let drop = format!("DROP TABLE IF EXISTS {table} CASCADE");
        db(
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut **tx)
                .await,
            "drop a projection's table",
        )?;
    }
    Ok(())
}

/// Creates (or replaces) `p`'s fold functions, placed in `analytics` and `state`.
pub(super) async fn install_fold(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    analytics: &str,
    state: &str,
) -> Result<(), ProjectError> {
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(p.fold_sql(analytics, state)))
            .execute(&mut **tx)
            .await,
        "create a projection's fold",
    )?;
    Ok(())
}

/// Records `p` as installed at its version and folded up to `position` (every shard it
/// does not name: nothing folded).
pub(super) async fn set_checkpoint(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    position: &Frontier,
) -> Result<(), ProjectError> {
    let (shards, positions) = position.columns();
    db(
        sqlx::query(
            "WITH c AS ( \
                 INSERT INTO projection_checkpoints (projection, version) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO UPDATE \
                 SET version = EXCLUDED.version, updated_at = now(), \
                     epoch = projection_checkpoints.epoch + 1 \
                 RETURNING projection) \
             INSERT INTO shard_checkpoints AS s (projection, shard, position) \
             SELECT c.projection, l.shard, coalesce(k.position, l.shard::bigint << 48) \
             FROM c CROSS JOIN log_shards l \
             LEFT JOIN unnest($3::int4[], $4::int8[]) AS k(shard, position) ON k.shard = l.shard \
             ON CONFLICT (projection, shard) DO UPDATE \
             SET position = EXCLUDED.position, updated_at = now()",
        )
        .bind(&p.name)
        .bind(p.version)
        .bind(shards)
        .bind(positions)
        .execute(&mut **tx)
        .await,
        "set a projection's checkpoint",
    )?;
    Ok(())
}
