//! What ingest takes in and gives back, below every step that handles it: a message as the
//! stream delivered it, a refusal as its producer may see it, and a refused message as its
//! dead letter stores it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{Lineage, Rejection, escape_text, without_nul};

/// A message as the ingestor received it from the stream.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The subject it was published to.
    pub subject: String,
    /// Its bytes, exactly as published.
    pub payload: bytes::Bytes,
    /// Its stream sequence.
    pub stream_seq: u64,
    /// How many times it has been delivered.
    pub delivered: u64,
    /// When the stream stored it: the default `occurred_at`, the same on every redelivery.
    pub published: DateTime<Utc>,
    /// When the stream was created: its identity, which a recreated stream changes.
    pub stream_created: Option<DateTime<Utc>>,
    /// With several ingest partitions, the one whose stream held it and their count: its
    /// tenant must be routed there (see `partitions`).
    pub route: Option<(u32, u32)>,
}

impl Inbound {
    /// The tenant named by the subject's last token (`activity.commands.<tenant>`).
    pub fn subject_tenant(&self) -> &str {
        self.subject.rsplit('.').next().unwrap_or_default()
    }

    pub(super) fn lineage(&self) -> Lineage {
        Lineage {
            subject: Some(self.subject.clone()),
            stream_seq: Some(self.stream_seq),
            delivery_count: Some(self.delivered),
        }
    }
}

/// A refused command as its producer may see it: the reason, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The tenant its subject named.
    pub tenant: String,
    /// Its id, if one could be read.
    pub command_id: Option<uuid::Uuid>,
    /// The stable reason code.
    pub reason: &'static str,
    /// The field at fault, if one.
    pub field: Option<&'static str>,
    /// What is wrong, naming the field and the rule.
    pub message: String,
    /// Its stream sequence.
    pub stream_seq: i64,
}

/// How many bytes of a refused message a dead letter keeps: the largest command accepted, so
/// a refusal of any command within the limit keeps all of it.
pub const DEAD_LETTER_RAW_PREFIX: usize = crate::model::fields::MAX_COMMAND_BYTES;

/// A refused message, as stored in `dead_letters`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub(super) rejection: Rejection,
    pub(super) subject: String,
    pub(super) stream_seq: i64,
    pub(super) delivered: i32,
    pub(super) command_id: Option<Uuid>,
    pub(super) tenant: String,
    pub(super) raw: bytes::Bytes,
    pub(super) received_at: DateTime<Utc>,
    pub(super) stream_created: Option<DateTime<Utc>>,
}

/// The command id of a refused message whose other fields did not decode, if its `id` is a
/// UUID: its producer can then still learn its fate by id (command status, rejections).
fn id_of(payload: &[u8]) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Uuid,
    }
    serde_json::from_slice::<Id>(payload).ok().map(|i| i.id)
}

impl DeadLetter {
    /// What a producer may learn of this refusal: never its bytes. None when the subject
    /// names no tenant a subject can carry back.
    pub fn refusal(&self) -> Option<Refusal> {
        crate::model::fields::tenant_slug("tenant", &self.tenant)
            .is_ok()
            .then(|| Refusal {
                tenant: self.tenant.clone(),
                command_id: self.command_id,
                reason: self.rejection.reason.code(),
                field: self.rejection.field,
                message: self.rejection.message.clone(),
                stream_seq: self.stream_seq,
            })
    }

    /// The dead letter of message `m`, refused for `rejection`. Every text is made storable
    /// (the subject escaped, NUL kept out of the message), so writing it never fails on the
    /// message's bytes.
    pub fn of(m: &Inbound, command_id: Option<Uuid>, rejection: Rejection) -> Self {
        let rejection = Rejection {
            message: without_nul(&rejection.message).into_owned(),
            ..rejection
        };
        DeadLetter {
            rejection,
            subject: escape_text(&m.subject).into_owned(),
            stream_seq: m.stream_seq.min(i64::MAX as u64) as i64,
            delivered: m.delivered.min(i32::MAX as u64) as i32,
            command_id: command_id.or_else(|| id_of(&m.payload)),
            tenant: escape_text(m.subject_tenant()).into_owned(),
            raw: m.payload.clone(),
            received_at: m.published,
            stream_created: m.stream_created,
        }
    }
}
