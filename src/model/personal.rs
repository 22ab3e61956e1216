//! Personal data matched by meaning, not by one byte form: what an erasure uses to decide
//! whether a copy (a dead letter's bytes or message, a stream message, a cache value) holds a
//! person's id, email or name.
//!
//! The rule, in order:
//! - bytes that are a JSON document are decoded, and every string in it (keys too, and JSON
//!   documents quoted inside strings, to three levels) is compared with each value;
//! - anything else (bytes cut short, not JSON, not UTF-8) is read leniently: JSON and the
//!   store's own escapes (`\u00e9`, surrogate pairs, `\/`, `\\`, `\x01`, `\u{85}`) are
//!   decoded wherever they appear, and the bytes are also searched for the values' UTF-16
//!   and Latin-1 forms;
//! - both sides are compared in Unicode NFC and lower case, so `JOSE\u{301}` is `josé`.
//!
//! A value of four characters or more is found inside a longer string; a shorter one only as
//! a whole JSON string (a user `al` is not in `record_activity`), or as a word of its own in
//! text that is not JSON. Matching errs towards finding: another record of the same tenant that happens to
//! quote a value is erased too, a record that holds one is never missed.

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

/// Values shorter than this (in characters) match JSON strings only whole.
const SHORT: usize = 4;
/// How many levels of JSON quoted inside JSON strings are decoded.
const NESTING: usize = 3;

/// A person's values to look for.
#[derive(Debug, Clone, Default)]
pub struct Personal {
    /// Normalised values, longest first.
    values: Vec<String>,
    /// Byte forms searched in bytes that are not UTF-8 JSON: UTF-16 (both orders), Latin-1.
    forms: Vec<Vec<u8>>,
}

impl Personal {
    /// Looks for each of `values` (empty ones are ignored).
    pub fn new<I, S>(values: I) -> Personal
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Personal::default();
        for v in values {
            let v = v.as_ref();
            if v.is_empty() {
                continue;
            }
            let n = normalize(v);
            if !out.values.contains(&n) {
                out.values.push(n);
            }
            for s in [v.to_owned(), v.to_lowercase(), v.to_uppercase()] {
                let le: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
                let be: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
                let latin1: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                for form in [Some(le), Some(be), latin1].into_iter().flatten() {
                    if !out.forms.contains(&form) {
                        out.forms.push(form);
                    }
                }
            }
        }
        out.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        out
    }

    /// What a store can select candidates by, cheaply and soundly: a record can match only
    /// if its bytes hold a `\\u` or `\\x` escape, or, with ASCII letters folded, one of
    /// these runs (each value's longest run of ASCII characters that no normalisation or
    /// JSON escape can produce from anything else, in UTF-8 and in UTF-16 of both orders).
    /// `None` when some value has no such run of three characters: then every record is a
    /// candidate. [`Personal::in_bytes`] and [`Personal::in_text`] decide.
    pub fn prefilter(&self) -> Option<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for v in &self.values {
            let run = v
                .split(|c: char| !literal(c))
                .max_by_key(|r| r.len())
                .filter(|r| r.len() >= 3)?;
            let utf16 = |le: bool| -> Vec<u8> {
                run.encode_utf16()
                    .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
                    .collect()
            };
            for form in [run.as_bytes().to_vec(), utf16(true), utf16(false)] {
                if !out.contains(&form) {
                    out.push(form);
                }
            }
        }
        Some(out)
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether `bytes` name the person, by the rule above.
    pub fn in_bytes(&self, bytes: &[u8]) -> bool {
        if self.is_empty() || bytes.is_empty() {
            return false;
        }
        if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
            return self.in_json(&doc, 0);
        }
        self.in_text(&String::from_utf8_lossy(bytes))
            || self
                .forms
                .iter()
                .any(|f| bytes.windows(f.len()).any(|w| w == f.as_slice()))
    }

    /// Whether `text` that is not a JSON document (a message the store wrote, a subject, a
    /// document cut short) names the person: each value searched for inside it, read as
    /// written and with its escapes decoded.
    pub fn in_text(&self, text: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut t = text.to_owned();
        for _ in 0..=NESTING {
            let n = normalize(&t);
            if self.values.iter().any(|v| found_in(&n, v)) {
                return true;
            }
            if !t.contains('\\') {
                return false;
            }
            t = unescape(&t);
        }
        false
    }

    fn in_json(&self, v: &Value, depth: usize) -> bool {
        match v {
            Value::String(s) => self.in_string(s, depth),
            Value::Array(items) => items.iter().any(|i| self.in_json(i, depth)),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| self.in_string(k, depth) || self.in_json(v, depth)),
            _ => false,
        }
    }

    /// One decoded JSON string: equal to a value, holding a long one, or itself a JSON
    /// document (or escaped text) that does.
    fn in_string(&self, s: &str, depth: usize) -> bool {
        let n = normalize(s);
        if self
            .values
            .iter()
            .any(|v| n == *v || (v.chars().count() >= SHORT && n.contains(v.as_str())))
        {
            return true;
        }
        if depth >= NESTING || !(s.contains('\\') || s.contains('"')) {
            return false;
        }
        match serde_json::from_str::<Value>(s) {
            Ok(inner) => self.in_json(&inner, depth + 1),
            Err(_) => self.in_string(&unescape(s), depth + 1),
        }
    }
}

