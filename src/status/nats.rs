//! The stream's side of `status`: the ingest stream and its consumer, and the cache buckets.
//! NATS being unreachable, or a stream missing, is reported as a problem, never an error.

use async_nats::jetstream;

use super::{CacheStatus, Status, StatusConfig, StreamStatus};
use crate::project::projections;

pub(super) async fn read(
    js: &jetstream::Context,
    config: &StatusConfig,
    streams: &[(String, String)],
    status: &mut Status,
) {
    for (name, durable) in streams {
        match stream(js, name, durable).await {
            Ok(nats) => {
                if let Some(i) = status.ingest.iter_mut().find(|i| &i.stream == name) {
                    i.nats = Some(nats);
                }
            }
            Err(e) => status.problems.push(e),
        }
    }
    for p in projections().unwrap_or_default() {
        let Some(spec) = p.cache else { continue };
        let bucket = format!("{}{}", config.bucket_prefix, spec.bucket);
        let entries = match js.get_stream(format!("KV_{bucket}")).await {
            Ok(mut s) => s.info().await.ok().map(|i| i.state.messages),
            Err(_) => None,
        };
        status.caches.push(CacheStatus {
            projection: p.name.clone(),
            bucket,
            entries,
        });
    }
}

async fn stream(
    js: &jetstream::Context,
    name: &str,
    durable: &str,
) -> Result<StreamStatus, String> {
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| format!("stream {name} cannot be read: {e}"))?;
    let state = stream
        .info()
        .await
        .map_err(|e| format!("stream {name} cannot be read: {e}"))?
        .state
        .clone();
    let mut out = StreamStatus {
        first_seq: state.first_sequence,
        last_seq: state.last_sequence,
        messages: state.messages,
        pending: 0,
        ack_pending: 0,
        redelivered: 0,
    };
    // No consumer yet (no ingestor ever ran): everything the stream holds is pending.
    match stream
        .get_consumer::<jetstream::consumer::pull::Config>(durable)
        .await
    {
        Ok(mut consumer) => {
            let info = consumer
                .info()
                .await
                .map_err(|e| format!("consumer {durable} cannot be read: {e}"))?;
            out.pending = info.num_pending;
            out.ack_pending = info.num_ack_pending as u64;
            out.redelivered = info.num_redelivered as u64;
        }
        Err(_) => out.pending = state.messages,
    }
    Ok(out)
}
