//! One request's database session: a read-only, repeatable-read transaction as
//! `activity_reader`, scoped by row-level security to the tenant the bearer token holds.
//! The token is checked by the database (`analytics.token_tenant`) in the statement that
//! scopes the session, which also reads the projection's position and epoch in the same
//! snapshot as the rows that follow.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sqlx::{Postgres, Transaction};

use super::ApiState;
use super::error::ApiError;

/// The longest token read, in bytes (the store makes 47-byte ones).
const MAX_TOKEN_BYTES: usize = 256;

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "send a tenant token: `Authorization: Bearer <token>` (`activity-store readers token create`)"
                .into(),
        )
    };
    let value = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(missing());
    }
    // A string that is no token of this store costs no query.
    if !super::tokens::well_formed(token) {
        return Err(invalid());
    }
    Ok(token)
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("the token is not valid (unknown, revoked or expired)".into())
}

/// A scoped read session.
pub struct Session {
    /// The transaction; reads go through it.
    pub tx: Transaction<'static, Postgres>,
    /// The position, in the tenant's own log, the projection had folded up to, in this
    /// snapshot.
    pub position: i64,
    /// The projection's epoch (bumped by each rebuild's swap), in this snapshot.
    pub epoch: i64,
    /// The tenant's share of the database sessions this one holds.
    _share: super::shares::Share,
}

impl Session {
    /// Opens a session for `tenant` with `token`, reading `projection`'s position: 401 for a
    /// token the store does not know (or revoked, or expired), 404 for one of another tenant.
    pub async fn open(
        state: &ApiState,
        token: &str,
        tenant: &str,
        projection: &str,
    ) -> Result<Session, ApiError> {
        let db = |e| state.db_error(e);
        let digest = super::tokens::digest(token);
        let share = state.sessions.take(&state.verified.key(&digest)).await?;
        let mut tx = state
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db)?;
        let timeout = state.config.statement_timeout.as_millis().to_string();
        // A path that names no possible tenant (odd bytes, NUL, upper case) is asked for as
        // no tenant at all: the token is still checked first (401), and a valid one gets
        // the same 404 as for a tenant it does not hold.
        let scoped = if crate::model::fields::tenant_slug("tenant", tenant).is_ok() {
            tenant
        } else {
            ""
        };
        // The token's tenant and its position in its own log, checked by the database: the
        // API's login learns a tenant's position only with that tenant's token.
        let (holder, position, epoch, _): (Option<String>, Option<i64>, Option<i32>, String) =
            sqlx::query_as(
                "SELECT t.tenant, t.position, analytics.projection_epoch($3), s.scoped \
                 FROM (SELECT set_config('role', 'activity_reader', true) \
                       || set_config('activity.tenant', $2, true) \
                       || set_config('activity.token', $1, true) \
                       || set_config('statement_timeout', $4, true) AS scoped OFFSET 0) s \
                 LEFT JOIN analytics.token_position($3, $1) t ON true",
            )
            .bind(&digest)
            .bind(scoped)
            .bind(projection)
            .bind(timeout)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        match holder {
            None => Err(invalid()),
            Some(h) if h != tenant => Err(not_found_tenant(tenant)),
            Some(_) => {
                state.verified.remember(&digest, tenant);
                Ok(Session {
                    tx,
                    position: position.unwrap_or(0),
                    epoch: epoch.map_or(-1, i64::from),
                    _share: share,
                })
            }
        }
    }
}

/// The answer for a tenant the token does not hold: the same as for one that does not
/// exist, so a token never learns which other tenants there are.
pub fn not_found_tenant(tenant: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no tenant `{}` for this token",
        crate::model::escape_text(tenant)
    ))
}
