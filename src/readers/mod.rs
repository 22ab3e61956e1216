//! Who may read: the store's own logins, and reader logins bound to tenants without
//! hand-written SQL. A reader is a login in `activity_reader` with rows in `reader_tenants`;
//! row-level security reads both on every query, so a grant or a revoke applies to the next
//! query.

pub mod logins;

use serde::Serialize;
use sqlx::PgPool;

use crate::db::{DbError, db};

/// What a change to the readers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReadersError {
    /// The request breaks a rule: the field and the rule.
    #[error("{0}")]
    Refused(String),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A login's name: 1-63 of a-z, 0-9 and _, starting with a letter or _.
pub fn check_login(login: &str) -> Result<(), ReadersError> {
    let ok = login.len() <= 63
        && login.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ReadersError::Refused(format!(
            "login: `{login}` must be 1-63 of a-z, 0-9 and _, starting with a letter or _"
        )))
    }
}

/// A tenant slug (a-z, 0-9, _ and -, up to 63) or '*' (every tenant).
pub fn check_tenant(tenant: &str) -> Result<(), ReadersError> {
    let ok = tenant == "*"
        || (tenant.len() <= 63
            && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && tenant
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'));
    if ok {
        Ok(())
    } else {
        Err(ReadersError::Refused(format!(
            "tenant: `{tenant}` is not a tenant slug (a-z, 0-9, _ and -, up to 63) or '*'"
        )))
    }
}

/// Runs a statement built by PostgreSQL's own quoting (`format` with %I and %L).
async fn quoted(pool: &PgPool, template: &'static str, args: &[&str]) -> Result<(), DbError> {
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

/// Lets `login` read `tenant` ('*': every tenant), making it an `activity_reader`; creates
/// the login with `password` when given (it must not exist then; it must otherwise). The
/// store's own logins, superusers and roles that cannot log in are refused.
pub async fn grant(
    pool: &PgPool,
    login: &str,
    tenant: &str,
    password: Option<String>,
) -> Result<(), ReadersError> {
    check_login(login)?;
    check_tenant(tenant)?;
    let role: Option<(bool, bool)> = db(
        sqlx::query_as("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(login)
            .fetch_optional(pool)
            .await,
        "look up a login",
    )?;
    let superuser = matches!(role, Some((true, _)));
    if !superuser
        && (logins::SERVICE_ROLES.contains(&login) || logins::serves_the_store(pool, login).await?)
    {
        return Err(ReadersError::Refused(format!(
            "login: `{login}` is one of the store's own logins or groups; a reader must be a \
             login of its own (readers grant LOGIN --tenant T --create)"
        )));
    }
    let refused = |rule: String| Err(ReadersError::Refused(format!("login: `{login}` {rule}")));
    match (role, password) {
        (Some(_), Some(_)) => return refused("exists already; grant without --create".into()),
        (None, None) => return refused("does not exist; pass --create to create it".into()),
        (Some((true, _)), None) => {
            return refused(
                "is a superuser, which bypasses row-level security: a reader must be an \
                 ordinary login"
                    .into(),
            );
        }
        (Some((_, false)), None) => return refused("is a role that cannot log in".into()),
        (None, Some(secret)) => {
            // The verifier, never the password: nothing logged can hold it.
            let verifier = logins::scram_verifier(&secret);
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

/// Takes `tenant` from `login`, or, without one, every tenant and the reader role; returns
/// how many bindings were removed.
pub async fn revoke(pool: &PgPool, login: &str, tenant: Option<&str>) -> Result<u64, ReadersError> {
    check_login(login)?;
    if let Some(t) = tenant {
        check_tenant(t)?;
    }
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
    if tenant.is_none() {
        quoted(
            pool,
            "SELECT format('REVOKE activity_reader FROM %I', $1::text)",
            &[login],
        )
        .await?;
    }
    Ok(removed.rows_affected())
}

/// A reader login and what it may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reader {
    /// The login.
    pub login: String,
    /// The tenants `reader_tenants` binds it to ('*': every tenant).
    pub tenants: Vec<String>,
    /// Whether it can log in (a group role cannot).
    pub can_login: bool,
    /// Whether it may scope a session by a token (an `activity_http_reader`, as the HTTP
    /// API's login): it reads the tenants of the tokens it is given.
    pub by_token: bool,
}

/// Every reader login (superusers are none: they bypass row-level security), by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Reader>, DbError> {
    let rows: Vec<(String, Vec<String>, bool, bool)> = db(
        sqlx::query_as(
            "SELECT r.rolname::text, \
                    coalesce(array_agg(t.tenant ORDER BY t.tenant) FILTER (WHERE t.tenant IS NOT NULL), '{}'), \
                    r.rolcanlogin, \
                    pg_has_role(r.oid, 'activity_http_reader', 'MEMBER') \
             FROM pg_roles r LEFT JOIN reader_tenants t ON t.login = r.rolname \
             WHERE pg_has_role(r.oid, 'activity_reader', 'MEMBER') \
               AND r.rolname NOT IN ('activity_reader', 'activity_http_reader') \
               AND NOT r.rolsuper \
             GROUP BY r.oid, r.rolname, r.rolcanlogin ORDER BY 1",
        )
        .fetch_all(pool)
        .await,
        "list readers",
    )?;
    Ok(rows
        .into_iter()
        .map(|(login, tenants, can_login, by_token)| Reader {
            login,
            tenants,
            can_login,
            by_token,
        })
        .collect())
}
