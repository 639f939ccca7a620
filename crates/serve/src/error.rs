//! What the service answers when a request cannot be served: a status and one line,
//! as `{"error": "..."}`, whatever went wrong below.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Errors of starting the service (before any request).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("model `{name}`: {source}")]
    Model {
        name: String,
        source: camstream_core::Error,
    },
    #[error("`{name}` {why}")]
    BadOption { name: &'static str, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// A request's failure: the status and the one line the client reads.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds to wait before retrying (503 when the queue is full).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, whatever the source wrote.
        let message = message.lines().collect::<Vec<_>>().join(" ");
        Self {
            status,
            message,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The work queue is full: retry later.
    pub fn busy(what: &str) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the {what} queue is full; retry later"),
            )
        }
    }
}

impl From<camstream_core::Error> for ApiError {
    /// The library's errors are about the request (shapes, layers, classes, options),
    /// except the device's and the server's own files.
    fn from(e: camstream_core::Error) -> Self {
        let status = match e {
            camstream_core::Error::Device(_) | camstream_core::Error::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.to_string())
    }
}

impl From<camstream_media::Error> for ApiError {
    fn from(e: camstream_media::Error) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
