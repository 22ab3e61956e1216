//! The read side's engine: projections (found in `projections/`), installed and folded over
//! windows of each shard's log positions, each window and its shard's checkpoint in one
//! transaction.

mod fold;
mod frontier;
mod install;
mod rebuilds;
mod registry;
pub mod shadow;
mod share;
mod tables;
pub mod tenant;
pub mod verify;
mod worker;

pub use fold::{FoldOutcome, fold_next};
pub use frontier::{Frontier, SHARD_BITS, shard_base, shard_of};
pub use install::{Installed, install, rebuild_to_current, reinstall};
pub use registry::{CacheSpec, Projection, ProjectionSource, projections};
pub use worker::{CacheConfig, ProjectConfig, Projector};

use crate::db::DbError;

/// What can stop a projection.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The log or a read table could not be read or written.
    #[error(transparent)]
    Log(#[from] DbError),
    /// A projection's folder is not valid.
    #[error("projection {name}: {problem}")]
    Invalid {
        /// The folder's name, or the projection's.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Cache entries could not be invalidated before a fold's commit: the fold waits.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    /// No projection has this name.
    #[error("no projection is named {0}")]
    Unknown(String),
    /// Another process is rebuilding this projection now.
    #[error("projection {0} is being rebuilt by another process")]
    RebuildBusy(String),
}
