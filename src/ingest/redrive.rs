//! Redriving dead letters: each command decided again against today's registry, in the
//! order the commands first arrived, through the same append path as ingest. The ledger makes
//! it exactly once, whether a redrive runs twice, two run at once, or ingest runs beside it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::batch::{archived_month, decode_all, month_of};
use super::inbound::Inbound;
use super::registry::{self, BatchView};
use super::write::{Checkpoint, write_batch};
use crate::db::{DbError, db};
use crate::log::EventLog;
use crate::log::partitions::Month;
use crate::model::{NewEvent, Rejection, TimeWindow};

/// A dead letter to redrive: its id and its message as it first arrived.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The dead letter's id.
    pub id: i64,
    /// Its reason before this redrive.
    pub reason: String,
    /// The message.
    pub message: Inbound,
}

impl Letter {
    /// What its command names, as far as its bytes say: command id, type, tenant and user
    /// (each `-` when absent or not a string).
    pub fn names(&self) -> [String; 4] {
        let doc: serde_json::Value =
            serde_json::from_slice(&self.message.payload).unwrap_or_default();
        ["id", "type", "tenant", "user"].map(|k| {
            doc.get(k).and_then(|v| v.as_str()).map_or_else(
                || "-".to_owned(),
                |v| crate::model::escape_text(v).into_owned(),
            )
        })
    }
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// These ids (any reason), if given.
    pub ids: Vec<i64>,
    /// Else those of this reason.
    pub reason: Option<String>,
    /// And of this tenant.
    pub tenant: Option<String>,
}

/// What became (or would become) of one dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted now: its event is appended.
    Accepted,
    /// Its command was applied since (published again, or redriven by someone else).
    Duplicate,
    /// Still refused, for this reason.
    Refused(Rejection),
}

/// The unresolved dead letters selected, whose bytes are kept whole (a `too_large` prefix
/// cannot be decided again), in the order their messages first arrived.
pub async fn unresolved(pool: &PgPool, s: &Selection) -> Result<Vec<Letter>, DbError> {
    type Row = (
        i64,
        String,
        Option<String>,
        Vec<u8>,
        Option<i64>,
        Option<i32>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = db(
        sqlx::query_as(
            "SELECT id, reason, subject, raw, stream_seq, delivery_count, received_at, stream_created \
             FROM dead_letters \
             WHERE resolved_at IS NULL AND length(raw) = raw_length \
               AND (cardinality($1::int8[]) = 0 OR id = ANY ($1)) \
               AND ($2::text IS NULL OR reason = $2) AND ($3::text IS NULL OR tenant = $3) \
             ORDER BY received_at, id",
        )
        .bind(&s.ids)
        .bind(&s.reason)
        .bind(&s.tenant)
        .fetch_all(pool)
        .await,
        "read the dead letters to redrive",
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(id, reason, subject, raw, seq, delivered, received_at, created)| Letter {
                id,
                reason,
                message: Inbound {
                    subject: subject.unwrap_or_default(),
                    payload: raw.into(),
                    stream_seq: seq.unwrap_or(0).max(0) as u64,
                    delivered: delivered.unwrap_or(1).max(1) as u64,
                    published: received_at,
                    stream_created: created,
                    // Redriven by an operator: decided again wherever it was stored.
                    route: None,
                },
            },
        )
        .collect())
}

/// Decides `letters` again, in order, and unless `dry_run` commits what is accepted and
/// records every verdict on its dead letter, in one transaction.
pub async fn redrive(
    log: &EventLog,
    letters: &[Letter],
    window: &TimeWindow,
    dry_run: bool,
) -> Result<Vec<Verdict>, DbError> {
    let messages: Vec<Inbound> = letters.iter().map(|l| l.message.clone()).collect();
    let mut archived: HashSet<Month> = HashSet::new();
    loop {
        let mut tx = db(log.pool().begin().await, "begin a redrive")?;
        let (verdicts, view, events) =
            decide(&mut tx, &messages, window, &archived, log.contracts()).await?;
        if dry_run {
            return Ok(verdicts);
        }
        let months: Vec<Month> = events.iter().map(|e| Month::of(e.occurred_at)).collect();
        let missing = log.unknown_months(&months);
        if !missing.is_empty() {
            drop(tx);
            archived.extend(log.ensure_months(&missing).await?);
            if log.unknown_months(&months).len() == missing.len() && archived.is_empty() {
                return Err(DbError::NoPartition(format!("months {missing:?}")));
            }
            continue;
        }
        let append = crate::log::Append::new(&events);
        let granted = write_batch(&mut tx, Checkpoint::None, &view, &[], &append).await?;
        append.copy(&mut tx, granted).await?;
        record(&mut tx, letters, &verdicts).await?;
        db(tx.commit().await, "commit a redrive")?;
        return Ok(verdicts);
    }
}

