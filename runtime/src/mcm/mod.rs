//! The MCM REST API (`/mcm/v1`): upload images, run them as containers, hot swap and
//! remove them. Everything it makes persists under `--data` and comes back at start.

mod auth;
mod containers;
mod images;
pub mod multipart;
mod observe;
mod persist;
mod replica;
pub mod tar_image;
pub(crate) mod time;

use crate::config::Config;
use crate::host::HostState;
use crate::http::{json, json_error, Body};
use crate::mims_dir::NodeFacts;
use crate::registry::Registry;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use containers::ContainerRecord;
pub use images::ImageMeta;

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

    fn into_response(self) -> Response<Body> {
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

/// The MCM state of this node: the images on disk and the deployed containers.
pub struct Mcm {
    data: PathBuf,
    registry: Arc<Registry>,
    node: NodeFacts,
    max_image: usize,
    images: images::ImageStore,
    containers: containers::Records,
    /// Serialises changes (create, update, delete) so records, disk and registry agree.
    ops: tokio::sync::Mutex<()>,
    /// The cluster's Redis URL (`--cluster`), where container stores live.
    redis: Option<String>,
    /// The cluster's deploy state (`--cluster`): changes are recorded there.
    deploys: Option<Arc<crate::cluster::deploys::Deploys>>,
}

impl Mcm {
    /// The MCM state kept under `config.data`; reads the images already there. In a
    /// cluster, changes are recorded in its Redis too.
    pub fn open(
        config: &Config,
        registry: Arc<Registry>,
        node: NodeFacts,
        cluster: Option<&Arc<crate::cluster::Cluster>>,
    ) -> Self {
        let images = images::ImageStore::open(&config.data);
        let deploys = cluster.map(|c| Arc::new(crate::cluster::deploys::Deploys::new(c.clone())));
        Self {
            data: config.data.clone(),
            registry,
            node,
            max_image: config.max_image,
            images,
            containers: containers::Records::default(),
            ops: tokio::sync::Mutex::new(()),
            redis: config.cluster.clone(),
            deploys,
        }
    }

    /// Starts every persisted container (call before the port opens). Containers that
    /// cannot start are logged and listed with state `failed`.
    pub async fn restore(&self) {
        containers::restore(self).await;
    }

    /// The images, oldest first.
    pub fn images(&self) -> Vec<ImageMeta> {
        self.images.list()
    }

    /// The deployed containers' records, by name.
    pub fn deployed(&self) -> Vec<ContainerRecord> {
        self.containers.list()
    }
}

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
        .map(percent_decode)
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
    let mut resp = Response::new(crate::http::full(text));
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

/// The boolean query parameter `name`: absent is false; `true`/`1`/`yes` (or a
/// bare `name`) and `false`/`0`/`no`; anything else is a 400.
fn query_flag(query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    let mut value = false;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if percent_decode(k) != name {
            continue;
        }
        value = match percent_decode(v).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "" => true,
            "false" | "0" | "no" => false,
            other => {
                return Err(ApiError::bad(format!(
                    "query parameter {name}={other:?} is not a boolean (use true or false)"
                )))
            }
        };
    }
    Ok(value)
}

/// Percent-decodes one path segment (invalid escapes are kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_segments_decode() {
        assert_eq!(query_flag(Some("purge=true"), "purge"), Ok(true));
        assert_eq!(query_flag(Some("a=1&purge"), "purge"), Ok(true));
        assert_eq!(query_flag(Some("purge=false"), "purge"), Ok(false));
        assert_eq!(query_flag(None, "purge"), Ok(false));
        assert!(query_flag(Some("purge=maybe"), "purge").is_err());
        assert_eq!(percent_decode("my-mim%3Alatest"), "my-mim:latest");
        assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    }
}
