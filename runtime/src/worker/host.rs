//! The worker's side of [`HostApi`]: everything a mim does becomes a frame in one
//! outgoing buffer, written to the host in one go at the end of each turn.

use crate::ipc::{encode_into, FromWorker};
use crate::store::SledStore;
use mimhost_bindings::{HostApi, LogLevel, Storage, StorageError};
use std::cell::RefCell;

/// A store that is not open: every call fails with the reason.
struct NoStore(String);

impl Storage for NoStore {
    fn get(&self, _: &str) -> Result<Option<String>, StorageError> {
        Err(StorageError(self.0.clone()))
    }
    fn set(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), StorageError> {
        Err(StorageError(self.0.clone()))
    }
    fn remove(&self, _: &str) -> Result<(), StorageError> {
        Err(StorageError(self.0.clone()))
    }
    fn items(&self, _: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        Err(StorageError(self.0.clone()))
    }
    fn remove_by_tag(&self, _: &str) -> Result<usize, StorageError> {
        Err(StorageError(self.0.clone()))
    }
}

/// Buffers a mim's output for the host and owns its store.
pub struct WorkerHost {
    out: RefCell<Vec<u8>>,
    store: Result<SledStore, NoStore>,
}

impl WorkerHost {
    /// A host over the store in `store_dir` (a store that fails to open makes every
    /// storage call throw, and the mim still serves).
    pub fn new(store_dir: &std::path::Path) -> Self {
        let store = SledStore::open(store_dir).map_err(|e| NoStore(e.0));
        Self { out: RefCell::new(Vec::with_capacity(64 * 1024)), store }
    }

    /// Queues a frame for the host.
    pub fn send(&self, message: &FromWorker) {
        encode_into(message, &mut self.out.borrow_mut());
    }

    /// Makes the store durable if this turn wrote to it, then hands over the buffered
    /// frames: nothing leaves the worker before the writes it depends on are on disk.
    pub fn take_output(&self) -> Vec<u8> {
        if let Ok(store) = &self.store {
            if let Err(e) = store.flush_if_dirty() {
                self.log(LogLevel::Error, &format!("store flush failed: {e}"));
            }
        }
        std::mem::take(&mut *self.out.borrow_mut())
    }
}

impl HostApi for WorkerHost {
    fn http_start(&self, id: u64, status: u16, headers: Vec<(String, String)>) {
        self.send(&FromWorker::HttpStart { id, status, headers });
    }

    fn http_chunk(&self, id: u64, chunk: String) {
        self.send(&FromWorker::HttpChunk { id, chunk });
    }

    fn http_end(&self, id: u64) {
        self.send(&FromWorker::HttpEnd { id });
    }

    fn http_full(&self, id: u64, status: u16, headers: Vec<(String, String)>, body: String) {
        self.send(&FromWorker::HttpFull { id, status, headers, body });
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
        };
        self.send(&FromWorker::Log { level, message: message.to_string() });
    }

    fn storage(&self) -> &dyn Storage {
        match &self.store {
            Ok(s) => s,
            Err(e) => e,
        }
    }
}
