//! The HTTP request as plain data, handed from the host to the isolate, and the native
//! request object a handler gets.
//!
//! The object is built without running any JavaScript: `method`, `url` and `path` are
//! its own properties; everything else (`headers`, `query`, `body`, `bodyBytes`, ...)
//! is an accessor on one prototype shared by every request of the isolate, computed
//! from the host's data only when read and then kept on the object as an ordinary
//! property. A property nobody reads costs nothing, and every request object has the
//! same shape.

use boa_engine::object::builtins::{AlignedVec, JsArrayBuffer, JsUint8Array};
use boa_engine::object::{FunctionObjectBuilder, ObjectInitializer};
use boa_engine::property::{Attribute, PropertyDescriptor};
use boa_engine::{
    js_string, Context, Finalize, JsData, JsObject, JsResult, JsString, JsValue, NativeFunction,
    Trace,
};
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
    /// The body as the client sent it (a mim reads it as UTF-8 text in `request.body`
    /// and as bytes in `request.bodyBytes`).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
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

/// The host's data behind one request object, read by the prototype's accessors.
#[derive(Trace, Finalize, JsData)]
struct RequestData {
    #[unsafe_ignore_trace]
    request: HttpRequest,
}

/// A lazily computed property: its name, how to compute it, and whether the result is
/// kept on the object (objects must keep their identity between reads).
struct Lazy {
    name: &'static str,
    compute: fn(&HttpRequest, &mut Context) -> JsResult<JsValue>,
    keep: bool,
}

/// Every lazily computed property of a request object.
const LAZY: &[Lazy] = &[
    Lazy {
        name: "query",
        compute: |r, ctx| Ok(string_map(&r.query, ctx).into()),
        keep: true,
    },
    Lazy {
        name: "headers",
        compute: |r, ctx| Ok(string_map(&r.headers, ctx).into()),
        keep: true,
    },
    Lazy {
        name: "body",
        compute: |r, _| Ok(text(&String::from_utf8_lossy(&r.body))),
        keep: true,
    },
    Lazy {
        name: "bodyBytes",
        compute: |r, ctx| bytes(&r.body, ctx),
        keep: true,
    },
    Lazy {
        name: "authorization",
        compute: |r, _| Ok(text(r.headers.get("authorization").map_or("", |s| s))),
        keep: true,
    },
    Lazy {
        name: "fullPath",
        compute: |r, _| Ok(text(&r.full_path)),
        keep: false,
    },
    Lazy {
        name: "scheme",
        compute: |r, _| Ok(text(&r.scheme)),
        keep: false,
    },
    Lazy {
        name: "host",
        compute: |r, _| Ok(text(&r.host)),
        keep: false,
    },
    Lazy {
        name: "port",
        compute: |r, _| Ok(JsValue::from(r.port)),
        keep: false,
    },
    Lazy {
        name: "remoteAddress",
        compute: |r, _| Ok(text(&r.remote_address)),
        keep: false,
    },
    Lazy {
        name: "webSocket",
        compute: |r, _| Ok(JsValue::from(r.web_socket)),
        keep: false,
    },
];

/// What `JSON.stringify(request)` shows: the route-style request's properties.
const JSON_KEYS: &[&str] = &[
    "method",
    "url",
    "path",
    "params",
    "query",
    "headers",
    "body",
    "authorization",
];

fn text(s: &str) -> JsValue {
    JsValue::from(JsString::from(s))
}

fn string_map(m: &BTreeMap<String, String>, ctx: &mut Context) -> JsObject {
    let mut o = ObjectInitializer::new(ctx);
    for (k, v) in m {
        o.property(
            JsString::from(k.as_str()),
            JsString::from(v.as_str()),
            Attribute::all(),
        );
    }
    o.build()
}

fn bytes(b: &[u8], ctx: &mut Context) -> JsResult<JsValue> {
    let buffer = JsArrayBuffer::from_byte_block(AlignedVec::from_slice(0, b), ctx)?;
    Ok(JsUint8Array::from_array_buffer(buffer, ctx)?.into())
}

