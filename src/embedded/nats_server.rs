//! A private `nats-server -js` on loopback: anyone may connect (tests' own servers), or,
//! for `up`, only the store and producers, each with a password.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::postgres::{spawn_logged, stop_child, wait_ready};
use super::{EmbeddedError, binaries, write_private};

/// How to run a private NATS server with JetStream.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// JetStream's store directory.
    pub store_dir: PathBuf,
    /// The client port; a free one when `None`.
    pub port: Option<u16>,
    /// Where the server's own log goes.
    pub log_file: PathBuf,
    /// Who may connect, and to do what; `None` lets anyone do anything (tests' own servers).
    pub auth: Option<NatsAuth>,
}

/// The embedded server's users: the store, which may do anything, and producers, who may
/// only publish commands and read refusals. Nobody connects without a password.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    /// The store's own password (user [`NatsAuth::STORE`]).
    pub store_password: String,
    /// Producers' password (user [`NatsAuth::PRODUCER`]).
    pub producer_password: String,
    /// Subjects producers may publish to, e.g. `activity.commands.>`.
    pub commands: String,
    /// Subjects producers may subscribe to for refusals, e.g. `activity.rejections.>`.
    pub rejections: String,
    /// The subject mapping that routes commands to ingest partitions, if there are several.
    pub mapping: Option<(String, String)>,
}

impl NatsAuth {
    /// The store's user.
    pub const STORE: &'static str = "activity-store";
    /// The producers' user.
    pub const PRODUCER: &'static str = "producer";

    /// The server's configuration: loopback, JetStream in `store_dir`, these users.
    fn config(&self, port: u16, store_dir: &Path) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
        format!(
            "listen: {listen}\njetstream {{\n  store_dir: {dir}\n}}\n\
             authorization {{\n  users: [\n\
             \x20   {{ user: {store}, password: {store_pw} }}\n\
             \x20   {{ user: {producer}, password: {producer_pw}, permissions: {{\n\
             \x20       publish: {{ allow: [{commands}] }}\n\
             \x20       subscribe: {{ allow: [{inbox}, {rejections}] }}\n\
             \x20   }} }}\n  ]\n}}\n{mappings}",
            listen = q(&format!("127.0.0.1:{port}")),
            dir = q(&store_dir.display().to_string()),
            store = q(Self::STORE),
            store_pw = q(&self.store_password),
            producer = q(Self::PRODUCER),
            producer_pw = q(&self.producer_password),
            commands = q(&self.commands),
            inbox = q("_INBOX.>"),
            rejections = q(&self.rejections),
            mappings = match &self.mapping {
                Some((from, to)) => format!("mappings {{\n  {}: {}\n}}\n", q(from), q(to)),
                None => String::new(),
            },
        )
    }
}

/// A running private `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    auth: Option<NatsAuth>,
}

impl NatsServer {
    /// Starts the server and waits until it accepts clients.
    pub async fn start(config: &NatsConfig) -> Result<NatsServer, EmbeddedError> {
        let bin = binaries::find("nats-server", "nats-server")?;
        let port = match config.port {
            Some(p) => p,
            None => binaries::free_port()?,
        };
        std::fs::create_dir_all(&config.store_dir)
            .map_err(|e| EmbeddedError::io(format!("create {}", config.store_dir.display()), e))?;
        let mut cmd = Command::new(bin);
        match &config.auth {
            Some(auth) => {
                let file = config.store_dir.with_extension("conf");
                write_private(&file, &auth.config(port, &config.store_dir))?;
                cmd.arg("-c").arg(file);
            }
            None => {
                cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]);
                cmd.arg(&config.store_dir);
            }
        }
        let child = spawn_logged(cmd, None, &config.log_file)?;
        let mut server = NatsServer {
            child,
            port,
            auth: config.auth.clone(),
        };
        let url = server.url();
        wait_ready(
            "nats-server",
            &mut server.child,
            &config.log_file,
            || async {
                let client = crate::nats::connect(&url).await?;
                client.flush().await?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            },
        )
        .await?;
        Ok(server)
    }

    /// The store's client URL (with its credentials when the server has users).
    pub fn url(&self) -> String {
        match &self.auth {
            Some(a) => format!(
                "nats://{}:{}@127.0.0.1:{}",
                NatsAuth::STORE,
                a.store_password,
                self.port
            ),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Producers' client URL: may publish commands and read refusals, nothing else.
    pub fn producer_url(&self) -> String {
        match &self.auth {
            Some(a) => format!(
                "nats://{}:{}@127.0.0.1:{}",
                NatsAuth::PRODUCER,
                a.producer_password,
                self.port
            ),
            None => self.url(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The port it listens on, on loopback.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Graceful shutdown.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        stop_child(self.child, Signal::SIGTERM, "nats-server").await
    }
}
