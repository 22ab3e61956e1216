//! The rules of each field of the wire contract. Pure functions; the SQL checks in
//! `migrations/` state the same rules so the database refuses what the model refuses.

use chrono::{DateTime, Duration, NaiveDateTime, Timelike, Utc};
use serde_json::{Map, Value};

use super::reason::{Reason, Rejection};

/// Largest accepted command, in bytes of JSON.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest accepted `metadata` object, in bytes of compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest user id, in characters.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest activity type, in characters.
pub const MAX_ACTIVITY_TYPE_CHARS: usize = 50;
/// Longest tenant or user display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email address, in characters (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// The accepted range of `occurred_at`, relative to the time a command is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// How far in the past an activity may have occurred.
    pub past: Duration,
    /// How far in the future an activity may be dated (clock skew).
    pub future: Duration,
}

impl Default for TimeWindow {
    /// Five years back, one day ahead.
    fn default() -> Self {
        TimeWindow {
            past: Duration::days(5 * 365 + 1),
            future: Duration::days(1),
        }
    }
}

impl TimeWindow {
    /// The earliest and latest accepted instants for a command received at `received_at`.
    pub fn bounds(&self, received_at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (received_at - self.past, received_at + self.future)
    }
}

/// A tenant slug: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn tenant_slug(field: &'static str, s: &str) -> Result<(), Rejection> {
    let bytes = s.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes[1.min(bytes.len())..]
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if first_ok && rest_ok && bytes.len() <= 63 {
        Ok(())
    } else {
        Err(Rejection::invalid(
            field,
            "must be a slug of 1-63 characters: a-z, 0-9, `_` or `-`, starting with a letter or digit",
        ))
    }
}

/// A user id: 1-128 characters, no control characters.
pub fn user_id(s: &str) -> Result<(), Rejection> {
    let chars = s.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS {
        return Err(Rejection::invalid(
            "user",
            format!("must be 1-{MAX_USER_ID_CHARS} characters long, got {chars}"),
        ));
    }
    no_control_chars("user", s)
}

/// A user id a `register_user` introduces: a user id, and one spelling of itself, so ids that
/// look alike are one id or refused: in Unicode NFKC (precomposed `é`, `ann` not `ａｎｎ`)
/// with no format characters (zero-width, bidi controls, soft hyphens, byte-order marks).
/// Ids registered before this rule keep working in every other command.
pub fn new_user_id(s: &str) -> Result<(), Rejection> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    user_id(s)?;
    if let Some(c) = s
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err(Rejection::invalid(
            "user",
            format!(
                "must not contain format characters (U+{:04X}: zero-width, bidi or other invisible controls)",
                c as u32
            ),
        ));
    }
    if !unicode_normalization::is_nfkc(s) {
        return Err(Rejection::invalid(
            "user",
            "must be in Unicode NFKC form: precomposed letters, no fullwidth or compatibility characters",
        ));
    }
    Ok(())
}

/// A display name: 1-200 characters, no control characters.
pub fn display_name(field: &'static str, s: &str) -> Result<(), Rejection> {
    let chars = s.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Rejection::invalid(
            field,
            format!("must be 1-{MAX_NAME_CHARS} characters long, got {chars}"),
        ));
    }
    no_control_chars(field, s)
}

/// A well-formed email: one `@`, a local part of 1-64 characters, a domain of two or more
/// non-empty dot-separated labels, no white space or control characters, at most 254 characters.
pub fn email(s: &str) -> Result<(), Rejection> {
    let bad = |rule: &str| Err(Rejection::invalid("email", rule));
    if s.chars().count() > MAX_EMAIL_CHARS {
        return bad("must be at most 254 characters long");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain white space or control characters");
    }
    let Some((local, domain)) = s.split_once('@') else {
        return bad("must contain one `@`");
    };
    if domain.contains('@') {
        return bad("must contain one `@`");
    }
    if local.is_empty() || local.chars().count() > 64 {
        return bad("must have 1-64 characters before the `@`");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return bad("must have a domain like `example.com` after the `@`");
    }
    Ok(())
}

/// An activity type: 1-50 characters of `[a-z0-9_.:-]`.
pub fn activity_type(s: &str) -> Result<(), Rejection> {
    let ok_char = |b: &u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
    };
    if s.is_empty() || s.len() > MAX_ACTIVITY_TYPE_CHARS || !s.as_bytes().iter().all(ok_char) {
        return Err(Rejection::invalid(
            "activity_type",
            "must be 1-50 characters of a-z, 0-9, `_`, `.`, `:` or `-`",
        ));
    }
    Ok(())
}

/// Parses `occurred_at`: RFC 3339 with any offset, or `YYYY-MM-DD HH:MM:SS` taken as UTC.
/// The result is normalised to UTC.
pub fn timestamp(s: &str) -> Result<DateTime<Utc>, Rejection> {
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc()));
    if let Ok(t) = parsed {
        // chrono keeps a leap second (`:60`) inside the previous second; PostgreSQL stores it
        // as the next one, which may fall in another month's partition.
        if t.nanosecond() >= 1_000_000_000 {
            return Err(Rejection::invalid(
                "occurred_at",
                "must not be a leap second (`:60`)",
            ));
        }
        return Ok(t);
    }
    Err(Rejection::invalid(
        "occurred_at",
        "must be RFC 3339 (`2025-01-15T10:30:00Z`) or `YYYY-MM-DD HH:MM:SS` in UTC",
    ))
}

/// Checks `occurred_at` against the accepted window.
pub fn within_window(
    at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    window: &TimeWindow,
) -> Result<(), Rejection> {
    let (earliest, latest) = window.bounds(received_at);
    if at < earliest || at > latest {
        return Err(Rejection::field(
            Reason::OutOfRange,
            "occurred_at",
            format!(
                "{} is outside the accepted window {} .. {}",
                at.to_rfc3339(),
                earliest.to_rfc3339(),
                latest.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// `metadata`: a JSON object of at most 16 KiB (compact), with no NUL in any string,
/// which PostgreSQL's `jsonb` refuses.
pub fn metadata(value: Value) -> Result<Map<String, Value>, Rejection> {
    let Value::Object(map) = value else {
        return Err(Rejection::invalid("metadata", "must be a JSON object"));
    };
    let size = serde_json::to_vec(&map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Rejection::field(
            Reason::TooLarge,
            "metadata",
            format!("is {size} bytes; at most {MAX_METADATA_BYTES} are accepted"),
        ));
    }
    if map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)) {
        return Err(Rejection::invalid(
            "metadata",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(map)
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn no_control_chars(field: &'static str, s: &str) -> Result<(), Rejection> {
    if s.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
