//! The `mims/` folder: drop-in mims loaded at start and reloaded on change.

use crate::registry::{base_path_for, Origin, Registry};
use mimhost_bindings::MimSpec;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One mim found in the folder.
#[derive(Debug, Clone)]
pub struct FoundMim {
    /// The spec to run it with.
    pub spec: MimSpec,
    /// Changes whenever any of its files change.
    pub fingerprint: u64,
}

/// What the folder's `mim.json` may hold.
#[derive(Debug, Default, serde::Deserialize)]
struct MimJson {
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// Node facts every spec carries.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The host's HTTP port.
    pub http_port: u16,
    /// This node's id.
    pub node_id: String,
}

/// What a scan of the folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Mims ready to run.
    pub found: Vec<FoundMim>,
    /// Names of mims present but unreadable (a broken `mim.json`): left as they run.
    pub broken: Vec<String>,
}

/// Finds every mim in `dir`: `NAME/index.js` folders and `NAME.js` files.
/// Mims that cannot be read are logged and listed as broken.
pub fn scan(dir: &Path, node: &NodeFacts) -> Scan {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Scan::default();
    };
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().to_string();
        if file_name.starts_with('.') {
            continue;
        }
        let (name, root, entry_file) = if path.is_dir() && path.join("index.js").is_file() {
            (file_name.clone(), path.clone(), PathBuf::from("index.js"))
        } else if path.is_file() && file_name.ends_with(".js") {
            let name = file_name.trim_end_matches(".js").to_string();
            (name, dir.to_path_buf(), PathBuf::from(&file_name))
        } else {
            continue;
        };
        let env = match read_mim_json(&path) {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(container = %name, "{e}");
                broken.push(name);
                continue;
            }
        };
        let fingerprint = if path.is_dir() {
            fingerprint_tree(&path)
        } else {
            fingerprint_file(&path)
        };
        let spec = MimSpec {
            base_path: base_path_for(&name, &env),
            name,
            root,
            entry: entry_file,
            env,
            http_port: node.http_port,
            node_id: node.node_id.clone(),
        };
        found.push(FoundMim { spec, fingerprint });
    }
    found.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Scan { found, broken }
}

fn read_mim_json(mim: &Path) -> Result<BTreeMap<String, String>, String> {
    let file = mim.join("mim.json");
    if !file.is_file() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_json::from_str::<MimJson>(&text)
        .map(|m| m.env)
        .map_err(|e| {
            format!(
                "{}:{}:{}: invalid mim.json: {e}",
                file.display(),
                e.line(),
                e.column()
            )
        })
}

fn fingerprint_file(path: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    hash_file(path, &mut h);
    h.finish()
}

fn hash_file(path: &Path, h: &mut impl Hasher) {
    path.hash(h);
    if let Ok(meta) = std::fs::metadata(path) {
        meta.len().hash(h);
        if let Ok(modified) = meta.modified() {
            modified.hash(h);
        }
    }
}

fn fingerprint_tree(dir: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                stack.push(p);
            } else {
                hash_file(&p, &mut h);
            }
        }
    }
    h.finish()
}

/// Starts every mim in the folder; returns the fingerprints of what was seen.
pub async fn load_all(registry: &Registry, dir: &Path, node: &NodeFacts) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    for mim in scan(dir, node).found {
        seen.insert(mim.spec.name.clone(), mim.fingerprint);
        let name = mim.spec.name.clone();
        match registry.start(mim.spec, Origin::MimsFolder).await {
            Ok(c) => tracing::info!(container = %name, "serving at {}", c.base_path),
            Err(e) => tracing::error!(container = %name, "not started: {e}"),
        }
    }
    seen
}

/// Applies what changed in the folder since `seen`: new mims start, changed ones hot
/// swap (a failed load keeps the previous version), removed ones stop.
pub async fn apply_changes(
    registry: &Registry,
    dir: &Path,
    node: &NodeFacts,
    seen: &mut HashMap<String, u64>,
) {
    let Scan { found, broken } = scan(dir, node);
    for mim in &found {
        let name = &mim.spec.name;
        if seen.get(name) == Some(&mim.fingerprint) {
            continue;
        }
        seen.insert(name.clone(), mim.fingerprint);
        let existing = registry.get(name);
        let result = match existing {
            Some(c) if c.origin == Origin::MimsFolder && c.base_path == mim.spec.base_path => {
                registry.update(mim.spec.clone()).await
            }
            Some(c) if c.origin == Origin::MimsFolder => {
                registry.remove(name).await;
                registry
                    .start(mim.spec.clone(), Origin::MimsFolder)
                    .await
                    .map(|_| ())
            }
            Some(_) => Err(crate::registry::RegistryError::NameTaken { name: name.clone() }),
            None => registry
                .start(mim.spec.clone(), Origin::MimsFolder)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                tracing::info!(container = %name, "reloaded from {}", mim.spec.root.join(&mim.spec.entry).display())
            }
            Err(e) => {
                tracing::error!(container = %name, "reload failed, the previous version keeps serving: {e}")
            }
        }
    }
    let names: Vec<String> = seen.keys().cloned().collect();
    for name in names {
        if !found.iter().any(|m| m.spec.name == name) && !broken.contains(&name) {
            seen.remove(&name);
            if registry
                .get(&name)
                .is_some_and(|c| c.origin == Origin::MimsFolder)
            {
                registry.remove(&name).await;
                tracing::info!(container = %name, "removed: its files are gone from the mims folder");
            }
        }
    }
}

/// Watches the folder and applies changes until `shutdown` fires.
pub async fn watch(
    registry: Arc<Registry>,
    dir: PathBuf,
    node: NodeFacts,
    mut seen: HashMap<String, u64>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => return tracing::error!("cannot watch {}: {e}", dir.display()),
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::Recursive) {
        return tracing::error!("cannot watch {}: {e}", dir.display());
    }
    loop {
        tokio::select! {
            changed = rx.recv() => if changed.is_none() { return },
            _ = shutdown.fired() => return,
        }
        // Let a burst of writes (an editor saving, a copy) settle first.
        tokio::time::sleep(Duration::from_millis(150)).await;
        while rx.try_recv().is_ok() {}
        if shutdown.is_fired() {
            return;
        }
        apply_changes(&registry, &dir, &node, &mut seen).await;
    }
}
