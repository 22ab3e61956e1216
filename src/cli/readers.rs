//! `readers grant | revoke | list | token`: reader logins bound to tenants, and tenant tokens.

use std::io::BufRead;
use std::path::PathBuf;

use clap::Subcommand;

use super::{Cli, CliError, admin::connect};
use crate::readers;

/// `readers` actions.
#[derive(Debug, Subcommand)]
pub enum ReadersAction {
    /// Let LOGIN read a tenant ('*' for every tenant), making it an activity_reader.
    Grant {
        /// The login.
        login: String,
        /// The tenant it may read, or '*'.
        #[arg(long)]
        tenant: String,
        /// Create the login; its password is the first line of standard input, or of
        /// --password-file.
        #[arg(long)]
        create: bool,
        /// Read the new login's password from this file.
        #[arg(long, requires = "create")]
        password_file: Option<PathBuf>,
    },
    /// Take a tenant from LOGIN, or, without --tenant, every tenant and the reader role.
    Revoke {
        /// The login.
        login: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Every reader login and the tenants it may read.
    List {
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Create, list or revoke the tenant tokens HTTP readers present.
    Token {
        #[command(subcommand)]
        action: super::tokens::TokenAction,
    },
}

fn password(file: &Option<PathBuf>) -> Result<String, CliError> {
    let mut line = String::new();
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
            line = text.lines().next().unwrap_or_default().to_owned();
        }
        None => {
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::Input(format!("standard input: {e}")))?;
        }
    }
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(CliError::Input(
            "password: none given (the first line of standard input or of --password-file)".into(),
        ));
    }
    Ok(line)
}

/// Runs a `readers` action.
pub async fn run(cli: &Cli, action: &ReadersAction) -> Result<(), CliError> {
    if let ReadersAction::Token { action } = action {
        return super::tokens::run(cli, action).await;
    }
    let pool = connect(cli).await?;
    match action {
        ReadersAction::Token { .. } => unreachable!("handled above"),
        ReadersAction::Grant {
            login,
            tenant,
            create,
            password_file,
        } => {
            readers::check_login(login)?;
            readers::check_tenant(tenant)?;
            let secret = if *create {
                Some(password(password_file)?)
            } else {
                None
            };
            readers::grant(&pool, login, tenant, secret).await?;
            println!("{login} may read {tenant}");
        }
        ReadersAction::Revoke { login, tenant } => {
            let removed = readers::revoke(&pool, login, tenant.as_deref()).await?;
            match tenant {
                Some(t) => println!("{login} may no longer read {t} ({removed} binding removed)"),
                None => println!("{login} is no longer a reader ({removed} bindings removed)"),
            }
        }
        ReadersAction::List { json } => {
            for r in readers::list(&pool).await? {
                if *json {
                    println!("{}", serde_json::to_string(&r).expect("readers serialise"));
                    continue;
                }
                let tenants = match (r.tenants.is_empty(), r.by_token) {
                    (true, true) => "(by token: the tenant of each request's token)".to_owned(),
                    (true, false) => "(no tenant: reads nothing)".to_owned(),
                    (false, _) => r.tenants.join(", "),
                };
                println!("{:<32} {tenants}", r.login);
            }
        }
    }
    Ok(())
}
