//! Dirigible's `sdk/net` WebSockets (SPEC 5.4) as plain data crossing between host
//! and isolate: calls and operations on outbound clients going out, client events
//! coming in, and how a descriptor's `handler` names a module of the mim.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Most outbound clients one container may hold open (or opening) at once.
pub const MAX_CLIENTS_PER_CONTAINER: usize = 256;

/// Most messages a client queues before its socket is open (and, once open, before
/// its socket takes them).
pub const MAX_QUEUED_CLIENT_SENDS: usize = 1024;

/// An outbound client as the mim sees it (`getClients()` gives these as plain data).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientData {
    /// Client id, unique on the host.
    pub id: String,
    /// The URI it connects to.
    pub uri: String,
    /// The handler module named at `createWebsocket`.
    pub handler: String,
    /// Whether the socket is open yet (else it is still connecting).
    pub open: bool,
}

/// An `sdk/net` call the mim waits for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClientCall {
    /// `createWebsocket(uri, handler)`: starts connecting at once.
    Create {
        /// `ws://` or `wss://` URI.
        uri: String,
        /// Handler module for the client's events.
        handler: String,
    },
    /// `getClients()`.
    List,
    /// `getClient(id)`.
    Get(String),
    /// `getClientByHandler(handler)` (first match).
    ByHandler(String),
}

/// The host's answer to a [`ClientCall`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClientAnswer {
    /// One client, or none.
    Client(Option<ClientData>),
    /// The open and opening clients, oldest first.
    Clients(Vec<ClientData>),
    /// The call was refused; the text says why (thrown as an `Error` in the mim).
    Refused(String),
}

/// A one-way operation on an outbound client, applied in order after what the mim
/// did before it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClientOp {
    /// `client.send(text)`: queued until the socket is open.
    Send {
        /// Client id.
        client: String,
        /// The text message.
        text: String,
    },
    /// `client.close()`: after the sends queued before it.
    Close {
        /// Client id.
        client: String,
    },
}

/// One event of an outbound client for its handler module.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientEvent {
    /// Client id.
    pub client: String,
    /// The handler module named at `createWebsocket`.
    pub handler: String,
    /// `open`, `message`, `error` or `close`.
    pub kind: String,
    /// Message text of a `message` event (base64 for binary messages).
    pub message: Option<String>,
    /// Error text of an `error` event.
    pub error: Option<String>,
}

/// Finds the module a descriptor's or client's `handler` names, as `require` would
/// from the mim's root: with or without `.js`, and with a first segment that names
/// no folder of the mim dropped (Dirigible's project name: seed 002's
/// `"my-project/ws-handler"` is `ws-handler.js`). The error says what was looked for.
pub fn resolve_handler(root: &Path, handler: &str) -> Result<PathBuf, String> {
    let trimmed = handler
        .trim()
        .trim_start_matches("./")
        .trim_start_matches('/');
    let trimmed = trimmed.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("the handler is empty: name a module of the mim, like \"ws-handler\"".into());
    }
    let spec = match trimmed.split_once('/') {
        Some((first, rest)) if first != ".." && first != "." && !root.join(first).is_dir() => rest,
        _ => trimmed,
    };
    crate::modules::resolve_require(root, root, &format!("./{spec}")).map_err(|_| {
        format!("handler module {handler:?} not found in the mim (looked for {spec}, {spec}.js and {spec}/index.js from the mim's folder)")
    })
}

#[cfg(test)]
mod tests {
    use super::resolve_handler;

    #[test]
    fn handlers_resolve_like_dirigible_names() {
        let dir = tempdir();
        std::fs::write(dir.join("ws-handler.js"), "exports.onOpen = () => 1;").unwrap();
        std::fs::create_dir(dir.join("lib")).unwrap();
        std::fs::write(dir.join("lib/h.js"), "").unwrap();
        let found = |h: &str| {
            resolve_handler(&dir, h).map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        };
        assert_eq!(found("my-project/ws-handler").unwrap(), "ws-handler.js");
        assert_eq!(found("ws-handler").unwrap(), "ws-handler.js");
        assert_eq!(found("ws-handler.js").unwrap(), "ws-handler.js");
        assert_eq!(found("/my-project/ws-handler.js").unwrap(), "ws-handler.js");
        assert_eq!(found("lib/h").unwrap(), "lib/h.js");
        assert_eq!(found("proj/lib/h").unwrap(), "lib/h.js");
        assert!(found("nope").unwrap_err().contains("not found"));
        assert!(found("").is_err());
        assert!(found("../../etc/passwd").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mimhost-handler-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }
}
