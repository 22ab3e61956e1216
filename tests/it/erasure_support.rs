//! What the erasure tests share: a running store with its NATS names, producers that spell
//! the same JSON in different ways, and every place a value could still be found (a
//! `pg_dump`, the stream, the cache bucket's revisions, archives), in every spelling.

use std::io::Read;
use std::time::Duration;

use activity_store::erase::EraseConfig;
use async_nats::jetstream;
use serde_json::{Value, json};

use crate::erasure::stream_dump;
use crate::liveness::{Store, ingest_config};
use crate::support::{TestDb, nats_url};

/// A store running ingest and the projectors, and what it takes to erase in it.
pub struct Erasable {
    pub db: TestDb,
    pub store: Store,
    pub js: jetstream::Context,
    pub prefix: String,
    pub stream: String,
    pub erase: EraseConfig,
}

impl Erasable {
    pub async fn start() -> Erasable {
        let db = TestDb::migrated().await;
        let (prefix, config) = ingest_config();
        let store = Store::start_on(&db, config.clone(), true).await;
        store.wait_for("/readyz", 200, "ready").await;
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let erase = EraseConfig {
            subject_prefix: format!("{prefix}.commands"),
            stream: config.stream.clone(),
            bucket_prefix: store.bucket_prefix.clone(),
            wait: Duration::from_secs(60),
        };
        Erasable {
            db,
            store,
            js,
            prefix,
            stream: config.stream,
            erase,
        }
    }

