//! Outbound HTTP from mims (SPEC 7): `context.http.request` in its three modes,
//! `outputFile` and `deleteFile`, `fetch`, `context.ml`, against real upstreams on
//! loopback (plain, chunked, server-sent events, redirects, stalls, errors, TLS with
//! a CA given through `SSL_CERT_FILE` and without it), plus a mimik `mim-v1`-style
//! webpack bundle that streams a chat completion through.

#[path = "support/mod.rs"]
mod support;
#[path = "outbound_http/upstream.rs"]
mod upstream;

use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Host, Mims};
use upstream::Upstream;

/// A route-style mim exposing `context.http.request`, `fetch`, `context.ml` and
/// `deleteFile` to the tests; `/call` answers with every callback it saw.
const OUT_MIM: &str = r#"
function run(opts, res) {
  var events = [];
  function finish() { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(events)); }
  opts.success = function (r) { events.push({ success: r }); if (r.done !== false) finish(); };
  opts.error = function (e) { events.push({ error: e }); finish(); };
  context.http.request(opts);
}
app.post('/call', function (req, res) {
  var o = JSON.parse(req.body);
  if (o.bigData) o.data = new Array(o.bigData + 1).join('y');
  if (o.undefinedHeader) { o.headers = o.headers || {}; o.headers['x-undefined'] = undefined; o.headers['x-null'] = null; }
  run(o, res);
});
app.get('/relay', function (req, res) {
  context.http.request({
    url: req.query.url, mode: 'stream',
    success: function (r) {
      if (r.done) { res.end(); return; }
      if (r.status !== undefined) { res.statusCode = r.status; res.setHeader('content-type', r.headers['content-type'] || 'text/plain'); }
      res.write(r.data);
    },
    error: function (e) { res.statusCode = 502; res.end(JSON.stringify(e)); }
  });
});
app.post('/fetch', async function (req, res) {
  var o = JSON.parse(req.body);
  try {
    var r = await fetch(o.url, o.init);
    var body = o.json ? await r.json() : await r.text();
    res.json({ ok: r.ok, status: r.status, statusText: r.statusText, type: r.headers.get('Content-Type'),
               missing: r.headers.get('x-nope'), body: body });
  } catch (e) { res.json({ rejected: String(e.message) }); }
});
app.get('/ml', function (req, res) {
  context.ml.chatCompletions({ model: 'x', messages: [], error: function (e) {
    context.ml.embeddings({ input: 'x', error: function (e2) { res.json({ chat: e.message, embeddings: e2.message }); } });
  } });
});
app.post('/delete', function (req, res) { context.storage.deleteFile(req.body); res.end('deleted'); });
app.post('/many', function (req, res) {
  var n = Number(req.query.n), done = 0, ok = 0;
  for (var i = 0; i < n; i++) context.http.request({ url: req.body,
    success: function () { ok++; if (++done === n) res.json({ ok: ok }); },
    error: function () { if (++done === n) res.json({ ok: ok }); } });
});
app.post('/late', function (req, res) {
  context.http.request({ url: req.body, success: function (r) { context.storage.setItem('late', r.data); } });
  res.end('started');
});
app.get('/late', function (req, res) { res.end(String(context.storage.getItem('late'))); });
app.get('/spin', function () { while (true) {} });
"#;

async fn host_with(extra: &[&str]) -> (Mims, Host) {
    let mims = Mims::from_files(&[("out/index.js", OUT_MIM)]);
    let host = Host::start_with(&mims.path(), extra).await;
    (mims, host)
}

/// Calls `/out/call` with `options` and returns the callbacks the mim saw.
async fn call(host: &Host, options: Value) -> Vec<Value> {
    let reply = host.post("/out/call", options.to_string()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
        .json()
        .as_array()
        .cloned()
        .expect("a list of callbacks")
}

/// The single `error` callback of `events`, or a panic showing them.
fn only_error(events: &[Value]) -> &Value {
    match events {
        [e] if e.get("error").is_some() => &e["error"],
        other => panic!("expected one error callback, got {other:?}"),
    }
}

fn only_success(events: &[Value]) -> &Value {
    match events {
        [e] if e.get("success").is_some() => &e["success"],
        other => panic!("expected one success callback, got {other:?}"),
    }
}

#[tokio::test]
async fn default_mode_answers_once_with_data_status_and_lower_case_headers() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let events = call(&host, json!({ "url": up.url("/plain") })).await;
    let ok = only_success(&events);
    assert_eq!(ok["data"], "hello from upstream");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["headers"]["content-type"], "text/plain");
    assert!(ok.get("done").is_none(), "{ok}");
}

