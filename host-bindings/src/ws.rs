//! WebSocket data crossing between host and isolate: session events in, operations
//! and queries out. Plain data only.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a session looked like when it opened; sent to an isolate once per session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Session id, unique across nodes and restarts.
    pub id: String,
    /// The upgrade request's path as the client sent it.
    pub path: String,
    /// Query parameters of the upgrade request.
    pub params: BTreeMap<String, String>,
    /// Upgrade request headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Client address (first `x-forwarded-for` hop when present).
    pub peer: String,
    /// HTTP method of the upgrade (`GET`).
    pub method: String,
    /// JSON text of the `data` the mim's `get()` returned (`null` when none).
    pub data: String,
    /// The handler module of the Dirigible endpoint the session came in on
    /// (`/websockets/v4/service/<endpoint>`, SPEC 5.4): its events go to that
    /// module's `onOpen`/`onMessage`/`onError`/`onClose` instead of `webSocketEvent`.
    #[serde(default)]
    pub handler: Option<String>,
}

/// One event of a session for `webSocketEvent`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WsEvent {
    /// Session id.
    pub session: String,
    /// The session's description when this isolate has not seen it yet.
    pub info: Option<SessionInfo>,
    /// `open`, `message`, `close`, `error`, or `resume` (a restarted isolate learning
    /// of an open session; no handler call).
    pub kind: String,
    /// Message text (base64 for binary frames).
    pub message: Option<String>,
    /// Whether `message` came from a binary frame.
    pub binary: bool,
    /// Close code of a `close` event.
    pub close_code: Option<u16>,
    /// Error text of an `error` event.
    pub error: Option<String>,
}

/// A one-way WebSocket operation of a mim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum WsOp {
    /// Reply to a session (`{body, end}` from `webSocketEvent`).
    Reply {
        /// Target session.
        session: String,
        /// Text to send (may be empty when only closing); base64 when `binary`.
        body: Option<String>,
        /// Close the session with 1000 afterwards.
        end: bool,
        /// `body` is base64 of bytes the mim gave (`ArrayBuffer`/`Uint8Array`): send
        /// a binary frame.
        #[serde(default)]
        binary: bool,
    },
    /// `send(id, text)`.
    Send {
        /// Target session.
        session: String,
        /// Text; base64 when `binary`.
        text: String,
        /// Send `text` decoded as a binary frame.
        #[serde(default)]
        binary: bool,
    },
    /// `sendToGroup(group, text)`.
    SendToGroup {
        /// Group name.
        group: String,
        /// Text; base64 when `binary`.
        text: String,
        /// Send `text` decoded as a binary frame.
        #[serde(default)]
        binary: bool,
    },
    /// `sendToAll(text)`: every session of the container.
    SendToAll {
        /// Text; base64 when `binary`.
        text: String,
        /// Send `text` decoded as a binary frame.
        #[serde(default)]
        binary: bool,
    },
    /// `addToGroup(group, id)`.
    AddToGroup {
        /// Group name.
        group: String,
        /// Session.
        session: String,
    },
    /// `removeFromGroup(group, id)`.
    RemoveFromGroup {
        /// Group name.
        group: String,
        /// Session.
        session: String,
    },
    /// `close(id, code, reason)`.
    Close {
        /// Session.
        session: String,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Mesa's `dispatcher.dispatch(message, recipients, excluding)`: `text` to every
    /// session whose client id is in `recipients` (`*`: all), minus `excluding`.
    DispatchToClients {
        /// The encoded `{"op","d","t"}` frame.
        text: String,
        /// Client ids, or `["*"]`.
        recipients: Vec<String>,
        /// Client ids left out (ignored for `*`).
        excluding: Vec<String>,
        /// Keep messages for client ids not connected and deliver them on bind.
        sync: bool,
        /// The Dispatcher's `namespace` option (SPEC 6); None: the container's.
        #[serde(default)]
        namespace: Option<String>,
    },
    /// `setClientId(id, clientId)`.
    SetClientId {
        /// Session.
        session: String,
        /// Client id to bind.
        client_id: String,
    },
}

/// A WebSocket question a mim waits for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum WsQuery {
    /// `getGroupSize(group)`.
    GroupSize(String),
    /// `getGroupMembers(group)`.
    GroupMembers(String),
    /// Is this an open session of the container? (`send` to an id the isolate has not
    /// seen an event of.)
    SessionExists(String),
}

/// The host's answer to a [`WsQuery`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum WsAnswer {
    /// A count.
    Size(u64),
    /// Session ids.
    Members(Vec<String>),
    /// Yes or no.
    Flag(bool),
}
