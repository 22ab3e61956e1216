//! The logins the embedded default runs as, the way production should: the schema owner
//! installs and projects, the ingestor is an `activity_writer`, and none is a superuser.

use sqlx::PgConnection;

use crate::db::{DbError, db};

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
) -> Result<(), DbError> {
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
        // Only a SCRAM verifier is sent: no statement or log ever holds the password. The
        // role names are constants; a verifier is base64, `$`, `:` and digits.
        let sql = format!("ALTER ROLE {login} PASSWORD '{}'", scram_verifier(password));
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

/// The store's own logins and groups: never a reader's.
pub const SERVICE_ROLES: [&str; 6] = [
    OWNER,
    INGEST,
    API,
    "activity_writer",
    "activity_reader",
    "activity_http_reader",
];

/// A SCRAM-SHA-256 verifier of `password`, as PostgreSQL stores one (RFC 5802, 4,096
/// iterations, a random 16-byte salt). `ALTER ROLE … PASSWORD '<verifier>'` sets the
/// password without the clear text ever reaching the server, its logs or a client's.
pub fn scram_verifier(password: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let b64 = base64::engine::general_purpose::STANDARD;
    // PostgreSQL prepares the password with SASLprep where it can, and uses it as it is
    // where it cannot.
    let prepared =
        stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let salt: [u8; 16] = rand::random();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), &salt, ITERATIONS, &mut salted);
    let hmac = |message: &[u8]| {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&salted).expect("HMAC takes any key");
        mac.update(message);
        mac.finalize().into_bytes()
    };
    let stored_key = Sha256::digest(hmac(b"Client Key"));
    let server_key = hmac(b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

/// Whether `login` is one of the store's service logins by what it may do: it writes the
/// log (a member of `activity_writer`), owns it, or bypasses row-level security.
pub async fn serves_the_store(pool: &sqlx::PgPool, login: &str) -> Result<bool, DbError> {
    db(
        sqlx::query_scalar(
            "SELECT coalesce(bool_or(r.rolbypassrls \
                    OR pg_has_role(r.oid, 'activity_writer', 'MEMBER') \
                    OR pg_has_role(r.oid, (SELECT relowner FROM pg_class \
                                           WHERE oid = 'events'::regclass), 'MEMBER')), false) \
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(login)
        .fetch_one(pool)
        .await,
        "look up a login's roles",
    )
}

async fn create_if_missing(admin: &mut PgConnection, role: &str, sql: &str) -> Result<(), DbError> {
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
