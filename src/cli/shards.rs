//! `shards`: where the tenants are, and moving one.

use clap::Subcommand;

use super::admin::connect;
use super::{Cli, CliError};
use crate::log::shards;

/// `shards` actions.
#[derive(Debug, Subcommand)]
pub enum ShardsAction {
    /// Each shard and how many tenants it holds.
    List,
    /// Move a tenant to another shard: its events take that shard's next positions; its
    /// views, tenant positions and cache entries stay as they are. Appends to both shards and
    /// every fold wait while it runs.
    Move {
        /// The tenant.
        tenant: String,
        /// The shard it goes to.
        #[arg(long)]
        to: i32,
        /// How long to wait for the projections to fold the tenant and the target shard.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
}

/// `shards list | move`.
pub async fn shards(cli: &Cli, action: &ShardsAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        ShardsAction::List => {
            for (shard, tenants) in shards::placement(&pool).await? {
                println!("shard {shard}: {tenants} tenants");
            }
        }
        ShardsAction::Move {
            tenant,
            to,
            wait_secs,
        } => {
            let wait = std::time::Duration::from_secs(*wait_secs);
            let moved = shards::move_tenant(&pool, tenant, *to, wait).await?;
            println!("moved {tenant} to shard {to}: {moved} events");
        }
    }
    Ok(())
}
