//! The one narrow interface between a mim's JavaScript and the host process.

use crate::net::{ClientAnswer, ClientCall, ClientOp};
use crate::ws::{WsAnswer, WsOp, WsQuery};
use std::fmt;

/// Severity of a line a mim writes with `console.*` or `log.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `console.debug`, `log.debug`.
    Debug,
    /// `console.log`, `console.info`, `log.info`.
    Info,
    /// `console.warn`, `log.warn`.
    Warn,
    /// `console.error`, `log.error`, and errors the host reports for the mim.
    Error,
    /// An error the mim's code threw and did not catch (a handler, a timer, a
    /// promise): logged at error level and tagged `uncaught` in the container's log.
    Uncaught,
}

impl LogLevel {
    /// Parses the level name the JavaScript prelude passes (`"info"`, ...).
    pub fn from_name(name: &str) -> Self {
        match name {
            "debug" => Self::Debug,
            "warn" => Self::Warn,
            "error" => Self::Error,
            "uncaught" => Self::Uncaught,
            _ => Self::Info,
        }
    }
}

/// A storage failure, shown to the mim as a thrown `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError(pub String);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

/// One container's key-value store behind `context.storage` (values are strings).
///
/// Iteration is oldest first; implementations must keep that order across restarts.
pub trait Storage {
    /// The value of `key`, or `None`.
    fn get(&self, key: &str) -> Result<Option<String>, StorageError>;
    /// Sets `key` to `value`, with an optional tag; a rewrite keeps the key's age.
    fn set(&self, key: &str, value: &str, tag: Option<&str>) -> Result<(), StorageError>;
    /// Removes `key` (and its tag entry); a missing key is no error.
    fn remove(&self, key: &str) -> Result<(), StorageError>;
    /// Every `(key, value)` oldest first, only those tagged `tag` when given.
    fn items(&self, tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError>;
    /// Removes every item tagged `tag`; returns how many went.
    fn remove_by_tag(&self, tag: &str) -> Result<usize, StorageError>;
}

/// A store that keeps nothing: reads find nothing, writes are dropped. For hosts that
/// run mims without their data (the `ipc-cost` bench, in-process tests), so each of
/// them need not write its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardStorage;

impl Storage for DiscardStorage {
    fn get(&self, _: &str) -> Result<Option<String>, StorageError> {
        Ok(None)
    }
    fn set(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), StorageError> {
        Ok(())
    }
    fn remove(&self, _: &str) -> Result<(), StorageError> {
        Ok(())
    }
    fn items(&self, _: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        Ok(Vec::new())
    }
    fn remove_by_tag(&self, _: &str) -> Result<usize, StorageError> {
        Ok(0)
    }
}

/// What the host offers a running mim. Calls are one-way unless they return a value.
pub trait HostApi {
    /// Starts a streamed HTTP response (status and headers; chunks follow).
    fn http_start(&self, request: u64, status: u16, headers: Vec<(String, String)>);
    /// One chunk of a streamed HTTP response (bytes: a mim may send binary data).
    fn http_chunk(&self, request: u64, chunk: Vec<u8>);
    /// Ends a streamed HTTP response.
    fn http_end(&self, request: u64);
    /// A whole HTTP response at once (the body as bytes: text is sent as UTF-8).
    fn http_full(&self, request: u64, status: u16, headers: Vec<(String, String)>, body: Vec<u8>);
    /// Sends already-encoded text frames to every session of the dispatch channel, in order.
    fn dispatch(&self, frames: Vec<String>);
    /// Accepts a WebSocket upgrade: `get()` returned `{webSocket: {data, subProtocols}}`.
    fn ws_accept(&self, request: u64, data: String, protocols: Vec<String>);
    /// A one-way WebSocket operation (reply, send, groups, close, ...), kept in order.
    fn ws(&self, op: WsOp);
    /// A WebSocket question whose answer the mim waits for.
    fn ws_query(&self, query: WsQuery) -> WsAnswer;
    /// Sends everything the mim produced so far now instead of at the end of the turn
    /// (an explicit `dispatchWebSocketEvent()` flush).
    fn flush(&self);
    /// A log line from the mim.
    fn log(&self, level: LogLevel, message: &str);
    /// The container's store.
    fn storage(&self) -> &dyn Storage;
    /// Starts an outbound HTTP request (`context.http.request`, `fetch`) made by the
    /// host; returns its id, unique in this worker process. What comes back reaches
    /// the isolate through [`crate::Isolate::outbound_http`].
    fn outbound_http(&self, request: crate::OutboundHttpRequest) -> u64;
    /// Removes a file of the container's file area (`context.storage.deleteFile`);
    /// the path is already checked with [`crate::file_area_path`].
    fn delete_file(&self, path: &str);
    /// An `sdk/net` call on outbound WebSocket clients whose answer the mim waits
    /// for. Hosts that open no sockets (tests, benches) keep this refusal.
    fn ws_client_call(&self, _call: ClientCall) -> ClientAnswer {
        ClientAnswer::Refused("outbound WebSocket clients are not offered by this host".into())
    }
    /// A one-way operation on an outbound client (send, close), kept in order.
    /// Hosts that open no sockets have no clients, so there is nothing to apply.
    fn ws_client_op(&self, _op: ClientOp) {}
}
