//! Dirigible's `sdk/net` WebSockets (SPEC 5.4, seed 002) against a real host:
//! endpoints served at `/websockets/v4/service/<endpoint>`, outbound clients to
//! real echo servers on loopback (`ws://`, and `wss://` with a self-signed CA given
//! through `SSL_CERT_FILE`), seed 002's code verbatim, and the `mims/relay` example.

#[path = "support/mod.rs"]
mod support;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{poll_until, send, Host, Mims, TOKEN};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

// ---------- echo servers ----------

/// What an echo server saw: every text message, and `close` when a connection
/// ended (`close:<code>` when the peer sent a close frame).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        self.0.lock().expect("seen").clone()
    }
    fn push(&self, s: String) {
        self.0.lock().expect("seen").push(s);
    }
    fn count(&self, prefix: &str) -> usize {
        self.all().iter().filter(|s| s.starts_with(prefix)).count()
    }
    async fn wait_for(&self, what: &str) {
        let seen = poll_until(WAIT, || {
            let found = self.all().iter().any(|s| s == what);
            async move { found.then_some(()) }
        })
        .await;
        assert!(
            seen.is_some(),
            "the echo server never saw {what:?}: {:?}",
            self.all()
        );
    }
}

/// A WebSocket echo server on loopback: answers every text message with itself.
struct Echo {
    port: u16,
    seen: Seen,
}

impl std::ops::Deref for Echo {
    type Target = Seen;
    fn deref(&self) -> &Seen {
        &self.seen
    }
}

impl Echo {
    async fn start() -> Echo {
        Self::start_tls(None).await
    }

