//! One Boa context running one container's code.

use crate::host_api::{HostApi, LogLevel};
use crate::modules::{looks_like_es_module, read_mim_file, MimModuleLoader};
use crate::natives::{host_object, Bindings};
use crate::net::ClientEvent;
use crate::request::HttpRequest;
use crate::ws::WsEvent;
use boa_engine::builtins::promise::PromiseState;
use boa_engine::{js_string, Context, JsError, JsObject, JsResult, JsString, JsValue, Source};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The JavaScript half of the bindings (see the file for what it defines).
const PRELUDE: &str = include_str!("prelude.js");

/// Deepest JavaScript call recursion before a `RangeError`.
const RECURSION_LIMIT: usize = 2_000;

/// What an isolate needs to know about the container it runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MimSpec {
    /// Container name.
    pub name: String,
    /// The mim's folder; its files are all the code can load.
    pub root: PathBuf,
    /// The entry file inside `root` (usually `index.js`).
    pub entry: PathBuf,
    /// The container env (`context.env`, `process.env`).
    pub env: BTreeMap<String, String>,
    /// `MCM.BASE_API_PATH`.
    pub base_path: String,
    /// The host's HTTP port, for `context.info.httpPort`.
    pub http_port: u16,
    /// This node's id, for `context.info.nodeId`.
    pub node_id: String,
}

/// Why a mim's code could not be loaded; the message names file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// A loaded mim, ready for invocations.
pub struct Isolate {
    context: Context,
    host: Rc<dyn HostApi>,
    name: String,
    handle_http: JsObject,
    handle_ws: JsObject,
    run_timers: JsObject,
    outbound_http: JsObject,
    handle_client: JsObject,
    request_proto: crate::request::RequestProto,
    response_proto: crate::response::ResponseProto,
}

impl Isolate {
    /// Builds a fresh context, runs the prelude and the mim's entry file.
    pub fn load(spec: &MimSpec, host: Rc<dyn HostApi>) -> Result<Self, LoadError> {
        let root = spec.root.canonicalize().map_err(|e| {
            LoadError(format!(
                "cannot open mim folder {}: {e}",
                spec.root.display()
            ))
        })?;
        let loader = Rc::new(MimModuleLoader::new(root.clone()));
        let mut context = Context::builder()
            .job_executor(Rc::new(crate::jobs::Jobs::default()))
            .module_loader(loader.clone())
            .build()
            .map_err(|e| LoadError(format!("cannot create a JavaScript context: {e}")))?;
        context
            .runtime_limits_mut()
            .set_recursion_limit(RECURSION_LIMIT);
        context.insert_data(Bindings {
            host: host.clone(),
            root: root.clone(),
            started: Instant::now(),
            pending: Default::default(),
        });
        context.insert_data(crate::net_natives::HandlerLoader(loader.clone()));
        let entry = root.join(&spec.entry);
        let described = |e: JsError, ctx: &mut Context| LoadError(describe(&e, &root, ctx));
        let response_proto = crate::response::ResponseProto::new(&mut context);
        let mim = run_prelude(spec, &root, response_proto.prototype(), &mut context)
            .map_err(|e| described(e, &mut context))?;
        load_entry(&entry, &root, &mim, &loader, &mut context)
            .map_err(|e| described(e, &mut context))?;
        let mimhost = context
            .global_object()
            .get(js_string!("__mimhost"), &mut context)
            .map_err(|e| described(e, &mut context))?;
        let function = |name: &str, ctx: &mut Context| -> Result<JsObject, LoadError> {
            mimhost
                .as_object()
                .and_then(|o| o.get(JsString::from(name), ctx).ok())
                .and_then(|v| v.as_object())
                .ok_or_else(|| LoadError(format!("prelude lacks {name}")))
        };
        let handle_http = function("handleHttp", &mut context)?;
        let handle_ws = function("handleWs", &mut context)?;
        let run_timers = function("runTimers", &mut context)?;
        let outbound_http = function("outboundHttp", &mut context)?;
        let handle_client = function("handleClient", &mut context)?;
        let request_proto = crate::request::RequestProto::new(&mut context);
        Ok(Self {
            context,
            host,
            name: spec.name.clone(),
            handle_http,
            handle_ws,
            run_timers,
            outbound_http,
            handle_client,
            request_proto,
            response_proto,
        })
    }

