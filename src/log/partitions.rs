//! One partition of `events` a month, named `events_pYYYYMM`, created ahead of need.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sqlx::PgConnection;

use crate::db::{DbError, db};
use crate::model::TimeWindow;

/// A calendar month in UTC: the range of one partition.
/// Shown as `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Month {
    /// The month `t` falls in.
    pub fn of(t: DateTime<Utc>) -> Month {
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Midnight UTC on the first day.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0)
            .single()
            .expect("the first of a month exists")
    }

    /// The partition's table name.
    pub fn table_name(self) -> String {
        format!("events_p{:04}{:02}", self.year, self.month)
    }

    /// `from` and the months after it, `count` in all.
    pub fn range(from: Month, count: usize) -> Vec<Month> {
        std::iter::successors(Some(from), |m| Some(m.next()))
            .take(count)
            .collect()
    }
}

/// What `ensure` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ensured {
    /// Months whose partition it created.
    pub created: Vec<Month>,
    /// Months whose table exists but is not attached to the log (detached or archived): left
    /// as they are; commands for them are refused (`archived_month`).
    pub archived: Vec<Month>,
}

/// Creates the partitions of `months` that do not exist yet, and reports the months whose
/// table exists detached.
pub async fn ensure(conn: &mut PgConnection, months: &[Month]) -> Result<Ensured, DbError> {
    let mut tx = db(
        sqlx::Connection::begin(conn).await,
        "begin partition creation",
    )?;
    crate::db::locks::xact(
        &mut tx,
        crate::db::locks::PARTITIONS,
        "lock partition creation",
    )
    .await?;
    let existing: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'events'::regclass",
        )
        .fetch_all(&mut *tx)
        .await,
        "list partitions",
    )?;
    let wanted: Vec<String> = months
        .iter()
        .map(|m| m.table_name())
        .filter(|t| !existing.contains(t))
        .collect();
    // Tables of a month's name in the log's schema that are not its partitions.
    let detached: Vec<String> = db(
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relname = ANY($1) AND c.relnamespace = \
                   (SELECT relnamespace FROM pg_class WHERE oid = 'events'::regclass)",
        )
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await,
        "look for detached months",
    )?;
    let mut ensured = Ensured::default();
    for &m in months {
        let table = m.table_name();
        if existing.contains(&table)
            || ensured.created.contains(&m)
            || ensured.archived.contains(&m)
        {
            continue;
        }
        if detached.contains(&table) {
            ensured.archived.push(m);
            continue;
        }
        // A SECURITY DEFINER function: the application role may add months, not other DDL.
        db(
            sqlx::query("SELECT create_event_partition($1)")
                .bind(m.start())
                .execute(&mut *tx)
                .await,
            "create partition",
        )?;
        ensured.created.push(m);
    }
    db(tx.commit().await, "commit partition creation")?;
    Ok(ensured)
}

/// One partition of the log, as `partitions list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The table's name.
    pub name: String,
    /// The partition bound, as PostgreSQL prints it.
    pub bound: String,
    /// The planner's row estimate, or the live rows the statistics collector counted when
    /// more (before the first ANALYZE the planner's is -1; after a bulk load it is stale).
    pub estimated_rows: i64,
    /// Table and index size on disk.
    pub total_bytes: i64,
}

/// The partitions of the log, oldest first.
/// Records the accepted `occurred_at` window, which bounds the months a login other than
/// the log's owner may create (`create_event_partition`). Needs the log's owner.
pub async fn set_window(pool: &sqlx::PgPool, window: &TimeWindow) -> Result<(), DbError> {
    db(
        sqlx::query(
            "UPDATE ingest_window SET past = make_interval(secs => $1), \
                                      future = make_interval(secs => $2)",
        )
        .bind(window.past.num_seconds() as f64)
        .bind(window.future.num_seconds() as f64)
        .execute(pool)
        .await,
        "record the accepted occurred_at window",
    )?;
    Ok(())
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<PartitionInfo>, DbError> {
    let rows: Vec<(String, String, i64, i64)> = db(
        sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), \
                    greatest(c.reltuples::bigint, coalesce(pg_stat_get_live_tuples(c.oid), 0)), \
                    pg_total_relation_size(c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'events'::regclass ORDER BY c.relname",
        )
        .fetch_all(conn)
        .await,
        "list partitions",
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, bound, estimated_rows, total_bytes)| PartitionInfo {
            name,
            bound,
            estimated_rows,
            total_bytes,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_the_year() {
        let dec = Month::of(Utc.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).unwrap());
        assert_eq!(dec.table_name(), "events_p202412");
        assert_eq!(dec.next().table_name(), "events_p202501");
        assert_eq!(dec.next().start().to_rfc3339(), "2025-01-01T00:00:00+00:00");
        let r = Month::range(dec, 3);
        assert_eq!(
            r.iter().map(|m| m.table_name()).collect::<Vec<_>>(),
            ["events_p202412", "events_p202501", "events_p202502"]
        );
    }
}
