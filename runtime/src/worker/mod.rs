//! The worker process (`mimhost worker`): one Boa context on one big-stack thread.
//!
//! It reads framed requests from the host over an inherited unix socket (fd 3), runs
//! them, drives timers and promise jobs, and writes every answer of a turn back in one
//! write. A watchdog thread ends the process when it grows past its memory limit.

mod committer;
mod host;
mod link;
mod unflushed;

use crate::ipc::{FromWorker, ToWorker};
use host::WorkerHost;
use link::Link;
use mimhost_bindings::{HttpRequest, Isolate, LogLevel, MimSpec};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The file descriptor the host passes the socket on.
pub const IPC_FD: i32 = 3;
/// Env var carrying the memory limit in bytes.
pub const MEMORY_ENV: &str = "MIMHOST_WORKER_MEMORY";
/// Env var carrying the cluster's Redis URL: the worker's store is then in Redis.
pub const REDIS_ENV: &str = "MIMHOST_WORKER_REDIS";
/// Exit code of a worker that went over its memory limit.
pub const EXIT_MEMORY: i32 = 86;
/// Stack of the JavaScript thread: deep but legal recursion must not overflow it.
const JS_STACK_BYTES: usize = 512 * 1024 * 1024;

/// Runs the worker process; returns its exit code.
pub fn run() -> i32 {
    if let Some(limit) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::spawn(move || watch_memory(limit));
    }
    // SAFETY: the host started this process with the socket on IPC_FD and nothing else
    // in this process owns that descriptor.
    let stream = unsafe { UnixStream::from_raw_fd(IPC_FD) };
    let js = std::thread::Builder::new()
        .name("js".into())
        .stack_size(JS_STACK_BYTES)
        .spawn(move || serve(stream));
    match js.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        _ => 70,
    }
}

/// Ends the process when its resident memory passes `limit` bytes.
fn watch_memory(limit: u64) {
    let page = 4096u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let resident = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * page;
        if resident > limit {
            eprintln!(
                "mimhost worker: {resident} bytes resident is over the {limit}-byte limit; exiting"
            );
            std::process::exit(EXIT_MEMORY);
        }
    }
}

/// The loaded mim and what is needed to rebuild it after a panic.
struct Loaded {
    isolate: Isolate,
    spec: MimSpec,
}

/// The JavaScript thread's loop: take what the host sent, run it, run due timers,
/// then hand every answer of the turn to the committer (which sends them once the
/// turn's writes are durable) and go on.
fn serve(stream: UnixStream) -> i32 {
    let Ok(writer) = stream.try_clone() else {
        return 70;
    };
    let host = Rc::new(WorkerHost::new(
        Link::new(stream),
        committer::Committer::start(writer),
    ));
    let mut loaded: Option<Loaded> = None;
    let mut next_timer: Option<Duration> = None;
    loop {
        let Ok(messages) = host.receive(next_timer) else {
            return 0;
        };
        let mut done_seq = None;
        for message in messages {
            match message {
                ToWorker::Shutdown => {
                    host.finish();
                    return 0;
                }
                ToWorker::Load { spec, store_dir } => {
                    host.open_store(&store_dir, &spec.name);
                    load(&host, spec, &mut loaded);
                }
                ToWorker::Ping { id } => host.send(&FromWorker::Pong { id }),
                ToWorker::Http { id, request } => handle_http(&host, &mut loaded, id, request),
                ToWorker::Ws { seq, event } => {
                    if let Some(l) = loaded.as_mut() {
                        guarded(&host, l, |isolate| isolate.handle_ws(&event));
                    }
                    done_seq = Some(seq);
                }
                ToWorker::OutboundHttp { id, event } => {
                    if let Some(l) = loaded.as_mut() {
                        guarded(&host, l, |isolate| isolate.outbound_http(id, &event));
                    }
                }
                ToWorker::WsClient { seq, event } => {
                    if let Some(l) = loaded.as_mut() {
                        guarded(&host, l, |isolate| isolate.handle_client(&event));
                    }
                    done_seq = Some(seq);
                }
                ToWorker::WsAnswer(_) | ToWorker::WsClientAnswer(_) => {}
            }
        }
        if let Some(seq) = done_seq {
            host.send(&FromWorker::Done { seq });
        }
        if let Some(l) = loaded.as_mut() {
            next_timer = guarded(&host, l, |isolate| isolate.run_timers()).flatten();
        }
        if host.flush().is_err() {
            return 0;
        }
    }
}

/// Loads (or hot swaps to) `spec`; a failed load keeps the previous code.
fn load(host: &Rc<WorkerHost>, spec: MimSpec, loaded: &mut Option<Loaded>) {
    let result = catch_unwind(AssertUnwindSafe(|| Isolate::load(&spec, host.clone())));
    let error = match result {
        Ok(Ok(mut isolate)) => {
            if let Some(previous) = loaded.as_mut() {
                previous.isolate.pass_sessions_to(&mut isolate);
            }
            *loaded = Some(Loaded { isolate, spec });
            None
        }
        Ok(Err(e)) => Some(e.0),
        Err(_) => Some("the JavaScript engine panicked while loading the mim".to_string()),
    };
    let ws_handler = loaded.as_mut().is_some_and(|l| l.isolate.has_ws_handler());
    host.send(&FromWorker::Loaded { error, ws_handler });
}

/// Runs `f` on the isolate; a Boa panic rebuilds the context from the same code.
fn guarded<R>(
    host: &Rc<WorkerHost>,
    loaded: &mut Loaded,
    f: impl FnOnce(&mut Isolate) -> R,
) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(|| f(&mut loaded.isolate))) {
        Ok(r) => Some(r),
        Err(_) => {
            use mimhost_bindings::HostApi;
            host.log(
                LogLevel::Error,
                "the JavaScript engine panicked; rebuilding the context",
            );
            match Isolate::load(&loaded.spec, host.clone()) {
                Ok(isolate) => loaded.isolate = isolate,
                Err(e) => host.log(LogLevel::Error, &format!("rebuild failed: {e}")),
            }
            None
        }
    }
}

/// Runs one HTTP request, answering 500 when the engine panics or nothing is loaded.
fn handle_http(host: &Rc<WorkerHost>, loaded: &mut Option<Loaded>, id: u64, request: HttpRequest) {
    let answered = match loaded.as_mut() {
        Some(l) => guarded(host, l, |isolate| isolate.handle_http(id, request)).is_some(),
        None => false,
    };
    if !answered {
        let body = crate::http::body::error_value(
            500,
            "the mim's JavaScript engine failed on this request",
        );
        host.send(&FromWorker::HttpFull {
            id,
            status: 500,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        });
    }
}

/// Where a container's store lives under the data folder.
pub fn store_dir(data: &std::path::Path, container: &str) -> PathBuf {
    data.join("store").join(container)
}
