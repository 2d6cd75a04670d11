//! The host side of one container's worker process: spawn, framed IPC, deadlines,
//! kill and warm restart.
//!
//! A worker owns nothing the host needs to keep: every socket lives in the host, so a
//! worker that hangs, grows too big or crashes is killed and replaced while sessions
//! and other containers carry on.

mod spawn;

use crate::ipc::{decode_frames, encode_into, FromWorker, ToWorker};
use crate::logs;
use crate::outbound::OutboundHttp;
use crate::ws::client::ClientEvents;
use crate::ws::clients::ClientSet;
use bytes::Bytes;
use mimhost_bindings::{
    ClientEvent, HttpRequest, MimSpec, OutboundHttpRequest, SessionInfo, WsAnswer, WsEvent, WsOp,
    WsQuery,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

/// How long a worker has to answer a ping before it counts as stuck.
const PING_GRACE: Duration = Duration::from_millis(300);

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Limits every worker of this host runs under.
#[derive(Debug, Clone)]
pub struct WorkerLimits {
    /// How long one invocation may run before its worker is killed.
    pub handler_timeout: Duration,
    /// Resident memory a worker may reach before it is stopped.
    pub memory_bytes: u64,
    /// The host's outbound HTTP (`context.http.request`, `fetch`): its client,
    /// `--max-body` and the file area, shared by every worker.
    pub outbound: Arc<OutboundHttp>,
    /// The cluster's Redis URL (`--cluster`): workers keep their stores there.
    pub store_redis: Option<String>,
}

/// Where a worker's output goes besides HTTP answers: the hub, in practice.
pub trait WorkerEvents: Send + Sync + 'static {
    /// Frames `context.dispatchWebSocketEvent` sent to the container's dispatch channel.
    fn on_dispatch(&self, container: &str, frames: Vec<String>);
    /// A WebSocket operation of the container's code.
    fn on_ws(&self, container: &str, op: WsOp);
    /// A WebSocket question of the container's code.
    fn on_query(&self, container: &str, query: WsQuery) -> WsAnswer;
    /// The container's open sessions (a restarted worker learns them).
    fn sessions_of(&self, container: &str) -> Vec<SessionInfo>;
    /// The container stopped for good: its sessions close 1001.
    fn on_stopped(&self, container: &str);
    /// A line for the container's log: what its code wrote or threw, a worker
    /// restart and why, a hot swap. Ignored unless the receiver keeps logs.
    fn on_log(
        &self,
        _container: &str,
        _level: logs::Level,
        _source: logs::Source,
        _message: &str,
        _cause: Option<logs::Cause>,
    ) {
    }
}

/// One piece of an HTTP answer coming back from a worker.
#[derive(Debug)]
pub enum HttpPart {
    /// A streamed answer begins.
    Start {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// A chunk of a streamed answer.
    Chunk(Bytes),
    /// The streamed answer is complete.
    End,
    /// A complete answer.
    Full {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Bytes,
    },
    /// The upgrade is accepted as a WebSocket session.
    Accept {
        /// JSON text of the session data.
        data: String,
        /// Subprotocols the mim offers.
        protocols: Vec<String>,
    },
    /// The worker went away before answering.
    Failed {
        /// Why.
        message: String,
    },
}

/// Why an invocation could not even be sent.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No worker became ready before the deadline.
    #[error("the container's worker is not ready (restarting)")]
    NotReady,
    /// The container was stopped.
    #[error("the container is stopped")]
    Stopped,
}

/// An invocation in flight: its answer parts and the worker generation running it.
pub struct Invocation {
    /// Answer parts, in order.
    pub parts: mpsc::UnboundedReceiver<HttpPart>,
    /// Request id within the worker.
    pub id: u64,
    /// Which worker process runs it (for [`Supervisor::overran`]).
    pub generation: u64,
}

/// Something for the worker's JavaScript to handle, in order: a session event or an
/// outbound client's event. Both are acknowledged by `Done{seq}`.
#[derive(Debug, Clone)]
enum Inbound {
    /// A session event (`webSocketEvent`, or a Dirigible endpoint's handler).
    Session(WsEvent),
    /// An outbound `sdk/net` client's event for its handler module.
    Client(ClientEvent),
}

