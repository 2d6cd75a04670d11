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
    /// How many messages the last [`Link::receive`] returned: one means calls come
    /// one at a time (a lone client, worth spinning for); many mean the worker is
    /// busy (its next calls queue while it works, so spinning would only take a core
    /// from others).
    last_batch: usize,
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
            last_batch: 0,
        }
    }

    /// Every message available now (waiting up to `timeout`, forever when `None`);
    /// empty when the wait ran out. After a batch of one message, and when `may_spin`
    /// (the last turn's answers left at once: none waits for the store's `fsync`, so
    /// the next call can come soon), it first checks for up to the spin time without
    /// sleeping.
    pub fn receive(
        &mut self,
        timeout: Option<Duration>,
        may_spin: bool,
    ) -> Result<Vec<ToWorker>, LinkClosed> {
        if self.backlog.is_empty() {
            let spin = match may_spin && self.last_batch == 1 {
                true => timeout.map_or(self.spin, |t| t.min(self.spin)),
                false => Duration::ZERO,
            };
            let started = Instant::now();
            let readable = self.spin_readable(spin)
                || self.wait_readable(timeout.map(|t| t.saturating_sub(started.elapsed())));
            if !readable {
                self.last_batch = 0;
                return Ok(Vec::new());
            }
            self.read_some()?;
        }
        self.last_batch = self.backlog.len();
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

    /// Checks the socket for up to `spin`, giving the core to any other runnable
    /// thread between checks; true as soon as it is readable.
    fn spin_readable(&self, spin: Duration) -> bool {
        if spin.is_zero() {
            return false;
        }
        let until = Instant::now() + spin;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::encode_into;
    use std::io::Write;

    fn pair() -> (Link, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        (Link::new(ours), theirs)
    }

    fn send(to: &mut UnixStream, pings: &[u64]) {
        let mut out = Vec::new();
        for &id in pings {
            encode_into(&ToWorker::Ping { id }, &mut out);
        }
        to.write_all(&out).expect("write");
    }

    #[test]
    fn only_a_batch_of_one_call_leads_to_a_spin() {
        let (mut link, mut host) = pair();
        send(&mut host, &[1]);
        assert_eq!(link.receive(None, true).map(|m| m.len()).ok(), Some(1));
        assert_eq!(link.last_batch, 1);
        send(&mut host, &[2, 3, 4]);
        assert_eq!(link.receive(None, true).map(|m| m.len()).ok(), Some(3));
        assert_eq!(link.last_batch, 3, "a busy worker does not spin");
        let none = link.receive(Some(Duration::from_millis(1)), true);
        assert_eq!(none.map(|m| m.len()).ok(), Some(0));
        assert_eq!(link.last_batch, 0);
    }

    #[test]
    fn messages_left_in_the_backlog_count_as_a_batch() {
        let (mut link, mut host) = pair();
        send(&mut host, &[1, 2, 3]);
        let pong = link.wait_for(|m| match m {
            ToWorker::Ping { id: 2 } => Some(2),
            _ => None,
        });
        assert_eq!(pong.ok(), Some(2));
        assert_eq!(link.receive(None, true).map(|m| m.len()).ok(), Some(2));
        assert_eq!(link.last_batch, 2);
    }

    /// A link spinning up to `spin` that just took a batch of one call.
    fn after_one_call(spin: Duration) -> (Link, UnixStream) {
        let (mut link, mut host) = pair();
        link.spin = spin;
        send(&mut host, &[1]);
        assert_eq!(link.receive(None, true).map(|m| m.len()).ok(), Some(1));
        (link, host)
    }

    #[test]
    fn a_spin_does_not_outlast_the_timer() {
        let (mut link, _host) = after_one_call(Duration::from_millis(200));
        let started = Instant::now();
        let none = link.receive(Some(Duration::from_millis(5)), true);
        assert_eq!(none.map(|m| m.len()).ok(), Some(0));
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "waited {:?} for a 5 ms timer",
            started.elapsed()
        );
    }

    #[test]
    fn a_message_that_comes_during_the_spin_is_taken() {
        let (mut link, mut host) = after_one_call(Duration::from_millis(500));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            send(&mut host, &[2]);
            host
        });
        let got = link.receive(Some(Duration::from_millis(400)), true);
        assert_eq!(got.map(|m| m.len()).ok(), Some(1));
        drop(writer.join());
    }
}
