//! `context.storage` on sled: items in insertion order with a tag index.
//!
//! Trees: `items` key -> (seq, tag, value); `order` seq -> key; `tags` tag\0seq -> key.
//! A sequence number is given when a key is first written, so iteration by `order`
//! is oldest first and survives restarts.

use mimhost_bindings::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Page cache per store; the sled default (1 GiB) is far too big per container.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;
/// Space a write leaves free on the store's disk. sled does not survive running out:
/// its flush can hang, it refuses every write until reopened, and reopening needs
/// space. So a write that would eat into this reserve fails first, with a clear
/// error, and reads go on.
const RESERVE_BYTES: u64 = 2 * 1024 * 1024;

/// One stored item.
#[derive(Serialize, Deserialize)]
struct Item {
    seq: u64,
    tag: Option<String>,
    value: String,
}

/// The open database and its trees.
struct Trees {
    db: sled::Db,
    items: sled::Tree,
    order: sled::Tree,
    tags: sled::Tree,
}

impl Trees {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| StorageError(format!("cannot open store {}: {e}", dir.display())))?;
        Ok(Self {
            items: db.open_tree("items").map_err(err)?,
            order: db.open_tree("order").map_err(err)?,
            tags: db.open_tree("tags").map_err(err)?,
            db,
        })
    }
}

/// A container's store in its own sled database.
///
/// sled refuses every write after one I/O error (a full disk, say) until it is opened
/// again, so a store whose write or flush failed reopens itself before its next
/// write: once space is back, writes work again without a restart. Reads go on from
/// the old handle meanwhile.
pub struct SledStore {
    dir: PathBuf,
    open: RefCell<Option<Trees>>,
    dirty: Cell<bool>,
    /// Set by a failed write or flush (from any thread): the next write reopens.
    failed: Arc<AtomicBool>,
}

/// What makes the writes a store took so far durable, usable from another thread:
/// the worker's committer flushes while the JavaScript thread goes on (group commit).
pub struct Durability {
    db: sled::Db,
    failed: Arc<AtomicBool>,
}

impl Durability {
    /// Flushes to disk every write made before this call (one `fsync` for all of
    /// them); a failure marks the store for reopening.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(err)
            .inspect_err(|_| self.failed.store(true, Ordering::SeqCst))
    }
}

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

fn tag_key(tag: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tag.len() + 9);
    k.extend_from_slice(tag.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn tag_prefix(tag: &str) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    k.push(0);
    k
}

fn decode(bytes: &[u8]) -> Result<Item, StorageError> {
    postcard::from_bytes(bytes).map_err(err)
}

fn encode(item: &Item) -> Vec<u8> {
    postcard::to_allocvec(item).unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let trees = Trees::open(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: RefCell::new(Some(trees)),
            dirty: Cell::new(false),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Makes every write so far durable; a no-op when nothing was written since.
    pub fn flush_if_dirty(&self) -> Result<(), StorageError> {
        if self.dirty.replace(false) {
            self.with(None, |t| t.db.flush().map_err(err))
                .inspect_err(|_| self.failed.store(true, Ordering::SeqCst))?;
        }
        Ok(())
    }

    /// When something was written since the last call (or flush), what makes it
    /// durable from another thread; the store counts as clean afterwards.
    pub fn take_dirty(&self) -> Option<Durability> {
        if !self.dirty.replace(false) {
            return None;
        }
        let open = self.open.borrow();
        let db = open.as_ref()?.db.clone();
        Some(Durability {
            db,
            failed: self.failed.clone(),
        })
    }

    /// Runs `f` on the open trees. A write of `Some(bytes)` first checks there is
    /// room for it and reopens a store that failed.
    fn with<R>(
        &self,
        write: Option<usize>,
        f: impl FnOnce(&Trees) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        if let Some(bytes) = write {
            self.check_room(bytes)?;
        }
        if (write.is_some() && self.failed.load(Ordering::SeqCst)) || self.open.borrow().is_none() {
            self.reopen()?;
        }
        let open = self.open.borrow();
        let trees = open
            .as_ref()
            .ok_or_else(|| StorageError("the store is not open".into()))?;
        f(trees)
    }

    /// Refuses a write of `bytes` that would leave less than the reserve free.
    fn check_room(&self, bytes: usize) -> Result<(), StorageError> {
        let need = RESERVE_BYTES + 2 * bytes as u64;
        match free_bytes(&self.dir) {
            Some(free) if free < need => Err(StorageError(format!(
                "no space left for the store: {} KiB free on its disk, a write keeps {} KiB free",
                free / 1024,
                RESERVE_BYTES / 1024
            ))),
            _ => Ok(()),
        }
    }

    /// Drops the database (sled locks it) and opens it again.
    fn reopen(&self) -> Result<(), StorageError> {
        drop(self.open.borrow_mut().take());
        let trees = Trees::open(&self.dir)?;
        *self.open.borrow_mut() = Some(trees);
        self.failed.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Runs `f` as one transaction over the three trees; `room` as for [`Self::with`]
    /// (removals pass None: they may use the reserve, that is what it is for).
    fn transact<R>(
        &self,
        room: Option<usize>,
        f: impl Fn(
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
            &sled::transaction::TransactionalTree,
        ) -> Result<R, ConflictableTransactionError<StorageError>>,
    ) -> Result<R, StorageError> {
        self.with(room, |t| {
            self.dirty.set(true);
            (&t.items, &t.order, &t.tags)
                .transaction(|(items, order, tags)| f(items, order, tags))
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => {
                        self.failed.store(true, Ordering::SeqCst);
                        err(e)
                    }
                })
        })
    }
}

