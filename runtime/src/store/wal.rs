//! The store's write-ahead log: what makes a storage write durable without a sled
//! flush.
//!
//! Every write of a turn becomes a record (the key's whole new state, or its removal);
//! the committer appends the records of every waiting turn as one batch, with one
//! `write` and one `fdatasync`, before their answers leave. sled takes the same writes
//! in memory and is flushed only at a checkpoint (when the log passes
//! [`CHECKPOINT_BYTES`], and when the store opens), after which the log starts empty.
//!
//! File format (`<store>/wal`), a sequence of batches:
//! `"MWL1"` · payload length (u32 LE) · CRC-32 of the payload (u32 LE) · payload, the
//! payload being postcard-encoded [`Op`]s back to back.
//!
//! Reading keeps the valid prefix. A damaged batch with nothing valid after it is the
//! torn end of a write that was never acknowledged (the writer was killed before its
//! `fdatasync` returned): it is ignored and cut off. A damaged batch followed by a
//! valid one is damage to acknowledged data: opening fails with [`WalError::Damaged`]
//! naming the file and offset, and the file is left as it is for an operator.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The file name of the log inside a store's folder.
pub const FILE_NAME: &str = "wal";
/// Size past which the committer checkpoints (flushes sled, empties the log): bounds
/// both the log's disk use and the replay on the next open.
pub const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
const MAGIC: [u8; 4] = *b"MWL1";
const HEADER: usize = 12;

/// One logged write: the state a key was left in, so replaying it twice, or over a
/// store that already has it, gives the same store (physical redo).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Op<'a> {
    /// `key` now holds `value`, with age `seq` and `tag`.
    Put {
        /// The key.
        key: &'a str,
        /// Its age (iteration order), kept from its first write.
        seq: u64,
        /// Its tag, if any.
        tag: Option<&'a str>,
        /// Its value.
        value: &'a str,
    },
    /// `key` was removed.
    Remove {
        /// The key.
        key: &'a str,
    },
}

impl Op<'_> {
    /// Appends this record to `out` (a turn's pending records).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Encoding strings and integers into a Vec cannot fail.
        if let Ok(v) = postcard::to_extend(self, std::mem::take(out)) {
            *out = v;
        }
    }
}

/// Why a log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file could not be opened, read, written or synced.
    #[error("store log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Acknowledged records follow a damaged one: nothing is guessed or dropped.
    #[error(
        "the store log {path} is damaged at byte {offset} ({why}) and valid records follow; \
         the store is not opened so that no acknowledged write is dropped — move the file \
         away to open the store without the writes it holds"
    )]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the damaged batch starts.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The log's valid contents, read when a store opens.
pub struct Contents {
    bytes: Vec<u8>,
    batches: Vec<Range<usize>>,
    /// Bytes of a torn tail that were ignored (0 when the log ended cleanly).
    pub torn: u64,
}

impl Contents {
    /// Every record, oldest first.
    pub fn ops(&self, path: &Path) -> Result<Vec<Op<'_>>, WalError> {
        let mut ops = Vec::new();
        for range in &self.batches {
            let mut rest = &self.bytes[range.clone()];
            while !rest.is_empty() {
                let (op, tail) =
                    postcard::take_from_bytes::<Op>(rest).map_err(|_| WalError::Damaged {
                        path: path.to_path_buf(),
                        offset: (range.start - HEADER) as u64,
                        why: "a record that passes its checksum does not decode",
                    })?;
                ops.push(op);
                rest = tail;
            }
        }
        Ok(ops)
    }
}

/// The open log, appended to by one thread at a time.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Bytes known to be written and synced; a failed append is cut back to it.
    len: u64,
}

/// Where a complete batch at `at` ends, when its magic, length and checksum are right.
fn batch_at(bytes: &[u8], at: usize) -> Result<usize, &'static str> {
    let head = bytes
        .get(at..at + HEADER)
        .ok_or("a batch header cut short")?;
    if head[..4] != MAGIC {
        return Err("no batch marker");
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let crc = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let end = (at + HEADER)
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("a batch cut short")?;
    if crc32fast::hash(&bytes[at + HEADER..end]) != crc {
        return Err("a checksum mismatch");
    }
    Ok(end)
}

