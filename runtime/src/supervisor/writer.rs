//! What goes to a worker: messages written from the calling task while the socket
//! takes them, queued and written in one go by a flush task only when it does not.
//!
//! A lone call then costs no task hand-off on its way out, and under load every
//! message that queued while the socket was full leaves in one write.

use super::lock;
use crate::ipc::{encode_into, ToWorker};
use std::io::ErrorKind;
use std::sync::{Arc, Mutex, Weak};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

/// The worker's socket is closed: the message was not sent.
#[derive(Debug, thiserror::Error)]
#[error("the worker's socket is closed")]
pub(super) struct WorkerGone;

/// The writing half of a worker's socket with its queue.
pub(super) struct WorkerWriter {
    half: OwnedWriteHalf,
    /// Encoded bytes the socket did not take yet; `None` once writing failed.
    pending: Mutex<Option<Vec<u8>>>,
    /// Wakes the flush task: bytes are pending, or the writer is gone.
    wake: Arc<Notify>,
}

impl WorkerWriter {
    /// Wraps `half` and starts its flush task (which ends when the writer drops).
    pub(super) fn start(half: OwnedWriteHalf) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let writer = Arc::new(Self {
            half,
            pending: Mutex::new(Some(Vec::new())),
            wake: wake.clone(),
        });
        tokio::spawn(flush(Arc::downgrade(&writer), wake));
        writer
    }

    /// Sends `message`: written now when nothing is queued and the socket takes it,
    /// else queued behind what is (in order) for the flush task.
    pub(super) fn send(&self, message: ToWorker) -> Result<(), WorkerGone> {
        let mut guard = lock(&self.pending);
        let pending = guard.as_mut().ok_or(WorkerGone)?;
        let queued = !pending.is_empty();
        encode_into(&message, pending);
        if queued {
            // The flush task was woken when the queue started and writes it all.
            return Ok(());
        }
        if !self.write_some(&mut guard) {
            return Err(WorkerGone);
        }
        if guard.as_ref().is_some_and(|p| !p.is_empty()) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Writes what the socket takes now; false (and the queue closed) when it failed.
    fn write_some(&self, guard: &mut Option<Vec<u8>>) -> bool {
        let Some(pending) = guard.as_mut() else {
            return false;
        };
        while !pending.is_empty() {
            match self.half.try_write(pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    *guard = None;
                    return false;
                }
            }
        }
        true
    }
}

impl Drop for WorkerWriter {
    fn drop(&mut self) {
        // Lets the flush task see the writer is gone and end.
        self.wake.notify_one();
    }
}

/// Writes the queue whenever it is woken, waiting for the socket to take more; ends
/// when the writer is dropped or writing fails.
async fn flush(writer: Weak<WorkerWriter>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(writer) = writer.upgrade() else {
            return;
        };
        loop {
            if writer.half.writable().await.is_err() {
                *lock(&writer.pending) = None;
                return;
            }
            let mut guard = lock(&writer.pending);
            if !writer.write_some(&mut guard) {
                return;
            }
            if guard.as_ref().is_none_or(|p| p.is_empty()) {
                break;
            }
        }
    }
}
