//! This node's side of global deploys (`--cluster`, SPEC 8): making its images and
//! containers match the cluster's state read from Redis ([`crate::cluster::deploys`]),
//! recording its own MCM changes there, and telling which nodes serve what.

use super::containers::{record_file, save, spec_for, start_record};
use super::tar_image::{self, Limits};
use super::{images, persist, ApiError, ContainerRecord, ImageMeta, Mcm};
use crate::cluster::deploys::{DeployError, Deploys, Served, Snapshot};
use crate::registry::Origin;
use std::collections::{BTreeMap, BTreeSet};

/// The MCM answer for a change the cluster could not record.
pub(super) fn deploy_error(e: DeployError) -> ApiError {
    match e {
        DeployError::Taken(_) | DeployError::BasePathTaken { .. } => {
            ApiError::conflict(e.to_string())
        }
        DeployError::Unavailable(_) => ApiError::new(503, e.to_string()),
    }
}

impl Mcm {
    /// The cluster's deploy state, when this node is part of a cluster.
    pub fn deploys(&self) -> Option<&std::sync::Arc<Deploys>> {
        self.deploys.as_ref()
    }

    /// Refuses an MCM change up front (503) while the cluster's Redis is unavailable,
    /// so nothing changes on this node only.
    pub(super) fn check_cluster(&self) -> Result<(), ApiError> {
        match &self.deploys {
            Some(d) => d.check_up().map_err(deploy_error),
            None => Ok(()),
        }
    }

    /// Refuses an MCM change (503) while the cluster's Redis is unavailable, then
    /// brings this node in step with the cluster's deploys, so the change is judged
    /// against the cluster's state even when this node has not polled since another
    /// node's change (call with [`Mcm::lock_changes`] held).
    pub(super) async fn in_step_with_cluster(&self) -> Result<(), ApiError> {
        self.check_cluster()?;
        match &self.deploys {
            Some(d) => d.catch_up(self).await.map_err(deploy_error),
            None => Ok(()),
        }
    }

