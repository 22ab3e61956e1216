//! Data migrations: backfills over a table that run beside ingest and reads.
//!
//! A data migration walks its table in key order, at most `batch_rows` (≤ 10,000) rows a
//! batch. Each batch is one transaction that transforms the rows `cursor < key <= high` and
//! moves the migration's cursor in `data_migrations`, so a killed run (`kill -9`, a lost
//! connection) resumes after its last committed batch and counts every row once. It holds
//! row locks on one batch's rows and nothing else: never the append lock, never a table lock.
//! `down` walks the table again with the reverse statement.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db::{DbError, db};

/// The most rows a batch may take.
pub const MAX_BATCH_ROWS: i64 = 10_000;
/// How long a batch waits for a row another transaction holds before giving up (the run
/// stops with an error and resumes where it was when run again).
const LOCK_TIMEOUT: &str = "5s";

/// A data migration known to this binary.
#[derive(Debug)]
pub struct DataMigration {
    /// Its name, as `migrate data up NAME` takes it.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The schema migration that must be applied first (its version).
    pub needs: i64,
    /// The table it walks, and its bigint key.
    pub table: &'static str,
    /// The key column.
    pub key: &'static str,
    /// The forward statement over `$1 < key <= $2`.
    pub up: &'static str,
    /// The reverse statement over `$1 < key <= $2`.
    pub down: &'static str,
}

/// Every data migration, oldest first.
pub static DATA_MIGRATIONS: &[DataMigration] = &[DataMigration {
    name: "dead_letter_command_type",
    description: "dead letters written before migration 0031 get the command type their bytes name",
    needs: 31,
    table: "dead_letters",
    key: "id",
    up: include_str!("../../migrations/data/dead_letter_command_type.up.sql"),
    down: include_str!("../../migrations/data/dead_letter_command_type.down.sql"),
}];

/// Which way a data migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Forward.
    Up,
    /// Back to the form before.
    Down,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Why a data migration did not run.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No data migration of that name.
    #[error("no data migration `{0}`; `migrate status` lists them")]
    Unknown(String),
    /// Its schema migration is not applied.
    #[error("data migration `{name}` needs schema migration {needs}: run `migrate up` first")]
    NeedsSchema {
        /// The data migration.
        name: &'static str,
        /// The schema migration's version.
        needs: i64,
    },
    /// A batch size outside 1..=10,000.
    #[error("a batch is 1 to {MAX_BATCH_ROWS} rows, not {0}")]
    BatchSize(i64),
    /// The database failed; the migration resumes after its last committed batch.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where a data migration stands.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillStatus {
    /// Its name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The way it last ran; `None` if it never ran.
    pub direction: Option<Direction>,
    /// Whether it ran to the end that way.
    pub finished: bool,
    /// Rows done that way so far.
    pub rows_done: i64,
    /// Rows after its cursor (all of the table's when it never ran or finished down).
    pub rows_left: i64,
    /// Batches committed that way.
    pub batches: i64,
    /// When it last moved.
    pub updated_at: Option<DateTime<Utc>>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ran {
    /// Rows done by this run.
    pub rows: i64,
    /// Batches committed by this run.
    pub batches: i64,
    /// Rows done that way in all (with runs before it).
    pub rows_done: i64,
}

fn find(name: &str) -> Result<&'static DataMigration, BackfillError> {
    DATA_MIGRATIONS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| BackfillError::Unknown(crate::model::escape_text(name).into_owned()))
}

type StateRow = (String, i64, i64, i64, DateTime<Utc>, Option<DateTime<Utc>>);

async fn state(pool: &PgPool, name: &str) -> Result<Option<StateRow>, DbError> {
    db(
        sqlx::query_as(
            "SELECT direction, cursor, rows_done, batches, updated_at, finished_at \
             FROM data_migrations WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await,
        "read a data migration's state",
    )
}

async fn rows_after(pool: &PgPool, m: &DataMigration, cursor: i64) -> Result<i64, DbError> {
    db(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE {} > $1",
            m.table, m.key
        )))
        .bind(cursor)
        .fetch_one(pool)
        .await,
        "count a data migration's rows left",
    )
}

