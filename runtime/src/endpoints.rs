//! Dirigible WebSocket endpoints (SPEC 5.4): the descriptors a mim declares in
//! `mim.json`'s `websocket` list or in `*.websocket` files anywhere in its folder,
//! each serving `ws://HOST/websockets/v4/service/<endpoint>` with a handler module.

use mimhost_bindings::{resolve_handler, MimSpec};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where endpoints are served.
pub const ENDPOINT_PREFIX: &str = "/websockets/v4/service/";

/// Most files and folders looked at for `*.websocket` descriptors in one mim.
const MAX_SCANNED: usize = 10_000;
/// Deepest folder looked into for descriptors.
const MAX_DEPTH: usize = 16;

/// One endpoint of a mim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    /// The name in `/websockets/v4/service/<endpoint>`.
    pub endpoint: String,
    /// The handler module, as the descriptor names it.
    pub handler: String,
    /// What the endpoint is for.
    #[serde(default)]
    pub description: String,
}

/// Why a mim's endpoints cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A descriptor file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file, relative to the mim.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A descriptor is not the JSON it should be.
    #[error("{file}:{line}:{column}: invalid WebSocket endpoint descriptor: {message} (expected {{\"handler\": \"…\", \"endpoint\": \"…\", \"description\": \"…\"}})")]
    Json {
        /// The file, relative to the mim.
        file: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What serde said.
        message: String,
    },
    /// An endpoint name that cannot be a URL path segment.
    #[error("{file}: endpoint name {name:?} must be 1-128 letters, digits, '-', '_', '.' or '~'")]
    BadName {
        /// The file, relative to the mim.
        file: String,
        /// The name.
        name: String,
    },
    /// The handler module does not exist.
    #[error("{file}: endpoint {name:?}: {why}")]
    NoHandler {
        /// The file, relative to the mim.
        file: String,
        /// The endpoint.
        name: String,
        /// What was looked for.
        why: String,
    },
    /// Two descriptors of the mim name the same endpoint.
    #[error("endpoint {name:?} is declared twice in the mim ({first} and {second})")]
    Twice {
        /// The endpoint.
        name: String,
        /// Where it was first declared.
        first: String,
        /// Where again.
        second: String,
    },
}

/// What `mim.json` may say about endpoints.
#[derive(Deserialize)]
struct MimJson {
    #[serde(default)]
    websocket: Vec<serde_json::Value>,
}

/// The endpoints `spec`'s mim declares, checked (names, handlers, duplicates) and
/// sorted by name. A single-file mim (`mims/NAME.js`) has no folder of its own and
/// so declares none.
pub fn discover(spec: &MimSpec) -> Result<Vec<Endpoint>, EndpointError> {
    if spec.entry != Path::new("index.js") {
        return Ok(Vec::new());
    }
    let root = spec
        .root
        .canonicalize()
        .unwrap_or_else(|_| spec.root.clone());
    let mut found: Vec<(Endpoint, String)> = Vec::new();
    let mim_json = root.join("mim.json");
    if mim_json.is_file() {
        let text = read(&root, &mim_json)?;
        let parsed: MimJson =
            serde_json::from_str(&text).map_err(|e| json_error(&root, &mim_json, &e))?;
        for value in parsed.websocket {
            let endpoint: Endpoint =
                serde_json::from_value(value).map_err(|e| json_error(&root, &mim_json, &e))?;
            found.push((endpoint, relative(&root, &mim_json)));
        }
    }
    for file in descriptor_files(&root) {
        let text = read(&root, &file)?;
        let endpoint: Endpoint =
            serde_json::from_str(&text).map_err(|e| json_error(&root, &file, &e))?;
        found.push((endpoint, relative(&root, &file)));
    }
    found.sort_by(|a, b| a.0.endpoint.cmp(&b.0.endpoint));
    for pair in found.windows(2) {
        if pair[0].0.endpoint == pair[1].0.endpoint {
            return Err(EndpointError::Twice {
                name: pair[0].0.endpoint.clone(),
                first: pair[0].1.clone(),
                second: pair[1].1.clone(),
            });
        }
    }
    for (endpoint, file) in &found {
        if !valid_name(&endpoint.endpoint) {
            return Err(EndpointError::BadName {
                file: file.clone(),
                name: endpoint.endpoint.clone(),
            });
        }
        resolve_handler(&root, &endpoint.handler).map_err(|why| EndpointError::NoHandler {
            file: file.clone(),
            name: endpoint.endpoint.clone(),
            why,
        })?;
    }
    Ok(found.into_iter().map(|(e, _)| e).collect())
}

