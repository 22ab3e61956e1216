//! The API's reads, as SQL: each page in index order (keyset on `occurred_at` and the event
//! id, never OFFSET), each run under row-level security by a session the token scoped.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};

use super::params::Cursor;

const FEED_COLUMNS: &str = "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata FROM analytics.activity_feed";

/// One user's summary: $1 tenant, $2 user.
pub const USER_SUMMARY: &str = "SELECT tenant, user_id, name, email, first_seen, last_seen, events, \
     last_activity_type, last_activity_position, position \
     FROM analytics.user_summary WHERE tenant = $1 AND user_id = $2";

/// A tenant's days: $1 tenant, $2 first day, $3 last day (both inclusive), $4 type, $5 at
/// most this many rows.
pub const DAILY: &str = "SELECT tenant, day, activity_type, events, users FROM analytics.daily_activity \
     WHERE tenant = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) \
     AND ($4::text IS NULL OR activity_type = $4) ORDER BY day, activity_type LIMIT $5";

/// What a feed is filtered by: a tenant's, or one user's.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// The tenant.
    pub tenant: String,
    /// Only this user's activities (the user-time index), if given.
    pub user: Option<String>,
    /// Rows whose metadata contains this object (the GIN index).
    pub metadata: Option<serde_json::Value>,
    /// Rows of this activity type.
    pub activity_type: Option<String>,
    /// Rows that occurred at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Rows that occurred before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Rows after this cursor.
    pub after: Option<Cursor>,
    /// At most this many rows.
    pub limit: i64,
}

impl Feed {
    /// The query, every value bound; `prefix` goes before it (`EXPLAIN `, in tests).
    pub fn query(&self, prefix: &str) -> QueryBuilder<Postgres> {
        let mut q = QueryBuilder::new(prefix);
        q.push(FEED_COLUMNS).push(" WHERE tenant = ");
        q.push_bind(self.tenant.clone());
        if let Some(u) = &self.user {
            q.push(" AND user_id = ").push_bind(u.clone());
        }
        if let Some(m) = &self.metadata {
            q.push(" AND metadata @> ")
                .push_bind(sqlx::types::Json(m.clone()));
        }
        if let Some(t) = &self.activity_type {
            q.push(" AND activity_type = ").push_bind(t.clone());
        }
        if let Some(from) = self.from {
            q.push(" AND occurred_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            q.push(" AND occurred_at < ").push_bind(to);
        }
        if let Some(c) = self.after {
            q.push(" AND (occurred_at, event_id) < (")
                .push_bind(c.at)
                .push(", ")
                .push_bind(c.event_id)
                .push(")");
        }
        q.push(" ORDER BY occurred_at DESC, event_id DESC LIMIT ")
            .push_bind(self.limit);
        q
    }
}