    /// Publishes `command` (given an id if it has none) on `tenant`'s subject, spelled in
    /// `style`; returns the command id.
    pub async fn publish_as(&self, tenant: &str, mut command: Value, style: Style) -> String {
        if command.get("id").is_none() {
            command["id"] = json!(uuid::Uuid::new_v4().to_string());
        }
        let subject = format!("{}.commands.{tenant}", self.prefix);
        self.js
            .publish(subject, spell(&command, style).into())
            .await
            .unwrap()
            .await
            .unwrap();
        command["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the log holds `n` events and every projection has folded all of them.
    pub async fn settled(&self, n: i64) {
        crate::liveness::wait_for_events(&self.db, n).await;
        folded(&self.db).await;
    }

    /// Waits until `sql` counts at least `n`.
    pub async fn until(&self, sql: &str, n: i64) {
        for _ in 0..600 {
            let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if got >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{sql} never reached {n}");
    }

    /// Everything the store's copies hold, as text: the database, the stream and every
    /// revision of every cache bucket.
    pub async fn everything(&self) -> String {
        let mut all = pg_dump(&self.db);
        all.push_str(&stream_dump(&self.js, &self.stream).await);
        let buckets: Vec<String> = self
            .js
            .stream_names()
            .filter_map(|n| async move { n.ok() })
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter(|n| n.starts_with(&format!("KV_{}", self.store.bucket_prefix)))
            .collect();
        assert!(!buckets.is_empty(), "no cache bucket to look in");
        for b in buckets {
            all.push_str(&stream_dump(&self.js, &b).await);
        }
        all
    }
}

use futures_util::StreamExt;

/// How a producer spells JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// serde_json's own: raw UTF-8, keys sorted.
    Raw,
    /// Non-ASCII as lower-case `\uXXXX` (surrogate pairs past the BMP), keys reversed.
    Ascii,
    /// Upper-case escapes, `\/`, spaces around everything, keys rotated.
    Loose,
    /// Every character of every string escaped.
    Escaped,
}

impl Style {
    pub const ALL: [Style; 4] = [Style::Raw, Style::Ascii, Style::Loose, Style::Escaped];
}

/// `value` as a producer of `style` would write it.
pub fn spell(value: &Value, style: Style) -> Vec<u8> {
    if style == Style::Raw {
        return serde_json::to_vec(value).unwrap();
    }
    let mut out = String::new();
    write(value, style, &mut out);
    out.into_bytes()
}

fn write(v: &Value, style: Style, out: &mut String) {
    let pad = if style == Style::Loose { " " } else { "" };
    match v {
        Value::String(s) => string(s, style, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(pad);
                    out.push(',');
                }
                write(item, style, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            match style {
                Style::Ascii => keys.reverse(),
                Style::Loose => {
                    let half = keys.len() / 2;
                    keys.rotate_left(half)
                }
                _ => {}
            }
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(pad);
                string(k, style, out);
                out.push_str(pad);
                out.push(':');
                out.push_str(pad);
                write(&map[k], style, out);
            }
            out.push_str(pad);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn string(s: &str, style: Style, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let escape = match style {
            Style::Escaped => true,
            _ => !c.is_ascii() || (c as u32) < 0x20,
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style == Style::Loose => out.push_str("\\/"),
            c if escape => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if style == Style::Loose {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Every spelling of `value` a copy could hold it in: UTF-8, JSON's escapes (serde's, and
/// every one of our producers'), and PostgreSQL's bytea hex and escape output.
pub fn spellings(value: &str) -> Vec<String> {
    let v = Value::String(value.to_owned());
    let mut out = vec![value.to_owned()];
    for style in Style::ALL {
        let s = String::from_utf8(spell(&v, style)).unwrap();
        out.push(s.trim_matches('"').to_owned());
    }
    out.push(value.bytes().map(|b| format!("{b:02x}")).collect());
    out.push(
        value
            .bytes()
            .map(|b| match b {
                b'\\' => "\\\\".to_owned(),
                0x20..=0x7e => (b as char).to_string(),
                b => format!("\\{b:03o}"),
            })
            .collect(),
    );
    out
}

/// The first spelling of any of `values` found in `haystack`.
pub fn found<'a>(haystack: &str, values: impl IntoIterator<Item = &'a String>) -> Option<String> {
    values
        .into_iter()
        .flat_map(|v| spellings(v))
        .find(|s| haystack.contains(s.as_str()))
}

/// Waits until every projection has folded the whole log.
pub async fn folded(db: &TestDb) {
    for _ in 0..600 {
        let behind: i64 = sqlx::query_scalar(crate::fixtures::BEHIND)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if behind == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the projectors did not catch up");
}

/// The user_summary projection and its cache bucket under `prefix`.
pub fn summary_bucket(prefix: &str) -> (activity_store::project::Projection, String) {
    let summary = activity_store::project::projections()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "user_summary")
        .unwrap();
    let bucket = format!("{prefix}{}", summary.cache.as_ref().unwrap().bucket);
    (summary, bucket)
}

pub fn pg_dump(db: &TestDb) -> String {
    let out = std::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", &db.url()])
        .output()
        .expect("pg_dump (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The decompressed rows of every archive in `dir`, as text (lossy).
pub fn archives(dir: &std::path::Path) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".copy.gz") {
            let f = std::fs::File::open(&path).unwrap();
            flate2::read::GzDecoder::new(f)
                .read_to_end(&mut all)
                .unwrap();
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Every person's marker (`zq` + 5 digits + `q` + 8 hex digits) that `haystack` holds in any
/// spelling: as written, under JSON escapes (`\\u007a…`), and inside runs of hex digits (how
/// PostgreSQL shows bytea), escaped or not.
pub fn markers_in(haystack: &str) -> std::collections::HashSet<String> {
    let mut found = std::collections::HashSet::new();
    let hex = decode_hex_runs(haystack);
    for text in [haystack, hex.as_str()] {
        for t in [text.to_owned(), decode_ascii_escapes(text)] {
            let mut from = 0;
            while let Some(at) = t[from..].find("zq") {
                let start = from + at;
                if let Some(m) = t.get(start..start + 16).filter(|m| is_marker(m)) {
                    found.insert(m.to_owned());
                }
                from = start + 2;
            }
        }
    }
    found
}

fn is_marker(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() == 16
        && b[2..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'q'
        && b[8..].iter().all(u8::is_ascii_hexdigit)
}

/// Every run of 8 or more hex digits decoded to bytes (lossy UTF-8), one run a line.
fn decode_hex_runs(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() >= 8 {
            let even = &run[..run.len() / 2 * 2];
            let bytes: Vec<u8> = (0..even.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&even[i..i + 2], 16).unwrap())
                .collect();
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
        run.clear();
    }
    out
}

/// `\\u00XX` escapes of ASCII characters decoded, wherever they are.
fn decode_ascii_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("\\u00") {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 4..at + 6)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match code {
            Some(c) if c.is_ascii() => {
                out.push(c as char);
                rest = &rest[at + 6..];
            }
            _ => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
