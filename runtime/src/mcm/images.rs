//! Images: uploaded tars, validated, unpacked into `<data>/images/<id>/fs/` with
//! their record in `<data>/images/<id>/meta.json`. The id is the start of the
//! sha256 of the upload, so the same upload twice is the same image.

use super::error::{ApiError, ApiResult};
use super::state::Mcm;
use super::tar_image::{self, Layout, Limits};
use super::{multipart, persist, time};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record of one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageMeta {
    /// Short id: the first 12 hex digits of the digest.
    pub id: String,
    /// The image name (a repo tag without its version).
    pub name: String,
    /// `name:tag` references that point at this image (a tag moves to the newest
    /// upload that carries it).
    pub repo_tags: Vec<String>,
    /// Bytes of the unpacked files.
    pub size: u64,
    /// `sha256:<hex>` of the uploaded bytes.
    pub digest: String,
    /// When it was first uploaded (RFC 3339).
    pub created: String,
}

/// The images of this node, mirrored from disk.
pub struct ImageStore {
    pub(super) root: PathBuf,
    all: Mutex<BTreeMap<String, ImageMeta>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageStore {
    /// Reads `<data>/images/*/meta.json`, dropping leftovers of interrupted uploads.
    pub fn open(data: &Path) -> Self {
        let root = data.join("images");
        let mut all = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    let _ = std::fs::remove_dir_all(&path);
                    continue;
                }
                match persist::read_json::<ImageMeta>(&path.join("meta.json")) {
                    Ok(meta) if meta.id == name => {
                        all.insert(meta.id.clone(), meta);
                    }
                    Ok(_) => tracing::warn!(
                        "{}: its meta.json names another id; ignored",
                        path.display()
                    ),
                    Err(e) => tracing::warn!("image folder {} ignored: {e}", path.display()),
                }
            }
        }
        Self {
            root,
            all: Mutex::new(all),
        }
    }

    /// Every image, oldest first.
    pub fn list(&self) -> Vec<ImageMeta> {
        let mut all: Vec<ImageMeta> = lock(&self.all).values().cloned().collect();
        all.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        all
    }

    /// The folder holding the files of image `id`.
    pub fn files_dir(&self, id: &str) -> PathBuf {
        self.root.join(id).join("fs")
    }

    /// Finds an image by id, `sha256:` digest (or a prefix of at least 12 hex digits),
    /// `name:tag`, or name (its `latest` tag, else its newest image).
    pub fn resolve(&self, reference: &str) -> Option<ImageMeta> {
        let all = lock(&self.all);
        let reference = reference.trim();
        if reference.is_empty() {
            return None;
        }
        if let Some(m) = all.get(reference) {
            return Some(m.clone());
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Some(m) = all.values().find(|m| {
                m.digest
                    .strip_prefix("sha256:")
                    .is_some_and(|d| d.starts_with(hex))
            }) {
                return Some(m.clone());
            }
        }
        if let Some(m) = all
            .values()
            .find(|m| m.repo_tags.iter().any(|t| t == reference))
        {
            return Some(m.clone());
        }
        let latest = format!("{reference}:latest");
        if let Some(m) = all.values().find(|m| m.repo_tags.contains(&latest)) {
            return Some(m.clone());
        }
        all.values()
            .filter(|m| {
                m.name == reference || m.repo_tags.iter().any(|t| split_tag(t).0 == reference)
            })
            .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)))
            .cloned()
    }

    pub(super) fn insert(&self, meta: ImageMeta) {
        lock(&self.all).insert(meta.id.clone(), meta);
    }

    pub(super) fn remove(&self, id: &str) -> Option<ImageMeta> {
        lock(&self.all).remove(id)
    }

    pub(super) fn get(&self, id: &str) -> Option<ImageMeta> {
        lock(&self.all).get(id).cloned()
    }

    pub(super) fn write_meta(&self, meta: &ImageMeta) -> Result<(), ApiError> {
        let value = serde_json::to_value(meta).map_err(|e| ApiError::internal(e.to_string()))?;
        persist::write_json(&self.root.join(&meta.id).join("meta.json"), &value)
            .map_err(|e| ApiError::internal(format!("cannot save image {}: {e}", meta.id)))
    }

    /// Gives `tags` to image `id`, taking them from any other image that had them.
    fn move_tags(&self, id: &str, tags: &[String]) -> Result<ImageMeta, ApiError> {
        let changed: Vec<ImageMeta> = {
            let mut all = lock(&self.all);
            let mut changed = Vec::new();
            for (other_id, other) in all.iter_mut() {
                if other_id != id && other.repo_tags.iter().any(|t| tags.contains(t)) {
                    other.repo_tags.retain(|t| !tags.contains(t));
                    changed.push(other.clone());
                }
            }
            if let Some(me) = all.get_mut(id) {
                for t in tags {
                    if !me.repo_tags.contains(t) {
                        me.repo_tags.push(t.clone());
                    }
                }
                changed.push(me.clone());
            }
            changed
        };
        for meta in &changed {
            self.write_meta(meta)?;
        }
        self.get(id)
            .ok_or_else(|| ApiError::internal(format!("image {id} vanished")))
    }
}

