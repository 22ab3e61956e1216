//! Cache entries in NATS KV: a bucket per cached projection (its `max_age` is the TTL),
//! written through by the projector and read through by readers.

mod bucket;
mod entries;

pub use bucket::{BucketError, bucket_stream_config, ensure_bucket};
pub use entries::{CacheEntries, CacheError, Cached, key_token, user_key};
