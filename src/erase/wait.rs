//! Waiting for the store: the forget_user command published and applied, the projections
//! folded past it, ingest past a stream sequence.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::PgPool;

use super::{EraseConfig, EraseError};
use crate::db::{DbError, db};

/// Publishes forget_user and waits for its event; returns its position. A user forgotten
/// already by an erasure that did not finish (the projectors were late) is finished now.
pub(super) async fn forgotten(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    tenant: &str,
    user: &str,
) -> Result<i64, EraseError> {
    let command_id = publish(js, config, tenant, user).await?;
    match applied(pool, config, tenant, command_id).await {
        Err(EraseError::Refused { reason, message }) if reason == "unknown_user" => {
            // Erased before (an erasure that stopped part way, or one a second run scrubs
            // again after): take up where that one forgot the user.
            match super::latest(pool, tenant, user).await? {
                Some(e) => Ok(e.forgotten_at),
                None => unfinished(pool, tenant, user)
                    .await?
                    .ok_or(EraseError::Refused { reason, message }),
            }
        }
        other => other,
    }
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
        let (position, reason, message): (Option<i64>, Option<String>, Option<String>) = db(
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
        if let Some(p) = position {
            return Ok(p);
        }
        if let Some((reason, message)) = reason.zip(message) {
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

/// The latest user_forgotten event of a user whose events were never scrubbed.
async fn unfinished(pool: &PgPool, tenant: &str, user: &str) -> Result<Option<i64>, DbError> {
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

/// Waits until every projection has folded past `position` (in its shard): only then may the events be
/// scrubbed, or a fold could still read the user's id before the erasure.
pub(super) async fn folded_past(
    pool: &PgPool,
    config: &EraseConfig,
    position: i64,
) -> Result<(), EraseError> {
    let started = Instant::now();
    loop {
        let behind: Vec<String> = db(
            sqlx::query_scalar(
                "SELECT projection FROM shard_checkpoints WHERE shard = $2 AND position < $1",
            )
            .bind(position)
            .bind(crate::project::shard_of(position))
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

/// The ingest checkpoint of the stream: the last sequence whose outcome is committed.
pub(super) async fn ingested(pool: &PgPool, stream: &str) -> Result<u64, DbError> {
    let seq: Option<i64> = db(
        sqlx::query_scalar("SELECT last_seq FROM ingest_checkpoints WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await,
        "read the ingest checkpoint",
    )?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

/// The identity (creation time) of the stream the ingest checkpoint was written for.
pub(super) async fn checkpoint_stream(
    pool: &PgPool,
    stream: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DbError> {
    let created: Option<Option<chrono::DateTime<chrono::Utc>>> = db(
        sqlx::query_scalar("SELECT stream_created FROM ingest_checkpoints WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await,
        "read the ingest checkpoint's stream",
    )?;
    Ok(created.flatten())
}

/// Waits (at most the configured time) until ingest has committed up to `seq`; returns the
/// checkpoint reached.
pub(super) async fn ingested_past(
    pool: &PgPool,
    config: &EraseConfig,
    seq: u64,
) -> Result<u64, DbError> {
    let started = Instant::now();
    loop {
        let at = ingested(pool, &config.stream).await?;
        if at >= seq || started.elapsed() > config.wait {
            return Ok(at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