impl Inbound {
    /// The message carrying this event with sequence number `seq`.
    fn message(self, seq: u64) -> ToWorker {
        match self {
            Inbound::Session(event) => ToWorker::Ws { seq, event },
            Inbound::Client(event) => ToWorker::WsClient { seq, event },
        }
    }

    /// The `error` event that replaces this one when a worker died handling it.
    fn dropped(&self) -> Inbound {
        const WHY: &str =
            "the handler ran past the handler timeout or crashed; the event was dropped";
        match self {
            Inbound::Session(e) => Inbound::Session(WsEvent {
                session: e.session.clone(),
                kind: "error".into(),
                error: Some(WHY.into()),
                ..WsEvent::default()
            }),
            Inbound::Client(e) => Inbound::Client(ClientEvent {
                client: e.client.clone(),
                handler: e.handler.clone(),
                kind: "error".into(),
                message: None,
                error: Some(WHY.into()),
            }),
        }
    }
}

/// One running worker process.
struct Live {
    generation: u64,
    pid: u32,
    to_worker: mpsc::UnboundedSender<ToWorker>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<HttpPart>>>,
    load_reply: Mutex<Option<oneshot::Sender<Option<String>>>>,
    pongs: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    kill_reason: Mutex<Option<String>>,
    /// Events sent and not yet acknowledged: (seq, sent at, event).
    ws_inflight: Mutex<std::collections::VecDeque<(u64, Instant, Inbound)>>,
    /// Set when the host retired this worker on purpose and wants a replacement.
    replace: AtomicBool,
    /// Its outbound HTTP requests in flight, by id: aborted when it goes, so no
    /// answer reaches a later worker.
    outbound: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    /// Set when it was retired for running past the handler timeout.
    timed_out: AtomicBool,
}

/// Supervises the worker process of one container.
pub struct Supervisor {
    name: String,
    spec: Mutex<MimSpec>,
    store_dir: PathBuf,
    limits: WorkerLimits,
    events: Arc<dyn WorkerEvents>,
    live: Mutex<Option<Arc<Live>>>,
    ready: Notify,
    next_id: AtomicU64,
    generations: AtomicU64,
    stopped: AtomicBool,
    /// Events that arrived while no worker was live.
    waiting: Mutex<Vec<Inbound>>,
    /// `error` events for the sessions and clients whose event a dead worker dropped.
    dropped: Mutex<Vec<Inbound>>,
    /// Whether the code exports `webSocketEvent`; session events are sent only then
    /// (sessions on Dirigible endpoints excepted).
    ws_handler: AtomicBool,
    /// Outbound HTTP requests of the container in flight (at most 64; more wait).
    outbound_slots: Arc<tokio::sync::Semaphore>,
    /// Workers replaced after dying or being killed (for the console and the API).
    restarts: AtomicU64,
    /// The container's outbound `sdk/net` clients: owned here, so they outlive
    /// worker restarts and hot swaps, and close when the container stops.
    clients: ClientSet,
}

impl Supervisor {
    /// Starts a worker for `spec`; fails with the load error (file, line, column) when
    /// the code does not load, leaving nothing running.
    pub async fn start(
        spec: MimSpec,
        store_dir: PathBuf,
        limits: WorkerLimits,
        events: Arc<dyn WorkerEvents>,
    ) -> Result<Arc<Self>, String> {
        let sup = Arc::new(Self {
            name: spec.name.clone(),
            spec: Mutex::new(spec),
            store_dir,
            limits,
            events,
            live: Mutex::new(None),
            ready: Notify::new(),
            next_id: AtomicU64::new(1),
            generations: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
            dropped: Mutex::new(Vec::new()),
            ws_handler: AtomicBool::new(false),
            outbound_slots: Arc::new(OutboundHttp::container_slots()),
            restarts: AtomicU64::new(0),
            clients: ClientSet::default(),
        });
        if let Err(e) = sup.spawn_worker().await {
            // Clients its code made while failing to load go with it.
            sup.clients.close_all();
            return Err(e);
        }
        sup.host_log(logs::Level::Info, "started", None);
        tokio::spawn(sup.clone().watch_events());
        Ok(sup)
    }

