//! `forget`: erasure that reaches every copy. It publishes `forget_user` (so the registry,
//! the read models and the cache forget the user the way every command is applied), waits
//! until the log holds it and every projection has folded past it, then scrubs what the fold
//! cannot:
//! - the user's events in the log, through `erase_user_events` (the log's one sanctioned
//!   rewrite), in bounded batches that never block appends; and months detached from the
//!   log but still in the database;
//! - the stream: ingest is let past what it holds, then every committed message is purged,
//!   and any message still holding the user is named in the receipt;
//! - dead letters whose bytes, message, field or subject name the user by meaning
//!   ([`Personal`]), however the JSON spelled it;
//! - the cache key, every version of it, with its history.
//!
//! The erasure keeps a digest of the tenant and user, so an archive attached later is
//! scrubbed before it is visible; the receipt names the archives written before it.

mod dead_letters;
mod stream;
mod wait;

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::{DbError, db};
use crate::log::archive;
use crate::model::Personal;

/// Events scrubbed per transaction.
const ERASE_BATCH: i32 = 5_000;

/// Where the erasure looks.
#[derive(Debug, Clone)]
pub struct EraseConfig {
    /// Commands go to `<subject_prefix>.<tenant>`.
    pub subject_prefix: String,
    /// The ingest stream.
    pub stream: String,
    /// Put before every cache bucket's name.
    pub bucket_prefix: String,
    /// How long to wait for ingest and the projectors.
    pub wait: Duration,
}

/// What an erasure scrubbed, as the database keeps it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Receipt {
    /// The erasure's id.
    pub id: i64,
    /// The tenant.
    pub tenant: String,
    /// What the user's id became in the log.
    pub pseudonym: String,
    /// The log position of the user_forgotten event.
    pub forgotten_at: i64,
    /// When it began.
    pub requested_at: DateTime<Utc>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Events of the user scrubbed in the log.
    pub log_events: i64,
    /// Events scrubbed in months detached from the log (still in the database).
    pub detached_events: i64,
    /// Dead letters scrubbed.
    pub dead_letters: i64,
    /// Committed commands removed from the stream.
    pub stream_messages: i64,
    /// Stream sequences that still hold the user: not removed, never counted as done.
    pub stream_left: Vec<i64>,
    /// Cache entries purged.
    pub cache_entries: i64,
    /// Rows of the user's left in the read models after the fold (0 when it worked).
    pub read_model_rows: i64,
    /// Archives written before the erasure that may hold the tenant's events: scrubbed when
    /// attached, or rewritten now by `partitions rescrub`.
    pub archives: Vec<String>,
}

/// What can stop an erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database.
    #[error(transparent)]
    Log(#[from] DbError),
    /// NATS.
    #[error("NATS: {0}")]
    Nats(String),
    /// The store refused the forget_user command.
    #[error("forget_user was refused ({reason}): {message}")]
    Refused {
        /// The reason code.
        reason: String,
        /// Why.
        message: String,
    },
    /// Ingest or the projectors did not get there in time.
    #[error("{0}; the erasure can be run again once they have")]
    Timeout(String),
}

/// Erases `user` of `tenant` everywhere, calling `progress(events scrubbed)` as it goes.
pub async fn forget(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
    user: &str,
    progress: impl Fn(i64),
) -> Result<Receipt, EraseError> {
    // With several ingest partitions, the tenant's commands are in its partition's stream
    // (the server routes the forget_user published below there too).
    let partitions = crate::ingest::partitions::count(pool).await?;
    let (stream, _) = crate::ingest::partitions::names(
        &config.stream,
        "",
        crate::ingest::partitions::of(tenant, partitions),
        partitions,
    );
    let config = &EraseConfig {
        stream,
        ..config.clone()
    };
    let forgotten_at = wait::forgotten(pool, js, config, tenant, user).await?;
    wait::folded_past(pool, config, forgotten_at).await?;
    let personal = Personal::new(personal_values(pool, tenant, user, forgotten_at).await?);
    let (id, pseudonym) = record(pool, tenant, user, forgotten_at).await?;
    // The copies outside the log first, while the log still holds the values to look for:
    // a run that stops anywhere can be run again and finishes. The stream first: ingest is
    // let past what it holds, so a command for the user that arrived meanwhile is decided
    // (and, if refused, scrubbed below) before the purge.
    let stream = stream::scrub(pool, js, config, &personal).await?;
    let dead = dead_letters::scrub(pool, tenant, &personal).await?;
    let cache_entries = purge_cache(pool, js, config, tenant, user).await?;
    scrub_log(pool, &pseudonym, user, progress).await?;
    let done = Done {
        dead_letters: dead,
        stream_messages: stream.purged,
        stream_left: stream.left,
        cache_entries,
        read_model_rows: crate::query::rows_left(pool, tenant, user, forgotten_at).await?,
        detached_events: archive::scrub_detached(pool).await?,
        archives: archive::holding(pool, tenant, forgotten_at, id).await?,
    };
    complete(pool, id, &done).await
}

/// The log's events of the user, rewritten in batches by the one sanctioned scrub.
async fn scrub_log(
    pool: &PgPool,
    pseudonym: &str,
    user: &str,
    progress: impl Fn(i64),
) -> Result<(), EraseError> {
    let mut scrubbed = 0;
    loop {
        let n: i64 = db(
            sqlx::query_scalar("SELECT erase_user_events($1, $2, $3)")
                .bind(pseudonym)
                .bind(user)
                .bind(ERASE_BATCH)
                .fetch_one(pool)
                .await,
            "scrub a batch of the user's events",
        )?;
        if n == 0 {
            return Ok(());
        }
        scrubbed += n;
        progress(scrubbed);
    }
}

