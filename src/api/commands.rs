//! Command status for producers: `applied` (with its position and event id), `refused`
//! (reason, field, message) or `unknown`, for the token's tenant only. With `wait_ms`, an
//! unknown command is asked again until it is known or the wait ends.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::reads::{pairs, path};
use super::reply;
use super::session::{Session, bearer};

/// How soon a waiting request asks again, doubling up to POLL_MAX.
const POLL: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(400);
/// The most requests waiting for commands at once (each asks the database at most every
/// POLL..POLL_MAX): more are told to retry.
pub const MAX_POLLERS: usize = 64;

/// What became of one command.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CommandStatus {
    /// `applied`, `refused` or `unknown`.
    pub status: String,
    /// The command's id.
    #[sqlx(skip)]
    pub command_id: Uuid,
    /// The tenant.
    #[sqlx(skip)]
    pub tenant: String,
    /// Applied: the position of its event (absent if its month is detached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// Applied: its event's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Applied: its event's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Refused: the stable reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Refused: the field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Refused: what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was recorded (applied or refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

async fn read(
    state: &ApiState,
    token: &str,
    tenant: &str,
    id: Uuid,
) -> Result<CommandStatus, ApiError> {
    let session = Session::open(state, token, tenant, "activity_feed").await?;
    read_in(state, session, tenant, id).await
}

/// What became of command `id`, read in `session`.
async fn read_in(
    state: &ApiState,
    mut session: Session,
    tenant: &str,
    id: Uuid,
) -> Result<CommandStatus, ApiError> {
    let found: Option<CommandStatus> = sqlx::query_as(
        "SELECT status, position, event_id, event_type, reason, field, message, at \
         FROM analytics.command_status($1)",
    )
    .bind(id)
    .fetch_optional(&mut *session.tx)
    .await
    .map_err(|e| state.db_error(e))?;
    let mut status = found.unwrap_or(CommandStatus {
        status: "unknown".into(),
        command_id: id,
        tenant: String::new(),
        position: None,
        event_id: None,
        event_type: None,
        reason: None,
        field: None,
        message: None,
        at: None,
    });
    status.command_id = id;
    status.tenant = tenant.to_owned();
    Ok(status)
}

/// `GET /v1/tenants/{tenant}/commands/{id}`
pub async fn status(
    State(state): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let (tenant, id) = path(p)?;
    // The token first: a client without a valid one learns nothing of its parameters.
    let session = Session::open(&state, token, &tenant, "activity_feed").await?;
    let params = pairs(query, &["wait_ms"])?;
    let max = state.config.max_wait.as_millis() as u64;
    let wait = Duration::from_millis(params.millis("wait_ms", max)?.unwrap_or(0));
    let id = Uuid::try_parse(&id)
        .map_err(|_| ApiError::bad("id", "must be the command's UUID, as published in its `id`"))?;
    let deadline = Instant::now() + wait;
    let mut status = read_in(&state, session, &tenant, id).await?;
    if status.status == "unknown" && !wait.is_zero() {
        let _share = state.polls.take(&tenant).await?;
        let Ok(_permit) = state.pollers.try_acquire() else {
            return Err(ApiError::Unavailable(
                "too many requests are waiting for commands; retry shortly".into(),
            ));
        };
        let mut pause = POLL;
        while status.status == "unknown" {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(POLL_MAX);
            status = read(&state, token, &tenant, id).await?;
        }
    }
    Ok(reply::json(&status, status.position))
}
