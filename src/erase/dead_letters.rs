//! Dead letters that carry the user: matched by meaning ([`Personal`]) in their bytes,
//! message, field and subject, however the producer's JSON spelled the values. A match
//! loses its bytes, their digest (it could confirm a guess), its message and field, and its
//! subject if that names the user; its reason, times and size stay.
//!
//! Looked at: the tenant's dead letters, those of no tenant, and refusals for a mismatched
//! subject whose body is the tenant's. PostgreSQL selects the candidates, so an erasure
//! reads only dead letters that could match, not every one: bytes holding a `\u` or `\x`
//! escape or one of the values' literal runs ([`Personal::prefilter`], ASCII letters in
//! either case), and texts holding a backslash or one of those runs. Rust then decides by
//! meaning.

use sqlx::PgPool;

use crate::db::{DbError, db};
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
) -> Result<i64, DbError> {
    let runs = personal.prefilter();
    // With no run to select by, every dead letter is read.
    let every = runs.is_none();
    let runs = runs.unwrap_or_default();
    // Each run as `lower(encode(raw, 'escape'))` shows it: ASCII letters lowered (the runs
    // are), other bytes as octal escapes.
    let escaped: Vec<String> = runs.iter().map(|f| escape_lower(f)).collect();
    // `lower()` lowers ASCII letters only under the C collation: the runs are ASCII.
    let texts: Vec<String> = runs
        .iter()
        .filter_map(|f| std::str::from_utf8(f).ok())
        .filter(|t| !t.contains('\0'))
        .map(str::to_owned)
        .collect();
    let (mut after, mut done) = (0_i64, 0_i64);
    loop {
        let rows: Vec<Row> = db(
            sqlx::query_as(
                "SELECT id, tenant, reason, raw, message, field, subject FROM dead_letters d \
                 WHERE id > $1 AND (tenant = $2 OR tenant IS NULL OR reason = 'tenant_mismatch') \
                   AND NOT (raw = ''::bytea AND message = 'erased') \
                   AND ($6 OR position('\\x5c75'::bytea IN raw) > 0 OR position('\\x5c78'::bytea IN raw) > 0 \
                        OR EXISTS (SELECT 1 FROM unnest($4::text[]) f \
                                   WHERE strpos(lower(encode(d.raw, 'escape')), f) > 0) \
                        OR strpos(concat_ws(' ', message, field, subject), '\\') > 0 \
                        OR EXISTS (SELECT 1 FROM unnest($5::text[]) t \
                                   WHERE strpos(lower(concat_ws(' ', message, field, subject) COLLATE \"C\"), t) > 0)) \
                 ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(tenant)
            .bind(BATCH)
            .bind(&escaped)
            .bind(&texts)
            .bind(every)
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

/// `bytes` as PostgreSQL's `lower(encode(bytes, 'escape'))` prints them.
fn escape_lower(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0 | 0x80..=0xff => out.push_str(&format!("\\{b:03o}")),
            b => out.push(b.to_ascii_lowercase() as char),
        }
    }
    out
}

/// The `tenant` a refused command's body names, if its bytes are a JSON object with one.
fn body_tenant(raw: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(raw).ok()?;
    Some(doc.get("tenant")?.as_str()?.to_owned())
}
