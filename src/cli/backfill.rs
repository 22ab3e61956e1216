//! `migrate data up | down NAME`: a data migration with its progress, and how `migrate
//! status` shows one.

use sqlx::PgPool;

use super::CliError;
use super::admin::DataAction;
use super::progress::Progress;
use crate::log::backfill::{self, BackfillStatus, Direction};

/// Runs a `migrate data` action to the end.
pub async fn run(pool: &PgPool, action: &DataAction) -> Result<(), CliError> {
    let (name, direction, batch_rows) = match action {
        DataAction::Up { name, batch_rows } => (name, Direction::Up, *batch_rows),
        DataAction::Down { name, batch_rows } => (name, Direction::Down, *batch_rows),
    };
    let verb = match direction {
        Direction::Up => "migrating",
        Direction::Down => "reverting",
    };
    let progress = Progress::new(&format!("{verb} {name}"), "rows");
    let ran = backfill::run(pool, name, direction, batch_rows, &mut |done, total| {
        progress.show(done, total)
    })
    .await;
    progress.done();
    let ran = ran?;
    let way = match direction {
        Direction::Up => "applied",
        Direction::Down => "reverted",
    };
    println!(
        "{name} {way}: {} rows in {} batches this run, {} in all",
        ran.rows, ran.batches, ran.rows_done
    );
    Ok(())
}

/// One data migration's line in `migrate status`.
pub fn describe(d: &BackfillStatus) -> String {
    let way = match d.direction {
        None => return format!("pending: {} rows ({})", d.rows_left, d.description),
        Some(Direction::Up) => "up",
        Some(Direction::Down) => "down",
    };
    let state = if d.finished { "done" } else { "running" };
    format!(
        "{way}, {state}: {} rows done, {} left, {} batches ({})",
        d.rows_done, d.rows_left, d.batches, d.description
    )
}
