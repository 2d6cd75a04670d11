//! The MCM API's error: a status and a message, sent as
//! `{"error":{"status":N,"message":"…"}}`.

use crate::http::body::{json_error, Body};
use hyper::Response;

/// A failed MCM call: sent as `{"error":{"status":N,"message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
    /// The methods a 405 lists in its `Allow` header.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// 500 Internal Server Error (the host's own fault, e.g. a disk error).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    pub(super) fn into_response(self) -> Response<Body> {
        if self.status == 500 {
            tracing::error!("MCM: {}", self.message);
        }
        let mut resp = json_error(self.status, &self.message);
        if let Some(allow) = self.allow {
            resp.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(allow),
            );
        }
        resp
    }
}

/// The result of an MCM handler: a status and a JSON body, or an error.
pub type ApiResult = Result<(u16, serde_json::Value), ApiError>;
