//! The native `response` object of route-style handlers and mimik bundles.
//!
//! Built without running any JavaScript: one prototype per isolate holds the methods,
//! and each response is an object with that prototype, one own property
//! (`statusCode`, so `response.statusCode = 404` works as always) and native data
//! (the request id, whether the answer started or ended, and the headers as set).
//! Header values stay JS values until the answer leaves, so `getHeader` gives back
//! what `setHeader` got and an array is sent once per element.
//!
//! `writeHead`, `send` and `json` are added to the prototype by the prelude (they are
//! thin JavaScript over these methods); the prelude's controller and error paths use
//! the internal natives [`state`], [`reset`] and [`accept`] through `__host`.

use crate::host_api::HostApi;
use crate::natives::{flush_dispatches, host as host_of, string_list, value_string};
use boa_engine::object::builtins::JsArray;
use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{
    js_string, Context, Finalize, JsArgs, JsData, JsNativeError, JsObject, JsResult, JsString,
    JsValue, NativeFunction, Trace,
};
use std::rc::Rc;

/// How far an answer got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing sent yet.
    Fresh,
    /// Status and headers sent (`write` was called); chunks may follow.
    Started,
    /// The answer is complete; later calls are ignored.
    Done,
}

/// The native half of one response object.
#[derive(Trace, Finalize, JsData)]
struct ResponseData {
    #[unsafe_ignore_trace]
    id: u64,
    #[unsafe_ignore_trace]
    stage: Stage,
    /// Lower-case name and the value as the mim set it, in the order first set.
    headers: Vec<(String, JsValue)>,
}

impl ResponseData {
    fn find(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|(n, _)| n == name)
    }

    /// Whether a `content-type` is set to something other than `undefined`.
    fn has_content_type(&self) -> bool {
        self.find("content-type")
            .is_some_and(|i| !self.headers[i].1.is_undefined())
    }

    fn set(&mut self, name: String, value: JsValue) {
        match self.find(&name) {
            Some(i) => self.headers[i].1 = value,
            None => self.headers.push((name, value)),
        }
    }
}

/// The response object `this`, or a `TypeError` naming the method.
fn target(this: &JsValue, method: &str) -> JsResult<JsObject> {
    this.as_object()
        .filter(|o| o.is::<ResponseData>())
        .ok_or_else(|| {
            JsNativeError::typ()
                .with_message(format!(
                    "response.{method} was called on something that is not a response"
                ))
                .into()
        })
}

/// `this`'s native data; the object was checked by [`target`].
fn data(object: &JsObject) -> boa_engine::object::RefMut<'_, ResponseData> {
    object
        .downcast_mut::<ResponseData>()
        .expect("target() checked the object is a response")
}

fn header_name(value: &JsValue, ctx: &mut Context) -> JsResult<String> {
    let mut name = value_string(value, ctx)?;
    if name.bytes().any(|b| b.is_ascii_uppercase()) || !name.is_ascii() {
        name = name.to_lowercase();
    }
    Ok(name)
}

/// `response.setHeader(name, value)`: names are case-insensitive; returns `response`.
fn set_header(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "setHeader")?;
    let name = header_name(args.get_or_undefined(0), ctx)?;
    data(&object).set(name, args.get_or_undefined(1).clone());
    Ok(this.clone())
}

/// `response.getHeader(name)`: the value as set, or `undefined`.
fn get_header(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "getHeader")?;
    let name = header_name(args.get_or_undefined(0), ctx)?;
    let d = data(&object);
    Ok(d.find(&name)
        .map(|i| d.headers[i].1.clone())
        .unwrap_or_default())
}

/// `response.removeHeader(name)`.
fn remove_header(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "removeHeader")?;
    let name = header_name(args.get_or_undefined(0), ctx)?;
    let mut d = data(&object);
    if let Some(i) = d.find(&name) {
        d.headers.remove(i);
    }
    Ok(JsValue::undefined())
}

/// `response.status(code)`: sets `statusCode`; returns `response` for chaining.
fn status(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "status")?;
    object.set(
        js_string!("statusCode"),
        args.get_or_undefined(0).clone(),
        true,
        ctx,
    )?;
    Ok(this.clone())
}

