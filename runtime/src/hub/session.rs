//! The hub's handle on one session: its bounded send queue and how to close it.

use super::HubStats;
use bytes::Bytes;
use mimhost_bindings::SessionInfo;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Most frames a session may have queued before it counts as too slow.
pub const MAX_QUEUED_FRAMES: usize = 4096;
/// Most bytes a session may have queued before it counts as too slow.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// Which endpoint a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `/ws<BASE_API_PATH>`: receives `dispatchWebSocketEvent` frames.
    Dispatch,
    /// An upgrade accepted by the container's `get()`.
    Controller,
    /// `/websockets/v4/service/<endpoint>`: a Dirigible endpoint (SPEC 5.4).
    Endpoint,
}

/// Something for the session's task to write.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded frame (shared between recipients).
    Frame(Bytes),
    /// Close with this code and reason.
    Close(u16, String),
}

/// The hub's side of a session.
pub struct SessionHandle {
    /// What the session looked like when it opened.
    pub info: SessionInfo,
    /// Its container.
    pub container: String,
    /// Its endpoint.
    pub kind: SessionKind,
    queue: SendQueue,
    queued_bytes: AtomicUsize,
    slow: AtomicBool,
    /// Wakes the session task when it must drop everything and close 1008.
    pub kill: Notify,
    groups: Mutex<Vec<String>>,
    client_id: Mutex<Option<String>>,
    /// Its container's counters.
    pub stats: Arc<HubStats>,
}

impl SessionHandle {
    /// A handle with an empty queue.
    pub fn new(
        info: SessionInfo,
        container: String,
        kind: SessionKind,
        stats: Arc<HubStats>,
    ) -> Self {
        Self {
            info,
            container,
            kind,
            queue: SendQueue::default(),
            queued_bytes: AtomicUsize::new(0),
            slow: AtomicBool::new(false),
            kill: Notify::new(),
            groups: Mutex::new(Vec::new()),
            client_id: Mutex::new(None),
            stats,
        }
    }

    /// Queues frames (all or none, one wake-up); false when that would pass the
    /// queue's frame or byte bound. An empty queue takes a batch of any size: one big
    /// message (a 16 MiB echo, say) is not a client falling behind.
    pub fn enqueue(&self, frames: &[Bytes]) -> bool {
        if self.slow.load(Ordering::Relaxed) {
            return false;
        }
        let len: usize = frames.iter().map(Bytes::len).sum();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        if !self
            .queue
            .push_all(frames.iter().cloned().map(Outgoing::Frame), frames.len())
        {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The next thing to write, waiting for one.
    pub async fn next_outgoing(&self) -> Outgoing {
        self.queue.next().await
    }

    /// The next thing to write, if one is queued.
    pub fn try_outgoing(&self) -> Option<Outgoing> {
        self.queue.pop()
    }

    /// Drops everything queued and refuses more (the session is closing).
    pub fn discard_queue(&self) {
        self.queue.close();
    }

    /// The session's task wrote `len` queued bytes.
    pub fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Marks the session too slow and wakes its task to close it 1008; true the first time.
    pub fn close_slow(&self) -> bool {
        let first = !self.slow.swap(true, Ordering::Relaxed);
        if first {
            self.kill.notify_one();
        }
        first
    }

    /// Asks the session to close after what is already queued.
    pub fn close(&self, code: u16, reason: &str) {
        if !self.queue.push(Outgoing::Close(code, reason.to_string())) && self.close_slow() {
            tracing::debug!(session = %self.info.id, "close requested on a full queue: closing now");
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records membership of `group` (so closing leaves it).
    pub fn join_group(&self, group: &str) {
        let mut g = Self::lock(&self.groups);
        if !g.iter().any(|x| x == group) {
            g.push(group.to_string());
        }
    }

    /// Forgets membership of `group`.
    pub fn leave_group(&self, group: &str) {
        Self::lock(&self.groups).retain(|x| x != group);
    }

    /// The groups joined (for the MCM API's session list).
    pub fn groups(&self) -> Vec<String> {
        Self::lock(&self.groups).clone()
    }

    /// Frames (and a close, if asked) waiting to be written to the peer.
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
    }

    /// The groups joined, emptied.
    pub fn take_groups(&self) -> Vec<String> {
        std::mem::take(&mut *Self::lock(&self.groups))
    }

    /// Binds a client id (Mesa style); the session id until one is bound.
    pub fn set_client_id(&self, client_id: &str) {
        *Self::lock(&self.client_id) = Some(client_id.to_string());
    }

    /// The client id bound with `setClientId`, if any (else the session id serves).
    pub fn bound_client_id(&self) -> Option<String> {
        Self::lock(&self.client_id).clone()
    }
}

/// A bounded FIFO with one waiting reader. Unlike a channel it allocates nothing
/// while empty, which keeps idle sessions small.
#[derive(Default)]
struct SendQueue {
    items: Mutex<VecDeque<Outgoing>>,
    ready: Notify,
    closed: AtomicBool,
}

impl SendQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one item; false when full or closed.
    fn push(&self, item: Outgoing) -> bool {
        self.push_all(std::iter::once(item), 1)
    }

    /// Appends `count` items at once; false (and nothing added) when they do not fit.
    fn push_all(&self, items: impl Iterator<Item = Outgoing>, count: usize) -> bool {
        {
            let mut queue = self.lock();
            if self.closed.load(Ordering::Relaxed) || queue.len() + count > MAX_QUEUED_FRAMES {
                return false;
            }
            queue.extend(items);
        }
        self.ready.notify_one();
        true
    }

    /// How many items wait.
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Takes the oldest item; an emptied queue gives its memory back.
    fn pop(&self) -> Option<Outgoing> {
        let mut items = self.lock();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > 16 {
            *items = VecDeque::new();
        }
        item
    }

    /// Waits for the oldest item.
    async fn next(&self) -> Outgoing {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.pop() {
                return item;
            }
            notified.await;
        }
    }

    /// Empties the queue and refuses further items.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        *self.lock() = VecDeque::new();
    }
}