#[tokio::test]
async fn data_headers_and_authorization_are_sent_as_spec_7_says() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    // An object is sent as JSON with a content type; undefined/null headers are skipped;
    // authorization is sent as given.
    let events = call(
        &host,
        json!({ "url": up.url("/echo"), "type": "post", "data": {"a": 1, "b": [true]},
                "headers": {"X-One": "1"}, "authorization": "Token abc", "undefinedHeader": true }),
    )
    .await;
    let echoed: Value =
        serde_json::from_str(only_success(&events)["data"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body"], r#"{"a":1,"b":[true]}"#);
    assert_eq!(echoed["headers"]["content-type"], "application/json");
    assert_eq!(echoed["headers"]["authorization"], "Token abc");
    assert_eq!(echoed["headers"]["x-one"], "1");
    assert!(echoed["headers"].get("x-undefined").is_none(), "{echoed}");
    assert!(echoed["headers"].get("x-null").is_none(), "{echoed}");
    // A string is sent as is; a content type the mim sets is kept (and not doubled).
    let events = call(
        &host,
        json!({ "url": up.url("/echo"), "type": "PUT", "data": {"x": 1},
                "headers": {"Content-Type": "application/vnd.test+json"} }),
    )
    .await;
    let echoed: Value =
        serde_json::from_str(only_success(&events)["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["headers"]["content-type"],
        "application/vnd.test+json"
    );
    assert_eq!(echoed["contentTypes"], 1);
    let events = call(
        &host,
        json!({ "url": up.url("/echo"), "type": "POST", "data": "raw text" }),
    )
    .await;
    let echoed: Value =
        serde_json::from_str(only_success(&events)["data"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["body"], "raw text");
}

#[tokio::test]
async fn stream_mode_gives_chunks_with_the_head_on_the_first_then_done() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let events = call(
        &host,
        json!({ "url": up.url("/chunked"), "mode": "stream" }),
    )
    .await;
    assert!(events.len() >= 2, "{events:?}");
    let first = &events[0]["success"];
    assert_eq!(first["done"], false);
    assert_eq!(first["status"], 200);
    assert_eq!(first["headers"]["content-type"], "text/plain");
    for later in &events[1..events.len() - 1] {
        assert_eq!(later["success"]["done"], false, "{events:?}");
        assert!(later["success"].get("status").is_none(), "{events:?}");
        assert!(later["success"].get("headers").is_none(), "{events:?}");
    }
    assert_eq!(events.last().unwrap()["success"], json!({ "done": true }));
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| e["success"]["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "one two three");
    // A plain (content-length) answer in stream mode comes as one success, no `done`.
    let events = call(&host, json!({ "url": up.url("/plain"), "mode": "stream" })).await;
    let ok = only_success(&events);
    assert_eq!(ok["data"], "hello from upstream");
    assert!(ok.get("done").is_none(), "{ok}");
    // In the default mode a chunked answer is one success.
    let events = call(&host, json!({ "url": up.url("/chunked") })).await;
    assert_eq!(only_success(&events)["data"], "one two three");
}

#[tokio::test]
async fn a_streamed_upstream_reaches_the_client_before_the_upstream_finishes() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&["--handler-timeout", "10s"]).await;
    let url = host.url(&format!("/out/relay?url={}", up.url("/sse")));
    let client = reqwest::Client::new();
    let mut response = client.get(url).send().await.expect("relay answers");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = response
        .chunk()
        .await
        .expect("read")
        .expect("a first chunk");
    let first_at = Instant::now();
    assert!(
        String::from_utf8_lossy(&first).contains(r#"data: {"n":1}"#),
        "{first:?}"
    );
    let mut rest = Vec::new();
    while let Some(c) = response.chunk().await.expect("read") {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains(r#"{"n":3}"#) && rest.contains("[DONE]"),
        "{rest}"
    );
    let events = up.record.events.lock().unwrap().clone();
    let last_sent = events.last().expect("the upstream sent events").1;
    assert!(
        first_at < last_sent,
        "the client got the first event {:?} after the upstream sent the last",
        first_at - last_sent
    );
}

#[tokio::test]
async fn redirects_are_followed_up_to_ten_and_not_in_proxy_mode() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let events = call(&host, json!({ "url": up.url("/redirect/3") })).await;
    assert_eq!(only_success(&events)["data"], "landed after GET");
    // 302 after a POST continues as GET.
    let events = call(
        &host,
        json!({ "url": up.url("/redirect/1"), "type": "POST", "data": "x" }),
    )
    .await;
    assert_eq!(only_success(&events)["data"], "landed after GET");
    let events = call(&host, json!({ "url": up.url("/redirect/10") })).await;
    only_success(&events);
    let events = call(&host, json!({ "url": up.url("/redirect/11") })).await;
    let error = only_error(&events);
    assert!(
        error["message"].as_str().unwrap().contains("redirects"),
        "{error}"
    );
    let events = call(
        &host,
        json!({ "url": up.url("/redirect/3"), "mode": "proxy" }),
    )
    .await;
    let ok = only_success(&events);
    assert_eq!(ok["status"], 302);
    assert_eq!(ok["headers"]["location"], "/redirect/2");
}

#[tokio::test]
async fn an_answer_of_400_and_above_is_an_error_with_status_content_and_headers() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let events = call(&host, json!({ "url": up.url("/status/404") })).await;
    let error = only_error(&events);
    assert_eq!(error["status"], 404);
    assert_eq!(error["content"], "not here");
    assert_eq!(error["headers"]["x-why"], "testing");
    assert!(
        error["message"].as_str().unwrap().contains("404"),
        "{error}"
    );
}

#[tokio::test]
async fn no_answer_is_an_error_with_a_message_only() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    // Refused port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let events = call(
        &host,
        json!({ "url": format!("http://127.0.0.1:{port}/x") }),
    )
    .await;
    let error = only_error(&events);
    assert!(error.get("status").is_none(), "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{error}"
    );
    // Stalls: nothing after the request, and a body that stops half way.
    for path in ["/stall-head", "/stall-body"] {
        let started = Instant::now();
        let events = call(&host, json!({ "url": up.url(path), "socketTimeout": 300 })).await;
        let error = only_error(&events);
        assert!(
            error["message"].as_str().unwrap().contains("socketTimeout"),
            "{path}: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // The host still answers.
    only_success(&call(&host, json!({ "url": up.url("/plain") })).await);
}

#[tokio::test]
async fn bad_urls_and_headers_are_errors_and_nothing_is_sent() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    for url in [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "not a url",
        "/relative",
    ] {
        let events = call(&host, json!({ "url": url })).await;
        let error = only_error(&events);
        assert!(
            error["message"].as_str().unwrap().contains("URL"),
            "{url}: {error}"
        );
    }
    for headers in [
        json!({ "x-bad": "a\r\nInjected: 1" }),
        json!({ "x-bad": "a\nb" }),
        json!({ "x-bad\r\nInjected": "1" }),
    ] {
        let events = call(&host, json!({ "url": up.url("/echo"), "headers": headers })).await;
        let error = only_error(&events);
        assert!(
            error["message"].as_str().unwrap().contains("CR or LF"),
            "{error}"
        );
    }
    let events = call(
        &host,
        json!({ "url": up.url("/echo"), "authorization": "Bearer x\r\nEvil: 1" }),
    )
    .await;
    only_error(&events);
    assert_eq!(up.requests(), 0, "a request reached the upstream");
}

