//! One outbound WebSocket client of a mim (`sdk/net`'s `createWebsocket`, SPEC 5.4):
//! its task connects (`ws://` or `wss://`, rustls with the system roots and
//! `SSL_CERT_FILE`), sends what was queued before the socket opened in order, then
//! relays messages both ways until either side closes. Its events go to the
//! container's handler module through [`ClientEvents`].

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use mimhost_bindings::{ClientData, ClientEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

/// How long connecting (TCP, TLS and the handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing client waits for the peer's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message a peer may send a client (bigger: error, then close).
pub const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;

/// Where a client's events go: the supervisor of its container.
pub trait ClientEvents: Send + Sync + 'static {
    /// Delivers one event to the container's handler module, in order per client.
    fn client_event(&self, event: ClientEvent);
}

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URI does not parse or is not `ws://`/`wss://`.
    #[error("createWebsocket: {uri:?} is not a ws:// or wss:// URI ({why})")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        why: String,
    },
}

/// What the client's task is asked to do besides sending queued messages.
#[derive(Default)]
struct Requests {
    /// `close()` was called: close after the messages queued before it.
    close: AtomicBool,
    /// The container is going away: close at once (1001).
    stop: AtomicBool,
    /// Wakes the task for `close`.
    close_wake: Notify,
    /// Wakes the task for `stop`.
    stop_wake: Notify,
}

/// The host's handle on one outbound client.
pub struct Client {
    data: Mutex<ClientData>,
    sends: mpsc::Sender<String>,
    requests: Arc<Requests>,
}

impl Client {
    /// The client as the mim sees it.
    pub fn data(&self) -> ClientData {
        lock(&self.data).clone()
    }

    /// Whether `close()` was called or the container is going away.
    pub fn closing(&self) -> bool {
        self.requests.close.load(Ordering::Relaxed) || self.requests.stop.load(Ordering::Relaxed)
    }

    /// Queues a text message (sent once open, in order); false when the queue is full.
    pub fn send(&self, text: String) -> bool {
        self.sends.try_send(text).is_ok()
    }

    /// Closes after the messages queued so far.
    pub fn close(&self) {
        self.requests.close.store(true, Ordering::Relaxed);
        self.requests.close_wake.notify_one();
    }

    /// Closes at once with 1001 (the container is removed).
    pub fn stop(&self) {
        self.requests.stop.store(true, Ordering::Relaxed);
        self.requests.stop_wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks `uri` the way the connection will read it.
pub fn check_uri(uri: &str) -> Result<(), ClientError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let bad = |why: String| ClientError::BadUri {
        uri: uri.to_string(),
        why,
    };
    let request = uri.into_client_request().map_err(|e| bad(e.to_string()))?;
    match request.uri().scheme_str() {
        Some("ws") | Some("wss") => {}
        other => return Err(bad(format!("scheme {other:?}"))),
    }
    if request.uri().host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(())
}

/// Starts a client's task; `finished` runs when the socket is done, before the
/// `close` event goes out (so a closed client has left the list by `onClose`).
pub fn start(
    data: ClientData,
    queue: usize,
    events: Weak<dyn ClientEvents>,
    finished: impl FnOnce(&str) + Send + 'static,
) -> Arc<Client> {
    let (sends, rx) = mpsc::channel(queue.max(1));
    let client = Arc::new(Client {
        data: Mutex::new(data),
        sends,
        requests: Arc::default(),
    });
    tokio::spawn(run(client.clone(), rx, events, finished));
    client
}

/// The TLS settings of every client: the system roots, or `SSL_CERT_FILE`'s.
fn tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted root certificates (system store, or SSL_CERT_FILE): {:?}",
                    found.errors
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| format!("TLS setup failed: {e}"))
        })
        .clone()
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(16 * 1024 * 1024)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// The client's whole life: connect, open, relay, close; then `finished`.
async fn run(
    client: Arc<Client>,
    mut sends: mpsc::Receiver<String>,
    events: Weak<dyn ClientEvents>,
    finished: impl FnOnce(&str) + Send + 'static,
) {
    let ClientData {
        id, uri, handler, ..
    } = client.data();
    let emit = |kind: &str, message: Option<String>, error: Option<String>| {
        if let Some(sink) = events.upgrade() {
            sink.client_event(ClientEvent {
                client: id.clone(),
                handler: handler.clone(),
                kind: kind.into(),
                message,
                error,
            });
        }
    };
    let requests = client.requests.clone();
    let error = connect_and_relay(&client, &uri, &mut sends, &requests, &emit).await;
    tracing::debug!(client = %id, %uri, "outbound WebSocket client done");
    sends.close();
    finished(&id);
    if let Some(e) = error {
        tracing::debug!(client = %id, %uri, "outbound WebSocket client: {e}");
        emit("error", None, Some(e));
    }
    emit("close", None, None);
}

