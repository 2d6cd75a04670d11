//! Reads an uploaded image — a `docker save` tar or a plain tar / tar.gz of a mim —
//! entirely in memory, refusing anything hostile before a byte reaches the disk:
//! absolute paths, `..`, links, device files, fifos, bombs (bounded unpacked size and
//! entry count), truncated archives, images without `index.js`, and JavaScript nested
//! deeper than the parser can take.

use mimhost_bindings::nesting::{check_nesting, MAX_SOURCE_NESTING};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::Path;

/// Bounds on what one image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes all decompression and all files together may produce.
    pub max_unpacked: u64,
    /// Tar entries all archives together may hold.
    pub max_entries: usize,
}

impl Limits {
    /// The limits for uploads of at most `max_image` bytes: 4× that unpacked
    /// (at least 16 MiB) and 20 000 entries.
    pub fn for_upload(max_image: usize) -> Self {
        Self {
            max_unpacked: (max_image as u64).saturating_mul(4).max(16 << 20),
            max_entries: 20_000,
        }
    }
}

/// How the image was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `docker save`: `manifest.json`, config and layer tars.
    Docker,
    /// A tar of the mim's files.
    Plain,
}

/// A validated image, ready to be written out.
#[derive(Debug)]
pub struct Inspected {
    /// How it was packaged.
    pub layout: Layout,
    /// `RepoTags` of a docker image (may be empty).
    pub repo_tags: Vec<String>,
    /// Every file, by normalised relative path (`index.js`, `lib/x.js`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Inspected {
    /// Total bytes of all files.
    pub fn size(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }
}

/// What is left of the limits while reading.
struct Budget {
    bytes: u64,
    entries: usize,
    limits: Limits,
}

impl Budget {
    fn take_bytes(&mut self, n: u64) -> Result<(), String> {
        self.bytes = self.bytes.checked_sub(n).ok_or_else(|| {
            format!(
                "the image unpacks to more than {} bytes (a compression bomb?)",
                self.limits.max_unpacked
            )
        })?;
        Ok(())
    }

    fn take_entry(&mut self) -> Result<(), String> {
        self.entries = self.entries.checked_sub(1).ok_or_else(|| {
            format!(
                "the image holds more than {} archive entries",
                self.limits.max_entries
            )
        })?;
        Ok(())
    }
}

/// Validates an upload and returns its files; the error says what is wrong.
pub fn inspect(upload: &[u8], limits: Limits) -> Result<Inspected, String> {
    let mut budget = Budget {
        bytes: limits.max_unpacked,
        entries: limits.max_entries,
        limits,
    };
    let outer = gunzip_if_needed(upload, &mut budget)?;
    let tar = read_tar(&outer, &mut budget, "the archive")?;
    let (layout, repo_tags, mut files) = if tar.files.contains_key("manifest.json") {
        let (tags, files) = docker_files(&outer, &tar, &mut budget)?;
        (Layout::Docker, tags, files)
    } else {
        tar.no_links()?;
        let files = tar
            .files
            .into_iter()
            .map(|(path, range)| (path, outer[range].to_vec()))
            .collect();
        (Layout::Plain, Vec::new(), files)
    };
    strip_single_folder(&mut files);
    check_tree(&files)?;
    match files.get("index.js") {
        Some(_) => {}
        None => {
            return Err(match layout {
                Layout::Docker => "the image's layers hold no index.js at their root".into(),
                Layout::Plain => "the archive holds no index.js at its root (is it a mim?)".into(),
            })
        }
    }
    for (path, data) in &files {
        if is_script(path) {
            let text = String::from_utf8_lossy(data);
            if let Err(deep) = check_nesting(&text, MAX_SOURCE_NESTING) {
                return Err(format!(
                    "{path}:{}:{}: source nested deeper than {MAX_SOURCE_NESTING} levels",
                    deep.line, deep.column
                ));
            }
        }
    }
    Ok(Inspected {
        layout,
        repo_tags,
        files,
    })
}

fn is_script(path: &str) -> bool {
    [".js", ".mjs", ".cjs"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// Decompresses gzip (bounded by the budget); other bytes are returned as they are.
fn gunzip_if_needed<'a>(
    bytes: &'a [u8],
    budget: &mut Budget,
) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    let cap = budget.bytes;
    flate2::read::MultiGzDecoder::new(bytes)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("the gzip data is corrupt or truncated: {e}"))?;
    budget.take_bytes(out.len() as u64)?;
    Ok(std::borrow::Cow::Owned(out))
}

