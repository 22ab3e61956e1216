//! `readers token create | list | revoke`: the bearer tokens of HTTP readers. A token is
//! printed once, when made; the store keeps only its SHA-256.

use clap::Subcommand;

use super::{Cli, CliError, admin::connect};
use crate::api::tokens;

/// `readers token` actions.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token that reads one tenant; prints it (only this once).
    Create {
        /// The tenant it reads.
        #[arg(long)]
        tenant: String,
        /// A name to tell it by (who holds it, what for).
        #[arg(long, default_value = "")]
        name: String,
        /// Days until it stops working (never, if not given).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires: Option<u32>,
    },
    /// Every token (never the token itself), newest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Stop a token at once: the next request with it is refused.
    Revoke {
        /// The token's id (from `list`).
        id: uuid::Uuid,
    },
}

/// Runs one `readers token` action.
pub async fn run(cli: &Cli, action: &TokenAction) -> Result<(), CliError> {
    let pool = connect(cli).await?;
    match action {
        TokenAction::Create {
            tenant,
            name,
            expires,
        } => {
            if tenant == "*" {
                return Err(CliError::Input(
                    "tenant: a token reads one tenant; '*' is for reader logins (`readers grant`)"
                        .into(),
                ));
            }
            crate::readers::check_tenant(tenant)?;
            if name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(CliError::Input(
                    "name: at most 200 characters, none of them control characters".into(),
                ));
            }
            let (token, info) = tokens::create(&pool, tenant, name, *expires).await?;
            eprintln!(
                "token {} reads tenant {}{}; it is shown only now:",
                info.id,
                info.tenant,
                info.expires_at
                    .map(|t| format!(" until {}", t.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{token}");
            Ok(())
        }
        TokenAction::List { tenant, json } => {
            print_list(&tokens::list(&pool, tenant.as_deref()).await?, *json);
            Ok(())
        }
        TokenAction::Revoke { id } => {
            if tokens::revoke(&pool, *id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                Err(CliError::NotFound(format!("no valid token {id}")))
            }
        }
    }
}

/// Every token (never the token itself): a table, or one JSON object a line.
fn print_list(all: &[tokens::TokenInfo], json: bool) {
    if json {
        for t in all {
            println!("{}", serde_json::to_string(t).expect("tokens serialise"));
        }
        return;
    }
    println!(
        "{:<36}  {:<20}  {:<20}  {:<25}  state",
        "id", "tenant", "name", "created"
    );
    let now = chrono::Utc::now();
    for t in all {
        let state = match (t.revoked_at, t.expires_at) {
            (Some(r), _) => format!("revoked {}", r.to_rfc3339()),
            (None, Some(e)) if e <= now => format!("expired {}", e.to_rfc3339()),
            (None, Some(e)) => format!("valid until {}", e.to_rfc3339()),
            (None, None) => "valid".to_owned(),
        };
        println!(
            "{:<36}  {:<20}  {:<20}  {:<25}  {state}",
            t.id,
            t.tenant,
            crate::model::escape_text(&t.name),
            t.created_at.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
}
