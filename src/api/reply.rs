//! Successful answers: JSON, or JSON lines when the client asks for
//! `application/x-ndjson`, with the position they reflect in `X-Activity-Position`.

use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The projection position an answer reflects.
pub const POSITION: HeaderName = HeaderName::from_static("x-activity-position");
/// The cursor of the next page, when rows come as JSON lines.
pub const NEXT: HeaderName = HeaderName::from_static("x-activity-next");
/// Where a summary came from: `cache` or `table`.
pub const SOURCE: HeaderName = HeaderName::from_static("x-activity-source");

/// Where a summary was read.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The cache entry.
    Cache,
    /// The read table.
    Table,
}

fn with_headers(body: Vec<u8>, content_type: &'static str, position: Option<i64>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(p) = position {
        headers.insert(POSITION, HeaderValue::from(p));
    }
    response
}

/// One object.
pub fn one(value: &impl Serialize, position: i64, source: Source) -> Response {
    let mut response = json(value, Some(position));
    let source = match source {
        Source::Cache => "cache",
        Source::Table => "table",
    };
    response
        .headers_mut()
        .insert(SOURCE, HeaderValue::from_static(source));
    response
}

/// One object, with the position when there is one.
pub fn json(value: &impl Serialize, position: Option<i64>) -> Response {
    let mut body = serde_json::to_vec(value).expect("answers serialise");
    // A line, so answers printed one after another (curl) stay apart.
    body.push(b'\n');
    with_headers(body, "application/json", position)
}

/// Whether the client asked for JSON lines.
fn wants_lines(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().starts_with("application/x-ndjson"))
        })
}

/// Rows: `{"items": [...], "next": cursor}`, or one row a line with the cursor in
/// `X-Activity-Next`.
pub fn many<T: Serialize>(
    rows: &[T],
    next: Option<String>,
    position: i64,
    headers: &HeaderMap,
) -> Response {
    if wants_lines(headers) {
        let mut body = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut body, row).expect("rows serialise");
            body.push(b'\n');
        }
        let mut response = with_headers(body, "application/x-ndjson", Some(position));
        if let Some(n) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert(NEXT, n);
        }
        return response;
    }
    #[derive(Serialize)]
    struct Page<'a, T> {
        items: &'a [T],
        next: Option<String>,
    }
    json(&Page { items: rows, next }, Some(position))
}
