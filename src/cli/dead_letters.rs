//! `dead-letters list | show | redrive | purge`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use sqlx::PgPool;

use super::{Cli, CliError, admin::connect};
use crate::ingest::letters::{self, Filter, Listed, Shown};
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
        /// Only those whose bytes name this command type (e.g. record_activity).
        #[arg(long = "type")]
        command_type: Option<String>,
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
            command_type,
            since,
            all,
            limit,
            json,
        } => {
            let since = match since {
                Some(t) => Some(time(&pool, t).await?),
                None => None,
            };
            let filter = Filter {
                reason: reason.clone(),
                tenant: tenant.clone(),
                command_type: command_type.clone(),
                since,
                all: *all,
                limit: *limit,
            };
            print_list(&letters::list(&pool, &filter).await?, *json);
            Ok(())
        }
        DeadLettersAction::Show { id } => match letters::show(&pool, *id).await? {
            Some(letter) => {
                print_one(*id, &letter);
                Ok(())
            }
            None => Err(CliError::NotFound(format!("no dead letter {id}"))),
        },
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
            let purged = letters::purge(&pool, before, reason.as_deref()).await?;
            println!("purged {purged} received before {}", before.to_rfc3339());
            Ok(())
        }
    }
}

async fn time(pool: &PgPool, text: &str) -> Result<DateTime<Utc>, CliError> {
    letters::parse_time(pool, text).await.ok_or_else(|| {
        CliError::Input(format!(
            "`{text}` is neither a time (2026-11-30, 2026-11-30T12:00:00Z) nor an interval (7 days ago)"
        ))
    })
}

/// A table (the message whole, last), or one JSON object a line.
fn print_list(rows: &[Listed], json: bool) {
    if !json {
        println!(
            "{:>8}  {:<20} {:<19} {:<12} {:>8} {:>8}  {:<10} message",
            "id", "received", "reason", "tenant", "seq", "bytes", "resolution"
        );
    }
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(r).expect("rows serialise"));
            continue;
        }
        println!(
            "{:>8}  {:<20} {:<19} {:<12} {:>8} {:>8}  {:<10} {}",
            r.id,
            r.received_at.format("%Y-%m-%d %H:%M:%S"),
            r.reason,
            escape_text(r.tenant.as_deref().unwrap_or_default()),
            r.stream_seq.map_or("-".into(), |s| s.to_string()),
            r.raw_length,
            r.resolution.as_deref().unwrap_or("-"),
            escape_text(&r.message),
        );
    }
}

fn print_one(id: i64, letter: &Shown) {
    let l = &letter.listed;
    println!("dead letter {id}");
    let field = l.field.as_ref().map(|f| format!(" ({f})"));
    println!("  reason      {}{}", l.reason, field.unwrap_or_default());
    println!("  message     {}", escape_text(&l.message));
    println!("  received    {}", l.received_at.to_rfc3339());
    println!("  subject     {}", l.subject.as_deref().unwrap_or_default());
    println!("  tenant      {}", l.tenant.as_deref().unwrap_or_default());
    let seq = l.stream_seq.map_or("-".into(), |s| s.to_string());
    println!("  stream seq  {seq}");
    let command = letter.command_id.map_or("-".into(), |c| c.to_string());
    println!("  command id  {command}");
    let resolution = l.resolution.as_ref().map(|r| format!(", resolved: {r}"));
    println!(
        "  redrives    {}{}",
        l.redrives,
        resolution.unwrap_or_default()
    );
    let hex: String = letter
        .raw_sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let kept = if letter.raw.len() as i64 == l.raw_length {
        String::new()
    } else {
        format!(", the first {} kept", letter.raw.len())
    };
    println!("  raw         {} bytes{kept}, sha256 {hex}", l.raw_length);
    match std::str::from_utf8(&letter.raw) {
        Ok(text) => println!("  as text (UTF-8):\n{}", escape_text(text)),
        Err(_) => println!("  not UTF-8, escaped:\n{}", letter.raw.escape_ascii()),
    }
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
