//! A tenant's activity schemas (data contracts), read with its token under row-level
//! security: what its producers' metadata must follow.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::ApiState;
use super::error::ApiError;
use super::reads::{Pairs, pairs, path};
use super::reply;
use super::session::{Session, bearer};
use crate::contracts::{self, ContractError};

/// `GET /v1/tenants/{tenant}/schemas`: the current version of each of its schemas.
pub async fn list(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let tenant = path(p)?;
    pairs(query, &[])?;
    let mut session = Session::open(&state, token, &tenant, "activity_feed").await?;
    let rows = contracts::list_in(&mut *session.tx, Some(&tenant))
        .await
        .map_err(|e| state.read_error(e))?;
    Ok(reply::many(&rows, None, session.position, &headers))
}

/// `GET /v1/tenants/{tenant}/schemas/{type}[?version=N]`: one schema, whole.
pub async fn show(
    State(state): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let (tenant, activity_type) = path(p)?;
    crate::model::fields::activity_type(&activity_type)
        .map_err(|r| ApiError::bad("type", r.message))?;
    let version = pairs(query, &["version"])?.version()?;
    let mut session = Session::open(&state, token, &tenant, "activity_feed").await?;
    let s = contracts::show_in(&mut *session.tx, &tenant, &activity_type, version)
        .await
        .map_err(|e| match e {
            ContractError::Db(e) => state.read_error(e),
            e => ApiError::NotFound(e.to_string()),
        })?;
    let body = json!({
        "tenant": s.tenant,
        "activity_type": s.activity_type,
        "version": s.version,
        "schema": s.schema,
        "created_at": s.created_at,
    });
    Ok(reply::json(&body, Some(session.position)))
}
