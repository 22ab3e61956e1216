//! The read models' rows, as every reader (the CLI, the HTTP API, erasure's checks) sees them.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// One activity of a user's feed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FeedRow {
    pub tenant: String,
    pub user_id: String,
    pub event_id: uuid::Uuid,
    pub activity_type: String,
    pub occurred_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
}

/// One tenant's activity of one type on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DailyRow {
    pub tenant: String,
    pub day: NaiveDate,
    pub activity_type: String,
    pub events: i64,
    pub users: i64,
}

/// One user's summary, and the log position it reflects.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct UserRow {
    pub tenant: String,
    pub user_id: String,
    pub name: Option<String>,
    pub email: String,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub events: i64,
    pub last_activity_type: Option<String>,
    pub last_activity_position: Option<i64>,
    pub position: i64,
}
