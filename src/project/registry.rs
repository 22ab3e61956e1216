//! The projections the binary carries: every folder under `projections/`, found by
//! `build.rs`, each with `projection.json`, `schema.sql` and `fold.sql`.

use serde::Deserialize;

use super::ProjectError;

/// A projection's files, as embedded at build time.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionSource {
    /// `projection.json`.
    pub manifest: &'static str,
    /// `schema.sql`: its tables, indexes, row-level security and grants.
    pub schema: &'static str,
    /// `fold.sql`: creates `projection_state.fold_<name>(after bigint, upto bigint)`.
    pub fold: &'static str,
}

const SOURCES: &[ProjectionSource] = include!(concat!(env!("OUT_DIR"), "/projections.rs"));

/// One projection: a name, a version (bumping it means a rebuild), its tables and its fold.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Its name, also the name of its main read table in `analytics`.
    pub name: String,
    /// Its version.
    pub version: i32,
    /// Every table it owns, schema-qualified; dropped when it is rebuilt.
    pub tables: Vec<String>,
    /// What it is for.
    pub about: String,
    /// `schema.sql`.
    pub schema: &'static str,
    /// `fold.sql`.
    pub fold: &'static str,
    /// Where its rows are also kept as cache entries, if anywhere.
    pub cache: Option<CacheSpec>,
}

/// A cached projection: its main table's rows, keyed by tenant and user, in a KV bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// The NATS KV bucket.
    pub bucket: String,
    /// The default TTL (the bucket's `max_age`), in seconds.
    pub ttl_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    version: i32,
    tables: Vec<String>,
    about: String,
    #[serde(default)]
    cache: Option<CacheSpec>,
}

impl Projection {
    /// Its main read table, `analytics.<name>`.
    pub fn table(&self) -> String {
        format!("analytics.{}", self.name)
    }

    /// The SQL that folds positions `(after, upto]` with the fold installed in `state`.
    pub fn fold_call(&self, state: &str) -> String {
        format!("SELECT {state}.fold_{}($1, $2)", self.name)
    }

    /// `schema.sql` with its read tables in schema `analytics` and its private ones in
    /// `state` (the live `analytics` and `projection_state`, or a rebuild's shadow schema).
    pub fn schema_sql(&self, analytics: &str, state: &str) -> String {
        render(self.schema, analytics, state)
    }

    /// `fold.sql`, placed like `schema_sql`.
    pub fn fold_sql(&self, analytics: &str, state: &str) -> String {
        render(self.fold, analytics, state)
    }

    fn from_source(source: &ProjectionSource) -> Result<Projection, ProjectError> {
        let m: Manifest =
            serde_json::from_str(source.manifest).map_err(|e| ProjectError::Invalid {
                name: "?".into(),
                problem: format!("projection.json: {e}"),
            })?;
        let invalid = |problem: &str| ProjectError::Invalid {
            name: m.name.clone(),
            problem: problem.into(),
        };
        let identifier = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !identifier(&m.name) {
            return Err(invalid("the name must be lower-case letters, digits and _"));
        }
        if m.version < 1 {
            return Err(invalid("the version must be 1 or more"));
        }
        let qualified = |t: &String| {
            t.split_once('.').is_some_and(|(schema, table)| {
                matches!(schema, "analytics" | "projection_state") && identifier(table)
            })
        };
        if m.tables.is_empty() || !m.tables.iter().all(qualified) {
            return Err(invalid(
                "tables must be analytics.<name> or projection_state.<name>",
            ));
        }
        let mut bare: Vec<&str> = m
            .tables
            .iter()
            .filter_map(|t| t.split_once('.'))
            .map(|(_, n)| n)
            .collect();
        bare.sort_unstable();
        if bare.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("table names must differ without their schema"));
        }
        if m.cache.as_ref().is_some_and(|c| c.ttl_secs == 0) {
            return Err(invalid("a cache's ttl_secs must be 1 or more"));
        }
        Ok(Projection {
            cache: m.cache,
            name: m.name,
            version: m.version,
            tables: m.tables,
            about: m.about,
            schema: source.schema,
            fold: source.fold,
        })
    }
}

/// Projection SQL names its own schemas `{{analytics}}` and `{{state}}`, so that the same
/// files build the live tables and a rebuild's shadow ones.
fn render(sql: &str, analytics: &str, state: &str) -> String {
    sql.replace("{{analytics}}", analytics)
        .replace("{{state}}", state)
}

/// Every projection, in name order.
pub fn projections() -> Result<Vec<Projection>, ProjectError> {
    SOURCES.iter().map(Projection::from_source).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_read_models_are_registered_and_valid() {
        let names: Vec<String> = projections().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["activity_feed", "daily_activity", "user_summary"]);
    }

    #[test]
    fn a_table_outside_the_projection_schemas_is_refused() {
        let source = ProjectionSource {
            manifest: r#"{"name": "x", "version": 1, "tables": ["public.events"], "about": ""}"#,
            schema: "",
            fold: "",
        };
        let e = Projection::from_source(&source).unwrap_err();
        assert!(e.to_string().contains("tables must be"), "{e}");
    }
}
