//! The Prometheus endpoint and the health checks: `/metrics`, `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// What readiness depends on.
#[derive(Clone)]
pub struct Health {
    /// The store's database.
    pub pool: PgPool,
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// Set once the ingestor is bound to its consumer.
    pub consumer_bound: Arc<AtomicBool>,
    /// Cleared if the projector stops on an error.
    pub projecting: Arc<AtomicBool>,
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    health: Health,
}

/// Binds `addr` and returns the bound address (callers may pass port 0) and the server,
/// which serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let state = AppState {
        handle: recorder(),
        health,
    };
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.handle.render() }),
        )
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    };
    Ok((bound, server))
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.health.pool),
    )
    .await;
    if !matches!(db, Ok(Ok(_))) {
        problems.push("PostgreSQL unreachable");
    }
    if s.health.nats.connection_state() != async_nats::connection::State::Connected {
        problems.push("NATS disconnected");
    }
    if !s.health.consumer_bound.load(Ordering::SeqCst) {
        problems.push("consumer not bound");
    }
    if !s.health.projecting.load(Ordering::SeqCst) {
        problems.push("projector stopped");
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
    }
}