#[tokio::test]
async fn bodies_over_the_limit_are_errors() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&["--max-body", "65536"]).await;
    let events = call(&host, json!({ "url": up.url("/big/100000") })).await;
    let error = only_error(&events);
    assert!(
        error["message"].as_str().unwrap().contains("limit"),
        "{error}"
    );
    let events = call(
        &host,
        json!({ "url": up.url("/big/1000"), "mode": "stream" }),
    )
    .await;
    assert_eq!(only_success(&events)["data"].as_str().unwrap().len(), 1000);
    // A request body over the limit is not sent.
    let events = call(
        &host,
        json!({ "url": up.url("/echo"), "type": "POST", "bigData": 70_000 }),
    )
    .await;
    let error = only_error(&events);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("nothing was sent"),
        "{error}"
    );
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn output_file_writes_into_the_file_area_and_delete_file_removes_it() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let events = call(
        &host,
        json!({ "url": up.url("/plain"), "outputFile": "downloads/a.txt" }),
    )
    .await;
    let ok = only_success(&events);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outputFile"], "downloads/a.txt");
    assert_eq!(ok["size"], 19);
    assert!(ok.get("data").is_none(), "{ok}");
    let file = host.data_dir().join("files/out/downloads/a.txt");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from upstream"
    );
    for bad in ["../escape.txt", "/tmp/abs.txt", "a/../../b", ""] {
        let events = call(&host, json!({ "url": up.url("/plain"), "outputFile": bad })).await;
        let error = only_error(&events);
        assert!(
            error["message"].as_str().unwrap().contains("outputFile"),
            "{bad:?}: {error}"
        );
    }
    assert!(!host.data_dir().join("files/escape.txt").exists());
    std::fs::write(host.data_dir().join("keep.txt"), "precious").unwrap();
    let reply = host.post("/out/delete", "../../keep.txt").await;
    assert!(reply.assert_error(500).contains("file area"), "{reply:?}");
    assert!(host.data_dir().join("keep.txt").exists());
    host.post("/out/delete", "downloads/a.txt")
        .await
        .assert_ok("deleted");
    support::poll_until(Duration::from_secs(5), || {
        let gone = (!file.exists()).then_some(());
        async move { gone }
    })
    .await
    .expect("deleteFile removes the file");
}