/// Splits `bytes` into its valid batches; see the module docs for what is torn and
/// what is damaged.
fn scan(path: &Path, bytes: Vec<u8>) -> Result<Contents, WalError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match batch_at(&bytes, at) {
            Ok(end) => {
                batches.push(at + HEADER..end);
                at = end;
            }
            Err(why) => {
                let later = (at + 1..bytes.len().saturating_sub(HEADER - 1))
                    .filter(|&p| bytes[p..p + 4] == MAGIC)
                    .any(|p| batch_at(&bytes, p).is_ok());
                if later {
                    return Err(WalError::Damaged {
                        path: path.to_path_buf(),
                        offset: at as u64,
                        why,
                    });
                }
                let torn = (bytes.len() - at) as u64;
                return Ok(Contents {
                    bytes,
                    batches,
                    torn,
                });
            }
        }
    }
    Ok(Contents {
        bytes,
        batches,
        torn: 0,
    })
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads its valid prefix; a torn tail is
    /// cut off the file so that new batches follow the last good one.
    pub fn open(path: &Path) -> Result<(Self, Contents), WalError> {
        let io = |source| WalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let contents = scan(path, bytes)?;
        let len = (contents.bytes.len() as u64) - contents.torn;
        let mut wal = Self {
            path: path.to_path_buf(),
            file,
            len,
        };
        if contents.torn > 0 {
            wal.cut_back()?;
        }
        Ok((wal, contents))
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `parts` as one batch with one `write`, then `fdatasync`s: when this
    /// returns Ok every record in them survives a crash. On failure the file is cut
    /// back to its last good length, so a partial batch never precedes a later one.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), WalError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return Ok(());
        }
        let Ok(len32) = u32::try_from(len) else {
            return Err(self.io(std::io::Error::other("a batch over 4 GiB")));
        };
        let mut crc = crc32fast::Hasher::new();
        let mut batch = Vec::with_capacity(HEADER + len);
        batch.extend_from_slice(&MAGIC);
        batch.extend_from_slice(&len32.to_le_bytes());
        batch.extend_from_slice(&[0; 4]);
        for part in parts {
            crc.update(part);
            batch.extend_from_slice(part);
        }
        batch[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        let written = self
            .file
            .write_all(&batch)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.cut_back();
                Err(self.io(e))
            }
        }
    }

    /// Empties the log once everything in it is durable elsewhere (a checkpoint). The
    /// new length is synced before anything is appended, so old batches can never
    /// reappear behind new ones after a crash.
    pub fn reset(&mut self) -> Result<(), WalError> {
        self.len = 0;
        self.cut_back()
    }

    fn cut_back(&mut self) -> Result<(), WalError> {
        self.file
            .set_len(self.len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.io(e))
    }

    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(key: &'a str, seq: u64, value: &'a str) -> Op<'a> {
        Op::Put {
            key,
            seq,
            tag: None,
            value,
        }
    }

    fn records(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            op.encode_into(&mut out);
        }
        out
    }

    /// A log holding two batches; returns its path and where the second starts.
    fn two_batches(dir: &Path) -> (PathBuf, u64) {
        let path = dir.join(FILE_NAME);
        let (mut wal, contents) = Wal::open(&path).unwrap();
        assert!(contents.ops(&path).unwrap().is_empty());
        wal.append(&[
            &records(&[put("a", 1, "one")]),
            &records(&[put("b", 2, "two")]),
        ])
        .unwrap();
        let first = wal.len();
        wal.append(&[&records(&[Op::Remove { key: "a" }])]).unwrap();
        (path, first)
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn batches_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = two_batches(dir.path());
        let (_, contents) = Wal::open(&path).unwrap();
        assert_eq!(
            contents.ops(&path).unwrap(),
            vec![
                put("a", 1, "one"),
                put("b", 2, "two"),
                Op::Remove { key: "a" }
            ]
        );
        assert_eq!(contents.torn, 0);
    }

    #[test]
    fn a_torn_or_garbage_tail_is_ignored_and_cut_off() {
        let full = {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&100u32.to_le_bytes());
            b.extend_from_slice(&[1, 2, 3, 4]);
            b.extend_from_slice(b"half a batch");
            b
        };
        let tails: [&[u8]; 5] = [b"MW", &full[..10], &full, &[0; 4096], b"\xff garbage \x00"];
        for tail in tails {
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = two_batches(dir.path());
            let good = std::fs::metadata(&path).unwrap().len();
            append_raw(&path, tail);
            let (mut wal, contents) = Wal::open(&path).unwrap();
            assert_eq!(contents.torn, tail.len() as u64);
            assert_eq!(contents.ops(&path).unwrap().len(), 3);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
            // New batches follow the good prefix and read back.
            wal.append(&[&records(&[put("c", 3, "three")])]).unwrap();
            drop(wal);
            let (_, contents) = Wal::open(&path).unwrap();
            assert_eq!(contents.ops(&path).unwrap().len(), 4);
        }
    }

    #[test]
    fn a_damaged_batch_before_valid_ones_is_a_clear_error() {
        for flip in [0usize, 6, 9, 14] {
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = two_batches(dir.path());
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[flip] ^= 0x55;
            std::fs::write(&path, &bytes).unwrap();
            let err = Wal::open(&path).err().expect("a damaged log opened");
            let text = err.to_string();
            assert!(
                matches!(err, WalError::Damaged { offset: 0, .. }),
                "flip {flip}: {text}"
            );
            assert!(text.contains("damaged at byte 0"), "{text}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was changed");
        }
    }

    #[test]
    fn a_damaged_last_batch_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, second) = two_batches(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let (_, contents) = Wal::open(&path).unwrap();
        assert_eq!(contents.ops(&path).unwrap().len(), 2);
        assert_eq!(contents.torn, bytes.len() as u64 - second);
    }

    #[test]
    fn reset_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = two_batches(dir.path());
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.reset().unwrap();
        assert!(wal.is_empty());
        wal.append(&[&records(&[put("z", 9, "last")])]).unwrap();
        drop(wal);
        let (_, contents) = Wal::open(&path).unwrap();
        assert_eq!(contents.ops(&path).unwrap(), vec![put("z", 9, "last")]);
    }
}
