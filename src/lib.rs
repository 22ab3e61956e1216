#![forbid(unsafe_code)]
//! activity-store: an event-sourced activity store.

pub mod api;
pub mod cache;
pub mod cli;
pub mod db;
pub mod erase;
pub mod http;
pub mod ingest;
pub mod log;
pub mod model;
pub mod nats;
pub mod ops;
pub mod project;
pub mod query;
pub mod readers;
