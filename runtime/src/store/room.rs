//! Whether the store's disk has room for a write, without asking the file system on
//! every write.
//!
//! sled does not survive running out of space, so a write that would eat into a
//! reserve fails first with a clear error ([`Room::check`]). `statvfs` per write was
//! 3.4 % of the storage benchmark's CPU; a disk that was far from full a moment ago
//! cannot be near full now unless something wrote fast, so the answer of the last
//! check stands for a while (250 ms, and at most 8 MiB of this store's writes) as
//! long as the disk stays far from full counting what this store wrote since. Near
//! full, every write asks again.

use mimhost_bindings::StorageError;
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

/// Space a write leaves free on the store's disk.
const RESERVE_BYTES: u64 = 2 * 1024 * 1024;
/// Free space, beyond what a write needs, under which every write asks the disk.
const FAR_FROM_FULL: u64 = 64 * 1024 * 1024;
/// How long a check's answer stands while the disk is far from full.
const RECHECK: Duration = Duration::from_millis(250);
/// How much a store may write on a check's answer before it asks again: other
/// stores (and other programs) write to the same disk without telling this one, so
/// each may overshoot what the last answer allowed by at most this much.
const SPEND_PER_CHECK: u64 = 8 * 1024 * 1024;

/// The last answer of the file system, and what was written since.
#[derive(Debug, Clone, Copy)]
struct Checked {
    free: u64,
    spent: u64,
    at: Instant,
}

impl Checked {
    /// Whether a write needing `need` bytes free may go without asking again.
    fn still_far_from_full(&self, need: u64, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < RECHECK
            && self.spent.saturating_add(need) <= SPEND_PER_CHECK.saturating_add(RESERVE_BYTES)
            && self.free.saturating_sub(self.spent) >= need.saturating_add(FAR_FROM_FULL)
    }
}

/// The room check of one store (used from its JavaScript thread only).
#[derive(Default)]
pub(super) struct Room {
    last: Cell<Option<Checked>>,
}

impl Room {
    /// Refuses a write of `bytes` to the store in `dir` that would leave less than
    /// the reserve free on its disk.
    pub(super) fn check(&self, dir: &Path, bytes: usize) -> Result<(), StorageError> {
        // A write may take twice its size on disk (the log, then sled's checkpoint).
        let cost = (bytes as u64).saturating_mul(2);
        let need = RESERVE_BYTES.saturating_add(cost);
        let now = Instant::now();
        if let Some(last) = self.last.get() {
            if last.still_far_from_full(need, now) {
                self.last.set(Some(Checked {
                    spent: last.spent.saturating_add(cost),
                    ..last
                }));
                return Ok(());
            }
        }
        let Some(free) = free_bytes(dir) else {
            self.last.set(None);
            return Ok(());
        };
        let room = free >= need;
        self.last.set(Some(Checked {
            free,
            spent: if room { cost } else { 0 },
            at: now,
        }));
        if !room {
            return Err(StorageError(format!(
                "no space left for the store: {} KiB free on its disk, a write keeps {} KiB free",
                free / 1024,
                RESERVE_BYTES / 1024
            )));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn checked(free: u64, spent: u64, at: Instant) -> Checked {
        Checked { free, spent, at }
    }

    #[test]
    fn a_recent_check_far_from_full_stands() {
        let now = Instant::now();
        assert!(checked(10_000 * MIB, 0, now).still_far_from_full(3 * MIB, now));
    }

    #[test]
    fn near_full_every_write_asks_again() {
        let now = Instant::now();
        assert!(!checked(60 * MIB, 0, now).still_far_from_full(3 * MIB, now));
    }

    #[test]
    fn what_was_written_since_counts() {
        let now = Instant::now();
        assert!(checked(100 * MIB, 0, now).still_far_from_full(3 * MIB, now));
        assert!(!checked(100 * MIB, 40 * MIB, now).still_far_from_full(3 * MIB, now));
    }

    #[test]
    fn a_store_asks_again_after_writing_a_few_mib_on_one_answer() {
        let now = Instant::now();
        let far = 10_000 * MIB;
        assert!(checked(far, 4 * MIB, now).still_far_from_full(3 * MIB, now));
        assert!(!checked(far, 8 * MIB, now).still_far_from_full(3 * MIB, now));
    }

    #[test]
    fn an_old_check_is_asked_again() {
        let then = Instant::now();
        let later = then + RECHECK;
        assert!(!checked(10_000 * MIB, 0, then).still_far_from_full(3 * MIB, later));
    }

    #[test]
    fn a_real_disk_answers_and_refuses_a_write_larger_than_it() {
        let dir = std::env::temp_dir();
        let room = Room::default();
        assert!(room.check(&dir, 16).is_ok());
        assert!(room.check(&dir, 16).is_ok(), "the cached answer");
        let error = room
            .check(&dir, usize::MAX / 4)
            .expect_err("larger than any disk");
        assert!(error.0.contains("no space left"), "{}", error.0);
    }
}
