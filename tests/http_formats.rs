//! HTTP through every module format (SPEC 3, 4): route style, mimik bundles,
//! CommonJS controllers, ES modules and `require`; both request shapes;
//! routing by base path; 404/500/413/504; streaming; async handlers; logs.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::{loose_string, mim_json, send, serve, Host, Mims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route-style mim that echoes the `request` object it gets.
const ROUTES: &str = r#"
function describe(request) {
  return JSON.stringify({
    method: request.method, url: request.url, path: request.path,
    params: request.params, query: request.query, headers: request.headers,
    body: request.body, authorization: request.authorization,
  });
}
app.get('/users/:id', (request, response) => {
  response.setHeader('X-Route', 'users');
  response.end(describe(request));
});
app.post('/users/:id/notes', (request, response) => {
  response.statusCode = 201;
  response.end(describe(request));
});
app.put('/verb', (request, response) => response.end('put'));
app.patch('/verb', (request, response) => response.end('patch'));
app.delete('/verb', (request, response) => response.end('delete'));
app.all('/any', (request, response) => response.end('all:' + request.method));
app.get('/files/*', (request, response) => response.end('wild:' + request.url));
app.get('/context', (request, response) => response.end(typeof context.storage.getItem));
"#;

/// A controller-style mim that echoes the Enonic `req` object it gets.
const CONTROLLER: &str = r#"
exports.get = (req) => ({
  body: {
    method: req.method, scheme: req.scheme, host: req.host, port: req.port,
    path: req.path, url: req.url, params: req.params, headers: req.headers,
    cookies: req.cookies, body: req.body, remoteAddress: req.remoteAddress,
    webSocket: req.webSocket,
  },
});
exports.post = (req) => ({ status: 201, headers: { 'X-Ctl': 'yes' }, body: req.params });
exports.put = () => ({ body: 'plain', contentType: 'text/plain' });
exports.delete = () => ({ body: [1, 2, 3] });
"#;

/// A mim answering `POST /size/` with the length of the body it got.
const SIZE: &str =
    "app.post('/', (request, response) => response.end(String(request.body.length)));";

/// `headers[name]` looked up case-insensitively, as a string.
fn header_field<'a>(headers: &'a Value, name: &str) -> &'a str {
    headers
        .as_object()
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {name} in {headers}"))
}

