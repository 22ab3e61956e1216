//! The command model: decoding, validation, reason codes and events. Pure: no I/O.

mod command;
mod event;
pub mod fields;
mod reason;

pub use command::{Command, CommandBody, decode};
pub use event::{EventType, Lineage, NewEvent};
pub use fields::TimeWindow;
pub use reason::{Reason, Rejection};
