//! The HTTP request as plain data, handed from the host to the isolate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One HTTP request for a container, already split the way both JS request shapes need.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path relative to the container's base path, with the query string (`/users?page=1`).
    pub url: String,
    /// Path relative to the base path, without the query (`/users`).
    pub path: String,
    /// The absolute path as the client sent it, without the query.
    pub full_path: String,
    /// Query parameters (the last value wins for repeated names).
    pub query: BTreeMap<String, String>,
    /// Headers with lower-case names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host name the client asked for.
    pub host: String,
    /// Port the client connected to.
    pub port: u16,
    /// The client's address (first `x-forwarded-for` hop when present).
    pub remote_address: String,
    /// Whether this is a WebSocket upgrade request.
    pub web_socket: bool,
}
