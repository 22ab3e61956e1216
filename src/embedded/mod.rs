//! The embedded default of `up`: a private PostgreSQL and nats-server on loopback, data
//! under one folder, the store's logins and the environment file that names them.

mod binaries;
mod nats_server;
mod postgres;
mod up;

pub use binaries::{ServiceUser, free_port};
pub use nats_server::{NatsAuth, NatsConfig, NatsServer};
pub use postgres::{PgConfig, PgServer, write_private};
pub use up::{DATABASE, Embedded, ProducerSubjects, UpError, read_env_file};

/// What can go wrong starting or stopping the embedded servers.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A server binary is not installed.
    #[error(
        "`{binary}` was not found on PATH, in /usr/lib/postgresql/*/bin or /usr/sbin; install it with `sudo apt-get install {package}`"
    )]
    MissingBinary {
        /// The binary looked for.
        binary: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// Running as root without a `postgres` user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` user to run it as; install the `postgresql` package or run as an ordinary user"
    )]
    NoServiceUser,
    /// A file-system or process step failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A set-up command exited with an error.
    #[error("{command} failed: {output}")]
    CommandFailed {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
    /// A server exited or did not accept connections in time.
    #[error("{server} did not start ({last_error}); the end of its log:\n{log_tail}")]
    NotReady {
        /// Which server.
        server: &'static str,
        /// Why the last connection attempt failed.
        last_error: String,
        /// The last lines of its log.
        log_tail: String,
    },
}

impl EmbeddedError {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        EmbeddedError::Io {
            action: action.into(),
            source,
        }
    }
}
