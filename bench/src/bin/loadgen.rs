//! `loadgen`: the load generator behind `bench/run.sh`. Every subcommand is bounded in
//! count and time, stops by itself, and prints one JSON object on stdout (progress on
//! stderr).
//!
//! - `fanout`: N WebSocket clients on a broadcast channel; single dispatches (time for
//!   one to reach every client) then a burst of dispatches posted over HTTP
//!   (deliveries/s, end-to-end latency).
//! - `http`: keep-alive HTTP load, C connections, fixed duration (req/s, latency).
//! - `chat`: N clients in one group, each sending stamped messages in a closed loop
//!   (deliveries/s, latency).
//! - `hold`: open idle sessions (over several processes, each under its own fd limit),
//!   read the server's RSS before and after, prove the sessions live with one broadcast.
//! - `soak`: mixed traffic for a fixed time (churning sessions, broadcasts, HTTP,
//!   logged storage writes, a slow client, a runaway handler); `soak-verify` reads
//!   every logged write back (`bench/soak.sh` drives both).

use clap::{Args, Parser, Subcommand};
use mimhost_bench::http::HttpConn;
use mimhost_bench::net::{children_of, fd_count, raise_nofile, rss_kib, Sources, Target};
use mimhost_bench::stats::Histogram;
use mimhost_bench::ws::{Msg, WsClient};
use mimhost_bench::{contains, now_ns};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "mimhost's load generator (bench/run.sh drives it)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Broadcast fan-out: N clients, single dispatches, then a burst.
    Fanout(FanoutArgs),
    /// Keep-alive HTTP load for a fixed duration.
    Http(HttpArgs),
    /// Group chat: N clients, each sending in a closed loop.
    Chat(ChatArgs),
    /// Idle sessions: RSS per session and how many are held.
    Hold(HoldArgs),
    /// Soak: mixed traffic for a fixed time; acknowledged writes go to a log.
    Soak(SoakArgs),
    /// Reads back every write in a soak's log.
    SoakVerify(SoakVerifyArgs),
    /// Internal: one process's share of `hold`.
    #[command(hide = true)]
    HoldChild(HoldChildArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Runtime threads of the generator (1 leaves the other core to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How many 127.0.0.x source addresses to spread client sockets over.
    #[arg(long, default_value_t = 16)]
    sources: usize,
    /// First source address: 127.0.0.<this>.
    #[arg(long, default_value_t = 10)]
    source_first: u8,
    /// WebSocket connects in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds one connect + upgrade may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
}

#[derive(Args)]
struct FanoutArgs {
    /// Broadcast channel, e.g. ws://127.0.0.1:8083/ws/notify; several, comma
    /// separated (the nodes of a cluster), share the clients evenly.
    #[arg(long)]
    ws: String,
    /// URL whose POST dispatches one event to every client.
    #[arg(long)]
    post: String,
    /// Body of each POST.
    #[arg(long, default_value = "")]
    post_body: String,
    /// WebSocket subprotocol to offer.
    #[arg(long)]
    protocol: Option<String>,
    /// Clients to open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Single dispatches, each waited for at every client (time to reach all).
    #[arg(long, default_value_t = 5)]
    singles: usize,
    /// Dispatches posted back to back in the burst.
    #[arg(long, default_value_t = 50)]
    events: usize,
    /// Only text frames containing this count as deliveries.
    #[arg(long = "match", default_value = "notification")]
    pattern: String,
    /// Seconds to wait for deliveries of one phase.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct HttpArgs {
    /// URL; `{n}` is replaced by a request counter modulo 1000.
    #[arg(long)]
    url: String,
    /// Method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct ChatArgs {
    /// Group endpoint, e.g. ws://127.0.0.1:8083/chat/.
    #[arg(long)]
    ws: String,
    /// WebSocket subprotocol to offer.
    #[arg(long)]
    protocol: Option<String>,
    /// Members.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Measured seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages each member may have in flight (sent, own echo not yet back).
    #[arg(long, default_value_t = 1)]
    window: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct HoldArgs {
    /// Channel to hold sessions on, e.g. ws://127.0.0.1:8083/ws/notify.
    #[arg(long)]
    ws: String,
    /// URL whose POST broadcasts to every session (proves they are alive).
    #[arg(long)]
    post: String,
    /// Body of the POST.
    #[arg(long, default_value = "")]
    post_body: String,
    /// Sessions to try to open, in total.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Generator processes to split them over (each has its own fd limit).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Only text frames containing this count as the broadcast.
    #[arg(long = "match", default_value = "notification")]
    pattern: String,
    /// Server process whose RSS (and whose children's) to read before and after.
    #[arg(long)]
    rss_pid: Option<u32>,
    /// Seconds to let the server settle before reading RSS after.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Give up opening after this many failures in a row.
    #[arg(long, default_value_t = 300)]
    max_failures: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct HoldChildArgs {
    #[arg(long)]
    ws: String,
    #[arg(long)]
    clients: usize,
    #[arg(long = "match")]
    pattern: String,
    #[arg(long)]
    max_failures: usize,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct SoakArgs {
    /// The host, e.g. http://127.0.0.1:8083 (mims: hello, notify, soak-store, runaway).
    #[arg(long)]
    base: String,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// WebSocket session slots churning on /ws/notify.
    #[arg(long, default_value_t = 5000)]
    sessions: usize,
    /// Longest hold of one session, in seconds.
    #[arg(long, default_value_t = 20)]
    hold_max: u64,
    /// Seconds between broadcasts.
    #[arg(long, default_value_t = 2.0)]
    broadcast_every: f64,
    /// Seconds between runaway requests.
    #[arg(long, default_value_t = 180.0)]
    runaway_every: f64,
    /// Milliseconds between two requests of one HTTP or writer connection.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// File the acknowledged writes are appended to.
    #[arg(long)]
    writes: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct SoakVerifyArgs {
    /// The host, e.g. http://127.0.0.1:8083.
    #[arg(long)]
    base: String,
    /// The soak's writes log.
    #[arg(long)]
    writes: String,
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("a tokio runtime")
}

fn main() {
    let nofile = raise_nofile();
    let cli = Cli::parse();
    now_ns();
    let result = match cli.command {
        Command::Fanout(a) => runtime(a.common.threads).block_on(fanout(a)),
        Command::Http(a) => runtime(a.common.threads).block_on(http_load(a)),
        Command::Chat(a) => runtime(a.common.threads).block_on(chat(a)),
        Command::Hold(a) => hold(a),
        Command::Soak(a) => {
            let plan = mimhost_bench::soak::SoakPlan {
                base: a.base,
                duration: Duration::from_secs_f64(a.duration),
                sessions: a.sessions,
                hold_max_s: a.hold_max,
                broadcast_every: Duration::from_secs_f64(a.broadcast_every),
                runaway_every: Duration::from_secs_f64(a.runaway_every),
                pace: Duration::from_millis(a.pace_ms),
                writes_log: a.writes,
                sources: a.common.sources,
            };
            runtime(a.common.threads)
                .block_on(mimhost_bench::soak::run(plan))
                .unwrap_or_else(|e| json!({"failed": true, "error": e.to_string()}))
        }
        Command::SoakVerify(a) => runtime(1)
            .block_on(mimhost_bench::soak::verify(&a.base, &a.writes))
            .unwrap_or_else(|e| json!({"failed": true, "error": e.to_string()})),
        Command::HoldChild(a) => {
            runtime(a.common.threads).block_on(hold_child(a));
            return;
        }
    };
    let mut result = result;
    if let Value::Object(m) = &mut result {
        m.insert("generator_nofile".into(), json!(nofile));
        m.insert("generator_cpu_s".into(), json!(cpu_seconds()));
    }
    println!("{result}");
}

/// User + system CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a stack struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        ((tv(u.ru_utime) + tv(u.ru_stime)) * 1000.0).round() / 1000.0
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// What opening many clients gave.
struct Opened {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    seconds: f64,
}

/// Opens up to `count` clients (at most `common.connect_concurrency` at once), hands
/// each to `on_open`; stops early after `max_failures` failures in a row.
async fn open_many<F>(
    count: usize,
    target: &Target,
    protocol: Option<&str>,
    common: &Common,
    max_failures: usize,
    on_open: F,
) -> Opened
where
    F: Fn(usize, WsClient) + Send + Sync + 'static,
{
    let started = now_ns();
    let sources = Arc::new(Sources::new(common.source_first, common.sources));
    let gate = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let in_a_row = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let on_open = Arc::new(on_open);
    let timeout = Duration::from_secs_f64(common.connect_timeout);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if in_a_row.load(Ordering::Relaxed) >= max_failures {
            break;
        }
        if i > 0 && i % 5000 == 0 {
            eprintln!(
                "  … {} connects started, {} open",
                i,
                ok.load(Ordering::Relaxed)
            );
        }
        let permit = gate.clone().acquire_owned().await.expect("semaphore open");
        if in_a_row.load(Ordering::Relaxed) >= max_failures {
            break;
        }
        let (sources, ok, failed, in_a_row, first_error, on_open) = (
            sources.clone(),
            ok.clone(),
            failed.clone(),
            in_a_row.clone(),
            first_error.clone(),
            on_open.clone(),
        );
        let target = target.clone();
        let protocol = protocol.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let result =
                WsClient::connect(sources.pick(), &target, protocol.as_deref(), timeout).await;
            drop(permit);
            match result {
                Ok(client) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    in_a_row.store(0, Ordering::Relaxed);
                    on_open(i, client);
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    in_a_row.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| e.to_string());
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let first_error = first_error.lock().unwrap().clone();
    Opened {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
        seconds: (ms(now_ns() - started) / 10.0).round() / 100.0,
    }
}

/// Waits (polling every millisecond) until `done` or `timeout`; true when done.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Posts to `target` over a kept connection (reopened when the server closes it).
struct Poster {
    target: Target,
    conn: Option<HttpConn>,
    body: Vec<u8>,
}

impl Poster {
    fn new(url: &str, body: &str) -> std::io::Result<Self> {
        Ok(Self {
            target: Target::parse(url)?,
            conn: None,
            body: body.as_bytes().to_vec(),
        })
    }

    /// One POST, given up after 10 s (a server at its fd limit may never accept it).
    async fn post(&mut self) -> std::io::Result<u16> {
        match tokio::time::timeout(Duration::from_secs(10), self.post_inner()).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "POST timed out",
                ))
            }
        }
    }

    async fn post_inner(&mut self) -> std::io::Result<u16> {
        if self.conn.as_ref().is_none_or(|c| c.closing) {
            self.conn = Some(HttpConn::connect(None, &self.target).await?);
        }
        let conn = self.conn.as_mut().expect("just set");
        match conn.request("POST", &self.target.path, &self.body).await {
            Ok((status, _)) => Ok(status),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------- fanout

struct Fan {
    singles: usize,
    sent: Vec<AtomicU64>,
    got: Vec<AtomicU32>,
    last: Vec<AtomicU64>,
    single: Histogram,
    burst: Histogram,
    other_frames: AtomicU64,
    extra: AtomicU64,
    closed: AtomicUsize,
}

impl Fan {
    fn hit(&self, k: usize, now: u64) {
        if k >= self.sent.len() {
            self.extra.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let lat = now.saturating_sub(self.sent[k].load(Ordering::Relaxed));
        self.got[k].fetch_add(1, Ordering::Relaxed);
        self.last[k].fetch_max(now, Ordering::Relaxed);
        if k < self.singles {
            self.single.record(lat);
        } else {
            self.burst.record(lat);
        }
    }
}

async fn fan_reader(mut client: WsClient, fan: Arc<Fan>, pattern: Arc<Vec<u8>>) {
    let mut k = 0usize;
    let mut on_message = |m: Msg<'_>| {
        if let Msg::Text(p) = m {
            if contains(p, &pattern) {
                fan.hit(k, now_ns());
                k += 1;
            } else {
                fan.other_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    if let Ok(true) = client.drain_buffered(&mut on_message).await {
        while let Ok(true) = client.pump(&mut on_message).await {}
    }
    fan.closed.fetch_add(1, Ordering::Relaxed);
}

async fn fanout(a: FanoutArgs) -> Value {
    let targets: Vec<Target> =
        a.ws.split(',')
            .map(|url| Target::parse(url).expect("--ws URL"))
            .collect();
    let n_events = a.singles + a.events;
    let fan = Arc::new(Fan {
        singles: a.singles,
        sent: (0..n_events).map(|_| AtomicU64::new(0)).collect(),
        got: (0..n_events).map(|_| AtomicU32::new(0)).collect(),
        last: (0..n_events).map(|_| AtomicU64::new(0)).collect(),
        single: Histogram::new(),
        burst: Histogram::new(),
        other_frames: AtomicU64::new(0),
        extra: AtomicU64::new(0),
        closed: AtomicUsize::new(0),
    });
    let pattern = Arc::new(a.pattern.as_bytes().to_vec());
    eprintln!("fanout: opening {} clients on {}", a.clients, a.ws);
    let mut opened = Opened {
        ok: 0,
        failed: 0,
        first_error: None,
        seconds: 0.0,
    };
    for (i, target) in targets.iter().enumerate() {
        // Client k goes to target k % len: an even share each.
        let share = (a.clients + targets.len() - 1 - i) / targets.len();
        let (reader_fan, pattern) = (fan.clone(), pattern.clone());
        let part = open_many(
            share,
            target,
            a.protocol.as_deref(),
            &a.common,
            usize::MAX,
            move |_, c| {
                tokio::spawn(fan_reader(c, reader_fan.clone(), pattern.clone()));
            },
        )
        .await;
        opened.ok += part.ok;
        opened.failed += part.failed;
        opened.seconds += part.seconds;
        opened.first_error = opened.first_error.or(part.first_error);
    }
    eprintln!(
        "fanout: {} open, {} failed in {:.1}s",
        opened.ok, opened.failed, opened.seconds
    );
    let n = opened.ok as u32;
    let timeout = Duration::from_secs_f64(a.timeout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut poster = Poster::new(&a.post, &a.post_body).expect("--post URL");
    let mut post_errors = 0u64;
    let mut to_all = Vec::new();
    let mut incomplete_singles = 0;
    let singles = if n == 0 { 0 } else { a.singles };
    for i in 0..singles {
        fan.sent[i].store(now_ns(), Ordering::Relaxed);
        match poster.post().await {
            Ok(200..=299) => {}
            _ => post_errors += 1,
        }
        if wait_until(timeout, || fan.got[i].load(Ordering::Relaxed) >= n).await {
            to_all.push(
                fan.last[i]
                    .load(Ordering::Relaxed)
                    .saturating_sub(fan.sent[i].load(Ordering::Relaxed)),
            );
        } else {
            incomplete_singles += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    to_all.sort_unstable();
    eprintln!(
        "fanout: dispatch-to-all {:?} ms",
        to_all.iter().map(|&x| ms(x)).collect::<Vec<_>>()
    );
    let burst_start = now_ns();
    for j in a.singles..n_events {
        fan.sent[j].store(now_ns(), Ordering::Relaxed);
        match poster.post().await {
            Ok(200..=299) => {}
            _ => post_errors += 1,
        }
    }
    let posted = now_ns() - burst_start;
    let expected = n as u64 * a.events as u64;
    let burst_got = || -> u64 {
        fan.got[a.singles..]
            .iter()
            .map(|g| g.load(Ordering::Relaxed) as u64)
            .sum()
    };
    let complete = wait_until(timeout, || burst_got() >= expected).await;
    let last = fan.last[a.singles..]
        .iter()
        .map(|l| l.load(Ordering::Relaxed))
        .max()
        .unwrap_or(burst_start);
    let elapsed = last.saturating_sub(burst_start).max(1);
    let delivered = burst_got();
    eprintln!(
        "fanout: burst of {} events: {} of {} deliveries in {:.1} ms",
        a.events,
        delivered,
        expected,
        ms(elapsed)
    );
    json!({
        "scenario": "fanout",
        "clients_requested": a.clients,
        "clients": opened.ok,
        "connect_failed": opened.failed,
        "connect_error": opened.first_error,
        "connect_s": opened.seconds,
        "dispatch_to_all_ms": {
            "runs": to_all.iter().map(|&x| ms(x)).collect::<Vec<_>>(),
            "median": to_all.get(to_all.len() / 2).map(|&x| ms(x)),
            "min": to_all.first().map(|&x| ms(x)),
            "incomplete": incomplete_singles,
        },
        "single_latency": fan.single.summary(),
        "burst": {
            "events": a.events,
            "expected": expected,
            "delivered": delivered,
            "complete": complete,
            "post_ms": ms(posted),
            "elapsed_ms": ms(elapsed),
            "deliveries_per_s": (delivered as f64 / (elapsed as f64 / 1e9)).round(),
            "latency": fan.burst.summary(),
        },
        "post_errors": post_errors,
        "other_frames": fan.other_frames.load(Ordering::Relaxed),
        "extra_frames": fan.extra.load(Ordering::Relaxed),
        "closed_early": fan.closed.load(Ordering::Relaxed),
    })
}

// ---------------------------------------------------------------- http

async fn http_load(a: HttpArgs) -> Value {
    let target = Target::parse(&a.url).expect("--url");
    let hist = Arc::new(Histogram::new());
    let ok = Arc::new(AtomicU64::new(0));
    let non_2xx = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let counter = Arc::new(AtomicU64::new(0));
    let start = now_ns();
    let measure_from = start + (a.warmup * 1e9) as u64;
    let end = measure_from + (a.duration * 1e9) as u64;
    let sources = Arc::new(Sources::new(a.common.source_first, a.common.sources));
    let body = Arc::new(a.body.into_bytes());
    let method = Arc::new(a.method);
    let mut tasks = Vec::new();
    for _ in 0..a.conns {
        let (target, hist, ok, non_2xx, errors, first_error, counter, sources, body, method) = (
            target.clone(),
            hist.clone(),
            ok.clone(),
            non_2xx.clone(),
            errors.clone(),
            first_error.clone(),
            counter.clone(),
            sources.clone(),
            body.clone(),
            method.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let templated = target.path.contains("{n}");
            let mut conn: Option<HttpConn> = None;
            loop {
                let now = now_ns();
                if now >= end {
                    break;
                }
                if conn.as_ref().is_none_or(|c| c.closing) {
                    match HttpConn::connect(sources.pick(), &target).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let path = if templated {
                    let n = counter.fetch_add(1, Ordering::Relaxed) % 1000;
                    target.path.replace("{n}", &n.to_string())
                } else {
                    target.path.clone()
                };
                let t0 = now_ns();
                let result = conn
                    .as_mut()
                    .expect("connected")
                    .request(&method, &path, &body)
                    .await;
                let t1 = now_ns();
                let measured = t0 >= measure_from && t1 <= end;
                match result {
                    Ok((status, _)) => {
                        if measured {
                            hist.record(t1 - t0);
                            if (200..300).contains(&status) {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                non_2xx.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(e) => {
                        conn = None;
                        if measured {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let done = ok.load(Ordering::Relaxed) + non_2xx.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap().clone();
    json!({
        "scenario": "http",
        "url": a.url,
        "conns": a.conns,
        "duration_s": a.duration,
        "requests": done,
        "ok": ok.load(Ordering::Relaxed),
        "non_2xx": non_2xx.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "rps": (done as f64 / a.duration).round(),
        "latency": hist.summary(),
    })
}

// ---------------------------------------------------------------- chat

struct Room {
    members: usize,
    probe_seen: Vec<AtomicU32>,
    start: AtomicU64,
    end: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
    last: AtomicU64,
    unfinished: AtomicUsize,
    hist: Histogram,
}

fn field(parts: &mut std::str::Split<'_, char>) -> Option<u64> {
    parts.next()?.parse().ok()
}

/// One member: answers probes, starts on `G|go`, then sends stamped messages in a
/// closed loop (at most `window` of its own in flight) until the room's end.
async fn member(
    index: usize,
    mut client: WsClient,
    room: Arc<Room>,
    window: usize,
    duration: Duration,
) {
    let own_back = AtomicU64::new(0);
    let go = std::sync::atomic::AtomicBool::new(false);
    let mut on_message = |m: Msg<'_>| {
        let Msg::Text(p) = m else { return };
        let Ok(text) = std::str::from_utf8(p) else {
            return;
        };
        let mut parts = text.split('|');
        match parts.next() {
            Some("B") => {
                let now = now_ns();
                let (Some(from), Some(_seq), Some(t)) =
                    (field(&mut parts), field(&mut parts), field(&mut parts))
                else {
                    return;
                };
                room.hist.record(now.saturating_sub(t));
                room.delivered.fetch_add(1, Ordering::Relaxed);
                room.last.fetch_max(now, Ordering::Relaxed);
                if from as usize == index {
                    own_back.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some("P") => {
                if let Some(r) = field(&mut parts) {
                    room.probe_seen[index].fetch_max(r as u32, Ordering::Relaxed);
                }
            }
            Some("G") => go.store(true, Ordering::Relaxed),
            _ => {}
        }
    };
    if !matches!(client.drain_buffered(&mut on_message).await, Ok(true)) {
        return;
    }
    if index == 0 {
        // The prober: probe until every member has seen the same round, then say go.
        let mut round = 0u32;
        let all_seen = |r: u32| {
            room.probe_seen
                .iter()
                .all(|s| s.load(Ordering::Relaxed) >= r)
        };
        while round < 60 {
            round += 1;
            if client
                .send_text(format!("P|{round}").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let deadline = now_ns() + 500_000_000;
            while !all_seen(round) && now_ns() < deadline {
                let left = Duration::from_nanos(deadline.saturating_sub(now_ns()));
                match tokio::time::timeout(left, client.pump(&mut on_message)).await {
                    Ok(Ok(true)) | Err(_) => {}
                    _ => return,
                }
            }
            if all_seen(round) {
                break;
            }
        }
        let start = now_ns();
        room.start.store(start, Ordering::Relaxed);
        room.end
            .store(start + duration.as_nanos() as u64, Ordering::Relaxed);
        if client.send_text(b"G|go").await.is_err() {
            return;
        }
    }
    while !go.load(Ordering::Relaxed) {
        match client.pump(&mut on_message).await {
            Ok(true) => {}
            _ => return,
        }
    }
    let end = room.end.load(Ordering::Relaxed);
    let mut seq = 0u64;
    loop {
        let now = now_ns();
        if now < end {
            while seq - own_back.load(Ordering::Relaxed) < window as u64 {
                let msg = format!("B|{index}|{seq}|{}", now_ns());
                if client.send_text(msg.as_bytes()).await.is_err() {
                    return;
                }
                seq += 1;
                room.sent.fetch_add(1, Ordering::Relaxed);
            }
        } else if own_back.load(Ordering::Relaxed) >= seq || now > end + 5_000_000_000 {
            break;
        }
        let wait = if now < end {
            Duration::from_nanos(end - now)
        } else {
            Duration::from_millis(100)
        };
        match tokio::time::timeout(wait, client.pump(&mut on_message)).await {
            Ok(Ok(true)) | Err(_) => {}
            _ => return,
        }
    }
    // Keep reading others' messages for a moment so every delivery is counted.
    let linger = tokio::time::Instant::now() + Duration::from_secs(2);
    room.unfinished.fetch_sub(1, Ordering::Relaxed);
    while room.unfinished.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < linger {
        match tokio::time::timeout(Duration::from_millis(50), client.pump(&mut on_message)).await {
            Ok(Ok(true)) | Err(_) => {}
            _ => return,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), client.pump(&mut on_message)).await;
}

async fn chat(a: ChatArgs) -> Value {
    let target = Target::parse(&a.ws).expect("--ws URL");
    let clients = Arc::new(Mutex::new(Vec::new()));
    let sink = clients.clone();
    let opened = open_many(
        a.clients,
        &target,
        a.protocol.as_deref(),
        &a.common,
        usize::MAX,
        move |i, c| {
            sink.lock().unwrap().push((i, c));
        },
    )
    .await;
    eprintln!("chat: {} members open", opened.ok);
    let mut members: Vec<(usize, WsClient)> = std::mem::take(&mut *clients.lock().unwrap());
    members.sort_by_key(|(i, _)| *i);
    let room = Arc::new(Room {
        members: members.len(),
        probe_seen: (0..members.len()).map(|_| AtomicU32::new(0)).collect(),
        start: AtomicU64::new(0),
        end: AtomicU64::new(u64::MAX),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        last: AtomicU64::new(0),
        unfinished: AtomicUsize::new(members.len()),
        hist: Histogram::new(),
    });
    let duration = Duration::from_secs_f64(a.duration);
    let mut tasks = Vec::new();
    for (index, (_, client)) in members.into_iter().enumerate() {
        tasks.push(tokio::spawn(member(
            index,
            client,
            room.clone(),
            a.window,
            duration,
        )));
    }
    let bound = Duration::from_secs_f64(a.duration + 60.0);
    let _ = tokio::time::timeout(bound, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    let start = room.start.load(Ordering::Relaxed);
    let sent = room.sent.load(Ordering::Relaxed);
    let delivered = room.delivered.load(Ordering::Relaxed);
    let last = room.last.load(Ordering::Relaxed);
    let elapsed = last.saturating_sub(start).max(1);
    json!({
        "scenario": "chat",
        "clients": room.members,
        "connect_failed": opened.failed,
        "connect_error": opened.first_error,
        "started": start > 0,
        "duration_s": a.duration,
        "window": a.window,
        "messages_sent": sent,
        "expected": sent * room.members as u64,
        "delivered": delivered,
        "elapsed_ms": ms(elapsed),
        "deliveries_per_s": (delivered as f64 / (elapsed as f64 / 1e9)).round(),
        "messages_per_s": (sent as f64 / a.duration).round(),
        "latency": room.hist.summary(),
    })
}

// ---------------------------------------------------------------- hold

/// Sessions closed before the broadcast when the server is at its fd limit.
const SHED: usize = 32;

fn rss_of(pid: u32) -> Value {
    let workers: Vec<Value> = children_of(pid)
        .into_iter()
        .filter_map(|c| rss_kib(c).map(|r| json!({"pid": c, "kib": r})))
        .collect();
    let workers_total: u64 = workers.iter().filter_map(|w| w["kib"].as_u64()).sum();
    json!({
        "server_kib": rss_kib(pid),
        "workers": workers,
        "workers_kib": workers_total,
        "fds": fd_count(pid),
    })
}

fn hold(a: HoldArgs) -> Value {
    let before = a.rss_pid.map(rss_of);
    let exe = std::env::current_exe().expect("own path");
    let procs = a.procs.max(1);
    let mut children = Vec::new();
    for p in 0..procs {
        let share = a.clients / procs + usize::from(p < a.clients % procs);
        let first = a.common.source_first as usize + p * a.common.sources;
        let child = std::process::Command::new(&exe)
            .args(["hold-child", "--ws", &a.ws, "--match", &a.pattern])
            .args(["--clients", &share.to_string()])
            .args(["--max-failures", &a.max_failures.to_string()])
            .args(["--sources", &a.common.sources.to_string()])
            .args(["--source-first", &first.min(250).to_string()])
            .args([
                "--connect-concurrency",
                &a.common.connect_concurrency.to_string(),
            ])
            .args(["--connect-timeout", &a.common.connect_timeout.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a hold child");
        children.push(child);
    }
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| std::io::BufReader::new(c.stdout.take().expect("piped")))
        .collect();
    let read_line = |r: &mut std::io::BufReader<std::process::ChildStdout>| -> String {
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        line.trim().to_string()
    };
    let mut opened = 0usize;
    let mut failed = 0usize;
    let mut errors = Vec::new();
    for r in readers.iter_mut() {
        // OPENED <ok> <failed> <first error…>
        let line = read_line(r);
        let mut parts = line.splitn(4, ' ');
        parts.next();
        opened += parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        failed += parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        if let Some(e) = parts.next().filter(|e| !e.is_empty() && *e != "-") {
            errors.push(e.to_string());
        }
    }
    eprintln!("hold: {opened} sessions open, {failed} failed; settling");
    std::thread::sleep(Duration::from_secs_f64(a.settle));
    let after = a.rss_pid.map(rss_of);
    // A server at its fd limit cannot accept the broadcast request itself: when opening
    // hit the limit, close a few sessions first so the POST gets in.
    let mut shed = 0usize;
    if failed > 0 && opened > 0 {
        shed = SHED.min(opened);
        if let Some(stdin) = children[0].stdin.as_mut() {
            let _ = stdin.write_all(format!("SHED {shed}\n").as_bytes());
            let _ = stdin.flush();
        }
        let _ = read_line(&mut readers[0]);
        std::thread::sleep(Duration::from_secs(1));
    }
    let status = runtime(1).block_on(async {
        let mut poster = Poster::new(&a.post, &a.post_body).ok()?;
        poster.post().await.ok()
    });
    for c in children.iter_mut() {
        if let Some(stdin) = c.stdin.as_mut() {
            let _ = stdin.write_all(b"COUNT\n");
            let _ = stdin.flush();
        }
    }
    let mut received = 0usize;
    for r in readers.iter_mut() {
        let line = read_line(r);
        received += line
            .split(' ')
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
    }
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    let per_session = |key: &str| -> Option<f64> {
        let b = before.as_ref()?[key].as_u64()?;
        let a = after.as_ref()?[key].as_u64()?;
        (opened > 0).then(|| ((a as f64 - b as f64) * 1024.0 / opened as f64).round())
    };
    let server = per_session("server_kib");
    let workers = per_session("workers_kib");
    json!({
        "scenario": "hold",
        "clients_requested": a.clients,
        "procs": procs,
        "opened": opened,
        "connect_failed": failed,
        "shed_before_broadcast": shed,
        "errors": errors,
        "broadcast_status": status,
        "received_broadcast": received,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_session": {
            "server": server,
            "workers": workers,
            "total": server.zip(workers).map(|(s, w)| s + w).or(server),
        },
    })
}

async fn hold_child(a: HoldChildArgs) {
    let target = Target::parse(&a.ws).expect("--ws URL");
    let hits = Arc::new(AtomicUsize::new(0));
    let pattern = Arc::new(a.pattern.into_bytes());
    let (h, p) = (hits.clone(), pattern.clone());
    let handles = Arc::new(Mutex::new(Vec::new()));
    let kept = handles.clone();
    let opened = open_many(
        a.clients,
        &target,
        None,
        &a.common,
        a.max_failures,
        move |_, mut c| {
            let (h, p) = (h.clone(), p.clone());
            let handle = tokio::spawn(async move {
                let mut on_message = |m: Msg<'_>| {
                    if let Msg::Text(t) = m {
                        if contains(t, &p) {
                            h.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                };
                if let Ok(true) = c.drain_buffered(&mut on_message).await {
                    while let Ok(true) = c.pump(&mut on_message).await {}
                }
            });
            kept.lock().unwrap().push(handle);
        },
    )
    .await;
    let error = opened
        .first_error
        .clone()
        .unwrap_or_else(|| "-".into())
        .replace('\n', " ");
    println!("OPENED {} {} {}", opened.ok, opened.failed, error);
    let _ = std::io::stdout().flush();
    // Wait for COUNT on stdin (read on a blocking thread), then report deliveries.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let bound = Duration::from_secs(900);
    let mut live = opened.ok;
    let mut command = tokio::time::timeout(bound, rx.recv()).await;
    if let Ok(Some(line)) = &command {
        if let Some(k) = line
            .strip_prefix("SHED ")
            .and_then(|k| k.trim().parse::<usize>().ok())
        {
            for h in handles.lock().unwrap().iter().rev().take(k) {
                h.abort();
            }
            live -= k.min(live);
            println!("SHED_OK {k}");
            let _ = std::io::stdout().flush();
            command = tokio::time::timeout(bound, rx.recv()).await;
        }
    }
    if let Ok(Some(_)) = command {
        let before = hits.load(Ordering::Relaxed);
        let target_hits = before.max(live);
        wait_until(Duration::from_secs(20), || {
            hits.load(Ordering::Relaxed) >= target_hits
        })
        .await;
        println!("RECEIVED {}", hits.load(Ordering::Relaxed));
        let _ = std::io::stdout().flush();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
}
