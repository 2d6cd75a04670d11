//! JSON <-> JS conversion in the worker: a client's request body parsed and
//! echoed by a mim, and a session's `data` (JSON text from an upgrade) and
//! message turned into the event object `webSocketEvent` gets and back into a
//! reply. The isolate runs on a big-stack thread, as in the worker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mimhost_bindings::{
    HostApi, HttpRequest, Isolate, LogLevel, MimSpec, OutboundHttpRequest, SessionInfo, Storage, StorageError,
    WsAnswer, WsEvent, WsOp, WsQuery,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::OnceLock;

/// The worker's JS thread stack.
const JS_STACK: usize = 512 << 20;

/// Echoes what it gets through JSON, the way real mims use bodies and events.
const MIM: &str = r#"
exports.post = (req) => ({ body: { value: JSON.parse(req.body) } });
exports.webSocketEvent = (e) => ({ body: { data: e.data, message: e.message } });
"#;

/// A store in memory: the target is about values, not durability.
#[derive(Default)]
struct MemoryStore(RefCell<BTreeMap<String, String>>);

impl Storage for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self.0.borrow().get(key).cloned())
    }
    fn set(&self, key: &str, value: &str, _tag: Option<&str>) -> Result<(), StorageError> {
        self.0.borrow_mut().insert(key.into(), value.into());
        Ok(())
    }
    fn remove(&self, key: &str) -> Result<(), StorageError> {
        self.0.borrow_mut().remove(key);
        Ok(())
    }
    fn items(&self, _tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        Ok(self.0.borrow().clone().into_iter().collect())
    }
    fn remove_by_tag(&self, _tag: &str) -> Result<usize, StorageError> {
        Ok(0)
    }
}

/// Counts answers; the target checks every invocation produced one.
#[derive(Default)]
struct Host {
    store: MemoryStore,
    answers: RefCell<usize>,
}

impl HostApi for Host {
    fn http_start(&self, _: u64, _: u16, _: Vec<(String, String)>) {}
    fn http_chunk(&self, _: u64, _: Vec<u8>) {}
    fn http_end(&self, _: u64) {
        *self.answers.borrow_mut() += 1;
    }
    fn http_full(&self, _: u64, status: u16, _: Vec<(String, String)>, body: Vec<u8>) {
        if status == 200 {
            serde_json::from_slice::<serde_json::Value>(&body).expect("an echoed body is JSON");
        }
        *self.answers.borrow_mut() += 1;
    }
    fn dispatch(&self, _: Vec<String>) {}
    fn ws_accept(&self, _: u64, _: String, _: Vec<String>) {}
    fn ws(&self, op: WsOp) {
        if let WsOp::Reply { body: Some(body), .. } = op {
            serde_json::from_str::<serde_json::Value>(&body).expect("a reply object is JSON");
        }
    }
    fn ws_query(&self, _: WsQuery) -> WsAnswer {
        WsAnswer::Flag(false)
    }
    fn flush(&self) {}
    fn log(&self, _: LogLevel, _: &str) {}
    fn storage(&self) -> &dyn Storage {
        &self.store
    }
    fn outbound_http(&self, _: OutboundHttpRequest) -> u64 {
        0
    }
    fn delete_file(&self, _: &str) {}
}

type Job = (Vec<u8>, mpsc::SyncSender<()>);

/// One long-lived isolate on a big-stack thread, fed inputs one at a time.
fn isolate_thread() -> &'static mpsc::SyncSender<Job> {
    static THREAD: OnceLock<mpsc::SyncSender<Job>> = OnceLock::new();
    THREAD.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        std::thread::Builder::new()
            .stack_size(JS_STACK)
            .spawn(move || {
                let dir = tempfile::tempdir().expect("a temp dir");
                std::fs::write(dir.path().join("index.js"), MIM).expect("write the mim");
                let spec = MimSpec {
                    name: "fuzz".into(),
                    root: dir.path().to_path_buf(),
                    entry: "index.js".into(),
                    base_path: "/fuzz".into(),
                    ..MimSpec::default()
                };
                let host = Rc::new(Host::default());
                let mut isolate = Isolate::load(&spec, host.clone()).expect("the mim loads");
                for (id, (input, done)) in rx.into_iter().enumerate() {
                    run(&mut isolate, &host, id as u64, &input);
                    let _ = done.send(());
                }
            })
            .expect("spawn the isolate thread");
        tx
    })
}

fn run(isolate: &mut Isolate, host: &Host, id: u64, input: &[u8]) {
    let text = String::from_utf8_lossy(input).into_owned();
    let before = *host.answers.borrow();
    let request = HttpRequest {
        method: "POST".into(),
        url: "/".into(),
        path: "/".into(),
        full_path: "/fuzz/".into(),
        body: text.clone().into_bytes(),
        ..HttpRequest::default()
    };
    isolate.handle_http(id, request);
    assert_eq!(*host.answers.borrow(), before + 1, "every request is answered");
    // The session's `data` is JSON text the host made from what `get()` returned.
    let data = serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "null".into());
    let session = format!("s{id}");
    let info = SessionInfo {
        id: session.clone(),
        data,
        ..SessionInfo::default()
    };
    for (kind, message) in [("open", None), ("message", Some(text)), ("close", None)] {
        isolate.handle_ws(&WsEvent {
            session: session.clone(),
            info: (kind == "open").then(|| info.clone()),
            kind: kind.into(),
            message,
            ..WsEvent::default()
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    isolate_thread()
        .send((data.to_vec(), done_tx))
        .expect("isolate thread alive");
    done_rx.recv().expect("isolate thread answered");
});
