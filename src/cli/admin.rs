//! `migrate` and `partitions`: operator commands on the database.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;

use clap::Subcommand;

use super::{Cli, CliError};
use crate::db::DbError;
use crate::log::migrate as migrations;
use crate::log::partitions::{self, Month};
use crate::status::{StatusConfig, StatusError, gather};

/// `migrate` actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up {
        /// Shards of the log: a new store gets 4 unless told; a store that holds tenants
        /// keeps its count unless told (it can grow; a shard holding a tenant stays).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
        shards: Option<i32>,
    },
    /// Revert the last N applied migrations.
    Down {
        /// How many to revert.
        #[arg(default_value_t = 1)]
        steps: usize,
    },
    /// Show each migration and whether it is applied, and each data migration with its
    /// rows done and left.
    Status,
    /// Run a data migration (a backfill over a table, in batches beside ingest and reads),
    /// or take one back.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
}

/// `migrate data` actions.
#[derive(Debug, Subcommand)]
pub enum DataAction {
    /// Run it to the end, resuming where an interrupted run stopped.
    Up {
        /// The data migration (`migrate status` lists them).
        name: String,
        /// Rows a batch (one transaction each), 1 to 10,000.
        #[arg(long, default_value_t = crate::log::backfill::MAX_BATCH_ROWS)]
        batch_rows: i64,
    },
    /// Take it back to the form before, in batches the same way.
    Down {
        /// The data migration.
        name: String,
        /// Rows a batch, 1 to 10,000.
        #[arg(long, default_value_t = crate::log::backfill::MAX_BATCH_ROWS)]
        batch_rows: i64,
    },
}

