//! Query parameters, read strictly: an unknown or repeated parameter is an error naming it,
//! so a typo (`limt`) is never silently ignored.

use chrono::{DateTime, NaiveDate, Utc};

use super::error::ApiError;
use crate::query::Cursor;

/// The most rows one page returns.
pub const MAX_LIMIT: i64 = 1000;
/// Rows a page returns when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The longest `metadata` filter, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A request's query parameters, each taken at most once.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The pairs of a query string, refusing any not in `allowed` and any given twice.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, ApiError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad(
                    name,
                    format!(
                        "unknown parameter; this path takes {}",
                        if allowed.is_empty() {
                            "none".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad(name, "given more than once"));
            }
        }
        Ok(Params(pairs))
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit`: 1 to MAX_LIMIT, DEFAULT_LIMIT if absent.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.raw("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}, not `{v}`"),
                )),
            },
        }
    }

    /// A page cursor (`next` of the page before).
    pub fn cursor(&self, name: &str) -> Result<Option<Cursor>, ApiError> {
        self.raw(name)
            .map(|v| {
                Cursor::decode(v).ok_or_else(|| {
                    ApiError::bad(
                        name,
                        "is not a cursor this API gave out (pass the `next` of the previous page unchanged)",
                    )
                })
            })
            .transpose()
    }

    /// A JSON object to match by containment.
    pub fn metadata(&self) -> Result<Option<serde_json::Value>, ApiError> {
        let Some(v) = self.raw("metadata") else {
            return Ok(None);
        };
        if v.len() > MAX_METADATA_BYTES {
            return Err(ApiError::bad(
                "metadata",
                format!("is longer than {MAX_METADATA_BYTES} bytes"),
            ));
        }
        match serde_json::from_str::<serde_json::Value>(v) {
            // PostgreSQL's jsonb holds no NUL character: no metadata can contain one.
            Ok(o @ serde_json::Value::Object(_)) if o.to_string().contains("\\u0000") => Err(
                ApiError::bad("metadata", "must not contain the NUL character (\\u0000)"),
            ),
            Ok(o @ serde_json::Value::Object(_)) => Ok(Some(o)),
            Ok(_) => Err(ApiError::bad(
                "metadata",
                "must be a JSON object, e.g. {\"ip\":\"10.0.0.1\"}",
            )),
            Err(e) => Err(ApiError::bad("metadata", format!("is not JSON: {e}"))),
        }
    }

    /// An activity type, by the wire contract's rule.
    pub fn activity_type(&self) -> Result<Option<String>, ApiError> {
        let Some(v) = self.raw("type") else {
            return Ok(None);
        };
        let ok = (1..=50).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b));
        if ok {
            Ok(Some(v.to_owned()))
        } else {
            Err(ApiError::bad(
                "type",
                "must be 1-50 characters of a-z, 0-9, `_`, `.`, `:` or `-`",
            ))
        }
    }

    /// An instant: RFC 3339, or a day (`YYYY-MM-DD`, its midnight UTC).
    pub fn instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Some(v) = self.raw(name) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(v)
            && (1..=9999).contains(&chrono::Datelike::year(&t.with_timezone(&Utc)))
        {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        match NaiveDate::parse_from_str(v, "%Y-%m-%d") {
            Ok(d) => Ok(Some(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())),
            Err(_) => Err(ApiError::bad(
                name,
                format!(
                    "must be an RFC 3339 time (2026-01-05T10:00:00Z) or a day (2026-01-05), not `{v}`"
                ),
            )),
        }
    }

    /// A day, `YYYY-MM-DD`.
    pub fn day(&self, name: &str) -> Result<Option<NaiveDate>, ApiError> {
        self.raw(name)
            .map(|v| {
                NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                    ApiError::bad(name, format!("must be a day, YYYY-MM-DD, not `{v}`"))
                })
            })
            .transpose()
    }

    /// A schema version: a whole number from 1.
    pub fn version(&self) -> Result<Option<i32>, ApiError> {
        self.raw("version")
            .map(|v| match v.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ApiError::bad(
                    "version",
                    format!(
                        "must be a whole number from 1, not `{}`",
                        crate::model::escape_text(v)
                    ),
                )),
            })
            .transpose()
    }

    /// A whole number of milliseconds, at most `max`.
    pub fn millis(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        self.raw(name)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::bad(
                    name,
                    format!("must be a whole number of milliseconds from 0 to {max}, not `{v}`"),
                )),
            })
            .transpose()
    }

    /// `min_position` from the query or the `X-Activity-Min-Position` header (both: equal).
    pub fn min_position(&self, header: Option<&str>) -> Result<Option<i64>, ApiError> {
        let parse = |name: &str, v: &str| match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(ApiError::bad(
                name,
                format!("must be a log position, a whole number from 0, not `{v}`"),
            )),
        };
        let query = self
            .raw("min_position")
            .map(|v| parse("min_position", v))
            .transpose()?;
        let header = header
            .map(|v| parse("X-Activity-Min-Position", v))
            .transpose()?;
        match (query, header) {
            (Some(q), Some(h)) if q != h => Err(ApiError::bad(
                "min_position",
                "differs from the X-Activity-Min-Position header; give one",
            )),
            (q, h) => Ok(q.or(h)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, ApiError> {
        Params::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            allowed,
        )
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = params(&[("limt", "5")], &["limit"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "limt: unknown parameter; this path takes limit"
        );
        let e = params(&[("limit", "5"), ("limit", "6")], &["limit"]).unwrap_err();
        assert_eq!(e.to_string(), "limit: given more than once");
    }

    #[test]
    fn limits_metadata_and_times_name_their_rule() {
        let p = |k: &str, v: &str| params(&[(k, v)], &[k]).unwrap();
        assert_eq!(p("limit", "1000").limit().unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(
                p("limit", bad)
                    .limit()
                    .unwrap_err()
                    .to_string()
                    .starts_with("limit: must be")
            );
        }
        assert!(
            p("metadata", "[1]")
                .metadata()
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        assert!(
            p("metadata", "{")
                .metadata()
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        let long = format!("{{\"k\":\"{}\"}}", "x".repeat(MAX_METADATA_BYTES));
        assert!(p("metadata", &long).metadata().is_err());
        assert!(p("type", "Login").activity_type().is_err());
        assert_eq!(
            p("from", "2026-01-05")
                .instant("from")
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2026-01-05T00:00:00+00:00"
        );
        assert!(p("from", "yesterday").instant("from").is_err());
        assert!(p("metadata", r#"{"k":"a\u0000b"}"#).metadata().is_err());
        assert!(p("min_position", "-3").min_position(None).is_err());
        assert_eq!(
            p("min_position", "7").min_position(Some("7")).unwrap(),
            Some(7)
        );
        assert!(p("min_position", "7").min_position(Some("8")).is_err());
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_767_607_200_123_456).unwrap(),
            event_id: Uuid::new_v4(),
        };
        let p = params(&[("cursor", &c.encode())], &["cursor"]).unwrap();
        assert_eq!(p.cursor("cursor").unwrap(), Some(c));
        let far = Cursor {
            at: DateTime::from_timestamp_micros(i64::MAX / 2).unwrap(),
            event_id: Uuid::nil(),
        };
        for bad in ["", "%%%", "bm90IGEgY3Vyc29y", "MTIzLnh5eg", &far.encode()] {
            let p = params(&[("cursor", bad)], &["cursor"]).unwrap();
            let e = p.cursor("cursor").unwrap_err();
            assert_eq!(e.code(), "bad_parameter", "{bad}");
        }
    }
}