/// Splits `name:tag` (the tag is after the last `:` that follows the last `/`).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], Some(&reference[i + 1..])),
        _ => (reference, None),
    }
}

/// Whether `name` is an acceptable image name (`my-mim`, `acme/my-mim`, `host:5000/x`).
fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
        && !name.contains("//")
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `name:tag` from a user-given name (tag `latest` when none), validated.
fn normalise_tag(reference: &str) -> Result<String, ApiError> {
    let (name, tag) = split_tag(reference.trim());
    let tag = tag.unwrap_or("latest");
    if !valid_image_name(name) || !valid_tag(tag) {
        return Err(ApiError::bad(format!(
            "bad image name {reference:?}: use letters, digits, '.', '_', '-', '/' and an optional ':tag'"
        )));
    }
    Ok(format!("{name}:{tag}"))
}

/// The name from an upload file name: `my-mim.tar.gz` → `my-mim`.
fn name_from_file(file_name: &str) -> Option<String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = [".tar.gz", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    (!stem.is_empty()).then(|| stem.to_string())
}

/// What an upload request carried.
struct Upload {
    bytes: Bytes,
    file_name: Option<String>,
    name: Option<String>,
}

/// `POST /images`: multipart field `image` (and optional `name`), or a raw tar body
/// with `?name=`.
pub async fn upload(mcm: &Mcm, req: Request<Incoming>) -> ApiResult {
    mcm.check_cluster()?;
    let upload = read_upload(mcm.max_image, req).await?;
    let limits = Limits::for_upload(mcm.max_image);
    let bytes = upload.bytes.clone();
    let inspected = tokio::task::spawn_blocking(move || tar_image::inspect(&bytes, limits))
        .await
        .map_err(|e| ApiError::internal(format!("image check failed: {e}")))?
        .map_err(|e| ApiError::bad(format!("not an image: {e}")))?;
    let mut tags = Vec::new();
    if inspected.layout == Layout::Docker {
        for t in &inspected.repo_tags {
            tags.push(normalise_tag(t)?);
        }
    }
    if tags.is_empty() {
        let given = upload
            .name
            .clone()
            .or_else(|| upload.file_name.as_deref().and_then(name_from_file));
        let given = given.ok_or_else(|| {
            ApiError::bad(
                "name the image: add a multipart field 'name' or upload it with a file name",
            )
        })?;
        tags.push(normalise_tag(&given)?);
    }
    let name = split_tag(&tags[0]).0.to_string();
    let hex: String = Sha256::digest(&upload.bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = hex[..12].to_string();
    let meta = ImageMeta {
        id: id.clone(),
        name,
        repo_tags: Vec::new(),
        size: inspected.size(),
        digest: format!("sha256:{hex}"),
        created: time::now_rfc3339(),
    };
    let store_root = mcm.images.root.clone();
    if mcm.images.get(&id).is_none() {
        let staged = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || stage(&store_root, &meta, &inspected.files))
                .await
                .map_err(|e| ApiError::internal(format!("image write failed: {e}")))?
        }?;
        let _ops = mcm.ops.lock().await;
        let before = mcm.images.list();
        if mcm.images.get(&id).is_none() {
            adopt_staged(mcm, &staged, meta)?;
        } else {
            let _ = std::fs::remove_dir_all(&staged);
        }
        let meta = mcm.images.move_tags(&id, &tags)?;
        publish(mcm, &before, &id, &upload.bytes).await?;
        tracing::info!(image = %id, "image {} uploaded ({} bytes)", meta.name, meta.size);
        return Ok((201, to_json(&meta)));
    }
    let _ops = mcm.ops.lock().await;
    let before = mcm.images.list();
    let meta = mcm.images.move_tags(&id, &tags)?;
    publish(mcm, &before, &id, &upload.bytes).await?;
    Ok((201, to_json(&meta)))
}

