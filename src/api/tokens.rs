//! Tenant tokens: made once, shown once, kept only as their SHA-256 digest.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{DbError, db};

/// What every token starts with, so a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "ast_";

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    /// Its id (for `revoke`).
    pub id: Uuid,
    /// The tenant it reads.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The SHA-256 of a token, in hex: what the API sends the database (which keeps the
/// SHA-256 of this).
pub fn digest(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `token` has the shape of one this store makes (checked before any query).
pub fn well_formed(token: &str) -> bool {
    token.len() == PREFIX.len() + 43
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new random token: the prefix and 256 random bits, URL-safe base64.
fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Makes a token for `tenant`, valid `expires_days` days (for ever if None); returns it
/// (the only time it exists outside the caller) and its row.
pub async fn create(
    pool: &PgPool,
    tenant: &str,
    name: &str,
    expires_days: Option<u32>,
) -> Result<(String, TokenInfo), DbError> {
    let token = generate();
    let info = db(
        sqlx::query_as(
            "INSERT INTO api_tokens (tenant, name, hash, expires_at) \
             VALUES ($1, $2, sha256(decode($3, 'hex')), now() + make_interval(days => $4)) \
             RETURNING id, tenant, name, created_at, expires_at, revoked_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(digest(&token))
        .bind(expires_days.map(|d| d.min(i32::MAX as u32) as i32))
        .fetch_one(pool)
        .await,
        "create a token",
    )?;
    Ok((token, info))
}

/// Every token, newest first; only one tenant's if given.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<TokenInfo>, DbError> {
    db(
        sqlx::query_as(
            "SELECT id, tenant, name, created_at, expires_at, revoked_at FROM api_tokens \
             WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at DESC, id",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await,
        "list tokens",
    )
}

/// Revokes token `id` at once (every request after this commit is refused); returns
/// whether a token that was not yet revoked was found.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<bool, DbError> {
    let done = db(
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(pool)
        .await,
        "revoke a token",
    )?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed_and_distinct_and_digests_are_hex() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        for bad in [
            "",
            "ast_",
            "Bearer x",
            &a[1..],
            &format!("{a}x"),
            &a.replace('_', "!"),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
