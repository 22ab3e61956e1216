//! `rebuild --verify`: before a swap, the shadow tables are compared with the live ones at
//! the same positions, inside a transaction that is rolled back, so verifying changes
//! nothing. The live checkpoint row is locked meanwhile: the live projector waits.

use sqlx::{Postgres, Transaction};

use super::Projection;
use super::frontier::Frontier;
use super::shadow::Shadow;
use super::tables::LIVE_STATE;
use crate::db::db;
use crate::project::ProjectError;

/// How the rows of one table differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The live table.
    pub table: String,
    /// Rows only the live table has (counted with repeats).
    pub only_live: i64,
    /// Rows only the rebuilt table has.
    pub only_rebuilt: i64,
    /// A few of them, as JSON, each prefixed `live:` or `rebuilt:`.
    pub examples: Vec<String>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The positions (of each shard) both sides were compared at.
    pub position: Frontier,
    /// Rows compared, live side, all tables.
    pub rows: i64,
    /// The tables that differ; empty when they all match.
    pub differences: Vec<Difference>,
}

/// Compares `shadow`'s tables with `p`'s live ones at the same position: whichever side is
/// behind is folded up to the other, in a transaction rolled back at the end.
pub async fn verify(
    pool: &sqlx::PgPool,
    p: &Projection,
    shadow: &mut Shadow,
) -> Result<Verified, ProjectError> {
    let before = shadow.position().clone();
    let mut tx = db(pool.begin().await, "begin a verification")?;
    let verified = compare(&mut tx, p, shadow).await;
    // Nothing a verification folded may stay: neither side moved.
    drop(tx);
    shadow.set_position(before);
    verified
}

async fn compare(
    tx: &mut Transaction<'_, Postgres>,
    p: &Projection,
    shadow: &mut Shadow,
) -> Result<Verified, ProjectError> {
    let live = Frontier::checkpoints(tx, &p.name, true).await?;
    let position = live.max(shadow.position());
    super::shadow::fold(tx, p, shadow, &position).await?;
    for (shard, upto) in position.iter() {
        let from = live.get(shard);
        if from >= upto {
            continue;
        }
        db(
            sqlx::query(sqlx::AssertSqlSafe(p.fold_call(LIVE_STATE)))
                .bind(from)
                .bind(upto)
                .execute(&mut **tx)
                .await,
            "fold the live tables up to the rebuilt ones",
        )?;
    }
    let mut rows = 0;
    let mut differences = Vec::new();
    for live_table in &p.tables {
        let (_, name) = live_table
            .split_once('.')
            .expect("tables are schema-qualified");
        let rebuilt = format!("{}.{name}", shadow.schema());
        // A shadow of one tenant is compared with that tenant's live rows (a slug: safe
        // between quotes).
        let table = match shadow.tenant() {
            Some(t) => format!("(SELECT * FROM {live_table} WHERE tenant = '{t}') l"),
            None => live_table.clone(),
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM {table}), \
                    (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM {rebuilt}) a), \
                    (SELECT count(*) FROM (SELECT * FROM {rebuilt} EXCEPT ALL SELECT * FROM {table}) b), \
                    ARRAY(SELECT 'live: ' || to_jsonb(a)::text FROM \
                          (SELECT * FROM {table} EXCEPT ALL SELECT * FROM {rebuilt}) a LIMIT 3) || \
                    ARRAY(SELECT 'rebuilt: ' || to_jsonb(b)::text FROM \
                          (SELECT * FROM {rebuilt} EXCEPT ALL SELECT * FROM {table}) b LIMIT 3)"
        );
        let (count, only_live, only_rebuilt, examples): (i64, i64, i64, Vec<String>) = db(
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut **tx)
                .await,
            "compare a rebuilt table with the live one",
        )?;
        rows += count;
        if only_live + only_rebuilt > 0 {
            differences.push(Difference {
                table: live_table.clone(),
                only_live,
                only_rebuilt,
                examples,
            });
        }
    }
    Ok(Verified {
        position,
        rows,
        differences,
    })
}