/// Defines `name` on `object` as an ordinary writable, enumerable data property.
fn keep(object: &JsObject, name: &'static str, value: JsValue, ctx: &mut Context) -> JsResult<()> {
    object.define_property_or_throw(
        JsString::from(name),
        PropertyDescriptor::builder()
            .value(value)
            .writable(true)
            .enumerable(true)
            .configurable(true),
        ctx,
    )?;
    Ok(())
}

/// The getter of lazy property `index`: computes it from the host's data (undefined
/// on anything that is not a request object).
fn get(this: &JsValue, _: &[JsValue], index: &usize, ctx: &mut Context) -> JsResult<JsValue> {
    let Some(object) = this.as_object() else {
        return Ok(JsValue::undefined());
    };
    let lazy = &LAZY[*index];
    let value = {
        // Computing only allocates new values; it never touches this object.
        let Some(data) = object.downcast_ref::<RequestData>() else {
            return Ok(JsValue::undefined());
        };
        (lazy.compute)(&data.request, ctx)?
    };
    if lazy.keep {
        keep(&object, lazy.name, value.clone(), ctx)?;
    }
    Ok(value)
}

/// The setter of lazy property `index`: the assigned value replaces it on the object.
fn set(this: &JsValue, args: &[JsValue], index: &usize, ctx: &mut Context) -> JsResult<JsValue> {
    if let Some(object) = this.as_object() {
        let value = args.first().cloned().unwrap_or_default();
        keep(&object, LAZY[*index].name, value, ctx)?;
    }
    Ok(JsValue::undefined())
}

/// `request.toJSON()`: a plain object of the route-style properties, so
/// `JSON.stringify(request)` shows what it showed when they were all own properties.
fn to_json(this: &JsValue, _: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let Some(object) = this.as_object() else {
        return Ok(JsValue::undefined());
    };
    let plain = ObjectInitializer::new(ctx).build();
    for key in JSON_KEYS {
        let value = object.get(JsString::from(*key), ctx)?;
        if !value.is_undefined() {
            plain.set(JsString::from(*key), value, false, ctx)?;
        }
    }
    Ok(plain.into())
}

/// The prototype every request object of one isolate shares.
pub(crate) struct RequestProto(JsObject);

impl RequestProto {
    /// Builds the prototype: one getter and setter per lazy property, and `toJSON`.
    pub(crate) fn new(ctx: &mut Context) -> Self {
        let mut accessors = Vec::with_capacity(LAZY.len());
        for (index, lazy) in LAZY.iter().enumerate() {
            let getter = FunctionObjectBuilder::new(
                ctx.realm(),
                NativeFunction::from_copy_closure_with_captures(get, index),
            )
            .name(JsString::from(format!("get {}", lazy.name).as_str()))
            .build();
            let setter = FunctionObjectBuilder::new(
                ctx.realm(),
                NativeFunction::from_copy_closure_with_captures(set, index),
            )
            .name(JsString::from(format!("set {}", lazy.name).as_str()))
            .length(1)
            .build();
            accessors.push((lazy.name, getter, setter));
        }
        let mut proto = ObjectInitializer::new(ctx);
        for (name, getter, setter) in accessors {
            proto.accessor(
                JsString::from(name),
                Some(getter),
                Some(setter),
                Attribute::CONFIGURABLE,
            );
        }
        proto.function(
            NativeFunction::from_fn_ptr(to_json),
            js_string!("toJSON"),
            0,
        );
        Self(proto.build())
    }

    /// The request object a handler gets for `r`.
    pub(crate) fn object(&self, r: HttpRequest, ctx: &mut Context) -> JsObject {
        let (method, url, path) = (text(&r.method), text(&r.url), text(&r.path));
        let data = RequestData { request: r };
        let all = Attribute::all();
        ObjectInitializer::with_native_data_and_proto(data, self.0.clone(), ctx)
            .property(js_string!("method"), method, all)
            .property(js_string!("url"), url, all)
            .property(js_string!("path"), path, all)
            .build()
    }
}
