//! `forget`: erasure that reaches every copy. It publishes `forget_user` (so the registry,
//! the read models and the cache forget the user the way every command is applied), waits
//! until the log holds it and every projection has folded past it, then scrubs what the fold
//! cannot: the user's events in the log (through `erase_user_events`, the log's one
//! sanctioned rewrite, in bounded batches that never block appends), the dead letters that
//! carry the user's data, the stream's copies of the tenant's committed commands, and the
//! cache key. The database keeps a receipt of what was scrubbed where.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::log::{LogError, db};

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
    /// Dead letters scrubbed.
    pub dead_letters: i64,
    /// The tenant's committed commands removed from the stream.
    pub stream_messages: i64,
    /// Cache entries purged.
    pub cache_entries: i64,
    /// Rows of the user's left in the read models after the fold (0 when it worked).
    pub read_model_rows: i64,
}

/// What can stop an erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database.
    #[error(transparent)]
    Log(#[from] LogError),
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
    let command_id = publish(js, config, tenant, user).await?;
    let forgotten_at = match applied(pool, config, tenant, command_id).await {
        // Forgotten already, by an erasure that did not finish (the projectors were late):
        // this one finishes it.
        Err(EraseError::Refused { reason, message }) if reason == "unknown_user" => {
            unfinished(pool, tenant, user)
                .await?
                .ok_or(EraseError::Refused { reason, message })?
        }
        other => other?,
    };
    folded_past(pool, config, forgotten_at).await?;
    // What the fold cannot reach: values of the user's to look for in the dead letters.
    let personal: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT DISTINCT v FROM events e, \
             LATERAL (VALUES (e.data->>'email'), (e.data->>'name')) AS x(v) \
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
    let pseudonym = format!("erased-{}", uuid::Uuid::new_v4().simple());
    let id: i64 = db(
        sqlx::query_scalar(
            "INSERT INTO erasures (tenant, pseudonym, forgotten_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(tenant)
        .bind(&pseudonym)
        .bind(forgotten_at)
        .fetch_one(pool)
        .await,
        "record an erasure",
    )?;
    let mut scrubbed = 0;
    loop {
        let n: i64 = db(
            sqlx::query_scalar("SELECT erase_user_events($1, $2, $3)")
                .bind(&pseudonym)
                .bind(user)
                .bind(ERASE_BATCH)
                .fetch_one(pool)
                .await,
            "scrub a batch of the user's events",
        )?;
        if n == 0 {
            break;
        }
        scrubbed += n;
        progress(scrubbed);
    }
    let dead = scrub_dead_letters(pool, tenant, user, &personal).await?;
    let stream_messages = purge_stream(pool, js, config, tenant).await?;
    let cache_entries = purge_cache(pool, js, config, tenant, user).await?;
    let left = read_model_rows(pool, tenant, user, forgotten_at).await?;
    let receipt: Receipt = db(
        sqlx::query_as(
            "UPDATE erasures SET dead_letters = $2, stream_messages = $3, cache_entries = $4, \
             read_model_rows = $5, completed_at = now() WHERE id = $1 \
             RETURNING id, tenant, pseudonym, forgotten_at, requested_at, completed_at, log_events, \
                       dead_letters, stream_messages, cache_entries, read_model_rows",
        )
        .bind(id)
        .bind(dead)
        .bind(stream_messages)
        .bind(cache_entries)
        .bind(left)
        .fetch_one(pool)
        .await,
        "complete an erasure",
    )?;
    Ok(receipt)
}

/// Publishes the forget_user command, as any producer would; returns its id.
async fn publish(
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
    user: &str,
) -> Result<uuid::Uuid, EraseError> {
    let id = uuid::Uuid::now_v7();
    let command =
        serde_json::json!({"type": "forget_user", "id": id, "tenant": tenant, "user": user});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{tenant}:{id}").as_str());
    let subject = format!("{}.{tenant}", config.subject_prefix);
    let body = serde_json::to_vec(&command).expect("a command serialises");
    js.publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|e| EraseError::Nats(format!("publish forget_user: {e}")))?
        .await
        .map_err(|e| EraseError::Nats(format!("publish forget_user: {e}")))?;
    Ok(id)
}

