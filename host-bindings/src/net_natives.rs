//! The native functions behind `sdk/net` (SPEC 5.4): calls and operations on
//! outbound WebSocket clients, and loading a handler module named by a descriptor
//! or a client.

use crate::modules::{looks_like_es_module, read_mim_file, MimModuleLoader};
use crate::natives::{arg_string, bindings, host};
use crate::net::{resolve_handler, ClientAnswer, ClientCall, ClientData, ClientOp};
use boa_engine::builtins::promise::PromiseState;
use boa_engine::object::builtins::JsArray;
use boa_engine::object::ObjectInitializer;
use boa_engine::{
    js_string, Context, JsError, JsNativeError, JsResult, JsString, JsValue, NativeFunction,
};
use std::rc::Rc;

/// The isolate's ES module loader, kept in the context so a handler module that is
/// an ES module loads through the same cache as the mim's own imports.
pub(crate) struct HandlerLoader(pub Rc<MimModuleLoader>);

fn client_object(client: &ClientData, ctx: &mut Context) -> JsValue {
    let mut init = ObjectInitializer::new(ctx);
    init.property(
        js_string!("id"),
        JsString::from(client.id.as_str()),
        Default::default(),
    )
    .property(
        js_string!("uri"),
        JsString::from(client.uri.as_str()),
        Default::default(),
    )
    .property(
        js_string!("handler"),
        JsString::from(client.handler.as_str()),
        Default::default(),
    )
    .property(js_string!("open"), client.open, Default::default());
    init.build().into()
}

/// `__host.wsClientCall(json)`: a client, a list, or null; a refusal throws. A
/// client's handler module must exist in this isolate's code (checked here, where
/// the code being loaded is known, also during a hot swap).
fn ws_client_call(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let (host, root) = bindings(ctx)?;
    let call: ClientCall = serde_json::from_str(&arg_string(args, 0, ctx)?)
        .map_err(|e| JsNativeError::typ().with_message(format!("bad sdk/net call: {e}")))?;
    if let ClientCall::Create { handler, .. } = &call {
        resolve_handler(&root, handler).map_err(|e| {
            JsError::from(JsNativeError::error().with_message(format!("createWebsocket: {e}")))
        })?;
    }
    match host.ws_client_call(call) {
        ClientAnswer::Client(Some(c)) => Ok(client_object(&c, ctx)),
        ClientAnswer::Client(None) => Ok(JsValue::null()),
        ClientAnswer::Clients(list) => {
            let items: Vec<JsValue> = list.iter().map(|c| client_object(c, ctx)).collect();
            Ok(JsArray::from_iter(items, ctx).into())
        }
        ClientAnswer::Refused(why) => Err(JsNativeError::error().with_message(why).into()),
    }
}

/// `__host.wsClientOp(json)`: a one-way send or close.
fn ws_client_op(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let host = host(ctx)?;
    let op: ClientOp = serde_json::from_str(&arg_string(args, 0, ctx)?)
        .map_err(|e| JsNativeError::typ().with_message(format!("bad sdk/net operation: {e}")))?;
    host.ws_client_op(op);
    Ok(JsValue::undefined())
}

/// `__host.handlerModule(handler)`: the namespace of an ES module handler (loaded and
/// evaluated once), or the path of a CommonJS one for the prelude to `require`.
fn handler_module(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let (_, root) = bindings(ctx)?;
    let handler = arg_string(args, 0, ctx)?;
    let path = resolve_handler(&root, &handler)
        .map_err(|e| JsError::from(JsNativeError::error().with_message(e)))?;
    let text = read_mim_file(&root, &path)?;
    if !looks_like_es_module(&text) {
        return Ok(JsString::from(path.to_string_lossy().as_ref()).into());
    }
    let loader = ctx
        .get_data::<HandlerLoader>()
        .map(|l| l.0.clone())
        .ok_or_else(|| JsNativeError::error().with_message("mimhost module loader missing"))?;
    let module = loader.module_at(&path, ctx)?;
    let promise = module.load_link_evaluate(ctx);
    ctx.run_jobs()?;
    match promise.state() {
        PromiseState::Rejected(err) => Err(JsError::from_opaque(err)),
        PromiseState::Pending => Err(JsNativeError::error()
            .with_message(format!(
                "handler module {handler:?}: its top-level await never settled"
            ))
            .into()),
        PromiseState::Fulfilled(_) => Ok(module.namespace(ctx).into()),
    }
}

/// Adds the `sdk/net` natives to the `__host` object being built.
pub(crate) fn register(init: &mut ObjectInitializer<'_>) {
    type Native = fn(&JsValue, &[JsValue], &mut Context) -> JsResult<JsValue>;
    let functions: [(&str, Native, usize); 3] = [
        ("wsClientCall", ws_client_call, 1),
        ("wsClientOp", ws_client_op, 1),
        ("handlerModule", handler_module, 1),
    ];
    for (name, f, len) in functions {
        init.function(NativeFunction::from_fn_ptr(f), JsString::from(name), len);
    }
}
