//! Integration tests against a real PostgreSQL and nats-server (see `tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod append;
mod append_path;
mod archived;
mod batching;
mod cache;
mod cache_isolation;
mod cli;
mod cli_query;
mod crash;
mod dead_letters;
mod erasure;
mod erasure_path;
mod errors;
mod faults;
mod faults_cluster;
mod fixtures;
mod fuzz;
mod hostile;
mod ingest;
mod ingest_support;
mod isolation;
pub mod liveness;
mod migrations;
mod monitoring;
mod nats_platform;
mod partition_function;
mod producers;
mod project_support;
mod projections;
mod publish;
mod raw_nats;
mod readers;
mod rebuild;
mod rebuild_verify;
mod recovery;
mod replay;
mod retention;
mod round_trips;
mod schema;
mod schema_privileges;
mod status;
mod stream_reset;
mod up;
mod version_change;
