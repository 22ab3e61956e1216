//! `activity-store query …`: the read models for one tenant, as a table or JSON lines.

use chrono::NaiveDate;
use clap::Subcommand;
use serde::Serialize;

use super::{Cli, CliError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache::CacheEntries;
use crate::project::{ProjectConfig, Projector};
use crate::query;

/// What to read; every read takes a tenant.
#[derive(Debug, Subcommand)]
pub enum Read {
    /// A user's latest activities, newest first.
    Feed {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Only activities whose metadata contains this JSON object, e.g. '{"ip":"10.0.0.1"}'.
        #[arg(long, value_parser = parse_object)]
        metadata: Option<serde_json::Value>,
    },
    /// A tenant's events and distinct users per UTC day and activity type.
    Daily {
        #[arg(long)]
        tenant: String,
        /// First day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Option<NaiveDate>,
    },
    /// One user's summary.
    User {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
    },
}

fn parse_object(s: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(s) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Runs one read and prints it.
pub async fn run(cli: &Cli, read: &Read, json: bool) -> Result<(), CliError> {
    let pool = super::admin::connect(cli).await?;
    match read {
        Read::Feed {
            tenant,
            user,
            limit,
            metadata,
        } => {
            let rows = query::feed(&pool, tenant, user, *limit, metadata.as_ref()).await?;
            print(
                &rows,
                json,
                &["occurred_at", "activity_type", "event_id", "metadata"],
                |r| {
                    vec![
                        r.occurred_at.to_rfc3339(),
                        r.activity_type.clone(),
                        r.event_id.to_string(),
                        r.metadata.to_string(),
                    ]
                },
            );
        }
        Read::Daily { tenant, from, to } => {
            let rows = query::daily(&pool, tenant, *from, *to).await?;
            print(
                &rows,
                json,
                &["day", "activity_type", "events", "users"],
                |r| {
                    vec![
                        r.day.to_string(),
                        r.activity_type.clone(),
                        r.events.to_string(),
                        r.users.to_string(),
                    ]
                },
            );
        }
        Read::User { tenant, user } => {
            let row = match reader_cache(cli, &pool).await {
                Some(cache) => {
                    query::user_through_cache(&pool, &cache, tenant, user)
                        .await?
                        .row
                }
                None => query::user(&pool, tenant, user).await?,
            };
            let Some(row) = row else {
                return Err(CliError::NotFound(format!(
                    "no user {user} in tenant {tenant}"
                )));
            };
            let text = |t: &Option<String>| t.clone().unwrap_or_default();
            let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.to_rfc3339()).unwrap_or_default()
            };
            let headers = [
                "user_id",
                "name",
                "email",
                "first_seen",
                "last_seen",
                "events",
                "last_activity_type",
            ];
            print(std::slice::from_ref(&row), json, &headers, |r| {
                vec![
                    r.user_id.clone(),
                    text(&r.name),
                    r.email.clone(),
                    time(&r.first_seen),
                    time(&r.last_seen),
                    r.events.to_string(),
                    text(&r.last_activity_type),
                ]
            });
        }
    }
    Ok(())
}

/// The user_summary cache when NATS is configured and the bucket exists; reads go to the
/// table otherwise.
async fn reader_cache(cli: &Cli, pool: &sqlx::PgPool) -> Option<CacheEntries> {
    let url = cli.resolve_nats_url().ok()?;
    let (options, bare) = crate::nats::options(&url);
    let connect = options
        .connection_timeout(std::time::Duration::from_secs(2))
        .connect(bare);
    let client = match connect.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "NATS unreachable; reading the table");
            return None;
        }
    };
    let js = async_nats::jetstream::new(client);
    // A login that may not read the cache's secret reads the table.
    query::summary_cache(pool, &js, &cli.cache_config().bucket_prefix).await
}

