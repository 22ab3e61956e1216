//! The HTTP API for analytics readers and producers (`run --api-addr`): tenant tokens,
//! reads of the projections under row-level security, read-your-writes by position, and
//! command status. See `openapi.json`, served at `/v1/openapi.json`.

mod commands;
mod error;
mod params;
mod reads;
mod reply;
mod schemas;
mod session;
mod shares;
pub mod tokens;
mod wait;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::query::Cursor;
pub use commands::CommandStatus;
pub use error::ApiError;
pub use params::{DEFAULT_LIMIT, MAX_LIMIT};
pub use wait::MAX_WAITERS;

use crate::cache::CacheEntries;
use crate::db::DbError;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The longest request target read, in bytes.
pub const MAX_URI_BYTES: usize = 8192;

/// How the API serves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The longest a request may wait for a position (`X-Activity-Min-Position`) or a
    /// command (`wait_ms`).
    pub max_wait: Duration,
    /// Reads running longer are cancelled.
    pub statement_timeout: Duration,
    /// The user_summary cache bucket's name prefix (tests isolate theirs).
    pub bucket_prefix: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_wait: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            bucket_prefix: String::new(),
        }
    }
}

/// The API's own database connections (its pool's size).
pub const POOL_SIZE: usize = 16;

/// What every request shares.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

/// The shared parts.
pub struct Inner {
    pool: PgPool,
    config: ApiConfig,
    positions: Arc<wait::Positions>,
    pollers: Semaphore,
    /// Each tenant's share of the database sessions (half the API's pool), of requests
    /// waiting for a position and of command long-polls (a quarter of each cap).
    sessions: Arc<shares::Shares>,
    waits: Arc<shares::Shares>,
    polls: Arc<shares::Shares>,
    /// Which tenant tokens opened lately: what a session is counted under.
    verified: shares::Verified,
    js: Option<async_nats::jetstream::Context>,
    cache: OnceCell<CacheEntries>,
    cache_tried: Mutex<Option<std::time::Instant>>,
}

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiState {
    /// The state of an API reading through `pool` (a login granted `activity_reader` and
    /// bound to no tenant: only tokens scope it) and the cache on `js`.
    pub fn new(
        pool: PgPool,
        js: Option<async_nats::jetstream::Context>,
        config: ApiConfig,
        shutdown: CancellationToken,
    ) -> ApiState {
        let positions = wait::Positions::watch(pool.clone(), shutdown);
        ApiState(Arc::new(Inner {
            pool,
            config,
            positions,
            pollers: Semaphore::new(commands::MAX_POLLERS),
            // A tenant's requests wait their turn for one of its sessions as long as for a
            // connection of the pool; waiters and long-polls are refused at once.
            sessions: shares::Shares::new(
                "database sessions",
                POOL_SIZE / 2,
                Duration::from_secs(2),
            ),
            waits: shares::Shares::new(
                "requests waiting for a position",
                wait::MAX_WAITERS / 4,
                Duration::ZERO,
            ),
            polls: shares::Shares::new(
                "command long-polls",
                commands::MAX_POLLERS / 4,
                Duration::ZERO,
            ),
            verified: shares::Verified::default(),
            js,
            cache: OnceCell::new(),
            cache_tried: Mutex::new(None),
        }))
    }

    /// A database error as this API answers it.
    fn db_error(&self, e: sqlx::Error) -> ApiError {
        ApiError::database(e, self.config.statement_timeout)
    }

    /// A read layer's error as the API answers it.
    fn read_error(&self, e: DbError) -> ApiError {
        match e {
            DbError::Database { source, .. } => self.db_error(source),
            e => {
                tracing::error!(error = %e, "an API read failed");
                ApiError::Internal
            }
        }
    }

    /// The user_summary cache, once its bucket exists (looked for at most every 5 s).
    async fn cache(&self) -> Option<CacheEntries> {
        if let Some(c) = self.cache.get() {
            return Some(c.clone());
        }
        let js = self.js.as_ref()?;
        {
            let mut tried = self.cache_tried.lock().expect("cache lock");
            if tried.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return None;
            }
            *tried = Some(std::time::Instant::now());
        }
        let entries =
            crate::query::summary_cache(&self.pool, js, &self.config.bucket_prefix).await?;
        Some(self.cache.get_or_init(|| async { entries }).await.clone())
    }
}

/// The routes, under `/v1`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/users/{user}/summary",
            get(reads::summary),
        )
        .route(
            "/v1/tenants/{tenant}/users/{user}/activities",
            get(reads::user_activities),
        )
        .route(
            "/v1/tenants/{tenant}/activities",
            get(reads::tenant_activities),
        )
        .route("/v1/tenants/{tenant}/daily", get(reads::daily))
        .route("/v1/tenants/{tenant}/commands/{id}", get(commands::status))
        .route("/v1/tenants/{tenant}/schemas", get(schemas::list))
        .route("/v1/tenants/{tenant}/schemas/{type}", get(schemas::show))
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .route_layer(middleware::from_fn(observe))
        .fallback(|| async {
            ApiError::NotFound("no such path; the paths are listed at /v1/openapi.json".into())
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(bounded))
        .with_state(state)
}

/// Refuses request targets longer than MAX_URI_BYTES and methods other than GET and HEAD
/// before any work; marks every answer as per-token and not to be stored by caches.
async fn bounded(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    let mut response = if target > MAX_URI_BYTES {
        ApiError::UriTooLong(MAX_URI_BYTES).into_response()
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = ApiError::MethodNotAllowed.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Authorization"),
    );
    response
}

/// Counts requests by route and status, and times them.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("activity_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("activity_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Whether the API at `addr` answers a request (its OpenAPI document) within a second: the
/// API role's heartbeat.
pub async fn answers(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request =
            "GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/1.1 200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Some(true))
    )
}

/// Binds `config.addr` and returns the bound address and the server, which serves until
/// `shutdown`.
pub async fn serve(
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(state.config.addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let server = async move {
        crate::http::serve(
            listener,
            app,
            crate::http::Limits::default(),
            "api",
            shutdown,
        )
        .await
    };
    Ok((bound, server))
}
