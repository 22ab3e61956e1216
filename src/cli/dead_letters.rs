//! `dead-letters list | show | redrive | purge`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use sqlx::PgPool;

use super::{Cli, CliError, admin::connect};
use crate::db::db;
use crate::ingest::redrive::{self, Selection, Verdict};
use crate::log::EventLog;
use crate::model::escape_text;

/// Dead letters in one redrive transaction.
const REDRIVE_CHUNK: usize = 1_000;

/// `dead-letters` actions.
#[derive(Debug, Subcommand)]
pub enum DeadLettersAction {
    /// List dead letters, newest first.
    List {
        /// Only this reason (e.g. unknown_user).
        #[arg(long)]
        reason: Option<String>,
        /// Only this tenant (as the subject named it).
        #[arg(long)]
        tenant: Option<String>,
        /// Only those received since this time (2026-11-30, 2026-11-30T12:00:00Z, "2 days ago").
        #[arg(long)]
        since: Option<String>,
        /// Include those a redrive resolved.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole, its bytes as text when they are UTF-8, escaped otherwise.
    Show {
        /// Its id.
        id: i64,
    },
    /// Decide dead letters again against today's registry and commit what is now accepted,
    /// in the order they first arrived, each command once.
    Redrive {
        /// These dead letters.
        #[arg(required_unless_present = "reason")]
        ids: Vec<i64>,
        /// Every unresolved dead letter of this reason.
        #[arg(long)]
        reason: Option<String>,
        /// With --reason: only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Decide and print, commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters received before a time.
    Purge {
        /// 2026-11-30, 2026-11-30T12:00:00Z or "30 days ago".
        #[arg(long)]
        before: String,
        /// Only this reason.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs a `dead-letters` action.
pub async fn run(cli: &Cli, action: &DeadLettersAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        DeadLettersAction::List {
            reason,
            tenant,
            since,
            all,
            limit,
            json,
        } => {
            let since = match since {
                Some(t) => Some(time(&pool, t).await?),
                None => None,
            };
            list(&pool, reason, tenant, since, *all, *limit, *json).await
        }
        DeadLettersAction::Show { id } => show(&pool, *id).await,
        DeadLettersAction::Redrive {
            ids,
            reason,
            tenant,
            dry_run,
        } => {
            let selection = Selection {
                ids: ids.clone(),
                reason: reason.clone(),
                tenant: tenant.clone(),
            };
            run_redrive(pool, &selection, *dry_run).await
        }
        DeadLettersAction::Purge { before, reason } => {
            let before = time(&pool, before).await?;
            let purged = db(
                sqlx::query(
                    "DELETE FROM dead_letters WHERE received_at < $1 AND ($2::text IS NULL OR reason = $2)",
                )
                .bind(before)
                .bind(reason)
                .execute(&pool)
                .await,
                "purge dead letters",
            )?;
            println!(
                "purged {} received before {}",
                purged.rows_affected(),
                before.to_rfc3339()
            );
            Ok(())
        }
    }
}

/// A time as PostgreSQL reads it: a timestamp, or an interval from now ("7 days ago").
async fn time(pool: &PgPool, text: &str) -> Result<DateTime<Utc>, CliError> {
    for sql in ["SELECT $1::timestamptz", "SELECT now() + $1::interval"] {
        if let Ok(t) = sqlx::query_scalar(sql).bind(text).fetch_one(pool).await {
            return Ok(t);
        }
    }
    Err(CliError::Input(format!(
        "`{text}` is neither a time (2026-11-30, 2026-11-30T12:00:00Z) nor an interval (7 days ago)"
    )))
}

type ListRow = (
    i64,
    DateTime<Utc>,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
    i32,
);

async fn list(
    pool: &PgPool,
    reason: &Option<String>,
    tenant: &Option<String>,
    since: Option<DateTime<Utc>>,
    all: bool,
    limit: i64,
    json: bool,
) -> Result<(), CliError> {
    let rows: Vec<ListRow> = db(
        sqlx::query_as(
            "SELECT id, received_at, reason, field, message, tenant, subject, stream_seq, \
                    raw_length, resolution, redrives \
             FROM dead_letters \
             WHERE ($1::text IS NULL OR reason = $1) AND ($2::text IS NULL OR tenant = $2) \
               AND ($3::timestamptz IS NULL OR received_at >= $3) AND ($4 OR resolved_at IS NULL) \
             ORDER BY received_at DESC, id DESC LIMIT $5",
        )
        .bind(reason)
        .bind(tenant)
        .bind(since)
        .bind(all)
        .bind(limit)
        .fetch_all(pool)
        .await,
        "list dead letters",
    )?;
    if !json {
        println!(
            "{:>8}  {:<20} {:<15} {:<12} {:>8} {:>8}  message",
            "id", "received", "reason", "tenant", "seq", "bytes"
        );
    }
    for r in rows {
        let (
            id,
            received,
            reason,
            field,
            message,
            tenant,
            subject,
            seq,
            bytes,
            resolution,
            redrives,
        ) = r;
        if json {
            let row = serde_json::json!({
                "id": id, "received_at": received, "reason": reason, "field": field,
                "message": message, "tenant": tenant, "subject": subject, "stream_seq": seq,
                "raw_length": bytes, "resolution": resolution, "redrives": redrives,
            });
            println!("{row}");
        } else {
            let short: String = message.chars().take(60).collect();
            println!(
                "{id:>8}  {:<20} {reason:<15} {:<12} {:>8} {bytes:>8}  {short}",
                received.format("%Y-%m-%d %H:%M:%S"),
                tenant.unwrap_or_default(),
                seq.map_or("-".into(), |s| s.to_string()),
            );
        }
    }
    Ok(())
}

type ShowRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    Option<uuid::Uuid>,
    Option<String>,
    Vec<u8>,
    i64,
    Vec<u8>,
    DateTime<Utc>,
    Option<String>,
    i32,
);

async fn show(pool: &PgPool, id: i64) -> Result<(), CliError> {
    let row: Option<ShowRow> = db(
        sqlx::query_as(
            "SELECT reason, field, message, subject, stream_seq, command_id, tenant, raw, \
                    raw_length, raw_sha256, received_at, resolution, redrives \
             FROM dead_letters WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await,
        "read a dead letter",
    )?;
    let Some((
        reason,
        field,
        message,
        subject,
        seq,
        command,
        tenant,
        raw,
        length,
        sha,
        received,
        resolution,
        redrives,
    )) = row
    else {
        return Err(CliError::NotFound(format!("no dead letter {id}")));
    };
    println!("dead letter {id}");
    println!(
        "  reason      {reason}{}",
        field.map(|f| format!(" ({f})")).unwrap_or_default()
    );
    println!("  message     {}", escape_text(&message));
    println!("  received    {}", received.to_rfc3339());
    println!("  subject     {}", subject.unwrap_or_default());
    println!("  tenant      {}", tenant.unwrap_or_default());
    println!(
        "  stream seq  {}",
        seq.map_or("-".into(), |s| s.to_string())
    );
    println!(
        "  command id  {}",
        command.map_or("-".into(), |c| c.to_string())
    );
    println!(
        "  redrives    {redrives}{}",
        resolution
            .map(|r| format!(", resolved: {r}"))
            .unwrap_or_default()
    );
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    let kept = if raw.len() as i64 == length {
        String::new()
    } else {
        format!(", the first {} kept", raw.len())
    };
    println!("  raw         {length} bytes{kept}, sha256 {hex}");
    match std::str::from_utf8(&raw) {
        Ok(text) => println!("  as text (UTF-8):\n{}", escape_text(text)),
        Err(_) => println!("  not UTF-8, escaped:\n{}", raw.escape_ascii()),
    }
    Ok(())
}

async fn run_redrive(pool: PgPool, selection: &Selection, dry_run: bool) -> Result<(), CliError> {
    let letters = redrive::unresolved(&pool, selection).await?;
    if letters.is_empty() {
        println!("nothing to redrive");
        return Ok(());
    }
    let window = crate::model::TimeWindow::default();
    let log = EventLog::open(pool).await?;
    let (mut accepted, mut duplicates, mut refused) = (0, 0, 0);
    for chunk in letters.chunks(REDRIVE_CHUNK) {
        let verdicts = redrive::redrive(&log, chunk, &window, dry_run).await?;
        for (l, v) in chunk.iter().zip(&verdicts) {
            let said = match v {
                Verdict::Accepted if dry_run => "would be accepted".to_owned(),
                Verdict::Accepted => "accepted".to_owned(),
                Verdict::Duplicate => "already applied (duplicate)".to_owned(),
                Verdict::Refused(r) => format!(
                    "still refused: {}{}: {}",
                    r.reason.code(),
                    r.field.map(|f| format!(" ({f})")).unwrap_or_default(),
                    r.message
                ),
            };
            let [command, kind, tenant, user] = l.names();
            println!(
                "{:>8}  {:<15} command {command} {kind} tenant {tenant} user {user}: {said}",
                l.id, l.reason
            );
            match v {
                Verdict::Accepted => accepted += 1,
                Verdict::Duplicate => duplicates += 1,
                Verdict::Refused(_) => refused += 1,
            }
        }
    }
    if dry_run {
        println!(
            "dry run: {accepted} would be accepted, {refused} still refused, {duplicates} duplicates; nothing committed"
        );
    } else {
        println!("{accepted} accepted, {duplicates} duplicates, {refused} still refused");
    }
    Ok(())
}
