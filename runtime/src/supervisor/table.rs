//! The one in-flight table of a container: every call queued for or running in its
//! worker, keyed by call id, with its deadline and who waits for the answer.
//!
//! Ids grow in the order calls are written to the worker (an id is taken and the
//! message queued under the same lock), so "every event up to `seq` is done" is a
//! range of the table, and the calls parked while no worker is live go out in the
//! order they came.

use super::call::{InvokeError, Part};
use super::{Inbound, Live};
use crate::ipc::ToWorker;
use mimhost_bindings::{HttpRequest, MimSpec};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How many calls and bytes may wait for or run in one worker.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most HTTP requests and session events at once.
    pub calls: usize,
    /// Most bytes of request bodies, headers and event messages at once.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            calls: 1024,
            bytes: 64 << 20,
        }
    }
}

/// Who waits for a call's answer, and what to send while it is parked.
pub(super) enum Waiter {
    /// An HTTP request or upgrade: its answer parts go to `parts`.
    Http {
        parts: mpsc::UnboundedSender<Part>,
        parked: Option<HttpRequest>,
    },
    /// A session or client event: kept until acknowledged, to go again after a crash.
    Event(Inbound),
    /// A load (start or hot swap).
    Load {
        reply: oneshot::Sender<Result<(), InvokeError>>,
        parked: Option<MimSpec>,
    },
    /// A ping of the stuck check.
    Ping(oneshot::Sender<()>),
}

/// One call in the table.
pub(super) struct Entry {
    pub waiter: Waiter,
    /// The worker it was written to; `None` while it waits for a live worker.
    pub sent_to: Option<Arc<Live>>,
    /// When it runs out of time (`None`: no deadline, e.g. a parked event).
    pub deadline: Option<Instant>,
    /// Its deadline passed and was acted on.
    pub expired: bool,
    /// What it counts against [`QueueLimits::bytes`] (0: not counted at all).
    pub bytes: usize,
    /// Whether it counts against the limits (requests and events do).
    pub bounded: bool,
}

impl Entry {
    /// Whether it was written to `live`.
    pub fn sent_to_gen(&self, generation: u64) -> bool {
        self.sent_to
            .as_ref()
            .is_some_and(|l| l.generation == generation)
    }
}

/// The table, and the live worker it writes to (one lock for both).
#[derive(Default)]
pub(super) struct Calls {
    pub live: Option<Arc<Live>>,
    pub entries: BTreeMap<u64, Entry>,
    next_id: u64,
    queued: usize,
    queued_bytes: usize,
    /// When the deadline watcher wakes next (`None`: it waits for a new entry).
    pub watch_at: Option<Instant>,
}

impl Calls {
    /// A fresh id, greater than every id handed out before.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Refuses a bounded call of `bytes` when the queue is full.
    pub fn admit(
        &self,
        bytes: usize,
        limits: QueueLimits,
        container: &str,
    ) -> Result<(), InvokeError> {
        if self.queued >= limits.calls || self.queued_bytes.saturating_add(bytes) > limits.bytes {
            return Err(InvokeError::Busy {
                container: container.to_string(),
                queued: self.queued,
            });
        }
        Ok(())
    }

    /// Adds `entry` and writes it to `to`, else to the live worker, else parks it
    /// until one is live. Returns its id, and whether the deadline watcher must
    /// wake earlier than it planned.
    pub fn add(
        &mut self,
        mut entry: Entry,
        to: Option<&Arc<Live>>,
        store_dir: &Path,
    ) -> (u64, bool) {
        let target = to.cloned().or_else(|| self.live.clone());
        if target.is_none() && matches!(entry.waiter, Waiter::Event(_)) {
            // A parked event's clock starts when it is written.
            entry.deadline = None;
        }
        if entry.bounded {
            self.queued += 1;
            self.queued_bytes += entry.bytes;
        }
        let earlier = entry
            .deadline
            .is_some_and(|d| self.watch_at.is_none_or(|w| d < w));
        let id = self.next_id();
        if let Some(live) = target {
            write(id, &mut entry, &live, store_dir);
        }
        self.entries.insert(id, entry);
        (id, earlier)
    }

    /// Takes every entry out (the container stops).
    pub fn drain(&mut self) -> Vec<Entry> {
        self.queued = 0;
        self.queued_bytes = 0;
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// Takes an entry out (answered, failed or expired).
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if entry.bounded {
            self.queued -= 1;
            self.queued_bytes -= entry.bytes;
        }
        Some(entry)
    }

    /// Writes every parked entry to `live`, oldest first, each under a new id (so
    /// ids keep the order the worker sees them in).
    pub fn send_parked(
        &mut self,
        live: &Arc<Live>,
        store_dir: &Path,
        timeout: std::time::Duration,
    ) {
        let parked: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.sent_to.is_none())
            .map(|(id, _)| *id)
            .collect();
        for old in parked {
            let Some(mut entry) = self.entries.remove(&old) else {
                continue;
            };
            if matches!(entry.waiter, Waiter::Event(_)) {
                entry.deadline = Some(Instant::now() + timeout);
            }
            let id = self.next_id();
            write(id, &mut entry, live, store_dir);
            self.entries.insert(id, entry);
        }
    }

    /// Whether worker `generation` is the live one.
    pub fn is_live(&self, generation: u64) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
    }

    /// Calls queued or running that count against the limits.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

/// Writes `entry`'s message to `live` under `id` and marks it sent.
fn write(id: u64, entry: &mut Entry, live: &Arc<Live>, store_dir: &Path) {
    let message = match &mut entry.waiter {
        Waiter::Http { parked, .. } => parked.take().map(|request| ToWorker::Http { id, request }),
        Waiter::Event(event) => Some(event.clone().message(id)),
        Waiter::Load { parked, .. } => parked.take().map(|spec| ToWorker::Load {
            spec,
            store_dir: store_dir.to_path_buf(),
        }),
        Waiter::Ping(_) => Some(ToWorker::Ping { id }),
    };
    if let Some(message) = message {
        let _ = live.to_worker.send(message);
    }
    entry.sent_to = Some(live.clone());
}
