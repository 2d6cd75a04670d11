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

/// The request as a plain JS object (camelCase keys), built directly: no JSON tree in
/// between on the hot path.
pub(crate) fn request_object(
    r: &HttpRequest,
    ctx: &mut boa_engine::Context,
) -> boa_engine::JsObject {
    use boa_engine::object::ObjectInitializer;
    use boa_engine::property::Attribute;
    use boa_engine::{JsString, JsValue};
    let text = |s: &str| JsValue::from(JsString::from(s));
    let map = |m: &BTreeMap<String, String>, ctx: &mut boa_engine::Context| {
        let mut o = ObjectInitializer::new(ctx);
        for (k, v) in m {
            o.property(
                JsString::from(k.as_str()),
                JsString::from(v.as_str()),
                Attribute::all(),
            );
        }
        o.build()
    };
    let headers = map(&r.headers, ctx);
    let query = map(&r.query, ctx);
    let mut o = ObjectInitializer::new(ctx);
    let all = Attribute::all();
    o.property(boa_engine::js_string!("method"), text(&r.method), all)
        .property(boa_engine::js_string!("url"), text(&r.url), all)
        .property(boa_engine::js_string!("path"), text(&r.path), all)
        .property(boa_engine::js_string!("fullPath"), text(&r.full_path), all)
        .property(boa_engine::js_string!("query"), query, all)
        .property(boa_engine::js_string!("headers"), headers, all)
        .property(boa_engine::js_string!("body"), text(&r.body), all)
        .property(boa_engine::js_string!("scheme"), text(&r.scheme), all)
        .property(boa_engine::js_string!("host"), text(&r.host), all)
        .property(boa_engine::js_string!("port"), r.port, all)
        .property(
            boa_engine::js_string!("remoteAddress"),
            text(&r.remote_address),
            all,
        )
        .property(boa_engine::js_string!("webSocket"), r.web_socket, all);
    o.build()
}