/// `Number(statusCode) || 200`, as a status for the host.
fn status_code(object: &JsObject, ctx: &mut Context) -> JsResult<u16> {
    let n = object.get(js_string!("statusCode"), ctx)?.to_number(ctx)?;
    Ok(if n.is_nan() || n == 0.0 {
        200
    } else {
        n as u16
    })
}

/// The headers as `(name, value)` pairs for the host: `undefined`/`null` values left
/// out, arrays once per element, everything else through `String(…)`. Works on a copy
/// so a `toString` that touches the response cannot collide with a borrow.
fn header_pairs(object: &JsObject, ctx: &mut Context) -> JsResult<Vec<(String, String)>> {
    let headers = data(object).headers.clone();
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        match value.as_object() {
            Some(array) if array.is_array() => {
                for element in string_list(&value, ctx)? {
                    out.push((name.clone(), element));
                }
            }
            _ if value.is_null_or_undefined() => {}
            _ => out.push((name, value_string(&value, ctx)?)),
        }
    }
    Ok(out)
}

/// A body to send: bytes of a `Uint8Array`/`ArrayBuffer` as they are, `undefined` and
/// `null` as nothing, anything else as the UTF-8 of `String(…)`. The flag says bytes.
fn body(value: &JsValue, ctx: &mut Context) -> JsResult<(Vec<u8>, bool)> {
    if value.is_null_or_undefined() {
        return Ok((Vec::new(), false));
    }
    if let Some(bytes) = crate::bytes::js_bytes(value, ctx)? {
        return Ok((bytes, true));
    }
    Ok((value_string(value, ctx)?.into_bytes(), false))
}

/// The content type picked for a body sent without one: bytes are
/// `application/octet-stream`, text starting with `{` or `[` is JSON, other text plain.
fn sniff(body: &[u8], bytes: bool) -> &'static str {
    match (bytes, body.first()) {
        (true, _) => "application/octet-stream",
        (false, Some(b'{' | b'[')) => "application/json",
        (false, _) => "text/plain; charset=utf-8",
    }
}

/// What the host needs to send an answer's head: id, status and header pairs.
type Head = (u64, u16, Vec<(String, String)>);

/// Marks the answer at `stage`, gives it `default_type` unless it has a content type,
/// flushes the queued dispatches (they leave before the answer) and returns its
/// [`Head`].
fn head(
    object: &JsObject,
    stage: Stage,
    default_type: Option<&str>,
    ctx: &mut Context,
) -> JsResult<Head> {
    let id = {
        let mut d = data(object);
        d.stage = stage;
        if let Some(content_type) = default_type.filter(|_| !d.has_content_type()) {
            d.set("content-type".into(), JsString::from(content_type).into());
        }
        d.id
    };
    flush_dispatches(ctx)?;
    let status = status_code(object, ctx)?;
    Ok((id, status, header_pairs(object, ctx)?))
}

/// Sends status and headers of a streamed answer (the first `write`).
fn start(object: &JsObject, host: &Rc<dyn HostApi>, ctx: &mut Context) -> JsResult<()> {
    let (id, status, headers) = head(
        object,
        Stage::Started,
        Some("text/plain; charset=utf-8"),
        ctx,
    )?;
    host.http_start(id, status, headers);
    Ok(())
}

/// `response.write(chunk)`: starts a streamed answer with the status and headers set
/// so far, then sends `chunk`. `false` once the answer has ended.
fn write(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "write")?;
    Ok(JsValue::from(write_chunk(
        &object,
        args.get_or_undefined(0),
        ctx,
    )?))
}

fn write_chunk(object: &JsObject, chunk: &JsValue, ctx: &mut Context) -> JsResult<bool> {
    let host = host_of(ctx)?;
    let stage = data(object).stage;
    match stage {
        Stage::Done => return Ok(false),
        Stage::Fresh => start(object, &host, ctx)?,
        Stage::Started => {}
    }
    let (bytes, _) = body(chunk, ctx)?;
    if !bytes.is_empty() {
        host.http_chunk(data(object).id, bytes);
    }
    Ok(true)
}

/// `response.end(body?)`: finishes the answer (status, headers and body in one go when
/// nothing was written). Calls after the first are ignored.
fn end(this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(this, "end")?;
    finish(&object, args.get_or_undefined(0), ctx)?;
    Ok(JsValue::undefined())
}

