//! Registering, listing and showing schemas. A new version is first checked against the
//! tenant's existing events of its type, in batches over the log (each one statement, no lock
//! held between them), and refused if any break it unless forced.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use super::{ContractError, compile, describe};
use crate::db::{DbError, db};

/// Events checked per batch when a schema is registered.
pub const SCAN_BATCH_ROWS: i64 = 10_000;
/// Violations a refusal or a report shows.
const SAMPLES: usize = 5;

/// A schema to register.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The activity type whose metadata it binds.
    pub activity_type: &'a str,
    /// The JSON Schema.
    pub schema: Value,
    /// Register it even if existing events break it.
    pub force: bool,
    /// Events checked per batch.
    pub batch_rows: i64,
}

/// One existing event that breaks the schema.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Its position in the log.
    pub position: i64,
    /// What breaks, as a command would be told.
    pub message: String,
}

/// What checking the existing events found.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// The tenant.
    pub tenant: String,
    /// The activity type.
    pub activity_type: String,
    /// Events checked.
    pub checked: u64,
    /// Of them, breaking the schema.
    pub violations: u64,
    /// Batches it took.
    pub batches: u64,
    /// The first few that break it.
    pub samples: Vec<Sample>,
}

impl ScanReport {
    /// The first violation, for a one-line message.
    pub fn first(&self) -> String {
        self.samples.first().map_or_else(String::new, |s| {
            format!("e.g. position {}: {}", s.position, s.message)
        })
    }
}

/// A registered version.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// Its version.
    pub version: i32,
    /// Existing events checked.
    pub checked: u64,
    /// Of them, breaking it (registered anyway: forced).
    pub violations: u64,
    /// Batches the check took.
    pub batches: u64,
    /// The first few that break it.
    pub samples: Vec<Sample>,
}

/// Registers `r` as the next version of its tenant's schema for its type, after checking the
/// existing events; `progress(done, total)` is called after each batch.
pub async fn put_with(
    pool: &PgPool,
    r: &Registration<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Registered, ContractError> {
    crate::model::fields::tenant_slug("tenant", r.tenant).map_err(ContractError::InvalidName)?;
    crate::model::fields::activity_type(r.activity_type).map_err(ContractError::InvalidName)?;
    let validator = compile(&r.schema)?;
    let known: bool = db(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant = $1)")
            .bind(r.tenant)
            .fetch_one(pool)
            .await,
        "look the tenant up",
    )?;
    if !known {
        return Err(ContractError::UnknownTenant(r.tenant.to_owned()));
    }
    let version: i32 = db(
        sqlx::query_scalar(
            "SELECT coalesce(max(version), 0) + 1 FROM activity_schemas \
             WHERE tenant = $1 AND activity_type = $2",
        )
        .bind(r.tenant)
        .bind(r.activity_type)
        .fetch_one(pool)
        .await,
        "read the schema's versions",
    )?;
    let report = scan(pool, r, &validator, version, progress).await?;
    if report.violations > 0 && !r.force {
        return Err(ContractError::Broken(Box::new(report)));
    }
    let inserted = sqlx::query(
        "INSERT INTO activity_schemas (tenant, activity_type, version, schema, violations, forced) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(r.tenant)
    .bind(r.activity_type)
    .bind(version)
    .bind(&r.schema)
    .bind(report.violations as i64)
    .bind(report.violations > 0)
    .execute(pool)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            return Err(ContractError::InvalidSchema(format!(
                "version {version} of `{}`'s `{}` schema was registered by someone else \
                 meanwhile; look at it (`schemas show`) and register again",
                r.tenant, r.activity_type
            )));
        }
        other => db(other, "register the schema")?,
    };
    metrics::counter!("activity_schemas_registered_total").increment(1);
    Ok(Registered {
        version,
        checked: report.checked,
        violations: report.violations,
        batches: report.batches,
        samples: report.samples,
    })
}

/// [`put_with`] without progress.
pub async fn put(pool: &PgPool, r: &Registration<'_>) -> Result<Registered, ContractError> {
    put_with(pool, r, &mut |_, _| {}).await
}

