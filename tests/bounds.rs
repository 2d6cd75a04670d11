//! The queue to each container's worker is bounded (issue 8): a flood of requests
//! at one slow container gets 503 with `Retry-After` past `--max-queue`, while
//! other containers and `/healthz` stay fast and the host's memory stays flat; a
//! session whose events overflow the queue is closed 1008, as a slow client is.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{Host, Mims};
use tokio_tungstenite::tungstenite::Message;

/// The queue limit the test host runs with.
const QUEUE: usize = 16;

/// Requests fired at the slow container at once.
const FLOOD: usize = 200;

/// The slowest answer the calm container and `/healthz` may give meanwhile.
const MAX_LATENCY: Duration = Duration::from_millis(500);

/// A container whose handler takes 400 ms to answer (without burning the CPU), and
/// whose session events each take 20 ms of synchronous work.
const SLOW: &str = r#"
app.get('/slow', (request, response) => setTimeout(() => response.end('slow'), 400));
exports.get = (req) => req.webSocket ? { webSocket: { data: {} } } : undefined;
exports.webSocketEvent = (event) => {
  const until = Date.now() + 20;
  while (Date.now() < until) {}
};
"#;

/// A well-behaved container.
const CALM: &str = "app.get('/ping', (request, response) => response.end('pong'));";

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn start() -> (Mims, Host) {
    let mims = Mims::from_files(&[("slow/index.js", SLOW), ("calm/index.js", CALM)]);
    let queue = QUEUE.to_string();
    let host = Host::start_with(
        &mims.path(),
        &["--max-queue", &queue, "--handler-timeout", "10s"],
    )
    .await;
    host.get("/calm/ping").await.assert_ok("pong");
    (mims, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooded_container_answers_503_with_retry_after_and_harms_no_one() {
    let (_mims, host) = start().await;
    let client = reqwest::Client::new();
    let before = rss_kib(host.pid());

    let mut rounds = Vec::new();
    let mut worst_calm = Duration::ZERO;
    let mut worst_health = Duration::ZERO;
    let (mut ok, mut busy) = (0usize, 0usize);
    for _ in 0..3 {
        let flood: Vec<_> = (0..FLOOD)
            .map(|_| {
                let request = client
                    .get(host.url("/slow/slow"))
                    .body(vec![b'x'; 64 * 1024]);
                tokio::spawn(async move {
                    let resp = request.send().await.expect("the host answers");
                    let status = resp.status().as_u16();
                    let retry = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap_or("").to_string());
                    let text = resp.text().await.unwrap_or_default();
                    (status, retry, text)
                })
            })
            .collect();
        // While the flood is queued: the other container and /healthz answer fast.
        for _ in 0..5 {
            let t = Instant::now();
            host.get("/calm/ping").await.assert_ok("pong");
            worst_calm = worst_calm.max(t.elapsed());
            let t = Instant::now();
            let health = host.get("/healthz").await;
            assert_eq!(health.status, 200, "{health:?}");
            worst_health = worst_health.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in flood {
            let (status, retry, text) = task.await.expect("request task");
            match status {
                200 => {
                    assert_eq!(text, "slow");
                    ok += 1;
                }
                503 => {
                    assert_eq!(
                        retry.as_deref(),
                        Some("1"),
                        "503 without Retry-After: {text}"
                    );
                    assert!(text.contains("busy"), "the 503 says why: {text}");
                    busy += 1;
                }
                other => panic!("unexpected {other}: {text}"),
            }
        }
        rounds.push((ok, busy));
    }
    let after = rss_kib(host.pid());
    println!(
        "flood: {ok} answered, {busy} refused 503 over 3 rounds of {FLOOD}; calm worst {worst_calm:?}, \
         healthz worst {worst_health:?}; host RSS {before} KiB -> {after} KiB"
    );
    assert!(ok >= QUEUE, "the queue's worth is served: {rounds:?}");
    assert!(busy >= FLOOD, "most of the flood is refused: {rounds:?}");
    assert!(worst_calm < MAX_LATENCY, "calm slowed to {worst_calm:?}");
    assert!(
        worst_health < MAX_LATENCY,
        "healthz slowed to {worst_health:?}"
    );
    assert!(
        after < before + 96 * 1024,
        "host memory grew from {before} KiB to {after} KiB"
    );
    // The flooded container serves again once the flood is over.
    host.get("/slow/slow").await.assert_ok("slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_that_overflows_the_queue_is_closed_1008() {
    let (_mims, host) = start().await;
    let url = format!("ws://{}/slow/", host.addr());
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade in time")
    .expect("upgrade accepted");
    // 20 ms per event and a queue of 16: 200 messages at once overflow it.
    for i in 0..200 {
        if ws.send(Message::text(format!("m{i}"))).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => return Some(u16::from(frame.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the session ends in time");
    assert_eq!(code, Some(1008), "closed as a slow client");
    // Other clients and the container itself are fine.
    host.get("/calm/ping").await.assert_ok("pong");
    let metrics = host.get("/metrics").await;
    assert!(
        metrics
            .body
            .contains("mimhost_ws_slow_closed_total{container=\"slow\"} 1"),
        "{}",
        metrics.body
    );
}