#[tokio::test]
async fn fetch_resolves_for_any_answer_and_rejects_without_one() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    let fetch = |body: Value| host.post("/out/fetch", body.to_string());
    let r = fetch(json!({ "url": up.url("/plain") })).await.json();
    assert_eq!(
        r,
        json!({ "ok": true, "status": 200, "statusText": "OK", "type": "text/plain", "missing": null, "body": "hello from upstream" })
    );
    let r = fetch(json!({ "url": up.url("/json"), "json": true }))
        .await
        .json();
    assert_eq!(r["body"], json!({ "answer": 42 }));
    let r = fetch(json!({ "url": up.url("/status/404") })).await.json();
    assert_eq!(
        (r["ok"].clone(), r["status"].clone(), r["body"].clone()),
        (json!(false), json!(404), json!("not here"))
    );
    let r = fetch(json!({ "url": up.url("/echo"), "init": { "method": "POST", "headers": { "X-Fetch": "yes" }, "body": "payload" } })).await.json();
    let echoed: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            echoed["method"].clone(),
            echoed["body"].clone(),
            echoed["headers"]["x-fetch"].clone()
        ),
        (json!("POST"), json!("payload"), json!("yes"))
    );
    let r = fetch(json!({ "url": "http://127.0.0.1:1/" })).await.json();
    assert!(
        r["rejected"].as_str().unwrap().contains("fetch failed"),
        "{r}"
    );
    let r = fetch(json!({ "url": "gopher://x/" })).await.json();
    assert!(r["rejected"].is_string(), "{r}");
}

#[tokio::test]
async fn context_ml_is_present_and_says_local_models_are_not_offered() {
    let (_m, host) = host_with(&[]).await;
    let r = host.get("/out/ml").await.json();
    for key in ["chat", "embeddings"] {
        assert!(r[key].as_str().unwrap().contains("not offered"), "{r}");
    }
}

#[tokio::test]
async fn at_most_64_requests_of_a_container_are_in_flight_and_the_rest_wait() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&["--handler-timeout", "20s"]).await;
    let reply = host.post("/out/many?n=100", up.url("/hold")).await;
    assert_eq!(reply.json(), json!({ "ok": 100 }));
    assert_eq!(up.record.most_active.load(Ordering::SeqCst), 64);
}

