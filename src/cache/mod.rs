//! Cache entries in NATS KV. So far: the buckets, created in a way nats-server 2.9 accepts.

mod bucket;

pub use bucket::{BucketError, bucket_stream_config, ensure_bucket};