/// Reads every entry of a tar held in memory: regular files by normalised path and
/// where their data lies in `bytes`. Refuses links, devices, fifos, unsafe paths and
/// truncation.
fn read_tar(bytes: &[u8], budget: &mut Budget, what: &str) -> Result<Tar, String> {
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| format!("{what} is not a tar archive: {e}"))?;
    let mut end_of_last = 0usize;
    for entry in entries {
        let entry = entry
            .map_err(|e| format!("{what} is not a valid tar archive (or is truncated): {e}"))?;
        budget.take_entry()?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let start = usize::try_from(entry.raw_file_position())
            .map_err(|_| format!("{what} is too large"))?;
        let size = entry.size();
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| format!("{what} is truncated (entry {shown} is cut short)"))?;
        end_of_last = end.div_ceil(512) * 512;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous => {
                let path = safe_path(&raw_path).map_err(|why| format!("{what}: entry {shown:?} {why}"))?;
                budget.take_bytes(size)?;
                files.insert(path, start..end);
            }
            T::Directory => {
                safe_path(&raw_path).map_err(|why| format!("{what}: entry {shown:?} {why}"))?;
            }
            T::XGlobalHeader => {}
            T::Symlink | T::Link => {
                let path = safe_path(&raw_path).map_err(|why| format!("{what}: entry {shown:?} {why}"))?;
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let kind = if entry.header().entry_type() == T::Symlink { LinkKind::Symbolic } else { LinkKind::Hard };
                links.insert(path, Link { shown: format!("{what}: entry {shown:?}"), target, kind });
            }
            T::Char | T::Block | T::Fifo => {
                return Err(format!(
                    "{what}: entry {shown:?} is a device file or fifo; images may hold only files and folders"
                ))
            }
            other => return Err(format!("{what}: entry {shown:?} has an unsupported type ({other:?})")),
        }
    }
    let trailer = bytes.get(end_of_last..end_of_last + 512);
    if !trailer.is_some_and(|t| t.iter().all(|b| *b == 0)) {
        return Err(format!("{what} is truncated (no end-of-archive marker)"));
    }
    Ok(Tar { files, links })
}

/// The regular files and the links of a tar.
struct Tar {
    files: BTreeMap<String, Range<usize>>,
    links: BTreeMap<String, Link>,
}

impl Tar {
    /// Refuses any link: images hold only files and folders.
    fn no_links(&self) -> Result<(), String> {
        match self.links.values().next() {
            Some(link) => Err(format!(
                "{} is a link; images may hold only files and folders",
                link.shown
            )),
            None => Ok(()),
        }
    }

    /// The data of `path`, following one link to a regular file of the same archive
    /// (`docker save` links duplicate `layer.tar`s to one copy).
    fn resolve(&self, path: &str) -> Option<Range<usize>> {
        if let Some(r) = self.files.get(path) {
            return Some(r.clone());
        }
        let link = self.links.get(path)?;
        let target = std::str::from_utf8(&link.target).ok()?;
        let base = match link.kind {
            LinkKind::Hard => "",
            LinkKind::Symbolic => path.rsplit_once('/').map(|(d, _)| d).unwrap_or(""),
        };
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        if target.starts_with('/') {
            return None;
        }
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        self.files.get(&parts.join("/")).cloned()
    }
}

/// A link entry, never written out.
struct Link {
    shown: String,
    target: Vec<u8>,
    kind: LinkKind,
}

#[derive(PartialEq, Eq)]
enum LinkKind {
    Symbolic,
    Hard,
}

/// Normalises an archive path to `a/b/c`; refuses absolute paths, `..`, empty names.
fn safe_path(raw: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "has a name that is not UTF-8")?;
    if text.starts_with('/') {
        return Err("has an absolute path");
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("climbs out of the image with '..'"),
            p if p.len() > 255 => return Err("has a name longer than 255 bytes"),
            p if p.contains('\0') => return Err("has a NUL byte in its name"),
            p => parts.push(p),
        }
    }
    if parts.len() > 64 {
        return Err("is nested more than 64 folders deep");
    }
    Ok(parts.join("/"))
}

/// `manifest.json` of a `docker save` archive (only what is needed).
#[derive(serde::Deserialize)]
struct ManifestEntry {
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Files by normalised path.
type Files = BTreeMap<String, Vec<u8>>;

/// Applies the layers named by `manifest.json` in order (with whiteouts).
fn docker_files(
    outer: &[u8],
    outer_tar: &Tar,
    budget: &mut Budget,
) -> Result<(Vec<String>, Files), String> {
    let manifest_range = outer_tar.resolve("manifest.json").unwrap_or(0..0);
    let manifest: Vec<ManifestEntry> = serde_json::from_slice(&outer[manifest_range])
        .map_err(|e| format!("manifest.json is not a docker save manifest: {e}"))?;
    let first = manifest
        .into_iter()
        .next()
        .ok_or("manifest.json lists no image")?;
    if first.layers.is_empty() {
        return Err("manifest.json lists no layers".into());
    }
    let mut fs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for layer_name in &first.layers {
        let key = safe_path(layer_name.as_bytes())
            .map_err(|why| format!("manifest.json: layer {layer_name:?} {why}"))?;
        let range = outer_tar.resolve(&key).ok_or_else(|| {
            format!("manifest.json names layer {layer_name:?}, which is not in the archive")
        })?;
        let layer = gunzip_if_needed(&outer[range], budget)?;
        let what = format!("layer {layer_name}");
        let layer_tar = read_tar(&layer, budget, &what)?;
        layer_tar.no_links()?;
        for (path, range) in layer_tar.files {
            apply_layer_entry(&mut fs, path, &layer[range]);
        }
    }
    Ok((first.repo_tags.unwrap_or_default(), fs))
}

/// Adds one layer file to the tree, honouring OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
fn apply_layer_entry(fs: &mut BTreeMap<String, Vec<u8>>, path: String, data: &[u8]) {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f.to_string()),
        None => (String::new(), path.clone()),
    };
    if file == ".wh..wh..opq" {
        fs.retain(|p, _| !p.starts_with(&dir));
        return;
    }
    if let Some(hidden) = file.strip_prefix(".wh.") {
        let gone = format!("{dir}{hidden}");
        let under = format!("{gone}/");
        fs.retain(|p, _| *p != gone && !p.starts_with(&under));
        return;
    }
    fs.insert(path, data.to_vec());
}

