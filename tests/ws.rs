//! WebSockets (SPEC 5.1, 5.2, 5.3, 5.5 and `setClientId` of 6), driven with real
//! clients over loopback: the dispatch channel and its gating, controller upgrades
//! and the events `webSocketEvent` sees, replies by return, every function of
//! `/lib/xp/websocket`, limits, runaway handlers, ping/pong, shutdown and container
//! removal, the seed mims `notify`, `chat` and `trigger` unchanged, and 1,000
//! readers that one stalled client must not slow down.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use support::{mim_json, poll_until, send, serve, Host, Mims, Reply, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expected frame, event or log line may take.
const WAIT: Duration = Duration::from_secs(15);

/// The slow-client test saturates both cores: it runs alone, every other test
/// shares.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A controller mim that records every upgrade and event in its storage (read
/// back with `GET /<name>/events` and `/upgrades`), exposes the websocket library
/// through `POST /<name>` (`{"fn": "send", "args": [...]}` → `{"result": …}`) and
/// answers messages by return. It has WEBSOCKET_SUPPORT, so `/ws/<name>` works too.
const SPY: &str = r#"
var ws = require('/lib/xp/websocket');

function record(tag, value) {
  var n = Number(context.storage.getItem('n') || '0') + 1;
  context.storage.setItem('n', String(n));
  context.storage.setItemWithTag('rec' + (1000000 + n), JSON.stringify(value), tag);
}
function list(tag) {
  var out = [];
  context.storage.eachItemByTag(tag, function (k, v) { out.push(JSON.parse(v)); });
  return out;
}

exports.get = function (req) {
  if (!req.webSocket) {
    if (/\/events$/.test(req.path)) return { body: list('event') };
    if (/\/upgrades$/.test(req.path)) return { body: list('upgrade') };
    return { body: { webSocket: req.webSocket, path: req.path } };
  }
  record('upgrade', { webSocket: req.webSocket, path: req.path, params: req.params });
  if (req.params.deny) return { status: 403, body: 'denied ' + req.params.deny };
  if (req.params.plain) return { body: 'just http' };
  if (req.params.fail) throw new Error('get failed on purpose');
  return { webSocket: { data: { path: req.path, n: 7 }, subProtocols: ['chat', 'text'] } };
};

exports.post = function (req) {
  var call = JSON.parse(req.body);
  var result = ws[call.fn].apply(null, call.args || []);
  return { body: { result: result === undefined ? null : result } };
};

exports.webSocketEvent = function (event) {
  var copy = JSON.parse(JSON.stringify(event));
  if (typeof copy.message === 'string' && copy.message.length > 256) {
    copy.messageLength = copy.message.length;
    copy.message = copy.message.slice(0, 16);
  }
  record('event', copy);
  if (event.type === 'open') return { body: 'open ' + event.session.id };
  if (event.type === 'error') return { body: 'error-event ' + event.error };
  if (event.type !== 'message') return;
  var m = event.message;
  if (event.binary) return { body: 'binary ' + m };
  if (m.length > 256) return { body: 'length ' + m.length };
  if (m === 'throw') throw new Error('thrown on purpose by ' + event.session.id);
  if (m === 'spin') { while (true) {} }
  if (m === 'json') return { body: { n: 1, s: 'x' } };
  if (m === 'async') return new Promise(function (resolve) {
    setTimeout(function () { resolve({ body: 'resolved later' }); }, 50);
  });
  if (m === 'bye') return { body: 'bye', end: true };
  if (m === 'end') return { end: true };
  if (m === 'silent') return undefined;
  return { body: 'echo ' + m };
};
"#;

/// The files of a spy mim named `name`.
fn spy(name: &str) -> Vec<(String, String)> {
    vec![
        (format!("{name}/index.js"), SPY.to_string()),
        (
            format!("{name}/mim.json"),
            mim_json(&[("WEBSOCKET_SUPPORT", "true")]),
        ),
    ]
}

/// A `Mims` folder from owned `(path, contents)` pairs.
fn mims_of(files: &[(String, String)]) -> Mims {
    files
        .iter()
        .fold(Mims::new(), |mims, (rel, text)| mims.with(rel, text))
}

/// Starts a default host on `files`.
async fn serve_owned(files: &[(String, String)]) -> (Mims, Host) {
    let mims = mims_of(files);
    let host = Host::start(&mims.path()).await;
    (mims, host)
}

// ---------- WebSocket client helpers ----------

/// Opens a WebSocket to `ws://addr<path>` with extra request `headers`; panics
/// when the upgrade is refused.
async fn connect_with(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (Ws, tungstenite::handshake::client::Response) {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a valid ws:// URL");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(tungstenite::Error::Http(resp))) => panic!(
            "upgrade to {path} refused: {} {:?}",
            resp.status(),
            resp.body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        ),
        Ok(Err(e)) => panic!("upgrade to {path} failed: {e}"),
        Err(_) => panic!("upgrade to {path} took over {WAIT:?}"),
    }
}

/// Opens a WebSocket to `ws://addr<path>`.
async fn connect(addr: &str, path: &str) -> Ws {
    connect_with(addr, path, &[]).await.0
}

/// Opens a session on a spy mim and returns it with its id (the spy greets every
/// session with `open <id>`).
async fn connect_spy(addr: &str, path: &str) -> (Ws, String) {
    let mut ws = connect(addr, path).await;
    let greeting = recv_text(&mut ws).await;
    let id = greeting
        .strip_prefix("open ")
        .unwrap_or_else(|| panic!("first frame on {path} is {greeting:?}, not `open <id>`"))
        .to_string();
    (ws, id)
}

/// An upgrade that must be refused: its HTTP status and body.
async fn refused(addr: &str, path: &str) -> (u16, String) {
    let request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a valid ws:// URL");
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Ok(Err(tungstenite::Error::Http(resp))) => (
            resp.status().as_u16(),
            resp.body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        ),
        Ok(Ok((_, resp))) => panic!("upgrade to {path} was accepted ({})", resp.status()),
        Ok(Err(e)) => panic!("upgrade to {path} failed without an HTTP answer: {e}"),
        Err(_) => panic!("upgrade to {path} took over {WAIT:?}"),
    }
}

/// The next frame that is not a ping or pong; `None` when the connection ended
/// without a close frame. Panics after [`WAIT`].
async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!("no frame within {WAIT:?}"),
            Ok(None) => return None,
            Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

/// The next text frame; panics on anything else.
async fn recv_text(ws: &mut Ws) -> String {
    match next_message(ws).await {
        Some(Message::Text(t)) => t.to_string(),
        other => panic!("wanted a text frame, got {other:?}"),
    }
}

/// The next text frame, parsed as JSON.
async fn recv_json(ws: &mut Ws) -> Value {
    let text = recv_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("frame {text:?} is not JSON: {e}"))
}

/// The next text frame that does not start with `skip`.
async fn recv_text_skipping(ws: &mut Ws, skip: &str) -> String {
    loop {
        let text = recv_text(ws).await;
        if !text.starts_with(skip) {
            return text;
        }
    }
}

/// Reads until the server's close frame and returns its code and reason; panics
/// on data frames or a connection that ends without one.
async fn recv_close(ws: &mut Ws) -> (u16, String) {
    match next_message(ws).await {
        Some(Message::Close(Some(CloseFrame { code, reason }))) => {
            (u16::from(code), reason.to_string())
        }
        other => panic!("wanted a close frame with a code, got {other:?}"),
    }
}

/// Asserts that no data or close frame arrives for `quiet`: only where no end
/// marker can be awaited instead (nothing else is meant to come).
async fn assert_quiet(ws: &mut Ws, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .await
        .expect("send a text frame");
}

/// Closes from the client side with `code` and waits for the server's echo.
async fn close_with(ws: &mut Ws, code: u16) -> u16 {
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: "client done".into(),
    })))
    .await
    .expect("send close");
    recv_close(ws).await.0
}

/// The texts `ws` receives before `marker`.
async fn texts_until(ws: &mut Ws, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let text = recv_text(ws).await;
        if text == marker {
            return seen;
        }
        seen.push(text);
    }
}

// ---------- HTTP helpers that work with any host address ----------

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