    /// Holds off MCM calls while the cluster's state is applied (and the other way
    /// round).
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ops.lock().await
    }

    /// The nodes serving container `name`, sorted: this one when it runs here, and
    /// every other node that said so at the last poll.
    pub fn nodes_serving(&self, name: &str) -> Vec<String> {
        let mut nodes: BTreeSet<String> = self
            .deploys
            .as_ref()
            .map(|d| d.nodes_of(name).into_iter().collect())
            .unwrap_or_default();
        if self.registry.get(name).is_some() {
            nodes.insert(self.node.node_id.clone());
        } else {
            nodes.remove(&self.node.node_id);
        }
        nodes.into_iter().collect()
    }

    /// What this node serves, for the other nodes' container lists.
    pub fn served_here(&self) -> BTreeMap<String, Served> {
        self.registry
            .list()
            .into_iter()
            .map(|c| {
                let drop_in = c.origin == Origin::MimsFolder;
                let served = Served {
                    base_path: c.base_path.clone(),
                    source: if drop_in { "mims" } else { "api" }.to_string(),
                    env: if drop_in {
                        c.supervisor.spec().env.clone()
                    } else {
                        BTreeMap::new()
                    },
                };
                (c.name.clone(), served)
            })
            .collect()
    }

    /// A plain tar of image `id`'s files (to record an image this node had before it
    /// joined the cluster, whose upload is gone).
    pub fn image_tar(&self, id: &str) -> Result<Vec<u8>, String> {
        let root = self.images.files_dir(id);
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files)
            .map_err(|e| format!("cannot read image {id}: {e}"))?;
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, &path, bytes.as_slice())
                .map_err(|e| format!("cannot pack image {id}: {e}"))?;
        }
        tar.into_inner()
            .map_err(|e| format!("cannot pack image {id}: {e}"))
    }

    /// Makes this node's images and deployed containers match `snapshot` (call with
    /// [`Mcm::lock_changes`] held); returns how many things changed. What cannot be
    /// applied (code that does not load here, a name or base path a drop-in mim of
    /// this node has) is logged and shown as `failed`.
    pub async fn apply(&self, deploys: &Deploys, snapshot: Snapshot) -> usize {
        let mut changed = 0;
        for meta in &snapshot.images {
            changed += self.apply_image(deploys, meta).await;
        }
        let wanted: BTreeMap<&str, &ContainerRecord> = snapshot
            .containers
            .iter()
            .map(|r| (r.name.as_str(), r))
            .collect();
        for entry in self.containers.entries() {
            if !wanted.contains_key(entry.record.name.as_str()) {
                self.forget(&entry.record.name).await;
                changed += 1;
            }
        }
        for record in wanted.values() {
            changed += self.apply_container(record).await;
        }
        let kept: BTreeSet<&str> = snapshot.images.iter().map(|m| m.id.as_str()).collect();
        for meta in self.images.list() {
            if !kept.contains(meta.id.as_str()) && self.containers.using_image(&meta.id).is_empty()
            {
                match images::remove_local(self, &meta) {
                    Ok(()) => changed += 1,
                    Err(e) => tracing::error!("deploys: {}", e.message),
                }
            }
        }
        changed
    }

    /// Installs or updates one image; 1 when something changed.
    async fn apply_image(&self, deploys: &Deploys, meta: &ImageMeta) -> usize {
        match self.images.get(&meta.id) {
            Some(local) if local == *meta => 0,
            Some(_) => match self.images.write_meta(meta) {
                Ok(()) => {
                    self.images.insert(meta.clone());
                    1
                }
                Err(e) => {
                    tracing::error!("deploys: {}", e.message);
                    0
                }
            },
            None => match deploys.blob(&meta.id).await {
                Ok(Some(bytes)) => match self.install(meta, bytes).await {
                    Ok(()) => {
                        tracing::info!(image = %meta.id, "deploys: image {} installed", meta.name);
                        1
                    }
                    Err(e) => {
                        tracing::error!(image = %meta.id, "deploys: image not installed: {}", e.message);
                        0
                    }
                },
                Ok(None) => {
                    tracing::error!(image = %meta.id, "deploys: the image's tar is missing in Redis");
                    0
                }
                Err(e) => {
                    tracing::error!(image = %meta.id, "deploys: cannot fetch the image: {e}");
                    0
                }
            },
        }
    }

    /// Unpacks an image recorded by another node, with that node's record.
    async fn install(&self, meta: &ImageMeta, bytes: Vec<u8>) -> Result<(), ApiError> {
        let limits = Limits::for_upload(self.max_image);
        let inspected = tokio::task::spawn_blocking(move || tar_image::inspect(&bytes, limits))
            .await
            .map_err(|e| ApiError::internal(format!("image check failed: {e}")))?
            .map_err(|e| ApiError::bad(format!("not an image: {e}")))?;
        let root = self.images.root.clone();
        let staged = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || images::stage(&root, &meta, &inspected.files))
                .await
                .map_err(|e| ApiError::internal(format!("image write failed: {e}")))??
        };
        images::adopt_staged(self, &staged, meta.clone())
    }

    /// Starts, hot swaps or re-records one container; 1 when something changed.
    async fn apply_container(&self, record: &ContainerRecord) -> usize {
        let name = &record.name;
        if self
            .registry
            .get(name)
            .is_some_and(|c| c.origin == Origin::MimsFolder)
        {
            tracing::warn!(container = %name, "deploys: a drop-in mim of this node has the name of a deployed container; the drop-in keeps serving here");
            return 0;
        }
        let local = self.containers.get(name);
        let running = self.registry.get(name);
        if let (Some(entry), Some(c)) = (&local, &running) {
            let same_code = entry.record.image_id == record.image_id
                && entry.record.env == record.env
                && entry.record.base_path == record.base_path;
            if same_code {
                if entry.record == *record {
                    return 0;
                }
                return self.keep(record, None);
            }
            if entry.record.base_path == record.base_path && c.base_path == record.base_path {
                let spec = spec_for(self, name, &record.image_id, &record.env, &record.base_path);
                let error = self.registry.update(spec).await.err();
                match &error {
                    None => {
                        tracing::info!(container = %name, "deploys: hot swapped to image {}", record.image_id)
                    }
                    Some(e) => {
                        tracing::error!(container = %name, "deploys: the new code does not load here; the previous version keeps serving: {e}")
                    }
                }
                return self.keep(record, None);
            }
            self.registry.remove(name).await;
        }
        let error = start_record(self, record).await;
        match &error {
            None => tracing::info!(container = %name, "deploys: started at {}", record.base_path),
            Some(e) => tracing::error!(container = %name, "deploys: not started here: {e}"),
        }
        self.keep(record, error)
    }

    /// Records `record` on this node (file and list); 1.
    fn keep(&self, record: &ContainerRecord, error: Option<String>) -> usize {
        if let Err(e) = save(self, record) {
            tracing::error!("deploys: {}", e.message);
        }
        self.containers.put(record.clone(), error);
        1
    }

    /// Stops and forgets a container another node deleted (its store is kept).
    async fn forget(&self, name: &str) {
        if let Err(e) = persist::remove_file(&record_file(self, name)) {
            tracing::error!(container = %name, "deploys: cannot remove its record: {e}");
        }
        self.containers.remove(name);
        self.registry.remove(name).await;
        tracing::info!(container = %name, "deploys: removed");
    }
}

/// Every file under `dir` as (path relative to `root`, bytes).
fn collect_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}
