//! Tenant-scoped reads of the read models, each in a transaction as `activity_reader` with
//! the tenant set, so row-level security applies even to a privileged connection.

mod cached;
mod reads;

pub use cached::{CachedRead, fill, may_read, servable, user_through_cache};
pub use reads::{
    DailyRow, FEED_BY_METADATA_SQL, FEED_SQL, FeedRow, UserRow, daily, feed, user, user_at,
};
