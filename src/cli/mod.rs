//! The command line: flags, and the calls each subcommand makes into the library.

mod admin;
mod backfill;
mod dead_letters;
mod error;
mod forget;
mod progress;
mod publish;
mod query;
mod readers;
mod rebuild;
mod run;
mod schemas;
mod shards;
mod tokens;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::net::SocketAddr;

pub use admin::{MigrateAction, PartitionsAction};
pub use error::CliError;
pub use run::shutdown_signal;

use crate::embedded::read_env_file;

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
    /// PostgreSQL URL the ingestor connects as: a login granted `activity_writer`. Without
    /// it, the ingestor uses --database-url.
    #[arg(
        long,
        global = true,
        env = "INGEST_DATABASE_URL",
        hide_env_values = true
    )]
    pub ingest_database_url: Option<String>,
    /// NATS URL.
    #[arg(long, global = true, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Where `/metrics`, `/livez` and `/readyz` listen [default: 127.0.0.1:9464; `up` takes
    /// the port it used before, else 9464, else any free one].
    #[arg(long, global = true, env = "ACTIVITY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// The JetStream stream commands are published to (created if missing).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_STREAM",
        default_value = "ACTIVITY"
    )]
    pub stream: String,
    /// Replicas of the stream when the store creates it (3 in a JetStream cluster).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_STREAM_REPLICAS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub stream_replicas: u8,
    /// The subject prefix: commands go to `<prefix>.<tenant>`.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_SUBJECT_PREFIX",
        default_value = "activity.commands"
    )]
    pub subject_prefix: String,
    /// Seconds a delivered command may stay un-acked before JetStream redelivers it (set
    /// when the consumer is created).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_ACK_WAIT_SECS",
        default_value_t = 30
    )]
    pub ack_wait_secs: u64,
    /// Most commands committed in one ingest transaction. A batch takes what is waiting, up
    /// to this many (and --batch-max-bytes): a backlog goes in full batches, a trickle one
    /// command at a time; nothing waits for a batch to fill.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_BATCH_MAX",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch_max: u32,
    /// How long, in milliseconds, an idle ingestor waits for a first command before it
    /// checks the stream again.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_BATCH_WAIT_MS",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    pub batch_wait_ms: u64,
    /// TTL of user_summary cache entries, in seconds (the KV bucket's max_age); the
    /// projection's default (3600) when unset.
    #[arg(long, global = true, env = "ACTIVITY_USER_SUMMARY_TTL_SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub user_summary_ttl_secs: Option<u64>,
    /// Seconds a hung process keeps its leases (the ingest lead, its shards' folds) before
    /// PostgreSQL ends their session and another instance takes them; a dead process's
    /// end at once.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_LEASE_TTL_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub lease_ttl_secs: u64,
    /// Seconds a running role may go without progress before `/livez` fails.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_LIVENESS_TIMEOUT_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub liveness_timeout_secs: u64,
    /// A projection whose oldest unfolded event is older than this many seconds makes the
    /// store degraded (`status`, `/status`, `activity_store_healthy`).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_MAX_LAG_SECS",
        default_value_t = 60
    )]
    pub max_lag_secs: u64,
    /// Months of the log created ahead of this one, on a schedule, by whichever running
    /// store holds the maintenance lease.
    #[arg(long, global = true, env = "ACTIVITY_MONTHS_AHEAD", default_value_t = crate::log::MONTHS_AHEAD)]
    pub months_ahead: usize,
    /// An append transaction open longer than this many seconds (it holds the projectors
    /// back) makes the store degraded.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_MAX_APPEND_SECS",
        default_value_t = 10
    )]
    pub max_append_secs: u64,
    /// Most bytes of messages in one ingest batch (never less than the largest message the
    /// stream accepts).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_BATCH_MAX_BYTES",
        default_value_t = 8 << 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub batch_max_bytes: u64,
    /// The largest message the stream accepts, in bytes (its max_msg_size when the store
    /// creates it).
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_MAX_MESSAGE_BYTES",
        default_value_t = 1 << 20,
        value_parser = clap::value_parser!(u64).range(65_536..=64 << 20)
    )]
    pub max_message_bytes: u64,
    /// The HTTP API's settings.
    #[command(flatten)]
    pub api: run::ApiArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Whether it runs the store until stopped (`up`, `run`), rather than print and end.
    pub fn serves(&self) -> bool {
        matches!(self, Command::Up { .. } | Command::Run { .. })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a private PostgreSQL and NATS under --data-dir, migrate, then ingest and project
    /// until Ctrl-C.
    Up {
        /// Shards of the log: a new store gets 4 unless told; a store that holds tenants
        /// keeps its count unless told (it can grow; a shard holding a tenant stays).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
        shards: Option<i32>,
    },
    /// Run the store's roles against existing servers until Ctrl-C or SIGTERM.
    Run {
        /// Ingest commands from NATS into the log.
        #[arg(long)]
        ingest: bool,
        /// Fold the log into the read models.
        #[arg(long)]
        project: bool,
    },
    /// Rebuild a projection from the whole log (its tables and its cache entries).
    Rebuild {
        /// The projection: activity_feed, daily_activity or user_summary.
        projection: String,
        /// Before the swap, compare the rebuilt tables with the live ones at the same log
        /// position and print the differences; swap only if they match.
        #[arg(long)]
        verify: bool,
        /// With --verify: swap even if they differ.
        #[arg(long, requires = "verify")]
        force: bool,
        /// Rebuild this tenant only, from its own log: every other tenant's rows stay.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Read the read models of one tenant (as activity_reader, under row-level security).
    Query {
        #[command(subcommand)]
        read: query::Read,
        /// One JSON object a line instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Publish JSON lines (a file, or - for standard input) as commands.
    Publish {
        /// The file of JSON lines.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// At most this many messages a second.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Apply, revert or list the schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// The store at a glance: projections and their lag, the append transaction holding
    /// them back, ingest, partitions, dead letters, caches. Exits 1 when degraded.
    Status {
        /// The status as one JSON document.
        #[arg(long)]
        json: bool,
        /// Also how far every projection is behind this tenant's own log.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Where the tenants are among the log's shards, and moving one.
    Shards {
        #[command(subcommand)]
        action: shards::ShardsAction,
    },
    /// Tenants' activity schemas (data contracts): register, list and show them.
    Schemas {
        #[command(subcommand)]
        action: schemas::SchemasAction,
    },
    /// List, show, redrive or purge dead letters: refused commands and their reasons.
    DeadLetters {
        #[command(subcommand)]
        action: dead_letters::DeadLettersAction,
    },
    /// Erase a user everywhere: publishes forget_user, waits until every projection has
    /// folded it, then scrubs the log, the dead letters, the stream and the cache, and
    /// prints the receipt the database keeps.
    Forget {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The user.
        #[arg(long)]
        user: String,
        /// How long to wait for ingest and the projectors, in seconds.
        #[arg(long, default_value_t = 120)]
        wait_secs: u64,
    },
    /// Grant, revoke or list reader logins and the tenants they may read.
    Readers {
        #[command(subcommand)]
        action: readers::ReadersAction,
    },
    /// List or create the month partitions of the event log.
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
    },
}

impl Cli {
    /// The database URL: the flag or DATABASE_URL, else the one `up` wrote under --data-dir.
    pub fn resolve_database_url(&self) -> Result<String, CliError> {
        self.database_url
            .clone()
            .or_else(|| read_env_file(&self.data_dir.join("env"), "DATABASE_URL"))
            .ok_or(CliError::NoDatabase)
    }

    /// The ingestor's database URL: the flag or INGEST_DATABASE_URL, else the one `up` wrote
    /// under --data-dir (only when the database URL came from there too).
    pub fn resolve_ingest_database_url(&self) -> Option<String> {
        self.ingest_database_url.clone().or_else(|| {
            self.database_url
                .is_none()
                .then(|| read_env_file(&self.data_dir.join("env"), "INGEST_DATABASE_URL"))
                .flatten()
        })
    }

    /// The NATS URL: the flag or NATS_URL, else the one `up` wrote under --data-dir.
    pub fn resolve_nats_url(&self) -> Result<String, CliError> {
        self.nats_url
            .clone()
            .or_else(|| read_env_file(&self.data_dir.join("env"), "NATS_URL"))
            .ok_or(CliError::NoNats)
    }
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Up { shards } => run::up(&cli, *shards).await,
        Command::Run { ingest, project } => {
            if !ingest && !project && cli.api.api_addr.is_none() {
                return Err(CliError::NoRole);
            }
            let roles = run::Roles {
                ingest: *ingest,
                project: *project,
            };
            let mut config =
                cli.serve_config(cli.resolve_database_url()?, cli.resolve_nats_url()?, roles);
            config.api = cli.api.api_addr.map(|addr| cli.api.config(addr));
            run::serve_until_signal(config).await
        }
        Command::Query { read, json } => query::run(&cli, read, *json).await,
        Command::Rebuild {
            projection,
            verify,
            force,
            tenant,
        } => match tenant {
            Some(t) => rebuild::rebuild_tenant(&cli, projection, t, *verify, *force).await,
            None => rebuild::rebuild(&cli, projection, *verify, *force).await,
        },
        Command::Publish { input, rate } => {
            let report =
                publish::publish(&cli.resolve_nats_url()?, &cli.subject_prefix, input, *rate)
                    .await?;
            println!("published {}", report.published);
            for (line, why) in &report.invalid {
                println!("line {line} not sent: {why}");
            }
            match report.invalid.len() {
                0 => Ok(()),
                n => Err(CliError::NotAllPublished(n)),
            }
        }
        Command::Migrate { action } => admin::migrate(&cli, action).await,
        Command::Partitions { action } => admin::partitions(&cli, action).await,
        Command::Shards { action } => shards::shards(&cli, action).await,
        Command::Schemas { action } => schemas::run(&cli, action).await,
        Command::Status { json, tenant } => admin::status(&cli, *json, tenant.clone()).await,
        Command::DeadLetters { action } => dead_letters::run(&cli, action).await,
        Command::Readers { action } => readers::run(&cli, action).await,
        Command::Forget {
            tenant,
            user,
            wait_secs,
        } => forget::run(&cli, tenant, user, *wait_secs).await,
    }
}
