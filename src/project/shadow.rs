//! Rebuilds that never take reads down: the projection is folded from the whole log into a
//! shadow schema of its own while its live tables keep serving and folding, then swapped in
//! by one short transaction, which is all readers ever wait for.

use sqlx::{PgConnection, PgPool};

use super::frontier::Frontier;
use super::tables::{
    LIVE_ANALYTICS, LIVE_STATE, drop_tables, install_fold, lock_projection, set_checkpoint,
};
use super::{ProjectError, Projection};
use crate::db::{db, locks};

/// A projection's shadow copy and how far it has folded the log. It holds the projection's
/// rebuild lock until it is swapped in or dropped, so two rebuilds never share a shadow.
#[derive(Debug)]
pub struct Shadow {
    schema: String,
    position: Frontier,
    /// Holds the rebuild lock; every shadow fold runs on it, so a lost lock fails the fold.
    conn: PgConnection,
    /// The one tenant it holds, for a rebuild of one tenant (see `super::tenant`).
    tenant: Option<String>,
}

impl Shadow {
    /// The schema holding the shadow tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The last position of each shard folded into it.
    pub fn position(&self) -> &Frontier {
        &self.position
    }

    /// The one tenant it holds, if it is a rebuild of one tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Drops it unswapped: releases the rebuild lock at once (rather than when the server
    /// notices the closed connection), so the next rebuild can start.
    pub async fn discard(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.conn)
            .await;
        let _ = sqlx::Connection::close(self.conn).await;
    }

    /// Puts the position back after a fold that was rolled back.
    pub(super) fn set_position(&mut self, position: Frontier) {
        self.position = position;
    }
}

pub(super) async fn exec(
    conn: &mut PgConnection,
    sql: String,
    action: &'static str,
) -> Result<(), ProjectError> {
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await,
        action,
    )?;
    Ok(())
}

/// Folds the shadow up to `upto`, shard by shard, inside the caller's transaction (which
/// may roll back: the caller then puts the position back).
pub(super) async fn fold(
    conn: &mut PgConnection,
    p: &Projection,
    shadow: &mut Shadow,
    upto: &Frontier,
) -> Result<(), ProjectError> {
    let call = p.fold_call(&shadow.schema);
    fold_into(conn, &call, &mut shadow.position, upto).await
}

/// Runs fold `call` from `position` up to `upto`, shard by shard, moving `position`.
async fn fold_into(
    conn: &mut PgConnection,
    call: &str,
    position: &mut Frontier,
    upto: &Frontier,
) -> Result<(), ProjectError> {
    // A rebuild folds every event or fails: one that cannot be upcast stops it, named,
    // instead of being skipped as a live fold skips it.
    db(
        sqlx::query("SELECT set_config('activity.strict_upcast', 'on', true)")
            .execute(&mut *conn)
            .await,
        "make a rebuild's upcasting strict",
    )?;
    for (shard, to) in upto.iter() {
        let from = position.get(shard);
        if to <= from {
            continue;
        }
        db(
            sqlx::query(sqlx::AssertSqlSafe(call.to_owned()))
                .bind(from)
                .bind(to)
                .execute(&mut *conn)
                .await,
            "fold a window into a shadow",
        )?;
        position.set(shard, to);
    }
    Ok(())
}

/// Creates `p`'s tables empty in its shadow schema `rebuild_<name>` and folds the whole log
/// into them in windows of `window` positions, calling `progress(folded, last)`.
pub async fn prepare(
    pool: &PgPool,
    p: &Projection,
    window: i64,
    progress: impl Fn(i64, i64),
) -> Result<Shadow, ProjectError> {
    let mut shadow = create(pool, p, format!("rebuild_{}", p.name), None).await?;
    catch_up(p, &mut shadow, window, &progress).await?;
    Ok(shadow)
}

