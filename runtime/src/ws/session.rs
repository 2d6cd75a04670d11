//! One session's task: reads client frames and turns them into events for the
//! container, writes what the hub queued (many frames per write), pings idle peers
//! and reaps dead ones. It owns the socket; the hub only holds its queue.

use super::codec::{close, close_frame, ping_frame, pong_frame, Decoder, Incoming, Violation};
use crate::hub::{Hub, Outgoing, SessionHandle};
use crate::registry::Container;
use crate::supervisor::{Call, InvokeError};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use mimhost_bindings::WsEvent;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes read off the socket before the decoder takes them (it consumes payload
/// as it comes, so a big message never sits here whole).
const MAX_READ: usize = 256 * 1024;
/// Most bytes written to the socket in one go.
const MAX_BATCH: usize = 256 * 1024;
/// How long a session closing for slowness waits for the socket before dropping it.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long a closing session keeps reading what the peer still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How long a session about to close waits for the container to finish the events it
/// already received, so their replies go out before the close frame.
const SETTLE: Duration = Duration::from_secs(2);

/// Everything a session task needs.
pub struct Session {
    /// The socket, taken from hyper after the upgrade.
    pub stream: TcpStream,
    /// Bytes hyper had read past the upgrade request.
    pub already_read: Bytes,
    /// The hub's handle on this session.
    pub handle: Arc<SessionHandle>,
    /// The container its events go to.
    pub container: Arc<Container>,
    /// The hub.
    pub hub: Arc<Hub>,
    /// How often to ping; a peer silent for two of these is reaped.
    pub ping_interval: Duration,
    /// Largest message the client may send (`--max-message`; bigger: close 1009).
    pub max_message: usize,
}

/// What one read of the socket found.
enum Read {
    Data,
    Nothing,
    Closed,
}

/// Why the loop ended: the close code for the `close` event.
enum End {
    Closed(u16),
}

impl Session {
    /// Runs the session until either side closes it.
    pub async fn run(mut self) {
        self.event("open", None, false, None);
        let End::Closed(code) = self.serve().await;
        self.hub.unregister(&self.handle);
        self.event("close", None, false, Some(code));
    }

    /// Whether the container's code hears this session's events: through
    /// `webSocketEvent`, or always for a session on a Dirigible endpoint.
    fn heard(&self) -> bool {
        self.handle.info.handler.is_some() || self.container.supervisor.wants_ws_events()
    }

    fn event(&self, kind: &str, message: Option<String>, binary: bool, close_code: Option<u16>) {
        if !self.heard() {
            return;
        }
        let info = (kind == "open").then(|| self.handle.info.clone());
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
        if !self.heard() {
            return;
        }
        self.call(WsEvent {
            session: self.handle.info.id.clone(),
            kind: "error".into(),
            error: Some(error.into()),
            ..WsEvent::default()
        });
    }

    async fn serve(&mut self) -> End {
        let mut decoder = Decoder::new(self.max_message);
        // Copy what hyper read ahead and let go of its buffer, which may be large.
        let mut inbox = BytesMut::from(&std::mem::take(&mut self.already_read)[..]);
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.tick().await;
        let mut heard = true;
        if let Some(end) = self.take_messages(&mut decoder, &mut inbox).await {
            return end;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.handle.kill.notified() => return self.close_slow().await,
                first = self.handle.next_outgoing() => {
                    if let Some(end) = self.write_batch(first).await {
                        return end;
                    }
                }
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        return End::Closed(1006);
                    }
                    match self.read_available(&mut inbox) {
                        Read::Data => heard = true,
                        Read::Nothing => continue,
                        Read::Closed => return End::Closed(1006),
                    }
                    if let Some(end) = self.take_messages(&mut decoder, &mut inbox).await {
                        return end;
                    }
                    if inbox.is_empty() {
                        inbox = BytesMut::new(); // an idle session holds no read buffer
                    }
                }
                _ = ping.tick() => {
                    if !heard {
                        tracing::debug!(session = %self.handle.info.id, "reaped: no answer to ping");
                        return End::Closed(1006);
                    }
                    heard = false;
                    if self.stream.write_all(&ping_frame()).await.is_err() {
                        return End::Closed(1006);
                    }
                }
            }
        }
    }

    /// Reads what the socket has now.
    fn read_available(&mut self, inbox: &mut BytesMut) -> Read {
        let mut got = false;
        loop {
            inbox.reserve(8192);
            match self.stream.try_read_buf(inbox) {
                Ok(0) => return if got { Read::Data } else { Read::Closed },
                Ok(_) => {
                    got = true;
                    if inbox.len() > MAX_READ {
                        return Read::Data;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return if got { Read::Data } else { Read::Nothing };
                }
                Err(_) => return Read::Closed,
            }
        }
    }

    /// Handles every complete message in `inbox`; Some when the session must end.
    async fn take_messages(&mut self, decoder: &mut Decoder, inbox: &mut BytesMut) -> Option<End> {
        loop {
            match decoder.next(inbox) {
                Ok(None) => return None,
                Ok(Some(Incoming::Text(text))) => self.event("message", Some(text), false, None),
                Ok(Some(Incoming::Binary(data))) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    self.event("message", Some(b64), true, None);
                }
                Ok(Some(Incoming::Ping(payload))) => {
                    if self.stream.write_all(&pong_frame(&payload)).await.is_err() {
                        return Some(End::Closed(1006));
                    }
                }
                Ok(Some(Incoming::Pong)) => {}
                Ok(Some(Incoming::Close(code))) => {
                    if let Some(end) = self.flush_replies().await {
                        return Some(end);
                    }
                    let code = code.unwrap_or(1005);
                    let echo = if code == 1005 { close::NORMAL } else { code };
                    let _ = self.stream.write_all(&close_frame(echo, "")).await;
                    return Some(End::Closed(code));
                }
                Err(Violation(code)) => {
                    if let Some(end) = self.flush_replies().await {
                        return Some(end);
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
                    return Some(End::Closed(code));
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, up to a batch, in one write.
    async fn write_batch(&mut self, first: Outgoing) -> Option<End> {
        let mut batch = BytesMut::new();
        let mut closing = None;
        let mut next = Some(first);
        let mut single: Option<Bytes> = None;
        while let Some(out) = next.take() {
            match out {
                Outgoing::Frame(frame) => {
                    self.handle.written(frame.len());
                    if single.is_none() && batch.is_empty() {
                        single = Some(frame);
                    } else {
                        if let Some(s) = single.take() {
                            batch.extend_from_slice(&s);
                        }
                        batch.extend_from_slice(&frame);
                    }
                }
                Outgoing::Close(code, reason) => {
                    closing = Some((code, reason));
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = self.handle.try_outgoing();
            }
        }
        let bytes = single.unwrap_or_else(|| batch.freeze());
        if !bytes.is_empty() {
            let write = self.stream.write_all(&bytes);
            tokio::pin!(write);
            let finished = tokio::select! {
                r = &mut write => r.is_ok(),
                _ = self.handle.kill.notified() => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut write).await;
                    return Some(self.close_slow().await);
                }
            };
            if !finished {
                return Some(End::Closed(1006));
            }
        }
        if let Some((code, reason)) = closing {
            let _ = self.stream.write_all(&close_frame(code, &reason)).await;
            self.linger().await;
            return Some(End::Closed(code));
        }
        None
    }

    /// Before a close: lets the container finish the events this session already
    /// sent it (briefly) and writes the replies they queued. Some when the session
    /// ended meanwhile (the mim closed it, or the socket failed).
    async fn flush_replies(&mut self) -> Option<End> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.container.supervisor.ws_busy(&self.handle.info.id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while let Some(first) = self.handle.try_outgoing() {
            if let Some(end) = self.write_batch(first).await {
                return Some(end);
            }
        }
        None
    }

    /// Drops what is queued and closes 1008 (the client fell too far behind).
    async fn close_slow(&mut self) -> End {
        self.handle.discard_queue();
        let frame = close_frame(close::POLICY, "client too slow");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.stream.write_all(&frame)).await;
        self.linger().await;
        End::Closed(close::POLICY)
    }

    /// After our close frame: stop writing and read (and drop) what the peer still
    /// sends until it closes too, briefly, so unread data does not turn our close into
    /// a reset that could swallow the close frame.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut scratch = vec![0u8; 4096]; // on the heap: it would bloat every idle session's task
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
    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::size_text(1 << 20), "1 MiB");
        assert_eq!(super::size_text(16 << 20), "16 MiB");
        assert_eq!(super::size_text(2048), "2 KiB");
        assert_eq!(super::size_text(1000), "1000 bytes");
    }
}