/// `partitions` actions.
#[derive(Debug, Subcommand)]
pub enum PartitionsAction {
    /// Show each partition, its bounds, estimated rows and size.
    List,
    /// Create this month's partition and the next ones (and from --from on, if given).
    Ensure {
        /// How many months past this one to create.
        #[arg(long, default_value_t = crate::log::MONTHS_AHEAD)]
        months_ahead: usize,
        /// Also create every month from this one (YYYY-MM) up to now, e.g. before a backfill.
        #[arg(long, value_parser = parse_month)]
        from: Option<crate::log::partitions::Month>,
    },
    /// Detach every month before YYYY-MM (concurrently: ingest goes on) that every
    /// projection has folded past; with --archive, write each to DIR and drop it.
    Detach {
        /// The first month kept.
        #[arg(long, value_parser = parse_month)]
        before: crate::log::partitions::Month,
        /// Write each month to DIR (compressed, with a SHA-256 and a manifest), then drop it.
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Attach a month again from its archive's manifest (or its data file, whose manifest
    /// is beside it). Every erasure recorded since the archive was written is applied to its
    /// rows before they become visible.
    Attach {
        /// The `events_pYYYYMM.manifest.json` an archive wrote.
        manifest: PathBuf,
    },
    /// Rewrite the archives in DIR that erasures recorded since they were written reach:
    /// rows scrubbed, a new data file, SHA-256 and manifest.
    Rescrub {
        /// The folder `partitions detach --archive` wrote to.
        dir: PathBuf,
    },
}

/// A small pool for one command, its sessions named `activity-store cli`.
pub(super) async fn connect(cli: &Cli) -> Result<PgPool, CliError> {
    let url = cli.resolve_database_url()?;
    match crate::db::pool(&url, "cli", 2, Duration::from_secs(5)).await {
        Ok(pool) => Ok(pool),
        Err(DbError::Unreachable { target, reason }) => Err(CliError::Unreachable {
            target: target.to_string(),
            reason,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `migrate up | down [N] | status`.
pub async fn migrate(cli: &Cli, action: &MigrateAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        MigrateAction::Up { shards } => {
            migrations::up(&pool).await?;
            let n = crate::log::shards::install(&pool, *shards).await?;
            println!("all migrations applied; the log has {n} shards");
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
            for d in crate::log::backfill::status(&pool).await? {
                println!("data  {}  {}", d.name, super::backfill::describe(&d));
            }
        }
        MigrateAction::Data { action } => super::backfill::run(&pool, action).await?,
    }
    Ok(())
}

/// `partitions list | ensure`.
pub async fn partitions(cli: &Cli, action: &PartitionsAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    let mut conn = pool.acquire().await.map_err(|source| DbError::Database {
        action: "connect to the database",
        source,
    })?;
    match action {
        PartitionsAction::List => list(&mut conn).await?,
        PartitionsAction::Detach { before, archive } => {
            drop(conn);
            detach(&pool, *before, archive.as_deref()).await?;
        }
        PartitionsAction::Attach { manifest } => {
            let a = crate::log::archive::attach(&pool, manifest).await?;
            println!(
                "{}: {} rows attached again ({} scrubbed of users erased since it was written)",
                a.month, a.rows, a.scrubbed
            );
        }
        PartitionsAction::Rescrub { dir } => {
            for r in crate::log::archive::rescrub(&pool, dir).await? {
                println!(
                    "{}: {} rows, {} scrubbed now; obeys erasures up to {}",
                    r.manifest.display(),
                    r.rows,
                    r.scrubbed,
                    r.erased_through
                );
            }
        }
        PartitionsAction::Ensure { months_ahead, from } => {
            ensure(&mut conn, *months_ahead, *from).await?;
        }
    }
    Ok(())
}

/// `partitions list`: small partitions counted, large ones estimated.
async fn list(conn: &mut sqlx::PgConnection) -> Result<(), CliError> {
    println!("{:<16} {:>18} {:>12}  bounds", "partition", "rows", "size");
    for p in crate::status::partitions(conn).await? {
        let rows = if p.rows_exact {
            p.rows.to_string()
        } else {
            format!("~{} (est.)", p.rows)
        };
        let size = format!("{:.1} MiB", p.bytes as f64 / 1_048_576.0);
        println!("{:<16} {rows:>18} {size:>12}  {}", p.name, p.bound);
    }
    Ok(())
}

/// `partitions ensure [--months-ahead N] [--from M]`.
async fn ensure(
    conn: &mut sqlx::PgConnection,
    months_ahead: usize,
    from: Option<Month>,
) -> Result<(), CliError> {
    let now = Month::of(Utc::now());
    let mut months = Month::range(now, months_ahead + 1);
    if let Some(mut m) = from {
        while m < now {
            months.push(m);
            m = m.next();
        }
    }
    let ensured = partitions::ensure(conn, &months).await?;
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
    Ok(())
}

/// `partitions detach --before M [--archive DIR]`.
async fn detach(
    pool: &PgPool,
    before: Month,
    archive: Option<&std::path::Path>,
) -> Result<(), CliError> {
    let detached = crate::log::archive::detach_before(pool, before, archive).await?;
    for d in &detached {
        match &d.manifest {
            Some(m) => println!(
                "{}: {} rows detached, archived to {} and dropped",
                d.month,
                d.rows,
                m.display()
            ),
            None => println!(
                "{}: {} rows detached (the table stays, detached)",
                d.month, d.rows
            ),
        }
    }
    println!(
        "{} month(s) detached; a rebuild now folds only the months still attached",
        detached.len()
    );
    Ok(())
}

/// `status [--json]`: prints the status; degraded is an error (exit code 1), after the
/// document is printed.
pub async fn status(cli: &Cli, json: bool, tenant: Option<String>) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    let config = StatusConfig {
        tenant,
        stream: cli.stream.clone(),
        bucket_prefix: cli.cache_config().bucket_prefix,
        max_lag: Duration::from_secs(cli.max_lag_secs),
        max_append: Duration::from_secs(cli.max_append_secs),
        ..Default::default()
    };
    let mut unreachable = None;
    let js = match cli.resolve_nats_url() {
        Ok(url) => {
            let (options, bare) = crate::nats::options(&url);
            let servers = crate::nats::servers(&bare);
            let connecting = options
                .connection_timeout(Duration::from_secs(3))
                .connect(servers.as_slice());
            match connecting.await {
                Ok(client) => Some(async_nats::jetstream::new(client)),
                Err(e) => {
                    unreachable = Some(format!(
                        "NATS at {} is unreachable: {e}",
                        crate::nats::redacted(&url)
                    ));
                    None
                }
            }
        }
        Err(_) => None,
    };
    let mut status = gather(&pool, js.as_ref(), &config)
        .await
        .map_err(|StatusError::Log(e)| CliError::Log(e))?;
    status.problems.extend(unreachable);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("a status always serialises")
        );
    } else {
        print!("{}", status.to_text());
    }
    if status.healthy() {
        Ok(())
    } else {
        Err(CliError::Degraded(status.problems))
    }
}

/// Parses `YYYY-MM`.
pub fn parse_month(s: &str) -> Result<Month, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map(|d| Month::of(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()))
        .map_err(|_| format!("`{s}` is not a month like 2025-01"))
}
