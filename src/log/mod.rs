//! The event log: migrations, month partitions and batched, idempotent appends.

mod append;
pub mod archive;
pub mod backfill;
pub mod copy;
mod grant;
pub mod migrate;
pub mod partitions;
pub mod shards;

pub use append::{EventLog, MONTHS_AHEAD, append_in};
pub use grant::{APPEND_CHANNEL, Append, AppendOutcome, GrantedRow};
