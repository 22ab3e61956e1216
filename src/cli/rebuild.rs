//! `rebuild <projection> [--verify [--force]]`, with its progress.

use super::progress::Progress;
use super::{Cli, CliError};
use crate::project::{ProjectConfig, Projector};

/// `rebuild <projection> [--verify [--force]]`: refolds it from the whole log into shadow
/// tables and swaps them in, then clears and refills its cache entries. Progress: a bar with
/// positions/s and ETA on a terminal, a plain line every few seconds otherwise. An interrupted
/// rebuild leaves the live tables as they were.
pub async fn rebuild(cli: &Cli, name: &str, verify: bool, force: bool) -> Result<(), CliError> {
    let projector = projector(cli).await?;
    let progress = Progress::new(&format!("rebuilding {name}"), "positions");
    let report = |upto: i64, last: i64| progress.show(upto, last);
    if !verify {
        let position = projector.rebuild(name, report).await?;
        progress.done();
        println!("rebuilt {name} from the whole log, up to {position}");
        return Ok(());
    }
    let (verified, swapped) = projector.rebuild_verified(name, report, force).await?;
    progress.done();
    print_verified(&verified);
    match swapped {
        Some(position) => {
            println!("rebuilt {name} from the whole log, up to {position}");
            Ok(())
        }
        None => Err(CliError::Unverified(name.to_owned())),
    }
}

/// `rebuild <projection> --tenant T [--verify [--force]]`: refolds one tenant from its own
/// log and replaces its rows; every other tenant's rows stay. Progress in the tenant's events.
pub async fn rebuild_tenant(
    cli: &Cli,
    name: &str,
    tenant: &str,
    verify: bool,
    force: bool,
) -> Result<(), CliError> {
    let projector = projector(cli).await?;
    let progress = Progress::new(&format!("rebuilding {name} for {tenant}"), "events");
    let report = |done: i64, total: i64| progress.show(done, total);
    let (verified, swapped) = projector
        .rebuild_tenant(name, tenant, report, (verify, force))
        .await?;
    progress.done();
    if let Some(v) = &verified {
        print_verified(v);
    }
    match swapped {
        Some(position) => {
            println!(
                "rebuilt {name} for tenant {tenant} from its log, up to its position {position}"
            );
            Ok(())
        }
        None => Err(CliError::Unverified(format!("{name} (tenant {tenant})"))),
    }
}

/// A projector for rebuilds, with caches when NATS is configured.
async fn projector(cli: &Cli) -> Result<Projector, CliError> {
    let pool = super::admin::connect(cli).await?;
    warn_if_partial(&pool).await?;
    let mut projector = Projector::start(pool, ProjectConfig::default()).await?;
    if let Ok(url) = cli.resolve_nats_url() {
        let client = crate::nats::connect(&url).await.map_err(|e| {
            CliError::Nats(format!("connect to {}: {e}", crate::nats::redacted(&url)))
        })?;
        let js = async_nats::jetstream::new(client);
        projector.attach_caches(&js, &cli.cache_config()).await?;
    }
    Ok(projector)
}

fn print_verified(verified: &crate::project::verify::Verified) {
    for d in &verified.differences {
        println!(
            "{}: {} rows only live, {} only rebuilt",
            d.table, d.only_live, d.only_rebuilt
        );
        for e in &d.examples {
            println!("  {e}");
        }
    }
    if verified.differences.is_empty() {
        println!(
            "verified: the rebuilt tables match the live ones at {} ({} rows)",
            verified.position, verified.rows
        );
    }
}

/// Warns when months of the log are detached: a rebuild folds only what is still attached.
async fn warn_if_partial(pool: &sqlx::PgPool) -> Result<(), CliError> {
    let detached = crate::log::archive::absent(pool).await?;
    if !detached.is_partial() {
        return Ok(());
    }
    let months = match detached.months.len() {
        0 => "no month is recorded as".to_owned(),
        1 => format!("{} is", detached.months[0]),
        _ => format!("{} are", detached.months.join(", ")),
    };
    eprintln!(
        "warning: the log starts at position {} (of a shard) and {months} detached: a rebuild folds only the \
         months still attached, so the rebuilt views will not count what was detached; attach \
         their archives first (`partitions attach`) to rebuild everything",
        detached.first_position.unwrap_or(0)
    );
    Ok(())
}