/// Records an upload in the cluster (`--cluster`): the image's tar and every image
/// record it changed since `before` (tags move). When that fails this node has the
/// image and the cluster not: the next poll makes this node match the cluster again.
async fn publish(mcm: &Mcm, before: &[ImageMeta], id: &str, tar: &[u8]) -> Result<(), ApiError> {
    let Some(deploys) = mcm.deploys() else {
        return Ok(());
    };
    let changed: Vec<ImageMeta> = mcm
        .images
        .list()
        .into_iter()
        .filter(|m| m.id == id || !before.contains(m))
        .collect();
    deploys
        .put_images(&changed, Some((id, tar)))
        .await
        .map_err(|e| {
            deploys.resync();
            super::replica::deploy_error(e)
        })
}

/// Moves a staged image folder into place and lists the image (a leftover folder of
/// the same id is replaced).
pub(super) fn adopt_staged(mcm: &Mcm, staged: &Path, meta: ImageMeta) -> Result<(), ApiError> {
    let target = mcm.images.root.join(&meta.id);
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(staged, &target)
        .map_err(|e| ApiError::internal(format!("cannot store image {}: {e}", meta.id)))?;
    persist::sync_dir(&mcm.images.root);
    mcm.images.insert(meta);
    Ok(())
}

/// Writes the files and meta.json into a fresh hidden folder; returns it.
pub(super) fn stage(
    root: &Path,
    meta: &ImageMeta,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<PathBuf, ApiError> {
    use rand::RngCore;
    let mut r = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut r);
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let staged = root.join(format!(".tmp-{}-{suffix}", meta.id));
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&staged)?;
        tar_image::write_tree(&staged.join("fs"), files)?;
        let value = serde_json::to_value(meta).map_err(std::io::Error::other)?;
        persist::write_json(&staged.join("meta.json"), &value)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        ApiError::internal(format!("cannot write image {}: {e}", meta.id))
    })?;
    Ok(staged)
}

