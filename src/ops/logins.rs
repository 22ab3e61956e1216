//! The logins the embedded default runs as, the way production should: the schema owner
//! installs and projects, the ingestor is an `activity_writer`, and none is a superuser.

use sqlx::PgConnection;

use crate::log::{LogError, db};

/// The login that owns the store's database and schema: it migrates and projects, and may
/// read every tenant (the query CLI runs as it).
pub const OWNER: &str = "activity_owner";
/// The ingestor's login: a member of `activity_writer`, which appends only through the
/// append path and sees nothing of the read side.
pub const INGEST: &str = "activity_ingest";
/// The HTTP API's login: an `activity_http_reader` (a reader that may scope a session by a
/// token) bound to no tenant in `reader_tenants`, so it reads only what the token a request
/// carries lets row-level security show.
pub const API: &str = "activity_api";

/// Creates (or updates the passwords of) the owner and ingest logins and the two group
/// roles, as the superuser. The owner may create roles (the migrations create the group
/// roles if missing; operators' reader logins are its to grant) and act as a reader.
pub async fn ensure(
    admin: &mut PgConnection,
    owner_password: &str,
    ingest_password: &str,
    api_password: &str,
) -> Result<(), LogError> {
    for group in ["activity_writer", "activity_reader", "activity_http_reader"] {
        create_if_missing(admin, group, &format!("CREATE ROLE {group} NOLOGIN")).await?;
    }
    let owner = format!("CREATE ROLE {OWNER} LOGIN CREATEROLE NOSUPERUSER");
    create_if_missing(admin, OWNER, &owner).await?;
    let ingest = format!("CREATE ROLE {INGEST} LOGIN NOSUPERUSER IN ROLE activity_writer");
    create_if_missing(admin, INGEST, &ingest).await?;
    let api = format!("CREATE ROLE {API} LOGIN NOSUPERUSER IN ROLE activity_http_reader");
    create_if_missing(admin, API, &api).await?;
    for (login, password) in [
        (OWNER, owner_password),
        (INGEST, ingest_password),
        (API, api_password),
    ] {
        // Passwords are generated hex strings; the role names are constants.
        let sql = format!(
            "ALTER ROLE {login} PASSWORD '{}'",
            password.replace('\'', "")
        );
        db(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *admin)
                .await,
            "set a login's password",
        )?;
    }
    // Idempotent, so a login an earlier `up` made gets what it lacks.
    let grants = [
        // The API's login may scope sessions by token.
        format!("GRANT activity_http_reader TO {API}"),
        // The owner reads as activity_reader (`query`).
        format!("GRANT activity_reader TO {OWNER}"),
        // `status` reads, as the owner, how long the ingestor's sessions have held locks.
        format!("GRANT pg_read_all_stats TO {OWNER}"),
    ];
    for grant in grants {
        db(
            sqlx::query(sqlx::AssertSqlSafe(grant))
                .execute(&mut *admin)
                .await,
            "grant a login its roles",
        )?;
    }
    Ok(())
}

async fn create_if_missing(
    admin: &mut PgConnection,
    role: &str,
    sql: &str,
) -> Result<(), LogError> {
    let exists: bool = db(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *admin)
            .await,
        "look up a role",
    )?;
    if !exists {
        db(
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut *admin)
                .await,
            "create a role",
        )?;
    }
    Ok(())
}
