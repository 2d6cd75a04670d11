//! `mimhost pack`: turns a mim folder (or one `.js` file) into a `docker save` tar —
//! `manifest.json`, an image config and one layer tar holding the mim's files — that
//! the MCM API (and docker) load. The output is byte-for-byte reproducible.

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `mimhost pack DIR -o IMAGE.tar`.
#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// The mim: a folder with index.js, or a single .js file.
    pub dir: PathBuf,
    /// Where to write the image tar.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Image name (default: the folder or file name).
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs `mimhost pack`.
pub fn run(args: &PackArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.dir));
    let (tar, count) = pack(&args.dir, &name)?;
    std::fs::write(&args.output, &tar)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "packed {count} file(s) of {} into {} ({} bytes) as {name}:latest",
        args.dir.display(),
        args.output.display(),
        tar.len()
    );
    Ok(())
}

/// The files of a mim, by path inside it: a folder's files (dot files and
/// `node_modules` left out) or one `.js` file as `index.js`.
pub fn mim_files(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        let code =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(vec![("index.js".to_string(), code)]);
    }
    if !path.join("index.js").is_file() {
        bail!(
            "{} has no index.js: a mim folder needs one at its top",
            path.display()
        );
    }
    let mut files = Vec::new();
    let mut stack = vec![(path.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || file_name == "node_modules" {
                continue;
            }
            let rel = format!("{prefix}{file_name}");
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                eprintln!(
                    "warning: {} is a symlink; left out (images hold only files)",
                    entry.path().display()
                );
            } else if kind.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if kind.is_file() {
                let data = std::fs::read(entry.path())
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                files.push((rel, data));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Packs the mim at `path` as `name:latest`; returns the tar and how many files it holds.
pub fn pack(path: &Path, name: &str) -> Result<(Vec<u8>, usize)> {
    let files = mim_files(path)?;
    let count = files.len();
    Ok((docker_save(name, &tar_of(&files)?)?, count))
}

/// A deterministic tar of `files` (mode 0644, owner 0, time 0).
pub fn tar_of(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice())
            .with_context(|| format!("cannot add {path} to the image"))?;
    }
    Ok(b.into_inner()?)
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `docker save` layout around one layer.
pub fn docker_save(name: &str, layer: &[u8]) -> Result<Vec<u8>> {
    let layer_id = hex(layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "WorkingDir": "/", "Cmd": ["index.js"], "Labels": { "io.mimhost.mim": "true" } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_id}")] },
        "history": [{ "created_by": "mimhost pack" }],
    })
    .to_string();
    let config_id = hex(config.as_bytes());
    let manifest = json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": [format!("{name}:latest")],
        "Layers": [format!("{layer_id}/layer.tar")],
    }])
    .to_string();
    let mut repositories = serde_json::Map::new();
    repositories.insert(name.to_string(), json!({ "latest": layer_id }));
    let repositories = serde_json::Value::Object(repositories).to_string();
    let layer_json = json!({ "id": layer_id, "created": "1970-01-01T00:00:00Z" }).to_string();
    tar_of(&[
        (format!("{config_id}.json"), config.into_bytes()),
        (format!("{layer_id}/VERSION"), b"1.0".to_vec()),
        (format!("{layer_id}/json"), layer_json.into_bytes()),
        (format!("{layer_id}/layer.tar"), layer.to_vec()),
        ("manifest.json".to_string(), manifest.into_bytes()),
        ("repositories".to_string(), repositories.into_bytes()),
    ])
}

/// A container-safe name from a path: `./my mim/` → `my-mim`, `api.js` → `api`.
pub fn default_name(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let base = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sanitize(
        [".tar.gz", ".tgz", ".tar", ".js", ".mjs", ".cjs"]
            .iter()
            .find_map(|ext| base.strip_suffix(ext))
            .unwrap_or(&base),
    )
}

/// Replaces what a container name may not hold with `-` (63 characters at most).
pub fn sanitize(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let name: String = trimmed.chars().take(63).collect();
    if name.is_empty() {
        "mim".to_string()
    } else {
        name
    }
}