/// Reads the upload body (bounded) and picks out the image and its name.
async fn read_upload(max_image: usize, req: Request<Incoming>) -> Result<Upload, ApiError> {
    let too_large = || ApiError::new(413, format!("the image is over the {max_image}-byte limit"));
    let limit = max_image.saturating_add(64 * 1024);
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let query_name = crate::http::query::param(req.uri().query(), "name").filter(|n| !n.is_empty());
    let boundary = multipart::boundary(&content_type);
    let raw = [
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
    ]
    .iter()
    .any(|t| content_type.trim().to_ascii_lowercase().starts_with(t));
    if boundary.is_none() && !raw {
        return Err(ApiError::bad(
            "send the image as multipart/form-data with the tar in field 'image' (or a raw application/x-tar body)",
        ));
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(ApiError::bad(format!("could not read the upload: {e}"))),
    };
    let Some(boundary) = boundary else {
        if body.len() > max_image {
            return Err(too_large());
        }
        return Ok(Upload {
            bytes: body,
            file_name: None,
            name: query_name,
        });
    };
    let parts = multipart::parse(&body, &boundary)
        .map_err(|e| ApiError::bad(format!("bad multipart body: {e}")))?;
    let image = parts
        .iter()
        .find(|p| p.name == "image")
        .ok_or_else(|| ApiError::bad("the multipart body has no field 'image' holding the tar"))?;
    if image.data.len() > max_image {
        return Err(too_large());
    }
    let name = parts
        .iter()
        .find(|p| p.name == "name")
        .map(|p| String::from_utf8_lossy(&p.data).trim().to_string())
        .filter(|n| !n.is_empty())
        .or(query_name);
    Ok(Upload {
        bytes: image.data.clone(),
        file_name: image.filename.clone(),
        name,
    })
}

fn to_json(meta: &ImageMeta) -> serde_json::Value {
    serde_json::to_value(meta).unwrap_or_default()
}

/// `GET /images`.
pub fn list(mcm: &Mcm) -> (u16, serde_json::Value) {
    let data: Vec<serde_json::Value> = mcm.images.list().iter().map(to_json).collect();
    (200, serde_json::json!({ "data": data }))
}

/// `GET /images/{id}`.
pub fn get(mcm: &Mcm, reference: &str) -> ApiResult {
    let meta = mcm
        .images
        .resolve(reference)
        .ok_or_else(|| no_image(reference))?;
    Ok((200, to_json(&meta)))
}

/// The 404 for an unknown image reference.
pub fn no_image(reference: &str) -> ApiError {
    ApiError::not_found(format!(
        "no image {reference:?}; upload it with POST /mcm/v1/images (see GET /mcm/v1/images)"
    ))
}

/// `DELETE /images/{id}`: 409 while a container uses it.
pub async fn delete(mcm: &Mcm, reference: &str) -> ApiResult {
    let _ops = mcm.ops.lock().await;
    mcm.in_step_with_cluster().await?;
    let meta = mcm
        .images
        .resolve(reference)
        .ok_or_else(|| no_image(reference))?;
    let users = mcm.containers.using_image(&meta.id);
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "image {} is used by container(s) {}; remove them first",
            meta.id,
            users.join(", ")
        )));
    }
    if let Some(deploys) = mcm.deploys() {
        deploys
            .drop_image(&meta.id)
            .await
            .map_err(super::replica::deploy_error)?;
    }
    remove_local(mcm, &meta)?;
    tracing::info!(image = %meta.id, "image {} removed", meta.name);
    Ok((200, to_json(&meta)))
}

/// Removes an image's folder and its place in the list.
pub(super) fn remove_local(mcm: &Mcm, meta: &ImageMeta) -> Result<(), ApiError> {
    let dir = mcm.images.root.join(&meta.id);
    let trash = mcm.images.root.join(format!(".del-{}", meta.id));
    let _ = std::fs::remove_dir_all(&trash);
    std::fs::rename(&dir, &trash)
        .map_err(|e| ApiError::internal(format!("cannot remove image {}: {e}", meta.id)))?;
    persist::sync_dir(&mcm.images.root);
    mcm.images.remove(&meta.id);
    let _ = std::fs::remove_dir_all(&trash);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(split_tag("my-mim-v1:1.0.0"), ("my-mim-v1", Some("1.0.0")));
        assert_eq!(split_tag("host:5000/x"), ("host:5000/x", None));
        assert_eq!(normalise_tag("a").unwrap(), "a:latest");
        assert!(normalise_tag("../x").is_err());
        assert_eq!(
            name_from_file("dir/my-mim.tar.gz").as_deref(),
            Some("my-mim")
        );
        assert_eq!(name_from_file("x.tgz").as_deref(), Some("x"));
        assert_eq!(name_from_file(".tar"), None);
    }
}
