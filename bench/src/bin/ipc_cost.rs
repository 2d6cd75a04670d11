//! `ipc-cost`: what the process boundary costs per request.
//!
//! 1. in-process: `Isolate::load` with a do-nothing `HostApi`, then
//!    `isolate.handle_http(id, request)` in a loop — the JS alone;
//! 2. through a real worker: `Supervisor::start` (which spawns this same binary as
//!    `ipc-cost worker`) and `.http(request, deadline)` awaited one at a time — IPC
//!    framing, two process wake-ups and the JS;
//! 3. the same worker with 64 requests in flight — its throughput when batched.
//!
//! Prints one JSON object; `bench/run.sh` adds the HTTP figures (hello over a real
//! host minus `/healthz`).

use mimhost_bench::now_ns;
use mimhost_bench::stats::Histogram;
use mimhost_bindings::{
    DiscardStorage, HostApi, HttpRequest, Isolate, LogLevel, MimSpec, SessionInfo, Storage,
    WsAnswer, WsOp, WsQuery,
};
use mimhost_runtime::supervisor::{Call, Reply, Supervisor, WorkerEvents, WorkerLimits};
use serde_json::json;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A host that accepts every answer and stores nothing.
#[derive(Default)]
struct NullHost {
    answered: Cell<u64>,
    store: DiscardStorage,
}

impl HostApi for NullHost {
    fn http_start(&self, _: u64, _: u16, _: Vec<(String, String)>) {}
    fn http_chunk(&self, _: u64, _: Vec<u8>) {}
    fn http_end(&self, _: u64) {
        self.answered.set(self.answered.get() + 1);
    }
    fn http_full(&self, _: u64, _: u16, _: Vec<(String, String)>, _: Vec<u8>) {
        self.answered.set(self.answered.get() + 1);
    }
    fn dispatch(&self, _: Vec<String>) {}
    fn ws_accept(&self, _: u64, _: String, _: Vec<String>) {}
    fn ws(&self, _: WsOp) {}
    fn ws_query(&self, _: WsQuery) -> WsAnswer {
        WsAnswer::Size(0)
    }
    fn flush(&self) {}
    fn log(&self, _: LogLevel, _: &str) {}
    fn storage(&self) -> &dyn Storage {
        &self.store
    }
    fn outbound_http(&self, _: mimhost_bindings::OutboundHttpRequest) -> u64 {
        0
    }
    fn delete_file(&self, _: &str) {}
}

/// Worker events with nowhere to go.
struct NullEvents;

impl WorkerEvents for NullEvents {
    fn on_dispatch(&self, _: &str, _: Vec<String>) {}
    fn on_ws(&self, _: &str, _: WsOp) {}
    fn on_query(&self, _: &str, _: WsQuery) -> WsAnswer {
        WsAnswer::Size(0)
    }
    fn sessions_of(&self, _: &str) -> Vec<SessionInfo> {
        Vec::new()
    }
    fn on_stopped(&self, _: &str) {}
}

fn arg(name: &str, fallback: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| fallback.to_string())
}

fn hello_request() -> HttpRequest {
    let mut headers = BTreeMap::new();
    headers.insert("host".to_string(), "127.0.0.1:8083".to_string());
    headers.insert("user-agent".to_string(), "ipc-cost".to_string());
    HttpRequest {
        method: "GET".into(),
        url: "/".into(),
        path: "/".into(),
        full_path: "/hello/".into(),
        query: BTreeMap::new(),
        headers,
        body: Vec::new(),
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port: 8083,
        remote_address: "127.0.0.1".into(),
        web_socket: false,
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        std::process::exit(mimhost_runtime::worker::run());
    }
    now_ns();
    let mim = PathBuf::from(arg("--mim", "mims/hello"));
    let iterations: usize = arg("--iterations", "20000")
        .parse()
        .expect("--iterations N");
    // Seconds of the 64-in-flight phase (0 skips it: handy under `perf stat`).
    let parallel_s: f64 = arg("--parallel-seconds", "2")
        .parse()
        .expect("--parallel-seconds S");
    let name = mim
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "hello".into());
    let spec = MimSpec {
        name: name.clone(),
        root: mim.clone(),
        entry: PathBuf::from("index.js"),
        env: BTreeMap::new(),
        base_path: format!("/{name}"),
        http_port: 8083,
        node_id: "ipc-cost".into(),
    };
    let request = hello_request();

    // 1. In-process.
    let host = Rc::new(NullHost::default());
    let mut isolate = Isolate::load(&spec, host.clone()).expect("the mim loads");
    for i in 0..(iterations / 10).max(100) {
        isolate.handle_http(i as u64, request.clone());
    }
    let in_process = Histogram::new();
    let started = now_ns();
    for i in 0..iterations {
        let r = request.clone();
        let t0 = now_ns();
        isolate.handle_http(i as u64, r);
        in_process.record(now_ns() - t0);
    }
    let in_process_total = now_ns() - started;
    assert!(
        host.answered.get() as usize >= iterations,
        "the handler answers"
    );
    drop(isolate);

    // 2 and 3. Through a worker process.
    let store = std::env::temp_dir().join(format!("ipc-cost-{}", std::process::id()));
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let (sequential, sequential_total, parallel_rps) = runtime.block_on(async {
        let limits = WorkerLimits {
            handler_timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            outbound: Arc::new(mimhost_runtime::outbound::OutboundHttp::new(
                &store,
                10 << 20,
            )),
            queue: Default::default(),
            store_redis: None,
        };
        let sup = Supervisor::start(spec.clone(), store.clone(), limits, Arc::new(NullEvents))
            .await
            .expect("the worker starts");
        let call = |sup: Arc<Supervisor>, request: HttpRequest| async move {
            match sup.invoke(Call::Http(request)).await {
                Ok(Reply::Full { .. }) => true,
                Ok(Reply::Stream { mut body, .. }) => {
                    while let Some(chunk) = body.next().await {
                        if chunk.is_err() {
                            return false;
                        }
                    }
                    true
                }
                _ => false,
            }
        };
        for _ in 0..(iterations / 10).max(100) {
            call(sup.clone(), request.clone()).await;
        }
        let hist = Histogram::new();
        let started = now_ns();
        for _ in 0..iterations {
            let t0 = now_ns();
            assert!(call(sup.clone(), request.clone()).await, "worker answers");
            hist.record(now_ns() - t0);
        }
        let total = now_ns() - started;
        // 64 in flight for a while.
        let end = now_ns() + (parallel_s * 1e9) as u64;
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p_start = now_ns();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (sup, request, done) = (sup.clone(), request.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while now_ns() < end {
                    if call(sup.clone(), request.clone()).await {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let rps = done.load(std::sync::atomic::Ordering::Relaxed) as f64
            / ((now_ns() - p_start) as f64 / 1e9).max(1e-9);
        sup.stop().await;
        (hist, total, rps)
    });
    let _ = std::fs::remove_dir_all(&store);
    let us = |ns: f64| (ns / 100.0).round() / 10.0;
    let in_mean = in_process_total as f64 / iterations as f64;
    let seq_mean = sequential_total as f64 / iterations as f64;
    println!(
        "{}",
        json!({
            "scenario": "ipc-cost",
            "mim": mim.display().to_string(),
            "iterations": iterations,
            "in_process": {"mean_us": us(in_mean), "latency": in_process.summary()},
            "worker_round_trip": {"mean_us": us(seq_mean), "latency": sequential.summary()},
            "boundary_us": us(seq_mean - in_mean),
            "worker_64_in_flight_rps": parallel_rps.round(),
        })
    );
}