/// Whether `name` can be an endpoint: one URL path segment of plain characters.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
}

/// Every `*.websocket` file under `root` (dot folders and `node_modules` left out),
/// in a stable order, bounded in count and depth.
fn descriptor_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<(PathBuf, bool)> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && name != "node_modules"
            })
            .filter_map(|e| Some((e.path(), e.file_type().ok()?.is_dir())))
            .collect();
        paths.sort();
        for (path, is_dir) in paths {
            seen += 1;
            if seen > MAX_SCANNED {
                return out;
            }
            if is_dir && depth < MAX_DEPTH {
                stack.push((path, depth + 1));
            } else if !is_dir && path.extension().is_some_and(|x| x == "websocket") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn read(root: &Path, file: &Path) -> Result<String, EndpointError> {
    std::fs::read_to_string(file).map_err(|source| EndpointError::Read {
        file: relative(root, file),
        source,
    })
}

fn json_error(root: &Path, file: &Path, e: &serde_json::Error) -> EndpointError {
    EndpointError::Json {
        file: relative(root, file),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &Path) -> MimSpec {
        MimSpec {
            name: "m".into(),
            root: dir.to_path_buf(),
            entry: "index.js".into(),
            ..MimSpec::default()
        }
    }

    #[test]
    fn descriptors_come_from_files_and_mim_json() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("index.js"), "").unwrap();
        std::fs::write(d.join("ws-handler.js"), "").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(
            d.join("sub/my-endpoint.websocket"),
            r#"{"handler": "my-project/ws-handler", "endpoint":"my-endpoint", "description":"My Websocket"}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("mim.json"),
            r#"{"env": {}, "websocket": [{"handler": "ws-handler.js", "endpoint": "other"}]}"#,
        )
        .unwrap();
        let found = discover(&spec_in(d)).unwrap();
        let names: Vec<&str> = found.iter().map(|e| e.endpoint.as_str()).collect();
        assert_eq!(names, ["my-endpoint", "other"]);
        assert_eq!(found[0].description, "My Websocket");
    }

    #[test]
    fn bad_descriptors_are_refused_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("index.js"), "").unwrap();
        std::fs::write(d.join("h.js"), "").unwrap();
        std::fs::write(d.join("a.websocket"), "{not json").unwrap();
        let e = discover(&spec_in(d)).unwrap_err().to_string();
        assert!(e.starts_with("a.websocket:1:"), "{e}");
        std::fs::write(d.join("a.websocket"), r#"{"handler":"h","endpoint":"a/b"}"#).unwrap();
        assert!(matches!(
            discover(&spec_in(d)),
            Err(EndpointError::BadName { .. })
        ));
        std::fs::write(
            d.join("a.websocket"),
            r#"{"handler":"nope","endpoint":"a"}"#,
        )
        .unwrap();
        assert!(matches!(
            discover(&spec_in(d)),
            Err(EndpointError::NoHandler { .. })
        ));
        std::fs::write(d.join("a.websocket"), r#"{"handler":"h","endpoint":"a"}"#).unwrap();
        std::fs::write(d.join("b.websocket"), r#"{"handler":"h","endpoint":"a"}"#).unwrap();
        assert!(matches!(
            discover(&spec_in(d)),
            Err(EndpointError::Twice { .. })
        ));
    }
}
