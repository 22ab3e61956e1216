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
    let filter = Prefilter::of(personal);
    let (mut after, mut done) = (0_i64, 0_i64);
    loop {
        let rows = candidates(pool, tenant, after, &filter).await?;
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = last.0;
        let (ids, subjects) = matching(&rows, tenant, personal);
        if !ids.is_empty() {
            done += blank(pool, &ids, &subjects).await?;
        }
    }
}

/// What PostgreSQL selects candidates by: the values' literal runs, as
/// `lower(encode(raw, 'escape'))` shows them and as text; every row when there is no run.
struct Prefilter {
    every: bool,
    escaped: Vec<String>,
    texts: Vec<String>,
}

impl Prefilter {
    fn of(personal: &Personal) -> Self {
        let runs = personal.prefilter();
        let every = runs.is_none();
        let runs = runs.unwrap_or_default();
        // Each run as `lower(encode(raw, 'escape'))` shows it: ASCII letters lowered (the runs
        // are), other bytes as octal escapes.
        let escaped = runs.iter().map(|f| escape_lower(f)).collect();
        // `lower()` lowers ASCII letters only under the C collation: the runs are ASCII.
        let texts = runs
            .iter()
            .filter_map(|f| std::str::from_utf8(f).ok())
            .filter(|t| !t.contains('\0'))
            .map(str::to_owned)
            .collect();
        Prefilter {
            every,
            escaped,
            texts,
        }
    }
}

/// The next batch of dead letters after id `after` that could name the user.
async fn candidates(
    pool: &PgPool,
    tenant: &str,
    after: i64,
    filter: &Prefilter,
) -> Result<Vec<Row>, DbError> {
    db(
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
        .bind(&filter.escaped)
        .bind(&filter.texts)
        .bind(filter.every)
        .fetch_all(pool)
        .await,
        "read dead letters",
    )
}

/// The candidates of `tenant` that name the user, decided by meaning; and those of them
/// whose subject names the user (it is blanked too).
fn matching(rows: &[Row], tenant: &str, personal: &Personal) -> (Vec<i64>, Vec<i64>) {
    let mut ids = Vec::new();
    let mut subjects = Vec::new();
    for (id, of, reason, raw, message, field, subject) in rows {
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
    (ids, subjects)
}

/// Blanks dead letters `ids` (their bytes, message and field; the subject of `subjects`).
async fn blank(pool: &PgPool, ids: &[i64], subjects: &[i64]) -> Result<i64, DbError> {
    let scrubbed = db(
        sqlx::query(
            "UPDATE dead_letters SET raw = ''::bytea, raw_sha256 = sha256(''::bytea), \
                    message = 'erased', field = NULL, \
                    subject = CASE WHEN id = ANY($2) THEN NULL ELSE subject END \
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(subjects)
        .execute(pool)
        .await,
        "scrub dead letters",
    )?;
    Ok(scrubbed.rows_affected() as i64)
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
