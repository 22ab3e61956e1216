//! Every error the API answers with: a status, a stable code and a message naming the
//! parameter and the rule, as JSON.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or not one the store knows (unknown, revoked or expired).
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing here for this token: a tenant it does not hold, a user or route that does
    /// not exist.
    #[error("{0}")]
    NotFound(String),
    /// A parameter broke a rule.
    #[error("{parameter}: {message}")]
    BadParameter {
        /// The parameter (query, path or header).
        parameter: String,
        /// The rule it broke.
        message: String,
    },
    /// The projection has not reached the position asked for within the wait allowed.
    #[error(
        "the {projection} projection is at position {position}, not yet {wanted}, after waiting {waited:?}; retry later"
    )]
    NotReached {
        /// The projection waited on.
        projection: String,
        /// Where it was at the deadline.
        position: i64,
        /// The position asked for.
        wanted: i64,
        /// How long the request waited.
        waited: Duration,
    },
    /// The read ran past the statement timeout and was cancelled.
    #[error(
        "the read took longer than {0:?} and was cancelled (statement timeout); narrow it (from, to, type) or ask for fewer rows"
    )]
    Timeout(Duration),
    /// The store cannot answer now (database unreachable or every connection busy).
    #[error("{0}")]
    Unavailable(String),
    /// The tenant holds its whole share of something all tenants share.
    #[error("{0}")]
    TooMany(String),
    /// The request line is longer than the store reads.
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// Only GET is served.
    #[error("only GET is allowed here")]
    MethodNotAllowed,
    /// A fault of the store, logged with its cause.
    #[error("internal error; the store logged it")]
    Internal,
}

impl ApiError {
    /// A bad parameter.
    pub fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadParameter { .. } => "bad_parameter",
            ApiError::NotReached { .. } => "position_not_reached",
            ApiError::Timeout(_) => "query_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::TooMany(_) => "too_many_requests",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotReached { .. } | ApiError::Timeout(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A database error as the API tells it: a cancelled statement is a timeout, an
    /// unreachable or exhausted database is unavailable, anything else is logged.
    pub fn database(e: sqlx::Error, statement_timeout: Duration) -> ApiError {
        match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
                ApiError::Timeout(statement_timeout)
            }
            // Data exceptions (class 22): a value the checks above let through that
            // PostgreSQL cannot take. The client's to mend, not a fault of the store.
            sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("22")) => {
                ApiError::bad(
                    "query",
                    format!("the database refused a value: {}", d.message()),
                )
            }
            // A read table not there yet (the projector has not installed it).
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => {
                ApiError::Unavailable("the read models are not installed yet; retry shortly".into())
            }
            sqlx::Error::PoolTimedOut => {
                ApiError::Unavailable("every database connection is busy; retry shortly".into())
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                ApiError::Unavailable("the database is unreachable; retry shortly".into())
            }
            _ => {
                tracing::error!(error = %e, "an API read failed");
                ApiError::Internal
            }
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Database { source, .. } => ApiError::database(source, Duration::ZERO),
            other => {
                tracing::error!(error = %other, "an API read failed");
                ApiError::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parameter = match &self {
            ApiError::BadParameter { parameter, .. } => Some(parameter.as_str()),
            _ => None,
        };
        let body = Body {
            error: Detail {
                code: self.code(),
                message: self.to_string(),
                parameter,
            },
        };
        let mut json = serde_json::to_vec(&body).expect("errors serialise");
        json.push(b'\n');
        let mut response = (self.status(), json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"activity-store\""),
                );
            }
            ApiError::NotReached { .. }
            | ApiError::Unavailable(_)
            | ApiError::Timeout(_)
            | ApiError::TooMany(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