    /// With `tls`, the server speaks `wss://`.
    async fn start_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let port = listener.local_addr().expect("addr").port();
        let seen = Seen::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                echo(stream, log).await;
                            }
                        }
                        None => echo(tcp, log).await,
                    }
                });
            }
        });
        Echo { port, seen }
    }

    fn uri(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

async fn echo<S>(stream: S, seen: Seen)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    seen.push("connect".into());
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => {
                seen.push(text.to_string());
                if ws.send(Message::text(text.to_string())).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                seen.push(format!("close:{code}"));
                let _ = ws.close(None).await;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen.push("gone".into());
}

/// A CA and a server certificate it signed for 127.0.0.1/localhost, as
/// (acceptor for the server, the CA certificate in PEM).
fn tls_server() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mimhost test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let der = tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

// ---------- talking to the host ----------

/// A WebSocket client of the host.
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(host: &Host, path: &str) -> Socket {
    let url = format!("ws://{}{path}", host.addr());
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// The next text message (pings and pongs skipped), within the wait.
async fn next_text(ws: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket stayed open")
            .expect("a valid frame");
        match message {
            Message::Text(t) => return t.to_string(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

async fn post_json(host: &Host, path: &str, body: Value) -> (u16, Value) {
    let reply = send(host.request(Method::POST, path).json(&body)).await;
    (reply.status, reply.json())
}

async fn get_json(host: &Host, path: &str) -> Value {
    let reply = host.get(path).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// Polls `GET path` until `done` holds for its JSON; returns that JSON.
async fn wait_json(host: &Host, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reply = host.get(path).await;
        if reply.status == 200 {
            last = reply.json();
            if done(&last) {
                return last;
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: GET {path} never got there; last: {last}\nhost stderr:\n{}",
                host.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------- the test mims ----------

/// A route-style mim that drives outbound clients over HTTP and records what its
/// client handler hears.
const DRIVER: &str = r#"
const { websockets } = require('sdk/net');
const events = require('./client-handler');
const held = {};
function fail(res, e) { res.statusCode = 400; res.json({ error: String(e && e.message || e) }); }
function body(req) { return req.body ? JSON.parse(req.body) : {}; }
app.post('/create', (req, res) => {
  const b = body(req);
  try {
    const c = websockets.createWebsocket(b.uri, b.handler || 'client-handler');
    held[c.id] = c;
    (b.send || []).forEach((m) => c.send(m));
    if (b.close) c.close();
    res.json({ id: c.id, uri: c.uri, handler: c.handler });
  } catch (e) { fail(res, e); }
});
app.post('/many', (req, res) => {
  const b = body(req), ids = [];
  try {
    for (let i = 0; i < b.n; i++) {
      const c = websockets.createWebsocket(b.uri, 'client-handler');
      held[c.id] = c;
      if (b.close) c.close();
      ids.push(c.id);
    }
    res.json({ ids: ids });
  } catch (e) { res.json({ ids: ids, error: String(e.message) }); }
});
app.post('/send/:id', (req, res) => {
  try { held[req.params.id].send(req.body); res.json({ sent: true }); } catch (e) { fail(res, e); }
});
app.post('/close/:id', (req, res) => {
  try { held[req.params.id].close(); res.json({ closed: true }); } catch (e) { fail(res, e); }
});
app.post('/close-all', (req, res) => {
  websockets.getClients().forEach((c) => websockets.getClient(c.id).close());
  res.json({ left: websockets.getClients().length });
});
app.post('/lookup-send/:id', (req, res) => {
  const c = websockets.getClient(req.params.id);
  if (!c) return fail(res, 'no such client');
  try { c.send(req.body); res.json({ sent: true }); } catch (e) { fail(res, e); }
});
app.get('/clients', (req, res) => res.json(websockets.getClients()));
app.get('/client/:id', (req, res) => res.json(websockets.getClient(req.params.id)));
app.get('/by-handler/:h', (req, res) => res.json(websockets.getClientByHandler(req.params.h)));
app.get('/events', (req, res) => res.json(events.log));
app.get('/outside', (req, res) => res.json({
  method: websockets.getMethod(), message: websockets.getMessage(), error: websockets.getError(),
  open: websockets.isOnOpen(), msg: websockets.isOnMessage(), err: websockets.isOnError(), close: websockets.isOnClose()
}));
app.get('/spin', () => { while (true) {} });
"#;

/// The driver's client handler: records every call with what `sdk/net` says about it.
const CLIENT_HANDLER: &str = r#"
const { websockets } = require('sdk/net');
exports.log = [];
function note(kind, extra) {
  exports.log.push(Object.assign({
    kind: kind, method: websockets.getMethod(), message: websockets.getMessage(), error: websockets.getError(),
    open: websockets.isOnOpen(), msg: websockets.isOnMessage(), err: websockets.isOnError(), close: websockets.isOnClose()
  }, extra));
}
exports.onOpen = function (id) { note('open', { id: id }); };
exports.onMessage = function (message, from) { note('message', { id: from }); return 'ignored for clients'; };
exports.onError = function (error, id) { note('error', { id: id }); };
exports.onClose = function (id) { note('close', { id: id }); };
"#;

/// A client handler whose `onMessage` records and then throws.
const THROWING_HANDLER: &str = r#"
const log = require('./client-handler').log;
exports.onMessage = function (message, from) {
  log.push({ kind: 'thrower', message: message, id: from });
  throw new Error('boom from the handler');
};
"#;

fn driver_mims() -> Mims {
    Mims::from_files(&[
        ("driver/index.js", DRIVER),
        ("driver/client-handler.js", CLIENT_HANDLER),
        ("driver/throwing-handler.js", THROWING_HANDLER),
    ])
}

fn events_of<'a>(log: &'a Value, id: &str) -> Vec<&'a Value> {
    log.as_array()
        .expect("event log")
        .iter()
        .filter(|e| e["id"] == id)
        .collect()
}

fn kinds(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Creates a client through the driver; returns its id.
async fn create(host: &Host, body: Value) -> String {
    let (status, reply) = post_json(host, "/driver/create", body).await;
    assert_eq!(status, 200, "{reply}");
    reply["id"].as_str().expect("client id").to_string()
}

// ---------- seed 002 ----------

/// Seed 002's client code, verbatim but for the `const uri` line.
fn seed_client(uri: &str) -> String {
    format!(
        r#"import {{ websockets }} from "sdk/net"

const uri = "{uri}";
const handler = "my-project/ws-handler"

function initialize() {{
    console.log("Connect to: " + uri);
    let websocket = websockets.createWebsocket(uri, handler);
    websocket.send("hello");
}}

initialize();

websockets.getClientByHandler(handler).close();
"#
    )
}

/// Seed 002's endpoint descriptor, verbatim.
const SEED_DESCRIPTOR: &str = r#"{
  "handler": "my-project/ws-handler",
  "endpoint":"my-endpoint",
  "description":"My Websocket"
}"#;

/// The handler module seed 002 names (the seed leaves its code to the reader).
const SEED_HANDLER: &str = r#"import { websockets } from "sdk/net";

export function onOpen() {
  console.log("ws-handler: open (" + websockets.getMethod() + ")");
}

export function onMessage(message, from) {
  console.log("ws-handler: message " + websockets.getMessage());
  return "echo: " + message;
}

export function onError(error) {
  console.log("ws-handler: error " + error);
}

export function onClose() {
  console.log("ws-handler: close");
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn seed_002_client_and_server_code_run_unchanged() {
    let upstream = Echo::start().await;
    let client_code = seed_client(&upstream.uri());
    let mims = Mims::from_files(&[
        ("seed/index.js", &client_code),
        ("seed/ws-handler.js", SEED_HANDLER),
        ("seed/my-endpoint.websocket", SEED_DESCRIPTOR),
    ]);
    let host = Host::start(&mims.path()).await;

    // Client: "hello" goes out first, then the close queued right behind it.
    upstream.wait_for("close:1000").await;
    let seen = upstream.all();
    assert_eq!(seen[..3], ["connect", "hello", "close:1000"], "{seen:?}");
    host.wait_for_log("ws-handler: open (onopen)", WAIT).await;
    host.wait_for_log("ws-handler: close", WAIT).await;

    // Server: the browser snippet, from a Rust client.
    let mut ws = connect(&host, "/websockets/v4/service/my-endpoint").await;
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "echo: hello");
    host.wait_for_log("ws-handler: message hello", WAIT).await;
}

// ---------- endpoints ----------

/// A mim with two endpoints (one in mim.json, one in a `.websocket` file in a
/// subfolder) whose handler records every call.
const ENDPOINT_HANDLER: &str = r#"
const { websockets } = require('sdk/net');
const websocket = require('/lib/xp/websocket');
exports.calls = [];
function note(name, args) {
  exports.calls.push({ name: name, args: args, method: websockets.getMethod(), message: websockets.getMessage(),
    error: websockets.getError(), open: websockets.isOnOpen(), msg: websockets.isOnMessage(),
    err: websockets.isOnError(), close: websockets.isOnClose() });
}
exports.onOpen = function () { note('onOpen', Array.from(arguments)); };
exports.onMessage = function (message, from) {
  note('onMessage', [message, from]);
  if (message === 'whoami') return from;
  if (message === 'object') return { got: message, n: 1 };
  if (message === 'nothing') return null;
  if (message === 'promise') return Promise.resolve('resolved later');
  if (message === 'throw') throw new Error('endpoint handler threw on purpose');
  if (message === 'version') return 'v1';
  return 'echo:' + message;
};
exports.onError = function (error) { note('onError', [error]); };
exports.onClose = function () { note('onClose', Array.from(arguments)); };
"#;

const ENDPOINT_INDEX: &str = r#"
const { websockets } = require('sdk/net');
const websocket = require('/lib/xp/websocket');
const handler = require('./handlers/recorder');
app.get('/calls', (req, res) => res.json(handler.calls));
app.post('/push/:id', (req, res) => res.json({ sent: websocket.send(req.params.id, req.body) }));
"#;

fn endpoint_mims() -> Mims {
    Mims::from_files(&[
        ("ep/index.js", ENDPOINT_INDEX),
        ("ep/handlers/recorder.js", ENDPOINT_HANDLER),
        (
            "ep/mim.json",
            r#"{"env": {}, "websocket": [{"handler": "ep-project/handlers/recorder", "endpoint": "recorded", "description": "records"}]}"#,
        ),
        (
            "ep/sockets/plain.websocket",
            r#"{"handler": "handlers/recorder.js", "endpoint": "plain"}"#,
        ),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_handlers_get_every_event_in_order_and_reply_by_return() {
    let mims = endpoint_mims();
    let host = Host::start(&mims.path()).await;

    let mut ws = connect(&host, "/websockets/v4/service/recorded").await;
    ws.send(Message::text("a")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "echo:a");
    ws.send(Message::text("object")).await.expect("send");
    assert_eq!(
        serde_json::from_str::<Value>(&next_text(&mut ws).await).expect("JSON reply"),
        json!({"got": "object", "n": 1})
    );
    ws.send(Message::text("nothing")).await.expect("send");
    ws.send(Message::text("throw")).await.expect("send");
    ws.send(Message::text("promise")).await.expect("send");
    // null gives no reply and a throw keeps the session: the next reply is the promise's.
    assert_eq!(next_text(&mut ws).await, "resolved later");
    host.wait_for_log("endpoint handler threw on purpose", WAIT)
        .await;
    ws.send(Message::text("whoami")).await.expect("send");
    let session = next_text(&mut ws).await;

    // /lib/xp/websocket reaches an endpoint session.
    let pushed = host.post(&format!("/ep/push/{session}"), "from http").await;
    assert_eq!(pushed.json(), json!({"sent": true}), "{pushed:?}");
    assert_eq!(next_text(&mut ws).await, "from http");

    ws.close(None).await.expect("close");
    let calls = wait_json(&host, "/ep/calls", "onClose recorded", |c| {
        c.as_array()
            .is_some_and(|a| a.last().is_some_and(|l| l["name"] == "onClose"))
    })
    .await;
    let names: Vec<&str> = calls
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "onOpen",
            "onMessage",
            "onMessage",
            "onMessage",
            "onMessage",
            "onMessage",
            "onMessage",
            "onClose"
        ]
    );
    let first_message = &calls[1];
    assert_eq!(first_message["args"], json!(["a", session]));
    assert_eq!(first_message["method"], "onmessage");
    assert_eq!(first_message["message"], "a");
    assert_eq!(
        (first_message["msg"].clone(), first_message["open"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(calls[0]["method"], "onopen");
    assert_eq!(calls[0]["open"], true);
    assert_eq!(calls[0]["message"], Value::Null);
    assert_eq!(calls[7]["method"], "onclose");
    assert_eq!(calls[7]["close"], true);

    // The other endpoint of the mim (a .websocket file in a subfolder) works too.
    let mut plain = connect(&host, "/websockets/v4/service/plain").await;
    plain.send(Message::text("x")).await.expect("send");
    assert_eq!(next_text(&mut plain).await, "echo:x");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_endpoints_404_and_a_taken_endpoint_is_refused_409() {
    let mims = endpoint_mims();
    let host = Host::start(&mims.path()).await;

    let url = format!("ws://{}/websockets/v4/service/nobody", host.addr());
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404)
        }
        other => panic!("expected a 404 for an unknown endpoint, got {other:?}"),
    }

    // An image declaring an endpoint the drop-in mim serves: 409 at create.
    let image = tar_of(&[
        ("index.js", "exports.get = () => ({body: 'dup'});"),
        ("h.js", "exports.onMessage = () => 'dup';"),
        (
            "dup.websocket",
            r#"{"handler": "h", "endpoint": "recorded"}"#,
        ),
    ]);
    let image_id = upload(&host, "dup", &image).await;
    let reply = send(
        host.request(Method::POST, "/mcm/v1/containers")
            .bearer_auth(TOKEN)
            .json(&json!({"name": "dup", "image": image_id})),
    )
    .await;
    let message = reply.assert_error(409);
    assert!(
        message.contains("recorded") && message.contains("'ep'"),
        "{message}"
    );

    // The same image without the clash deploys; a hot swap to one with it is 409
    // and the previous version keeps serving.
    let fine = tar_of(&[
        ("index.js", "exports.get = () => ({body: 'fine'});"),
        ("h.js", "exports.onMessage = (m) => 'mine:' + m;"),
        ("own.websocket", r#"{"handler": "h", "endpoint": "own"}"#),
    ]);
    let fine_id = upload(&host, "fine", &fine).await;
    let reply = send(
        host.request(Method::POST, "/mcm/v1/containers")
            .bearer_auth(TOKEN)
            .json(&json!({"name": "fine", "image": fine_id})),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let mut own = connect(&host, "/websockets/v4/service/own").await;
    own.send(Message::text("1")).await.expect("send");
    assert_eq!(next_text(&mut own).await, "mine:1");
    let reply = send(
        host.request(Method::PUT, "/mcm/v1/containers/fine")
            .bearer_auth(TOKEN)
            .json(&json!({"image": image_id})),
    )
    .await;
    reply.assert_error(409);
    own.send(Message::text("2")).await.expect("send");
    assert_eq!(next_text(&mut own).await, "mine:2");
    assert_eq!(host.get("/fine/").await.body, "fine");

    // A drop-in mim that takes a served endpoint is logged and not started.
    mims.write("thief/index.js", "exports.get = () => ({body: 'thief'});");
    mims.write("thief/h.js", "exports.onMessage = () => 'stolen';");
    mims.write(
        "thief/t.websocket",
        r#"{"handler": "h", "endpoint": "own"}"#,
    );
    host.wait_for_log("is already used by container 'fine'", WAIT)
        .await;
    own.send(Message::text("3")).await.expect("send");
    assert_eq!(next_text(&mut own).await, "mine:3");
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_keeps_endpoint_sessions_and_they_reach_the_new_code() {
    let mims = endpoint_mims();
    let host = Host::start(&mims.path()).await;
    let mut ws = connect(&host, "/websockets/v4/service/recorded").await;
    ws.send(Message::text("version")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "v1");

    mims.write(
        "ep/handlers/recorder.js",
        &ENDPOINT_HANDLER.replace("return 'v1'", "return 'v2'"),
    );
    host.wait_for_log("reloaded from", WAIT).await;
    ws.send(Message::text("version")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "v2");
}

// ---------- outbound clients ----------

#[tokio::test(flavor = "multi_thread")]
async fn client_sends_queue_before_open_and_close_follows_them() {
    let upstream = Echo::start().await;
    let mims = driver_mims();
    let host = Host::start(&mims.path()).await;

    let id = create(
        &host,
        json!({"uri": upstream.uri(), "send": ["one", "two", "three"], "close": true}),
    )
    .await;
    upstream.wait_for("close:1000").await;
    assert_eq!(
        upstream.all()[..5],
        ["connect", "one", "two", "three", "close:1000"]
    );
    let log = wait_json(&host, "/driver/events", "onClose", |l| {
        kinds(&events_of(l, &id))
            .last()
            .is_some_and(|k| k == "close")
    })
    .await;
    let events = events_of(&log, &id);
    assert_eq!(kinds(&events).first().map(String::as_str), Some("open"));
    assert_eq!(events[0]["method"], "onopen");
    assert_eq!(events[0]["open"], true);
    let last = events.last().expect("close");
    assert_eq!(
        (last["method"].clone(), last["close"].clone()),
        (json!("onclose"), json!(true))
    );
    // A closed client leaves the list, and sending on it is a clear error.
    assert_eq!(get_json(&host, "/driver/clients").await, json!([]));
    assert_eq!(
        get_json(&host, &format!("/driver/client/{id}")).await,
        Value::Null
    );
    let (status, reply) = post_json(&host, &format!("/driver/send/{id}"), json!("late")).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .expect("error")
            .contains("is closed"),
        "{reply}"
    );
    // Outside an event sdk/net says so.
    assert_eq!(
        get_json(&host, "/driver/outside").await,
        json!({"method": null, "message": null, "error": null, "open": false, "msg": false, "err": false, "close": false})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_clients_relay_messages_and_are_listed_as_plain_data() {
    let upstream = Echo::start().await;
    let mims = driver_mims();
    let host = Host::start(&mims.path()).await;
    let id = create(&host, json!({"uri": upstream.uri()})).await;
    wait_json(&host, "/driver/events", "onOpen", |l| {
        !events_of(l, &id).is_empty()
    })
    .await;

    let clients = get_json(&host, "/driver/clients").await;
    assert_eq!(
        clients,
        json!([{"id": id, "uri": upstream.uri(), "handler": "client-handler"}])
    );
    let by_handler = get_json(&host, "/driver/by-handler/client-handler").await;
    assert_eq!(by_handler["id"], id.as_str());
    assert_eq!(
        get_json(&host, "/driver/by-handler/other").await,
        Value::Null
    );

    let sent = post_json(&host, &format!("/driver/send/{id}"), json!("ping")).await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    let log = wait_json(&host, "/driver/events", "the echo", |l| {
        events_of(l, &id).iter().any(|e| e["kind"] == "message")
    })
    .await;
    let message = events_of(&log, &id)
        .into_iter()
        .find(|e| e["kind"] == "message")
        .expect("message event")
        .clone();
    assert_eq!(message["message"], "\"ping\"");
    assert_eq!(
        (message["method"].clone(), message["msg"].clone()),
        (json!("onmessage"), json!(true))
    );
    // onMessage's return value is not sent back to a client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.count("ignored"), 0, "{:?}", upstream.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_clients_get_clear_errors_and_disturb_nothing() {
    let upstream = Echo::start().await;
    let mims = driver_mims();
    let host = Host::start(&mims.path()).await;

    // A refused port: onError with the reason, then onClose.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let id = create(
        &host,
        json!({"uri": format!("ws://127.0.0.1:{closed_port}/")}),
    )
    .await;
    let log = wait_json(&host, "/driver/events", "onClose", |l| {
        kinds(&events_of(l, &id)) == ["error", "close"]
    })
    .await;
    let error = &events_of(&log, &id)[0];
    assert!(
        error["error"]
            .as_str()
            .expect("error text")
            .contains("refused"),
        "{error}"
    );
    assert_eq!(
        (error["method"].clone(), error["err"].clone()),
        (json!("onerror"), json!(true))
    );

    // Bad URIs and a missing handler module are refused at once.
    for (body, wanted) in [
        (json!({"uri": "http://127.0.0.1/"}), "ws:// or wss://"),
        (json!({"uri": "not a uri"}), "ws:// or wss://"),
        (
            json!({"uri": upstream.uri(), "handler": "my-project/nope"}),
            "not found",
        ),
    ] {
        let (status, reply) = post_json(&host, "/driver/create", body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["error"].as_str().expect("error").contains(wanted),
            "{reply}"
        );
    }

    // A handler that throws is logged; the client stays open and keeps working.
    let id = create(
        &host,
        json!({"uri": upstream.uri(), "handler": "throwing-handler", "send": ["1", "2"]}),
    )
    .await;
    host.wait_for_log("boom from the handler", WAIT).await;
    let log = wait_json(&host, "/driver/events", "both messages", |l| {
        events_of(l, &id).len() == 2
    })
    .await;
    assert_eq!(events_of(&log, &id)[1]["message"], "2");
    let clients = get_json(&host, "/driver/clients").await;
    assert!(
        clients
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["id"] == id.as_str()),
        "{clients}"
    );

    // More than 256 clients: a clear error past the limit.
    let (_, reply) = post_json(
        &host,
        "/driver/many",
        json!({"uri": upstream.uri(), "n": 300}),
    )
    .await;
    assert_eq!(reply["ids"].as_array().expect("ids").len(), 255, "{reply}");
    assert!(
        reply["error"].as_str().expect("error").contains("256"),
        "{reply}"
    );
    let (_, left) = post_json(&host, "/driver/close-all", json!({})).await;
    assert_eq!(left["left"], 0);
    wait_json(&host, "/driver/events", "every close", |l| {
        l.as_array()
            .expect("log")
            .iter()
            .filter(|e| e["kind"] == "close")
            .count()
            >= 256
    })
    .await;
    // Room again.
    create(&host, json!({"uri": upstream.uri()})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_outlive_a_worker_restart_and_close_with_their_container() {
    let upstream = Echo::start().await;
    let mims = driver_mims();
    let host = Host::start(&mims.path()).await;
    let id = create(&host, json!({"uri": upstream.uri()})).await;
    wait_json(&host, "/driver/events", "onOpen", |l| {
        !events_of(l, &id).is_empty()
    })
    .await;

    // A runaway handler gets the worker killed and restarted.
    let spin = host.get("/driver/spin").await;
    assert_eq!(spin.status, 504, "{spin:?}");
    host.wait_for_log("worker restarted", WAIT).await;
    let clients = wait_json(
        &host,
        "/driver/clients",
        "the client after the restart",
        |c| c.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    assert_eq!(clients[0]["id"], id.as_str());
    let sent = post_json(
        &host,
        &format!("/driver/lookup-send/{id}"),
        json!("after restart"),
    )
    .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    let log = wait_json(
        &host,
        "/driver/events",
        "the new worker hears the client",
        |l| events_of(l, &id).iter().any(|e| e["kind"] == "message"),
    )
    .await;
    assert_eq!(events_of(&log, &id)[0]["message"], "\"after restart\"");
    assert_eq!(upstream.count("close"), 0, "{:?}", upstream.all());
    assert_eq!(upstream.count("connect"), 1);

    // Removing the container closes its clients (1001).
    std::fs::remove_dir_all(mims.path().join("driver")).expect("remove the mim");
    upstream.wait_for("close:1001").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_clients_trust_ssl_cert_file_and_refuse_other_certificates() {
    let (acceptor, ca_pem) = tls_server();
    let trusted = Echo::start_tls(Some(acceptor)).await;
    let (other_acceptor, _) = tls_server();
    let untrusted = Echo::start_tls(Some(other_acceptor)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let mims = driver_mims();
    let host = Host::start_with_env(
        &mims.path(),
        &[],
        &[("SSL_CERT_FILE", ca_file.to_str().expect("utf-8 path"))],
    )
    .await;

    let id = create(
        &host,
        json!({"uri": format!("wss://127.0.0.1:{}/", trusted.port), "send": ["secret"]}),
    )
    .await;
    let log = wait_json(&host, "/driver/events", "the echo over TLS", |l| {
        events_of(l, &id).iter().any(|e| e["kind"] == "message")
    })
    .await;
    assert_eq!(kinds(&events_of(&log, &id)), ["open", "message"]);
    assert_eq!(trusted.all()[..2], ["connect", "secret"]);

    let bad = create(
        &host,
        json!({"uri": format!("wss://127.0.0.1:{}/", untrusted.port)}),
    )
    .await;
    let log = wait_json(&host, "/driver/events", "the TLS failure", |l| {
        kinds(&events_of(l, &bad)) == ["error", "close"]
    })
    .await;
    let error = events_of(&log, &bad)[0]["error"]
        .as_str()
        .expect("error")
        .to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(untrusted.count("connect"), 0);
}

/// Open file descriptors and resident bytes of `pid`.
fn fds_and_rss(pid: i32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096;
    (fds, rss)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_clients_open_and_close_without_leaking() {
    let upstream = Echo::start().await;
    let mims = driver_mims();
    let host = Host::start(&mims.path()).await;
    let cycle = |n: usize, total: usize| {
        let host = &host;
        let uri = upstream.uri();
        async move {
            let (status, reply) = post_json(
                host,
                "/driver/many",
                json!({"uri": uri, "n": n, "close": true}),
            )
            .await;
            assert_eq!(status, 200, "{reply}");
            assert!(reply["error"].is_null(), "{reply}");
            wait_json(host, "/driver/clients", "all closed", |c| c == &json!([])).await;
            let closes = poll_until(WAIT, || {
                let fut = host.get("/driver/events");
                async move {
                    let log = fut.await.json();
                    let n = log
                        .as_array()
                        .map_or(0, |a| a.iter().filter(|e| e["kind"] == "close").count());
                    (n >= total).then_some(n)
                }
            })
            .await;
            assert!(closes.is_some(), "not every client closed");
        }
    };
    // Warm up (TLS roots, buffers, the handler), then measure around 1,000 more.
    cycle(100, 100).await;
    let pid = host.pid();
    let before = fds_and_rss(pid);
    for round in 1..=5 {
        cycle(200, 100 + 200 * round).await;
    }
    assert_eq!(upstream.count("close:1000"), 1100);
    let after = poll_until(WAIT, || {
        let now = fds_and_rss(pid);
        async move { (now.0 <= before.0 + 2).then_some(now) }
    })
    .await
    .unwrap_or_else(|| fds_and_rss(pid));
    eprintln!(
        "1,000 clients: fds {} -> {}, rss {} KiB -> {} KiB",
        before.0,
        after.0,
        before.1 / 1024,
        after.1 / 1024
    );
    assert!(after.0 <= before.0 + 2, "fds grew: {before:?} -> {after:?}");
    assert!(
        after.1 <= before.1 + 16 * 1024 * 1024,
        "rss grew by more than 16 MiB: {before:?} -> {after:?}"
    );
}

// ---------- the relay example ----------

/// The repository's `mims/<name>` copied into `mims`.
fn copy_repo_mim(mims: &Mims, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mims")
        .join(name);
    for entry in std::fs::read_dir(&dir).expect("read the repo mim") {
        let entry = entry.expect("entry");
        let text = std::fs::read_to_string(entry.path()).expect("read");
        mims.write(
            &format!("{name}/{}", entry.file_name().to_string_lossy()),
            &text,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_example_relays_both_ways() {
    let upstream = Echo::start().await;
    let mims = Mims::new();
    copy_repo_mim(&mims, "relay");
    mims.write(
        "relay/mim.json",
        &support::mim_json(&[("RELAY_TARGET", &upstream.uri())]),
    );
    let host = Host::start(&mims.path()).await;
    let mut ws = connect(&host, "/websockets/v4/service/relay").await;
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(&mut ws).await, text);
    }
    assert_eq!(upstream.all()[..3], ["connect", "one", "two"]);
    ws.close(None).await.expect("close");
    upstream.wait_for("close:1000").await;

    // Without RELAY_TARGET the relay talks to its own echo endpoint.
    mims.write("relay/mim.json", "{}");
    host.wait_for_log("reloaded from", WAIT).await;
    let mut ws = connect(&host, "/websockets/v4/service/relay").await;
    ws.send(Message::text("round trip")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "round trip");
}

// ---------- images ----------

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, text.as_bytes())
            .expect("append");
    }
    builder.into_inner().expect("tar")
}

async fn upload(host: &Host, name: &str, tar: &[u8]) -> String {
    let boundary = "----dirigible-test";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}.tar\"\r\nContent-Type: application/x-tar\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(tar);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = send(
        host.request(Method::POST, "/mcm/v1/images")
            .bearer_auth(TOKEN)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.json()["id"].as_str().expect("image id").to_string()
}
