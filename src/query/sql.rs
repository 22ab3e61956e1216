//! The read models' SQL: every page in index order (keyset on `occurred_at` and the event id,
//! never OFFSET), every statement scoped to one tenant.

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

const FEED_COLUMNS: &str = "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata FROM analytics.activity_feed";

/// One user's summary: $1 tenant, $2 user.
pub const USER_SUMMARY: &str = "SELECT tenant, user_id, name, email, first_seen, last_seen, events, \
     last_activity_type, last_activity_position, position \
     FROM analytics.user_summary WHERE tenant = $1 AND user_id = $2";

/// One user's summary with the projection's checkpoint (`as_of`) and epoch, in one snapshot.
pub(super) const USER_SUMMARY_AT: &str = "SELECT tenant, user_id, name, email, first_seen, last_seen, events, \
     last_activity_type, last_activity_position, position, \
     analytics.projection_position('user_summary') AS as_of, \
     analytics.projection_epoch('user_summary') AS epoch \
     FROM analytics.user_summary WHERE tenant = $1 AND user_id = $2";

/// A tenant's days: $1 tenant, $2 first day, $3 last day (both inclusive), $4 type, $5 at
/// most this many rows (NULL: all).
pub const DAILY: &str = "SELECT tenant, day, activity_type, events, users FROM analytics.daily_activity \
     WHERE tenant = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) \
     AND ($4::text IS NULL OR activity_type = $4) ORDER BY day, activity_type LIMIT $5";

/// What a tenant's days are filtered by.
#[derive(Debug, Clone, Default)]
pub struct Daily {
    /// The tenant.
    pub tenant: String,
    /// The first day, inclusive.
    pub from: Option<NaiveDate>,
    /// The last day, inclusive.
    pub to: Option<NaiveDate>,
    /// Rows of this activity type.
    pub activity_type: Option<String>,
    /// At most this many rows; all when `None`.
    pub limit: Option<i64>,
}

/// Where a page ends: the last row's `occurred_at` and event id (rows come newest first,
/// ties by event id, descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The row's `occurred_at`.
    pub at: DateTime<Utc>,
    /// The row's event id.
    pub event_id: Uuid,
}

impl Cursor {
    /// The opaque text a client passes back.
    pub fn encode(&self) -> String {
        let text = format!("{}.{}", self.at.timestamp_micros(), self.event_id.simple());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// The cursor `v` encodes, if it is one `encode` gave (with a year from 1 to 9999).
    pub fn decode(v: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once('.')?;
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))?;
        let event_id = Uuid::try_parse(id).ok()?;
        Some(Cursor { at, event_id })
    }
}

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
            .push_bind(self.limit.max(0));
        q
    }
}