/// Connects and relays until closed; the error, if it ended in one.
async fn connect_and_relay(
    client: &Client,
    uri: &str,
    sends: &mut mpsc::Receiver<String>,
    requests: &Requests,
    emit: &(impl Fn(&str, Option<String>, Option<String>) + Sync),
) -> Option<String> {
    let connector = if uri.starts_with("wss:") {
        match tls() {
            Ok(t) => Connector::Rustls(t),
            Err(e) => return Some(format!("cannot connect to {uri}: {e}")),
        }
    } else {
        Connector::Plain
    };
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        uri,
        Some(config()),
        true,
        Some(connector),
    );
    let connected = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r,
        _ = wait_stop(requests) => return None,
    };
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Some(format!("cannot connect to {uri}: {}", describe(&e))),
        Err(_) => {
            return Some(format!(
                "cannot connect to {uri}: no answer within {CONNECT_TIMEOUT:?}"
            ))
        }
    };
    lock(&client.data).open = true;
    emit("open", None, None);
    loop {
        tokio::select! {
            biased;
            _ = wait_stop(requests) => {
                let _ = close(&mut ws, CloseCode::Away).await;
                return None;
            }
            _ = requests.close_wake.notified() => {
                // Everything queued before close() goes first.
                while let Ok(text) = sends.try_recv() {
                    if let Err(e) = ws.send(Message::text(text)).await {
                        return Some(format!("send failed: {}", describe(&e)));
                    }
                }
                return close(&mut ws, CloseCode::Normal).await;
            }
            text = sends.recv() => {
                let text = text?;
                if let Err(e) = ws.send(Message::text(text)).await {
                    return Some(format!("send failed: {}", describe(&e)));
                }
            }
            incoming = ws.next() => match incoming {
                None => return None,
                Some(Ok(Message::Text(text))) => emit("message", Some(text.to_string()), None),
                Some(Ok(Message::Binary(data))) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                    emit("message", Some(b64), None);
                }
                Some(Ok(Message::Close(_))) => {
                    // tungstenite answers the close; drive it until the stream ends.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                        while let Some(Ok(_)) = ws.next().await {}
                    }).await;
                    return None;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(describe(&e)),
            },
        }
    }
}

/// Waits until the container asks the client to stop.
async fn wait_stop(requests: &Requests) {
    loop {
        let notified = requests.stop_wake.notified();
        if requests.stop.load(Ordering::Relaxed) {
            return;
        }
        notified.await;
    }
}

/// Sends a close frame and waits (bounded) for the peer's.
async fn close<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, code: CloseCode) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    if let Err(e) = ws.close(Some(frame)).await {
        return Some(format!("close failed: {}", describe(&e)));
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    None
}

/// A tungstenite error in words a mim author can act on.
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(io) => match io.get_ref() {
            Some(inner) => format!("{io} ({inner})"),
            None => io.to_string(),
        },
        Error::Capacity(c) => format!("message over the {MAX_CLIENT_MESSAGE}-byte limit ({c})"),
        Error::Http(resp) => format!(
            "the server answered {} instead of switching to WebSocket",
            resp.status()
        ),
        other => other.to_string(),
    }
}
