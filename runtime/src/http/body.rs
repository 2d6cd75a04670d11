//! Response bodies: whole or streamed, and the JSON error shape every failure uses.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::Response;

/// The body type of every response of the server.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from a channel: each item is sent as it arrives, and the body
/// ends when every sender is gone.
pub fn streamed(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> Body {
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    StreamBody::new(stream).boxed()
}

/// A JSON response.
pub fn json(status: u16, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"error":{"status":N,"message":"…"}}` with status N.
pub fn json_error(status: u16, message: &str) -> Response<Body> {
    json(status, error_value(status, message))
}

/// The one shape of every error body the host sends (the worker's too):
/// `{"error":{"status":N,"message":"…"}}`.
pub fn error_value(status: u16, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"status": status, "message": message}})
}
