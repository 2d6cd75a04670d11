//! The native functions behind the prelude's `__host` object.
//!
//! Each one reads its arguments as plain strings and numbers, reaches the host through
//! [`Bindings`], and returns plain values: the JavaScript side does the rest.

use crate::host_api::{HostApi, LogLevel};
use crate::modules::{compile_common_js, read_mim_file, resolve_require};
use crate::ws::{WsAnswer, WsOp, WsQuery};
use boa_engine::object::builtins::JsArray;
use boa_engine::object::ObjectInitializer;
use boa_engine::{
    Context, JsArgs, JsError, JsNativeError, JsObject, JsResult, JsString, JsValue, NativeFunction,
};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// The host-side state every native function reaches through the context.
pub(crate) struct Bindings {
    /// The host behind this isolate.
    pub host: Rc<dyn HostApi>,
    /// The mim's folder; nothing outside it can be loaded.
    pub root: PathBuf,
    /// Zero of `__host.now()`.
    pub started: Instant,
    /// Frames `dispatchWebSocketEvent` queued since the last flush, in order.
    pub pending: RefCell<Vec<String>>,
}

/// The isolate's `Bindings`, or the error every native gives when they are missing.
fn bindings_ref(ctx: &Context) -> JsResult<&Bindings> {
    ctx.get_data::<Bindings>().ok_or_else(|| {
        JsNativeError::error()
            .with_message("mimhost bindings missing")
            .into()
    })
}

/// Clones the `Bindings` out of the context so natives can use the context freely.
pub(crate) fn bindings(ctx: &Context) -> JsResult<(Rc<dyn HostApi>, PathBuf)> {
    let b = bindings_ref(ctx)?;
    Ok((b.host.clone(), b.root.clone()))
}

/// Just the host behind this isolate (no copy of the root path: the per-request natives
/// need nothing else).
pub(crate) fn host(ctx: &Context) -> JsResult<Rc<dyn HostApi>> {
    bindings_ref(ctx).map(|b| b.host.clone())
}

/// A JS string as a Rust string: a plain copy when it is valid UTF-16 (the usual case),
/// else with its unpaired surrogates written as `\uXXXX` escapes, as it always was.
pub(crate) fn rust_string(s: &JsString) -> String {
    s.to_std_string()
        .unwrap_or_else(|_| s.to_std_string_escaped())
}

/// `String(value)` as a Rust string.
pub(crate) fn value_string(value: &JsValue, ctx: &mut Context) -> JsResult<String> {
    match value.as_string() {
        Some(s) => Ok(rust_string(&s)),
        None => Ok(rust_string(&value.to_string(ctx)?)),
    }
}

/// Argument `i` as a Rust string (undefined becomes `"undefined"`, as `String(x)` does).
pub(crate) fn arg_string(args: &[JsValue], i: usize, ctx: &mut Context) -> JsResult<String> {
    value_string(args.get_or_undefined(i), ctx)
}

/// Argument `i` as an optional string (null and undefined are `None`).
fn arg_opt_string(args: &[JsValue], i: usize, ctx: &mut Context) -> JsResult<Option<String>> {
    let v = args.get_or_undefined(i);
    if v.is_null_or_undefined() {
        Ok(None)
    } else {
        Ok(Some(value_string(v, ctx)?))
    }
}

/// A JS array of strings as a Rust list.
pub(crate) fn string_list(value: &JsValue, ctx: &mut Context) -> JsResult<Vec<String>> {
    let Some(obj) = value.as_object() else {
        return Ok(Vec::new());
    };
    let array = JsArray::from_object(obj.clone())?;
    let len = array.length(ctx)?;
    let mut out = Vec::with_capacity(len as usize);
    for i in 0..len {
        out.push(value_string(&array.get(i, ctx)?, ctx)?);
    }
    Ok(out)
}

fn storage_error(e: crate::StorageError) -> JsError {
    JsNativeError::error().with_message(e.to_string()).into()
}

fn log(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let level = LogLevel::from_name(&arg_string(args, 0, ctx)?);
    host.log(level, &arg_string(args, 1, ctx)?);
    Ok(JsValue::undefined())
}

fn now(_: &JsValue, _: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let started = ctx
        .get_data::<Bindings>()
        .map_or_else(Instant::now, |b| b.started);
    Ok(JsValue::from(started.elapsed().as_secs_f64() * 1000.0))
}

/// Sends the queued dispatch frames to the host as one batch (none queued: nothing).
/// Called before an answer leaves and at the end of every handler, so dispatches keep
/// their order against the answers around them.
pub(crate) fn flush_dispatches(ctx: &mut Context) -> JsResult<()> {
    let b = bindings_ref(ctx)?;
    let batch = std::mem::take(&mut *b.pending.borrow_mut());
    if !batch.is_empty() {
        b.host.dispatch(batch);
    }
    Ok(())
}

fn queue_dispatch(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let frame = arg_string(args, 0, ctx)?;
    bindings_ref(ctx)?.pending.borrow_mut().push(frame);
    Ok(JsValue::undefined())
}

fn flush_dispatches_native(_: &JsValue, _: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    flush_dispatches(ctx)?;
    Ok(JsValue::undefined())
}

fn flush(_: &JsValue, _: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    host.flush();
    Ok(JsValue::undefined())
}

