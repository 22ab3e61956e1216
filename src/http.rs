//! Serving HTTP on a port anyone may reach: a connection cap, and a deadline for each
//! request's headers that also closes idle keep-alive connections (hyper's header-read
//! timeout runs while a connection waits for its next request). A connection over the cap
//! is closed at once and counted (`activity_http_connections_refused_total{port}`); on
//! shutdown, connections finish the request in hand.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one port allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, and a keep-alive connection to
    /// start its next request.
    pub header_read: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1_024,
            header_read: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, within `limits`; `port` names it in metrics.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    port: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    metrics::counter!("activity_http_connections_refused_total", "port" => port).increment(0);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, a connection reset before accept: not fatal.
                Err(e) => {
                    tracing::warn!(error = %e, port, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("activity_http_connections_refused_total", "port" => port)
                .increment(1);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "a connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    // Requests in hand get a grace period; a client that will not finish is not waited for.
    if tokio::time::timeout(Duration::from_secs(10), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            port,
            "connections still open 10 s after shutdown; leaving them"
        );
    }
    Ok(())
}