/// What the copies outside the log gave up, for the receipt.
struct Done {
    dead_letters: i64,
    stream_messages: i64,
    stream_left: Vec<i64>,
    cache_entries: i64,
    read_model_rows: i64,
    detached_events: i64,
    archives: Vec<String>,
}

/// Records what erasure `id` did and marks it complete; its receipt.
async fn complete(pool: &PgPool, id: i64, done: &Done) -> Result<Receipt, EraseError> {
    let receipt: Receipt = db(
        sqlx::query_as(
            "UPDATE erasures SET dead_letters = $2, stream_messages = $3, cache_entries = $4, \
             read_model_rows = $5, detached_events = $6, stream_left = $7, archives = $8, \
             completed_at = now() WHERE id = $1 \
             RETURNING id, tenant, pseudonym, forgotten_at, requested_at, completed_at, log_events, \
                       detached_events, dead_letters, stream_messages, stream_left, cache_entries, \
                       read_model_rows, archives",
        )
        .bind(id)
        .bind(done.dead_letters)
        .bind(done.stream_messages)
        .bind(done.cache_entries)
        .bind(done.read_model_rows)
        .bind(done.detached_events)
        .bind(&done.stream_left)
        .bind(&done.archives)
        .fetch_one(pool)
        .await,
        "complete an erasure",
    )?;
    Ok(receipt)
}

/// What to look for: the user's id, and every email and name their events gave, in every
/// shape they were stored in (read as stored, so no payload escapes for failing to upcast).
async fn personal_values(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    forgotten_at: i64,
) -> Result<Vec<String>, DbError> {
    let mut values: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT DISTINCT v FROM events e, \
             LATERAL (VALUES (e.data->>'email'), (e.data->>'name'), (e.data->>'display_name')) AS x(v) \
             WHERE e.tenant = $1 AND e.user_id = $2 AND e.position <= $3 AND v IS NOT NULL \
               AND e.event_type IN ('user_registered', 'user_email_changed')",
        )
        .bind(tenant)
        .bind(user)
        .bind(forgotten_at)
        .fetch_all(pool)
        .await,
        "read what the user's events name",
    )?;
    values.push(user.to_owned());
    Ok(values)
}

/// The latest erasure of a user, found by its digest.
pub(super) struct Earlier {
    id: i64,
    pseudonym: String,
    /// Where it forgot the user.
    pub(super) forgotten_at: i64,
    completed: bool,
}

/// The latest erasure of `user` of `tenant`, finished or not.
pub(super) async fn latest(
    pool: &PgPool,
    tenant: &str,
    user: &str,
) -> Result<Option<Earlier>, DbError> {
    let row: Option<(i64, String, i64, bool)> = db(
        sqlx::query_as(
            "SELECT id, pseudonym, forgotten_at, completed_at IS NOT NULL FROM erasures \
             WHERE tenant = $1 AND user_digest = erasure_digest($1, $2) ORDER BY id DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(pool)
        .await,
        "look for an earlier erasure",
    )?;
    Ok(row.map(|(id, pseudonym, forgotten_at, completed)| Earlier {
        id,
        pseudonym,
        forgotten_at,
        completed,
    }))
}

/// Records the erasure (with the digest that lets later copies be scrubbed), or takes up
/// one of this user's that did not finish; returns its id and pseudonym.
async fn record(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    forgotten_at: i64,
) -> Result<(i64, String), DbError> {
    if let Some(e) = latest(pool, tenant, user).await?
        && !e.completed
    {
        return Ok((e.id, e.pseudonym));
    }
    let pseudonym = format!("erased-{}", uuid::Uuid::new_v4().simple());
    let id: i64 = db(
        sqlx::query_scalar(
            "INSERT INTO erasures (tenant, pseudonym, forgotten_at, user_digest) \
             VALUES ($1, $2, $3, erasure_digest($1, $4)) RETURNING id",
        )
        .bind(tenant)
        .bind(&pseudonym)
        .bind(forgotten_at)
        .bind(user)
        .fetch_one(pool)
        .await,
        "record an erasure",
    )?;
    Ok((id, pseudonym))
}

/// Purges the user's key (every version of it, and its history) from every cached
/// projection's bucket.
async fn purge_cache(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
    user: &str,
) -> Result<i64, EraseError> {
    let mut purged = 0;
    for p in crate::project::projections().unwrap_or_default() {
        let Some(entries) = crate::query::open_cache(pool, js, &p, &config.bucket_prefix).await?
        else {
            continue;
        };
        // The tombstone is as of where the projection is now in the tenant's log: past the
        // erasure, which every projection folded before this runs.
        let (as_of, epoch): (Option<i64>, Option<i32>) = db(
            sqlx::query_as(
                "SELECT tenant_projection_position($1, $2), analytics.projection_epoch($1)",
            )
            .bind(&p.name)
            .bind(tenant)
            .fetch_one(pool)
            .await,
            "read a projection's position",
        )?;
        // No checkpoint (not installed): no position to hold fills back with, no tombstone.
        let tombstone = as_of.map(|as_of| crate::cache::Cached::Tombstone {
            as_of,
            epoch: epoch.map_or(-1, i64::from),
        });
        purged += entries
            .purge(tenant, user, tombstone.as_ref())
            .await
            .map_err(|e| EraseError::Nats(e.to_string()))?;
    }
    Ok(purged)
}