fn storage_get(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let key = arg_string(args, 0, ctx)?;
    Ok(match host.storage().get(&key).map_err(storage_error)? {
        Some(v) => JsValue::from(JsString::from(v.as_str())),
        None => JsValue::null(),
    })
}

fn storage_set(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let key = arg_string(args, 0, ctx)?;
    let value = arg_string(args, 1, ctx)?;
    let tag = arg_opt_string(args, 2, ctx)?;
    host.storage()
        .set(&key, &value, tag.as_deref())
        .map_err(storage_error)?;
    Ok(JsValue::undefined())
}

fn storage_remove(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let key = arg_string(args, 0, ctx)?;
    host.storage().remove(&key).map_err(storage_error)?;
    Ok(JsValue::undefined())
}

fn storage_items(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let tag = arg_opt_string(args, 0, ctx)?;
    let items = host
        .storage()
        .items(tag.as_deref())
        .map_err(storage_error)?;
    let flat = items.into_iter().flat_map(|(k, v)| {
        [
            JsValue::from(JsString::from(k.as_str())),
            JsValue::from(JsString::from(v.as_str())),
        ]
    });
    Ok(JsArray::from_iter(flat, ctx).into())
}

fn storage_remove_by_tag(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let tag = arg_string(args, 0, ctx)?;
    let removed = host.storage().remove_by_tag(&tag).map_err(storage_error)?;
    Ok(JsValue::from(removed as f64))
}

fn resolve(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let (_, root) = bindings(ctx)?;
    let dir = arg_string(args, 0, ctx)?;
    let spec = arg_string(args, 1, ctx)?;
    let path = resolve_require(&root, dir.as_ref(), &spec)?;
    Ok(JsValue::from(JsString::from(
        path.to_string_lossy().as_ref(),
    )))
}

fn read_source(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let (_, root) = bindings(ctx)?;
    let path = arg_string(args, 0, ctx)?;
    let text = read_mim_file(&root, path.as_ref())?;
    Ok(JsValue::from(JsString::from(text.as_str())))
}

fn compile(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let (_, root) = bindings(ctx)?;
    let path = arg_string(args, 0, ctx)?;
    compile_common_js(&root, path.as_ref(), ctx)
}

fn ws_op(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let op: WsOp = serde_json::from_str(&arg_string(args, 0, ctx)?)
        .map_err(|e| JsNativeError::typ().with_message(format!("bad websocket operation: {e}")))?;
    host.ws(op);
    Ok(JsValue::undefined())
}

fn ws_query(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let query: WsQuery = serde_json::from_str(&arg_string(args, 0, ctx)?)
        .map_err(|e| JsNativeError::typ().with_message(format!("bad websocket query: {e}")))?;
    let answer = match host.ws_query(query) {
        WsAnswer::Size(n) => JsValue::from(n as f64),
        WsAnswer::Flag(b) => JsValue::from(b),
        WsAnswer::Members(ids) => {
            let ids = ids
                .into_iter()
                .map(|id| JsValue::from(JsString::from(id.as_str())));
            JsArray::from_iter(ids, ctx).into()
        }
    };
    Ok(answer)
}

fn http_request(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let request: crate::OutboundHttpRequest = serde_json::from_str(&arg_string(args, 0, ctx)?)
        .map_err(|e| JsNativeError::typ().with_message(format!("bad HTTP request options: {e}")))?;
    Ok(JsValue::from(host.outbound_http(request) as f64))
}

fn delete_file(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let path = arg_string(args, 0, ctx)?;
    crate::file_area_path(&path)
        .map_err(|e| JsNativeError::error().with_message(format!("deleteFile: {e}")))?;
    host.delete_file(&path);
    Ok(JsValue::undefined())
}

/// Builds the `__host` object the prelude receives.
pub(crate) fn host_object(ctx: &mut Context) -> JsObject {
    type Native = fn(&JsValue, &[JsValue], &mut Context) -> JsResult<JsValue>;
    let functions: &[(&str, Native, usize)] = &[
        ("log", log, 2),
        ("now", now, 0),
        ("queueDispatch", queue_dispatch, 1),
        ("flushDispatches", flush_dispatches_native, 0),
        ("flush", flush, 0),
        ("storageGet", storage_get, 1),
        ("storageSet", storage_set, 3),
        ("storageRemove", storage_remove, 1),
        ("storageItems", storage_items, 1),
        ("storageRemoveByTag", storage_remove_by_tag, 1),
        ("resolve", resolve, 2),
        ("readSource", read_source, 1),
        ("compileCommonJs", compile, 1),
        ("responseState", crate::response::state, 1),
        ("responseReset", crate::response::reset, 2),
        ("responseAccept", crate::response::accept, 3),
        ("wsOp", ws_op, 1),
        ("wsQuery", ws_query, 1),
        ("bytesToBase64", crate::bytes::bytes_to_base64, 1),
        ("base64ToBytes", crate::bytes::base64_to_bytes, 1),
        ("httpRequest", http_request, 1),
        ("deleteFile", delete_file, 1),
    ];
    let mut init = ObjectInitializer::new(ctx);
    for &(name, f, len) in functions {
        init.function(NativeFunction::from_fn_ptr(f), JsString::from(name), len);
    }
    crate::net_natives::register(&mut init);
    init.build()
}