/// Whether `value` is in `text`: anywhere if it is long, else only as a word of its own
/// (no letter or digit on either side), so a user `al` is not in `invalid`.
fn found_in(text: &str, value: &str) -> bool {
    if value.chars().count() >= SHORT {
        return text.contains(value);
    }
    text.match_indices(value).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + value.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// An ASCII character that stands for itself in any record that matches: not one JSON or
/// the store escapes (`"`, `\\`, `/`, controls), not one a normalisation makes out of
/// another character (`k` from the Kelvin sign, `i` from `İ`, `;` from U+037E, `` ` `` from
/// U+1FEF). Values are lower case here.
fn literal(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | 'k' | 'i' | ';' | '`') || c == ' '
}

/// NFC and lower case, one character at a time (no context: the same for a value alone and
/// inside a document).
fn normalize(s: &str) -> String {
    s.nfc()
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .nfc()
        .collect()
}

/// Decodes JSON's escapes (`\uXXXX` with surrogate pairs, `\"`, `\\`, `\/`, `\b`, `\f`,
/// `\n`, `\r`, `\t`) and the store's own (`\xNN`, `\u{N…}`) wherever they appear; anything
/// else is kept as written.
fn unescape(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\\' || i + 1 >= chars.len() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let (decoded, used) = escape_at(&chars[i + 1..]);
        match decoded {
            Some(c) => {
                out.push(c);
                i += 1 + used;
            }
            None => {
                out.push('\\');
                i += 1;
            }
        }
    }
    out
}

/// The character an escape after a backslash stands for, and how many characters it used.
fn escape_at(rest: &[char]) -> (Option<char>, usize) {
    let hex = |from: usize, n: usize| -> Option<u32> {
        let digits: String = rest.get(from..from + n)?.iter().collect();
        u32::from_str_radix(&digits, 16).ok()
    };
    match rest[0] {
        '"' => (Some('"'), 1),
        '\\' => (Some('\\'), 1),
        '/' => (Some('/'), 1),
        'b' => (Some('\u{8}'), 1),
        'f' => (Some('\u{c}'), 1),
        'n' => (Some('\n'), 1),
        'r' => (Some('\r'), 1),
        't' => (Some('\t'), 1),
        'x' => (hex(1, 2).and_then(char::from_u32), 3),
        'u' if rest.get(1) == Some(&'{') => {
            let end = rest.iter().position(|c| *c == '}');
            match end.and_then(|e| hex(2, e - 2).map(|v| (v, e))) {
                Some((v, e)) => (char::from_u32(v), e + 1),
                None => (None, 0),
            }
        }
        'u' => match hex(1, 4) {
            Some(hi @ 0xD800..=0xDBFF) => {
                let lo = (rest.get(5) == Some(&'\\') && rest.get(6) == Some(&'u'))
                    .then(|| hex(7, 4))
                    .flatten()
                    .filter(|lo| (0xDC00..=0xDFFF).contains(lo));
                match lo {
                    Some(lo) => (
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                        11,
                    ),
                    None => (None, 0),
                }
            }
            Some(v) => (char::from_u32(v), 5),
            None => (None, 0),
        },
        _ => (None, 0),
    }
}

#[cfg(test)]
#[path = "personal_tests.rs"]
mod tests;
