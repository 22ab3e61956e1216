//! The heart of the one append path: a batch's command ids recorded in the ledger and
//! positions handed out for the fresh ones (`begin_append`, which takes the append lock),
//! the projectors notified, in one statement that a caller may extend with writes of its
//! own (ingest adds its registry, dead letters and checkpoint, so a batch costs one round
//! trip before its COPY); then the fresh events COPYed at those positions.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sqlx::PgConnection;
use uuid::Uuid;

use super::copy::{Place, copy_rows};
use crate::db::{DbError, db};
use crate::model::NewEvent;

/// What one append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Events written.
    pub appended: usize,
    /// The least and the greatest position given to them (a batch of one shard's tenants
    /// takes every position between).
    pub positions: Option<(i64, i64)>,
    /// Command ids already in the log (or twice in the batch): nothing was written for them.
    pub duplicates: Vec<Uuid>,
}

/// What the statement hands back: the caller's check, the fresh (tenant, command id) pairs
/// with each one's tenant's new head and the last position handed out on its tenant's shard,
/// and the notify's (unused) result.
pub type GrantedRow = (
    i64,
    Vec<String>,
    Vec<Uuid>,
    Vec<i64>,
    Vec<i64>,
    Option<String>,
);

/// The channel each committed batch notifies, with no payload: any login may LISTEN, and
/// the log's positions are the store's alone.
pub const APPEND_CHANNEL: &str = "activity_events";

/// A batch on its way into the log.
pub struct Append<'a> {
    events: &'a [NewEvent],
    /// The distinct (tenant, command id) pairs, in key order: the ledger's index is walked
    /// once instead of hit at random. Command ids are scoped to their tenant.
    tenants: Vec<&'a str>,
    ids: Vec<Uuid>,
    /// Command ids twice in the batch (after the first).
    repeated: Vec<Uuid>,
    started: Instant,
}

impl<'a> Append<'a> {
    /// The batch `events`, its repeats set aside.
    pub fn new(events: &'a [NewEvent]) -> Self {
        let mut seen = HashSet::with_capacity(events.len());
        let mut repeated = Vec::new();
        let mut candidates: Vec<(&str, Uuid)> = Vec::with_capacity(events.len());
        for e in events {
            if seen.insert((e.tenant.as_str(), e.command_id)) {
                candidates.push((e.tenant.as_str(), e.command_id));
            } else {
                repeated.push(e.command_id);
            }
        }
        candidates.sort_unstable();
        let (tenants, ids) = candidates.into_iter().unzip();
        Append {
            events,
            tenants,
            ids,
            repeated,
            started: Instant::now(),
        }
    }

    /// The statement: `ctes` (the caller's own writes, each `name AS (…),`) run with it and
    /// `check` (an int8 expression over them) comes back first. Its last three
    /// parameters, from `$first`, are bound by [`Append::bind`].
    pub fn statement(ctes: &str, check: &str, first: usize) -> String {
        let (t, c, n) = (first, first + 1, first + 2);
        format!(
            "WITH {ctes}granted AS (SELECT * FROM begin_append(${t}::text[], ${c}::uuid[]))\n\
             SELECT {check}, coalesce(array_agg(g.tenant), '{{}}'), \
             coalesce(array_agg(g.command_id), '{{}}'), \
             coalesce(array_agg(g.tenant_last), '{{}}'), coalesce(array_agg(g.last), '{{}}'), \
             CASE WHEN count(*) > 0 THEN pg_notify(${n}, '')::text END\n\
             FROM granted g"
        )
    }

    /// Binds the statement's last three parameters.
    pub fn bind<'q>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, GrantedRow, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, GrantedRow, sqlx::postgres::PgArguments> {
        q.bind(&self.tenants).bind(&self.ids).bind(APPEND_CHANNEL)
    }

    /// The statement alone, with no writes of the caller's: its check is 1.
    pub async fn grant(&self, conn: &mut PgConnection) -> Result<GrantedRow, DbError> {
        let sql = Append::statement("", "1::int8", 1);
        db(
            self.bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)))
                .fetch_one(conn)
                .await,
            "record command ids",
        )
    }

    /// COPYs the events the ledger took, in the batch's order, at the positions handed out
    /// (each shard's run of positions ending at its last, each tenant's run of tenant
    /// positions ending at its new head), in the caller's transaction. The others were
    /// repeats or applied before: nothing is written for them.
    pub async fn copy(
        self,
        conn: &mut PgConnection,
        (_, fresh_tenants, fresh_ids, heads, lasts, _): GrantedRow,
    ) -> Result<AppendOutcome, DbError> {
        // Per tenant: its next tenant position and its shard's last position.
        let mut next: HashMap<&str, (i64, i64)> = HashMap::new();
        let fresh: HashSet<(&str, Uuid)> = fresh_tenants
            .iter()
            .map(String::as_str)
            .zip(fresh_ids)
            .collect();
        for ((tenant, head), last) in fresh_tenants.iter().zip(&heads).zip(&lasts) {
            // Each fresh event of the tenant takes one below the head; the first is what is left.
            next.entry(tenant.as_str()).or_insert((head + 1, *last)).0 -= 1;
        }
        let mut outcome = AppendOutcome {
            duplicates: self.repeated,
            ..AppendOutcome::default()
        };
        outcome.duplicates.extend(
            self.tenants
                .iter()
                .zip(&self.ids)
                .filter(|(t, id)| !fresh.contains(&(**t, **id)))
                .map(|(_, id)| *id),
        );
        let mut first_seen = HashSet::with_capacity(fresh.len());
        let to_write: Vec<&NewEvent> = self
            .events
            .iter()
            .filter(|e| {
                let key = (e.tenant.as_str(), e.command_id);
                fresh.contains(&key) && first_seen.insert(key)
            })
            .collect();
        if to_write.is_empty() {
            return Ok(outcome);
        }
        // Per shard (named by its last position): its next position, its run's first.
        let mut shards: HashMap<i64, i64> = HashMap::new();
        for e in &to_write {
            let last = next.get(e.tenant.as_str()).map(|(_, last)| *last);
            let last = last.ok_or_else(|| unplaced(&e.tenant))?;
            *shards.entry(last).or_insert(last + 1) -= 1;
        }
        let mut placed: Vec<(Place, &NewEvent)> = Vec::with_capacity(to_write.len());
        for e in to_write {
            let (at, last) = next
                .get_mut(e.tenant.as_str())
                .ok_or_else(|| unplaced(&e.tenant))?;
            let position = shards.get_mut(last).ok_or_else(|| unplaced(&e.tenant))?;
            placed.push((
                Place {
                    position: *position,
                    tenant_position: *at,
                },
                e,
            ));
            *at += 1;
            *position += 1;
        }
        copy_rows(conn, &placed).await?;
        outcome.appended = placed.len();
        let positions = placed.iter().map(|(p, _)| p.position);
        outcome.positions = positions.clone().min().zip(positions.max());
        metrics::counter!("activity_events_appended_total").increment(outcome.appended as u64);
        metrics::histogram!("activity_append_seconds").record(self.started.elapsed().as_secs_f64());
        Ok(outcome)
    }
}

fn unplaced(tenant: &str) -> DbError {
    DbError::Database {
        action: "place a batch's events",
        source: sqlx::Error::Protocol(format!("begin_append handed out no position for {tenant}")),
    }
}