async fn get(addr: &str, path: &str) -> Reply {
    send(http().get(format!("http://{addr}{path}"))).await
}

async fn post(addr: &str, path: &str, body: impl Into<String>) -> Reply {
    send(
        http()
            .post(format!("http://{addr}{path}"))
            .body(body.into()),
    )
    .await
}

/// Calls `ws.<func>(...args)` inside spy mim `mim` and returns what it returned.
async fn lib(addr: &str, mim: &str, func: &str, args: Value) -> Value {
    let reply = post(
        addr,
        &format!("/{mim}"),
        json!({ "fn": func, "args": args }).to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{func}{args}: {reply:?}");
    reply.json()["result"].clone()
}

/// Every event spy `mim` recorded so far, oldest first.
async fn events(addr: &str, mim: &str) -> Vec<Value> {
    let reply = get(addr, &format!("/{mim}/events")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json().as_array().expect("an array of events").clone()
}

/// The events of session `id`, once `done` holds for them.
async fn session_events(
    addr: &str,
    mim: &str,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let found = poll_until(WAIT, || async {
        let mine: Vec<Value> = events(addr, mim)
            .await
            .into_iter()
            .filter(|e| e["sessionId"] == id)
            .collect();
        done(&mine).then_some(mine)
    })
    .await;
    match found {
        Some(events) => events,
        None => {
            let all = events(addr, mim).await;
            panic!("the events of {id} never became complete; all events: {all:#?}")
        }
    }
}

/// Whether `events` end with a `close` event.
fn closed(events: &[Value]) -> bool {
    events.last().is_some_and(|e| e["type"] == "close")
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

// ---------- a raw client: our own handshake, our own frames ----------

/// A WebSocket client on a bare socket, for peers tungstenite will not play: one
/// that never answers pings, one that stops reading.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and does the handshake. `tiny_window` shrinks the receive buffer
    /// and the MSS first, so the kernel absorbs little of what the host writes.
    async fn connect(addr: &str, path: &str, tiny_window: bool) -> RawClient {
        let socket = TcpSocket::new_v4().expect("socket");
        if tiny_window {
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            let mss: libc::c_int = 536;
            // SAFETY: setsockopt on a socket we own, with a c_int option value.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_MAXSEG,
                    &mss as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
        }
        let mut stream = socket
            .connect(addr.parse().expect("host:port"))
            .await
            .expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send handshake");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("handshake answer in time")
                .expect("read handshake answer");
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept: {head}"
        );
        buf.drain(..end);
        RawClient { stream, buf }
    }

    /// Sends a masked text frame.
    async fn send_text(&mut self, text: &str) {
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("send frame");
    }

    /// The next server frame as `(opcode, payload)`; `None` once the connection
    /// ended. Panics when nothing comes within `limit`.
    async fn next_frame(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("no frame and no end of stream within {limit:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// One unmasked server frame off the front of `buf`, if it is complete.
fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let (len, header) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(be) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let payload = buf[header..header + len].to_vec();
    buf.drain(..header + len);
    Some((opcode, payload))
}

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

// ======================================================================
// 5.1 the dispatch channel
// ======================================================================

/// A route-style mim that dispatches what it is told.
const FEED: &str = r#"
app.post('/shapes', (request, response) => {
  context.dispatchWebSocketEvent({ type: 'a', message: 'm' });
  context.dispatchWebSocketEvent({ type: 'b' });
  context.dispatchWebSocketEvent({ type: 'c', message: '' });
  context.dispatchWebSocketEvent({ type: 'd', message: 'with "quotes" and \u00fcn\u00efcode' });
  response.end('shaped');
});
app.post('/count/:from/:n', (request, response) => {
  var from = Number(request.params.from), n = Number(request.params.n);
  for (var i = from; i < from + n; i++) context.dispatchWebSocketEvent({ type: 'tick', message: String(i) });
  response.end(String(n));
});
app.post('/flush', (request, response) => {
  function busy(ms) { var t = Date.now(); while (Date.now() - t < ms) {} }
  context.dispatchWebSocketEvent({ type: 'early' });
  context.dispatchWebSocketEvent();
  busy(1500);
  context.dispatchWebSocketEvent({ type: 'middle' });
  context.dispatchWebSocketEvent(null);
  busy(1500);
  context.dispatchWebSocketEvent({ type: 'late' });
  response.end('flushed');
});
app.post('/throw', (request, response) => {
  context.dispatchWebSocketEvent({ type: 'before-throw', message: 'still sent' });
  throw new Error('dispatch then throw');
});
app.post('/check', (request, response) => {
  try {
    context.dispatchWebSocketEvent({ type: 'x' });
    response.end(JSON.stringify({ threw: false }));
  } catch (e) {
    response.end(JSON.stringify({ threw: true, isError: e instanceof Error, message: e.message }));
  }
});
"#;

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_channel_is_open_only_with_websocket_support() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve(&[
        ("off/index.js", FEED),
        ("on/index.js", FEED),
        ("on/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "true")])),
        ("mcm/index.js", FEED),
        (
            "mcm/mim.json",
            &mim_json(&[("MCM.WEBSOCKET_SUPPORT", "true")]),
        ),
        ("yes/index.js", FEED),
        ("yes/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "yes")])),
    ])
    .await;
    let addr = host.addr();

    for path in ["/ws/off", "/ws/yes", "/ws/nobody", "/ws/on/deeper"] {
        let (status, _) = refused(addr, path).await;
        assert_eq!(status, 404, "upgrade to {path}");
    }
    let mut on = connect(addr, "/ws/on").await;
    let mut mcm = connect(addr, "/ws/mcm").await;

    // Without support the call throws an Error telling how to enable it.
    let reply = host.post("/off/check", "").await;
    let check = reply.json();
    assert_eq!(check["threw"], true, "{reply:?}");
    assert_eq!(check["isError"], true, "{reply:?}");
    let message = check["message"].as_str().unwrap_or("");
    assert!(message.contains("WEBSOCKET_SUPPORT"), "{message}");
    let uncaught = host.post("/off/count/0/1", "").await.assert_error(500);
    assert!(uncaught.contains("WEBSOCKET_SUPPORT"), "{uncaught}");

    // Both env spellings enable it, and each channel only gets its container's events.
    host.post("/on/check", "")
        .await
        .assert_ok(r#"{"threw":false}"#);
    host.post("/mcm/count/7/1", "").await.assert_ok("1");
    assert_eq!(recv_text(&mut on).await, r#"{"type":"x"}"#);
    assert_eq!(
        recv_text(&mut mcm).await,
        r#"{"type":"tick","message":"7"}"#
    );
    host.post("/on/count/1/1", "").await.assert_ok("1");
    host.post("/mcm/count/2/1", "").await.assert_ok("1");
    assert_eq!(recv_text(&mut on).await, r#"{"type":"tick","message":"1"}"#);
    assert_eq!(
        recv_text(&mut mcm).await,
        r#"{"type":"tick","message":"2"}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dispatch_right_after_the_handshake_reaches_the_new_session() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve(&[
        ("feed/index.js", FEED),
        ("feed/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "true")])),
    ])
    .await;
    // As seed 000's page does: connect, and on open make the mim dispatch.
    let mut open = Vec::new();
    for i in 0..100 {
        let ws = connect(host.addr(), "/ws/feed").await;
        host.post(&format!("/feed/count/{i}/1"), "")
            .await
            .assert_ok("1");
        open.push(ws);
    }
    // The first frame of session i is event i, dispatched right after it opened.
    for (i, ws) in open.iter_mut().enumerate() {
        let first = recv_json(ws).await;
        assert_eq!(
            first,
            json!({"type": "tick", "message": i.to_string()}),
            "session {i} missed the events dispatched right after its handshake"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_sends_type_and_message_to_every_session_in_order() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve(&[
        ("feed/index.js", FEED),
        ("feed/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "true")])),
    ])
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(host.addr(), "/ws/feed").await);
    }
    host.post("/feed/shapes", "").await.assert_ok("shaped");
    for ws in &mut clients {
        assert_eq!(recv_text(ws).await, r#"{"type":"a","message":"m"}"#);
        assert_eq!(recv_text(ws).await, r#"{"type":"b"}"#);
        assert_eq!(recv_text(ws).await, r#"{"type":"c","message":""}"#);
        let d: Value = serde_json::from_str(&recv_text(ws).await).expect("JSON frame");
        assert_eq!(
            d,
            json!({"type": "d", "message": "with \"quotes\" and ünïcode"})
        );
    }
    // Order holds inside one invocation and across invocations.
    host.post("/feed/count/0/300", "").await.assert_ok("300");
    host.post("/feed/count/300/300", "").await.assert_ok("300");
    for ws in &mut clients {
        for i in 0..600 {
            let frame: Value = serde_json::from_str(&recv_text(ws).await).expect("JSON frame");
            assert_eq!(frame, json!({"type": "tick", "message": i.to_string()}));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_dispatch_flush_sends_while_the_handler_still_runs() {
    let _shared = HEAVY.read().await;
    let mims = Mims::from_files(&[
        ("feed/index.js", FEED),
        ("feed/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "true")])),
    ]);
    let host = Host::start_with(&mims.path(), &["--handler-timeout", "20s"]).await;
    let mut ws = connect(host.addr(), "/ws/feed").await;

    // The handler dispatches `early`, flushes with `()`, works 1.5 s, dispatches
    // `middle`, flushes with `(null)`, works 1.5 s more, dispatches `late` and ends.
    let pending = tokio::spawn(send(host.request(Method::POST, "/feed/flush")));
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"early"}"#);
    let early = Instant::now();
    let early_while_running = !pending.is_finished();
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"middle"}"#);
    let middle = Instant::now();
    let middle_while_running = !pending.is_finished();
    assert_eq!(recv_text(&mut ws).await, r#"{"type":"late"}"#);
    let late = Instant::now();
    pending.await.expect("POST task").assert_ok("flushed");
    let gaps = (middle - early, late - middle);
    assert!(
        early_while_running
            && middle_while_running
            && gaps.0 >= Duration::from_secs(1)
            && gaps.1 >= Duration::from_secs(1),
        "an explicit flush must send at once, while the handler still runs; but `early` came \
         {:?} before `middle` and `middle` {:?} before `late` (the handler worked 1.5 s between \
         them), early_while_running={early_while_running}, middle_while_running={middle_while_running}",
        gaps.0,
        gaps.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throwing_handler_still_sends_its_queued_dispatches() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve(&[
        ("feed/index.js", FEED),
        ("feed/mim.json", &mim_json(&[("WEBSOCKET_SUPPORT", "true")])),
    ])
    .await;
    let mut ws = connect(host.addr(), "/ws/feed").await;
    let message = host.post("/feed/throw", "").await.assert_error(500);
    assert!(message.contains("dispatch then throw"), "{message}");
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type":"before-throw","message":"still sent"}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_channel_sessions_deliver_their_events_to_web_socket_event() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let (mut ws, id) = connect_spy(host.addr(), "/ws/spy").await;
    send_text(&mut ws, "hello").await;
    assert_eq!(recv_text(&mut ws).await, "echo hello");
    assert_eq!(close_with(&mut ws, 1000).await, 1000);
    let evs = session_events(host.addr(), "spy", &id, closed).await;
    assert_eq!(types(&evs), ["open", "message", "close"], "{evs:#?}");
    assert_eq!(evs[1]["message"], "hello");
    assert_eq!(evs[2]["closeReason"], 1000);
    for e in &evs {
        assert_eq!(e["session"]["path"], "/ws/spy", "{e:#}");
        assert_eq!(e["session"]["id"], id.as_str(), "{e:#}");
    }
}

// ======================================================================
// 5.2 controller upgrades
// ======================================================================

#[tokio::test(flavor = "multi_thread")]
async fn controller_upgrade_events_carry_every_field_in_order() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let addr = host.addr();

    // A plain GET sees webSocket false.
    let plain = host.get("/spy/probe").await.json();
    assert_eq!(plain["webSocket"], false, "{plain}");

    let (mut ws, resp) = connect_with(
        addr,
        "/spy/room/7?x=1&y=two",
        &[
            ("sec-websocket-protocol", "nope, text, chat"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-custom", "custom value"),
        ],
    )
    .await;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("text"),
        "the first of the client's subprotocols that the mim lists"
    );
    let id = recv_text(&mut ws)
        .await
        .strip_prefix("open ")
        .expect("open greeting")
        .to_string();
    send_text(&mut ws, "hello").await;
    assert_eq!(recv_text(&mut ws).await, "echo hello");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send binary");
    assert_eq!(recv_text(&mut ws).await, "binary AAEC/w==");
    assert_eq!(close_with(&mut ws, 4001).await, 4001);

    let upgrades = get(addr, "/spy/upgrades").await.json();
    assert_eq!(
        upgrades,
        json!([{ "webSocket": true, "path": "/spy/room/7", "params": { "x": "1", "y": "two" } }])
    );

    let evs = session_events(addr, "spy", &id, closed).await;
    assert_eq!(
        types(&evs),
        ["open", "message", "message", "close"],
        "{evs:#?}"
    );
    let params = json!({ "x": "1", "y": "two" });
    for e in &evs {
        assert_eq!(e["session"]["id"], id.as_str(), "{e:#}");
        assert_eq!(e["sessionId"], id.as_str(), "{e:#}");
        assert_eq!(e["session"]["path"], "/spy/room/7", "{e:#}");
        assert_eq!(e["session"]["params"], params, "{e:#}");
        assert_eq!(e["params"], params, "{e:#}");
        assert_eq!(e["query"], params, "{e:#}");
        assert_eq!(e["peer"], "203.0.113.9", "{e:#}");
        assert_eq!(e["method"], "GET", "{e:#}");
        assert_eq!(e["headers"]["x-custom"], "custom value", "{e:#}");
        assert_eq!(
            e["headers"]["x-forwarded-for"], "203.0.113.9, 10.0.0.1",
            "{e:#}"
        );
        assert_eq!(e["data"], json!({ "path": "/spy/room/7", "n": 7 }), "{e:#}");
    }
    assert!(evs[0].get("message").is_none(), "open has no message");
    assert!(
        evs[0].get("closeReason").is_none(),
        "open has no closeReason"
    );
    assert_eq!(evs[1]["message"], "hello");
    assert_ne!(evs[1]["binary"], true, "a text message is not binary");
    assert_eq!(evs[2]["message"], "AAEC/w==");
    assert_eq!(evs[2]["binary"], true);
    assert_eq!(evs[3]["closeReason"], 4001);
    assert!(evs[3].get("message").is_none(), "close has no message");

    // Without x-forwarded-for the peer is the client's own address.
    let (mut ws, id) = connect_spy(addr, "/spy/").await;
    assert_eq!(close_with(&mut ws, 1000).await, 1000);
    let evs = session_events(addr, "spy", &id, closed).await;
    assert_eq!(evs[0]["peer"], "127.0.0.1");
    assert_eq!(evs[0]["session"]["path"], "/spy/");
    assert_eq!(evs[0]["params"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_get_does_not_accept_is_answered_as_plain_http() {
    let _shared = HEAVY.read().await;
    let mut files = spy("spy");
    files.push((
        "routes/index.js".into(),
        "app.get('/x', (request, response) => response.end('route'));".into(),
    ));
    let (_mims, host) = serve_owned(&files).await;
    let addr = host.addr();
    assert_eq!(
        refused(addr, "/spy/x?deny=1").await,
        (403, "denied 1".to_string())
    );
    assert_eq!(
        refused(addr, "/spy/x?plain=1").await,
        (200, "just http".to_string())
    );
    let (status, body) = refused(addr, "/spy/x?fail=1").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("get failed on purpose"), "{body}");
    // A mim without a controller `get` has nothing to accept with.
    assert_eq!(refused(addr, "/routes/nothing").await.0, 404);
    assert_eq!(refused(addr, "/nobody/x").await.0, 404);
    // No session opened for any of them.
    assert!(events(addr, "spy").await.is_empty());
}

// ======================================================================
// 5.3 replies and the websocket library
// ======================================================================

#[tokio::test(flavor = "multi_thread")]
async fn web_socket_event_replies_by_return_and_end_closes_1000() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let (mut ws, _) = connect_spy(host.addr(), "/spy/").await;
    send_text(&mut ws, "plain").await;
    assert_eq!(recv_text(&mut ws).await, "echo plain");
    send_text(&mut ws, "json").await;
    assert_eq!(recv_text(&mut ws).await, r#"{"n":1,"s":"x"}"#);
    send_text(&mut ws, "async").await;
    assert_eq!(recv_text(&mut ws).await, "resolved later");
    send_text(&mut ws, "silent").await;
    send_text(&mut ws, "after silence").await;
    assert_eq!(recv_text(&mut ws).await, "echo after silence");
    send_text(&mut ws, "bye").await;
    assert_eq!(recv_text(&mut ws).await, "bye");
    assert_eq!(recv_close(&mut ws).await.0, 1000);

    // `{end: true}` without a body closes at once.
    let (mut ws, id) = connect_spy(host.addr(), "/spy/").await;
    send_text(&mut ws, "end").await;
    assert_eq!(recv_close(&mut ws).await.0, 1000);
    let evs = session_events(host.addr(), "spy", &id, closed).await;
    assert_eq!(types(&evs), ["open", "message", "close"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_websocket_library_function_works_per_container() {
    let _shared = HEAVY.read().await;
    let mut files = spy("spy");
    files.extend(spy("other"));
    let (_mims, host) = serve_owned(&files).await;
    let addr = host.addr();
    let (mut a, ida) = connect_spy(addr, "/spy/a").await;
    let (mut b, idb) = connect_spy(addr, "/spy/b").await;
    let (mut c, idc) = connect_spy(addr, "/spy/c").await;
    let (mut d, idd) = connect_spy(addr, "/other/d").await;

    // send
    assert_eq!(lib(addr, "spy", "send", json!([ida, "to a"])).await, true);
    // addToGroup / getGroupSize / getGroupMembers, per container
    for id in [&ida, &idb] {
        assert_eq!(
            lib(addr, "spy", "addToGroup", json!(["g", id])).await,
            Value::Null
        );
    }
    lib(addr, "other", "addToGroup", json!(["g", idd])).await;
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["g"])).await, 2);
    assert_eq!(lib(addr, "other", "getGroupSize", json!(["g"])).await, 1);
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["empty"])).await, 0);
    let members = lib(addr, "spy", "getGroupMembers", json!(["g"])).await;
    let members: BTreeSet<String> = serde_json::from_value(members).expect("an array of ids");
    assert_eq!(members, BTreeSet::from([ida.clone(), idb.clone()]));
    assert_eq!(
        lib(addr, "spy", "getGroupMembers", json!(["empty"])).await,
        json!([])
    );
    // sendToGroup reaches the group of its own container only
    lib(addr, "spy", "sendToGroup", json!(["g", "to g"])).await;
    lib(addr, "other", "sendToGroup", json!(["g", "other g"])).await;
    // removeFromGroup
    lib(addr, "spy", "removeFromGroup", json!(["g", idb])).await;
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["g"])).await, 1);
    assert_eq!(
        lib(addr, "spy", "getGroupMembers", json!(["g"])).await,
        json!([ida])
    );
    lib(addr, "spy", "sendToGroup", json!(["g", "to g again"])).await;
    // setClientId: accepted, returns nothing, the session carries on
    assert_eq!(
        lib(addr, "spy", "setClientId", json!([ida, "client-1"])).await,
        Value::Null
    );
    // sendToAll: every session of the container, no other
    lib(addr, "spy", "sendToAll", json!(["to all"])).await;
    // close with a code and reason, and with the default 1000
    lib(addr, "spy", "close", json!([idc, 4321, "go away"])).await;
    lib(addr, "spy", "sendToAll", json!(["end"])).await;
    lib(addr, "other", "sendToAll", json!(["end"])).await;

    assert_eq!(
        texts_until(&mut a, "end").await,
        ["to a", "to g", "to g again", "to all"]
    );
    assert_eq!(texts_until(&mut b, "end").await, ["to g", "to all"]);
    assert_eq!(texts_until(&mut c, "to all").await, Vec::<String>::new());
    assert_eq!(recv_close(&mut c).await, (4321, "go away".to_string()));
    assert_eq!(texts_until(&mut d, "end").await, ["other g"]);

    lib(addr, "spy", "close", json!([idb])).await;
    assert_eq!(recv_close(&mut b).await.0, 1000);
    let evs = session_events(addr, "spy", &idb, closed).await;
    assert_eq!(evs.last().expect("close")["closeReason"], 1000);
    // Still open after setClientId.
    send_text(&mut a, "still here").await;
    assert_eq!(recv_text(&mut a).await, "echo still here");
}

/// A mim that binds client ids with `setClientId` and dispatches to them with
/// Mesa's Dispatcher (SPEC 6), on `POST /clients` commands.
const CLIENTS: &str = r#"
var ws = require('/lib/xp/websocket');
var mesa = require('@cryb/mesa');
var dispatcher = new mesa.Dispatcher();
var synced = new mesa.Dispatcher({ sync: { enabled: true } });
exports.get = function (req) { return req.webSocket ? { webSocket: {} } : { status: 404 }; };
exports.post = function (req) {
  var c = JSON.parse(req.body);
  if (c.bind) ws.setClientId(c.bind[0], c.bind[1]);
  var d = c.ns !== undefined ? new mesa.Dispatcher({ namespace: c.ns }) : c.sync ? synced : dispatcher;
  if (c.to) d.dispatch(new mesa.Message(c.op, c.d, c.t), c.to, c.excluding);
  return { body: 'ok' };
};
exports.webSocketEvent = function (e) {
  if (e.type === 'open') return { body: 'open ' + e.session.id };
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn set_client_id_binds_sessions_to_a_client_id() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve(&[("clients/index.js", CLIENTS)]).await;
    let addr = host.addr();
    let command = |body: Value| async move {
        post(addr, "/clients", body.to_string())
            .await
            .assert_ok("ok");
    };
    let to = |recipients: Value, op: u32| json!({ "to": recipients, "op": op, "d": { "x": 1 }, "t": "T" });
    let frame = |op: u32| format!(r#"{{"op":{op},"d":{{"x":1}},"t":"T"}}"#);
    let (mut a, ida) = connect_spy(addr, "/clients/").await;
    let (mut b, idb) = connect_spy(addr, "/clients/").await;
    let (mut c, idc) = connect_spy(addr, "/clients/").await;

    // Before binding, a session's client id is its session id.
    command(to(json!([ida]), 1)).await;
    // Several sessions may share one client id; a bound session id no longer counts.
    command(json!({ "bind": [ida, "alice"] })).await;
    command(json!({ "bind": [idb, "alice"] })).await;
    command(json!({ "bind": ["no-such-session", "alice"] })).await;
    command(to(json!(["alice"]), 2)).await;
    command(to(json!([ida]), 3)).await;
    command(to(json!([idc]), 4)).await;
    // Binding again moves the session to the new client id.
    command(json!({ "bind": [idb, "bob"] })).await;
    command(to(json!(["alice"]), 5)).await;
    command(to(json!(["bob"]), 6)).await;
    command(to(json!(["*"]), 0)).await;

    assert_eq!(
        texts_until(&mut a, &frame(0)).await,
        [frame(1), frame(2), frame(5)]
    );
    assert_eq!(texts_until(&mut b, &frame(0)).await, [frame(2), frame(6)]);
    assert_eq!(texts_until(&mut c, &frame(0)).await, [frame(4)]);
}

/// Mesa namespaces on one node (SPEC 6): a Dispatcher reaches the sessions of every
/// container in its namespace, its `namespace` option picks another, and what sync
/// keeps is kept for the namespace (taken by whichever container's session binds).
#[tokio::test(flavor = "multi_thread")]
async fn mesa_namespaces_span_containers_on_one_node() {
    let _shared = HEAVY.read().await;
    let room = support::mim_json(&[("MESA_NAMESPACE", "room")]);
    let (_mims, host) = serve(&[
        ("clients/index.js", CLIENTS),
        ("clients/mim.json", &room),
        ("lobby/index.js", CLIENTS),
        ("lobby/mim.json", &room),
        ("other/index.js", CLIENTS),
    ])
    .await;
    let addr = host.addr();
    let command = |path: &'static str, body: Value| async move {
        post(addr, path, body.to_string()).await.assert_ok("ok");
    };
    let frame = |d: u32| format!(r#"{{"op":0,"d":{d},"t":"T"}}"#);
    let (mut l, idl) = connect_spy(addr, "/lobby/").await;
    let (mut o, ido) = connect_spy(addr, "/other/").await;
    command("/lobby", json!({ "bind": [idl, "lena"] })).await;

    // clients and lobby share namespace room: lena in lobby is reached from clients.
    command(
        "/clients",
        json!({ "to": ["lena"], "op": 0, "d": 1, "t": "T" }),
    )
    .await;
    // The namespace option reaches other's unbound session by its id.
    command(
        "/clients",
        json!({ "to": [ido], "op": 0, "d": 2, "t": "T", "ns": "other" }),
    )
    .await;
    // Sync keeps kim's message for namespace room; a lobby session binding kim gets it.
    command(
        "/clients",
        json!({ "to": ["kim"], "op": 0, "d": 3, "t": "T", "sync": true }),
    )
    .await;
    let (mut k, idk) = connect_spy(addr, "/lobby/").await;
    command("/lobby", json!({ "bind": [idk, "kim"] })).await;
    command(
        "/clients",
        json!({ "to": ["*"], "op": 0, "d": 9, "t": "T" }),
    )
    .await;
    command("/other", json!({ "to": ["*"], "op": 0, "d": 9, "t": "T" })).await;

    assert_eq!(texts_until(&mut l, &frame(9)).await, [frame(1)]);
    assert_eq!(texts_until(&mut k, &frame(9)).await, [frame(3)]);
    assert_eq!(texts_until(&mut o, &frame(9)).await, [frame(2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_session_ids_are_ignored() {
    let _shared = HEAVY.read().await;
    let mut files = spy("spy");
    files.extend(spy("other"));
    let (_mims, host) = serve_owned(&files).await;
    let addr = host.addr();
    let (mut a, ida) = connect_spy(addr, "/spy/").await;
    let (mut d, idd) = connect_spy(addr, "/other/").await;

    assert_eq!(
        lib(addr, "spy", "send", json!(["no-such-id", "x"])).await,
        false
    );
    // A session of another container is unknown here.
    assert_eq!(lib(addr, "spy", "send", json!([idd, "x"])).await, false);
    lib(addr, "spy", "addToGroup", json!(["g", "no-such-id"])).await;
    lib(addr, "spy", "addToGroup", json!(["g", idd])).await;
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["g"])).await, 0);
    lib(addr, "spy", "removeFromGroup", json!(["g", "no-such-id"])).await;
    lib(addr, "spy", "close", json!(["no-such-id", 4000, "x"])).await;
    lib(addr, "spy", "close", json!([idd, 4000, "not yours"])).await;
    lib(addr, "spy", "setClientId", json!(["no-such-id", "c"])).await;
    lib(addr, "spy", "sendToGroup", json!(["g", "nobody"])).await;

    // Everything still works for the real sessions.
    lib(addr, "spy", "addToGroup", json!(["g", ida])).await;
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["g"])).await, 1);
    lib(addr, "spy", "sendToGroup", json!(["g", "real"])).await;
    assert_eq!(recv_text(&mut a).await, "real");
    send_text(&mut d, "other alive").await;
    assert_eq!(recv_text(&mut d).await, "echo other alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closing_session_leaves_its_groups() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let addr = host.addr();
    let (mut a, ida) = connect_spy(addr, "/spy/").await;
    let (mut b, idb) = connect_spy(addr, "/spy/").await;
    let (mut c, idc) = connect_spy(addr, "/spy/").await;
    for id in [&ida, &idb, &idc] {
        lib(addr, "spy", "addToGroup", json!(["room", id])).await;
        lib(addr, "spy", "addToGroup", json!(["hall", id])).await;
    }
    assert_eq!(lib(addr, "spy", "getGroupSize", json!(["room"])).await, 3);

    // b closes from the client side, c is closed by the mim's reply.
    assert_eq!(close_with(&mut b, 1000).await, 1000);
    send_text(&mut c, "bye").await;
    assert_eq!(recv_text(&mut c).await, "bye");
    assert_eq!(recv_close(&mut c).await.0, 1000);
    session_events(addr, "spy", &idb, closed).await;
    session_events(addr, "spy", &idc, closed).await;
    for group in ["room", "hall"] {
        assert_eq!(
            lib(addr, "spy", "getGroupSize", json!([group])).await,
            1,
            "{group}"
        );
        assert_eq!(
            lib(addr, "spy", "getGroupMembers", json!([group])).await,
            json!([ida])
        );
    }
    lib(addr, "spy", "sendToGroup", json!(["room", "left"])).await;
    assert_eq!(recv_text(&mut a).await, "left");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_imports_as_an_es_module() {
    let _shared = HEAVY.read().await;
    const ESM: &str = r#"
import ws from '/lib/xp/websocket';
import { send, addToGroup, getGroupSize, getGroupMembers, sendToGroup } from '/lib/xp/websocket';

export function get(req) {
  if (!req.webSocket) return { status: 404 };
  return { webSocket: { data: { esm: true } } };
}

export function webSocketEvent(event) {
  if (event.type === 'open') {
    addToGroup('all', event.session.id);
    send(event.session.id, 'named ' + getGroupSize('all') + ' ' + getGroupMembers('all').length);
    ws.send(event.session.id, 'default ' + typeof ws.sendToAll + ' ' + event.data.esm);
  }
  if (event.type === 'message') sendToGroup('all', 'group ' + event.message);
}
"#;
    let (_mims, host) = serve(&[("esm/index.js", ESM)]).await;
    let mut a = connect(host.addr(), "/esm/").await;
    assert_eq!(recv_text(&mut a).await, "named 1 1");
    assert_eq!(recv_text(&mut a).await, "default function true");
    let mut b = connect(host.addr(), "/esm/").await;
    assert_eq!(recv_text(&mut b).await, "named 2 2");
    assert_eq!(recv_text(&mut b).await, "default function true");
    send_text(&mut b, "hi").await;
    assert_eq!(recv_text(&mut a).await, "group hi");
    assert_eq!(recv_text(&mut b).await, "group hi");
}

// ======================================================================
// 5.5 sessions and limits
// ======================================================================

#[tokio::test(flavor = "multi_thread")]
async fn text_frames_over_1_mib_close_1009() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let (mut ws, id) = connect_spy(host.addr(), "/spy/").await;
    let limit = 1024 * 1024;
    send_text(&mut ws, &"x".repeat(limit)).await;
    assert_eq!(recv_text(&mut ws).await, format!("length {limit}"));
    // The host may refuse the frame from its header, before all of it is sent:
    // a failed send is fine, the 1009 close frame must still arrive.
    let _ = ws.send(Message::text("y".repeat(limit + 1))).await;
    assert_eq!(recv_close(&mut ws).await.0, 1009);
    let evs = session_events(host.addr(), "spy", &id, closed).await;
    // The violation may be reported as an `error` event before the close.
    let kinds = types(&evs);
    assert!(
        kinds == ["open", "message", "close"] || kinds == ["open", "message", "error", "close"],
        "{evs:#?}"
    );
    assert_eq!(evs[1]["messageLength"], limit);
    if kinds[2] == "error" {
        let error = evs[2]["error"].as_str().unwrap_or("");
        assert!(error.contains("1 MiB"), "{error}");
    }
    assert_eq!(evs.last().expect("close")["closeReason"], 1009);

    // The same limit holds for a message split into fragments.
    let (mut ws, _) = connect_spy(host.addr(), "/spy/").await;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let half = vec![b'z'; limit / 2 + 1];
    let first = Frame::message(half.clone(), OpCode::Data(Data::Text), false);
    let last = Frame::message(half, OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first))
        .await
        .expect("first fragment");
    let _ = ws.send(Message::Frame(last)).await;
    assert_eq!(recv_close(&mut ws).await.0, 1009);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ids_are_unique_also_across_restarts() {
    let _shared = HEAVY.read().await;
    let mims = mims_of(&spy("spy"));
    let mut host = Host::start_with(&mims.path(), &["--node-id", "same-node"]).await;
    let mut ids = BTreeSet::new();
    let mut open = Vec::new();
    for _ in 0..2 {
        let addr = host.addr().to_string();
        let batch: Vec<(Ws, String)> = futures_util::stream::iter(0..40)
            .map(|_| connect_spy(&addr, "/spy/"))
            .buffer_unordered(20)
            .collect()
            .await;
        for (ws, id) in batch {
            assert!(ids.insert(id.clone()), "session id {id} given twice");
            open.push(ws);
        }
        open.clear();
        host.restart().await;
    }
    assert_eq!(ids.len(), 80);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throwing_web_socket_event_is_logged_and_the_session_stays_open() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let (mut ws, id) = connect_spy(host.addr(), "/spy/").await;
    send_text(&mut ws, "throw").await;
    host.wait_for_log(&format!("thrown on purpose by {id}"), WAIT)
        .await;
    send_text(&mut ws, "after throw").await;
    assert_eq!(recv_text(&mut ws).await, "echo after throw");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_web_socket_event_restarts_the_worker_and_keeps_every_session() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let addr = host.addr();
    let (mut a, ida) = connect_spy(addr, "/spy/a").await;
    let (mut b, idb) = connect_spy(addr, "/spy/b").await;
    let workers = support::proc::worker_pids(host.pid());

    send_text(&mut a, "spin").await;
    host.wait_for_log("worker restarted", WAIT).await;
    let now = poll_until(WAIT, || {
        let w = support::proc::worker_pids(host.pid());
        let fresh = !w.is_empty() && w.is_disjoint(&workers);
        async move { fresh.then_some(w) }
    })
    .await;
    assert!(
        now.is_some(),
        "the stuck worker {workers:?} was not replaced"
    );

    // Both sessions are still open and their later events are handled. The
    // spinning one may first hear about its dropped event.
    send_text(&mut a, "after spin").await;
    assert_eq!(
        recv_text_skipping(&mut a, "error-event ").await,
        "echo after spin"
    );
    send_text(&mut b, "b too").await;
    assert_eq!(
        recv_text_skipping(&mut b, "error-event ").await,
        "echo b too"
    );
    // The new worker knows the sessions: the library reaches them.
    assert_eq!(lib(addr, "spy", "send", json!([ida, "lib a"])).await, true);
    assert_eq!(recv_text_skipping(&mut a, "error-event ").await, "lib a");
    assert_eq!(lib(addr, "spy", "send", json!([idb, "lib b"])).await, true);
    assert_eq!(recv_text_skipping(&mut b, "error-event ").await, "lib b");
    let evs = events(addr, "spy").await;
    assert!(
        !evs.iter().any(|e| e["type"] == "close"),
        "no session closed: {evs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pings_keep_idle_sessions_and_silent_peers_are_reaped() {
    let _shared = HEAVY.read().await;
    let mims = mims_of(&spy("spy"));
    let interval = Duration::from_millis(500);
    let host = Host::start_with(&mims.path(), &["--ping-interval", "500ms"]).await;
    let addr = host.addr();

    // A live client answers pings (tungstenite does while it reads, so a task
    // keeps reading it) and stays.
    let (live, live_id) = connect_spy(addr, "/spy/live").await;
    let (mut live_tx, mut live_rx) = live.split();
    let pings = Arc::new(AtomicU64::new(0));
    let (texts_tx, mut live_texts) = tokio::sync::mpsc::unbounded_channel::<String>();
    let counter = pings.clone();
    let reader = tokio::spawn(async move {
        while let Some(frame) = live_rx.next().await {
            let text = match frame {
                Ok(Message::Ping(_)) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(Message::Text(t)) => t.to_string(),
                other => format!("unexpected {other:?}"),
            };
            let _ = texts_tx.send(text);
        }
        let _ = texts_tx.send("the live session ended".into());
    });
    let idle = Instant::now();
    let pinged = poll_until(WAIT, || {
        let n = pings.load(Ordering::Relaxed);
        async move { (n >= 4).then_some(n) }
    })
    .await;
    assert!(pinged.is_some(), "fewer than 4 pings in {WAIT:?}");
    assert!(
        idle.elapsed() >= interval * 3,
        "4 pings came within {:?}: the interval is not {interval:?}",
        idle.elapsed()
    );
    assert!(live_texts.try_recv().is_err(), "an idle session got data");

    // A peer that never answers is reaped within about two intervals.
    let mut silent = RawClient::connect(addr, "/spy/silent", false).await;
    let opened = Instant::now();
    let (op, greeting) = silent.next_frame(WAIT).await.expect("greeting");
    assert_eq!(op, OP_TEXT);
    let greeting = String::from_utf8(greeting).expect("utf-8");
    let silent_id = greeting
        .strip_prefix("open ")
        .expect("open <id>")
        .to_string();
    let mut silent_pings = 0;
    let reaped_after = loop {
        match silent.next_frame(WAIT).await {
            None => break opened.elapsed(),
            Some((OP_PING, _)) => silent_pings += 1,
            Some((OP_CLOSE, _)) => {}
            Some(other) => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(silent_pings >= 1, "the silent peer was never pinged");
    assert!(
        reaped_after <= interval * 4,
        "a silent peer was reaped only after {reaped_after:?}; stderr:\n{}",
        host.stderr()
    );
    let evs = session_events(addr, "spy", &silent_id, closed).await;
    assert_eq!(types(&evs), ["open", "close"]);

    // Meanwhile the live one never closed.
    live_tx
        .send(Message::text("alive"))
        .await
        .expect("send on the live session");
    let echo = tokio::time::timeout(WAIT, live_texts.recv()).await;
    assert_eq!(
        echo.ok().flatten().as_deref(),
        Some("echo alive"),
        "the live session"
    );
    reader.abort();
    let live_events: Vec<Value> = events(addr, "spy")
        .await
        .into_iter()
        .filter(|e| e["sessionId"] == live_id.as_str())
        .collect();
    assert!(!closed(&live_events), "{live_events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_shutdown_closes_every_session_1001() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let (mut controller, _) = connect_spy(host.addr(), "/spy/").await;
    let (mut dispatch, _) = connect_spy(host.addr(), "/ws/spy").await;
    // SAFETY: SIGTERM to the host we started.
    assert_eq!(unsafe { libc::kill(host.pid(), libc::SIGTERM) }, 0);
    assert_eq!(recv_close(&mut controller).await.0, 1001);
    assert_eq!(recv_close(&mut dispatch).await.0, 1001);
}

/// A plain tar holding `index.js` = `code`.
fn tar_of(code: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(code.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "index.js", code.as_bytes())
        .expect("tar entry");
    builder.into_inner().expect("tar")
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_container_closes_its_sessions_1001() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&spy("spy")).await;
    let boundary = "mimhost-ws-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ngone-img\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"gone.tar\"\r\n\
         Content-Type: application/x-tar\r\n\r\n"
    )
    .into_bytes();
    body.extend(tar_of(SPY));
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let image = send(
        host.request(Method::POST, "/mcm/v1/images")
            .bearer_auth(TOKEN)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await;
    if image.status == 404 {
        eprintln!("skipping: the MCM API does not answer yet ({image:?})");
        return;
    }
    assert_eq!(image.status, 201, "{image:?}");
    let created = send(
        host.request(Method::POST, "/mcm/v1/containers")
            .bearer_auth(TOKEN)
            .json(&json!({
                "name": "gone",
                "image": image.json()["id"],
                "env": { "WEBSOCKET_SUPPORT": "true" }
            })),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");

    let (mut controller, _) = connect_spy(host.addr(), "/gone/x").await;
    let (mut dispatch, _) = connect_spy(host.addr(), "/ws/gone").await;
    let (mut bystander, _) = connect_spy(host.addr(), "/spy/").await;
    let removed = send(
        host.request(Method::DELETE, "/mcm/v1/containers/gone")
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(recv_close(&mut controller).await.0, 1001);
    assert_eq!(recv_close(&mut dispatch).await.0, 1001);
    assert_eq!(refused(host.addr(), "/ws/gone").await.0, 404);
    send_text(&mut bystander, "unaffected").await;
    assert_eq!(recv_text(&mut bystander).await, "echo unaffected");
}

// ======================================================================
// the seed mims of the repository, unchanged
// ======================================================================

/// The files of the repository's `mims/<name>` folder, as `(path, contents)`.
fn repo_mim(name: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mims")
        .join(name);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let mut text = String::new();
        std::fs::File::open(entry.path())
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("read mim file");
        files.push((
            format!("{name}/{}", entry.file_name().to_string_lossy()),
            text,
        ));
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_000_notify_mim_pushes_its_four_examples() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&repo_mim("notify")).await;
    let mut one = connect(host.addr(), "/ws/notify").await;
    let mut two = connect(host.addr(), "/ws/notify").await;

    host.post("/notify/notify", "")
        .await
        .assert_ok(r#"{"sent":true}"#);
    for ws in [&mut one, &mut two] {
        assert_eq!(
            recv_text(ws).await,
            r#"{"type":"notification","message":"New data available"}"#
        );
    }

    host.post("/notify/user-update", r#"{"id":42,"name":"Ada"}"#)
        .await
        .assert_ok(r#"{"updated":true}"#);
    for ws in [&mut one, &mut two] {
        let frame: Value = serde_json::from_str(&recv_text(ws).await).expect("JSON");
        assert_eq!(frame["type"], "user-updated");
        let message: Value =
            serde_json::from_str(frame["message"].as_str().expect("message is a string"))
                .expect("message holds JSON");
        assert_eq!(message["userId"], 42);
        let stamp = message["timestamp"].as_str().expect("timestamp");
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.contains('T'),
            "{stamp}"
        );
    }

    host.post("/notify/sync", "")
        .await
        .assert_ok(r#"{"synced":true}"#);
    for ws in [&mut one, &mut two] {
        let frame: Value = serde_json::from_str(&recv_text(ws).await).expect("JSON");
        assert_eq!(frame["type"], "data-sync");
        assert_eq!(
            serde_json::from_str::<Value>(frame["message"].as_str().expect("string"))
                .expect("JSON message"),
            json!({"action": "sync-complete", "recordCount": 42})
        );
    }

    // A flush with nothing queued sends nothing: the next frame is the next event.
    host.post("/notify/flush", "")
        .await
        .assert_ok(r#"{"flushed":true}"#);
    host.post("/notify/notify", "")
        .await
        .assert_ok(r#"{"sent":true}"#);
    for ws in [&mut one, &mut two] {
        assert_eq!(
            recv_text(ws).await,
            r#"{"type":"notification","message":"New data available"}"#
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_003_chat_mim_relays_to_its_group() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&repo_mim("chat")).await;
    let page = host.get("/chat/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("new WebSocket"), "{}", page.body);

    let chat = |_: ()| async {
        let (mut ws, resp) =
            connect_with(host.addr(), "/chat/", &[("sec-websocket-protocol", "text")]).await;
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("text")
        );
        let welcome = recv_text(&mut ws).await;
        assert!(!welcome.is_empty());
        ws
    };
    let mut a = chat(()).await;
    host.wait_for_log("New group size 1", WAIT).await;
    let mut b = chat(()).await;
    host.wait_for_log("New group size 2", WAIT).await;

    send_text(&mut a, "hello from a").await;
    assert_eq!(recv_text(&mut a).await, "hello from a");
    assert_eq!(recv_text(&mut b).await, "hello from a");
    send_text(&mut b, "hello from b").await;
    assert_eq!(recv_text(&mut a).await, "hello from b");
    assert_eq!(recv_text(&mut b).await, "hello from b");

    // b leaves the group when it closes: a newcomer makes the group 2 again, not 3.
    assert_eq!(close_with(&mut b, 1000).await, 1000);
    let left = poll_until(WAIT, || async {
        let mut c = chat(()).await;
        let count = host.stderr().matches("New group size 2").count();
        if count >= 2 {
            return Some(c);
        }
        // b's close was not handled yet: leave again and retry.
        close_with(&mut c, 1000).await;
        None
    })
    .await;
    let mut c = left.expect("a newcomer after b left should make the group size 2");
    assert!(
        !host.stderr_contains("New group size 3"),
        "{}",
        host.stderr()
    );
    send_text(&mut c, "hello from c").await;
    assert_eq!(recv_text(&mut a).await, "hello from c");
    assert_eq!(recv_text(&mut c).await, "hello from c");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_001_trigger_mim_greets_broadcasts_and_ends() {
    let _shared = HEAVY.read().await;
    let (_mims, host) = serve_owned(&repo_mim("trigger")).await;
    let usage = host.get("/trigger/room").await;
    assert_eq!(usage.status, 200, "{usage:?}");
    assert!(usage.json()["usage"]
        .as_str()
        .expect("usage")
        .contains("/trigger/room"));

    let greet = |path: &'static str| {
        let addr = host.addr().to_string();
        async move {
            let mut ws = connect(&addr, path).await;
            let hello = recv_json(&mut ws).await;
            (ws, hello)
        }
    };
    let (mut a, hello_a) = greet("/trigger/room?x=1").await;
    let ida = hello_a["hello"].as_str().expect("session id").to_string();
    assert_eq!(hello_a["peer"], "127.0.0.1");
    assert_eq!(hello_a["method"], "GET");
    assert_eq!(hello_a["query"], json!({"x": "1"}));
    let (mut b, hello_b) = greet("/trigger/room").await;
    let idb = hello_b["hello"].as_str().expect("session id").to_string();
    assert_ne!(ida, idb);
    assert_eq!(hello_b["query"], json!({}));

    send_text(&mut a, r#"{"text":"hey"}"#).await;
    let broadcast = json!({"from": ida, "message": {"text": "hey"}});
    assert_eq!(recv_json(&mut a).await, broadcast);
    assert_eq!(recv_json(&mut a).await, json!({"received": true}));
    assert_eq!(recv_json(&mut b).await, broadcast);

    send_text(&mut b, "plain words").await;
    let broadcast = json!({"from": idb, "message": {"text": "plain words"}});
    assert_eq!(recv_json(&mut b).await, broadcast);
    assert_eq!(recv_json(&mut b).await, json!({"received": true}));
    assert_eq!(recv_json(&mut a).await, broadcast);

    send_text(&mut b, r#"{"end":true}"#).await;
    assert_eq!(recv_json(&mut b).await, json!({"bye": idb}));
    assert_eq!(recv_close(&mut b).await.0, 1000);
    send_text(&mut a, "alone").await;
    assert_eq!(
        recv_json(&mut a).await,
        json!({"from": ida, "message": {"text": "alone"}})
    );
    assert_eq!(recv_json(&mut a).await, json!({"received": true}));
    assert_quiet(&mut a, Duration::from_millis(200)).await;
}

// ======================================================================
// slow clients: 1,000 readers and one that stops reading
// ======================================================================

/// Dispatches numbered events in bursts, fills one session's queue on demand and
/// counts opened sessions.
const FLOOD: &str = r#"
var ws = require('/lib/xp/websocket');
var opened = 0;
app.get('/opened', (request, response) => response.end(String(opened)));
app.post('/burst/:from/:n/:size', (request, response) => {
  var from = Number(request.params.from), n = Number(request.params.n);
  var pad = 'x'.repeat(Number(request.params.size));
  for (var i = from; i < from + n; i++) context.dispatchWebSocketEvent({ type: 'e', message: i + ':' + pad });
  response.end(String(n));
});
app.post('/fill/:id/:count/:size', (request, response) => {
  var big = 'fill:' + 'y'.repeat(Number(request.params.size));
  var sent = 0;
  for (var i = 0; i < Number(request.params.count); i++) if (ws.send(request.params.id, big)) sent++;
  response.end(String(sent));
});
exports.webSocketEvent = function (event) {
  if (event.type === 'open') opened++;
  if (event.type === 'close') opened--;
  if (event.type === 'message' && event.message === 'whoami') return { body: 'id ' + event.session.id };
};
"#;

const READERS: usize = 1000;
const BURST: u64 = 2000;
/// Bytes of padding per event: with the type and number a frame is ~1 KiB.
const EVENT_PAD: usize = 1000;

/// What one reader saw.
#[derive(Default)]
struct Progress {
    /// Events received, all in order.
    received: AtomicU64,
    /// When the latest one arrived, in ns since the test's epoch.
    last_at: AtomicU64,
    /// The first thing that went wrong.
    error: Mutex<Option<String>>,
}

/// Reads dispatch frames `{"type":"e","message":"<seq>:<pad>"}` and checks that
/// they come in order, whole, with nothing else in between.
async fn read_events(mut ws: Ws, progress: Arc<Progress>, epoch: Instant) {
    let prefix = r#"{"type":"e","message":""#;
    let mut expected: u64 = 0;
    let fail = |why: String| *progress.error.lock().expect("error slot") = Some(why);
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => {
                let seq = text
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse::<u64>().ok());
                let whole = prefix.len() + expected.to_string().len() + 1 + EVENT_PAD + 2;
                if seq != Some(expected) || text.len() != whole {
                    let head: String = text.chars().take(60).collect();
                    return fail(format!(
                        "wanted event {expected}, got {head:?} ({} bytes)",
                        text.len()
                    ));
                }
                expected += 1;
                progress
                    .last_at
                    .store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                progress.received.store(expected, Ordering::Release);
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => return fail(format!("after {expected} events: {other:?}")),
            Err(e) => return fail(format!("after {expected} events: {e}")),
        }
    }
    fail(format!("the connection ended after {expected} events"));
}

/// Waits until every reader has `count` events; returns when the last one arrived
/// (ns since the epoch). Panics at the first reader error.
async fn all_received(readers: &[Arc<Progress>], count: u64, limit: Duration) -> u64 {
    let done = poll_until(limit, || {
        let mut behind = 0;
        for (i, r) in readers.iter().enumerate() {
            if let Some(e) = r.error.lock().expect("error slot").as_ref() {
                panic!("reader {i}: {e}");
            }
            if r.received.load(Ordering::Acquire) < count {
                behind += 1;
            }
        }
        async move { (behind == 0).then_some(()) }
    })
    .await;
    if done.is_none() {
        let slowest = readers
            .iter()
            .map(|r| r.received.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        panic!("after {limit:?} the slowest reader has {slowest} of {count} events");
    }
    readers
        .iter()
        .map(|r| r.last_at.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

/// The host's resident set size in MiB.
fn rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024
}

/// Raises this process's open-file limit to its hard limit (the host inherits it).
fn raise_nofile_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= needed,
        "the open-file hard limit {} is below the {needed} this test needs",
        limit.rlim_cur
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_is_closed_1008_without_slowing_1000_readers() {
    let _alone = HEAVY.write().await;
    raise_nofile_limit(3 * READERS as u64);
    let (_mims, host) = serve(&[
        ("flood/index.js", FLOOD),
        (
            "flood/mim.json",
            &mim_json(&[("WEBSOCKET_SUPPORT", "true")]),
        ),
    ])
    .await;
    let addr = host.addr().to_string();
    let pid = host.pid();
    let started = Instant::now();

    // The stalled client: a raw socket with a tiny window that stops reading
    // once it knows its id.
    let mut stalled = RawClient::connect(&addr, "/ws/flood", true).await;
    stalled.send_text("whoami").await;
    let (_, who) = stalled.next_frame(WAIT).await.expect("id reply");
    let stalled_id = String::from_utf8(who)
        .expect("utf-8")
        .strip_prefix("id ")
        .expect("id <id>")
        .to_string();

    // 1,000 readers.
    let sockets: Vec<Ws> = futures_util::stream::iter(0..READERS)
        .map(|_| connect(&addr, "/ws/flood"))
        .buffer_unordered(64)
        .collect()
        .await;
    let epoch = Instant::now();
    let readers: Vec<Arc<Progress>> = sockets
        .into_iter()
        .map(|ws| {
            let progress = Arc::new(Progress::default());
            tokio::spawn(read_events(ws, progress.clone(), epoch));
            progress
        })
        .collect();
    let opened = poll_until(Duration::from_secs(30), || async {
        let n: usize = host.get("/flood/opened").await.body.parse().unwrap_or(0);
        (n == READERS + 1).then_some(n)
    })
    .await;
    assert!(opened.is_some(), "not every session opened");
    let connected = started.elapsed();

    // One dispatch, timed until it reached all 1,000 sessions.
    let sent_at = epoch.elapsed().as_nanos() as u64;
    host.post(&format!("/flood/burst/0/1/{EVENT_PAD}"), "")
        .await
        .assert_ok("1");
    let reached = all_received(&readers, 1, WAIT).await;
    let one_dispatch = Duration::from_nanos(reached.saturating_sub(sent_at));

    // Bring the stalled session's queue near its 16 MiB bound with frames only it
    // gets, then burst to everyone until it overflows (the first burst should do).
    host.post(&format!("/flood/fill/{stalled_id}/16/1000000"), "")
        .await
        .assert_ok("16");
    let peak_rss = Arc::new(AtomicU64::new(rss_mib(pid)));
    let sampler = {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_mib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut next = 1;
    let mut bursts = Vec::new();
    // At least two bursts: the readers carry on at full speed once it is gone.
    while bursts.len() < 2 || !host.stderr_contains("closed 1008") {
        assert!(
            bursts.len() < 6,
            "the stalled client was not closed after {} bursts; stderr:\n{}",
            bursts.len(),
            host.stderr()
        );
        let sent_at = epoch.elapsed().as_nanos() as u64;
        host.post(&format!("/flood/burst/{next}/{BURST}/{EVENT_PAD}"), "")
            .await
            .assert_ok(&BURST.to_string());
        next += BURST;
        let done = all_received(&readers, next, Duration::from_secs(60)).await;
        bursts.push(Duration::from_nanos(done.saturating_sub(sent_at)));
    }
    sampler.abort();
    let max_rss = peak_rss.load(Ordering::Relaxed);
    host.wait_for_log("closed 1008", WAIT).await;

    // What reached the stalled socket: whole frames, events in order, then 1008.
    let mut fills = 0;
    let mut events_seen = 0u64;
    let mut close_code = None;
    while let Some((op, payload)) = stalled.next_frame(Duration::from_secs(30)).await {
        match op {
            OP_TEXT if payload.starts_with(b"fill:") => fills += 1,
            OP_TEXT => {
                let text = String::from_utf8_lossy(&payload);
                assert!(
                    text.starts_with(&format!(r#"{{"type":"e","message":"{events_seen}:"#)),
                    "stalled client: wanted event {events_seen}, got {}",
                    &text[..60.min(text.len())]
                );
                events_seen += 1;
            }
            OP_CLOSE => {
                close_code = Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
            OP_PING => {}
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert_eq!(
        close_code,
        Some(1008),
        "the stalled client got {fills} fills and {events_seen} events, then no 1008 close"
    );
    // Every reader is still open, with every event and nothing more.
    for (i, r) in readers.iter().enumerate() {
        assert!(r.error.lock().expect("error").is_none(), "reader {i}");
        assert_eq!(r.received.load(Ordering::Acquire), next, "reader {i}");
    }
    assert!(max_rss < 300, "host RSS reached {max_rss} MiB");
    let metrics = host.get("/metrics").await;
    assert!(
        metrics
            .body
            .contains(r#"mimhost_ws_slow_closed_total{container="flood"} 1"#),
        "/metrics does not count the slow close:\n{}",
        metrics.body
    );
    eprintln!(
        "slow-client test: {READERS} readers connected in {connected:?}; one dispatch reached all \
         of them in {one_dispatch:?}; bursts of {BURST} ~1 KiB events reached all of them in \
         {bursts:?}; the stalled client got {fills} fill frames and {events_seen} events before \
         its 1008; host RSS peaked at {max_rss} MiB; whole test {:?}",
        started.elapsed()
    );
}
