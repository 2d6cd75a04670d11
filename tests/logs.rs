//! A container's log through the MCM API and `mimhost logs`, and the console's other
//! endpoints (sessions, stats) and page, against a real host: console lines, uncaught
//! errors with their stack, worker restarts with their cause, a followed stream that
//! survives a restart and ends when the container goes, and 401 without the token.

#[path = "support/mod.rs"]
mod support;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Host, TOKEN};

const WAIT: Duration = Duration::from_secs(20);

const NOISY: &str = r#"
app.get('/hi', (req, res) => { console.log('hi from', req.path); log.warn('careful'); res.end('hi'); });
app.get('/boom', () => { throw new TypeError('boom'); });
app.get('/spin', () => { while (true) {} });
app.get('/hog', () => { const keep = []; while (true) keep.push(new Uint8Array(16 << 20)); });
"#;

async fn authed(host: &Host, path: &str) -> support::Reply {
    support::send(host.request(Method::GET, path).bearer_auth(TOKEN)).await
}

async fn lines(host: &Host, name: &str) -> Vec<Value> {
    let reply = authed(host, &format!("/mcm/v1/containers/{name}/logs?limit=1000")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["data"].as_array().expect("data").clone()
}

/// Waits until the log of `name` has a line matching `matches`.
async fn wait_line(host: &Host, name: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let found = support::poll_until(WAIT, || {
        let found = async { lines(host, name).await.into_iter().find(|l| matches(l)) };
        found
    })
    .await;
    match found {
        Some(line) => line,
        None => panic!(
            "no {what} in the log of {name}: {:#?}",
            lines(host, name).await
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_holds_console_lines_uncaught_errors_and_restarts_with_their_cause() {
    let (_mims, host) = support::serve(&[("noisy.js", NOISY)]).await;
    host.get("/noisy/hi").await.assert_ok("hi");
    host.get("/noisy/boom").await.assert_error(500);
    let hi = wait_line(&host, "noisy", "console line", |l| {
        l["message"] == "hi from /hi"
    })
    .await;
    assert_eq!(
        (hi["level"].as_str(), hi["source"].as_str()),
        (Some("info"), Some("console"))
    );
    assert!(
        hi["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{hi}"
    );
    let warn = wait_line(&host, "noisy", "log.warn line", |l| {
        l["message"] == "careful"
    })
    .await;
    assert_eq!(warn["level"], "warn");
    let boom = wait_line(&host, "noisy", "uncaught error", |l| {
        l["source"] == "uncaught"
    })
    .await;
    let text = boom["message"].as_str().unwrap_or_default();
    assert!(text.contains("TypeError: boom"), "{boom}");
    assert!(
        text.contains("(noisy.js:3:"),
        "the stack names the file relative to the mim, and the line: {boom}"
    );
    assert_eq!(boom["level"], "error");

    host.get("/noisy/spin").await.assert_error(504);
    let timeout = wait_line(&host, "noisy", "timeout restart", |l| {
        l["source"] == "restart"
    })
    .await;
    assert_eq!(
        (timeout["cause"].as_str(), timeout["level"].as_str()),
        (Some("timeout"), Some("warn"))
    );
    let hog = host.get("/noisy/hog").await;
    assert!(hog.status >= 500, "{hog:?}");
    wait_line(&host, "noisy", "memory restart", |l| l["cause"] == "memory").await;

    // Seqs grow; limit keeps the newest; the counters see the restarts.
    let all = lines(&host, "noisy").await;
    let seqs: Vec<u64> = all.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let two = authed(&host, "/mcm/v1/containers/noisy/logs?limit=2")
        .await
        .json();
    assert_eq!(two["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(two["data"][1]["seq"], all.last().expect("lines")["seq"]);
    let stats = authed(&host, "/mcm/v1/containers/noisy/stats").await.json();
    assert_eq!(stats["workerRestarts"], 2, "{stats}");
    assert!(stats["errors"].as_u64() >= Some(3), "{stats}");
    let routes: Vec<&str> = stats["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .filter_map(|s| s["route"].as_str())
        .collect();
    assert!(
        routes.contains(&"GET /hi") && routes.contains(&"GET /spin"),
        "{routes:?}"
    );
    let all_stats = authed(&host, "/mcm/v1/stats").await.json();
    assert!(all_stats["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|s| s["name"] == "noisy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_log_requests_get_clear_errors() {
    let (_mims, host) =
        support::serve(&[("quiet.js", "app.get('/', (q, r) => r.end('ok'));")]).await;
    let none = host.get("/mcm/v1/containers/quiet/logs").await;
    none.assert_error(401);
    let wrong = support::send(
        host.request(Method::GET, "/mcm/v1/containers/quiet/logs?follow=true")
            .bearer_auth("nope"),
    )
    .await;
    assert!(wrong.assert_error(401).contains("wrong"));
    authed(&host, "/mcm/v1/containers/ghost/logs")
        .await
        .assert_error(404);
    authed(&host, "/mcm/v1/containers/ghost/sessions")
        .await
        .assert_error(404);
    authed(&host, "/mcm/v1/containers/quiet/logs?limit=lots")
        .await
        .assert_error(400);
    authed(&host, "/mcm/v1/containers/quiet/logs?follow=maybe")
        .await
        .assert_error(400);
    let post = support::send(
        host.request(Method::POST, "/mcm/v1/containers/quiet/logs")
            .bearer_auth(TOKEN),
    )
    .await;
    post.assert_error(405);
    assert_eq!(post.header("allow"), "GET");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_log_survives_a_worker_restart_and_ends_when_the_container_is_removed() {
    let (mims, host) = support::serve(&[("noisy.js", NOISY)]).await;
    let resp = host
        .request(Method::GET, "/mcm/v1/containers/noisy/logs?follow=true")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("follow");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(cut) = text.find("\n\n") {
                let _ = tx.send(text[..cut].to_string());
                text.drain(..cut + 2);
            }
        }
    });
    let mut seen = Vec::new();
    next_event(&mut rx, &mut seen, "backlog", |e| e.contains("\"started\"")).await;
    host.get("/noisy/hi").await.assert_ok("hi");
    let event = next_event(&mut rx, &mut seen, "live line", |e| {
        e.contains("hi from /hi")
    })
    .await;
    assert!(event.starts_with("event: log\nid: "), "{event}");
    host.get("/noisy/spin").await.assert_error(504);
    next_event(&mut rx, &mut seen, "restart", |e| {
        e.contains("\"cause\":\"timeout\"")
    })
    .await;
    host.get("/noisy/hi").await.assert_ok("hi");
    let after = next_event(&mut rx, &mut seen, "line after the restart", |e| {
        e.contains("hi from /hi")
    })
    .await;
    assert!(after.contains("\"source\":\"console\""));
    std::fs::remove_file(mims.path().join("noisy.js")).expect("remove the mim");
    let end = next_event(&mut rx, &mut seen, "end event", |e| {
        e.starts_with("event: end")
    })
    .await;
    assert!(end.contains("removed"), "{end}");
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the stream ends")
        .expect("reader");
}

/// The next event on the stream that matches `pred` (all of them are kept in `seen`
/// for the failure message).
async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    pred: fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => {
                seen.push(event.clone());
                if pred(&event) {
                    return event;
                }
            }
            _ => panic!("no {what} on the stream; saw {seen:#?}"),
        }
    }
}

fn cli(host: &Host, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mimhost"));
    cmd.args(args)
        .env("MIMHOST_SERVER", host.url(""))
        .env("MIMHOST_TOKEN", TOKEN)
        .env_remove("MIMHOST_DATA");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn mimhost_logs_prints_and_follows_until_the_container_is_removed() {
    let (mims, host) = support::serve(&[("noisy.js", NOISY)]).await;
    host.get("/noisy/hi").await.assert_ok("hi");
    wait_line(&host, "noisy", "console line", |l| {
        l["message"] == "hi from /hi"
    })
    .await;
    let out = cli(&host, &["logs", "noisy"])
        .output()
        .expect("run mimhost logs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("INFO  [console] hi from /hi"), "{stdout}");
    assert!(stdout.contains("WARN  [console] careful"), "{stdout}");

    let missing = cli(&host, &["logs", "ghost"]).output().expect("run");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );
    let bad_token = cli(&host, &["logs", "noisy", "--token", "wrong"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&bad_token.stderr).contains("401"),
        "{bad_token:?}"
    );

    let follower = cli(&host, &["logs", "noisy", "-f", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mimhost logs -f");
    tokio::time::sleep(Duration::from_millis(500)).await;
    host.get("/noisy/spin").await.assert_error(504);
    host.get("/noisy/hi").await.assert_ok("hi");
    wait_line(&host, "noisy", "second console line", |l| {
        l["message"] == "hi from /hi" && l["seq"].as_u64() > Some(4)
    })
    .await;
    std::fs::remove_file(mims.path().join("noisy.js")).expect("remove the mim");
    let out = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .expect("join")
        .expect("logs -f exits once the container is removed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[restart:timeout] worker restarted"),
        "{stdout}"
    );
    assert!(stdout.contains("[console] hi from /hi"), "{stdout}");
    assert!(stdout.contains("[host] stopped"), "{stdout}");
    assert!(stderr.contains("container noisy was removed"), "{stderr}");
}

const ROOM: &str = r#"
var websocket = require('/lib/xp/websocket');
exports.get = function (req) { return req.webSocket ? { webSocket: { data: {} } } : { body: 'room' }; };
exports.webSocketEvent = function (e) {
  if (e.type === 'open') { websocket.addToGroup('lobby', e.session.id); websocket.setClientId(e.session.id, 'ada'); }
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn sessions_list_peer_groups_client_id_and_queue() {
    let (_mims, host) = support::serve(&[("room/index.js", ROOM)]).await;
    let url = format!("ws://{}/room/", host.addr());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect in time")
        .expect("connect");
    let listed = support::poll_until(WAIT, || async {
        let data = authed(&host, "/mcm/v1/containers/room/sessions")
            .await
            .json()["data"]
            .clone();
        (data[0]["clientId"] == "ada" && data[0]["groups"] == serde_json::json!(["lobby"]))
            .then_some(data)
    })
    .await
    .expect("the session shows its group and client id");
    let s = &listed[0];
    assert!(
        s["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1")),
        "{s}"
    );
    assert_eq!(
        (s["kind"].as_str(), s["path"].as_str()),
        (Some("controller"), Some("/room/"))
    );
    assert!(s["queuedFrames"].is_u64() && s["id"].is_string(), "{s}");
    let stats = authed(&host, "/mcm/v1/stats").await.json();
    let room = stats["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|c| c["name"] == "room")
        .cloned();
    assert_eq!(room.map(|r| r["openSessions"].clone()), Some(1.into()));
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_page_is_served_with_a_strict_policy_and_a_root_mim_keeps_its_path() {
    let (_mims, host) =
        support::serve(&[("hello.js", "app.get('/', (q, r) => r.end('hello'));")]).await;
    let page = host.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        page.body.contains("mcm-token"),
        "the page says where the token is"
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(page.header("set-cookie").is_empty());
    let script = host.get("/_/console.js").await;
    assert!(
        script.header("content-type").starts_with("text/javascript")
            && script.body.contains("Bearer")
    );
    assert!(!script.body.contains("document.cookie"));
    assert_eq!(host.get("/_/").await.body, page.body);
    host.get("/_/missing.js").await.assert_error(404);

    // A drop-in mim at base path `/` keeps `/`; the console stays at `/_/`.
    let root = support::Mims::from_files(&[
        (
            "root/index.js",
            "app.get('/', (q, r) => r.end('root mim')); app.get('/x', (q, r) => r.end('x'));",
        ),
        (
            "root/mim.json",
            &support::mim_json(&[("MCM.BASE_API_PATH", "/")]),
        ),
    ]);
    let host = Host::start(&root.path()).await;
    host.get("/").await.assert_ok("root mim");
    host.get("/x").await.assert_ok("x");
    assert!(host.get("/_/").await.body.contains("mcm-token"));
    // The API refuses `/_` as a deployed base path.
    let refused = support::send(
        host.request(Method::POST, "/mcm/v1/containers")
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"name": "u", "image": "x", "env": {"MCM.BASE_API_PATH": "/_/u"}})),
    )
    .await;
    assert!(
        refused.assert_error(400).contains("keeps for itself"),
        "{refused:?}"
    );
}