fn finish(object: &JsObject, value: &JsValue, ctx: &mut Context) -> JsResult<()> {
    let host = host_of(ctx)?;
    let stage = data(object).stage;
    match stage {
        Stage::Done => Ok(()),
        Stage::Started => {
            if !value.is_null_or_undefined() {
                write_chunk(object, value, ctx)?;
            }
            let id = {
                let mut d = data(object);
                d.stage = Stage::Done;
                d.id
            };
            host.http_end(id);
            Ok(())
        }
        Stage::Fresh => {
            data(object).stage = Stage::Done;
            let (bytes, is_bytes) = body(value, ctx)?;
            let sniffed = (!bytes.is_empty()).then(|| sniff(&bytes, is_bytes));
            let (id, status, headers) = head(object, Stage::Done, sniffed, ctx)?;
            host.http_full(id, status, headers, bytes);
            Ok(())
        }
    }
}

/// `__host.responseState(response)`: 0 nothing sent, 1 streaming, 2 ended.
pub(crate) fn state(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let object = target(args.get_or_undefined(0), "state")?;
    let stage = data(&object).stage;
    Ok(JsValue::from(match stage {
        Stage::Fresh => 0,
        Stage::Started => 1,
        Stage::Done => 2,
    }))
}

/// `__host.responseReset(response, [name, value, …])`: replaces every header (the
/// controller's and the error answer's headers are whole sets).
pub(crate) fn reset(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(args.get_or_undefined(0), "reset")?;
    let mut headers = Vec::new();
    if let Some(list) = args.get_or_undefined(1).as_object() {
        let list = JsArray::from_object(list)?;
        let len = list.length(ctx)?;
        let mut i = 0;
        while i + 1 < len {
            let name = header_name(&list.get(i, ctx)?, ctx)?;
            headers.push((name, list.get(i + 1, ctx)?));
            i += 2;
        }
    }
    data(&object).headers = headers;
    Ok(JsValue::undefined())
}

/// `__host.responseAccept(response, dataJson, protocols)`: answers a WebSocket upgrade
/// by accepting it (a controller returned `{webSocket: …}`); ignored once answered.
pub(crate) fn accept(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let object = target(args.get_or_undefined(0), "accept")?;
    let host = host_of(ctx)?;
    let payload = value_string(args.get_or_undefined(1), ctx)?;
    let protocols = crate::natives::string_list(args.get_or_undefined(2), ctx)?;
    let id = {
        let mut d = data(&object);
        if d.stage != Stage::Fresh {
            return Ok(JsValue::undefined());
        }
        d.stage = Stage::Done;
        d.id
    };
    host.ws_accept(id, payload, protocols);
    Ok(JsValue::undefined())
}

/// The prototype every response object of one isolate shares.
pub(crate) struct ResponseProto(JsObject);

impl ResponseProto {
    /// Builds the prototype with the native methods.
    pub(crate) fn new(ctx: &mut Context) -> Self {
        type Native = fn(&JsValue, &[JsValue], &mut Context) -> JsResult<JsValue>;
        let methods: &[(&str, Native, usize)] = &[
            ("setHeader", set_header, 2),
            ("getHeader", get_header, 1),
            ("removeHeader", remove_header, 1),
            ("status", status, 1),
            ("write", write, 1),
            ("end", end, 1),
        ];
        let mut proto = ObjectInitializer::new(ctx);
        for &(name, f, len) in methods {
            proto.function(NativeFunction::from_fn_ptr(f), JsString::from(name), len);
        }
        Self(proto.build())
    }

    /// The prototype itself, for the prelude to add its JavaScript methods to.
    pub(crate) fn prototype(&self) -> &JsObject {
        &self.0
    }

    /// A fresh response object for request `id`.
    pub(crate) fn object(&self, id: u64, ctx: &mut Context) -> JsObject {
        let data = ResponseData {
            id,
            stage: Stage::Fresh,
            headers: Vec::new(),
        };
        ObjectInitializer::with_native_data_and_proto(data, self.0.clone(), ctx)
            .property(js_string!("statusCode"), 200, Attribute::all())
            .build()
    }
}
