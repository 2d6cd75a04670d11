//! Sessions at scale (SPEC 5.5, issue 11): 10,000 idle sessions stay open through
//! three ping rounds (1 s apart), all receive one broadcast, and the host's resident memory
//! grows by less than a bound per session (read from `/proc`).
//!
//! The test process holds the 10,000 client sockets and the host the 10,000 server
//! sockets, each under its own open-file limit (raised to the hard limit, which must
//! allow 10,000 plus some).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{mim_json, Host, Mims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sessions held.
const SESSIONS: usize = 10_000;
/// Connects in flight at once.
const CONNECTING: usize = 200;
/// The host's ping interval in this test (a peer silent for one is reaped, so not so
/// short that a loaded machine delays pongs that long).
const PING: Duration = Duration::from_secs(1);
/// Most RSS growth of the host per idle session. Measured (docs/benchmarks.md,
/// "Memory per idle session" and "Sessions at scale, round 3"): 2.1–2.6 KiB in
/// release builds, 2.1 KiB in the test profile, run to run as glibc's arenas fall;
/// 6 KiB before issue 11. The bound is well above the spread (about ±200 bytes) and
/// half the old figure.
const MAX_BYTES_PER_SESSION: u64 = 3 * 1024;

const NOTIFY: &str = "app.post('/notify', function (request, response) {\n\
    context.dispatchWebSocketEvent({ type: 'notification', message: 'hello all' });\n\
    response.end('{}');\n});\n";

/// Raises this process's open-file limit to its hard limit; the host inherits it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// What the clients saw, summed.
#[derive(Default)]
struct Counts {
    /// Handshakes answered 101.
    opened: AtomicUsize,
    /// Sessions open now.
    alive: AtomicUsize,
    /// Pings received.
    pings: AtomicUsize,
    /// Broadcasts received.
    got: AtomicUsize,
}

/// One client: handshake (then lets the next connect start), answer pings and count
/// broadcasts until the socket closes.
async fn client(addr: String, counts: Arc<Counts>, permit: tokio::sync::OwnedSemaphorePermit) {
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return;
    };
    let request = format!(
        "GET /ws/notify HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    if s.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let body_at = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        return;
    }
    buf.drain(..body_at);
    drop(permit);
    counts.opened.fetch_add(1, Ordering::Relaxed);
    counts.alive.fetch_add(1, Ordering::Relaxed);
    serve_frames(&mut s, buf, &counts).await;
    counts.alive.fetch_sub(1, Ordering::Relaxed);
}

/// Answers pings and counts broadcasts until the socket closes.
async fn serve_frames(s: &mut TcpStream, mut buf: Vec<u8>, counts: &Counts) {
    let mut chunk = [0u8; 512];
    loop {
        // Frames from the server are unmasked and small here.
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7f) {
            let (op, len) = (buf[0] & 0x0f, usize::from(buf[1] & 0x7f));
            let payload: Vec<u8> = buf[2..2 + len].to_vec();
            buf.drain(..2 + len);
            match op {
                0x9 => {
                    counts.pings.fetch_add(1, Ordering::Relaxed);
                    let mut pong = vec![0x8A, 0x80 | len as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    if s.write_all(&pong).await.is_err() {
                        return;
                    }
                }
                0x1 if payload.windows(9).any(|w| w == b"hello all") => {
                    counts.got.fetch_add(1, Ordering::Relaxed);
                }
                0x8 => return,
                _ => {}
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_sessions_stay_through_three_pings_and_all_get_a_broadcast() {
    let limit = raise_nofile();
    assert!(
        limit >= SESSIONS as u64 + 500,
        "the open-file hard limit ({limit}) is below {} (raise it: ulimit -Hn)",
        SESSIONS + 500
    );
    let mims = Mims::from_files(&[
        ("notify/index.js", NOTIFY),
        (
            "notify/mim.json",
            &mim_json(&[("WEBSOCKET_SUPPORT", "true")]),
        ),
    ]);
    let host = Host::start_with(&mims.path(), &["--ping-interval", "1s"]).await;
    let pid = host.pid();
    // One session first, so the worker and the hub's maps exist before the baseline.
    let counts = Arc::new(Counts::default());
    let addr = host.addr().to_string();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut tasks = Vec::with_capacity(SESSIONS);
    let permit = gate.clone().acquire_owned().await.expect("semaphore");
    tasks.push(tokio::spawn(client(addr.clone(), counts.clone(), permit)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts.opened.load(Ordering::Relaxed) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let started = Instant::now();
    for _ in 1..SESSIONS {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(client(addr.clone(), counts.clone(), permit)));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while counts.opened.load(Ordering::Relaxed) < SESSIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts.opened.load(Ordering::Relaxed),
        SESSIONS,
        "sessions opened in {:?}",
        started.elapsed()
    );
    println!("{SESSIONS} sessions open in {:?}", started.elapsed());

    // Three ping rounds: every session pinged about three times, and none reaped.
    let pinging = Instant::now();
    let deadline = pinging + PING * 3 + Duration::from_secs(20);
    while counts.pings.load(Ordering::Relaxed) < SESSIONS * 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pinged = counts.pings.load(Ordering::Relaxed);
    assert!(
        pinged >= SESSIONS * 3,
        "only {pinged} pings in {:?} for {SESSIONS} sessions",
        pinging.elapsed()
    );
    println!("{pinged} pings in {:?}", started.elapsed());
    let after = rss_kib(pid);
    let per_session = (after.saturating_sub(before)) * 1024 / SESSIONS as u64;
    println!("host RSS {before} KiB -> {after} KiB: {per_session} bytes per idle session");

    let answer = host.post("/notify/notify", "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.got.load(Ordering::Relaxed) < SESSIONS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts.got.load(Ordering::Relaxed),
        SESSIONS,
        "sessions that got the broadcast"
    );
    assert_eq!(
        counts.alive.load(Ordering::Relaxed),
        SESSIONS,
        "sessions still open (none reaped)"
    );
    assert!(
        per_session <= MAX_BYTES_PER_SESSION,
        "{per_session} bytes of host RSS per idle session (bound {MAX_BYTES_PER_SESSION})"
    );
    drop(host);
    for t in tasks {
        t.abort();
    }
}