#[tokio::test]
async fn an_answer_after_a_worker_restart_is_dropped() {
    let up = Upstream::start().await;
    let (_m, host) = host_with(&[]).await;
    host.post("/out/late", up.url("/slow"))
        .await
        .assert_ok("started");
    let spun = host.get("/out/spin").await;
    assert_eq!(spun.status, 504, "{spun:?}");
    host.wait_for_log("worker restarted", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    host.get("/out/late").await.assert_ok("null");
    assert!(!host.stderr_contains("panicked"), "{}", host.stderr());
}

/// A CA and a `localhost` certificate it signed, as PEM; and the acceptor for it.
fn test_tls() -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mimhost test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn https_is_checked_against_ssl_cert_file_and_an_unknown_ca_is_an_error() {
    let (ca_pem, acceptor) = test_tls();
    let up = Upstream::start_tls(acceptor).await;
    let dir = tempfile::TempDir::new().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mims = Mims::from_files(&[("out/index.js", OUT_MIM)]);
    let trusting = Host::start_with_env(
        &mims.path(),
        &[],
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    )
    .await;
    let events = call(&trusting, json!({ "url": up.url("/plain") })).await;
    assert_eq!(only_success(&events)["data"], "hello from upstream");
    let r = trusting
        .post(
            "/out/fetch",
            json!({ "url": up.url("/json"), "json": true }).to_string(),
        )
        .await
        .json();
    assert_eq!(r["body"], json!({ "answer": 42 }));
    let plain = Host::start(&mims.path()).await;
    let events = call(&plain, json!({ "url": up.url("/plain") })).await;
    let error = only_error(&events);
    let message = error["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("certificate"), "{error}");
}

/// A webpack (target es5) bundle shaped like mimik's published `mim-v1`: it refuses
/// to chat without `context.ml`, then proxies `POST /chat/completions` to
/// `GEN_AI_CHAT_URI` with `context.http.request({... mode: 'stream' ...})`.
const MIM_V1_BUNDLE: &str = r#"!function(){var e={123:function(e,t,n){"use strict";var r=n(456);e.exports=function(e,t,n){if(!e.ml)return n.statusCode=500,void n.end(JSON.stringify({error:"require edgeEngine with ml capability enabled"}));var o=t.url.split("?")[0];if("GET"===t.method&&"/models"===o)return n.setHeader("content-type","application/json"),void n.end(JSON.stringify({data:r.models}));if("POST"===t.method&&"/chat/completions"===o){var i=JSON.parse(t.body||"{}");i.stream=!0;var a=!1;e.http.request({url:e.env.GEN_AI_CHAT_URI,type:"POST",data:i,headers:{"content-type":"application/json",authorization:void 0,"x-api-key":e.env.GEN_AI_KEY},authorization:"Bearer "+e.env.GEN_AI_KEY,mode:"stream",success:function(e){if(e.done)return void n.end();a||(a=!0,n.statusCode=e.status||200,n.setHeader("content-type",e.headers&&e.headers["content-type"]||"text/event-stream")),n.write(e.data)},error:function(e){n.statusCode=e.status||502,n.end(JSON.stringify({error:{message:e.message}}))}})}else n.statusCode=404,n.end(JSON.stringify({error:"not found"}))}},456:function(e){e.exports={models:[{id:"upstream-model",object:"model"}]}}},t={};function n(r){var o=t[r];if(void 0!==o)return o.exports;var i=t[r]={exports:{}};return e[r](i,i.exports,n),i.exports}var r=n(123);mimikModule.exports=r}();"#;

#[tokio::test]
async fn a_mim_v1_style_bundle_streams_a_chat_completion_through() {
    let up = Upstream::start().await;
    let env = support::mim_json(&[
        ("GEN_AI_CHAT_URI", &up.url("/v1/chat/completions")),
        ("GEN_AI_KEY", "k-123"),
    ]);
    let mims = Mims::from_files(&[
        ("mim-v1/index.js", MIM_V1_BUNDLE),
        ("mim-v1/mim.json", &env),
    ]);
    let host = Host::start_with(&mims.path(), &["--handler-timeout", "10s"]).await;
    let models = host.get("/mim-v1/models").await;
    assert_eq!(
        models.json()["data"][0]["id"],
        "upstream-model",
        "{models:?}"
    );
    let reply = host
        .post(
            "/mim-v1/chat/completions",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), "text/event-stream");
    for part in ["Hel", "lo, ", "world"] {
        assert!(
            reply.body.contains(&format!(r#"{{"content":"{part}"}}"#)),
            "{reply:?}"
        );
    }
    assert!(reply.body.contains("[DONE]"), "{reply:?}");
}

/// The example mim `mims/ask`, as shipped, against a chat-completions upstream.
#[tokio::test]
async fn the_ask_example_streams_the_answer_text_as_it_comes() {
    let up = Upstream::start().await;
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../mims/ask/index.js"))
            .expect("mims/ask/index.js");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = support::mim_json(&[
        ("ASK_API_URL", &up.url("/v1/chat/completions")),
        ("ASK_MODEL", "m"),
    ]);
    let down = support::mim_json(&[(
        "ASK_API_URL",
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
    )]);
    let mims = Mims::from_files(&[
        ("ask/index.js", &source),
        ("ask/mim.json", &env),
        ("ask-down/index.js", &source),
        ("ask-down/mim.json", &down),
    ]);
    let host = Host::start_with(&mims.path(), &["--handler-timeout", "10s"]).await;
    let reply = host.get("/ask/?q=hi").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hello, world\n"),
        "{reply:?}"
    );
    let reply = host.post("/ask/", "hi").await;
    assert_eq!(reply.body, "Hello, world\n", "{reply:?}");
    assert_eq!(host.get("/ask/").await.status, 400);
    // No model server: a clear 502.
    let reply = host.get("/ask-down/?q=hi").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(reply.body.contains("the model API failed"), "{reply:?}");
}