type Decided = (Vec<Verdict>, super::decide::RegistryView, Vec<NewEvent>);

/// Decides the messages in order under the append lock, as ingest does.
async fn decide(
    tx: &mut PgConnection,
    messages: &[Inbound],
    window: &TimeWindow,
    archived: &HashSet<Month>,
    contracts: &crate::contracts::Cache,
) -> Result<Decided, DbError> {
    let decoded = decode_all(messages, window);
    let commands = decoded.iter().filter_map(|d| d.as_ref().ok());
    let BatchView {
        mut applied,
        registry: mut view,
        ..
    } = registry::read_view(tx, None, 0, commands, contracts).await?;
    let mut verdicts = Vec::with_capacity(messages.len());
    let mut events = Vec::new();
    for (m, d) in messages.iter().zip(decoded) {
        let verdict = match d {
            Err(rejection) => Verdict::Refused(rejection),
            Ok(command) => {
                let key = (command.tenant.clone(), command.id);
                let month = month_of(&command, m);
                if applied.contains(&key) {
                    Verdict::Duplicate
                } else if archived.contains(&month) {
                    Verdict::Refused(archived_month(month))
                } else {
                    match view.decide(command, m.published, lineage(m)) {
                        Ok(event) => {
                            applied.insert(key);
                            events.push(event);
                            Verdict::Accepted
                        }
                        Err(rejection) => Verdict::Refused(rejection),
                    }
                }
            }
        };
        verdicts.push(verdict);
    }
    Ok((verdicts, view, events))
}

fn lineage(m: &Inbound) -> crate::model::Lineage {
    crate::model::Lineage {
        subject: Some(m.subject.clone()),
        stream_seq: (m.stream_seq > 0).then_some(m.stream_seq),
        delivery_count: Some(m.delivered),
    }
}

/// Marks each dead letter with its verdict: resolved (redriven or duplicate), or refused
/// again with its new reason. A letter another redrive resolved first is left as it is.
async fn record(
    tx: &mut PgConnection,
    letters: &[Letter],
    verdicts: &[Verdict],
) -> Result<(), DbError> {
    let (mut ids, mut resolutions) = (Vec::new(), Vec::new());
    let (mut refused, mut reasons, mut fields, mut texts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (l, v) in letters.iter().zip(verdicts) {
        match v {
            Verdict::Accepted => {
                ids.push(l.id);
                resolutions.push("redriven");
            }
            Verdict::Duplicate => {
                ids.push(l.id);
                resolutions.push("duplicate");
            }
            Verdict::Refused(r) => {
                refused.push(l.id);
                reasons.push(r.reason.code());
                fields.push(r.field);
                texts.push(crate::model::without_nul(&r.message).into_owned());
            }
        }
    }
    db(
        sqlx::query(
            "UPDATE dead_letters d SET resolution = k.resolution, resolved_at = now(), \
                    redrives = d.redrives + 1 \
             FROM unnest($1::int8[], $2::text[]) AS k(id, resolution) \
             WHERE d.id = k.id AND d.resolved_at IS NULL",
        )
        .bind(&ids)
        .bind(&resolutions)
        .execute(&mut *tx)
        .await,
        "resolve redriven dead letters",
    )?;
    db(
        sqlx::query(
            "UPDATE dead_letters d SET reason = k.reason, field = k.field, message = k.message, \
                    redrives = d.redrives + 1 \
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[]) AS k(id, reason, field, message) \
             WHERE d.id = k.id AND d.resolved_at IS NULL",
        )
        .bind(&refused)
        .bind(&reasons)
        .bind(&fields)
        .bind(&texts)
        .execute(&mut *tx)
        .await,
        "record the new reasons of dead letters still refused",
    )?;
    Ok(())
}
