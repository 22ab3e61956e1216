//! The event log: migrations, month partitions and batched, idempotent appends.

mod append;
pub mod archive;
pub mod copy;
mod grant;
pub mod migrate;
pub mod partitions;

pub use append::{APPEND_CHANNEL, EventLog, MONTHS_AHEAD, append_in};
pub use grant::{Append, AppendOutcome, GrantedRow};
