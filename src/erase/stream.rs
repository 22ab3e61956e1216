//! The stream's copies. The stream is a buffer, not a second copy: once ingest has committed
//! the outcome of every message the stream held when the erasure began (waiting at most the
//! configured time), every committed message is purged. A message ingest has not reached is
//! never removed (that would lose a command): if it names the user, the receipt names it.

use async_nats::jetstream;
use base64::Engine;
use chrono::SubsecRound;
use sqlx::PgPool;

use super::{EraseConfig, EraseError, wait};
use crate::model::Personal;

/// What the erasure did to the stream.
#[derive(Debug, Default)]
pub(super) struct StreamScrub {
    /// Committed messages purged.
    pub purged: i64,
    /// Sequences not yet ingested that name the user.
    pub left: Vec<i64>,
}

fn nats(what: &str, e: impl std::fmt::Display) -> EraseError {
    EraseError::Nats(format!("{what}: {e}"))
}

pub(super) async fn scrub(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &EraseConfig,
    personal: &Personal,
) -> Result<StreamScrub, EraseError> {
    let mut stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| nats(&format!("open stream {}", config.stream), e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| nats("read the stream", e))?
        .clone();
    let held = info.state.last_sequence;
    let checkpoint = wait::ingested_past(pool, config, held).await?;
    // The checkpoint counts in this stream only if it was written for it: a stream made
    // again since (and not yet looked at by ingest) holds nothing committed, so nothing of
    // it is purged; what in it names the user is only named.
    let created = info.created.trunc_subsecs(6);
    let ours = wait::checkpoint_stream(pool, &config.stream).await? == Some(created);
    let mut out = StreamScrub::default();
    let from = if ours && checkpoint > 0 {
        out.purged = stream
            .purge()
            .sequence(checkpoint + 1)
            .await
            .map_err(|e| nats(&format!("purge stream {}", config.stream), e))?
            .purged as i64;
        checkpoint + 1
    } else {
        info.state.first_sequence
    };
    for seq in from..=held {
        if let Some((subject, headers, data)) = message(js, &config.stream, seq).await? {
            if personal.in_text(&subject) || personal.in_bytes(&headers) || personal.in_bytes(&data)
            {
                out.left.push(seq as i64);
            }
        }
    }
    Ok(out)
}

/// A message's subject, header bytes and data, through the stream's JSON API (which never
/// passes the client's protocol parser, whatever bytes the subject holds).
async fn message(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> Result<Option<(String, Vec<u8>, Vec<u8>)>, EraseError> {
    let reply: serde_json::Value = js
        .request(
            format!("STREAM.MSG.GET.{stream}"),
            &serde_json::json!({ "seq": seq }),
        )
        .await
        .map_err(|e| nats(&format!("read stream sequence {seq}"), e))?;
    let Some(m) = reply.get("message") else {
        // 10037: no message at that sequence (deleted, or purged meanwhile).
        if reply.pointer("/error/err_code").and_then(|c| c.as_u64()) == Some(10037) {
            return Ok(None);
        }
        return Err(nats(&format!("read stream sequence {seq}"), reply));
    };
    let bytes = |field: &str| {
        m.get(field)
            .and_then(|d| d.as_str())
            // Bytes the server sent that are not base64 are looked at as they are.
            .map(|d| {
                base64::engine::general_purpose::STANDARD
                    .decode(d)
                    .unwrap_or_else(|_| d.as_bytes().to_vec())
            })
            .unwrap_or_default()
    };
    let subject = m.get("subject").and_then(|s| s.as_str()).unwrap_or("");
    Ok(Some((subject.to_owned(), bytes("hdrs"), bytes("data"))))
}
