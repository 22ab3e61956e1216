//! Rebuilding one tenant: its rows are refolded from its own log into a shadow schema while
//! every tenant, this one included, keeps serving from the live tables; then, in one short
//! transaction, the tenant's live rows are replaced by the shadow's. Nothing else moves:
//! the checkpoint stays, and other tenants' rows are not touched.
//!
//! The shadow schema holds the projection's tables and fold, and a view `events` of the
//! tenant's events only; the fold runs with that schema first on its search path, so the
//! projection's own SQL folds one tenant unchanged, through the (tenant, position) index.

use sqlx::PgPool;

use super::frontier::Frontier;
use super::shadow::{self, SWAP_ATTEMPTS, SWAP_LOCK_TIMEOUT, Shadow, exec, lock_not_available};
use super::tables::lock_projection;
use super::{ProjectError, Projection};
use crate::db::db;

/// The most of the tenant's events one shadow transaction folds.
pub const TENANT_WINDOW: i64 = 10_000;

/// Creates `p`'s shadow for `tenant` and folds the tenant's log into it up to the live
/// checkpoint, calling `progress(events folded, events)`.
pub async fn prepare(
    pool: &PgPool,
    p: &Projection,
    tenant: &str,
    progress: impl Fn(i64, i64),
) -> Result<Shadow, ProjectError> {
    crate::model::fields::tenant_slug("tenant", tenant).map_err(|r| ProjectError::Invalid {
        name: p.name.clone(),
        problem: format!(
            "cannot rebuild tenant `{}`: {}",
            crate::model::escape_text(tenant),
            r.message
        ),
    })?;
    let (installed, shard): (Option<i32>, Option<i32>) = db(
        sqlx::query_as(
            "SELECT (SELECT version FROM projection_checkpoints WHERE projection = $1), \
                    (SELECT shard FROM tenant_heads WHERE tenant = $2)",
        )
        .bind(&p.name)
        .bind(tenant)
        .fetch_one(pool)
        .await,
        "check a tenant's rebuild",
    )?;
    let refuse = |problem: String| ProjectError::Invalid {
        name: p.name.clone(),
        problem,
    };
    if installed != Some(p.version) {
        return Err(refuse(format!(
            "version {} is not the one installed ({installed:?}): let the whole rebuild to it \
             finish first",
            p.version
        )));
    }
    let Some(shard) = shard else {
        return Err(refuse(format!("the log holds no tenant `{tenant}`")));
    };
    let schema = format!("rebuild_{}_tenant", p.name);
    // The slug is [a-z0-9_-]: safe between quotes.
    let scope = format!(
        "CREATE VIEW {schema}.events AS SELECT * FROM public.events WHERE tenant = '{tenant}'; \
         ALTER FUNCTION {schema}.fold_{name}(bigint, bigint) SET search_path = {schema}, public",
        name = p.name
    );
    let mut shadow = shadow::create(pool, p, schema, Some((tenant, scope))).await?;
    catch_up(pool, p, &mut shadow, shard, &progress).await?;
    Ok(shadow)
}

/// Folds the shadow up to the live checkpoint of the tenant's shard, [`TENANT_WINDOW`] of
/// the tenant's events a transaction, naming its session with how far it has come (`status`
/// shows it).
async fn catch_up(
    pool: &PgPool,
    p: &Projection,
    shadow: &mut Shadow,
    shard: i32,
    progress: &impl Fn(i64, i64),
) -> Result<(), ProjectError> {
    let tenant = shadow.tenant().unwrap_or_default().to_owned();
    // Events counted once: the tenant's up to the checkpoint, then what each new checkpoint
    // adds.
    let (mut done, mut total, mut counted) = (0, 0, shadow.position().get(shard));
    loop {
        let (live, more): (i64, i64) = db(
            sqlx::query_as(
                "SELECT c.position, (SELECT count(*) FROM events e \
                 WHERE e.tenant = $2 AND e.position > $3 AND e.position <= c.position) \
                 FROM shard_checkpoints c WHERE c.projection = $1 AND c.shard = $4",
            )
            .bind(&p.name)
            .bind(&tenant)
            .bind(counted)
            .bind(shard)
            .fetch_one(pool)
            .await,
            "read how much of a tenant is left to rebuild",
        )?;
        total += more;
        counted = counted.max(live);
        let left = total - done;
        let name = format!(
            "activity-store rebuild {} for {tenant}: folded {done} of {total} events",
            p.name
        );
        let from = shadow.position().get(shard);
        let conn = shadow::conn(shadow);
        db(
            sqlx::query("SELECT set_config('application_name', $1, false)")
                .bind(name)
                .execute(&mut *conn)
                .await,
            "name a rebuild's session",
        )?;
        progress(done, total);
        if left == 0 {
            let at = shadow.position().max(&Frontier::single(shard, live));
            shadow.set_position(at);
            return Ok(());
        }
        let (upto, n): (Option<i64>, i64) = db(
            sqlx::query_as(
                "SELECT max(position), count(*) FROM (SELECT position FROM events \
                 WHERE tenant = $1 AND position > $2 AND position <= $3 \
                 ORDER BY position LIMIT $4) w",
            )
            .bind(&tenant)
            .bind(from)
            .bind(live)
            .bind(TENANT_WINDOW)
            .fetch_one(&mut *conn)
            .await,
            "find a tenant's next window",
        )?;
        let upto = Frontier::single(shard, upto.unwrap_or(live));
        shadow::fold_committed(p, shadow, &upto).await?;
        done += n;
    }
}