    /// Writes a host line (start, restart, hot swap) to the container's log.
    fn host_log(&self, level: logs::Level, message: &str, cause: Option<logs::Cause>) {
        let source = if cause.is_some() {
            logs::Source::Restart
        } else {
            logs::Source::Host
        };
        self.events
            .on_log(&self.name, level, source, message, cause);
    }

    /// How many times the worker was restarted since the container started.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The code and env the worker runs.
    pub fn spec(&self) -> MimSpec {
        lock(&self.spec).clone()
    }

    fn current(&self) -> Option<Arc<Live>> {
        lock(&self.live).clone()
    }

    /// Spawns a worker, loads the code and makes it the live one. (Boxed: the reader
    /// task it starts may call it again to restart, which a plain async fn cannot.)
    fn spawn_worker(self: &Arc<Self>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.spawn_worker_inner())
    }

    async fn spawn_worker_inner(self: &Arc<Self>) -> Result<(), String> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (child, stream) =
            spawn::worker_process(self.limits.memory_bytes, self.limits.store_redis.as_deref())
                .map_err(|e| format!("cannot start a worker process: {e}"))?;
        let pid = child.id().unwrap_or(0);
        let (read, write) = stream.into_split();
        let (to_worker, rx) = mpsc::unbounded_channel();
        let (load_tx, load_rx) = oneshot::channel();
        let live = Arc::new(Live {
            generation,
            pid,
            to_worker,
            pending: Mutex::new(HashMap::new()),
            load_reply: Mutex::new(Some(load_tx)),
            pongs: Mutex::new(HashMap::new()),
            kill_reason: Mutex::new(None),
            ws_inflight: Mutex::new(std::collections::VecDeque::new()),
            replace: AtomicBool::new(false),
            outbound: Mutex::new(HashMap::new()),
            timed_out: AtomicBool::new(false),
        });
        tokio::spawn(write_frames(write, rx));
        tokio::spawn(self.clone().read_frames(read, live.clone(), child));
        let spec = self.spec();
        let _ = live.to_worker.send(ToWorker::Load {
            spec,
            store_dir: self.store_dir.clone(),
        });
        let loaded = tokio::time::timeout(self.limits.handler_timeout, load_rx).await;
        let error = match loaded {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(e))) => Some(e),
            Ok(Err(_)) => Some("the worker exited while loading the code".to_string()),
            Err(_) => Some(format!(
                "loading the code took longer than the handler timeout ({:?})",
                self.limits.handler_timeout
            )),
        };
        if let Some(e) = error {
            kill(&live, "its code did not load");
            return Err(e);
        }
        self.catch_up(&live);
        if !self.go_live(live.clone(), false) {
            kill(&live, "the container stopped while it was starting");
        }
        self.ready.notify_waiters();
        Ok(())
    }

    /// Tells a fresh worker about the open sessions, reports dropped events to their
    /// sessions, and hands over the events that waited for it.
    fn catch_up(&self, live: &Live) {
        self.resume_sessions(live);
        for event in std::mem::take(&mut *lock(&self.dropped)) {
            self.send_event(live, event);
        }
    }

    /// Makes `live` the worker that gets invocations (unless `only_if_none` and one
    /// already is, or the container stopped), first handing it the events that
    /// waited. Both happen under the `waiting` lock, which [`Self::deliver`] takes
    /// when no worker is live, so no event is left behind between the two.
    fn go_live(&self, live: Arc<Live>, only_if_none: bool) -> bool {
        let mut waiting = lock(&self.waiting);
        let mut current = lock(&self.live);
        if (only_if_none && current.is_some()) || self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        for event in waiting.drain(..) {
            self.send_event(&live, event);
        }
        *current = Some(live);
        true
    }

    /// Tells the worker about every open session (a `resume` event each, no handler call).
    fn resume_sessions(&self, live: &Live) {
        let all = self.wants_ws_events();
        for info in self.events.sessions_of(&self.name) {
            if !all && info.handler.is_none() {
                continue;
            }
            let event = WsEvent {
                session: info.id.clone(),
                info: Some(info),
                kind: "resume".into(),
                ..WsEvent::default()
            };
            self.send_event(live, Inbound::Session(event));
        }
    }

    /// Whether the container's code listens to session events (`webSocketEvent`).
    pub fn wants_ws_events(&self) -> bool {
        self.ws_handler.load(Ordering::Relaxed)
    }

    fn send_event(&self, live: &Live, event: Inbound) {
        let seq = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&live.ws_inflight).push_back((seq, Instant::now(), event.clone()));
        let _ = live.to_worker.send(event.message(seq));
    }

    /// Whether events of `session` still wait for or run in the worker: a closing
    /// session waits for them so the replies to what it received go out first.
    pub fn ws_busy(&self, session: &str) -> bool {
        let of_session = |e: &Inbound| matches!(e, Inbound::Session(e) if e.session == session);
        if lock(&self.waiting).iter().any(of_session) {
            return true;
        }
        self.current().is_some_and(|live| {
            lock(&live.ws_inflight)
                .iter()
                .any(|(_, _, e)| of_session(e))
        })
    }

    /// Hands an event to the live worker, or keeps it for the next one.
    fn deliver(&self, event: Inbound) {
        if let Some(live) = self.current() {
            return self.send_event(&live, event);
        }
        let mut waiting = lock(&self.waiting);
        // Checked again under the lock `go_live` holds while it drains the queue.
        match self.current() {
            Some(live) => {
                drop(waiting);
                self.send_event(&live, event);
            }
            None => waiting.push(event),
        }
    }

    /// Delivers a session event to `webSocketEvent` (or the session's Dirigible
    /// handler), in order per session; events that arrive during a restart wait for
    /// the new worker.
    pub fn ws_event(&self, event: WsEvent) {
        self.deliver(Inbound::Session(event));
    }

    /// Kills a worker whose session event has run past the handler timeout.
    async fn watch_events(self: Arc<Self>) {
        let tick = (self.limits.handler_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        while !self.stopped.load(Ordering::Relaxed) {
            tokio::time::sleep(tick).await;
            let Some(live) = self.current() else { continue };
            let oldest = lock(&live.ws_inflight).front().map(|(_, at, _)| *at);
            if oldest.is_some_and(|at| at.elapsed() > self.limits.handler_timeout) {
                self.check_stuck(&live).await;
            }
        }
    }

    /// Reads the worker's frames until it exits, then fails what it left unanswered
    /// and starts a replacement.
    async fn read_frames(
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
        let part = match message {
            FromWorker::Loaded { error, ws_handler } => {
                let had = self.ws_handler.swap(ws_handler, Ordering::Relaxed);
                if ws_handler && !had {
                    // New code listens to sessions the old one ignored: introduce them.
                    self.resume_sessions(live);
                }
                if let Some(reply) = lock(&live.load_reply).take() {
                    let _ = reply.send(error);
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
                let mut inflight = lock(&live.ws_inflight);
                while inflight.front().is_some_and(|(s, _, _)| *s <= seq) {
                    inflight.pop_front();
                }
                return;
            }
            FromWorker::WsAccept {
                id,
                data,
                protocols,
            } => (id, HttpPart::Accept { data, protocols }, true),
            FromWorker::Pong { id } => {
                if let Some(tx) = lock(&live.pongs).remove(&id) {
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
            } => (id, HttpPart::Start { status, headers }, false),
            FromWorker::HttpChunk { id, chunk } => (id, HttpPart::Chunk(Bytes::from(chunk)), false),
            FromWorker::HttpEnd { id } => (id, HttpPart::End, true),
            FromWorker::HttpFull {
                id,
                status,
                headers,
                body,
            } => (
                id,
                HttpPart::Full {
                    status,
                    headers,
                    body: Bytes::from(body),
                },
                true,
            ),
        };
        let (id, part, last) = part;
        let mut pending = lock(&live.pending);
        if let Some(tx) = pending.get(&id) {
            let _ = tx.send(part);
        }
        if last {
            pending.remove(&id);
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

    /// A worker exited: answer its leftovers and replace it (unless stopped).
    async fn worker_gone(self: &Arc<Self>, live: &Arc<Live>, reason: &str, cause: logs::Cause) {
        let was_current = {
            let mut current = lock(&self.live);
            let same = current
                .as_ref()
                .is_some_and(|c| c.generation == live.generation);
            if same {
                *current = None;
            }
            same
        };
        let message = format!(
            "the worker of {} stopped before answering: {reason}",
            self.name
        );
        abort_outbound(live);
        for (_, tx) in lock(&live.pending).drain() {
            let _ = tx.send(HttpPart::Failed {
                message: message.clone(),
            });
        }
        // The oldest unanswered event is the one the worker died on: its session gets an
        // `error` event. The worker never started the ones behind it: they go again.
        let mut unanswered: Vec<Inbound> = lock(&live.ws_inflight)
            .drain(..)
            .map(|(_, _, e)| e)
            .collect();
        if !unanswered.is_empty() {
            let culprit = unanswered.remove(0);
            lock(&self.dropped).push(culprit.dropped());
            let mut waiting = lock(&self.waiting);
            unanswered.append(&mut waiting);
            *waiting = unanswered;
        }
        let wanted = was_current || live.replace.load(Ordering::Relaxed);
        if !wanted || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        tracing::warn!(container = %self.name, "worker restarted: {reason}");
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.host_log(
            logs::Level::Warn,
            &format!("worker restarted: {reason}"),
            Some(cause),
        );
        let mut backoff = Duration::from_millis(100);
        while !self.stopped.load(Ordering::Relaxed) {
            match self.spawn_worker().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(container = %self.name, "worker restart failed: {e}");
                    self.host_log(
                        logs::Level::Error,
                        &format!("worker restart failed: {e}"),
                        None,
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits (until `deadline`) for a live worker.
    async fn live_before(&self, deadline: Instant) -> Result<Arc<Live>, InvokeError> {
        loop {
            if self.stopped.load(Ordering::Relaxed) {
                return Err(InvokeError::Stopped);
            }
            let notified = self.ready.notified();
            if let Some(live) = self.current() {
                return Ok(live);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(InvokeError::NotReady);
            }
        }
    }

    /// Sends an HTTP request to the worker; the answer arrives on the returned channel.
    pub async fn http(
        &self,
        request: HttpRequest,
        deadline: Instant,
    ) -> Result<Invocation, InvokeError> {
        let live = self.live_before(deadline).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, parts) = mpsc::unbounded_channel();
        lock(&live.pending).insert(id, tx);
        if live.to_worker.send(ToWorker::Http { id, request }).is_err() {
            lock(&live.pending).remove(&id);
            return Err(InvokeError::NotReady);
        }
        Ok(Invocation {
            parts,
            id,
            generation: live.generation,
        })
    }

    /// An invocation ran past its deadline: forget it, and if the worker does not
    /// answer a ping at once (it is stuck in a loop) kill it; a worker that merely has
    /// a handler that never ended keeps running.
    pub async fn overran(&self, id: u64, generation: u64) {
        let Some(live) = self.current().filter(|l| l.generation == generation) else {
            return;
        };
        lock(&live.pending).remove(&id);
        self.check_stuck(&live).await;
    }

    /// Pings the worker; one that does not answer at once is stuck in a loop and is
    /// killed (a replacement starts). New invocations wait for the verdict rather
    /// than queue behind a loop.
    async fn check_stuck(&self, live: &Arc<Live>) {
        let paused = {
            let mut current = lock(&self.live);
            let same = current
                .as_ref()
                .is_some_and(|c| c.generation == live.generation);
            if same {
                *current = None;
                live.replace.store(true, Ordering::Relaxed);
            }
            same
        };
        let ping = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&live.pongs).insert(ping, tx);
        let _ = live.to_worker.send(ToWorker::Ping { id: ping });
        if tokio::time::timeout(PING_GRACE, rx).await.is_ok() {
            if paused {
                live.replace.store(false, Ordering::Relaxed);
                if !self.go_live(live.clone(), true) {
                    live.replace.store(true, Ordering::Relaxed);
                }
                self.ready.notify_waiters();
            }
            return;
        }
        lock(&live.pongs).remove(&ping);
        let reason = format!(
            "an invocation ran past the handler timeout ({:?})",
            self.limits.handler_timeout
        );
        self.retire(live, &reason);
    }

    /// Kills `live` and stops routing to it at once: new invocations wait for the
    /// replacement that the reader task starts when the process is gone.
    fn retire(&self, live: &Arc<Live>, reason: &str) {
        live.replace.store(true, Ordering::Relaxed);
        live.timed_out.store(true, Ordering::Relaxed);
        {
            let mut current = lock(&self.live);
            if current
                .as_ref()
                .is_some_and(|c| c.generation == live.generation)
            {
                *current = None;
            }
        }
        kill(live, reason);
    }

    /// Hot swaps the worker to new code or env; a failed load keeps the old code.
    pub async fn reload(&self, spec: MimSpec) -> Result<(), String> {
        let deadline = Instant::now() + self.limits.handler_timeout;
        let live = self
            .live_before(deadline)
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        *lock(&live.load_reply) = Some(tx);
        let message = ToWorker::Load {
            spec: spec.clone(),
            store_dir: self.store_dir.clone(),
        };
        live.to_worker
            .send(message)
            .map_err(|_| "the worker is gone".to_string())?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(None)) => {
                *lock(&self.spec) = spec;
                self.host_log(
                    logs::Level::Info,
                    "hot swapped: the new code is serving",
                    None,
                );
                Ok(())
            }
            Ok(Ok(Some(e))) => {
                self.host_log(
                    logs::Level::Error,
                    &format!("the new code did not load; the previous version keeps serving: {e}"),
                    None,
                );
                Err(e)
            }
            Ok(Err(_)) => Err("the worker exited while loading the new code".into()),
            Err(_) => {
                self.retire(&live, "loading new code overran the handler timeout");
                Err("loading the new code took longer than the handler timeout".into())
            }
        }
    }

    /// Stops the worker: it flushes its store and exits (killed if it does not, soon).
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.ready.notify_waiters();
        self.events.on_stopped(&self.name);
        self.clients.close_all();
        let Some(live) = lock(&self.live).take() else {
            return;
        };
        abort_outbound(&live);
        let _ = live.to_worker.send(ToWorker::Shutdown);
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(live.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if process_alive(live.pid) {
            kill(&live, "it did not stop in time");
        }
    }
}

impl ClientEvents for Supervisor {
    fn client_event(&self, event: ClientEvent) {
        if !self.stopped.load(Ordering::Relaxed) {
            self.deliver(Inbound::Client(event));
        }
    }
}

/// Locks a mutex, shrugging off poisoning (no lock here guards a multi-step invariant).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends every outbound HTTP request of a worker that is going away.
fn abort_outbound(live: &Live) {
    for (_, task) in lock(&live.outbound).drain() {
        task.abort();
    }
}

fn kill(live: &Live, reason: &str) {
    lock(&live.kill_reason).get_or_insert_with(|| reason.to_string());
    if live.pid != 0 {
        // SAFETY: plain syscall on a pid we spawned and have not reaped yet.
        unsafe { libc::kill(live.pid as i32, libc::SIGKILL) };
    }
}

fn process_alive(pid: u32) -> bool {
    // A reaped or absent process leaves no /proc entry; a zombie has state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Drains the outgoing queue, batching everything queued into one write.
async fn write_frames(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<ToWorker>) {
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(message) = rx.recv().await {
        buffer.clear();
        encode_into(&message, &mut buffer);
        while let Ok(more) = rx.try_recv() {
            encode_into(&more, &mut buffer);
        }
        if write.write_all(&buffer).await.is_err() {
            return;
        }
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
