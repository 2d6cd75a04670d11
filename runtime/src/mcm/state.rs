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
}

impl Mcm {
    /// The MCM state kept under `config.data`; reads the images already there.
    pub fn open(config: &Config, registry: Arc<Registry>, node: NodeFacts) -> Self {
        let images = images::ImageStore::open(&config.data);
        Self {
            data: config.data.clone(),
            registry,
            node,
            max_image: config.max_image,
            images,
            containers: containers::Records::default(),
            ops: tokio::sync::Mutex::new(()),
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
