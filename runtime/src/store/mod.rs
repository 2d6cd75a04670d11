//! Container storage behind `context.storage`.
//!
//! The [`mimhost_bindings::Storage`] trait is the seam; [`SledStore`] is the embedded
//! default, made durable by its write-ahead log (`wal`). Each container's worker opens its own store folder, so containers are
//! isolated by construction and reads never cross the process boundary. With
//! `--cluster` the worker opens a [`RedisStore`] instead, shared by every node.

mod redis_mirror;
mod redis_store;
mod room;
mod sled_store;
mod wal;

pub use redis_store::{RedisStore, StoreKeys};
pub use sled_store::{Durability, SledStore};

use mimhost_bindings::{Storage, StorageError};
use std::path::Path;

/// The store a worker opened: the embedded one, or Redis in a cluster.
pub enum OpenStore {
    /// `<data>/store/NAME` on this node (the single-node default).
    Sled(SledStore),
    /// The cluster's Redis (`--cluster`); boxed, it is the larger one.
    Redis(Box<RedisStore>),
}

impl OpenStore {
    /// Opens container `name`'s store: in the Redis at `redis` when given, else in
    /// the folder `dir`.
    pub fn open(dir: &Path, name: &str, redis: Option<&str>) -> Result<Self, StorageError> {
        match redis {
            Some(url) => RedisStore::open(url, name).map(|s| Self::Redis(Box::new(s))),
            None => SledStore::open(dir).map(Self::Sled),
        }
    }

    /// What the committer must make durable before the answers of the writes made
    /// since the last call may leave (group commit). Redis acknowledges each write before the
    /// call returns, so only the embedded store has anything to hand over.
    pub fn take_dirty(&self) -> Option<Durability> {
        match self {
            Self::Sled(s) => s.take_dirty(),
            Self::Redis(_) => None,
        }
    }

    fn inner(&self) -> &dyn Storage {
        match self {
            Self::Sled(s) => s,
            Self::Redis(s) => s.as_ref(),
        }
    }
}

impl Storage for OpenStore {
    fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.inner().get(key)
    }
    fn set(&self, key: &str, value: &str, tag: Option<&str>) -> Result<(), StorageError> {
        self.inner().set(key, value, tag)
    }
    fn remove(&self, key: &str) -> Result<(), StorageError> {
        self.inner().remove(key)
    }
    fn items(&self, tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        self.inner().items(tag)
    }
    fn remove_by_tag(&self, tag: &str) -> Result<usize, StorageError> {
        self.inner().remove_by_tag(tag)
    }
}
