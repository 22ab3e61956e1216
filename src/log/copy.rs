//! PostgreSQL's binary COPY format, for appending events without a statement per row.
//!
//! Format: a signature and two zero words, then per row a field count and each field as a
//! length-prefixed value in the type's binary send format, then a -1 trailer.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{DbError, db};
use crate::model::NewEvent;

/// The log columns a COPY fills; `recorded_at` and `tx_id` take their defaults.
pub const EVENT_COLUMNS: &str = "position, event_id, command_id, tenant, user_id, event_type, \
     activity_type, data, occurred_at, received_at, subject, stream_seq, delivery_count, \
     tenant_position, schema_version";
const EVENT_FIELDS: i16 = 15;
/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A binary COPY payload being built.
pub struct CopyRows {
    buf: Vec<u8>,
}

impl CopyRows {
    /// An empty payload with room for about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 19);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyRows { buf }
    }

    /// Starts a row of `fields` values.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// A NULL.
    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// A `bigint`.
    pub fn int8(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }

    /// A `smallint`.
    pub fn int2(&mut self, v: i16) {
        self.field(&v.to_be_bytes());
    }

    /// A `bigint` or NULL.
    pub fn opt_int8(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int8(v),
            None => self.null(),
        }
    }

    /// An `integer` or NULL.
    pub fn opt_int4(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.field(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    /// A `uuid`.
    pub fn uuid(&mut self, v: Uuid) {
        self.field(v.as_bytes());
    }

    /// A `text`.
    pub fn text(&mut self, v: &str) {
        self.field(v.as_bytes());
    }

    /// A `text` or NULL.
    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// A `timestamptz`.
    pub fn timestamptz(&mut self, v: DateTime<Utc>) {
        self.int8(v.timestamp_micros() - PG_EPOCH_OFFSET_MICROS);
    }

    /// A `jsonb`: format version 1, then the JSON text, serialised straight into the buffer.
    pub fn jsonb<T: serde::Serialize>(&mut self, v: &T) {
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.push(1);
        serde_json::to_writer(&mut self.buf, v).expect("a JSON map always serialises");
        let len = (self.buf.len() - len_at - 4) as i32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A builder for the rest of a payload whose header was already sent.
    pub fn continuation() -> Self {
        CopyRows { buf: Vec::new() }
    }

    /// Takes the bytes built so far, leaving the payload open for more rows.
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    /// The finished payload.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// Where an event goes: its log position and its tenant position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Its place in the log.
    pub position: i64,
    /// Its place in its tenant's log.
    pub tenant_position: i64,
}

/// Encodes events at their places as rows for `COPY events (EVENT_COLUMNS)`.
pub fn encode_events<'a>(events: impl Iterator<Item = (Place, &'a NewEvent)>) -> Vec<u8> {
    let mut rows = CopyRows::with_capacity(events.size_hint().0 * 320);
    for (place, e) in events {
        encode_event(&mut rows, place, e);
    }
    rows.finish()
}

/// Appends one event's row.
pub fn encode_event(rows: &mut CopyRows, place: Place, e: &NewEvent) {
    rows.row(EVENT_FIELDS);
    rows.int8(place.position);
    rows.uuid(e.event_id);
    rows.uuid(e.command_id);
    rows.text(&e.tenant);
    rows.opt_text(e.user_id.as_deref());
    rows.text(e.event_type.as_str());
    rows.opt_text(e.activity_type.as_deref());
    rows.jsonb(&e.data);
    rows.timestamptz(e.occurred_at);
    rows.timestamptz(e.received_at);
    rows.opt_text(e.lineage.subject.as_deref());
    rows.opt_int8(e.lineage.stream_seq.map(|s| s as i64));
    rows.opt_int4(
        e.lineage
            .delivery_count
            .map(|d| d.min(i32::MAX as u64) as i32),
    );
    rows.int8(place.tenant_position);
    rows.int2(e.event_type.schema_version());
}

/// Rows encoded per COPY message: the server works on one while the next is encoded.
const COPY_CHUNK_ROWS: usize = 1_000;

/// COPYs `events` into the log at their places, in one COPY whose rows are encoded in chunks
/// while the server works on the one before. The places must be the ones `begin_append`
/// handed out in this transaction.
pub(super) async fn copy_rows(
    conn: &mut PgConnection,
    events: &[(Place, &NewEvent)],
) -> Result<(), DbError> {
    let Some(last_index) = events.len().checked_sub(1) else {
        return Ok(());
    };
    let statement = format!("COPY events ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = db(
        conn.copy_in_raw(&statement).await,
        "start COPY into the log",
    )?;
    let mut rows = CopyRows::with_capacity(COPY_CHUNK_ROWS.min(events.len()) * 320);
    for (i, (place, e)) in events.iter().enumerate() {
        encode_event(&mut rows, *place, e);
        let chunk = if i == last_index {
            Some(std::mem::replace(&mut rows, CopyRows::continuation()).finish())
        } else if (i + 1) % COPY_CHUNK_ROWS == 0 {
            Some(rows.take())
        } else {
            None
        };
        if let Some(bytes) = chunk
            && let Err(e) = copy.send(bytes).await
        {
            let _ = copy.abort("send failed").await;
            return Err(classify(e));
        }
    }
    copy.finish().await.map_err(classify)?;
    Ok(())
}

fn classify(e: sqlx::Error) -> DbError {
    // 23514 is check_violation; PostgreSQL raises it without a constraint name only when no
    // partition accepts the row. Decided by SQLSTATE, never by (translatable) message text.
    let no_partition = e
        .as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23514") && d.constraint().is_none());
    if no_partition {
        DbError::NoPartition(e.to_string())
    } else {
        DbError::Database {
            action: "COPY into the log",
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn header_fields_and_trailer() {
        let mut rows = CopyRows::with_capacity(0);
        rows.row(3);
        rows.int8(1);
        rows.null();
        rows.timestamptz(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap());
        let bytes = rows.finish();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn jsonb_is_length_prefixed_with_version_byte() {
        let mut rows = CopyRows::with_capacity(0);
        rows.jsonb(&serde_json::json!({"a": 1}));
        let bytes = rows.finish();
        assert_eq!(&bytes[19..], b"\0\0\0\x08\x01{\"a\":1}\xff\xff");
    }
}
