//! Everything a mim's JavaScript sees, and nothing of the server around it.
//!
//! An [`Isolate`] is one Boa context running one container's code. It reaches the
//! host only through the [`HostApi`] trait (responses, dispatches, logs, storage), so
//! it can be driven without a server and the server never touches a `JsValue`.

mod bytes;
mod host_api;
mod isolate;
mod jobs;
mod modules;
mod natives;
pub mod nesting;
mod net;
mod net_natives;
mod outbound;
mod request;
mod response;
mod ws;

pub use host_api::{DiscardStorage, HostApi, LogLevel, Storage, StorageError};
pub use isolate::{Isolate, LoadError, MimSpec};
pub use net::{
    resolve_handler, ClientAnswer, ClientCall, ClientData, ClientEvent, ClientOp,
    MAX_CLIENTS_PER_CONTAINER, MAX_QUEUED_CLIENT_SENDS,
};
pub use outbound::{
    file_area_path, FileAreaError, OutboundHttpEvent, OutboundHttpHead, OutboundHttpMode,
    OutboundHttpRequest,
};
pub use request::HttpRequest;
pub use ws::{SessionInfo, WsAnswer, WsEvent, WsOp, WsQuery};
