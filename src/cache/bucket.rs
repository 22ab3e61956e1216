//! KV buckets for cache entries, one per cache type, whose `max_age` is that type's TTL.
//!
//! `async_nats::jetstream::Context::create_key_value` first asks the server for account info,
//! whose reply from nats-server 2.9 (Debian's) async-nats 0.51 cannot parse. A bucket is only
//! a stream with a fixed shape, so this module creates that stream itself, with the settings
//! async-nats would use, and opens it as a bucket.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

/// What can go wrong setting up a bucket.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The bucket name breaks NATS's rules for bucket names.
    #[error("`{0}` is not a valid KV bucket name (letters, digits, `-` and `_` only)")]
    InvalidName(String),
    /// The server refused to create or update the bucket's stream.
    #[error("could not create or update KV bucket `{bucket}`: {source}")]
    Stream {
        /// The bucket.
        bucket: String,
        /// The server's answer.
        source: jetstream::context::CreateStreamError,
    },
    /// The bucket exists but could not be opened.
    #[error("could not open KV bucket `{bucket}`: {source}")]
    Open {
        /// The bucket.
        bucket: String,
        /// The server's answer.
        source: jetstream::context::KeyValueError,
    },
}

/// The stream behind bucket `bucket`: one value per key, entries expire after `ttl`.
pub fn bucket_stream_config(bucket: &str, ttl: Duration) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Creates the bucket if missing, sets its TTL if it changed, and opens it.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    ttl: Duration,
) -> Result<kv::Store, BucketError> {
    let valid = !bucket.is_empty()
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(BucketError::InvalidName(bucket.to_owned()));
    }
    js.create_or_update_stream(bucket_stream_config(bucket, ttl))
        .await
        .map_err(|source| BucketError::Stream {
            bucket: bucket.to_owned(),
            source,
        })?;
    js.get_key_value(bucket)
        .await
        .map_err(|source| BucketError::Open {
            bucket: bucket.to_owned(),
            source,
        })
}
