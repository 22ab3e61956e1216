//! The read layer: the read models' rows and SQL in one place, read by the CLI, the HTTP API
//! and erasure's checks, each read of one tenant under row-level security; the one cache
//! read-through and the one way to open a projection's cache for reading.

mod cached;
mod left;
mod opener;
mod reads;
mod rows;
mod sql;

pub use cached::{
    CACHE_WAIT, CachedRead, fill, may_read, peek, servable, serve, user_through_cache,
};
pub use left::rows_left;
pub use opener::{open_cache, summary_cache};
pub use reads::{daily, daily_in, feed, feed_in, scoped, user, user_at, user_in};
pub use rows::{DailyRow, FeedRow, UserRow};
pub use sql::{Cursor, DAILY, Daily, Feed, USER_SUMMARY};
