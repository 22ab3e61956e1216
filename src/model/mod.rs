//! The command model: decoding, validation, reason codes and events. Pure: no I/O.

mod command;
pub mod escape;
mod event;
pub mod fields;
mod personal;
mod reason;

pub use command::{Command, CommandBody, decode};
pub use escape::{escape_text, without_nul};
pub use event::{EventType, Lineage, NewEvent};
pub use fields::TimeWindow;
pub use personal::Personal;
pub use reason::{Reason, Rejection};
