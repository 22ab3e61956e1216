//! Lag per tenant: how far each projection is behind a tenant's own log. Read from the log
//! and the checkpoints (no per-tenant state is kept): a tenant's unfolded events are its
//! events past the projection's checkpoint, found through the (tenant, position) index.

use serde::Serialize;
use sqlx::PgConnection;

use crate::db::{DbError, db};

/// How many of the most-lagging tenants `status` names per projection.
pub const MOST_LAGGING: i64 = 5;
/// How many unfolded events `status` looks through to name them: a projection further
/// behind is named by the tenants of its next this-many events.
pub const LAG_SCAN: i64 = 100_000;

/// One tenant in one projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantLag {
    /// The tenant.
    pub tenant: String,
    /// The projection.
    pub projection: String,
    /// The tenant's position the projection has folded up to.
    pub position: i64,
    /// The tenant's last position handed out (0 before its first event).
    pub head: i64,
    /// The tenant's events not folded yet (for the most-lagging list: among the next
    /// [`LAG_SCAN`] events of the log).
    pub lag_events: i64,
    /// Age of the tenant's oldest event not folded yet; none when up to date.
    pub lag_seconds: Option<f64>,
}

type Row = (String, String, Option<i64>, i64, i64, Option<f64>);

fn lag((tenant, projection, position, head, lag_events, lag_seconds): Row) -> TenantLag {
    TenantLag {
        tenant,
        projection,
        position: position.unwrap_or(0),
        head,
        lag_events,
        lag_seconds: lag_seconds.map(|s| s.max(0.0)),
    }
}

/// `tenant` in every installed projection.
pub(super) async fn of_tenant(
    conn: &mut PgConnection,
    tenant: &str,
) -> Result<Vec<TenantLag>, DbError> {
    let rows: Vec<Row> = db(
        sqlx::query_as(
            "SELECT $1::text, c.projection, tenant_projection_position(c.projection, $1), \
                    coalesce((SELECT h.head FROM tenant_heads h WHERE h.tenant = $1), 0), \
                    (SELECT count(*) FROM events e WHERE e.tenant = $1 AND e.position > c.position), \
                    (SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM events e \
                     WHERE e.tenant = $1 AND e.position > c.position ORDER BY e.position LIMIT 1) \
             FROM shard_checkpoints c \
             WHERE c.shard = coalesce((SELECT h.shard FROM tenant_heads h WHERE h.tenant = $1), 0) \
             ORDER BY c.projection",
        )
        .bind(tenant)
        .fetch_all(conn)
        .await,
        "read a tenant's lag",
    )?;
    Ok(rows.into_iter().map(lag).collect())
}

/// The tenants with the most events past `projection`'s checkpoints (at most
/// [`MOST_LAGGING`], most first), among each shard's next [`LAG_SCAN`] unfolded events.
pub(super) async fn most_lagging(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Vec<TenantLag>, DbError> {
    let rows: Vec<Row> = db(
        sqlx::query_as(
            "SELECT w.tenant, $1::text, tenant_projection_position($1, w.tenant), \
                    coalesce((SELECT h.head FROM tenant_heads h WHERE h.tenant = w.tenant), 0), \
                    count(*), extract(epoch FROM now() - min(w.recorded_at))::float8 \
             FROM shard_checkpoints c CROSS JOIN LATERAL ( \
                 SELECT tenant, recorded_at FROM events \
                 WHERE position > c.position AND position < (c.shard::bigint + 1) << 48 \
                 ORDER BY position LIMIT $2) w \
             WHERE c.projection = $1 \
             GROUP BY w.tenant ORDER BY count(*) DESC, w.tenant LIMIT $3",
        )
        .bind(projection)
        .bind(LAG_SCAN)
        .bind(MOST_LAGGING)
        .fetch_all(conn)
        .await,
        "read the most-lagging tenants",
    )?;
    Ok(rows.into_iter().map(lag).collect())
}
