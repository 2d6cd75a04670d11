//! One session's task: reads client frames and turns them into events for the
//! container, writes what the hub queued (many frames per `writev`), answers the
//! node's pinger and is reaped when its peer stays silent. It owns the socket; the
//! hub only holds its queue.
//!
//! Idle, the task is small: it waits in one `poll_fn` on its handle's waker and the
//! socket's readiness, with no read buffer, decoder, write queue or timer of its own
//! (they are made when bytes come and dropped when done). The rare paths (closing,
//! lingering) are boxed so their futures do not size every idle session's task.

use super::codec::{Decoder, Incoming, Violation};
use super::pace::Pace;
use crate::frame::{close, close_frame, pong_frame};
use crate::hub::{wake, Hub, SessionHandle};
use crate::registry::Container;
use crate::supervisor::{Call, InvokeError};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use mimhost_bindings::WsEvent;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes read off the socket before the decoder takes them (it consumes payload
/// as it comes, so a big message never sits here whole).
const MAX_READ: usize = 256 * 1024;
/// Most queued bytes taken for one write; a session with more yields between batches
/// so one long queue does not hold a runtime thread while others wait.
const MAX_BATCH: usize = 256 * 1024;
/// Most frames handed to one `writev`.
const MAX_SLICES: usize = 256;
/// How long a session closing for slowness waits for the socket before dropping it.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long a session closing at the mim's request may take to write what was queued
/// before its close.
const CLOSE_DRAIN: Duration = Duration::from_secs(60);
/// How long a closing session keeps reading what the peer still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How long a session about to close waits for the container to finish the events it
/// already received, so their replies go out before the close frame.
const SETTLE: Duration = Duration::from_secs(2);
/// An empty ping frame.
const PING: &[u8] = &[0x89, 0x00];

/// Everything a session task needs.
pub struct Session {
    stream: TcpStream,
    handle: Arc<SessionHandle>,
    container: Arc<Container>,
    hub: Arc<Hub>,
    max_message: usize,
    /// Bytes read and not yet decoded (unallocated while idle).
    inbox: BytesMut,
    /// The decoder, while a frame or message is partly read.
    decoder: Option<Box<Decoder>>,
    /// Frames taken from the queue and not yet written (unallocated while idle).
    unsent: VecDeque<Bytes>,
    /// Whether the peer sent anything since the last ping.
    heard: bool,
    /// How long to let frames gather after a write.
    pace: Pace,
}

/// Why the task woke.
enum Woke {
    Flags(u8),
    Readable,
    Writable,
    Failed,
}

/// How a session ends (besides its socket failing).
enum Closing {
    /// The mim (or the host) asked: close after what was queued before.
    Queued(u16, String),
    /// The client sent a close frame (with its code, if any).
    Peer(Option<u16>),
    /// The client broke the protocol or a limit: close with this code.
    Violation(u16),
    /// The client fell too far behind: close 1008 now.
    Slow,
}

/// What one [`Session::flush`] did.
enum Flushed {
    /// Took nothing from the queue (or the socket is full).
    Nothing,
    /// Took `frames` frames from the queue and wrote them all; `full` when it took a
    /// whole batch (so more may wait).
    Wrote { full: bool, frames: usize },
    /// The queue asked to close.
    Closing(Closing),
}

/// What one read of the socket found.
enum Read {
    Data,
    Nothing,
    Closed,
}

impl Session {
    /// A session task for `stream` once hyper let go of it; `already_read` is what
    /// hyper read past the upgrade request (copied: hyper's buffer may be large).
    pub fn new(
        stream: TcpStream,
        already_read: &[u8],
        handle: Arc<SessionHandle>,
        container: Arc<Container>,
        hub: Arc<Hub>,
        max_message: usize,
    ) -> Self {
        let pace = Pace::for_session(&handle.info.id);
        Self {
            stream,
            handle,
            container,
            hub,
            max_message,
            inbox: BytesMut::from(already_read),
            decoder: None,
            unsent: VecDeque::new(),
            heard: true,
            pace,
        }
    }

    /// Runs the session until either side closes it.
    ///
    /// Not an `async fn`: one moves its arguments into locals, and the future keeps
    /// both the argument and the local (160 bytes twice); the block uses the session
    /// where it was captured.
    #[allow(clippy::manual_async_fn)] // deliberately not `async fn`: see above
    pub fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            self.event("open", None, false, None);
            let code = self.serve().await;
            self.hub.unregister(&self.handle);
            self.event("close", None, false, Some(code));
        }
    }

    /// Whether the container's code hears this session's events: through
    /// `webSocketEvent`, or always for a session on a Dirigible endpoint.
    fn heard_by_container(&self) -> bool {
        self.handle.info.handler.is_some() || self.container.supervisor.wants_ws_events()
    }

    fn event(&self, kind: &str, message: Option<String>, binary: bool, close_code: Option<u16>) {
        if !self.heard_by_container() {
            return;
        }
        let info = (kind == "open").then(|| self.handle.full_info());
        self.call(WsEvent {
            session: self.handle.info.id.clone(),
            info,
            kind: kind.into(),
            message,
            binary,
            close_code,
            error: None,
        });
    }

    /// Queues an event for the container; when its queue is full the session is
    /// handled as a client that fell behind (SPEC 5.5): closed 1008 and counted.
    fn call(&self, event: WsEvent) {
        let queued = self
            .container
            .supervisor
            .invoke(Call::Event(event))
            .now_or_never();
        if let Some(Err(e @ InvokeError::Busy { .. })) = queued {
            if self.handle.close_slow() {
                self.handle
                    .stats
                    .slow_closed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = %self.handle.info.id, "closed 1008: {e}");
            }
        }
    }

    fn error_event(&self, error: &str) {
        if !self.heard_by_container() {
            return;
        }
        self.call(WsEvent {
            session: self.handle.info.id.clone(),
            kind: "error".into(),
            error: Some(error.into()),
            ..WsEvent::default()
        });
    }

    /// The loop; returns the close code for the `close` event.
    async fn serve(&mut self) -> u16 {
        if !self.inbox.is_empty() {
            if let Some(closing) = self.take_messages() {
                return Box::pin(self.close(closing)).await;
            }
        }
        loop {
            let step = match self.wait().await {
                Woke::Failed => return 1006,
                Woke::Flags(flags) => {
                    if flags & wake::SLOW != 0 || self.handle.is_slow() {
                        return Box::pin(self.close(Closing::Slow)).await;
                    }
                    if flags & wake::PING != 0 {
                        if !self.heard {
                            tracing::debug!(session = %self.handle.info.id, "reaped: no answer to ping");
                            return 1006;
                        }
                        self.heard = false;
                        self.unsent.push_back(Bytes::from_static(PING));
                    }
                    None
                }
                Woke::Readable => match self.read_available() {
                    Read::Data => {
                        self.heard = true;
                        self.take_messages()
                    }
                    Read::Nothing => continue,
                    Read::Closed => return 1006,
                },
                Woke::Writable => None,
            };
            if let Some(closing) = step {
                return Box::pin(self.close(closing)).await;
            }
            match self.flush() {
                Err(()) => return 1006,
                Ok(Flushed::Closing(closing)) => return Box::pin(self.close(closing)).await,
                Ok(Flushed::Wrote {
                    full: false,
                    frames,
                }) => {
                    // Wrote what was queued: let the frames of the dispatches that come
                    // meanwhile gather (without each waking the task) and write them
                    // in one go. In a burst this turns one `write` per frame (~7 µs of
                    // CPU each on loopback) into one per window; the window follows
                    // the rate frames come at (`Pace`), at most `--ws-coalesce` unless
                    // `--ws-coalesce-per-session` lets it grow for a large broadcast; the
                    // first frame after a quiet spell still leaves at once.
                    // A message from the peer ends the window early, so a client
                    // answering each reply (an echo loop) is not slowed by it.
                    let window = self.pace.after_write(frames, &self.hub.window());
                    if !window.is_zero() {
                        self.handle.mute();
                        self.gather(window).await;
                        self.pace.gathered(self.handle.has_queued());
                    }
                }
                Ok(_) => {
                    if !self.unsent.is_empty() || self.handle.queued_frames() > 0 {
                        // More to write than one batch: let the other sessions on this
                        // thread have their turn before the next.
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    /// Waits until the hub wakes the task, the socket can be read, or (with frames
    /// unsent) written.
    fn wait(&self) -> impl std::future::Future<Output = Woke> + '_ {
        std::future::poll_fn(move |cx| {
            let flags = self.handle.take_wakes(cx.waker());
            if flags != 0 {
                return Poll::Ready(Woke::Flags(flags));
            }
            if !self.unsent.is_empty() {
                match self.stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Woke::Writable),
                    Poll::Ready(Err(_)) => return Poll::Ready(Woke::Failed),
                    Poll::Pending => {}
                }
            }
            // Through the reader slot, so this task's waker replaces the one hyper's
            // connection task left there (which kept that finished task's memory).
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Woke::Readable),
                Poll::Ready(Err(_)) => Poll::Ready(Woke::Failed),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    /// Waits `window` (or until the peer sends something) while queued frames
    /// gather. Boxed timer: only a session in a burst holds one.
    async fn gather(&self, window: Duration) {
        let mut timer = Box::pin(tokio::time::sleep(window));
        std::future::poll_fn(|cx| {
            if timer.as_mut().poll(cx).is_ready() || self.stream.poll_read_ready(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Reads what the socket has now.
    fn read_available(&mut self) -> Read {
        let mut got = false;
        loop {
            self.inbox.reserve(8192);
            match self.stream.try_read_buf(&mut self.inbox) {
                Ok(0) => return if got { Read::Data } else { Read::Closed },
                Ok(_) => {
                    got = true;
                    if self.inbox.len() > MAX_READ {
                        return Read::Data;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !got && self.inbox.is_empty() {
                        self.inbox = BytesMut::new();
                    }
                    return if got { Read::Data } else { Read::Nothing };
                }
                Err(_) => return Read::Closed,
            }
        }
    }

    /// Handles every complete message in the inbox (pongs go to `unsent`); Some when
    /// the session must close.
    fn take_messages(&mut self) -> Option<Closing> {
        let mut decoder = self
            .decoder
            .take()
            .unwrap_or_else(|| Box::new(Decoder::new(self.max_message)));
        let closing = loop {
            match decoder.next(&mut self.inbox) {
                Ok(None) => break None,
                Ok(Some(Incoming::Text(text))) => self.event("message", Some(text), false, None),
                Ok(Some(Incoming::Binary(data))) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    self.event("message", Some(b64), true, None);
                }
                Ok(Some(Incoming::Ping(payload))) => self.unsent.push_back(pong_frame(&payload)),
                Ok(Some(Incoming::Pong)) => {}
                Ok(Some(Incoming::Close(code))) => break Some(Closing::Peer(code)),
                Err(Violation(code)) => break Some(Closing::Violation(code)),
            }
        };
        if self.inbox.is_empty() {
            self.inbox = BytesMut::new(); // an idle session holds no read buffer
        }
        if !decoder.is_idle() {
            self.decoder = Some(decoder);
        }
        closing
    }

    /// Writes what is unsent and then one batch from the queue, without waiting
    /// (see [`Flushed`]); Err when the socket failed. A queue longer than a batch has
    /// woken the task again for the next.
    fn flush(&mut self) -> Result<Flushed, ()> {
        let mut flushed = Flushed::Nothing;
        if self.write_unsent().map_err(|_| ())? {
            let closing = self.handle.take_batch(&mut self.unsent, MAX_BATCH);
            let taken: usize = self.unsent.iter().map(Bytes::len).sum();
            let frames = self.unsent.len();
            let written = self.write_unsent().map_err(|_| ())?;
            flushed = match closing {
                Some((code, reason)) => Flushed::Closing(Closing::Queued(code, reason)),
                None if taken > 0 && written => Flushed::Wrote {
                    full: taken >= MAX_BATCH,
                    frames,
                },
                None => Flushed::Nothing,
            };
        }
        if self.unsent.is_empty() && self.unsent.capacity() > 0 {
            self.unsent = VecDeque::new(); // an idle session keeps no write queue
        }
        Ok(flushed)
    }

    /// Writes unsent frames with `writev` until done (true) or the socket is full
    /// (false).
    fn write_unsent(&mut self) -> std::io::Result<bool> {
        while !self.unsent.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(self.unsent.iter()) {
                *slot = IoSlice::new(frame);
                count += 1;
            }
            let mut written = match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            while written > 0 {
                let Some(front) = self.unsent.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.unsent.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        Ok(true)
    }

    /// Writes every unsent frame, waiting for the socket; false when it failed.
    async fn write_all_unsent(&mut self) -> bool {
        loop {
            match self.write_unsent() {
                Ok(true) => return true,
                Ok(false) => {
                    if self.stream.writable().await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Closes the session; the code for the `close` event.
    async fn close(&mut self, closing: Closing) -> u16 {
        match closing {
            Closing::Slow => {
                self.handle.discard_queue();
                let _ = tokio::time::timeout(CLOSE_GRACE, self.write_all_unsent()).await;
                let frame = close_frame(close::POLICY, "client too slow");
                let _ = tokio::time::timeout(CLOSE_GRACE, self.stream.write_all(&frame)).await;
                self.linger().await;
                close::POLICY
            }
            Closing::Queued(code, reason) => self.close_after_queued(code, &reason).await,
            Closing::Peer(code) => {
                if let Some(end) = self.flush_replies().await {
                    return end;
                }
                let code = code.unwrap_or(1005);
                let echo = if code == 1005 { close::NORMAL } else { code };
                let _ = self.stream.write_all(&close_frame(echo, "")).await;
                code
            }
            Closing::Violation(code) => {
                if let Some(end) = self.flush_replies().await {
                    return end;
                }
                let _ = self.stream.write_all(&close_frame(code, "")).await;
                self.linger().await;
                let error = match code {
                    close::TOO_BIG => {
                        format!("message over the {} limit", size_text(self.max_message))
                    }
                    close::INVALID_DATA => "text that is not UTF-8".to_string(),
                    _ => "WebSocket protocol error".to_string(),
                };
                self.error_event(&error);
                code
            }
        }
    }

    /// Writes what was queued before the close, then the close frame.
    async fn close_after_queued(&mut self, code: u16, reason: &str) -> u16 {
        match tokio::time::timeout(CLOSE_DRAIN, self.write_all_unsent()).await {
            Ok(true) => {}
            _ => return 1006,
        }
        let _ = self.stream.write_all(&close_frame(code, reason)).await;
        self.linger().await;
        code
    }

    /// Before a close: lets the container finish the events this session already
    /// sent it (briefly) and writes the replies they queued. Some when the session
    /// ended meanwhile (the mim closed it, or the socket failed).
    async fn flush_replies(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.container.supervisor.ws_busy(&self.handle.info.id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        loop {
            if !self.write_all_unsent().await {
                return Some(1006);
            }
            if let Some((code, reason)) = self.handle.take_batch(&mut self.unsent, MAX_BATCH) {
                return Some(self.close_after_queued(code, &reason).await);
            }
            if self.unsent.is_empty() {
                return None;
            }
        }
    }

    /// After our close frame: stop writing and read (and drop) what the peer still
    /// sends until it closes too, briefly, so unread data does not turn our close into
    /// a reset that could swallow the close frame.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut scratch = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + LINGER;
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await
        {
            if n == 0 {
                break;
            }
        }
    }
}

/// A byte count as people write it: `1 MiB`, `16 KiB`, else `N bytes`.
fn size_text(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future a `fn(Session) -> F` returns.
    fn future_size<F: std::future::Future>(_: fn(super::Session) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_session_task_stays_small() {
        let size = future_size(super::Session::run);
        eprintln!(
            "session future: {size} bytes, Session: {}",
            std::mem::size_of::<super::Session>()
        );
        // tokio aligns a task's cell to 128 bytes, and the cell is the future and
        // ~96 bytes: at most 416 keeps an idle session's task in 512.
        assert!(size <= 416, "the session's future grew to {size} bytes");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::size_text(1 << 20), "1 MiB");
        assert_eq!(super::size_text(16 << 20), "16 MiB");
        assert_eq!(super::size_text(2048), "2 KiB");
        assert_eq!(super::size_text(1000), "1000 bytes");
    }
}