/// Asserts that a route-style `request.query` holds `key=value`, whether the
/// host gives it as an object or as the raw query string.
#[track_caller]
fn assert_query_has(query: &Value, key: &str, value: &str) {
    match query {
        Value::Object(map) => assert_eq!(map.get(key), Some(&json!(value)), "query {query}"),
        Value::String(raw) => assert!(raw.contains(&format!("{key}={value}")), "query {query}"),
        other => panic!("request.query is neither object nor string: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn route_style_request_shape() {
    let (_mims, host) = serve(&[("routes/index.js", ROUTES)]).await;

    let reply = send(
        host.request(Method::GET, "/routes/users/42?page=1")
            .header("X-Custom-Header", "Mixed")
            .header("Authorization", "Bearer secret-abc"),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-route"), "users");
    let request = reply.json();
    assert_eq!(request["method"], "GET");
    assert_eq!(request["url"], "/users/42?page=1");
    let path = request["path"].as_str().expect("path is a string");
    assert!(
        path.ends_with("/users/42") && !path.contains('?'),
        "path {path}"
    );
    assert_eq!(request["params"]["id"], "42");
    assert_query_has(&request["query"], "page", "1");
    assert_eq!(request["headers"]["x-custom-header"], "Mixed");
    let headers = request["headers"].as_object().expect("headers object");
    assert!(
        headers.keys().all(|k| *k == k.to_lowercase()),
        "header keys not lower case: {headers:?}"
    );
    let authorization = request["authorization"].as_str().unwrap_or_default();
    assert!(
        authorization.contains("secret-abc"),
        "authorization {authorization:?}"
    );
    assert!(
        request["body"].is_string(),
        "body of a GET: {}",
        request["body"]
    );

    let reply = send(
        host.request(Method::POST, "/routes/users/7/notes")
            .header("Content-Type", "application/json")
            .body(r#"{"note":"hi"}"#),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let request = reply.json();
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], "/users/7/notes");
    assert_eq!(request["params"]["id"], "7");
    assert_eq!(
        request["body"], r#"{"note":"hi"}"#,
        "body must be the raw string"
    );
    assert_eq!(request["headers"]["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_style_methods_wildcard_context_and_unknown_route() {
    let (_mims, host) = serve(&[("routes/index.js", ROUTES)]).await;

    for (method, body) in [
        (Method::PUT, "put"),
        (Method::PATCH, "patch"),
        (Method::DELETE, "delete"),
    ] {
        send(host.request(method, "/routes/verb"))
            .await
            .assert_ok(body);
    }
    host.get("/routes/any").await.assert_ok("all:GET");
    send(host.request(Method::PATCH, "/routes/any"))
        .await
        .assert_ok("all:PATCH");
    host.get("/routes/files/a/b.txt")
        .await
        .assert_ok("wild:/files/a/b.txt");
    host.get("/routes/context").await.assert_ok("function");

    host.get("/routes/no/such/route").await.assert_error(404);
    host.post("/routes/verb", "").await.assert_error(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn mimik_bundle_gets_context_request_and_response() {
    let bundle = r#"
mimikModule.exports = (context, request, response) => {
  response.setHeader('Content-Type', 'application/json');
  response.statusCode = 202;
  response.end(JSON.stringify({
    method: request.method, url: request.url, body: request.body,
    query: request.query, agent: request.headers['x-agent'],
    greeting: context.env.GREETING,
  }));
};
"#;
    let (_mims, host) = serve(&[
        ("bundle/index.js", bundle),
        ("bundle/mim.json", &mim_json(&[("GREETING", "hi")])),
    ])
    .await;

    let reply = send(
        host.request(Method::POST, "/bundle/things?x=1")
            .header("X-Agent", "tests")
            .body("hello"),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert!(reply.header("content-type").starts_with("application/json"));
    let request = reply.json();
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], "/things?x=1");
    assert_eq!(request["body"], "hello");
    assert_query_has(&request["query"], "x", "1");
    assert_eq!(request["agent"], "tests");
    assert_eq!(request["greeting"], "hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_request_shape_and_json_bodies() {
    let (_mims, host) = serve(&[("ctl/index.js", CONTROLLER)]).await;

    let reply = send(
        host.request(Method::GET, "/ctl/items?color=red")
            .header("Cookie", "a=1; b=two")
            .header("X-Custom", "yes"),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.header("content-type").starts_with("application/json"),
        "{reply:?}"
    );
    let req = reply.json();
    assert_eq!(req["method"], "GET");
    assert_eq!(req["scheme"], "http");
    assert_eq!(req["host"], "127.0.0.1");
    assert_eq!(loose_string(&req["port"]), host.port().to_string());
    let path = req["path"].as_str().expect("path is a string");
    assert!(path.ends_with("/items"), "path {path}");
    let url = req["url"].as_str().expect("url is a string");
    let absolute = format!("http://127.0.0.1:{}/ctl/items", host.port());
    assert!(url.starts_with(&absolute), "url {url} is not absolute");
    assert_eq!(req["params"]["color"], "red");
    assert_eq!(header_field(&req["headers"], "x-custom"), "yes");
    assert_eq!(req["cookies"], json!({"a": "1", "b": "two"}));
    assert!(req["body"].is_string(), "body {}", req["body"]);
    assert_eq!(req["remoteAddress"], "127.0.0.1");
    assert_eq!(req["webSocket"], false);

    let reply = send(host.request(Method::DELETE, "/ctl/items")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "[1,2,3]"));
    assert!(reply.header("content-type").starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_form_params_content_type_and_fallbacks() {
    let all = r#"
module.exports = {
  get: () => ({ body: 'get' }),
  all: (req) => ({ body: 'all:' + req.method }),
};
"#;
    let get_only = "exports.get = () => ({ body: 'only-get' });";
    let (_mims, host) = serve(&[
        ("ctl/index.js", CONTROLLER),
        ("ctlall/index.js", all),
        ("ctlget/index.js", get_only),
    ])
    .await;

    let reply = send(
        host.request(Method::POST, "/ctl/form?q=1")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("name=ann&age=3"),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.header("x-ctl"), "yes");
    assert_eq!(reply.json(), json!({"q": "1", "name": "ann", "age": "3"}));

    let reply = send(host.request(Method::PUT, "/ctl/x")).await;
    reply.assert_ok("plain");
    assert!(reply.header("content-type").starts_with("text/plain"));

    host.get("/ctlall/x").await.assert_ok("get");
    send(host.request(Method::PATCH, "/ctlall/x"))
        .await
        .assert_ok("all:PATCH");
    host.get("/ctlget/x").await.assert_ok("only-get");
    host.post("/ctlget/x", "").await.assert_error(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn es_modules_import_sibling_files() {
    let index = r#"
import { greet } from './lib.js';
export function get(req) { return { body: greet(req.params.name) }; }
export async function post(req) { await null; return { status: 202, body: { echoed: req.body } }; }
"#;
    let lib = "export function greet(name) { return 'hello ' + name; }";
    let (_mims, host) = serve(&[("esm/index.js", index), ("esm/lib.js", lib)]).await;

    host.get("/esm/x?name=bob").await.assert_ok("hello bob");
    let reply = host.post("/esm/x", "hi").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json(), json!({"echoed": "hi"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn require_loads_relative_files() {
    let index = r#"
const { double } = require('./util');
const helper = require('./sub/helper.js');
exports.get = () => ({ body: helper.wrap(String(double(21))) });
"#;
    let (_mims, host) = serve(&[
        ("req/index.js", index),
        ("req/util.js", "exports.double = (n) => n * 2;"),
        (
            "req/sub/helper.js",
            "const marks = require('./marks');\nmodule.exports = { wrap: (s) => marks.open + s + marks.close };",
        ),
        ("req/sub/marks.js", "module.exports = { open: '<', close: '>' };"),
    ])
    .await;

    host.get("/req/").await.assert_ok("<42>");
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_order_app_then_mimik_then_exports() {
    let app_mimik_exports = r#"
app.get('/route', (request, response) => response.end('app'));
mimikModule.exports = (context, request, response) => response.end('mimik:' + request.url);
exports.get = () => ({ body: 'exports' });
"#;
    let app_exports = r#"
app.get('/route', (request, response) => response.end('app'));
exports.get = () => ({ body: 'exports-get' });
exports.all = (req) => ({ body: 'exports-all:' + req.method });
"#;
    let (_mims, host) = serve(&[
        ("first/index.js", app_mimik_exports),
        ("second/index.js", app_exports),
    ])
    .await;

    host.get("/first/route").await.assert_ok("app");
    host.get("/first/other").await.assert_ok("mimik:/other");
    host.get("/second/route").await.assert_ok("app");
    host.get("/second/other").await.assert_ok("exports-get");
    send(host.request(Method::DELETE, "/second/other"))
        .await
        .assert_ok("exports-all:DELETE");
}

#[tokio::test(flavor = "multi_thread")]
async fn base_paths_single_file_override_and_longest_match() {
    let echo = |name: &str| {
        format!("mimikModule.exports = (c, request, response) => response.end('{name}:' + request.url);")
    };
    let (_mims, host) = serve(&[
        (
            "solo.js",
            "app.get('/hi', (request, response) => response.end('solo'));",
        ),
        ("api/index.js", &echo("api")),
        (
            "api/mim.json",
            &mim_json(&[("MCM.BASE_API_PATH", "/my-mim/v1")]),
        ),
        ("outer/index.js", &echo("outer")),
        (
            "outer/mim.json",
            &mim_json(&[("MCM.BASE_API_PATH", "/shared")]),
        ),
        ("inner/index.js", &echo("inner")),
        (
            "inner/mim.json",
            &mim_json(&[("MCM.BASE_API_PATH", "/shared/deep")]),
        ),
    ])
    .await;

    host.get("/solo/hi").await.assert_ok("solo");
    host.get("/my-mim/v1/ping").await.assert_ok("api:/ping");
    host.get("/api/ping").await.assert_error(404);
    host.get("/shared/deep/x").await.assert_ok("inner:/x");
    host.get("/shared/x").await.assert_ok("outer:/x");
    host.get("/shared/deeper").await.assert_ok("outer:/deeper");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_become_500_json_and_the_container_keeps_serving() {
    let routes = r#"
app.get('/throw', () => { throw new Error('boom-sync'); });
app.get('/async-throw', async () => { await null; throw new Error('boom-async'); });
app.get('/reject', () => Promise.reject(new Error('boom-reject')));
app.get('/ok', (request, response) => response.end('still-ok'));
"#;
    let controller = r#"
exports.get = () => { throw new Error('boom-ctl'); };
exports.post = async () => { throw new Error('boom-ctl-async'); };
"#;
    let (_mims, host) = serve(&[("boom/index.js", routes), ("ctlboom/index.js", controller)]).await;

    for (path, message) in [
        ("/boom/throw", "boom-sync"),
        ("/boom/async-throw", "boom-async"),
        ("/boom/reject", "boom-reject"),
        ("/ctlboom/x", "boom-ctl"),
    ] {
        let got = host.get(path).await.assert_error(500);
        assert!(got.contains(message), "{path}: message {got:?}");
        host.get("/boom/ok").await.assert_ok("still-ok");
    }
    let got = host.post("/ctlboom/x", "").await.assert_error(500);
    assert!(got.contains("boom-ctl-async"), "message {got:?}");
    host.wait_for_log("boom-sync", Duration::from_secs(5)).await;

    host.get("/nowhere/at/all").await.assert_error(404);
    // `/` is the web console's page, not a container's 404 (tests/logs.rs covers it).
    assert!(host.get("/").await.body.contains("mimhost console"));
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_max_body_is_413() {
    let mims = Mims::from_files(&[("size/index.js", SIZE)]);
    let host = Host::start_with(&mims.path(), &["--max-body", "1024"]).await;

    host.post("/size/", "x".repeat(1024))
        .await
        .assert_ok("1024");
    host.post("/size/", "x".repeat(1025))
        .await
        .assert_error(413);
    host.post("/size/", "x".repeat(10)).await.assert_ok("10");
}

#[tokio::test(flavor = "multi_thread")]
async fn default_body_limit_is_10_mib() {
    const LIMIT: usize = 10 * 1024 * 1024;
    let (_mims, host) = serve(&[("size/index.js", SIZE)]).await;

    host.post("/size/", "x".repeat(LIMIT))
        .await
        .assert_ok(&LIMIT.to_string());
    assert_eq!(raw_post_status(host.addr(), "/size/", LIMIT + 1).await, 413);
    host.post("/size/", "small").await.assert_ok("5");
}

/// POSTs `len` bytes to `path` over a raw socket and returns the answer's
/// status code. The body is written concurrently and write errors are
/// ignored, so a host that answers 413 and closes early is read correctly.
async fn raw_post_status(addr: &str, path: &str, len: usize) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let body_writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        writer.write_all(head.as_bytes()).await?;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            left -= n;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_head)
        .await
        .expect("an answer to the oversized POST");
    body_writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {text:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn write_streams_chunks_before_end() {
    let stream = r#"
app.get('/chunks', (request, response) => {
  response.setHeader('Content-Type', 'text/plain');
  response.write('a');
  setTimeout(() => response.end('b'), 300);
});
app.get('/many', (request, response) => {
  response.write('1');
  response.write('2');
  response.end();
});
"#;
    let (_mims, host) = serve(&[("stream/index.js", stream)]).await;

    let mut response = host
        .request(Method::GET, "/stream/chunks")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let first = response
        .chunk()
        .await
        .expect("read")
        .expect("a first chunk");
    let first_at = Instant::now();
    assert_eq!(
        &first[..],
        b"a",
        "the first chunk must be the write() alone"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("read") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"b");
    let gap = first_at.elapsed();
    assert!(
        gap >= Duration::from_millis(150),
        "'a' arrived only {gap:?} before the end: not streamed"
    );

    let reply = host.get("/stream/many").await;
    reply.assert_ok("12");
    assert_eq!(reply.header("transfer-encoding"), "chunked");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_handlers_timers_and_promises() {
    let routes = r#"
app.get('/timeout', (request, response) => { setTimeout(() => response.end('timer'), 50); });
app.get('/await', async (request, response) => {
  const value = await new Promise((resolve) => setTimeout(() => resolve('awaited'), 20));
  response.end(value);
});
app.get('/then', (request, response) => Promise.resolve('then').then((v) => response.end(v)));
app.get('/immediate', (request, response) => {
  setImmediate(() => queueMicrotask(() => response.end('immediate')));
});
app.get('/interval', (request, response) => {
  let ticks = 0;
  const id = setInterval(() => {
    ticks += 1;
    if (ticks === 3) { clearInterval(id); response.end('ticks:' + ticks); }
  }, 10);
});
app.get('/cleared', (request, response) => {
  const id = setTimeout(() => response.end('too-early'), 10);
  clearTimeout(id);
  setTimeout(() => response.end('cleared'), 40);
});
"#;
    let controller = r#"
exports.get = async () => {
  await new Promise((resolve) => setTimeout(resolve, 20));
  return { body: { done: true, n: 2 } };
};
"#;
    let (_mims, host) = serve(&[
        ("timers/index.js", routes),
        ("asyncctl/index.js", controller),
    ])
    .await;

    for (path, body) in [
        ("/timers/timeout", "timer"),
        ("/timers/await", "awaited"),
        ("/timers/then", "then"),
        ("/timers/immediate", "immediate"),
        ("/timers/interval", "ticks:3"),
        ("/timers/cleared", "cleared"),
        ("/asyncctl/", r#"{"done":true,"n":2}"#),
    ] {
        host.get(path).await.assert_ok(body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_that_never_ends_gets_504() {
    let routes = r#"
app.get('/hang', () => {});
app.get('/pending', () => new Promise(() => {}));
app.get('/ok', (request, response) => response.end('ok'));
"#;
    let (_mims, host) = serve(&[("never/index.js", routes)]).await;

    for path in ["/never/hang", "/never/pending"] {
        let started = Instant::now();
        let reply = host.get(path).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{path}: {reply:?}");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
            "{path}: 504 after {took:?}, handler timeout is 2s"
        );
        host.get("/never/ok").await.assert_ok("ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_and_log_reach_stderr_with_the_container_name() {
    let routes = r#"
app.get('/log', (request, response) => {
  console.log('console-marker-7431');
  log.info('log-info-marker-7432');
  response.end('logged');
});
"#;
    let (_mims, host) = serve(&[("chatty/index.js", routes)]).await;

    host.get("/chatty/log").await.assert_ok("logged");
    for marker in ["console-marker-7431", "log-info-marker-7432"] {
        host.wait_for_log_line(
            &format!("{marker} with the container name"),
            Duration::from_secs(5),
            |line| line.contains(marker) && line.contains("chatty"),
        )
        .await;
    }
}
