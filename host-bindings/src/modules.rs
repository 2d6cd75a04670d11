//! Loading a mim's files: `require` resolution, CommonJS wrapping, and the ES module
//! loader. Every path stays inside the mim's folder and every file passes the nesting
//! check before the parser sees it.

use crate::nesting::{check_nesting, MAX_SOURCE_NESTING};
use boa_engine::module::{ModuleLoader, Referrer};
use boa_engine::{
    js_string, Context, JsError, JsNativeError, JsResult, JsString, JsValue, Module, Source,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Text put before a CommonJS file so it becomes a function; kept on the file's first
/// line so line numbers in errors stay true.
const CJS_PREFIX: &str = "(function (exports, require, module, __filename, __dirname) {";
const CJS_SUFFIX: &str = "\n})";

/// Joins `spec` to `dir` and normalises it, refusing anything that leaves `root`.
fn join_inside(root: &Path, dir: &Path, spec: &str) -> JsResult<PathBuf> {
    let mut out = PathBuf::new();
    for c in dir.join(spec).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.starts_with(root) {
        Ok(out)
    } else {
        Err(JsNativeError::error()
            .with_message(format!(
                "Cannot load '{spec}': it is outside the mim's folder"
            ))
            .into())
    }
}

/// Resolves a relative `require`/`import` specifier the way Node does for files:
/// the path itself, then `.js`, `.mjs`, `.json`, then `index.js` inside a folder.
pub(crate) fn resolve_require(root: &Path, dir: &Path, spec: &str) -> JsResult<PathBuf> {
    let base = join_inside(root, dir, spec)?;
    let candidates = [
        base.clone(),
        base.with_extension("js"),
        PathBuf::from(format!("{}.js", base.display())),
        PathBuf::from(format!("{}.mjs", base.display())),
        PathBuf::from(format!("{}.json", base.display())),
        base.join("index.js"),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        JsNativeError::error()
            .with_message(format!(
                "Cannot find module '{spec}' from {}",
                dir.display()
            ))
            .into()
    })
}

/// Reads a file of the mim, refusing paths outside it and source nested too deep.
pub(crate) fn read_mim_file(root: &Path, path: &Path) -> JsResult<String> {
    if !path.starts_with(root) {
        return Err(JsNativeError::error()
            .with_message(format!("{} is outside the mim's folder", path.display()))
            .into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        JsError::from(
            JsNativeError::error().with_message(format!("cannot read {}: {e}", path.display())),
        )
    })?;
    if let Err(deep) = check_nesting(&text, MAX_SOURCE_NESTING) {
        return Err(JsNativeError::syntax()
            .with_message(format!(
                "{}:{}:{}: source nested deeper than {MAX_SOURCE_NESTING} levels; refused before parsing",
                path.strip_prefix(root).unwrap_or(path).display(),
                deep.line,
                deep.column
            ))
            .into());
    }
    Ok(text)
}

/// Compiles a CommonJS file into a function `(exports, require, module, __filename, __dirname)`.
pub(crate) fn compile_common_js(root: &Path, path: &Path, ctx: &mut Context) -> JsResult<JsValue> {
    let text = read_mim_file(root, path)?;
    let wrapped = format!("{CJS_PREFIX}{text}{CJS_SUFFIX}");
    let script = boa_engine::Script::parse(
        Source::from_bytes(wrapped.as_bytes()).with_path(path),
        None,
        ctx,
    )
    .map_err(|e| located_syntax_error(&e, root, path, CJS_PREFIX.len()))?;
    script.evaluate(ctx)
}

/// Turns a parser error (`… at line L, col C`) into `file:L:C: …` with the file
/// relative to the mim's folder; `first_line_shift` undoes a prefix added on line 1.
fn located_syntax_error(
    error: &JsError,
    root: &Path,
    path: &Path,
    first_line_shift: usize,
) -> JsError {
    let file = path
        .strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string();
    let text = error
        .as_native()
        .map_or_else(|| error.to_string(), |n| n.message().to_string());
    let message = text.strip_prefix("SyntaxError: ").unwrap_or(&text);
    let located = message.rsplit_once(" at line ").and_then(|(what, pos)| {
        let (line, col) = pos.split_once(", col ")?;
        let line: usize = line.trim().parse().ok()?;
        let col: usize = col.trim().parse().ok()?;
        let col = if line == 1 {
            col.saturating_sub(first_line_shift).max(1)
        } else {
            col
        };
        Some(format!("{file}:{line}:{col}: {what}"))
    });
    let message = located.unwrap_or_else(|| format!("{file}: {message}"));
    JsNativeError::syntax().with_message(message).into()
}

