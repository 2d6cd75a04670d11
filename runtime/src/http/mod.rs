//! The one HTTP server: `/healthz`, the MCM API, `/metrics`, the web console (`/` and
//! `/_/…`), and every container path by longest base path.

pub mod body;
pub mod container;
pub mod query;
mod shed;

pub use body::{full, json, json_error, streamed, Body};
pub use container::read_request;

use crate::shutdown::{Drain, Shutdown};
use crate::state::HostState;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Accepts connections until `shutdown` fires, then lets open ones finish
/// (bounded), telling each to close once its current request is answered.
pub async fn serve(listener: TcpListener, state: Arc<HostState>, mut shutdown: Shutdown) {
    let open = Drain::default();
    let mut last_accept_warning = None;
    let mut spare = shed::Spare::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, typically: refuse the waiting client
                        // with 503 rather than leave it hanging, and say so now and
                        // then, not on every retry.
                        let refused = spare.refuse_one(&listener, &e);
                        if last_accept_warning.is_none_or(|at: tokio::time::Instant| at.elapsed() > Duration::from_secs(5)) {
                            tracing::warn!("accept failed: {e} (at the open-file limit? see ulimit -n)");
                            last_accept_warning = Some(tokio::time::Instant::now());
                        }
                        if !refused {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| handle(state.clone(), req, peer));
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut stop = shutdown.clone();
                let guard = open.guard();
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!("connection from {peer} ended: {e}");
                            }
                        }
                        _ = stop.fired() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    drop(guard);
                });
            }
            _ = shutdown.fired() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), open.finished()).await;
}

/// Routes one request.
async fn handle(
    state: Arc<HostState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return Ok(body::json(200, serde_json::json!({"status": "ok"})));
    }
    if path == "/mcm/v1" || path.starts_with("/mcm/v1/") {
        return Ok(crate::mcm::handle(&state, req).await);
    }
    if path == "/metrics" {
        return Ok(crate::mcm::metrics(&state, peer));
    }
    if crate::ws::is_upgrade(&req) {
        return Ok(crate::ws::upgrade(&state, req, peer).await);
    }
    // The console owns /_/…, and / unless a mim serves at base path / (then the
    // console is still at /_/).
    let root_mim = path == "/" && state.registry.route("/").is_some();
    if crate::console::owns(&path) || (path == "/" && !root_mim) {
        return Ok(crate::console::serve(req.method(), &path));
    }
    match state.registry.route(&path) {
        Some((container, rest)) => Ok(container::handle(&state, &container, rest, req, peer).await),
        None => Ok(json_error(404, &format!("no container serves {path}"))),
    }
}