/// A tar of a folder (`mim/index.js`, `mim/lib.js`) is taken as that folder's content.
fn strip_single_folder(files: &mut BTreeMap<String, Vec<u8>>) {
    if files.contains_key("index.js") {
        return;
    }
    let Some(top) = files
        .keys()
        .next()
        .and_then(|p| p.split_once('/'))
        .map(|(t, _)| format!("{t}/"))
    else {
        return;
    };
    if files.keys().all(|p| p.starts_with(&top)) && files.contains_key(&format!("{top}index.js")) {
        let old = std::mem::take(files);
        *files = old
            .into_iter()
            .map(|(p, d)| (p[top.len()..].to_string(), d))
            .collect();
    }
}

/// Refuses a path that is both a file and a folder (`a` and `a/b`).
fn check_tree(files: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    for path in &names {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            if names.contains(parent) {
                return Err(format!("{parent} is both a file and a folder in the image"));
            }
            at += i + 1;
        }
    }
    Ok(())
}

/// Writes the files under `dir` (which must be new and empty). Paths were validated
/// by [`inspect`], so nothing lands outside `dir`; files are created, never opened
/// through an existing entry.
pub fn write_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for (path, data) in files {
        let target = dir.join(path);
        if !target.starts_with(dir) {
            return Err(std::io::Error::other(format!(
                "{path} would land outside the image folder"
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)?;
        f.write_all(data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn limits() -> Limits {
        Limits::for_upload(1 << 20)
    }

    #[test]
    fn plain_tar_with_index_passes() {
        let t = tar_of(&[
            ("index.js", b"app.get('/', (q, r) => r.end('x'));"),
            ("lib/a.js", b"1"),
        ]);
        let got = inspect(&t, limits()).unwrap();
        assert_eq!(got.layout, Layout::Plain);
        assert!(got.files.contains_key("lib/a.js"));
    }

    #[test]
    fn a_folder_tar_is_unwrapped() {
        let t = tar_of(&[("mim/index.js", b"1"), ("mim/b.js", b"2")]);
        let got = inspect(&t, limits()).unwrap();
        assert!(got.files.contains_key("index.js") && got.files.contains_key("b.js"));
    }

    #[test]
    fn truncation_is_caught() {
        let t = tar_of(&[("index.js", &[b'x'; 2000])]);
        assert!(inspect(&t[..1024], limits())
            .unwrap_err()
            .contains("truncated"));
        assert!(inspect(&t[..1536 + 512], limits())
            .unwrap_err()
            .contains("truncated"));
        assert!(inspect(&t[..300], limits()).is_err());
    }

    #[test]
    fn no_index_is_refused() {
        let t = tar_of(&[("main.js", b"1")]);
        assert!(inspect(&t, limits()).unwrap_err().contains("index.js"));
    }

    #[test]
    fn docker_layer_links_resolve_inside_the_archive_only() {
        let layer = tar_of(&[("index.js", b"1")]);
        let manifest = br#"[{"RepoTags":["x:1"],"Layers":["b/layer.tar"]}]"#;
        let with_link = |target: &str| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(layer.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "a/layer.tar", &layer[..]).unwrap();
            let mut l = tar::Header::new_gnu();
            l.set_size(0);
            l.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut l, "b/layer.tar", target).unwrap();
            let mut m = tar::Header::new_gnu();
            m.set_size(manifest.len() as u64);
            m.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut m, "manifest.json", &manifest[..])
                .unwrap();
            b.into_inner().unwrap()
        };
        let got = inspect(&with_link("../a/layer.tar"), limits()).unwrap();
        assert!(got.files.contains_key("index.js"));
        assert!(inspect(&with_link("/etc/passwd"), limits()).is_err());
        assert!(inspect(&with_link("../../a/layer.tar"), limits()).is_err());
    }

    #[test]
    fn whiteouts_remove_files() {
        let mut fs = BTreeMap::new();
        apply_layer_entry(&mut fs, "a/x.js".into(), b"1");
        apply_layer_entry(&mut fs, "a/.wh.x.js".into(), b"");
        assert!(fs.is_empty());
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(safe_path(b"./a//b").unwrap(), "a/b");
        assert!(safe_path(b"/etc/passwd").is_err());
        assert!(safe_path(b"a/../../x").is_err());
    }
}
