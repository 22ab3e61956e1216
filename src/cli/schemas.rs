//! `schemas put | list | show`: tenants' activity schemas (data contracts).

use std::path::PathBuf;

use clap::Subcommand;

use super::admin::connect;
use super::progress::Progress;
use super::{Cli, CliError};
use crate::contracts::{self, Registration};

/// `schemas` actions.
#[derive(Debug, Subcommand)]
pub enum SchemasAction {
    /// Register FILE (a JSON Schema; `-` reads standard input) as the next version of the
    /// tenant's schema for an activity type's metadata. The tenant's existing events of that
    /// type are checked first, in batches; any that break it refuse the change unless
    /// --force. Ingest holds commands to it from its next batch.
    Put {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The activity type, e.g. `purchase`.
        #[arg(long = "type")]
        activity_type: String,
        /// The JSON Schema file.
        file: PathBuf,
        /// Register it even if existing events break it.
        #[arg(long)]
        force: bool,
    },
    /// The current version of every schema (of one tenant with --tenant).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// A schema, whole: the current version, or --version N.
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The activity type.
        #[arg(long = "type")]
        activity_type: String,
        /// This version instead of the current one.
        #[arg(long)]
        version: Option<i32>,
    },
}

/// Runs a `schemas` action.
pub async fn run(cli: &Cli, action: &SchemasAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        SchemasAction::Put {
            tenant,
            activity_type,
            file,
            force,
        } => {
            let schema = read(file)?;
            let registration = Registration {
                tenant,
                activity_type,
                schema,
                force: *force,
                batch_rows: contracts::SCAN_BATCH_ROWS,
            };
            let progress = Progress::new(
                &format!("checking {tenant}'s {activity_type} events"),
                "events",
            );
            let put = contracts::put_with(&pool, &registration, &mut |done, total| {
                progress.show(done as i64, total as i64)
            })
            .await;
            progress.done();
            let put = put?;
            println!(
                "registered version {} of {tenant}'s {activity_type} schema: {} existing events \
                 checked in {} batches, {} break it",
                put.version, put.checked, put.batches, put.violations
            );
            for s in &put.samples {
                println!("  position {}: {}", s.position, s.message);
            }
        }
        SchemasAction::List { tenant } => {
            let rows = contracts::list(&pool, tenant.as_deref()).await?;
            if rows.is_empty() {
                println!("no schemas");
            }
            for r in rows {
                println!(
                    "{} {} version {} registered {}",
                    r.tenant,
                    r.activity_type,
                    r.version,
                    r.created_at.to_rfc3339()
                );
            }
        }
        SchemasAction::Show {
            tenant,
            activity_type,
            version,
        } => {
            let s = contracts::show(&pool, tenant, activity_type, *version).await?;
            println!(
                "# {} {} version {} registered {} by {}{}",
                s.tenant,
                s.activity_type,
                s.version,
                s.created_at.to_rfc3339(),
                s.created_by,
                if s.forced {
                    format!(
                        " (forced over {} existing events that break it)",
                        s.violations
                    )
                } else {
                    String::new()
                }
            );
            let pretty = serde_json::to_string_pretty(&s.schema).unwrap_or_default();
            println!("{pretty}");
        }
    }
    Ok(())
}

/// A schema file: JSON, read no further than a little past the largest schema stored.
fn read(file: &PathBuf) -> Result<serde_json::Value, CliError> {
    use std::io::Read;
    let limit = 4 * crate::contracts::MAX_SCHEMA_BYTES as u64;
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file)
                .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?,
        )
    };
    let mut text = String::new();
    input
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    if text.len() as u64 > limit {
        return Err(CliError::Input(format!(
            "{} is larger than {limit} bytes; a schema is at most 64 KiB",
            file.display()
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("{} is not JSON: {e}", file.display())))
}
