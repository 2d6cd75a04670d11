//! The worker process (`mimhost worker`): one Boa context on one big-stack thread.
//!
//! It reads framed requests from the host over an inherited unix socket (fd 3), runs
//! them, drives timers and promise jobs, and writes every answer of a turn back in one
//! write. A watchdog thread ends the process when it grows past its memory limit.

mod host;

use crate::ipc::{decode_frames, FromWorker, ToWorker};
use host::WorkerHost;
use mimhost_bindings::{HttpRequest, Isolate, LogLevel, MimSpec};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The file descriptor the host passes the socket on.
pub const IPC_FD: i32 = 3;
/// Env var carrying the memory limit in bytes.
pub const MEMORY_ENV: &str = "MIMHOST_WORKER_MEMORY";
/// Exit code of a worker that went over its memory limit.
pub const EXIT_MEMORY: i32 = 86;
/// Stack of the JavaScript thread: deep but legal recursion must not overflow it.
const JS_STACK_BYTES: usize = 512 * 1024 * 1024;

/// Runs the worker process; returns its exit code.
pub fn run() -> i32 {
    if let Some(limit) = std::env::var(MEMORY_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
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
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
            .unwrap_or(0)
            * page;
        if resident > limit {
            eprintln!("mimhost worker: {resident} bytes resident is over the {limit}-byte limit; exiting");
            std::process::exit(EXIT_MEMORY);
        }
    }
}

/// The loaded mim and what is needed to rebuild it after a panic.
struct Loaded {
    isolate: Isolate,
    spec: MimSpec,
}

/// The JavaScript thread's loop.
fn serve(mut stream: UnixStream) -> i32 {
    let mut inbox = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut host: Option<Rc<WorkerHost>> = None;
    let mut loaded: Option<Loaded> = None;
    let mut next_timer: Option<Duration> = None;
    loop {
        if wait_readable(&stream, next_timer) {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return 0,
                Ok(n) => n,
            };
            inbox.extend_from_slice(&chunk[..n]);
            let messages = match decode_frames::<ToWorker>(&mut inbox) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("mimhost worker: {e}");
                    return 65;
                }
            };
            for message in messages {
                match message {
                    ToWorker::Shutdown => {
                        if let Some(h) = &host {
                            let _ = stream.write_all(&h.take_output());
                        }
                        return 0;
                    }
                    ToWorker::Load { spec, store_dir } => {
                        let h = host.get_or_insert_with(|| Rc::new(WorkerHost::new(&store_dir)));
                        load(h, spec, &mut loaded);
                    }
                    ToWorker::Ping { id } => {
                        if let Some(h) = &host {
                            h.send(&FromWorker::Pong { id });
                        }
                    }
                    ToWorker::Http { id, request } => {
                        if let Some(h) = &host {
                            handle_http(h, &mut loaded, id, &request);
                        }
                    }
                }
            }
        }
        if let (Some(h), Some(l)) = (&host, loaded.as_mut()) {
            next_timer = guarded(h, l, |isolate| isolate.run_timers()).flatten();
        }
        if let Some(h) = &host {
            let out = h.take_output();
            if !out.is_empty() && stream.write_all(&out).is_err() {
                return 0;
            }
        }
    }
}

/// Blocks until the socket is readable or `timeout` passes; true when readable.
fn wait_readable(stream: &UnixStream, timeout: Option<Duration>) -> bool {
    let mut fds = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut fds, 1, ms) };
    ready > 0
}

/// Loads (or hot swaps to) `spec`; a failed load keeps the previous code.
fn load(host: &Rc<WorkerHost>, spec: MimSpec, loaded: &mut Option<Loaded>) {
    let result = catch_unwind(AssertUnwindSafe(|| Isolate::load(&spec, host.clone())));
    let error = match result {
        Ok(Ok(isolate)) => {
            *loaded = Some(Loaded { isolate, spec });
            None
        }
        Ok(Err(e)) => Some(e.0),
        Err(_) => Some("the JavaScript engine panicked while loading the mim".to_string()),
    };
    host.send(&FromWorker::Loaded { error });
}

/// Runs `f` on the isolate; a Boa panic rebuilds the context from the same code.
fn guarded<R>(host: &Rc<WorkerHost>, loaded: &mut Loaded, f: impl FnOnce(&mut Isolate) -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(|| f(&mut loaded.isolate))) {
        Ok(r) => Some(r),
        Err(_) => {
            use mimhost_bindings::HostApi;
            host.log(LogLevel::Error, "the JavaScript engine panicked; rebuilding the context");
            match Isolate::load(&loaded.spec, host.clone()) {
                Ok(isolate) => loaded.isolate = isolate,
                Err(e) => host.log(LogLevel::Error, &format!("rebuild failed: {e}")),
            }
            None
        }
    }
}

/// Runs one HTTP request, answering 500 when the engine panics or nothing is loaded.
fn handle_http(host: &Rc<WorkerHost>, loaded: &mut Option<Loaded>, id: u64, request: &HttpRequest) {
    let answered = match loaded.as_mut() {
        Some(l) => guarded(host, l, |isolate| isolate.handle_http(id, request)).is_some(),
        None => false,
    };
    if !answered {
        let body = serde_json::json!({"error": {"status": 500, "message": "the mim's JavaScript engine failed on this request"}});
        host.send(&FromWorker::HttpFull {
            id,
            status: 500,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        });
    }
}

/// Where a container's store lives under the data folder.
pub fn store_dir(data: &std::path::Path, container: &str) -> PathBuf {
    data.join("store").join(container)
}