/// Takes `p`'s rebuild lock and creates its tables and fold, empty, in `schema`; for a
/// rebuild of one tenant, `tenant` is the tenant and the SQL that scopes the schema to it,
/// run in the same transaction.
pub(super) async fn create(
    pool: &PgPool,
    p: &Projection,
    schema: String,
    tenant: Option<(&str, String)>,
) -> Result<Shadow, ProjectError> {
    let mut guard = db(pool.acquire().await, "connect for a rebuild lock")?.detach();
    let free = locks::try_session_named(&mut guard, locks::REBUILD, &p.name, "take a rebuild lock")
        .await?;
    if !free {
        return Err(ProjectError::RebuildBusy(p.name.clone()));
    }
    let position = Frontier::empty(&mut guard).await?;
    let mut shadow = Shadow {
        schema: schema.clone(),
        position,
        conn: guard,
        tenant: tenant.as_ref().map(|(t, _)| (*t).to_owned()),
    };
    let mut tx = db(
        sqlx::Connection::begin(&mut shadow.conn).await,
        "begin a shadow",
    )?;
    lock_projection(&mut tx, p).await?;
    let create = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    exec(&mut tx, create, "create a shadow schema").await?;
    let tables = p.schema_sql(&schema, &schema);
    exec(&mut tx, tables, "create shadow tables").await?;
    install_fold(&mut tx, p, &schema, &schema).await?;
    if let Some((_, extra)) = tenant {
        exec(&mut tx, extra, "scope a shadow to one tenant").await?;
    }
    db(tx.commit().await, "commit a shadow")?;
    Ok(shadow)
}

/// The connection holding the rebuild lock, on which the shadow folds.
pub(super) fn conn(shadow: &mut Shadow) -> &mut PgConnection {
    &mut shadow.conn
}

/// Folds the shadow up to each shard's last visible position, on the connection that holds
/// the rebuild lock: if that session is lost, the fold fails rather than run unprotected.
/// Progress is in positions over every shard.
async fn catch_up(
    p: &Projection,
    shadow: &mut Shadow,
    window: i64,
    progress: &impl Fn(i64, i64),
) -> Result<(), ProjectError> {
    loop {
        let last = Frontier::visible(&mut shadow.conn).await?;
        let (done, total) = (shadow.position.folded(), last.folded());
        // The session says how far it has come: `status` shows the rebuild lock's holder.
        let name = format!(
            "activity-store rebuild {}: folded {done} of {total}",
            p.name
        );
        db(
            sqlx::query("SELECT set_config('application_name', $1, false)")
                .bind(name)
                .execute(&mut shadow.conn)
                .await,
            "name a rebuild's session",
        )?;
        progress(done, total);
        // The next window of each shard behind.
        let mut upto = Frontier::default();
        for (shard, to) in last.iter() {
            let from = shadow.position.get(shard);
            if to > from {
                upto.set(shard, to.min(from.saturating_add(window.max(1))));
            }
        }
        if upto.iter().next().is_none() {
            return Ok(());
        }
        fold_committed(p, shadow, &upto).await?;
    }
}

/// Folds the shadow up to `upto` in a transaction of its own, on the connection that holds
/// the rebuild lock.
pub(super) async fn fold_committed(
    p: &Projection,
    shadow: &mut Shadow,
    upto: &Frontier,
) -> Result<(), ProjectError> {
    let call = p.fold_call(&shadow.schema);
    let mut position = shadow.position.clone();
    let mut tx = db(
        sqlx::Connection::begin(&mut shadow.conn).await,
        "begin a shadow fold",
    )?;
    fold_into(&mut tx, &call, &mut position, upto).await?;
    db(tx.commit().await, "commit a shadow fold")?;
    shadow.position = position;
    Ok(())
}

/// How long the swap's locks may wait for readers before it gives way and tries again.
pub(super) const SWAP_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How many times the swap tries before it gives up (and the rebuild is retried later).
pub(super) const SWAP_ATTEMPTS: u32 = 30;

