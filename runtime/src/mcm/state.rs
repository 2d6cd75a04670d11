//! The MCM state of this node (images and deployed containers), apart from the
//! API's HTTP handling so the host's shared state can hold it without importing
//! the handlers that read that shared state.

use super::containers::{self, ContainerRecord};
use super::images::{self, ImageMeta};
use crate::config::Config;
use crate::mims_dir::NodeFacts;
use crate::registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;

/// The MCM state of this node: the images on disk and the deployed containers.
pub struct Mcm {
    pub(super) data: PathBuf,
    pub(super) registry: Arc<Registry>,
    pub(super) node: NodeFacts,
    pub(super) max_image: usize,
    pub(super) images: images::ImageStore,
    pub(super) containers: containers::Records,
    /// Serialises changes (create, update, delete) so records, disk and registry agree.
    pub(super) ops: tokio::sync::Mutex<()>,
    /// The cluster's Redis URL (`--cluster`), where container stores live.
    pub(super) redis: Option<String>,
    /// The cluster's deploy state (`--cluster`): changes are recorded there.
    pub(super) deploys: Option<Arc<crate::cluster::deploys::Deploys>>,
}

impl Mcm {
    /// The MCM state kept under `config.data`; reads the images already there. In a
    /// cluster, changes are recorded in its Redis too.
    pub fn open(
        config: &Config,
        registry: Arc<Registry>,
        node: NodeFacts,
        cluster: Option<&Arc<crate::cluster::Cluster>>,
    ) -> Self {
        let images = images::ImageStore::open(&config.data);
        let deploys = cluster.map(|c| Arc::new(crate::cluster::deploys::Deploys::new(c.clone())));
        Self {
            data: config.data.clone(),
            registry,
            node,
            max_image: config.max_image,
            images,
            containers: containers::Records::default(),
            ops: tokio::sync::Mutex::new(()),
            redis: config.cluster.clone(),
            deploys,
        }
    }

    /// Starts every persisted container (call before the port opens). Containers that
    /// cannot start are logged and listed with state `failed`.
    pub async fn restore(&self) {
        containers::restore(self).await;
    }

    /// The images, oldest first.
    pub fn images(&self) -> Vec<ImageMeta> {
        self.images.list()
    }

    /// The deployed containers' records, by name.
    pub fn deployed(&self) -> Vec<ContainerRecord> {
        self.containers.list()
    }
}
