//! The read endpoints: a user's summary (through the cache when it can), a user's feed, a
//! tenant's feed with filters, a tenant's days. Each answers the SQL read's rows, with the
//! projection position they reflect.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::NaiveDate;
use tokio::time::Instant;

use super::ApiState;
use super::error::ApiError;
use super::params::Params;
use super::reply::{self, Source};
use super::session::{Session, bearer};
use super::wait::NotYet;
use crate::query::{self, Cursor, Daily, Feed, FeedRow, fill};

pub type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The most days (day and type rows) one `daily` answer holds.
pub const MAX_DAILY_ROWS: usize = 10_000;

/// The query pairs, or the rule the query string broke.
pub fn pairs(query: Pairs, allowed: &[&str]) -> Result<Params, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    Params::new(pairs, allowed)
}

/// The path's parameters, or why they could not be read (bad percent-encoding).
pub fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad("path", e.body_text()))
}

fn min_position(params: &Params, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let header = headers
        .get("x-activity-min-position")
        .map(|v| v.to_str().unwrap_or("not text"));
    params.min_position(header)
}

fn check_user(user: &str) -> Result<(), ApiError> {
    crate::model::fields::user_id(user).map_err(|r| ApiError::bad("user", r.message))
}

/// `session`, once its projection has folded up to `min`, waiting (at most the server's max
/// wait) if it has not yet. The wait holds no database connection.
pub async fn reach(
    state: &ApiState,
    session: Session,
    token: &str,
    tenant: &str,
    projection: &str,
    min: Option<i64>,
) -> Result<Session, ApiError> {
    let deadline = Instant::now() + state.config.max_wait;
    let Some(min) = min.filter(|m| *m > session.position) else {
        return Ok(session);
    };
    drop(session);
    let _share = state.waits.take(tenant).await?;
    let started = Instant::now();
    let not_reached = |position| ApiError::NotReached {
        projection: projection.to_owned(),
        position,
        wanted: min,
        waited: started.elapsed(),
    };
    let digest = super::tokens::digest(token);
    match state
        .positions
        .wait_for(projection, (tenant, &digest), min, deadline)
        .await
    {
        Ok(()) => {}
        Err(NotYet::Deadline(at)) => return Err(not_reached(at)),
        Err(NotYet::Busy) => {
            return Err(ApiError::Unavailable(
                "too many requests are waiting for a position; retry shortly".into(),
            ));
        }
    }
    let session = Session::open(state, token, tenant, projection).await?;
    if session.position < min {
        return Err(not_reached(session.position));
    }
    Ok(session)
}

/// `GET /v1/tenants/{tenant}/users/{user}/summary`
pub async fn summary(
    State(state): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let (tenant, user) = path(p)?;
    // The token is checked (the session opened) before parameters, and before the cache
    // is asked anything.
    let session = Session::open(&state, token, &tenant, "user_summary").await?;
    let params = pairs(query, &["min_position"])?;
    let min = min_position(&params, &headers)?;
    check_user(&user)?;
    let cache = state.cache().await;
    // The entry serves only a session the token scoped to this tenant (opened above), of the
    // projection's current epoch, at least as new as the position asked for.
    if let Some(c) = &cache {
        let entry = query::peek(c, &tenant, &user).await;
        if let Some((r, as_of)) = query::serve(c, entry, session.epoch, min, &tenant, &user) {
            return Ok(reply::one(&r, as_of, Source::Cache));
        }
    }
    let mut session = reach(&state, session, token, &tenant, "user_summary", min).await?;
    let row = query::user_in(&mut session.tx, &tenant, &user)
        .await
        .map_err(|e| state.read_error(e))?;
    let Some(row) = row else {
        return Err(ApiError::NotFound(format!(
            "no user `{}` in tenant `{tenant}`",
            crate::model::escape_text(&user)
        )));
    };
    if let Some(cache) = cache {
        let (t, u, r) = (tenant.clone(), user.clone(), row.clone());
        let (as_of, epoch) = (session.position, session.epoch);
        tokio::spawn(async move { fill(&cache, &t, &u, &r, as_of, epoch).await });
    }
    Ok(reply::one(&row, session.position, Source::Table))
}

/// The filters both feeds take; `cursor` names the page parameter.
const FEED_PARAMS: [&str; 6] = ["metadata", "type", "from", "to", "limit", "min_position"];

/// A feed's page: the filter from the query, read at the position asked for.
async fn feed(
    state: &ApiState,
    headers: &HeaderMap,
    token: &str,
    query: Pairs,
    tenant: String,
    user: Option<String>,
    cursor: &str,
) -> Result<Response, ApiError> {
    let session = Session::open(state, token, &tenant, "activity_feed").await?;
    let mut allowed = FEED_PARAMS.to_vec();
    allowed.push(cursor);
    let params = pairs(query, &allowed)?;
    if let Some(u) = &user {
        check_user(u)?;
    }
    let filter = Feed {
        tenant,
        user,
        metadata: params.metadata()?,
        activity_type: params.activity_type()?,
        from: params.instant("from")?,
        to: params.instant("to")?,
        after: params.cursor(cursor)?,
        limit: params.limit()? + 1,
    };
    let min = min_position(&params, headers)?;
    let mut session = reach(state, session, token, &filter.tenant, "activity_feed", min).await?;
    let rows = query::feed_in(&mut session.tx, &filter)
        .await
        .map_err(|e| state.read_error(e))?;
    Ok(page(rows, filter.limit - 1, session.position, headers))
}

/// `GET /v1/tenants/{tenant}/users/{user}/activities`
pub async fn user_activities(
    State(state): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let (tenant, user) = path(p)?;
    feed(&state, &headers, token, query, tenant, Some(user), "before").await
}

/// `GET /v1/tenants/{tenant}/activities`
pub async fn tenant_activities(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let tenant = path(p)?;
    feed(&state, &headers, token, query, tenant, None, "cursor").await
}

/// A page of at most `limit` rows out of `rows` (fetched one over), with the cursor of
/// the next page if there is one.
fn page(mut rows: Vec<FeedRow>, limit: i64, position: i64, headers: &HeaderMap) -> Response {
    let next = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        let last = rows.last().expect("a page over its limit has rows");
        Cursor {
            at: last.occurred_at,
            event_id: last.event_id,
        }
        .encode()
    });
    reply::many(&rows, next, position, headers)
}

/// `GET /v1/tenants/{tenant}/daily`
pub async fn daily(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    query: Pairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let tenant = path(p)?;
    let session = Session::open(&state, token, &tenant, "daily_activity").await?;
    let params = pairs(query, &["from", "to", "type", "min_position"])?;
    let (from, to): (Option<NaiveDate>, Option<NaiveDate>) =
        (params.day("from")?, params.day("to")?);
    let activity_type = params.activity_type()?;
    let min = min_position(&params, &headers)?;
    let mut session = reach(&state, session, token, &tenant, "daily_activity", min).await?;
    let filter = Daily {
        tenant,
        from,
        to,
        activity_type,
        limit: Some(MAX_DAILY_ROWS as i64 + 1),
    };
    let rows = query::daily_in(&mut session.tx, &filter)
        .await
        .map_err(|e| state.read_error(e))?;
    if rows.len() > MAX_DAILY_ROWS {
        return Err(ApiError::bad(
            "from",
            format!(
                "the range holds more than {MAX_DAILY_ROWS} rows; narrow from/to, or give type"
            ),
        ));
    }
    Ok(reply::many(&rows, None, session.position, &headers))
}
