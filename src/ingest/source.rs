//! The stream the ingestor reads: created with bounds, its identity checked against the
//! checkpoint, its durable consumer (re)bound, and single messages read through the stream's
//! JSON API when the consumer cannot deliver them.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::PullConsumer, stream};
use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};

use super::inbound::Inbound;
use super::{IngestConfig, IngestError};

/// The stream as the ingestor last opened it, and the consumer bound to it.
#[derive(Clone)]
pub(super) struct Source {
    /// The stream.
    pub stream: stream::Stream,
    /// The durable pull consumer.
    pub consumer: PullConsumer,
    /// The stream's creation time: its identity.
    pub created: DateTime<Utc>,
    /// Bumped whenever the consumer is replaced: batches pulled before are not committed.
    pub generation: u64,
}

/// What the stream's identity and state say about the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChange {
    /// The stream the checkpoint was written for, and nothing is missing.
    Same,
    /// The checkpoint names no stream yet (a new store, or one older than stream identities):
    /// the stream's identity is recorded.
    Recorded,
    /// A different stream of the same name (deleted and created again, or restored): its
    /// sequences started again at 1, so ingest starts again from its first message.
    Recreated,
    /// The same stream, but it ends before the checkpoint (restored from an older copy):
    /// ingest continues after its last message.
    Older,
    /// Messages after the checkpoint were removed before they were ingested (purged, or
    /// aged out by the stream's limits); ingest continues from the first one left.
    Purged {
        /// The first sequence lost.
        from: u64,
        /// The last sequence lost.
        to: u64,
    },
}

impl StreamChange {
    /// Whether this is a reset the operator must hear about.
    pub fn is_reset(self) -> bool {
        !matches!(self, StreamChange::Same | StreamChange::Recorded)
    }
}

/// The stream's identity and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Its first sequence still held (0 or last + 1 when empty).
    pub first_seq: u64,
    /// Its last sequence ever stored.
    pub last_seq: u64,
}

/// Compares the checkpoint (last committed sequence, and the stream it was written for) with
/// the stream as it is; returns what changed and the sequence ingest continues after.
pub fn reconcile(
    checkpoint: u64,
    checkpoint_stream: Option<DateTime<Utc>>,
    now: StreamState,
) -> (StreamChange, u64) {
    match checkpoint_stream {
        Some(created) if created != now.created => (StreamChange::Recreated, 0),
        // Unknown identity and fewer messages than committed: a new stream, most likely.
        // Starting again from its first message loses nothing: the ledger drops repeats.
        None if checkpoint > now.last_seq => (StreamChange::Recreated, 0),
        None => (StreamChange::Recorded, checkpoint),
        Some(_) if checkpoint > now.last_seq => (StreamChange::Older, now.last_seq),
        Some(_) if now.first_seq > checkpoint + 1 && now.last_seq > checkpoint => (
            StreamChange::Purged {
                from: checkpoint + 1,
                to: now.first_seq - 1,
            },
            checkpoint,
        ),
        Some(_) => (StreamChange::Same, checkpoint),
    }
}

/// Opens the stream, creating it if missing (file storage, the duplicate window, and a
/// largest message, so no single message can exceed what a batch may hold).
pub(super) async fn open_stream(
    js: &jetstream::Context,
    config: &IngestConfig,
) -> Result<(stream::Stream, StreamState), IngestError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subjects.clone()],
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            max_message_size: config.max_message_bytes.min(i32::MAX as usize) as i32,
            num_replicas: config.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(|e| IngestError::Nats(format!("create stream {}: {e}", config.stream)))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| IngestError::Nats(format!("read stream {}: {e}", config.stream)))?;
    let state = StreamState {
        // PostgreSQL keeps microseconds: compare what both sides can hold.
        created: info.created.trunc_subsecs(6),
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
    };
    Ok((stream, state))
}

/// (Re)creates the durable pull consumer to deliver from stream sequence `from`.
pub(super) async fn bind_consumer(
    stream: &stream::Stream,
    config: &IngestConfig,
    from: u64,
) -> Result<PullConsumer, IngestError> {
    let deliver_policy = match from {
        0 | 1 => DeliverPolicy::All,
        seq => DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        },
    };
    // Deleting fails harmlessly when there is no such consumer yet.
    let _ = stream.delete_consumer(&config.durable).await;
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(config.durable.clone()),
            deliver_policy,
            // One ack per batch, for its last message, after the commit.
            ack_policy: jetstream::consumer::AckPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: (config.batch_max * 4) as i64,
            ..Default::default()
        })
        .await
        .map_err(|e| IngestError::Nats(format!("create consumer {}: {e}", config.durable)))
}

