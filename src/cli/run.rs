//! `run` and `up`: the store's roles (and the HTTP API) until Ctrl-C or SIGTERM, and the
//! flags they take beyond the global ones.

use std::net::SocketAddr;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Cli, CliError};
use crate::embedded::{Embedded, read_env_file};
use crate::ingest::IngestConfig;
use crate::serve::{ServeConfig, ServeError, serve};

/// The HTTP API's flags.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Serve the HTTP API here (`run`; `up` serves it on 127.0.0.1:8080, or a free port).
    #[arg(long, global = true, env = "ACTIVITY_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// PostgreSQL URL the API reads as: a login granted `activity_reader` and bound to no
    /// tenant, so only tokens scope it. Without it, the API reads as --database-url.
    #[arg(
        long = "api-database-url",
        global = true,
        env = "API_DATABASE_URL",
        hide_env_values = true
    )]
    pub api_database_url: Option<String>,
    /// The longest, in milliseconds, a request waits for X-Activity-Min-Position or a
    /// command's `wait_ms`.
    #[arg(long, global = true, env = "ACTIVITY_API_MAX_WAIT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub api_max_wait_ms: u64,
    /// API reads running longer than this many milliseconds are cancelled.
    #[arg(long, global = true, env = "ACTIVITY_API_STATEMENT_TIMEOUT_MS",
          default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub api_statement_timeout_ms: u64,
    /// Refusals are published on `<prefix>.<tenant>` for producers to subscribe to.
    #[arg(
        long,
        global = true,
        env = "ACTIVITY_REJECTIONS_PREFIX",
        default_value = "activity.rejections"
    )]
    pub rejections_prefix: String,
}

impl ApiArgs {
    /// The API's settings, listening on `addr`.
    pub fn config(&self, addr: SocketAddr) -> crate::api::ApiConfig {
        crate::api::ApiConfig {
            addr,
            max_wait: std::time::Duration::from_millis(self.api_max_wait_ms),
            statement_timeout: std::time::Duration::from_millis(self.api_statement_timeout_ms),
            bucket_prefix: String::new(),
        }
    }
}

impl Cli {
    /// The API's database URL: the flag or API_DATABASE_URL, else the one `up` wrote under
    /// --data-dir (only when the database URL came from there too).
    pub fn resolve_api_database_url(&self) -> Option<String> {
        self.api.api_database_url.clone().or_else(|| {
            self.database_url
                .is_none()
                .then(|| read_env_file(&self.data_dir.join("env"), "API_DATABASE_URL"))
                .flatten()
        })
    }

    /// Cache settings from the flags.
    pub fn cache_config(&self) -> crate::project::CacheConfig {
        crate::project::CacheConfig {
            ttls: self
                .user_summary_ttl_secs
                .map(|s| ("user_summary".to_owned(), std::time::Duration::from_secs(s)))
                .into_iter()
                .collect(),
            bucket_prefix: String::new(),
        }
    }

    pub(super) fn serve_config(
        &self,
        database_url: String,
        nats_url: String,
        roles: Roles,
    ) -> ServeConfig {
        ServeConfig {
            database_url,
            ingest_database_url: self.resolve_ingest_database_url(),
            nats_url,
            metrics_addr: self
                .metrics_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], METRICS_PORT))),
            up_file: None,
            ingest: roles.ingest,
            project: roles.project,
            project_config: crate::project::ProjectConfig {
                lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
                ..Default::default()
            },
            cache: self.cache_config(),
            liveness_timeout: std::time::Duration::from_secs(self.liveness_timeout_secs),
            max_lag: std::time::Duration::from_secs(self.max_lag_secs),
            max_append: std::time::Duration::from_secs(self.max_append_secs),
            status_every: std::time::Duration::from_secs(10),
            months_ahead: self.months_ahead,
            maintenance_every: std::time::Duration::from_secs(3600),
            api: None,
            api_database_url: self.resolve_api_database_url(),
            ingest_config: IngestConfig {
                stream: self.stream.clone(),
                replicas: self.stream_replicas as usize,
                subjects: format!("{}.*", self.subject_prefix),
                ack_wait: std::time::Duration::from_secs(self.ack_wait_secs.max(1)),
                batch_max: self.batch_max as usize,
                batch_max_bytes: self.batch_max_bytes as usize,
                max_message_bytes: self.max_message_bytes as usize,
                batch_wait: std::time::Duration::from_millis(self.batch_wait_ms),
                rejections: self.api.rejections_prefix.clone(),
                lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs),
                ..Default::default()
            },
        }
    }
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub ingest: bool,
    pub project: bool,
}