/// Every data migration this binary knows, with where it stands (none if the schema
/// migration that creates `data_migrations` is not applied yet).
pub async fn status(pool: &PgPool) -> Result<Vec<BackfillStatus>, DbError> {
    let ready: bool = db(
        sqlx::query_scalar("SELECT to_regclass('data_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await,
        "look for data_migrations",
    )?;
    let mut out = Vec::new();
    if !ready {
        return Ok(out);
    }
    for m in DATA_MIGRATIONS {
        let row = state(pool, m.name).await?;
        let (direction, cursor, rows_done, batches, updated_at, finished) = match row {
            Some((d, c, r, b, u, f)) => {
                let d = if d == "up" {
                    Direction::Up
                } else {
                    Direction::Down
                };
                (Some(d), c, r, b, Some(u), f.is_some())
            }
            None => (None, 0, 0, 0, None, false),
        };
        let rows_left = match (direction, finished) {
            (Some(_), true) => 0,
            _ => rows_after(pool, m, cursor).await?,
        };
        out.push(BackfillStatus {
            name: m.name,
            description: m.description,
            direction,
            finished,
            rows_done,
            rows_left,
            batches,
            updated_at,
        });
    }
    Ok(out)
}

/// Runs data migration `name` in `direction` to the end, `batch_rows` a batch, resuming a
/// run that was interrupted; `progress(done, total)` after each batch.
pub async fn run(
    pool: &PgPool,
    name: &str,
    direction: Direction,
    batch_rows: i64,
    progress: &mut (dyn FnMut(i64, i64) + Send),
) -> Result<Ran, BackfillError> {
    let m = find(name)?;
    if !(1..=MAX_BATCH_ROWS).contains(&batch_rows) {
        return Err(BackfillError::BatchSize(batch_rows));
    }
    let applied = super::migrate::status(pool).await?;
    if !applied.iter().any(|s| s.version == m.needs && s.applied) {
        return Err(BackfillError::NeedsSchema {
            name: m.name,
            needs: m.needs,
        });
    }
    // Start (or turn round): a run the other way, or none, begins at the first key; a run
    // this way that was interrupted goes on from its cursor; a finished one is done.
    db(
        sqlx::query(
            "INSERT INTO data_migrations (name, direction) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET direction = $2, cursor = 0, rows_done = 0, \
               batches = 0, started_at = now(), updated_at = now(), finished_at = NULL \
             WHERE data_migrations.direction <> $2",
        )
        .bind(m.name)
        .bind(direction.as_str())
        .execute(pool)
        .await,
        "start a data migration",
    )?;
    let (_, cursor, rows_before, _, _, finished) = state(pool, m.name)
        .await?
        .expect("the row was just written");
    if finished.is_some() {
        return Ok(Ran {
            rows_done: rows_before,
            ..Ran::default()
        });
    }
    let total = rows_before + rows_after(pool, m, cursor).await?;
    let statement = match direction {
        Direction::Up => m.up,
        Direction::Down => m.down,
    };
    let mut ran = Ran {
        rows_done: rows_before,
        ..Ran::default()
    };
    loop {
        let started = Instant::now();
        let Some(rows) = batch(pool, m, direction, statement, batch_rows).await? else {
            break;
        };
        ran.rows += rows;
        ran.batches += 1;
        ran.rows_done += rows;
        let labels = [("migration", m.name), ("direction", direction.as_str())];
        metrics::counter!("activity_data_migration_rows_total", &labels).increment(rows as u64);
        metrics::counter!("activity_data_migration_batches_total", &labels).increment(1);
        metrics::histogram!("activity_data_migration_batch_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        progress(ran.rows_done, total.max(ran.rows_done));
    }
    Ok(ran)
}

/// One batch in one transaction; `None` once no row is left (the run is then marked
/// finished).
async fn batch(
    pool: &PgPool,
    m: &DataMigration,
    direction: Direction,
    statement: &'static str,
    batch_rows: i64,
) -> Result<Option<i64>, DbError> {
    let mut tx = db(pool.begin().await, "begin a data migration batch")?;
    db(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await,
        "bound a data migration batch's lock waits",
    )?;
    // The row is locked for the batch: two runs of the same migration take turns.
    let cursor: i64 = db(
        sqlx::query_scalar(
            "SELECT cursor FROM data_migrations WHERE name = $1 AND direction = $2 FOR UPDATE",
        )
        .bind(m.name)
        .bind(direction.as_str())
        .fetch_one(&mut *tx)
        .await,
        "lock a data migration's cursor",
    )?;
    let (high, rows): (Option<i64>, i64) = db(
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT max(k), count(*) FROM \
             (SELECT {key} AS k FROM {table} WHERE {key} > $1 ORDER BY {key} LIMIT $2) w",
            key = m.key,
            table = m.table
        )))
        .bind(cursor)
        .bind(batch_rows)
        .fetch_one(&mut *tx)
        .await,
        "find a data migration's next batch",
    )?;
    let Some(high) = high else {
        db(
            sqlx::query(
                "UPDATE data_migrations SET finished_at = now(), updated_at = now() WHERE name = $1",
            )
            .bind(m.name)
            .execute(&mut *tx)
            .await,
            "finish a data migration",
        )?;
        db(tx.commit().await, "commit a data migration's end")?;
        return Ok(None);
    };
    db(
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(cursor)
            .bind(high)
            .execute(&mut *tx)
            .await,
        "run a data migration batch",
    )?;
    db(
        sqlx::query(
            "UPDATE data_migrations SET cursor = $2, rows_done = rows_done + $3, \
             batches = batches + 1, updated_at = now() WHERE name = $1",
        )
        .bind(m.name)
        .bind(high)
        .bind(rows)
        .execute(&mut *tx)
        .await,
        "move a data migration's cursor",
    )?;
    db(tx.commit().await, "commit a data migration batch")?;
    Ok(Some(rows))
}