/// Whether a file is an ES module: it has a top-level `import` or `export` statement.
pub(crate) fn looks_like_es_module(source: &str) -> bool {
    source.lines().any(|line| {
        let t = line.trim_start();
        let after = |kw: &str| t.strip_prefix(kw).and_then(|r| r.chars().next());
        matches!(after("import"), Some(c) if c == ' ' || c == '{' || c == '*' || c == '"' || c == '\'')
            || matches!(after("export"), Some(c) if c == ' ' || c == '{' || c == '*')
    })
}

/// The ES module loader of one mim: relative files inside its folder and the host's
/// built-in libraries (`sdk/net`, `/lib/xp/websocket`, ...), each parsed once.
pub(crate) struct MimModuleLoader {
    root: PathBuf,
    cache: RefCell<HashMap<PathBuf, Module>>,
}

impl MimModuleLoader {
    /// A loader for the mim in `root`.
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            cache: RefCell::default(),
        }
    }

    /// Parses the module at `path` (cached).
    pub(crate) fn module_at(&self, path: &Path, ctx: &mut Context) -> JsResult<Module> {
        if let Some(m) = self.cache.borrow().get(path) {
            return Ok(m.clone());
        }
        let text = read_mim_file(&self.root, path)?;
        let module = Module::parse(
            Source::from_bytes(text.as_bytes()).with_path(path),
            None,
            ctx,
        )
        .map_err(|e| located_syntax_error(&e, &self.root, path, 0))?;
        self.cache
            .borrow_mut()
            .insert(path.to_path_buf(), module.clone());
        Ok(module)
    }

    fn load(&self, referrer: &Referrer, spec: &str, ctx: &mut Context) -> JsResult<Module> {
        if let Some(module) = builtin_module(spec, ctx)? {
            return Ok(module);
        }
        if !spec.starts_with('.') {
            return Err(JsNativeError::typ()
                .with_message(format!("Cannot find module '{spec}': only files of the mim and the host's built-ins can be imported"))
                .into());
        }
        let dir = referrer
            .path()
            .and_then(Path::parent)
            .map_or_else(|| self.root.clone(), Path::to_path_buf);
        let path = resolve_require(&self.root, &dir, spec)?;
        self.module_at(&path, ctx)
    }
}

impl ModuleLoader for MimModuleLoader {
    fn load_imported_module(
        self: Rc<Self>,
        referrer: Referrer,
        request: boa_engine::module::ModuleRequest,
        context: &RefCell<&mut Context>,
    ) -> impl std::future::Future<Output = JsResult<Module>> {
        let spec = request.specifier().to_std_string_escaped();
        let result = self.load(&referrer, &spec, &mut context.borrow_mut());
        async { result }
    }
}

/// A built-in library as an ES module: its default export is the library object and
/// each of its properties is a named export.
fn builtin_module(spec: &str, ctx: &mut Context) -> JsResult<Option<Module>> {
    let mimhost = ctx.global_object().get(js_string!("__mimhost"), ctx)?;
    let Some(mimhost) = mimhost.as_object() else {
        return Ok(None);
    };
    let builtins = mimhost.get(js_string!("builtins"), ctx)?;
    let Some(builtins) = builtins.as_object() else {
        return Ok(None);
    };
    let factory = builtins.get(JsString::from(spec), ctx)?;
    let Some(factory) = factory.as_callable() else {
        return Ok(None);
    };
    let library = factory.call(&JsValue::undefined(), &[], ctx)?;
    let names: Vec<String> = match library.as_object() {
        Some(obj) => obj
            .own_property_keys(ctx)?
            .into_iter()
            .map(|k| k.to_string())
            .filter(|k| is_identifier(k))
            .collect(),
        None => Vec::new(),
    };
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    let mut src =
        format!("const m = globalThis.__mimhost.builtins[{spec_json}]();\nexport default m;\n");
    for name in names {
        src.push_str(&format!("export const {name} = m.{name};\n"));
    }
    Module::parse(Source::from_bytes(src.as_bytes()), None, ctx).map(Some)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && name != "default"
}

#[cfg(test)]
mod tests {
    use super::looks_like_es_module;

    #[test]
    fn detects_es_modules() {
        assert!(looks_like_es_module("import { a } from './a.js';\n"));
        assert!(looks_like_es_module(
            "const x = 1;\nexport function get() {}"
        ));
        assert!(!looks_like_es_module("exports.get = () => 1; // import x"));
        assert!(!looks_like_es_module("const m = import('./x.js');"));
    }
}
