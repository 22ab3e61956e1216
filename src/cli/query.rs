//! `activity-store query …`: the read models for one tenant, as a table or JSON lines.

use chrono::NaiveDate;
use clap::Subcommand;
use serde::Serialize;

use super::{Cli, CliError};
use crate::cache::CacheEntries;
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

/// Runs one read and prints it. An empty answer is said so, as an error (the tenant, the
/// user or the range may be misspelt), never a bare header.
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
            if rows.is_empty() {
                let matching = metadata.as_ref().map_or("", |_| " matching --metadata");
                return Err(CliError::NotFound(format!(
                    "no activities{matching} of user {user} in tenant {tenant}"
                )));
            }
            let headers = ["occurred_at", "activity_type", "event_id", "metadata"];
            print(&rows, json, &headers, |r| {
                vec![
                    r.occurred_at.to_rfc3339(),
                    r.activity_type.clone(),
                    r.event_id.to_string(),
                    r.metadata.to_string(),
                ]
            });
        }
        Read::Daily { tenant, from, to } => {
            let rows = query::daily(&pool, tenant, *from, *to).await?;
            if rows.is_empty() {
                return Err(CliError::NotFound(format!(
                    "no activity in tenant {tenant}{}",
                    if from.is_some() || to.is_some() {
                        " in that range"
                    } else {
                        ""
                    }
                )));
            }
            let headers = ["day", "activity_type", "events", "users"];
            print(&rows, json, &headers, |r| {
                vec![
                    r.day.to_string(),
                    r.activity_type.clone(),
                    r.events.to_string(),
                    r.users.to_string(),
                ]
            });
        }
        Read::User { tenant, user } => print_user(&user_row(cli, &pool, tenant, user).await?, json),
    }
    Ok(())
}

/// One user's summary, through the cache when it can be read.
async fn user_row(
    cli: &Cli,
    pool: &sqlx::PgPool,
    tenant: &str,
    user: &str,
) -> Result<query::UserRow, CliError> {
    let row = match reader_cache(cli, pool).await {
        Some(cache) => {
            query::user_through_cache(pool, &cache, tenant, user)
                .await?
                .row
        }
        None => query::user(pool, tenant, user).await?,
    };
    row.ok_or_else(|| CliError::NotFound(format!("no user {user} in tenant {tenant}")))
}

fn print_user(row: &query::UserRow, json: bool) {
    let text = |t: &Option<String>| t.clone().unwrap_or_default();
    let time =
        |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let headers = [
        "user_id",
        "name",
        "email",
        "first_seen",
        "last_seen",
        "events",
        "last_activity_type",
    ];
    print(std::slice::from_ref(row), json, &headers, |r| {
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

/// The user_summary cache when NATS is configured and the bucket exists; reads go to the
/// table otherwise.
async fn reader_cache(cli: &Cli, pool: &sqlx::PgPool) -> Option<CacheEntries> {
    let url = cli.resolve_nats_url().ok()?;
    let (options, bare) = crate::nats::options(&url);
    let servers = crate::nats::servers(&bare);
    let connect = options
        .connection_timeout(std::time::Duration::from_secs(2))
        .connect(servers.as_slice());
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
