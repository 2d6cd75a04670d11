//! A request for a container: read the body (bounded), hand it to the worker, and
//! turn the reply into a whole or streamed response (the deadline is the supervisor's).

use super::body::{full, json_error, Body};
use super::query::parse_query;
use crate::registry::Container;
use crate::state::HostState;
use crate::supervisor::{Call, InvokeError, Reply, ReplyStream};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use mimhost_bindings::HttpRequest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// Answers one HTTP request for `container`; `rest` is the path below its base path.
pub async fn handle(
    state: &HostState,
    container: &Arc<Container>,
    rest: String,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let request = match read_request(req, state.config.max_body, rest, peer, state.local_port).await
    {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let route = format!("{} {}", request.method, request.path);
    let started = Instant::now();
    let resp = match container.supervisor.invoke(Call::Http(request)).await {
        Ok(reply) => respond_reply(reply),
        Err(e) => invoke_error(&e),
    };
    let (status, elapsed) = (resp.status().as_u16(), started.elapsed());
    state.metrics.record_http(&container.name, status, elapsed);
    state
        .metrics
        .record_sample(&container.name, &route, status, elapsed);
    resp
}

/// The answer for a failed invocation: its status, and `Retry-After` when the
/// container is busy (its queue is full) or restarting.
pub fn invoke_error(error: &InvokeError) -> Response<Body> {
    let mut resp = json_error(error.status(), &error.to_string());
    if matches!(error, InvokeError::Busy { .. } | InvokeError::NotReady) {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    resp
}

/// Reads a request's body under `limit` bytes (413 past it, 400 when it cannot be read)
/// and turns the request into the plain data a worker gets; everything a client sends
/// passes through here before it reaches a worker, which is why the fuzzer drives it.
pub async fn read_request<B>(
    req: Request<B>,
    limit: usize,
    rest: String,
    peer: SocketAddr,
    local_port: u16,
) -> Result<HttpRequest, Response<Body>>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || json_error(413, &format!("request body is over the {limit}-byte limit"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(json_error(
                400,
                &format!("could not read the request body: {e}"),
            ))
        }
    };
    Ok(request_data(
        &parts.method,
        &parts.uri,
        &parts.headers,
        rest,
        body,
        peer,
        local_port,
    ))
}

/// Headers as a map with lower-case names; repeated headers joined with `, `.
pub fn header_map(headers: &hyper::HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

/// The client's address: the first `x-forwarded-for` hop when present, else the peer.
pub fn client_address(headers: &BTreeMap<String, String>, peer: SocketAddr) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// Builds the plain-data request both JS request shapes are made from.
pub fn request_data(
    method: &hyper::Method,
    uri: &hyper::Uri,
    header_values: &hyper::HeaderMap,
    rest: String,
    body: Bytes,
    peer: SocketAddr,
    local_port: u16,
) -> HttpRequest {
    let headers = header_map(header_values);
    let query_text = uri.query().unwrap_or("");
    let host_header = headers.get("host").cloned().unwrap_or_default();
    let (host, port) = match host_header.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => {
            (h.to_string(), p.parse().unwrap_or(local_port))
        }
        _ => (host_header.clone(), local_port),
    };
    let url = if query_text.is_empty() {
        rest.clone()
    } else {
        format!("{rest}?{query_text}")
    };
    HttpRequest {
        method: method.as_str().to_string(),
        url,
        path: rest,
        full_path: uri.path().to_string(),
        query: parse_query(query_text),
        remote_address: client_address(&headers, peer),
        headers,
        body: body.to_vec(),
        scheme: "http".into(),
        host,
        port,
        web_socket: false,
    }
}

/// Turns a container's answer into a response: whole, or streamed as it comes.
pub fn respond_reply(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => respond(status, &headers, full(body)),
        Reply::Stream {
            status,
            headers,
            body,
        } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
            tokio::spawn(stream_chunks(body, tx));
            respond(status, &headers, super::body::streamed(rx))
        }
        Reply::Accept { .. } | Reply::Queued | Reply::Loaded => {
            json_error(500, "the worker answered out of order")
        }
    }
}

/// Forwards streamed chunks until the end, the worker's death or the deadline.
async fn stream_chunks(
    mut body: ReplyStream,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    while let Some(chunk) = body.next().await {
        let frame = chunk
            .map(Frame::data)
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = frame.is_err();
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

fn respond(status: u16, headers: &[(String, String)], body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
