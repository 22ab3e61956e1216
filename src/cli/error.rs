//! What a subcommand can fail with.

use crate::db::DbError;
use crate::embedded::UpError;
use crate::serve::ServeError;

/// What a subcommand can fail with; `main` turns it into a message and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The embedded servers.
    #[error(transparent)]
    Up(#[from] UpError),
    /// The log or its database.
    #[error(transparent)]
    Log(#[from] DbError),
    /// No database to talk to.
    #[error(
        "no database: set DATABASE_URL (or --database-url), or start one with `activity-store up`"
    )]
    NoDatabase,
    /// The database could not be reached where the URL says.
    #[error(
        "cannot reach PostgreSQL at {target}: {reason}. Is the store running? Start it with \
         `scripts/up.sh` (or `activity-store up`), or set DATABASE_URL (or --database-url) to \
         your database"
    )]
    Unreachable {
        /// Host, port, database and user (never the password).
        target: String,
        /// What the driver said.
        reason: String,
    },
    /// Running the roles failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// NATS could not be reached or refused a message.
    #[error("NATS: {0}")]
    Nats(String),
    /// The input could not be read.
    #[error("cannot read input: {0}")]
    Input(String),
    /// Nothing to run.
    #[error("nothing to run: pass --ingest, --project, --api-addr or any of them together")]
    NoRole,
    /// A read found nothing.
    #[error("{0}")]
    NotFound(String),
    /// The projector could not start.
    #[error(transparent)]
    Project(#[from] crate::project::ProjectError),
    /// Some lines were not published.
    #[error("{0} line(s) were not valid commands and were not sent")]
    NotAllPublished(usize),
    /// No NATS to talk to.
    #[error("no NATS: set NATS_URL (or --nats-url), or start one with `activity-store up`")]
    NoNats,
    /// A verified rebuild found the rebuilt tables differ from the live ones.
    #[error("the rebuilt {0} differs from the live one: nothing swapped (--force swaps anyway)")]
    Unverified(String),
    /// A month could not be detached or attached.
    #[error(transparent)]
    Archive(#[from] crate::log::archive::ArchiveError),
    /// An erasure could not finish.
    #[error(transparent)]
    Erase(#[from] crate::erase::EraseError),
    /// `status` found the store degraded.
    #[error("the store is degraded: {}", .0.join("; "))]
    Degraded(Vec<String>),
    /// A change to the readers was refused.
    #[error(transparent)]
    Readers(#[from] crate::readers::ReadersError),
    /// A schema was not registered or found.
    #[error(transparent)]
    Contract(#[from] crate::contracts::ContractError),
    /// A data migration did not run to the end (it resumes where it stopped).
    #[error(transparent)]
    Backfill(#[from] crate::log::backfill::BackfillError),
    /// Waiting for a signal failed.
    #[error("could not listen for signals: {0}")]
    Signal(std::io::Error),
}
