//! Integration tests against a real PostgreSQL and nats-server (see `tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod append;
mod cli;
mod crash;
mod errors;
mod fixtures;
mod ingest;
mod ingest_support;
mod migrations;
mod nats_platform;
mod partition_function;
mod producers;
mod publish;
mod recovery;
mod schema;
mod schema_privileges;
mod up;
