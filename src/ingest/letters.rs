//! The dead letters as operators read them: listed newest first, one shown whole, old ones
//! purged. (Redrive, which decides them again, is `redrive.rs`.)

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::{DbError, db};

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this tenant (as the subject named it).
    pub tenant: Option<String>,
    /// Only those whose bytes name this command type.
    pub command_type: Option<String>,
    /// Only those received since.
    pub since: Option<DateTime<Utc>>,
    /// Those a redrive resolved too.
    pub all: bool,
    /// At most this many.
    pub limit: i64,
}

/// A dead letter in a list: everything but its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub field: Option<String>,
    pub message: String,
    pub tenant: Option<String>,
    /// The command type its bytes name, if they are JSON naming one.
    pub command_type: Option<String>,
    pub subject: Option<String>,
    pub stream_seq: Option<i64>,
    pub raw_length: i64,
    /// What a redrive made of it (`redriven`, `duplicate`), if one resolved it.
    pub resolution: Option<String>,
    pub redrives: i32,
}

/// A dead letter whole: its row and the bytes kept.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Shown {
    #[sqlx(flatten)]
    pub listed: Listed,
    pub command_id: Option<uuid::Uuid>,
    /// The bytes kept (a prefix, when the message was longer than any command accepted).
    pub raw: Vec<u8>,
    pub raw_sha256: Vec<u8>,
}

const COLUMNS: &str = "id, received_at, reason, field, message, tenant, command_type, subject, \
     stream_seq, raw_length, resolution, redrives";

/// The dead letters `filter` selects, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Listed>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters \
         WHERE ($1::text IS NULL OR reason = $1) AND ($2::text IS NULL OR tenant = $2) \
           AND ($3::timestamptz IS NULL OR received_at >= $3) AND ($4 OR resolved_at IS NULL) \
           AND ($6::text IS NULL OR command_type = $6) \
         ORDER BY received_at DESC, id DESC LIMIT $5"
    );
    db(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&filter.reason)
            .bind(&filter.tenant)
            .bind(filter.since)
            .bind(filter.all)
            .bind(filter.limit)
            .bind(&filter.command_type)
            .fetch_all(pool)
            .await,
        "list dead letters",
    )
}

/// Dead letter `id`, if there is one.
pub async fn show(pool: &PgPool, id: i64) -> Result<Option<Shown>, DbError> {
    let sql =
        format!("SELECT {COLUMNS}, command_id, raw, raw_sha256 FROM dead_letters WHERE id = $1");
    db(
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await,
        "read a dead letter",
    )
}

/// Deletes the dead letters received before `before` (of `reason` only, when given);
/// returns how many.
pub async fn purge(
    pool: &PgPool,
    before: DateTime<Utc>,
    reason: Option<&str>,
) -> Result<u64, DbError> {
    let purged = db(
        sqlx::query(
            "DELETE FROM dead_letters WHERE received_at < $1 AND ($2::text IS NULL OR reason = $2)",
        )
        .bind(before)
        .bind(reason)
        .execute(pool)
        .await,
        "purge dead letters",
    )?;
    Ok(purged.rows_affected())
}

/// A time as PostgreSQL reads it: a timestamp (2026-11-30, 2026-11-30T12:00:00Z), or an
/// interval from now (7 days ago). `None` when it is neither.
pub async fn parse_time(pool: &PgPool, text: &str) -> Option<DateTime<Utc>> {
    for sql in ["SELECT $1::timestamptz", "SELECT now() + $1::interval"] {
        if let Ok(t) = sqlx::query_scalar(sql).bind(text).fetch_one(pool).await {
            return Some(t);
        }
    }
    None
}