/// The metrics endpoint's port unless told otherwise.
const METRICS_PORT: u16 = 9464;

pub async fn up(cli: &Cli, shards: Option<i32>) -> Result<(), CliError> {
    // Before the servers start: starting rewrites the env file that names the ports used last.
    let env_file = cli.data_dir.join("env");
    let api_addr = cli
        .api
        .api_addr
        .unwrap_or_else(|| free_port(&env_file, "API_URL", 8080));
    let metrics_addr = cli
        .metrics_addr
        .unwrap_or_else(|| free_port(&env_file, "METRICS_URL", METRICS_PORT));
    let subjects = crate::embedded::ProducerSubjects {
        commands: cli.subject_prefix.clone(),
        rejections: cli.api.rejections_prefix.clone(),
    };
    let embedded = Embedded::start(&cli.data_dir, &subjects, shards).await?;
    let (api_addr, metrics_addr) = (concrete(api_addr), concrete(metrics_addr));
    let api_url = format!("http://{api_addr}");
    let metrics_url = format!("http://{metrics_addr}");
    embedded.publish_urls(&api_url, &metrics_url)?;
    // One write, its failure ignored: a reader that stopped reading (`up | head`) must not
    // stop the store.
    let urls = format!(
        "DATABASE_URL={}\nINGEST_DATABASE_URL={}\nAPI_DATABASE_URL={}\nAPI_URL={api_url}\n\
         METRICS_URL={metrics_url}\nNATS_URL={}\nPRODUCER_NATS_URL={}\n",
        embedded.database_url(),
        embedded.ingest_database_url(),
        embedded.api_database_url(),
        embedded.nats_url(),
        embedded.producer_nats_url()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(urls.as_bytes()).and_then(|()| out.flush());
    }
    let roles = Roles {
        ingest: true,
        project: true,
    };
    let mut config = cli.serve_config(embedded.database_url(), embedded.nats_url(), roles);
    config.ingest_database_url = Some(embedded.ingest_database_url());
    config.api_database_url = Some(embedded.api_database_url());
    config.api = Some(cli.api.config(api_addr));
    config.metrics_addr = metrics_addr;
    config.up_file = Some(embedded.env_file().to_path_buf());
    let served = serve_until_signal(config).await;
    embedded.stop().await?;
    served
}

/// `addr`, with port 0 (any free port) made the free port it is now, so the URL `up` writes
/// is one that answers.
fn concrete(addr: SocketAddr) -> SocketAddr {
    if addr.port() != 0 {
        return addr;
    }
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .unwrap_or(addr)
}

/// Where `up` listens for `key` (`API_URL`, `METRICS_URL`): the port it used before if free,
/// else `default` if free, else any free port (URLs users saved keep working when they can).
fn free_port(env_file: &std::path::Path, key: &str, default: u16) -> SocketAddr {
    let previous = read_env_file(env_file, key).and_then(|u| {
        u.rsplit_once(':')
            .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok())
    });
    let free = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.local_addr())
            .ok()
    };
    previous
        .and_then(free)
        .or_else(|| free(default))
        .or_else(|| free(0))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default)))
}

/// Runs the roles until Ctrl-C or SIGTERM, then lets them finish what they hold. Returns at
/// once if they stop on their own (a start-up error).
pub async fn serve_until_signal(config: ServeConfig) -> Result<(), CliError> {
    let shutdown = CancellationToken::new();
    let mut roles = tokio::spawn(serve(config, shutdown.clone()));
    let signalled = tokio::select! {
        s = shutdown_signal() => s,
        ended = &mut roles => return joined(ended),
    };
    tracing::info!("stopping");
    shutdown.cancel();
    let served = joined(roles.await);
    signalled.and(served)
}

fn joined(r: Result<Result<(), ServeError>, tokio::task::JoinError>) -> Result<(), CliError> {
    r.map_err(|e| CliError::Nats(format!("the store's roles panicked: {e}")))?
        .map_err(CliError::from)
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
