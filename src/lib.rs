#![forbid(unsafe_code)]
//! activity-store: an event-sourced activity store.

pub mod api;
pub mod cache;
pub mod cli;
pub mod contracts;
pub mod db;
pub mod embedded;
pub mod erase;
pub mod health;
pub mod http;
pub mod ingest;
pub mod log;
pub mod model;
pub mod nats;
pub mod project;
pub mod query;
pub mod readers;
pub mod serve;
pub mod status;
