//! `forget --tenant T --user U`: erasure that reaches every copy, with its receipt.

use std::time::Duration;

use super::{Cli, CliError, admin::connect};
use crate::erase::{self, EraseConfig};

/// Runs an erasure and prints its receipt.
pub async fn run(cli: &Cli, tenant: &str, user: &str, wait_secs: u64) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    let url = cli.resolve_nats_url()?;
    let client = crate::nats::connect(&url)
        .await
        .map_err(|e| CliError::Nats(format!("connect to {}: {e}", crate::nats::redacted(&url))))?;
    let js = async_nats::jetstream::new(client);
    let config = EraseConfig {
        subject_prefix: cli.subject_prefix.clone(),
        stream: cli.stream.clone(),
        bucket_prefix: cli.cache_config().bucket_prefix,
        wait: Duration::from_secs(wait_secs),
    };
    eprintln!("forgetting {user} of {tenant}: waiting for ingest and the projectors");
    let receipt = erase::forget(&pool, &js, &config, tenant, user, |n| {
        eprintln!("scrubbed {n} events of the log");
    })
    .await?;
    println!(
        "erasure {} of a user of {}: complete",
        receipt.id, receipt.tenant
    );
    println!("  forgotten at log position {}", receipt.forgotten_at);
    println!(
        "  log: {} events now under {}",
        receipt.log_events, receipt.pseudonym
    );
    if receipt.detached_events > 0 {
        println!(
            "  detached months: {} events scrubbed",
            receipt.detached_events
        );
    }
    println!("  dead letters scrubbed: {}", receipt.dead_letters);
    println!(
        "  stream: {} committed commands removed",
        receipt.stream_messages
    );
    if !receipt.stream_left.is_empty() {
        println!(
            "  stream: NOT removed, not yet ingested, naming the user: sequences {:?}; \
             run forget again once ingest has passed them",
            receipt.stream_left
        );
    }
    println!("  cache entries purged: {}", receipt.cache_entries);
    println!("  read-model rows left: {}", receipt.read_model_rows);
    for a in &receipt.archives {
        println!(
            "  archive written before the erasure, may hold the tenant's events: {a} \
             (scrubbed when attached; `partitions rescrub DIR` rewrites it now)"
        );
    }
    println!(
        "  requested {}, completed {}",
        receipt.requested_at.to_rfc3339(),
        receipt
            .completed_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    );
    Ok(())
}