/// Bytes free for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

fn abort(e: StorageError) -> ConflictableTransactionError<StorageError> {
    ConflictableTransactionError::Abort(e)
}

impl Storage for SledStore {
    fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.with(None, |t| match t.items.get(key).map_err(err)? {
            Some(bytes) => Ok(Some(decode(&bytes)?.value)),
            None => Ok(None),
        })
    }

    /// A rewrite keeps the key's age; `setItem` (no tag) keeps an existing tag.
    fn set(&self, key: &str, value: &str, tag: Option<&str>) -> Result<(), StorageError> {
        let size = key.len() + value.len() + tag.map_or(0, str::len);
        let seq = self.with(Some(size), |t| t.db.generate_id().map_err(err))?;
        self.transact(Some(size), |items, order, tags| {
            let old = items
                .get(key)?
                .map(|b| decode(&b))
                .transpose()
                .map_err(abort)?;
            let (seq, old_tag) = match &old {
                Some(item) => (item.seq, item.tag.clone()),
                None => (seq, None),
            };
            let tag = tag.map(str::to_string).or(old_tag.clone());
            if old_tag != tag {
                if let Some(t) = &old_tag {
                    tags.remove(tag_key(t, seq))?;
                }
            }
            if let Some(t) = &tag {
                tags.insert(tag_key(t, seq), key.as_bytes())?;
            }
            order.insert(&seq.to_be_bytes(), key.as_bytes())?;
            let item = Item {
                seq,
                tag,
                value: value.to_string(),
            };
            items.insert(key.as_bytes(), encode(&item))?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<(), StorageError> {
        self.transact(None, |items, order, tags| {
            if let Some(bytes) = items.remove(key.as_bytes())? {
                let item = decode(&bytes).map_err(abort)?;
                order.remove(&item.seq.to_be_bytes())?;
                if let Some(t) = &item.tag {
                    tags.remove(tag_key(t, item.seq))?;
                }
            }
            Ok(())
        })
    }

    fn items(&self, tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        self.with(None, |t| {
            let keys = match tag {
                None => t.order.iter(),
                Some(tag) => t.tags.scan_prefix(tag_prefix(tag)),
            };
            let mut out = Vec::new();
            for entry in keys {
                let (_, key) = entry.map_err(err)?;
                if let Some(bytes) = t.items.get(&key).map_err(err)? {
                    out.push((text(&key), decode(&bytes)?.value));
                }
            }
            Ok(out)
        })
    }

    fn remove_by_tag(&self, tag: &str) -> Result<usize, StorageError> {
        let keys: Vec<String> = self.items(Some(tag))?.into_iter().map(|(k, _)| k).collect();
        for key in &keys {
            self.remove(key)?;
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn items_come_oldest_first_and_rewrites_keep_their_age() {
        let (_d, s) = store();
        s.set("b", "1", None).unwrap();
        s.set("a", "2", None).unwrap();
        s.set("b", "3", None).unwrap();
        assert_eq!(
            s.items(None).unwrap(),
            vec![("b".into(), "3".into()), ("a".into(), "2".into())]
        );
    }

    #[test]
    fn tags_index_and_remove_by_tag() {
        let (_d, s) = store();
        s.set("u1", "x", Some("users")).unwrap();
        s.set("n1", "y", None).unwrap();
        s.set("u2", "z", Some("users")).unwrap();
        s.set("u2", "z2", None).unwrap();
        assert_eq!(s.items(Some("users")).unwrap().len(), 2);
        s.set("u1", "x", Some("admins")).unwrap();
        assert_eq!(
            s.items(Some("users")).unwrap(),
            vec![("u2".into(), "z2".into())]
        );
        assert_eq!(s.remove_by_tag("users").unwrap(), 1);
        assert_eq!(s.get("u2").unwrap(), None);
        assert_eq!(s.get("n1").unwrap(), Some("y".into()));
        s.remove("u1").unwrap();
        assert!(s.items(Some("admins")).unwrap().is_empty());
    }

    #[test]
    fn data_survives_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.set("k2", "v2", None).unwrap();
            s.set("k1", "v1", None).unwrap();
            s.flush_if_dirty().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.items(None).unwrap(),
            vec![("k2".into(), "v2".into()), ("k1".into(), "v1".into())]
        );
    }
}
