//! The MCM REST API (`/mcm/v1`): upload images, run them as containers, hot swap and
//! remove them. Everything it makes persists under `--data` and comes back at start.

mod auth;
mod containers;
mod error;
mod images;
pub mod multipart;
mod observe;
mod persist;
mod replica;
pub mod state;
pub mod tar_image;
pub(crate) mod time;

use crate::http::body::{json, json_error, Body};
use crate::http::query::percent_decode;
use crate::state::HostState;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use std::net::SocketAddr;

pub use containers::ContainerRecord;
pub use error::{ApiError, ApiResult};
pub use images::ImageMeta;
pub use state::Mcm;

/// Answers one `/mcm/v1/...` request.
pub async fn handle(state: &HostState, req: Request<Incoming>) -> Response<Body> {
    if let Err(resp) = auth::check(req.headers(), &state.token) {
        return *resp;
    }
    let path = req
        .uri()
        .path()
        .trim_start_matches("/mcm/v1")
        .trim_end_matches('/')
        .to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| percent_decode(segment, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let mcm = &state.mcm;
    let result = match (&method, segments.as_slice()) {
        (&Method::POST, ["images"]) => images::upload(mcm, req).await,
        (&Method::GET, ["images"]) => Ok(images::list(mcm)),
        (&Method::GET, ["images", id]) => images::get(mcm, id),
        (&Method::DELETE, ["images", id]) => images::delete(mcm, id).await,
        (&Method::POST, ["containers"]) => match read_json(req).await {
            Ok(body) => containers::create(mcm, body).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["containers"]) => Ok(containers::list(mcm)),
        (&Method::GET, ["containers", id]) => containers::get(mcm, id),
        (&Method::PUT, ["containers", id]) => {
            let id = id.to_string();
            match read_json(req).await {
                Ok(body) => containers::update(mcm, &id, body).await,
                Err(e) => Err(e),
            }
        }
        (&Method::DELETE, ["containers", id]) => match query_flag(req.uri().query(), "purge") {
            Ok(purge) => containers::delete(mcm, id, purge).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["containers", id, "logs"]) => {
            return observe::logs(state, id, req.uri().query())
        }
        (&Method::GET, ["containers", id, "sessions"]) => observe::sessions(state, id),
        (&Method::GET, ["containers", id, "stats"]) => observe::one(state, id),
        (&Method::GET, ["stats"]) => Ok(observe::all(state)),
        (_, ["containers", _, "logs" | "sessions" | "stats"] | ["stats"]) => {
            Err(not_allowed("GET"))
        }
        (_, ["images"]) => Err(not_allowed("GET, POST")),
        (_, ["containers"]) => Err(not_allowed("GET, POST")),
        (_, ["images", _]) => Err(not_allowed("GET, DELETE")),
        (_, ["containers", _]) => Err(not_allowed("GET, PUT, DELETE")),
        _ => Err(ApiError::not_found(format!(
            "no MCM call at {method} /mcm/v1{path}; the calls are /images, /containers and /stats"
        ))),
    };
    match result {
        Ok((status, body)) => json(status, body),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics`: Prometheus text for loopback peers, 403 for anyone else.
pub fn metrics(state: &HostState, peer: SocketAddr) -> Response<Body> {
    if !peer.ip().is_loopback() && !peer.ip().to_canonical().is_loopback() {
        return json_error(403, "/metrics is served to loopback clients only");
    }
    let mut text = state.metrics.render(state.registry.list().len());
    text.push_str(&state.hub.render_metrics());
    if let Some(cluster) = &state.cluster {
        text.push_str(&cluster.render_metrics());
    }
    let mut resp = Response::new(crate::http::body::full(text));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn not_allowed(allowed: &'static str) -> ApiError {
    ApiError {
        allow: Some(allowed),
        ..ApiError::new(405, format!("method not allowed here; use {allowed}"))
    }
}

/// The largest JSON body an MCM call takes.
const MAX_JSON: usize = 1024 * 1024;

/// Reads a JSON request body (at most 1 MiB).
async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let bytes = match Limited::new(req.into_body(), MAX_JSON).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::new(
                413,
                format!("the JSON body is over the {MAX_JSON}-byte limit"),
            ))
        }
        Err(e) => {
            return Err(ApiError::bad(format!(
                "could not read the request body: {e}"
            )))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad(format!(
            "the body is not valid JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })
}

/// The boolean query parameter `name` (see [`crate::http::query::flag`]); a bad
/// value is a 400.
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    crate::http::query::flag(query, name).map_err(ApiError::bad)
}