/// Replaces the tenant's live rows with the shadow's, in one transaction: with the
/// checkpoint locked (live folds wait), the shadow is folded up to it, the tenant's rows are
/// deleted from each live table and the shadow's inserted. A cached projection's epoch is
/// bumped, so no entry read before the swap is served after it. Returns the tenant's
/// position.
pub async fn swap_in(
    pool: &PgPool,
    p: &Projection,
    mut shadow: Shadow,
) -> Result<i64, ProjectError> {
    let mut attempt = 1;
    let position = loop {
        let before = shadow.position().clone();
        match swap_tx(pool, p, &mut shadow).await {
            Err(ProjectError::Log(e)) if lock_not_available(&e) && attempt < SWAP_ATTEMPTS => {
                shadow.set_position(before);
                tracing::warn!(projection = %p.name, attempt, "the tenant's swap waited too long for readers; trying again");
                tokio::time::sleep(SWAP_LOCK_TIMEOUT).await;
                attempt += 1;
            }
            Err(e) => {
                shadow.set_position(before);
                return Err(e);
            }
            Ok(position) => break position,
        }
    };
    let cleanup = format!("DROP SCHEMA IF EXISTS {} CASCADE", shadow.schema());
    if let Ok(mut conn) = pool.acquire().await {
        let _ = exec(&mut conn, cleanup, "drop a shadow schema").await;
    }
    Ok(position)
}

async fn swap_tx(pool: &PgPool, p: &Projection, shadow: &mut Shadow) -> Result<i64, ProjectError> {
    let tenant = shadow.tenant().unwrap_or_default().to_owned();
    let mut tx = db(pool.begin().await, "begin a tenant's swap")?;
    let timeout = format!(
        "SET LOCAL lock_timeout = '{}ms'",
        SWAP_LOCK_TIMEOUT.as_millis()
    );
    exec(&mut tx, timeout, "bound the swap's lock waits").await?;
    lock_projection(&mut tx, p).await?;
    let live = Frontier::checkpoints(&mut tx, &p.name, true).await?;
    shadow::fold(&mut tx, p, shadow, &live).await?;
    for table in &p.tables {
        let (_, name) = table.split_once('.').expect("tables are schema-qualified");
        let replace = format!(
            "DELETE FROM {table} WHERE tenant = '{tenant}'; \
             INSERT INTO {table} SELECT * FROM {}.{name}",
            shadow.schema()
        );
        exec(&mut tx, replace, "replace a tenant's rows").await?;
    }
    if p.cache.is_some() {
        db(
            sqlx::query(
                "UPDATE projection_checkpoints SET epoch = epoch + 1 WHERE projection = $1",
            )
            .bind(&p.name)
            .execute(&mut *tx)
            .await,
            "bump a projection's epoch",
        )?;
    }
    let position: Option<i64> = db(
        sqlx::query_scalar("SELECT tenant_projection_position($1, $2)")
            .bind(&p.name)
            .bind(&tenant)
            .fetch_one(&mut *tx)
            .await,
        "read the tenant's position",
    )?;
    db(tx.commit().await, "commit a tenant's swap")?;
    Ok(position.unwrap_or(0))
}
