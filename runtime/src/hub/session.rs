//! The hub's handle on one session: its bounded send queue, how to wake its task, and
//! how to close it.
//!
//! An idle session costs what it holds here plus its task (see docs/benchmarks.md,
//! "Memory per idle session"): the queue is empty and unallocated, the upgrade
//! request's headers and query are kept packed in one string, and the task is woken
//! through one [`AtomicWaker`] with flags saying why (frames queued, too slow, ping
//! due) instead of a notifier per reason.

use super::HubStats;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use mimhost_bindings::SessionInfo;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

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

/// Why a session's task was woken (bits of [`SessionHandle::take_wakes`]).
pub mod wake {
    /// Frames (or a close) were queued.
    pub const QUEUED: u8 = 1;
    /// The client fell too far behind: close 1008 now.
    pub const SLOW: u8 = 2;
    /// A ping interval passed: reap the peer if it was silent, else ping it.
    pub const PING: u8 = 4;
}

/// The hub's side of a session.
pub struct SessionHandle {
    /// What the session looked like when it opened, without its headers and query
    /// (kept packed: see [`SessionHandle::full_info`]).
    pub info: SessionInfo,
    /// The upgrade request's headers and query, as JSON `[headers, params]`.
    packed: Box<str>,
    /// Its container.
    pub container: String,
    /// Its endpoint.
    pub kind: SessionKind,
    queue: SendQueue,
    queued_bytes: AtomicUsize,
    slow: AtomicBool,
    wakes: AtomicU8,
    waker: AtomicWaker,
    bound: Mutex<Option<Box<Bound>>>,
    /// Its container's counters.
    pub stats: Arc<HubStats>,
}

/// What the mim bound to a session after it opened: rarely anything, so it lives
/// behind one pointer.
#[derive(Default)]
struct Bound {
    groups: Vec<String>,
    client_id: Option<String>,
}

impl SessionHandle {
    /// A handle with an empty queue.
    pub fn new(
        mut info: SessionInfo,
        container: String,
        kind: SessionKind,
        stats: Arc<HubStats>,
    ) -> Self {
        let headers = std::mem::take(&mut info.headers);
        let params = std::mem::take(&mut info.params);
        let packed = serde_json::to_string(&(headers, params))
            .unwrap_or_default()
            .into_boxed_str();
        Self {
            info,
            packed,
            container,
            kind,
            queue: SendQueue::default(),
            queued_bytes: AtomicUsize::new(0),
            slow: AtomicBool::new(false),
            wakes: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            bound: Mutex::new(None),
            stats,
        }
    }

    /// The session as it opened, headers and query included (for the `open` event
    /// and for a restarted worker).
    pub fn full_info(&self) -> SessionInfo {
        let mut info = self.info.clone();
        if let Ok((headers, params)) = serde_json::from_str::<(
            BTreeMap<String, String>,
            BTreeMap<String, String>,
        )>(&self.packed)
        {
            info.headers = headers;
            info.params = params;
        }
        info
    }

    /// Marks why the task should run and wakes it.
    fn wake(&self, why: u8) {
        self.wakes.fetch_or(why, Ordering::AcqRel);
        self.waker.wake();
    }

    /// For the session's task: registers its waker and takes the reasons it was woken
    /// for (0: none yet).
    pub fn take_wakes(&self, waker: &Waker) -> u8 {
        self.waker.register(waker);
        self.wakes.swap(0, Ordering::AcqRel)
    }

    /// For the session's task, while it lets a burst's frames gather before its next
    /// write: forgets its waker, so the dispatches queued meanwhile only set a flag
    /// instead of each rescheduling the task (the task reads the flags when it looks
    /// again, through [`SessionHandle::take_wakes`]).
    pub fn mute(&self) {
        drop(self.waker.take());
    }

    /// Whether frames (or a close) were queued since the task last looked (for the
    /// task, after a window of gathering: did anything come?).
    pub fn has_queued(&self) -> bool {
        self.wakes.load(Ordering::Acquire) & wake::QUEUED != 0
    }

    /// Asks the session's task to ping its peer (or reap it if it stayed silent).
    pub fn ping(&self) {
        self.wake(wake::PING);
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
        self.wake(wake::QUEUED);
        true
    }

    /// Moves queued frames to `out` (under one lock), up to about `max_bytes`; stops
    /// at a queued close and returns it.
    pub fn take_batch(&self, out: &mut VecDeque<Bytes>, max_bytes: usize) -> Option<(u16, String)> {
        let mut taken = 0;
        let mut closing = None;
        {
            let mut items = self.queue.lock();
            while taken < max_bytes {
                match items.pop_front() {
                    Some(Outgoing::Frame(frame)) => {
                        taken += frame.len();
                        out.push_back(frame);
                    }
                    Some(Outgoing::Close(code, reason)) => {
                        closing = Some((code, reason));
                        break;
                    }
                    None => break,
                }
            }
            if items.is_empty() {
                *items = VecDeque::new(); // an idle session keeps no queue memory
            } else {
                drop(items);
                self.wake(wake::QUEUED); // more to take after this batch
            }
        }
        self.queued_bytes.fetch_sub(taken, Ordering::Relaxed);
        closing
    }

    /// Whether the session was marked too slow.
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Drops everything queued and refuses more (the session is closing).
    pub fn discard_queue(&self) {
        self.queue.close();
    }