/// Checks the tenant's events of the type, `batch_rows` at a time in position order.
async fn scan(
    pool: &PgPool,
    r: &Registration<'_>,
    validator: &jsonschema::Validator,
    version: i32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ScanReport, DbError> {
    const WHERE: &str = "tenant = $1 AND event_type = 'activity_recorded' AND activity_type = $2";
    let total: i64 = db(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM events WHERE {WHERE}"
        )))
        .bind(r.tenant)
        .bind(r.activity_type)
        .fetch_one(pool)
        .await,
        "count the events a schema is checked against",
    )?;
    let mut report = ScanReport {
        tenant: r.tenant.to_owned(),
        activity_type: r.activity_type.to_owned(),
        checked: 0,
        violations: 0,
        batches: 0,
        samples: Vec::new(),
    };
    let mut after = 0_i64;
    loop {
        let rows: Vec<(i64, Value)> = db(
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT position, data FROM events_current WHERE {WHERE} AND position > $3 \
                 ORDER BY position LIMIT $4"
            )))
            .bind(r.tenant)
            .bind(r.activity_type)
            .bind(after)
            .bind(r.batch_rows.max(1))
            .fetch_all(pool)
            .await,
            "check existing events against a schema",
        )?;
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        report.batches += 1;
        report.checked += rows.len() as u64;
        for (position, data) in &rows {
            if let Err(e) = validator.validate(data) {
                report.violations += 1;
                if report.samples.len() < SAMPLES {
                    let message = format!("`metadata` {}", describe(&e, version, r.activity_type));
                    report.samples.push(Sample {
                        position: *position,
                        message,
                    });
                }
            }
        }
        metrics::counter!("activity_schema_checked_events_total").increment(rows.len() as u64);
        progress(report.checked, (total.max(0) as u64).max(report.checked));
        after = last;
    }
    Ok(report)
}

/// A tenant's schema for one type, at its current version.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchemaSummary {
    /// The tenant.
    pub tenant: String,
    /// The activity type.
    pub activity_type: String,
    /// The current version.
    pub version: i32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// The current version of every schema (of `tenant`, if given), by tenant and type.
pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<SchemaSummary>, DbError> {
    list_in(pool, tenant).await
}

/// [`list`] on any connection: the HTTP API's reads run under the tenant's row-level security.
pub async fn list_in<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    tenant: Option<&str>,
) -> Result<Vec<SchemaSummary>, DbError> {
    db(
        sqlx::query_as(
            "SELECT DISTINCT ON (tenant, activity_type) tenant, activity_type, version, created_at \
             FROM activity_schemas WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY tenant, activity_type, version DESC",
        )
        .bind(tenant)
        .fetch_all(conn)
        .await,
        "list schemas",
    )
}

/// One version of a schema, whole.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Schema {
    /// The tenant.
    pub tenant: String,
    /// The activity type.
    pub activity_type: String,
    /// Its version.
    pub version: i32,
    /// The JSON Schema.
    pub schema: Value,
    /// Existing events it refused when registered.
    pub violations: i64,
    /// Registered although existing events broke it.
    pub forced: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// Who registered it.
    pub created_by: String,
}

/// Version `version` (the current one if `None`) of `tenant`'s schema for `activity_type`.
pub async fn show(
    pool: &PgPool,
    tenant: &str,
    activity_type: &str,
    version: Option<i32>,
) -> Result<Schema, ContractError> {
    show_in(pool, tenant, activity_type, version).await
}

/// [`show`] on any connection.
pub async fn show_in<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    tenant: &str,
    activity_type: &str,
    version: Option<i32>,
) -> Result<Schema, ContractError> {
    let found: Option<Schema> = db(
        sqlx::query_as(
            "SELECT tenant, activity_type, version, schema, violations, forced, created_at, \
                    created_by::text AS created_by \
             FROM activity_schemas WHERE tenant = $1 AND activity_type = $2 \
               AND ($3::int IS NULL OR version = $3) \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(activity_type)
        .bind(version)
        .fetch_optional(conn)
        .await,
        "show a schema",
    )?;
    found.ok_or_else(|| {
        let which = version.map_or_else(String::new, |v| format!("version {v} "));
        ContractError::NotFound(format!(
            "{which}for `{}`'s `{}` activities",
            crate::model::escape_text(tenant),
            crate::model::escape_text(activity_type)
        ))
    })
}
