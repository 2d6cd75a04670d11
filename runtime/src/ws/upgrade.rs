//! The WebSocket handshake: which endpoint an upgrade is for, asking the container's
//! `get()` when it is a controller upgrade, and the 101 answer.

use super::session::Session;
use crate::http::body::{json_error, Body};
use crate::http::container::{
    client_address, header_map, invoke_error, request_data, respond_reply,
};
use crate::http::query::parse_query;
use crate::hub::{SessionHandle, SessionKind};
use crate::registry::Container;
use crate::state::HostState;
use crate::supervisor::{Call, Reply};
use base64::Engine;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mimhost_bindings::{HttpRequest, SessionInfo};
use sha1::{Digest, Sha1};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

/// Answers a WebSocket upgrade: a Dirigible endpoint `/websockets/v4/service/<name>`,
/// the dispatch channel `/ws<BASE_API_PATH>`, or a controller upgrade under a
/// container's base path.
pub async fn upgrade(
    state: &Arc<HostState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return json_error(400, "WebSocket upgrade without Sec-WebSocket-Key");
    };
    let path = req.uri().path().to_string();
    if let Some(name) = path.strip_prefix(crate::endpoints::ENDPOINT_PREFIX) {
        let name = name.trim_end_matches('/');
        let Some((container, endpoint)) = state.registry.endpoint(name) else {
            return json_error(
                404,
                &format!("no WebSocket endpoint {name:?} on this host (a mim declares endpoints in *.websocket files or mim.json)"),
            );
        };
        let mut info = session_info(state, &req, peer, "null".into());
        info.handler = Some(endpoint.handler);
        return accept(
            state,
            req,
            &key,
            container,
            info,
            SessionKind::Endpoint,
            None,
        );
    }
    if let Some(channel) = path.strip_prefix("/ws") {
        let channel = channel.trim_end_matches('/');
        if let Some((container, rest)) = state.registry.route(channel) {
            if rest == "/" && container.base_path == channel {
                if !websocket_enabled(&container) {
                    return json_error(
                        404,
                        &format!("container {} has no WebSocket support: deploy it with env WEBSOCKET_SUPPORT=\"true\"", container.name),
                    );
                }
                let info = session_info(state, &req, peer, "null".into());
                return accept(
                    state,
                    req,
                    &key,
                    container,
                    info,
                    SessionKind::Dispatch,
                    None,
                );
            }
        }
    }
    let Some((container, rest)) = state.registry.route(&path) else {
        return json_error(404, &format!("no container serves {path}"));
    };
    let request = upgrade_request(&req, rest, peer, state.local_port);
    match container.supervisor.invoke(Call::Http(request)).await {
        Ok(Reply::Accept { data, protocols }) => {
            let info = session_info(state, &req, peer, data);
            let chosen = choose_protocol(&req, &protocols);
            accept(
                state,
                req,
                &key,
                container,
                info,
                SessionKind::Controller,
                chosen,
            )
        }
        Ok(reply @ Reply::Full { .. }) => respond_reply(reply),
        Ok(_) => json_error(500, "a streamed answer cannot refuse a WebSocket upgrade"),
        Err(e) => invoke_error(&e),
    }
}

fn websocket_enabled(container: &Container) -> bool {
    let env = container.supervisor.spec().env;
    ["WEBSOCKET_SUPPORT", "MCM.WEBSOCKET_SUPPORT"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| v == "true"))
}

/// The first subprotocol of the client's that the mim offers.
fn choose_protocol(req: &Request<Incoming>, offered: &[String]) -> Option<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .find(|p| offered.iter().any(|o| o == p))
        .map(str::to_string)
}

fn session_info(
    state: &HostState,
    req: &Request<Incoming>,
    peer: SocketAddr,
    data: String,
) -> SessionInfo {
    let headers = header_map(req.headers());
    SessionInfo {
        id: state.hub.new_session_id(),
        path: req.uri().path().to_string(),
        params: parse_query(req.uri().query().unwrap_or("")),
        peer: client_address(&headers, peer),
        headers,
        method: req.method().as_str().to_string(),
        data,
        handler: None,
    }
}

fn upgrade_request(
    req: &Request<Incoming>,
    rest: String,
    peer: SocketAddr,
    port: u16,
) -> HttpRequest {
    let mut request = request_data(
        req.method(),
        req.uri(),
        req.headers(),
        rest,
        Bytes::new(),
        peer,
        port,
    );
    request.web_socket = true;
    request
}

/// Sends 101 and starts the session once hyper hands over the socket.
fn accept(
    state: &Arc<HostState>,
    req: Request<Incoming>,
    key: &HeaderValue,
    container: Arc<Container>,
    info: SessionInfo,
    kind: SessionKind,
    protocol: Option<String>,
) -> Response<Body> {
    let mut resp = Response::new(crate::http::body::full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    // Registered before the 101 leaves: a client that has seen the 101 gets every
    // frame sent after it (its queue holds them until the session task runs).
    let hub = state.hub.clone();
    let max_message = state.config.max_message;
    let stats = hub.stats_for(&container.name);
    let handle = Arc::new(SessionHandle::new(
        info,
        container.name.clone(),
        kind,
        stats,
    ));
    hub.register(handle.clone());
    tokio::spawn(async move {
        let parts = match hyper::upgrade::on(req)
            .await
            .map(|u| u.downcast::<TokioIo<TcpStream>>())
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                hub.unregister(&handle);
                return tracing::error!("upgraded connection is not a TCP stream");
            }
            Err(e) => {
                hub.unregister(&handle);
                return tracing::debug!("upgrade failed: {e}");
            }
        };
        // Its own task: this one (holding the upgrade request) ends here, and an
        // idle session's task holds only the session.
        tokio::spawn(
            Session::new(
                parts.io.into_inner(),
                &parts.read_buf,
                handle,
                container,
                hub,
                max_message,
            )
            .run(),
        );
    });
    resp
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 section 4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