pub(super) fn lock_not_available(e: &crate::db::DbError) -> bool {
    matches!(e, crate::db::DbError::Database { source, .. }
        if source.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03"))
}

/// Swaps the shadow in, in one transaction: with the projection's checkpoint locked (live
/// folds wait), it folds what the log gained since, drops the live tables, moves the shadow
/// ones into their schemas, reinstalls the live fold and sets the checkpoints. Returns the
/// positions the projection now stands at.
pub async fn swap_in(
    pool: &PgPool,
    p: &Projection,
    shadow: Shadow,
) -> Result<Frontier, ProjectError> {
    swap_in_with(pool, p, shadow, |_, _| {}).await
}

/// `swap_in`, calling `progress(position, last)` while it works and waits.
pub async fn swap_in_with(
    pool: &PgPool,
    p: &Projection,
    mut shadow: Shadow,
    progress: impl Fn(i64, i64),
) -> Result<Frontier, ProjectError> {
    // Most of what arrived while it was built, outside the swap's transaction.
    catch_up(p, &mut shadow, i64::MAX / 4, &progress).await?;
    for table in &p.tables {
        let (_, name) = table.split_once('.').expect("tables are schema-qualified");
        let analyze = format!("ANALYZE {}.{name}", shadow.schema);
        exec(&mut shadow.conn, analyze, "analyze a shadow table").await?;
    }
    // The swap's exclusive locks wait at most SWAP_LOCK_TIMEOUT for readers: a long reader
    // never queues every other read behind the swap. Then it tries again.
    let mut attempt = 1;
    loop {
        match swap_once(pool, p, &mut shadow).await {
            Err(ProjectError::Log(e)) if lock_not_available(&e) && attempt < SWAP_ATTEMPTS => {
                tracing::warn!(projection = %p.name, attempt, "the swap waited too long for readers; trying again");
                metrics::counter!("activity_projection_swap_retries_total", "projection" => p.name.clone()).increment(1);
                let done = shadow.position.folded();
                progress(done, done);
                tokio::time::sleep(SWAP_LOCK_TIMEOUT).await;
                attempt += 1;
            }
            other => break other?,
        }
    }
    // Only the shadow's fold functions are left in it.
    let cleanup = format!("DROP SCHEMA IF EXISTS {} CASCADE", shadow.schema);
    if let Ok(mut conn) = pool.acquire().await {
        let _ = exec(&mut conn, cleanup, "drop a shadow schema").await;
    }
    Ok(shadow.position.clone())
}

/// One try at the swap; on failure the shadow's position is what it was, since the fold
/// the swap made inside its transaction rolled back with it.
async fn swap_once(pool: &PgPool, p: &Projection, shadow: &mut Shadow) -> Result<(), ProjectError> {
    let before = shadow.position.clone();
    let swapped = swap_tx(pool, p, shadow).await;
    if swapped.is_err() {
        shadow.position = before;
    }
    swapped
}

async fn swap_tx(pool: &PgPool, p: &Projection, shadow: &mut Shadow) -> Result<(), ProjectError> {
    let mut tx = db(pool.begin().await, "begin a swap")?;
    let timeout = format!(
        "SET LOCAL lock_timeout = '{}ms'",
        SWAP_LOCK_TIMEOUT.as_millis()
    );
    exec(&mut tx, timeout, "bound the swap's lock waits").await?;
    lock_projection(&mut tx, p).await?;
    // The moved tables must keep the owner the projector folds as: refuse any other role.
    let foreign: Option<String> = db(
        sqlx::query_scalar(
            "SELECT string_agg(c.oid::regclass::text, ', ') FROM pg_class c \
             WHERE c.oid = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t) \
               AND pg_get_userbyid(c.relowner) <> current_user",
        )
        .bind(&p.tables)
        .fetch_one(&mut *tx)
        .await,
        "check who owns a projection's tables",
    )?;
    if let Some(tables) = foreign {
        return Err(ProjectError::Invalid {
            name: p.name.clone(),
            problem: format!("{tables} belong to another role: rebuild as their owner"),
        });
    }
    Frontier::checkpoints(&mut tx, &p.name, true).await?;
    let last = Frontier::visible(&mut tx).await?;
    fold(&mut tx, p, shadow, &last).await?;
    drop_tables(&mut tx, p).await?;
    for table in &p.tables {
        let (schema, name) = table.split_once('.').expect("tables are schema-qualified");
        let to = format!("ALTER TABLE {}.{name} SET SCHEMA {schema}", shadow.schema);
        exec(&mut tx, to, "move a shadow table into place").await?;
    }
    install_fold(&mut tx, p, LIVE_ANALYTICS, LIVE_STATE).await?;
    set_checkpoint(&mut tx, p, &shadow.position).await?;
    Ok(db(tx.commit().await, "commit a swap")?)
}
