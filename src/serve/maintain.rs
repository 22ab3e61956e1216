//! Maintenance on a schedule, by one process at a time: whichever running store holds the
//! maintenance lease (a session advisory lock) keeps this month's partition of the log and
//! the next ones created, so appends never wait for partition DDL.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::locks;
use crate::log::partitions::{self, Month};

/// Until `shutdown`: takes the lease when it is free, and while holding it creates this
/// month and `ahead` more every `every`. Failures are logged and tried again.
pub async fn months_ahead(
    pool: PgPool,
    ahead: usize,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut lease: Option<sqlx::PgConnection> = None;
    loop {
        if let Err(e) = round(&pool, &mut lease, ahead).await {
            // The lease's session may be gone: take it again next time.
            tracing::warn!(error = %e, "maintenance failed; trying again later");
            lease = None;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn round(
    pool: &PgPool,
    lease: &mut Option<sqlx::PgConnection>,
    ahead: usize,
) -> Result<(), String> {
    if lease.is_none() {
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?.detach();
        let taken = locks::try_session(&mut conn, locks::MAINTENANCE, "take the maintenance lease")
            .await
            .map_err(|e| e.to_string())?;
        if !taken {
            return Ok(());
        }
        tracing::info!("maintenance lease taken");
        *lease = Some(conn);
    }
    let conn = lease.as_mut().expect("held");
    let months = Month::range(Month::of(Utc::now()), ahead + 1);
    let ensured = partitions::ensure(conn, &months)
        .await
        .map_err(|e| e.to_string())?;
    for m in ensured.created {
        tracing::info!(month = %m, "partition created ahead");
    }
    Ok(())
}
