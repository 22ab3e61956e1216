//! Cache entries in NATS KV: a bucket per cached projection (its `max_age` is the TTL),
//! written through by the projector and read through by readers.

mod bucket;
mod cached;
mod entries;
mod mac;

pub use bucket::{BucketError, bucket_stream_config, ensure_bucket};
pub use cached::{Cached, key_token, user_key};
pub use entries::{CacheEntries, CacheError};
pub use mac::CacheMac;
