//! Per-tenant activity schemas (data contracts): a JSON Schema that one tenant's activity
//! type's metadata must follow. Versions are numbered from 1 and immutable; ingest holds each
//! `record_activity` to its tenant's newest version for its type and refuses a command that
//! breaks it as `schema_violation`, naming the JSON pointer and the rule.
//!
//! Validation is the `jsonschema` crate's (draft 2020-12 unless the schema names another),
//! with `format` checked, patterns matched in linear time (the `regex` engine: no look-around,
//! no back-references) and no reference resolved outside the schema itself.

mod cache;
mod store;

pub use cache::Cache;
pub use store::{
    Registered, Registration, SCAN_BATCH_ROWS, Sample, ScanReport, Schema, SchemaSummary, list,
    list_in, put, put_with, show, show_in,
};

use serde_json::{Map, Value};

use crate::db::DbError;
use crate::model::{Reason, Rejection};

/// The largest schema stored, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The most memory one compiled pattern may take.
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// Why a schema was not registered or shown.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The tenant was never created.
    #[error("tenant `{0}` does not exist")]
    UnknownTenant(String),
    /// The tenant or activity type is not well formed.
    #[error("{0}")]
    InvalidName(Rejection),
    /// The document is not a schema the store can validate with.
    #[error("{0}")]
    InvalidSchema(String),
    /// Existing events break the new version, and the registration was not forced.
    #[error(
        "{} of {} existing `{}` events of `{}` break this schema; nothing was registered \
         (fix the schema, or register it anyway with --force): {}",
        .0.violations, .0.checked, .0.activity_type, .0.tenant, .0.first()
    )]
    Broken(Box<ScanReport>),
    /// No schema is registered for the tenant's type (or not that version).
    #[error("no schema {0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One version of a schema, compiled for validation.
pub struct Contract {
    /// The activity type it binds.
    pub activity_type: String,
    /// Its version.
    pub version: i32,
    validator: Result<jsonschema::Validator, String>,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Contract({} v{})", self.activity_type, self.version)
    }
}

/// Compiles `schema`: a JSON object that is a valid schema, referring to nothing outside
/// itself.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, ContractError> {
    if !schema.is_object() {
        return Err(ContractError::InvalidSchema(
            "the schema must be a JSON object".into(),
        ));
    }
    let size = serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len());
    if size > MAX_SCHEMA_BYTES {
        return Err(ContractError::InvalidSchema(format!(
            "the schema is {size} bytes; at most 64 KiB ({MAX_SCHEMA_BYTES} bytes) is stored"
        )));
    }
    // Linear-time patterns: a producer's string can never make a check backtrack for ever
    // (look-around and back-references are refused when the schema is registered).
    let patterns = jsonschema::PatternOptions::regex().size_limit(MAX_PATTERN_BYTES);
    jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(patterns)
        .build(schema)
        .map_err(|e| ContractError::InvalidSchema(format!("not a valid JSON Schema: {e}")))
}

impl Contract {
    /// Version `version` of `activity_type`'s schema. A schema stored that no longer compiles
    /// (a later validator reads it otherwise) refuses every command it binds, which can be
    /// redriven once a version that compiles is registered.
    pub fn new(activity_type: String, version: i32, schema: &Value) -> Contract {
        Contract {
            activity_type,
            version,
            validator: compile(schema).map_err(|e| e.to_string()),
        }
    }

    /// Checks an activity's metadata; the refusal names the JSON pointer and the rule.
    pub fn check(&self, metadata: &Value) -> Result<(), Rejection> {
        let validator = self.validator.as_ref().map_err(|e| {
            self.violation(format!(
                "cannot be checked: version {} of the `{}` schema no longer compiles: {e}",
                self.version, self.activity_type
            ))
        })?;
        match validator.validate(metadata) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.violation(describe(&e, self.version, &self.activity_type))),
        }
    }

    /// Checks metadata held as a map, without copying it.
    pub fn check_map(&self, metadata: &mut Map<String, Value>) -> Result<(), Rejection> {
        let value = Value::Object(std::mem::take(metadata));
        let verdict = self.check(&value);
        if let Value::Object(map) = value {
            *metadata = map;
        }
        verdict
    }

    fn violation(&self, message: String) -> Rejection {
        Rejection::field(Reason::SchemaViolation, "metadata", message)
    }
}

/// A validation error as the producer reads it, after the field's name: where in the metadata, which rule of which
/// schema, and what is wrong.
pub fn describe(e: &jsonschema::ValidationError<'_>, version: i32, activity_type: &str) -> String {
    let at = e.instance_path().as_str();
    let at = if at.is_empty() { "/" } else { at };
    let text = crate::model::escape_text(&e.to_string()).into_owned();
    let text: String = text.chars().take(300).collect();
    format!(
        "at `{at}` breaks rule `{}` of version {version} of the `{activity_type}` \
         schema: {text}",
        e.schema_path().as_str()
    )
}
