//! `migrate` and `partitions`: operator commands on the database.

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;

use super::{Cli, CliError, MigrateAction, PartitionsAction};
use crate::log::partitions::{self, Month};
use crate::log::{LogError, migrate as migrations};

pub(super) async fn connect(cli: &Cli) -> Result<PgPool, CliError> {
    let url = cli.resolve_database_url()?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&url)
        .await
        .map_err(|source| {
            CliError::Log(LogError::Database {
                action: "connect to the database",
                source,
            })
        })
}

/// `migrate up | down [N] | status`.
pub async fn migrate(cli: &Cli, action: &MigrateAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        MigrateAction::Up => {
            migrations::up(&pool).await?;
            println!("all migrations applied");
        }
        MigrateAction::Down { steps } => {
            for version in migrations::down(&pool, *steps).await? {
                println!("reverted {version}");
            }
        }
        MigrateAction::Status => {
            for m in migrations::status(&pool).await? {
                let state = if m.applied { "applied" } else { "pending" };
                println!("{:04}  {state:8} {}", m.version, m.description);
            }
        }
    }
    Ok(())
}

/// `partitions list | ensure`.
pub async fn partitions(cli: &Cli, action: &PartitionsAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    let mut conn = pool.acquire().await.map_err(|source| LogError::Database {
        action: "connect to the database",
        source,
    })?;
    match action {
        PartitionsAction::List => {
            println!(
                "{:<16} {:>12} {:>12}  bounds",
                "partition", "est. rows", "size"
            );
            for p in partitions::list(&mut conn).await? {
                let rows = p.estimated_rows.max(0);
                let size = format!("{:.1} MiB", p.total_bytes as f64 / 1_048_576.0);
                println!("{:<16} {rows:>12} {size:>12}  {}", p.name, p.bound);
            }
        }
        PartitionsAction::Ensure { months_ahead, from } => {
            let now = Month::of(Utc::now());
            let mut months = Month::range(now, months_ahead + 1);
            if let Some(from) = from {
                let mut m = *from;
                while m < now {
                    months.push(m);
                    m = m.next();
                }
            }
            let ensured = partitions::ensure(&mut conn, &months).await?;
            for m in &ensured.created {
                println!("created {}", m.table_name());
            }
            for m in &ensured.archived {
                println!(
                    "{} exists but is detached from the log: left alone; commands for {m} are refused as archived_month",
                    m.table_name()
                );
            }
            println!(
                "{} created, {} detached, {} already there",
                ensured.created.len(),
                ensured.archived.len(),
                months.len() - ensured.created.len() - ensured.archived.len()
            );
        }
    }
    Ok(())
}

/// Parses `YYYY-MM`.
pub fn parse_month(s: &str) -> Result<Month, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map(|d| Month::of(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()))
        .map_err(|_| format!("`{s}` is not a month like 2025-01"))
}
