#![forbid(unsafe_code)]
//! activity-store: an event-sourced activity store.

pub mod model;
pub mod log;
pub mod ops;
