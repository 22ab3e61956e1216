//! The Prometheus endpoint and the health checks: `/metrics`, `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::roles::Role;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of every `*_seconds` histogram: from a fast commit to a slow rebuild step.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of every `*_size` histogram (batch sizes, in messages).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Installs the process-wide Prometheus recorder (once) and returns its handle. Durations and
/// sizes are histograms (not summaries), so the series of several instances add up.
pub fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// What liveness and readiness depend on.
#[derive(Clone)]
pub struct Health {
    /// The store's database.
    pub pool: PgPool,
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// The roles this process runs.
    pub roles: Vec<Role>,
    /// How long a running role may go without a heartbeat.
    pub liveness_timeout: Duration,
    /// What `/status` reads.
    pub status: crate::status::StatusConfig,
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
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = async move {
        // The metrics port is for scrapers and probes: few connections, short patience.
        let limits = crate::http::Limits {
            max_connections: 64,
            header_read: Duration::from_secs(5),
        };
        crate::http::serve(listener, app, limits, "metrics", shutdown).await
    };
    Ok((bound, server))
}

/// Alive unless a running role has stopped making progress (its loop hung): then a
/// supervisor should restart the process. A role restarting after an error is alive.
async fn livez(State(s): State<AppState>) -> (StatusCode, String) {
    let stuck: Vec<String> = s
        .health
        .roles
        .iter()
        .filter_map(|r| r.stuck(s.health.liveness_timeout))
        .collect();
    if stuck.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: {}\n", stuck.join("; ")),
        )
    }
}

/// The store's status as JSON (`activity-store status --json`): 200 when healthy, 503 when
/// degraded, 500 when the database cannot be read.
async fn status(
    State(s): State<AppState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let js = async_nats::jetstream::new(s.health.nats.clone());
    let json = [("content-type", "application/json")];
    match crate::status::gather(&s.health.pool, Some(&js), &s.health.status).await {
        Ok(status) => {
            crate::status::export(&status);
            let code = if status.healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_string_pretty(&status).unwrap_or_default();
            (code, json, body)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// Ready when both servers answer and every role is running; otherwise says which is not.
async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.health.pool),
    )
    .await;
    if !matches!(db, Ok(Ok(_))) {
        problems.push("PostgreSQL unreachable".to_owned());
    }
    if s.health.nats.connection_state() != async_nats::connection::State::Connected {
        problems.push("NATS disconnected".to_owned());
    }
    problems.extend(s.health.roles.iter().filter_map(Role::not_ready));
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_batch_sizes_are_histograms_that_instances_can_aggregate() {
        let handle = recorder();
        metrics::histogram!("activity_test_step_seconds").record(0.003);
        metrics::histogram!("activity_ingest_batch_size").record(300.0);
        let text = handle.render();
        assert!(
            text.contains("activity_test_step_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("activity_ingest_batch_size_bucket{le=\"500\"} 1"),
            "{text}"
        );
        assert!(!text.contains("quantile"), "no summaries: {text}");
    }
}