/// Waits for the command's outcome: its event's position, or its refusal.
async fn applied(
    pool: &PgPool,
    config: &EraseConfig,
    tenant: &str,
    id: uuid::Uuid,
) -> Result<i64, EraseError> {
    let started = Instant::now();
    loop {
        let (position, refused): (Option<i64>, Option<(String, String)>) = {
            let row: (Option<i64>, Option<String>, Option<String>) = db(
                sqlx::query_as(
                    "SELECT (SELECT position FROM events WHERE tenant = $1 AND command_id = $2), \
                            d.reason, d.message \
                     FROM (SELECT 1) one LEFT JOIN dead_letters d ON d.tenant = $1 AND d.command_id = $2",
                )
                .bind(tenant)
                .bind(id)
                .fetch_one(pool)
                .await,
                "look for the forget_user outcome",
            )?;
            (row.0, row.1.zip(row.2))
        };
        if let Some(p) = position {
            return Ok(p);
        }
        if let Some((reason, message)) = refused {
            return Err(EraseError::Refused { reason, message });
        }
        if started.elapsed() > config.wait {
            return Err(EraseError::Timeout(format!(
                "forget_user was not ingested within {:?} (is `run --ingest` running on stream {}?)",
                config.wait, config.stream
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user's rows left in the read models installed (0 when the fold did its work).
async fn read_model_rows(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    upto: i64,
) -> Result<i64, LogError> {
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

/// The latest user_forgotten event of a user whose events were never scrubbed.
async fn unfinished(pool: &PgPool, tenant: &str, user: &str) -> Result<Option<i64>, LogError> {
    db(
        sqlx::query_scalar(
            "SELECT max(position) FROM events \
             WHERE tenant = $1 AND user_id = $2 AND event_type = 'user_forgotten'",
        )
        .bind(tenant)
        .bind(user)
        .fetch_one(pool)
        .await,
        "look for an unfinished erasure",
    )
}

/// Waits until every projection has folded past `position`: only then may the events be
/// scrubbed, or a fold could still read the user's id before the erasure.
async fn folded_past(pool: &PgPool, config: &EraseConfig, position: i64) -> Result<(), EraseError> {
    let started = Instant::now();
    loop {
        let behind: Vec<String> = db(
            sqlx::query_scalar("SELECT projection FROM projection_checkpoints WHERE position < $1")
                .bind(position)
                .fetch_all(pool)
                .await,
            "read the projection checkpoints",
        )?;
        if behind.is_empty() {
            return Ok(());
        }
        if started.elapsed() > config.wait {
            return Err(EraseError::Timeout(format!(
                "{} did not fold past position {position} within {:?} (is `run --project` running?)",
                behind.join(", "),
                config.wait
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Dead letters of the tenant whose bytes or message carry the user's id, email or name:
/// their bytes and message are replaced (their reason, time and size stay).
async fn scrub_dead_letters(
    pool: &PgPool,
    tenant: &str,
    user: &str,
    personal: &[String],
) -> Result<i64, LogError> {
    let mut needles: Vec<&str> = vec![user];
    needles.extend(personal.iter().map(String::as_str));
    let done = db(
        sqlx::query(
            "UPDATE dead_letters d SET raw = ''::bytea, raw_sha256 = sha256(''::bytea), \
                    message = 'erased', field = NULL \
             WHERE d.tenant = $1 AND length(d.raw) > 0 AND EXISTS ( \
                 SELECT 1 FROM unnest($2::text[]) n \
                 WHERE position(convert_to(n, 'UTF8') IN d.raw) > 0 OR position(n IN d.message) > 0)",
        )
        .bind(tenant)
        .bind(&needles)
        .execute(pool)
        .await,
        "scrub dead letters",
    )?;
    Ok(done.rows_affected() as i64)
}

/// Removes the tenant's commands the stream still holds up to the ingest checkpoint: all of
/// them committed, so the stream stays a buffer, not a second copy.
async fn purge_stream(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
) -> Result<i64, EraseError> {
    let checkpoint: Option<i64> = db(
        sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = $1")
            .bind(&config.stream)
            .fetch_optional(pool)
            .await,
        "read the ingest checkpoint",
    )?;
    let Some(checkpoint) = checkpoint.filter(|c| *c > 0) else {
        return Ok(0);
    };
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| EraseError::Nats(format!("open stream {}: {e}", config.stream)))?;
    let purged = stream
        .purge()
        .filter(format!("{}.{tenant}", config.subject_prefix))
        .sequence(checkpoint as u64 + 1)
        .await
        .map_err(|e| EraseError::Nats(format!("purge stream {}: {e}", config.stream)))?;
    Ok(purged.purged as i64)
}

/// Purges the user's key (and its history) from every cached projection's bucket.
async fn purge_cache(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
    user: &str,
) -> Result<i64, EraseError> {
    let mut purged = 0;
    for p in crate::project::projections().unwrap_or_default() {
        let Some(spec) = &p.cache else { continue };
        let bucket = format!("{}{}", config.bucket_prefix, spec.bucket);
        let Ok(Some(entries)) = crate::cache::CacheEntries::open_for_reading(js, &p, &bucket).await
        else {
            continue;
        };
        // The tombstone is as of where the projection is now: past the erasure, which every
        // projection folded before this runs.
        let (as_of, epoch): (Option<i64>, Option<i32>) = db(
            sqlx::query_as(
                "SELECT analytics.projection_position($1), analytics.projection_epoch($1)",
            )
            .bind(&p.name)
            .fetch_one(pool)
            .await,
            "read a projection's position",
        )?;
        // No checkpoint (not installed): no position to hold fills back with, no tombstone.
        let tombstone = as_of.map(|as_of| crate::cache::Cached::Tombstone {
            as_of,
            epoch: epoch.map_or(-1, i64::from),
        });
        if entries
            .purge(tenant, user, tombstone.as_ref())
            .await
            .map_err(|e| EraseError::Nats(e.to_string()))?
        {
            purged += 1;
        }
    }
    Ok(purged)
}