    /// Runs one HTTP request; the answer reaches the host through [`HostApi`].
    pub fn handle_http(&mut self, id: u64, request: HttpRequest) {
        let req = self.request_proto.object(request, &mut self.context);
        let res = self.response_proto.object(id, &mut self.context);
        let result = self.handle_http.call(
            &JsValue::undefined(),
            &[req.into(), res.into()],
            &mut self.context,
        );
        if let Err(e) = result {
            let message = self.log_failure("request", &e);
            let body = serde_json::json!({"error": {"status": 500, "message": message}})
                .to_string()
                .into_bytes();
            let headers = vec![("content-type".to_string(), "application/json".to_string())];
            self.host.http_full(id, 500, headers, body);
        }
        self.run_jobs();
    }

    /// Delivers one session event to `webSocketEvent` (and keeps the isolate's view of
    /// the container's open sessions current).
    pub fn handle_ws(&mut self, event: &WsEvent) {
        let result = serde_json::to_value(event)
            .map_err(JsError::from_rust)
            .and_then(|json| JsValue::from_json(&json, &mut self.context))
            .and_then(|ev| {
                self.handle_ws
                    .call(&JsValue::undefined(), &[ev], &mut self.context)
            });
        if let Err(e) = result {
            self.log_failure("websocket event", &e);
        }
        self.run_jobs();
    }

    /// Delivers what came back for outbound HTTP request `id` to its `success` /
    /// `error` callbacks (or `fetch` promise); an id this isolate did not start (it
    /// replaced the one that did) is ignored.
    pub fn outbound_http(&mut self, id: u64, event: &crate::OutboundHttpEvent) {
        let result = serde_json::to_value(event)
            .map_err(JsError::from_rust)
            .and_then(|json| JsValue::from_json(&json, &mut self.context))
            .and_then(|ev| {
                self.outbound_http.call(
                    &JsValue::undefined(),
                    &[JsValue::from(id as f64), ev],
                    &mut self.context,
                )
            });
        if let Err(e) = result {
            self.log_failure("http request callback", &e);
        }
        self.run_jobs();
    }

    /// Delivers one event of an outbound `sdk/net` client to its handler module.
    pub fn handle_client(&mut self, event: &ClientEvent) {
        let result = serde_json::to_value(event)
            .map_err(JsError::from_rust)
            .and_then(|json| JsValue::from_json(&json, &mut self.context))
            .and_then(|ev| {
                self.handle_client
                    .call(&JsValue::undefined(), &[ev], &mut self.context)
            });
        if let Err(e) = result {
            self.log_failure("websocket client event", &e);
        }
        self.run_jobs();
    }

    /// Logs that `what` failed with `error`; returns the error's description.
    fn log_failure(&mut self, what: &str, error: &JsError) -> String {
        let message = describe(error, Path::new(""), &mut self.context);
        self.host.log(
            LogLevel::Uncaught,
            &format!("{} {what} failed: {message}", self.name),
        );
        message
    }

    /// Hands the open sessions this isolate knows to `next`, which replaces it (hot swap).
    pub fn pass_sessions_to(&mut self, next: &mut Isolate) {
        let exported = self.call_prelude("exportSessions", &[]);
        if let Some(json) = exported.and_then(|v| v.as_string().map(|s| s.to_std_string_escaped()))
        {
            let json = JsValue::from(JsString::from(json.as_str()));
            next.call_prelude("importSessions", &[json]);
        }
    }

    /// Whether the code exports `webSocketEvent` (else session events need not come).
    pub fn has_ws_handler(&mut self) -> bool {
        self.call_prelude("hasWsHandler", &[])
            .is_some_and(|v| v.to_boolean())
    }

    fn call_prelude(&mut self, name: &str, args: &[JsValue]) -> Option<JsValue> {
        let mimhost = self
            .context
            .global_object()
            .get(js_string!("__mimhost"), &mut self.context)
            .ok()?;
        let f = mimhost
            .as_object()?
            .get(JsString::from(name), &mut self.context)
            .ok()?;
        f.as_callable()?
            .call(&JsValue::undefined(), args, &mut self.context)
            .ok()
    }

    /// Runs due timers and pending promise jobs; returns how long until the next timer.
    pub fn run_timers(&mut self) -> Option<Duration> {
        let next = self
            .run_timers
            .call(&JsValue::undefined(), &[], &mut self.context)
            .ok()
            .and_then(|v| v.as_number())
            .unwrap_or(-1.0);
        self.run_jobs();
        (next >= 0.0).then(|| Duration::from_secs_f64(next / 1000.0))
    }