    /// Marks the session too slow and wakes its task to close it 1008; true the first time.
    pub fn close_slow(&self) -> bool {
        let first = !self.slow.swap(true, Ordering::Relaxed);
        if first {
            self.wake(wake::SLOW);
        }
        first
    }

    /// Asks the session to close after what is already queued.
    pub fn close(&self, code: u16, reason: &str) {
        if self.queue.push(Outgoing::Close(code, reason.to_string())) {
            self.wake(wake::QUEUED);
        } else if self.close_slow() {
            tracing::debug!(session = %self.info.id, "close requested on a full queue: closing now");
        }
    }

    fn bound(&self) -> std::sync::MutexGuard<'_, Option<Box<Bound>>> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records membership of `group` (so closing leaves it).
    pub fn join_group(&self, group: &str) {
        let mut bound = self.bound();
        let g = &mut bound.get_or_insert_with(Box::default).groups;
        if !g.iter().any(|x| x == group) {
            g.push(group.to_string());
        }
    }

    /// Forgets membership of `group`.
    pub fn leave_group(&self, group: &str) {
        if let Some(b) = self.bound().as_mut() {
            b.groups.retain(|x| x != group);
        }
    }

    /// The groups joined (for the MCM API's session list).
    pub fn groups(&self) -> Vec<String> {
        self.bound()
            .as_ref()
            .map_or_else(Vec::new, |b| b.groups.clone())
    }

    /// Frames (and a close, if asked) waiting to be written to the peer.
    pub fn queued_frames(&self) -> usize {
        self.queue.lock().len()
    }

    /// The groups joined, emptied.
    pub fn take_groups(&self) -> Vec<String> {
        self.bound()
            .as_mut()
            .map_or_else(Vec::new, |b| std::mem::take(&mut b.groups))
    }

    /// Binds a client id (Mesa style); the session id until one is bound.
    pub fn set_client_id(&self, client_id: &str) {
        self.bound().get_or_insert_with(Box::default).client_id = Some(client_id.to_string());
    }

    /// The client id bound with `setClientId`, if any (else the session id serves).
    pub fn bound_client_id(&self) -> Option<String> {
        self.bound().as_ref().and_then(|b| b.client_id.clone())
    }
}

/// A bounded FIFO read by the session's task. Unlike a channel it allocates nothing
/// while empty, which keeps idle sessions small; the handle wakes the reader.
#[derive(Default)]
struct SendQueue {
    items: Mutex<VecDeque<Outgoing>>,
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
        let mut queue = self.lock();
        if self.closed.load(Ordering::Relaxed) || queue.len() + count > MAX_QUEUED_FRAMES {
            return false;
        }
        queue.extend(items);
        true
    }

    /// Empties the queue and refuses further items.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        *self.lock() = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> SessionHandle {
        let info = SessionInfo {
            id: "n-1-0".into(),
            headers: [("host".to_string(), "h".to_string())].into(),
            params: [("a".to_string(), "1".to_string())].into(),
            ..SessionInfo::default()
        };
        SessionHandle::new(info, "c".into(), SessionKind::Dispatch, Arc::default())
    }

    #[test]
    fn headers_are_packed_and_given_back_whole() {
        let h = handle();
        assert!(h.info.headers.is_empty());
        let full = h.full_info();
        assert_eq!(full.headers.get("host").map(String::as_str), Some("h"));
        assert_eq!(full.params.get("a").map(String::as_str), Some("1"));
    }

    #[test]
    fn a_batch_stops_at_a_close_and_an_emptied_queue_frees_its_memory() {
        let h = handle();
        let waker = futures_util::task::noop_waker();
        assert!(h.enqueue(&[Bytes::from_static(b"ab"), Bytes::from_static(b"c")]));
        h.close(1000, "bye");
        assert!(h.enqueue(&[Bytes::from_static(b"late")]));
        assert_eq!(h.take_wakes(&waker) & wake::QUEUED, wake::QUEUED);
        let mut out = VecDeque::new();
        assert_eq!(h.take_batch(&mut out, 1 << 20), Some((1000, "bye".into())));
        assert_eq!(out.len(), 2);
        assert_eq!(h.queued_frames(), 1);
        out.clear();
        assert_eq!(h.take_batch(&mut out, 1 << 20), None);
        assert_eq!(h.queue.lock().capacity(), 0);
    }

    #[test]
    fn a_muted_session_keeps_its_flags_for_the_next_look() {
        let h = handle();
        let waker = futures_util::task::noop_waker();
        assert_eq!(h.take_wakes(&waker), 0);
        h.mute();
        assert!(h.enqueue(&[Bytes::from_static(b"x")]));
        h.ping();
        assert_eq!(h.take_wakes(&waker), wake::QUEUED | wake::PING);
    }

    #[test]
    fn a_slow_session_refuses_frames_and_is_woken_once() {
        let h = handle();
        let waker = futures_util::task::noop_waker();
        assert!(h.close_slow());
        assert!(!h.close_slow());
        assert!(!h.enqueue(&[Bytes::from_static(b"x")]));
        assert_eq!(h.take_wakes(&waker), wake::SLOW);
        assert_eq!(h.take_wakes(&waker), 0);
    }
}
