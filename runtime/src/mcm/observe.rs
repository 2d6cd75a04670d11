//! What the web console and `mimhost logs` watch: a container's log (recent lines, or
//! followed as server-sent events), its WebSocket sessions, and its counters.

use super::error::{ApiError, ApiResult};
use super::query_flag;
use crate::http::body::{json, json_error, streamed, Body};
use crate::logs::LogLine;
use crate::state::HostState;
use bytes::Bytes;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Lines `GET …/logs` returns when no `limit` is given.
const DEFAULT_LINES: usize = 200;

/// How often a followed log sends a comment (keeps proxies from timing out) and
/// checks that its container still runs.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The 404 for a container this node does not know.
fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!("no container {id:?} (see GET /mcm/v1/containers)"))
}

fn known(state: &HostState, id: &str) -> bool {
    state.registry.get(id).is_some() || state.mcm.deployed().iter().any(|r| r.name == id)
}

/// The numeric query parameter `name` (absent: `default`; capped at `max`).
fn query_number(
    query: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let value = match crate::http::query::param(query, name) {
        None => default,
        Some(v) => v.parse::<usize>().map_err(|_| {
            ApiError::bad(format!(
                "query parameter {name}={v:?} is not a whole number"
            ))
        })?,
    };
    Ok(value.min(max))
}

/// `GET /containers/{id}/logs[?limit=N][&follow=true]`: the recent lines as JSON, or
/// (follow) those lines and every new one as `text/event-stream` until the container
/// is removed. The stream carries on through worker restarts and hot swaps.
pub fn logs(state: &HostState, id: &str, query: Option<&str>) -> Response<Body> {
    let parsed = query_flag(query, "follow").and_then(|follow| {
        query_number(query, "limit", DEFAULT_LINES, crate::logs::RING_LINES)
            .map(|limit| (follow, limit))
    });
    let (follow, limit) = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !known(state, id) {
        return unknown(id).into_response();
    }
    if !follow {
        return json(200, json!({ "data": state.hub.logs.recent(id, limit) }));
    }
    if state.registry.get(id).is_none() {
        return json_error(
            409,
            &format!("container {id:?} is not running; read its recent lines without follow"),
        );
    }
    let follow = state.hub.logs.follow(id, limit);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(state.registry.clone(), id.to_string(), follow, tx));
    let mut resp = Response::new(streamed(rx));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

type Sink = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// One server-sent event.
fn event(name: &str, id: Option<u64>, data: &str) -> Frame<Bytes> {
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    Frame::data(Bytes::from(format!("event: {name}\n{id}data: {data}\n\n")))
}

fn line_event(line: &LogLine) -> Frame<Bytes> {
    let data = serde_json::to_string(line).unwrap_or_else(|_| "{}".into());
    event("log", Some(line.seq), &data)
}

/// Writes the backlog, then live lines, until the container goes or the client leaves.
async fn pump(
    registry: std::sync::Arc<crate::registry::Registry>,
    id: String,
    follow: crate::logs::Follow,
    tx: Sink,
) {
    let crate::logs::Follow { backlog, mut live } = follow;
    for line in &backlog {
        if tx.send(Ok(line_event(line))).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::time::timeout(KEEPALIVE, live.recv()).await;
        let frame = match next {
            Ok(Ok(line)) => line_event(&line),
            Ok(Err(RecvError::Lagged(n))) => {
                event("gap", None, &json!({ "skipped": n }).to_string())
            }
            Ok(Err(RecvError::Closed)) => break,
            Err(_) if registry.get(&id).is_none() => break,
            Err(_) => Frame::data(Bytes::from_static(b": keepalive\n\n")),
        };
        if tx.send(Ok(frame)).await.is_err() {
            return;
        }
    }
    let end = json!({ "reason": format!("container {id} was removed") }).to_string();
    let _ = tx.send(Ok(event("end", None, &end))).await;
}

/// `GET /containers/{id}/sessions`: the open WebSocket sessions of a container.
pub fn sessions(state: &HostState, id: &str) -> ApiResult {
    if !known(state, id) {
        return Err(unknown(id));
    }
    Ok((200, json!({ "data": state.hub.session_views(id) })))
}

/// The counters of one container, as `GET /stats` lists them.
fn summary(state: &HostState, name: &str) -> Value {
    let m = state.metrics.container(name);
    let restarts = state
        .registry
        .get(name)
        .map_or(0, |c| c.supervisor.restarts());
    json!({
        "name": name,
        "requests": m.http_requests.load(Ordering::Relaxed),
        "errors": m.http_errors.load(Ordering::Relaxed),
        "openSessions": state.hub.open_sessions(name),
        "workerRestarts": restarts,
    })
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /stats`: every running container's counters (clients derive rates from two
/// readings and their `at`).
pub fn all(state: &HostState) -> (u16, Value) {
    let data: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|c| summary(state, &c.name))
        .collect();
    (200, json!({ "at": now_millis(), "data": data }))
}

/// `GET /containers/{id}/stats`: counters, the latency histogram and the last
/// requests (route, status, milliseconds).
pub fn one(state: &HostState, id: &str) -> ApiResult {
    if !known(state, id) {
        return Err(unknown(id));
    }
    let m = state.metrics.container(id);
    let buckets: Vec<Value> = crate::metrics::LATENCY_BUCKETS
        .iter()
        .zip(m.latency_buckets.iter())
        .map(|(le, n)| json!({ "le": le, "count": n.load(Ordering::Relaxed) }))
        .collect();
    let mut v = summary(state, id);
    v["at"] = json!(now_millis());
    v["latency"] = json!({
        "sumSeconds": m.latency_micros_sum.load(Ordering::Relaxed) as f64 / 1e6,
        "buckets": buckets,
    });
    v["recent"] = json!(state.metrics.recent(id));
    Ok((200, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_cap() {
        assert_eq!(query_number(None, "limit", 5, 10), Ok(5));
        assert_eq!(query_number(Some("limit=3"), "limit", 5, 10), Ok(3));
        assert_eq!(query_number(Some("limit=99"), "limit", 5, 10), Ok(10));
        assert!(query_number(Some("limit=-1"), "limit", 5, 10).is_err());
    }

    #[test]
    fn events_are_framed_for_event_source() {
        let frame = event("end", None, "{}").into_data().expect("data");
        assert_eq!(&frame[..], b"event: end\ndata: {}\n\n");
    }
}
