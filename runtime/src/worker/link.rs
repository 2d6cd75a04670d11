//! The worker's end of the socket: framed reads with a backlog, so a blocking query
//! can wait for its answer while requests that arrive meanwhile queue up in order.

use crate::ipc::{decode_frames, ToWorker};
use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The host went away or spoke gibberish: the worker must exit.
#[derive(Debug)]
pub struct LinkClosed;

/// Framed, buffered access to the host socket.
pub struct Link {
    stream: UnixStream,
    inbox: Vec<u8>,
    chunk: Box<[u8]>,
    backlog: VecDeque<ToWorker>,
    spin: Duration,
    /// How many messages the last read brought: one means calls come one at a time
    /// (a lone client, worth spinning for); many mean the worker is busy (its next
    /// calls queue while it works, so spinning would only take a core from others).
    last_read: usize,
}

impl Link {
    /// Wraps the socket inherited from the host (its reading half: the committer
    /// writes).
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            inbox: Vec::new(),
            chunk: vec![0; 64 * 1024].into_boxed_slice(),
            backlog: VecDeque::new(),
            spin: crate::ipc::spin_time(),
            last_read: 0,
        }
    }

    /// Every message available now (waiting up to `timeout`, forever when `None`);
    /// empty when the wait ran out.
    pub fn receive(&mut self, timeout: Option<Duration>) -> Result<Vec<ToWorker>, LinkClosed> {
        if !self.backlog.is_empty() {
            return Ok(self.backlog.drain(..).collect());
        }
        if !self.spin_readable() && !self.wait_readable(timeout) {
            self.last_read = 0;
            return Ok(Vec::new());
        }
        self.read_some()?;
        self.last_read = self.backlog.len();
        Ok(self.backlog.drain(..).collect())
    }

    /// Blocks until a message matching `pick` arrives; others stay queued, in order.
    pub fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&ToWorker) -> Option<T>,
    ) -> Result<T, LinkClosed> {
        loop {
            if let Some(at) = self.backlog.iter().position(|m| pick(m).is_some()) {
                let message = self.backlog.remove(at).ok_or(LinkClosed)?;
                return pick(&message).ok_or(LinkClosed);
            }
            self.read_some()?;
        }
    }

    fn read_some(&mut self) -> Result<(), LinkClosed> {
        let n = match self.stream.read(&mut self.chunk) {
            Ok(0) | Err(_) => return Err(LinkClosed),
            Ok(n) => n,
        };
        self.inbox.extend_from_slice(&self.chunk[..n]);
        let messages = decode_frames::<ToWorker>(&mut self.inbox).map_err(|e| {
            eprintln!("mimhost worker: {e}");
            LinkClosed
        })?;
        self.backlog.extend(messages);
        Ok(())
    }

    /// Checks the socket for up to [`crate::ipc::spin_time`] after a turn of one
    /// call, giving the core to any other runnable thread between checks; true as
    /// soon as it is readable. A busy worker finds its next calls at once or took
    /// many at its last read, and does not spin.
    fn spin_readable(&self) -> bool {
        if self.spin.is_zero() || self.last_read != 1 {
            return false;
        }
        let until = Instant::now() + self.spin;
        loop {
            if self.wait_readable(Some(Duration::ZERO)) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    fn wait_readable(&self, timeout: Option<Duration>) -> bool {
        let mut fds = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut fds, 1, ms) > 0 }
    }
}
