//! The worker's side of [`HostApi`]: everything a mim does becomes a frame in one
//! outgoing buffer, handed at the end of each turn to the committer, which writes it
//! to the host once the turn's storage writes are durable.

use super::committer::{Committer, Turn};
use super::link::{Link, LinkClosed};
use crate::ipc::{encode_into, FromWorker, ToWorker};
use crate::store::OpenStore;
use mimhost_bindings::{
    ClientAnswer, ClientCall, ClientOp, HostApi, LogLevel, Storage, StorageError, WsAnswer, WsOp,
    WsQuery,
};
use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};

static NOT_LOADED: NoStore = NoStore(Cow::Borrowed("the store is not open yet"));

/// A store that is not open: every call fails with the reason.
struct NoStore(Cow<'static, str>);

impl Storage for NoStore {
    fn get(&self, _: &str) -> Result<Option<String>, StorageError> {
        Err(StorageError(self.0.to_string()))
    }
    fn set(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), StorageError> {
        Err(StorageError(self.0.to_string()))
    }
    fn remove(&self, _: &str) -> Result<(), StorageError> {
        Err(StorageError(self.0.to_string()))
    }
    fn items(&self, _: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        Err(StorageError(self.0.to_string()))
    }
    fn remove_by_tag(&self, _: &str) -> Result<usize, StorageError> {
        Err(StorageError(self.0.to_string()))
    }
}

/// Buffers a mim's output for the host, owns its store and the link to the host.
pub struct WorkerHost {
    out: RefCell<Vec<u8>>,
    store: OnceCell<Result<OpenStore, NoStore>>,
    link: RefCell<Link>,
    committer: RefCell<Committer>,
    /// Id of the last outbound HTTP request (unique in this process, across hot swaps).
    outbound_ids: Cell<u64>,
    /// The last turn wrote to the store (its answers wait for the committer's `fsync`).
    stored_last_turn: Cell<bool>,
}

impl WorkerHost {
    /// A host reading through `link` and writing through `committer`; the store opens
    /// with the first load.
    pub fn new(link: Link, committer: Committer) -> Self {
        Self {
            out: RefCell::new(Vec::with_capacity(64 * 1024)),
            store: OnceCell::new(),
            link: RefCell::new(link),
            committer: RefCell::new(committer),
            outbound_ids: Cell::new(0),
            stored_last_turn: Cell::new(false),
        }
    }

    /// Opens container `name`'s store unless open: in `store_dir`, or in the cluster's
    /// Redis when the host passed its URL in [`super::REDIS_ENV`]. A store that fails
    /// to open makes every storage call throw, and the mim still serves.
    pub fn open_store(&self, store_dir: &std::path::Path, name: &str) {
        self.store.get_or_init(|| {
            let redis = std::env::var(super::REDIS_ENV).ok();
            OpenStore::open(store_dir, name, redis.as_deref()).map_err(|e| NoStore(Cow::Owned(e.0)))
        });
    }

    /// Messages from the host (see [`Link::receive`]); no spinning after a turn
    /// whose answers wait for the store's `fsync` (the next call cannot come sooner).
    pub fn receive(
        &self,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<ToWorker>, LinkClosed> {
        let may_spin = !self.stored_last_turn.get();
        self.link.borrow_mut().receive(timeout, may_spin)
    }

    /// Hands everything buffered to the committer, which sends it once the store
    /// writes made so far are durable (without waiting for that here).
    pub fn flush(&self) -> Result<(), LinkClosed> {
        let frames = std::mem::take(&mut *self.out.borrow_mut());
        let durability = match self.store.get() {
            Some(Ok(store)) => store.take_dirty(),
            _ => None,
        };
        self.stored_last_turn.set(durability.is_some());
        self.committer
            .borrow()
            .submit(Turn { frames, durability })
            .map_err(|_| LinkClosed)
    }

    /// Sends everything buffered and waits until it is durable and written (the
    /// worker is about to exit).
    pub fn finish(&self) {
        let _ = self.flush();
        self.committer.borrow_mut().finish();
    }

    /// Queues a frame for the host.
    pub fn send(&self, message: &FromWorker) {
        encode_into(message, &mut self.out.borrow_mut());
    }
}

impl HostApi for WorkerHost {
    fn http_start(&self, id: u64, status: u16, headers: Vec<(String, String)>) {
        self.send(&FromWorker::HttpStart {
            id,
            status,
            headers,
        });
    }

    fn http_chunk(&self, id: u64, chunk: Vec<u8>) {
        self.send(&FromWorker::HttpChunk { id, chunk });
    }

    fn http_end(&self, id: u64) {
        self.send(&FromWorker::HttpEnd { id });
    }

    fn http_full(&self, id: u64, status: u16, headers: Vec<(String, String)>, body: Vec<u8>) {
        self.send(&FromWorker::HttpFull {
            id,
            status,
            headers,
            body,
        });
    }

    fn dispatch(&self, frames: Vec<String>) {
        self.send(&FromWorker::Dispatch { frames });
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => 0,
            LogLevel::Info => 1,
            LogLevel::Warn => 2,
            LogLevel::Error => 3,
            LogLevel::Uncaught => crate::ipc::LOG_UNCAUGHT,
        };
        self.send(&FromWorker::Log {
            level,
            message: message.to_string(),
        });
    }

    fn storage(&self) -> &dyn Storage {
        match self.store.get() {
            Some(Ok(s)) => s,
            Some(Err(e)) => e,
            None => &NOT_LOADED,
        }
    }

    fn flush(&self) {
        if WorkerHost::flush(self).is_err() {
            std::process::exit(0);
        }
    }

    fn ws_accept(&self, id: u64, data: String, protocols: Vec<String>) {
        self.send(&FromWorker::WsAccept {
            id,
            data,
            protocols,
        });
    }

    fn ws(&self, op: WsOp) {
        self.send(&FromWorker::Ws(op));
    }

    /// Sends the query with everything before it, then waits for the answer; requests
    /// arriving meanwhile wait their turn.
    fn ws_query(&self, query: WsQuery) -> WsAnswer {
        self.send(&FromWorker::WsQuery(query));
        let fallback = WsAnswer::Size(0);
        if self.flush().is_err() {
            return fallback;
        }
        let answer = self.link.borrow_mut().wait_for(|m| match m {
            ToWorker::WsAnswer(a) => Some(a.clone()),
            _ => None,
        });
        answer.unwrap_or_else(|_| std::process::exit(0))
    }

    fn outbound_http(&self, request: mimhost_bindings::OutboundHttpRequest) -> u64 {
        let id = self.outbound_ids.get() + 1;
        self.outbound_ids.set(id);
        self.send(&FromWorker::OutboundHttpRequest { id, request });
        id
    }

    fn delete_file(&self, path: &str) {
        self.send(&FromWorker::OutboundHttpDeleteFile {
            path: path.to_string(),
        });
    }

    /// Sends the call with everything before it, then waits for the answer (as
    /// [`HostApi::ws_query`] does).
    fn ws_client_call(&self, call: ClientCall) -> ClientAnswer {
        self.send(&FromWorker::WsClientCall(call));
        if self.flush().is_err() {
            std::process::exit(0);
        }
        let answer = self.link.borrow_mut().wait_for(|m| match m {
            ToWorker::WsClientAnswer(a) => Some(a.clone()),
            _ => None,
        });
        answer.unwrap_or_else(|_| std::process::exit(0))
    }

    fn ws_client_op(&self, op: ClientOp) {
        self.send(&FromWorker::WsClientOp(op));
    }
}