/// `rebuild <projection> [--verify [--force]]`: refolds it from the whole log into shadow
/// tables and swaps them in, then clears and refills its cache entries. Progress: a bar with
/// positions/s and ETA on a terminal, a plain line every few seconds otherwise. An interrupted
/// rebuild leaves the live tables as they were.
pub async fn rebuild(cli: &Cli, name: &str, verify: bool, force: bool) -> Result<(), CliError> {
    let pool = super::admin::connect(cli).await?;
    warn_if_partial(&pool).await?;
    let mut projector = Projector::start(pool, ProjectConfig::default()).await?;
    if let Ok(url) = cli.resolve_nats_url() {
        let client = crate::nats::connect(&url).await.map_err(|e| {
            CliError::Nats(format!("connect to {}: {e}", crate::nats::redacted(&url)))
        })?;
        let js = async_nats::jetstream::new(client);
        projector.attach_caches(&js, &cli.cache_config()).await?;
    }
    let progress = Progress::new(name);
    let report = |upto: i64, last: i64| progress.show(upto, last);
    if !verify {
        let position = projector.rebuild(name, report).await?;
        progress.done();
        println!("rebuilt {name} from the whole log, up to position {position}");
        return Ok(());
    }
    let (verified, swapped) = projector.rebuild_verified(name, report, force).await?;
    progress.done();
    for d in &verified.differences {
        println!(
            "{}: {} rows only live, {} only rebuilt",
            d.table, d.only_live, d.only_rebuilt
        );
        for e in &d.examples {
            println!("  {e}");
        }
    }
    if verified.differences.is_empty() {
        println!(
            "verified: the rebuilt tables match the live ones at position {} ({} rows)",
            verified.position, verified.rows
        );
    }
    match swapped {
        Some(position) => {
            println!("rebuilt {name} from the whole log, up to position {position}");
            Ok(())
        }
        None => Err(CliError::Unverified(name.to_owned())),
    }
}

/// Warns when months of the log are detached: a rebuild folds only what is still attached.
async fn warn_if_partial(pool: &sqlx::PgPool) -> Result<(), CliError> {
    let (first, away): (Option<i64>, Vec<String>) = crate::db::db(
        sqlx::query_as(
            "SELECT (SELECT min(position) FROM events), \
                    ARRAY(SELECT month FROM archived_months WHERE attached_at IS NULL ORDER BY 1)",
        )
        .fetch_one(pool)
        .await,
        "look at which months are detached",
    )?;
    if !away.is_empty() || first.is_some_and(|f| f > 1) {
        eprintln!(
            "warning: the log starts at position {} and {} detached: a rebuild folds only the \
             months still attached, so the rebuilt views will not count what was detached; \
             attach their archives first (`partitions attach`) to rebuild everything",
            first.unwrap_or(0),
            if away.is_empty() {
                "no month is recorded as".to_owned()
            } else {
                format!(
                    "{} {}",
                    away.join(", "),
                    if away.len() == 1 { "is" } else { "are" }
                )
            }
        );
    }
    Ok(())
}

/// A rebuild's progress: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    name: String,
    last_line: std::sync::Mutex<std::time::Instant>,
}

impl Progress {
    fn new(name: &str) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} positions {per_sec} ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar.set_message(format!("rebuilding {name}"));
            bar
        });
        Progress {
            bar,
            name: name.to_owned(),
            last_line: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    fn show(&self, upto: i64, last: i64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(last.max(0) as u64);
                bar.set_position(upto.max(0) as u64);
            }
            None => {
                let mut at = self.last_line.lock().expect("progress lock");
                if at.elapsed() >= std::time::Duration::from_secs(5) || upto >= last {
                    eprintln!("rebuilding {}: {upto} of {last} positions", self.name);
                    *at = std::time::Instant::now();
                }
            }
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One JSON object a line, or an aligned table with a header.
fn print<T: Serialize>(
    rows: &[T],
    json: bool,
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) {
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r).expect("rows serialise"));
        }
        return;
    }
    let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in table {
        line(r);
    }
}
