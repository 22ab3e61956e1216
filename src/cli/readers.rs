//! `readers grant | revoke | list`: reader logins bound to tenants, without hand-written SQL.
//! A reader is a login in `activity_reader` with rows in `reader_tenants`; row-level security
//! reads both on every query, so a grant or a revoke applies to the next query.

use std::io::BufRead;
use std::path::PathBuf;

use clap::Subcommand;
use sqlx::PgPool;

use super::{Cli, CliError, admin::connect};
use crate::db::db;

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

fn check_login(login: &str) -> Result<(), CliError> {
    let ok = login.len() <= 63
        && login.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "login: `{login}` must be 1-63 of a-z, 0-9 and _, starting with a letter or _"
        )))
    }
}

pub(super) fn check_tenant(tenant: &str) -> Result<(), CliError> {
    let ok = tenant == "*"
        || (tenant.len() <= 63
            && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && tenant
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'));
    if ok {
        Ok(())
    } else {
        Err(CliError::Input(format!(
            "tenant: `{tenant}` is not a tenant slug (a-z, 0-9, _ and -, up to 63) or '*'"
        )))
    }
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
            check_login(login)?;
            check_tenant(tenant)?;
            let secret = if *create {
                Some(password(password_file)?)
            } else {
                None
            };
            grant(&pool, login, tenant, secret).await?;
            println!("{login} may read {tenant}");
            Ok(())
        }
        ReadersAction::Revoke { login, tenant } => {
            check_login(login)?;
            if let Some(t) = tenant {
                check_tenant(t)?;
            }
            revoke(&pool, login, tenant.as_deref()).await
        }
        ReadersAction::List { json } => list(&pool, *json).await,
    }
}

/// Runs a statement built by PostgreSQL's own quoting (`format` with %I and %L).
async fn quoted(pool: &PgPool, template: &'static str, args: &[&str]) -> Result<(), CliError> {
    let mut q = sqlx::query_scalar::<_, String>(template);
    for a in args {
        q = q.bind(*a);
    }
    let sql = db(q.fetch_one(pool).await, "build a statement")?;
    db(
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await,
        "change a reader login",
    )?;
    Ok(())
}

async fn grant(
    pool: &PgPool,
    login: &str,
    tenant: &str,
    password: Option<String>,
) -> Result<(), CliError> {
    let role: Option<(bool, bool)> = db(
        sqlx::query_as("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(login)
            .fetch_optional(pool)
            .await,
        "look up a login",
    )?;
    let superuser = matches!(role, Some((true, _)));
    if !superuser
        && (crate::ops::logins::SERVICE_ROLES.contains(&login)
            || crate::ops::logins::serves_the_store(pool, login).await?)
    {
        return Err(CliError::Input(format!(
            "login: `{login}` is one of the store's own logins or groups; a reader must be a \
             login of its own (readers grant LOGIN --tenant T --create)"
        )));
    }
    match (role, password) {
        (Some(_), Some(_)) => {
            return Err(CliError::Input(format!(
                "login: `{login}` exists already; grant without --create"
            )));
        }
        (None, None) => {
            return Err(CliError::Input(format!(
                "login: `{login}` does not exist; pass --create to create it"
            )));
        }
        (Some((true, _)), None) => {
            return Err(CliError::Input(format!(
                "login: `{login}` is a superuser, which bypasses row-level security: \
                 a reader must be an ordinary login"
            )));
        }
        (Some((_, false)), None) => {
            return Err(CliError::Input(format!(
                "login: `{login}` is a role that cannot log in"
            )));
        }
        (None, Some(secret)) => {
            // The verifier, never the password: nothing logged can hold it.
            let verifier = crate::ops::logins::scram_verifier(&secret);
            quoted(
                pool,
                "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE activity_reader', $1::text, $2::text)",
                &[login, &verifier],
            )
            .await?;
        }
        (Some(_), None) => {
            quoted(
                pool,
                "SELECT format('GRANT activity_reader TO %I', $1::text)",
                &[login],
            )
            .await?;
        }
    }
    db(
        sqlx::query(
            "INSERT INTO reader_tenants (login, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(login)
        .bind(tenant)
        .execute(pool)
        .await,
        "bind a reader to a tenant",
    )?;
    Ok(())
}

async fn revoke(pool: &PgPool, login: &str, tenant: Option<&str>) -> Result<(), CliError> {
    let removed = db(
        sqlx::query(
            "DELETE FROM reader_tenants WHERE login = $1 AND ($2::text IS NULL OR tenant = $2)",
        )
        .bind(login)
        .bind(tenant)
        .execute(pool)
        .await,
        "unbind a reader",
    )?;
    match tenant {
        Some(t) => println!(
            "{login} may no longer read {t} ({} binding removed)",
            removed.rows_affected()
        ),
        None => {
            quoted(
                pool,
                "SELECT format('REVOKE activity_reader FROM %I', $1::text)",
                &[login],
            )
            .await?;
            println!(
                "{login} is no longer a reader ({} bindings removed)",
                removed.rows_affected()
            );
        }
    }
    Ok(())
}

async fn list(pool: &PgPool, json: bool) -> Result<(), CliError> {
    let rows: Vec<(String, Vec<String>, bool)> = db(
        sqlx::query_as(
            "SELECT r.rolname::text, \
                    coalesce(array_agg(t.tenant ORDER BY t.tenant) FILTER (WHERE t.tenant IS NOT NULL), '{}'), \
                    r.rolcanlogin \
             FROM pg_roles r LEFT JOIN reader_tenants t ON t.login = r.rolname \
             WHERE pg_has_role(r.oid, 'activity_reader', 'MEMBER') AND r.rolname <> 'activity_reader' \
               AND NOT r.rolsuper \
             GROUP BY r.rolname, r.rolcanlogin ORDER BY 1",
        )
        .fetch_all(pool)
        .await,
        "list readers",
    )?;
    for (login, tenants, can_login) in rows {
        if json {
            let row =
                serde_json::json!({"login": login, "tenants": tenants, "can_login": can_login});
            println!("{row}");
        } else {
            let tenants = if tenants.is_empty() {
                "(no tenant: reads nothing)".to_owned()
            } else {
                tenants.join(", ")
            };
            println!("{login:<32} {tenants}");
        }
    }
    Ok(())
}
