//! The command line: flags, and the calls each subcommand makes into the library.

mod admin;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::log::LogError;
use crate::ops::{Embedded, UpError, read_env_file};

/// Event-sourced activity store: NATS JetStream commands into a partitioned PostgreSQL log.
#[derive(Debug, Parser)]
#[command(name = "activity-store", version)]
pub struct Cli {
    /// The folder of the embedded default (`up`); other commands read its `env` file when
    /// DATABASE_URL is not set.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_DATA_DIR",
        default_value = ".activity-store"
    )]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the store's database.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a private PostgreSQL and NATS under --data-dir, migrate, and run until Ctrl-C.
    Up,
    /// Apply, revert or list the schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// List or create the month partitions of the event log.
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
    },
}

/// `migrate` actions.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last N applied migrations.
    Down {
        /// How many to revert.
        #[arg(default_value_t = 1)]
        steps: usize,
    },
    /// Show each migration and whether it is applied.
    Status,
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
        #[arg(long, value_parser = admin::parse_month)]
        from: Option<crate::log::partitions::Month>,
    },
}

/// What a subcommand can fail with; `main` turns it into a message and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The embedded servers.
    #[error(transparent)]
    Up(#[from] UpError),
    /// The log or its database.
    #[error(transparent)]
    Log(#[from] LogError),
    /// No database to talk to.
    #[error(
        "no database: set DATABASE_URL (or --database-url), or start one with `activity-store up`"
    )]
    NoDatabase,
    /// Waiting for a signal failed.
    #[error("could not listen for signals: {0}")]
    Signal(std::io::Error),
}

impl Cli {
    /// The database URL: the flag or DATABASE_URL, else the one `up` wrote under --data-dir.
    pub fn resolve_database_url(&self) -> Result<String, CliError> {
        self.database_url
            .clone()
            .or_else(|| read_env_file(&self.data_dir.join("env"), "DATABASE_URL"))
            .ok_or(CliError::NoDatabase)
    }
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Up => up(&cli).await,
        Command::Migrate { action } => admin::migrate(&cli, action).await,
        Command::Partitions { action } => admin::partitions(&cli, action).await,
    }
}

async fn up(cli: &Cli) -> Result<(), CliError> {
    let embedded = Embedded::start(&cli.data_dir).await?;
    println!("DATABASE_URL={}", embedded.database_url());
    println!("NATS_URL={}", embedded.nats_url());
    tracing::info!(env_file = %embedded.env_file().display(), "activity-store is up; Ctrl-C to stop");
    let waited = shutdown_signal().await;
    tracing::info!("stopping");
    embedded.stop().await?;
    waited
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(CliError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(CliError::Signal)?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
