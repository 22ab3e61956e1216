//! Private PostgreSQL and NATS servers on loopback, for `up` and for the tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection;
use tokio::process::{Child, Command};

use super::EmbeddedError;
use super::binaries::{self, ServiceUser};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run a private PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The cluster's data directory; created with `initdb` when it holds no cluster yet.
    pub data_dir: PathBuf,
    /// The superuser `postgres`'s password, for loopback TCP connections.
    pub password: String,
    /// The port; a free one when `None`.
    pub port: Option<u16>,
    /// `false` turns off fsync for throwaway test clusters.
    pub durable: bool,
    /// Where the server's own log goes.
    pub log_file: PathBuf,
}

/// A running private PostgreSQL.
#[derive(Debug)]
pub struct PgServer {
    child: Child,
    port: u16,
    password: String,
}

impl PgServer {
    /// Initialises the cluster if needed, starts the server and waits until it accepts connections.
    pub async fn start(config: &PgConfig) -> Result<PgServer, EmbeddedError> {
        let postgres = binaries::find("postgres", "postgresql")?;
        let user = ServiceUser::for_postgres()?;
        if !config.data_dir.join("PG_VERSION").exists() {
            init_cluster(config, user).await?;
        }
        let port = match config.port {
            Some(p) => p,
            None => binaries::free_port()?,
        };
        let mut cmd = Command::new(postgres);
        cmd.arg("-D")
            .arg(&config.data_dir)
            .arg("-p")
            .arg(port.to_string());
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_owned(),
            format!("unix_socket_directories={}", config.data_dir.display()),
            "max_connections=200".to_owned(),
            // Where the server's time goes, per statement (`status`, the benches, the tests
            // that count round trips).
            "shared_preload_libraries=pg_stat_statements".to_owned(),
            "pg_stat_statements.track=all".to_owned(),
            // A terse log: no DETAIL lines (a unique violation's quotes a row) and no
            // statement that failed (it can hold data, or a password).
            "log_error_verbosity=terse".to_owned(),
            "log_min_error_statement=panic".to_owned(),
        ];
        if config.durable {
            // Room for the log's hot indexes, and fewer checkpoints during bulk appends.
            settings.extend(
                [
                    "shared_buffers=512MB",
                    "max_wal_size=4GB",
                    "wal_buffers=32MB",
                ]
                .map(String::from),
            );
        } else {
            settings.extend(
                [
                    "fsync=off",
                    "synchronous_commit=off",
                    "full_page_writes=off",
                ]
                .map(String::from),
            );
        }
        for s in settings {
            cmd.arg("-c").arg(s);
        }
        let child = spawn_logged(cmd, user, &config.log_file)?;
        let mut server = PgServer {
            child,
            port,
            password: config.password.clone(),
        };
        let url = server.url("postgres");
        wait_ready(
            "PostgreSQL",
            &mut server.child,
            &config.log_file,
            || async { sqlx::PgConnection::connect(&url).await.map(|_| ()) },
        )
        .await?;
        Ok(server)
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", &self.password, db)
    }

    /// The URL of database `db` as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The port it listens on, on loopback.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown: rolls back open transactions, checkpoints, exits.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        stop_child(self.child, Signal::SIGINT, "PostgreSQL").await
    }
}

async fn init_cluster(config: &PgConfig, user: Option<ServiceUser>) -> Result<(), EmbeddedError> {
    let initdb = binaries::find("initdb", "postgresql")?;
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| EmbeddedError::io(format!("create {}", dir.display()), e))?;
    let pwfile = dir.with_extension("pwfile");
    write_private(&pwfile, &config.password)?;
    if let Some(u) = user {
        u.own(dir)?;
        u.own(&pwfile)?;
    }
    let mut cmd = Command::new(initdb);
    cmd.arg("-D")
        .arg(dir)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C"]);
    cmd.args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
    cmd.arg(format!("--pwfile={}", pwfile.display()));
    if !config.durable {
        cmd.arg("--no-sync");
    }
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| EmbeddedError::io("run initdb", e));
    let _ = std::fs::remove_file(&pwfile);
    let out = out?;
    if !out.status.success() {
        return Err(EmbeddedError::CommandFailed {
            command: "initdb".into(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

pub(super) fn spawn_logged(
    mut cmd: Command,
    user: Option<ServiceUser>,
    log: &Path,
) -> Result<Child, EmbeddedError> {
    // Logs can quote data (a statement, a row in an error): only their owner reads them.
    let open = || {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .map_err(|e| EmbeddedError::io(format!("open log {}", log.display()), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| EmbeddedError::io(format!("restrict log {}", log.display()), e))?;
        Ok(f)
    };
    let (out, err) = (open()?, open()?);
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    // A server value dropped without `stop` (a panic) must not outlive its owner.
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| EmbeddedError::io("start server", e))
}

pub(super) async fn wait_ready<F, Fut, E>(
    server: &'static str,
    child: &mut Child,
    log: &Path,
    probe: F,
) -> Result<(), EmbeddedError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    loop {
        let last_error = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e.to_string(),
        };
        let exited = child.try_wait().ok().flatten().is_some();
        if exited || started.elapsed() > READY_TIMEOUT {
            let log_tail = log_tail(log);
            let _ = child.start_kill();
            return Err(EmbeddedError::NotReady {
                server,
                last_error,
                log_tail,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn stop_child(
    mut child: Child,
    signal: Signal,
    server: &'static str,
) -> Result<(), EmbeddedError> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(EmbeddedError::io(format!("wait for {server} to stop"), e)),
        Err(_) => {
            tracing::warn!(server, "did not stop in time; killing it");
            let _ = child.kill().await;
            Ok(())
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EmbeddedError::io(format!("write {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| EmbeddedError::io(format!("write {}", path.display()), e))
}