    /// Drains the promise job queue, logging what escapes it.
    fn run_jobs(&mut self) {
        if let Err(e) = self.context.run_jobs() {
            let message = describe(&e, Path::new(""), &mut self.context);
            self.host
                .log(LogLevel::Uncaught, &format!("{}: {message}", self.name));
        }
    }
}

/// Evaluates the prelude and calls it with `__host` (which carries the native response
/// prototype as `responsePrototype`) and the `mim` description.
fn run_prelude(
    spec: &MimSpec,
    root: &Path,
    response_proto: &JsObject,
    ctx: &mut Context,
) -> JsResult<JsObject> {
    let prelude = ctx
        .eval(Source::from_bytes(PRELUDE.as_bytes()).with_path(Path::new("mimhost:prelude.js")))?;
    let info = serde_json::json!({
        "name": spec.name,
        "env": spec.env,
        "basePath": spec.base_path,
        "httpPort": spec.http_port,
        "nodeId": spec.node_id,
        "root": root.to_string_lossy(),
        "entry": root.join(&spec.entry).to_string_lossy(),
        "module": {"exports": {}},
    });
    let mim = JsValue::from_json(&info, ctx)?;
    let host = host_object(ctx);
    host.set(
        js_string!("responsePrototype"),
        response_proto.clone(),
        false,
        ctx,
    )?;
    if let Some(f) = prelude.as_callable() {
        f.call(&JsValue::undefined(), &[host.into(), mim.clone()], ctx)?;
    }
    let mim = mim
        .as_object()
        .expect("from_json of an object is an object");
    let require = ctx
        .global_object()
        .get(js_string!("__mimhost"), ctx)?
        .as_object()
        .map(|m| m.get(js_string!("makeRequire"), ctx))
        .transpose()?
        .and_then(|f| f.as_callable())
        .map(|f| {
            f.call(
                &JsValue::undefined(),
                &[JsString::from(root.to_string_lossy().as_ref()).into()],
                ctx,
            )
        })
        .transpose()?;
    if let Some(require) = require {
        ctx.global_object()
            .set(js_string!("require"), require, false, ctx)?;
    }
    Ok(mim)
}

/// Runs the mim's entry file as an ES module or as CommonJS.
fn load_entry(
    entry: &Path,
    root: &Path,
    mim: &JsObject,
    loader: &MimModuleLoader,
    ctx: &mut Context,
) -> JsResult<()> {
    let text = read_mim_file(root, entry)?;
    if looks_like_es_module(&text) {
        let module = loader.module_at(entry, ctx)?;
        let promise = module.load_link_evaluate(ctx);
        ctx.run_jobs()?;
        match promise.state() {
            PromiseState::Rejected(err) => return Err(JsError::from_opaque(err)),
            PromiseState::Pending => {
                return Err(boa_engine::JsNativeError::error()
                    .with_message("the module's top-level await never settled")
                    .into())
            }
            PromiseState::Fulfilled(_) => {}
        }
        let namespace = module.namespace(ctx);
        mim.set(js_string!("esm"), namespace, false, ctx)?;
        return Ok(());
    }
    let module = mim.get(js_string!("module"), ctx)?;
    let exports = module
        .as_object()
        .map(|m| m.get(js_string!("exports"), ctx))
        .transpose()?
        .unwrap_or_default();
    let function = crate::modules::compile_common_js(root, entry, ctx)?;
    let require = ctx.global_object().get(js_string!("require"), ctx)?;
    let dir = entry.parent().unwrap_or(root).to_string_lossy().to_string();
    if let Some(f) = function.as_callable() {
        f.call(
            &exports,
            &[
                exports.clone(),
                require,
                module,
                JsString::from(entry.to_string_lossy().as_ref()).into(),
                JsString::from(dir.as_str()).into(),
            ],
            ctx,
        )?;
    }
    ctx.run_jobs()
}

/// A JS error as one line of text with file:line:col, paths shown relative to `root`.
pub(crate) fn describe(error: &JsError, root: &Path, ctx: &mut Context) -> String {
    let text = match error.try_native(ctx) {
        Ok(native) => {
            let mut s = native.to_string();
            if let Some(bt) = error.to_string().split_once("\n    at ") {
                s.push_str("\n    at ");
                s.push_str(bt.1);
            }
            s
        }
        Err(_) => error.to_string(),
    };
    let text = text.replace(" (native)", "");
    let root = format!("{}/", root.display());
    if root.len() > 1 {
        text.replace(&root, "")
    } else {
        text
    }
}
