#![forbid(unsafe_code)]
//! activity-store: an event-sourced activity store.

pub mod model;