/// Reads the message at `seq` through the stream's JSON API (`STREAM.MSG.GET`), which never
/// passes the client's protocol parser: the way past a message whose subject or headers the
/// client cannot read. `None` when the stream does not hold that sequence.
pub(super) async fn read_raw(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
    stream_created: DateTime<Utc>,
) -> Result<Option<Inbound>, IngestError> {
    let nats = |what: String| IngestError::Nats(format!("read stream sequence {seq}: {what}"));
    let reply: serde_json::Value = js
        .request(
            format!("STREAM.MSG.GET.{stream}"),
            &serde_json::json!({ "seq": seq }),
        )
        .await
        .map_err(|e| nats(e.to_string()))?;
    if let Some(error) = reply.get("error") {
        // 10037: no message found.
        if error.get("err_code").and_then(|c| c.as_u64()) == Some(10037) {
            return Ok(None);
        }
        return Err(nats(error.to_string()));
    }
    let message = reply
        .get("message")
        .ok_or_else(|| nats("no message in the reply".into()))?;
    let subject = message
        .get("subject")
        .and_then(|s| s.as_str())
        .ok_or_else(|| nats("no subject".into()))?;
    let payload = match message.get("data").and_then(|d| d.as_str()) {
        Some(data) => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| nats(format!("undecodable data: {e}")))?,
        None => Vec::new(),
    };
    let published = message
        .get("time")
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    Ok(Some(Inbound {
        subject: subject.to_owned(),
        payload: payload.into(),
        stream_seq: seq,
        delivered: 1,
        published,
        stream_created: Some(stream_created),
        route: None,
    }))
}

/// Compares the stream with the checkpoint and, if they differ, points the checkpoint at the
/// stream as it is (fenced by the leader epoch); returns the sequence ingest continues after.
pub(super) async fn rebase(
    conn: &mut sqlx::PgConnection,
    config: &IngestConfig,
    checkpoint: super::registry::Checkpoint,
    state: StreamState,
) -> Result<u64, IngestError> {
    let (change, last) = reconcile(checkpoint.last_seq, checkpoint.stream_created, state);
    if change == StreamChange::Same {
        return Ok(last);
    }
    if change.is_reset() {
        tracing::error!(
            stream = %config.stream,
            ?change,
            checkpoint = checkpoint.last_seq,
            stream_first = state.first_seq,
            stream_last = state.last_seq,
            continue_after = last,
            "the stream is not the one the checkpoint was written for; continuing from what it holds"
        );
        metrics::counter!("activity_ingest_stream_resets_total").increment(1);
    }
    super::registry::rebase_checkpoint(
        conn,
        &config.stream,
        checkpoint.leader_epoch,
        last,
        state.created,
        change.is_reset(),
    )
    .await
    .map_err(IngestError::from)?;
    Ok(last)
}

/// The message as the ingestor decides it, with its stream metadata.
pub(super) fn inbound(
    m: &jetstream::Message,
    stream_created: chrono::DateTime<chrono::Utc>,
) -> Result<Inbound, IngestError> {
    let info = m
        .info()
        .map_err(|e| IngestError::Nats(format!("read message metadata: {e}")))?;
    Ok(Inbound {
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        stream_seq: info.stream_sequence,
        delivered: info.delivered.max(0) as u64,
        published: info.published,
        stream_created: Some(stream_created),
        route: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn state(created: i64, first_seq: u64, last_seq: u64) -> StreamState {
        StreamState {
            created: at(created),
            first_seq,
            last_seq,
        }
    }

    #[test]
    fn the_same_stream_continues_after_the_checkpoint() {
        assert_eq!(
            reconcile(10, Some(at(0)), state(0, 1, 15)),
            (StreamChange::Same, 10)
        );
        // Purged up to the checkpoint exactly: nothing lost.
        assert_eq!(
            reconcile(15, Some(at(0)), state(0, 16, 15)),
            (StreamChange::Same, 15)
        );
    }

    #[test]
    fn a_recreated_stream_starts_again_from_its_first_message() {
        assert_eq!(
            reconcile(10, Some(at(0)), state(5, 1, 3)),
            (StreamChange::Recreated, 0)
        );
        // Even when it has grown past the old checkpoint.
        assert_eq!(
            reconcile(10, Some(at(0)), state(5, 1, 30)),
            (StreamChange::Recreated, 0)
        );
    }

    #[test]
    fn an_unknown_identity_is_recorded_unless_the_stream_is_behind() {
        assert_eq!(
            reconcile(10, None, state(0, 1, 12)),
            (StreamChange::Recorded, 10)
        );
        assert_eq!(
            reconcile(10, None, state(0, 1, 4)),
            (StreamChange::Recreated, 0)
        );
    }

    #[test]
    fn an_older_copy_continues_after_its_last_message() {
        assert_eq!(
            reconcile(10, Some(at(0)), state(0, 1, 7)),
            (StreamChange::Older, 7)
        );
    }

    #[test]
    fn messages_removed_before_ingest_are_reported() {
        let (change, after) = reconcile(10, Some(at(0)), state(0, 14, 20));
        assert_eq!(change, StreamChange::Purged { from: 11, to: 13 });
        assert_eq!(after, 10);
        assert!(change.is_reset());
        assert!(!StreamChange::Recorded.is_reset());
    }
}
