//! Dead letters that carry the user: matched by meaning ([`Personal`]) in their bytes,
//! message, field and subject, however the producer's JSON spelled the values. A match
//! loses its bytes, their digest (it could confirm a guess), its message and field, and its
//! subject if that names the user; its reason, times and size stay.
//!
//! Looked at: the tenant's dead letters, those of no tenant, and refusals for a mismatched
//! subject whose body is the tenant's.

use sqlx::PgPool;

use crate::log::{LogError, db};
use crate::model::Personal;

/// Dead letters read per statement (each holds at most 64 KiB of bytes).
const BATCH: i64 = 200;

type Row = (
    i64,
    Option<String>,
    String,
    Vec<u8>,
    String,
    Option<String>,
    Option<String>,
);

/// Scrubs the dead letters that name the person; returns how many.
pub(super) async fn scrub(
    pool: &PgPool,
    tenant: &str,
    personal: &Personal,
) -> Result<i64, LogError> {
    let (mut after, mut done) = (0_i64, 0_i64);
    loop {
        let rows: Vec<Row> = db(
            sqlx::query_as(
                "SELECT id, tenant, reason, raw, message, field, subject FROM dead_letters \
                 WHERE id > $1 AND (tenant = $2 OR tenant IS NULL OR reason = 'tenant_mismatch') \
                   AND NOT (raw = ''::bytea AND message = 'erased') \
                 ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(tenant)
            .bind(BATCH)
            .fetch_all(pool)
            .await,
            "read dead letters",
        )?;
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = last.0;
        let mut ids = Vec::new();
        let mut subjects = Vec::new();
        for (id, of, reason, raw, message, field, subject) in &rows {
            let ours = of.as_deref() == Some(tenant)
                || of.is_none()
                || (reason == "tenant_mismatch" && body_tenant(raw).as_deref() == Some(tenant));
            let subject_names = subject.as_deref().is_some_and(|s| personal.in_text(s));
            if ours
                && (personal.in_bytes(raw)
                    || personal.in_text(message)
                    || field.as_deref().is_some_and(|f| personal.in_text(f))
                    || subject_names)
            {
                ids.push(*id);
                if subject_names {
                    subjects.push(*id);
                }
            }
        }
        if ids.is_empty() {
            continue;
        }
        let scrubbed = db(
            sqlx::query(
                "UPDATE dead_letters SET raw = ''::bytea, raw_sha256 = sha256(''::bytea), \
                        message = 'erased', field = NULL, \
                        subject = CASE WHEN id = ANY($2) THEN NULL ELSE subject END \
                 WHERE id = ANY($1)",
            )
            .bind(&ids)
            .bind(&subjects)
            .execute(pool)
            .await,
            "scrub dead letters",
        )?;
        done += scrubbed.rows_affected() as i64;
    }
}

/// The `tenant` a refused command's body names, if its bytes are a JSON object with one.
fn body_tenant(raw: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(raw).ok()?;
    Some(doc.get("tenant")?.as_str()?.to_owned())
}
