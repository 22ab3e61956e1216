//! Events: what the log records once a command is accepted. One command, one event.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::command::{Command, CommandBody};

/// The kinds of event in the log (`events.event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A tenant was created.
    TenantCreated,
    /// A user was registered in a tenant.
    UserRegistered,
    /// A user's email changed.
    UserEmailChanged,
    /// A user did something.
    ActivityRecorded,
    /// A user was erased.
    UserForgotten,
}

impl EventType {
    /// The name stored in `events.event_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TenantCreated => "tenant_created",
            EventType::UserRegistered => "user_registered",
            EventType::UserEmailChanged => "user_email_changed",
            EventType::ActivityRecorded => "activity_recorded",
            EventType::UserForgotten => "user_forgotten",
        }
    }

    /// The version of the payload's shape this store writes (`events.schema_version`);
    /// older events are read in it through the upcasters of migration 0032
    /// (`event_schema_version` there must say the same: `tests/it/upcasting.rs` checks).
    pub fn schema_version(self) -> i16 {
        match self {
            // 2: `name` became `display_name`.
            EventType::UserRegistered => 2,
            _ => 1,
        }
    }
}

/// Where a command came from: kept with its event for ever.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// The NATS subject it was published to.
    pub subject: Option<String>,
    /// Its JetStream stream sequence.
    pub stream_seq: Option<u64>,
    /// How many times JetStream had delivered it.
    pub delivery_count: Option<u64>,
}

/// An event ready to append; the log gives it a position and `recorded_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// This event's id.
    pub event_id: Uuid,
    /// The id of the command that caused it.
    pub command_id: Uuid,
    /// The tenant slug.
    pub tenant: String,
    /// The user, for every event but `tenant_created`.
    pub user_id: Option<String>,
    /// What happened.
    pub event_type: EventType,
    /// For `activity_recorded`, the activity type.
    pub activity_type: Option<String>,
    /// The payload: the metadata of an activity, the name and email of a user, the name of a tenant.
    pub data: Map<String, Value>,
    /// When it happened (UTC); the partition key.
    pub occurred_at: DateTime<Utc>,
    /// When the store received the command.
    pub received_at: DateTime<Utc>,
    /// Where the command came from.
    pub lineage: Lineage,
}

impl NewEvent {
    /// The one event an accepted command appends.
    pub fn from_command(command: Command, received_at: DateTime<Utc>, lineage: Lineage) -> Self {
        let mut data = Map::new();
        let mut activity_type = None;
        let mut occurred_at = received_at;
        let user_id = command.body.user().map(str::to_owned);
        let event_type = match command.body {
            CommandBody::CreateTenant { name } => {
                data.insert("name".into(), Value::String(name));
                EventType::TenantCreated
            }
            CommandBody::RegisterUser { email, name, .. } => {
                data.insert("email".into(), Value::String(email));
                if let Some(name) = name {
                    data.insert("display_name".into(), Value::String(name));
                }
                EventType::UserRegistered
            }
            CommandBody::ChangeUserEmail { email, .. } => {
                data.insert("email".into(), Value::String(email));
                EventType::UserEmailChanged
            }
            CommandBody::RecordActivity {
                activity_type: kind,
                occurred_at: at,
                metadata,
                ..
            } => {
                activity_type = Some(kind);
                occurred_at = at;
                data = metadata;
                EventType::ActivityRecorded
            }
            CommandBody::ForgetUser { .. } => EventType::UserForgotten,
        };
        NewEvent {
            event_id: Uuid::now_v7(),
            command_id: command.id,
            tenant: command.tenant,
            user_id,
            event_type,
            activity_type,
            data,
            occurred_at,
            received_at,
            lineage,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::model::{TimeWindow, decode};

    fn event_of(body: serde_json::Value) -> NewEvent {
        let now = Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap();
        let bytes = serde_json::to_vec(&body).unwrap();
        let command = decode(&bytes, now, &TimeWindow::default()).unwrap();
        NewEvent::from_command(command, now, Lineage::default())
    }

    #[test]
    fn an_activity_carries_its_type_time_and_metadata() {
        let e = event_of(
            json!({"type": "record_activity", "id": "6f1d3c1e-8f4a-4a57-9d1e-1f0b2c3d4e5f",
            "tenant": "acme", "user": "u1", "activity_type": "login",
            "occurred_at": "2025-01-15T10:30:00Z", "metadata": {"ip": "10.0.0.1"}}),
        );
        assert_eq!(e.event_type, EventType::ActivityRecorded);
        assert_eq!(e.activity_type.as_deref(), Some("login"));
        assert_eq!(e.occurred_at.to_rfc3339(), "2025-01-15T10:30:00+00:00");
        assert_eq!(Value::Object(e.data), json!({"ip": "10.0.0.1"}));
        assert_eq!(e.user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn other_events_occur_when_received() {
        let e = event_of(
            json!({"type": "create_tenant", "id": "6f1d3c1e-8f4a-4a57-9d1e-1f0b2c3d4e5f",
            "tenant": "acme", "name": "Acme"}),
        );
        assert_eq!(
            (e.event_type, e.user_id.as_deref()),
            (EventType::TenantCreated, None)
        );
        assert_eq!(e.occurred_at, e.received_at);
        let e = event_of(
            json!({"type": "register_user", "id": "6f1d3c1e-8f4a-4a57-9d1e-1f0b2c3d4e5f",
            "tenant": "acme", "user": "u", "email": "u@x.io", "name": "U"}),
        );
        // Version 2 of user_registered: the name is a display name, and called so.
        assert_eq!(
            (Value::Object(e.data), e.event_type.schema_version()),
            (json!({"email": "u@x.io", "display_name": "U"}), 2)
        );
        let e = event_of(
            json!({"type": "forget_user", "id": "6f1d3c1e-8f4a-4a57-9d1e-1f0b2c3d4e5f",
            "tenant": "acme", "user": "u"}),
        );
        assert_eq!((e.event_type, e.data.len()), (EventType::UserForgotten, 0));
        assert_eq!(EventType::UserEmailChanged.as_str(), "user_email_changed");
        for t in [
            EventType::TenantCreated,
            EventType::UserEmailChanged,
            EventType::ActivityRecorded,
            EventType::UserForgotten,
        ] {
            assert_eq!(t.schema_version(), 1, "{t:?}");
        }
    }
}
