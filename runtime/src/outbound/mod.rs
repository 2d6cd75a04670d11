//! Outbound HTTP for mims (`context.http.request`, `fetch`), made by the host.
//!
//! A worker never opens a socket: it sends the request as plain data, the host runs
//! it here on a shared `reqwest` client (rustls, the system roots or `SSL_CERT_FILE`,
//! pooled connections) and reports what comes back as [`OutboundHttpEvent`]s, which
//! the supervisor forwards to the worker as jobs.

mod exchange;
mod text;

use mimhost_bindings::{OutboundHttpEvent, OutboundHttpRequest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Requests of one container in flight at once; more wait for a slot.
pub const MAX_IN_FLIGHT: usize = 64;
/// `connectionTimeout` when the mim gives none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// `socketTimeout` (longest silence between bytes) when the mim gives none.
pub const DEFAULT_SOCKET_TIMEOUT: Duration = Duration::from_millis(60_000);
/// Redirects followed in the default and stream modes.
pub const MAX_REDIRECTS: usize = 10;
/// Distinct `connectionTimeout` values that keep a pooled client of their own.
const CLIENTS_KEPT: usize = 8;

/// The host's outbound HTTP: pooled clients, the body limit and the file area.
#[derive(Debug)]
pub struct OutboundHttp {
    /// One client per connect timeout (reqwest sets that per client), so requests
    /// with the same settings share pooled connections.
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
    /// Largest body sent or received (`--max-body`).
    max_body: usize,
    /// `<data>/files`: each container's `outputFile`s live in its own folder below.
    files: PathBuf,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl OutboundHttp {
    /// Outbound HTTP with bodies up to `max_body` bytes and files under `<data>/files`.
    pub fn new(data: &Path, max_body: usize) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            max_body,
            files: data.join("files"),
        }
    }

    /// A new per-container limit on requests in flight.
    pub fn container_slots() -> Semaphore {
        Semaphore::new(MAX_IN_FLIGHT)
    }

    /// The folder of `container`'s `outputFile`s.
    pub fn files_of(&self, container: &str) -> PathBuf {
        self.files.join(container)
    }

    /// The pooled client for `connect_timeout` (built on first use, so
    /// `SSL_CERT_FILE` is read when the first request goes out).
    fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&connect_timeout) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        if clients.len() < CLIENTS_KEPT {
            clients.insert(connect_timeout, client.clone());
        }
        Ok(client)
    }

    /// Runs one request of `container` once one of its `slots` is free, reporting
    /// every event to `sink`; the last event is `Response`, `File`, `End` or `Failed`.
    pub async fn run(
        &self,
        container: &str,
        slots: &Semaphore,
        request: OutboundHttpRequest,
        sink: &(dyn Fn(OutboundHttpEvent) + Send + Sync),
    ) {
        let Ok(_slot) = slots.acquire().await else {
            return;
        };
        if let Err(message) = exchange::run(self, container, request, sink).await {
            sink(OutboundHttpEvent::Failed {
                message,
                answer: None,
            });
        }
    }

    /// Removes a file of `container`'s file area (`context.storage.deleteFile`); a
    /// missing file is no error.
    pub fn delete_file(&self, container: &str, path: &str) {
        let Ok(rel) = mimhost_bindings::file_area_path(path) else {
            return;
        };
        match std::fs::remove_file(self.files_of(container).join(rel)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(container, "deleteFile({path}) failed: {e}"),
        }
    }
}
