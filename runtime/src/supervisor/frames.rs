//! What comes back from a worker: its frames read, decoded and handed to whoever
//! waits (the caller of an invocation, the hub, the log, the outbound client).
//! What goes to it is `writer.rs`.

use super::call::{InvokeError, Part};
use super::table::{Entry, Waiter};
use super::{kill, lock, Live, Supervisor};
use crate::ipc::{decode_frames, FromWorker, ToWorker};
use crate::logs;
use crate::ws::client::ClientEvents;
use bytes::Bytes;
use mimhost_bindings::OutboundHttpRequest;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;

impl Supervisor {
    /// Reads the worker's frames until it exits, then fails what it left unanswered
    /// and starts a replacement.
    pub(super) async fn read_frames(
        self: Arc<Self>,
        mut read: OwnedReadHalf,
        live: Arc<Live>,
        mut child: tokio::process::Child,
    ) {
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            match decode_frames::<FromWorker>(&mut buffer) {
                Ok(messages) => messages.into_iter().for_each(|m| self.route(&live, m)),
                Err(e) => {
                    tracing::error!(container = %self.name, "bad frame from worker: {e}");
                    kill(&live, "it sent a malformed frame");
                    break;
                }
            }
        }
        let status = child.wait().await;
        live.exited.send_replace(true);
        let cause = if live.timed_out.load(Ordering::Relaxed) {
            logs::Cause::Timeout
        } else if matches!(&status, Ok(s) if s.code() == Some(crate::worker::EXIT_MEMORY)) {
            logs::Cause::Memory
        } else {
            logs::Cause::Crash
        };
        let reason = lock(&live.kill_reason)
            .clone()
            .unwrap_or_else(|| match status {
                Ok(s) if s.code() == Some(crate::worker::EXIT_MEMORY) => {
                    format!(
                        "it used more than --mim-memory ({} MiB)",
                        self.limits.memory_bytes >> 20
                    )
                }
                Ok(s) => format!("it exited ({s})"),
                Err(e) => format!("it could not be waited for ({e})"),
            });
        self.worker_gone(&live, &reason, cause).await;
    }

    /// Hands one frame from the worker to whoever waits for it.
    fn route(self: &Arc<Self>, live: &Arc<Live>, message: FromWorker) {
        let (id, part, last) = match message {
            FromWorker::Loaded { error, ws_handler } => {
                let had = self.ws_handler.swap(ws_handler, Ordering::Relaxed);
                if ws_handler && !had {
                    // New code listens to sessions the old one ignored: introduce them.
                    self.resume_sessions(live);
                }
                let verdict = error.map_or(Ok(()), |e| Err(InvokeError::load_failed(e)));
                let mut calls = lock(&self.calls);
                let load = calls
                    .entries
                    .iter()
                    .find(|(_, e)| {
                        matches!(e.waiter, Waiter::Load { .. }) && e.sent_to_gen(live.generation)
                    })
                    .map(|(id, _)| *id);
                if let Some(Entry {
                    waiter: Waiter::Load { reply, .. },
                    ..
                }) = load.and_then(|id| calls.remove(id))
                {
                    let _ = reply.send(verdict);
                }
                return;
            }
            FromWorker::Ws(op) => return self.events.on_ws(&self.name, op),
            FromWorker::WsClientCall(call) => {
                let sink: std::sync::Weak<dyn ClientEvents> =
                    Arc::downgrade(&(self.clone() as Arc<dyn ClientEvents>));
                let answer = self.clients.call(call, sink);
                let _ = live.to_worker.send(ToWorker::WsClientAnswer(answer));
                return;
            }
            FromWorker::WsClientOp(op) => return self.clients.apply(op, self.as_ref()),
            FromWorker::WsQuery(query) => {
                let answer = self.events.on_query(&self.name, query);
                let _ = live.to_worker.send(ToWorker::WsAnswer(answer));
                return;
            }
            FromWorker::Done { seq } => {
                let mut calls = lock(&self.calls);
                let done: Vec<u64> = calls
                    .entries
                    .range(..=seq)
                    .filter(|(_, e)| {
                        matches!(e.waiter, Waiter::Event(_)) && e.sent_to_gen(live.generation)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in done {
                    calls.remove(id);
                }
                return;
            }
            FromWorker::WsAccept {
                id,
                data,
                protocols,
            } => (id, Part::Accept { data, protocols }, true),
            FromWorker::Pong { id } => {
                let mut calls = lock(&self.calls);
                if let Some(Entry {
                    waiter: Waiter::Ping(tx),
                    ..
                }) = calls.remove(id)
                {
                    let _ = tx.send(());
                }
                return;
            }
            FromWorker::Dispatch { frames } => return self.events.on_dispatch(&self.name, frames),
            FromWorker::Log { level, message } => {
                log_line(&self.name, level, &message);
                let (level, source) = match level {
                    0 => (logs::Level::Debug, logs::Source::Console),
                    1 => (logs::Level::Info, logs::Source::Console),
                    2 => (logs::Level::Warn, logs::Source::Console),
                    3 => (logs::Level::Error, logs::Source::Console),
                    _ => (logs::Level::Error, logs::Source::Uncaught),
                };
                // The container's log names its files relative to the mim (as a
                // deploy error does), not by where the host keeps them.
                let root = format!("{}/", lock(&self.spec).root.display());
                let message = message.replace(&root, "");
                return self
                    .events
                    .on_log(&self.name, level, source, &message, None);
            }
            FromWorker::OutboundHttpRequest { id, request } => {
                return self.start_outbound(live, id, request)
            }
            FromWorker::OutboundHttpDeleteFile { path } => {
                return self.limits.outbound.delete_file(&self.name, &path)
            }
            FromWorker::HttpStart {
                id,
                status,
                headers,
            } => (id, Part::Start { status, headers }, false),
            FromWorker::HttpChunk { id, chunk } => (id, Part::Chunk(Bytes::from(chunk)), false),
            FromWorker::HttpEnd { id } => (id, Part::End, true),
            FromWorker::HttpFull {
                id,
                status,
                headers,
                body,
            } => (
                id,
                Part::Full {
                    status,
                    headers,
                    body: Bytes::from(body),
                },
                true,
            ),
        };
        let mut calls = lock(&self.calls);
        if let Some(Entry {
            waiter: Waiter::Http { parts, .. },
            ..
        }) = calls.entries.get(&id)
        {
            let _ = parts.send(part);
            if last {
                calls.remove(id);
            }
        }
    }

    /// Runs an outbound HTTP request of `live`'s code on the host; what comes back
    /// goes to that worker only (after a restart it is dropped, the task aborted).
    fn start_outbound(&self, live: &Arc<Live>, id: u64, request: OutboundHttpRequest) {
        let to = Arc::downgrade(live);
        let sink = move |event| {
            if let Some(live) = to.upgrade() {
                let _ = live.to_worker.send(ToWorker::OutboundHttp { id, event });
            }
        };
        let outbound = self.limits.outbound.clone();
        let slots = self.outbound_slots.clone();
        let container = self.name.clone();
        let owner = Arc::downgrade(live);
        // The map is locked across the spawn so the task's own removal comes after.
        let mut in_flight = lock(&live.outbound);
        let task = tokio::spawn(async move {
            outbound.run(&container, &slots, request, &sink).await;
            if let Some(live) = owner.upgrade() {
                lock(&live.outbound).remove(&id);
            }
        });
        in_flight.insert(id, task.abort_handle());
    }
}

fn log_line(container: &str, level: u8, message: &str) {
    match level {
        0 => tracing::debug!(container, "{message}"),
        1 => tracing::info!(container, "{message}"),
        2 => tracing::warn!(container, "{message}"),
        _ => tracing::error!(container, "{message}"),
    }
}
