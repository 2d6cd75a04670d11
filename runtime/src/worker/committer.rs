//! Group commit: the thread that writes a worker's output to the host.
//!
//! The JavaScript thread ends each turn by handing its encoded frames over, with what
//! makes the turn's storage writes durable when it wrote any, and goes on taking
//! calls. This thread takes every turn that is waiting, makes all their writes
//! durable with one append to the store's log, then writes their frames in order: no answer leaves before
//! the writes it depends on (or any earlier turn's) are on disk — SPEC 7's promise —
//! and one `fsync` covers many invocations under load.
//!
//! A turn that wrote nothing to the store while no earlier turn waits here has
//! nothing to wait for: the JavaScript thread writes it itself, saving a thread
//! hand-off on the path of a lone request.

use crate::ipc::{encode_into, FromWorker};
use crate::store::Durability;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Turns that may wait for the committer before the JavaScript thread blocks.
const MAX_WAITING_TURNS: usize = 1024;

/// One turn's output.
pub struct Turn {
    /// The encoded frames, in order.
    pub frames: Vec<u8>,
    /// Set when the turn wrote to the store.
    pub durability: Option<Durability>,
}

/// The JavaScript thread's end of the committer.
pub struct Committer {
    turns: Option<SyncSender<Turn>>,
    thread: Option<JoinHandle<()>>,
    /// The socket to the host, shared with the thread: whoever writes holds it.
    stream: Arc<Mutex<UnixStream>>,
    /// Turns handed over and not yet written; only this side raises it, only the
    /// thread lowers it (after writing), so zero means every earlier turn is out.
    waiting: Arc<AtomicUsize>,
}

/// The committer stopped: the host went away.
#[derive(Debug)]
pub struct CommitterGone;

impl Committer {
    /// Starts the thread writing to `stream`.
    pub fn start(stream: UnixStream) -> Self {
        let (tx, rx) = sync_channel(MAX_WAITING_TURNS);
        let stream = Arc::new(Mutex::new(stream));
        let waiting = Arc::new(AtomicUsize::new(0));
        let (thread_stream, thread_waiting) = (stream.clone(), waiting.clone());
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || commit(rx, &thread_stream, &thread_waiting))
            .ok();
        Self {
            turns: thread.is_some().then_some(tx),
            thread,
            stream,
            waiting,
        }
    }

    /// Sends a turn: written here when it wrote nothing to the store and no earlier
    /// turn waits, else handed to the thread (waiting when [`MAX_WAITING_TURNS`]
    /// already wait).
    pub fn submit(&self, turn: Turn) -> Result<(), CommitterGone> {
        if turn.frames.is_empty() && turn.durability.is_none() {
            return Ok(());
        }
        let turns = self.turns.as_ref().ok_or(CommitterGone)?;
        if turn.durability.is_none() && self.waiting.load(Ordering::Acquire) == 0 {
            let mut stream = self.stream.lock().map_err(|_| CommitterGone)?;
            return stream.write_all(&turn.frames).map_err(|_| CommitterGone);
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        turns.send(turn).map_err(|_| CommitterGone)
    }

    /// Waits until everything handed over is durable and written.
    pub fn finish(&mut self) {
        drop(self.turns.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The committer's loop: group every waiting turn, make their writes durable at once,
/// write in order.
fn commit(turns: Receiver<Turn>, stream: &Mutex<UnixStream>, waiting: &AtomicUsize) {
    while let Ok(first) = turns.recv() {
        let mut group = vec![first];
        group.extend(turns.try_iter());
        let count = group.len();
        let mut out = Vec::new();
        // One log append (one `write`, one `fdatasync`) covers every turn that wrote.
        let durable: Vec<&Durability> =
            group.iter().filter_map(|t| t.durability.as_ref()).collect();
        let mut failures = Durability::commit(&durable).into_iter();
        for turn in group {
            let failure = match turn.durability {
                Some(_) => failures.next().flatten(),
                None => None,
            };
            match failure {
                Some(e) => {
                    let mut log = Vec::new();
                    encode_into(
                        &FromWorker::Log {
                            level: 3,
                            message: format!("storing the writes failed: {e}"),
                        },
                        &mut log,
                    );
                    out.extend_from_slice(&log);
                    out.extend_from_slice(&super::unflushed::fail_answers(turn.frames, &e.0));
                }
                None => out.extend_from_slice(&turn.frames),
            }
        }
        let written = match stream.lock() {
            Ok(mut stream) => stream.write_all(&out).is_ok(),
            Err(_) => false,
        };
        if !written {
            // The host is gone: nothing more can be answered.
            std::process::exit(0);
        }
        waiting.fetch_sub(count, Ordering::AcqRel);
    }
}
