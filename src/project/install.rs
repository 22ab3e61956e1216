//! Installing a projection: its tables and fold created when missing, an older version
//! rebuilt beside the live one and swapped in, or the tables dropped and refolded.

use sqlx::{PgPool, Postgres, Transaction};

use super::frontier::Frontier;
use super::tables::{
    LIVE_ANALYTICS, LIVE_STATE, drop_tables, install_fold, installed_version, lock_projection,
    set_checkpoint,
};
use super::{ProjectError, Projection};
use crate::db::db;

/// Positions folded per transaction while a new version is built at start.
const REBUILD_WINDOW: i64 = 50_000;

/// What `install` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The projection was already at this version.
    Current,
    /// It was missing and was created empty, at checkpoint 0.
    Fresh,
    /// An older version is installed: it keeps serving reads until `rebuild_to_current`
    /// builds this one beside it and swaps it in.
    Outdated {
        /// The version installed.
        from: i32,
    },
}

/// Creates `p`'s tables and fold if they are missing; reports an older installed version
/// (rebuilt later, in the background, by `rebuild_to_current`); refuses a newer one.
pub async fn install(pool: &PgPool, p: &Projection) -> Result<Installed, ProjectError> {
    let mut tx = db(pool.begin().await, "begin a projection install")?;
    lock_projection(&mut tx, p).await?;
    let installed = installed_version(&mut tx, p).await?;
    if installed == Some(p.version) {
        return Ok(Installed::Current);
    }
    if let Some(newer) = installed.filter(|v| *v > p.version) {
        return Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!(
                "version {newer} is installed, newer than this binary's {}: run the newer binary",
                p.version
            ),
        });
    }
    match installed {
        None => {
            reinstall_in(&mut tx, p).await?;
            db(tx.commit().await, "commit a projection install")?;
            Ok(Installed::Fresh)
        }
        Some(from) => Ok(Installed::Outdated { from }),
    }
}

/// Builds this version of `p` beside the installed older one (which keeps serving reads) and
/// swaps it in, unless another process already has. Returns whether it rebuilt.
pub async fn rebuild_to_current(
    pool: &PgPool,
    p: &Projection,
    progress: impl Fn(i64, i64),
) -> Result<bool, ProjectError> {
    let mut conn = db(pool.acquire().await, "connect to check a version")?;
    let installed = installed_version(&mut conn, p).await?;
    drop(conn);
    match installed {
        Some(v) if v == p.version => Ok(false),
        Some(v) if v > p.version => Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!("version {v} was installed meanwhile, newer than this binary's"),
        }),
        old => {
            tracing::info!(projection = %p.name, from = ?old, to = p.version, "new version: rebuilding beside the old one");
            let shadow = super::shadow::prepare(pool, p, REBUILD_WINDOW, &progress).await?;
            super::shadow::swap_in_with(pool, p, shadow, &progress).await?;
            Ok(true)
        }
    }
}

/// Drops `p`'s tables and creates them empty at checkpoint 0: the next folds rebuild it
/// from the whole log.
pub async fn reinstall(pool: &PgPool, p: &Projection) -> Result<(), ProjectError> {
    let mut tx = db(pool.begin().await, "begin a projection rebuild")?;
    lock_projection(&mut tx, p).await?;
    reinstall_in(&mut tx, p).await?;
    db(tx.commit().await, "commit a projection rebuild")?;
    Ok(())
}

async fn reinstall_in(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
) -> Result<(), ProjectError> {
    drop_tables(tx, p).await?;
    let schema = p.schema_sql(LIVE_ANALYTICS, LIVE_STATE);
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(&mut **tx)
            .await,
        "create a projection's tables",
    )?;
    install_fold(tx, p, LIVE_ANALYTICS, LIVE_STATE).await?;
    set_checkpoint(tx, p, &Frontier::default()).await
}
