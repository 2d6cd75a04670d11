//! The host side of one container's worker process: spawn, framed IPC, the one
//! in-flight table with its deadlines and bounds, kill and warm restart.
//!
//! Every invocation goes through [`Supervisor::invoke`]: it becomes an entry of the
//! table (`table.rs`), is written to the live worker (or parked until one is live),
//! and its deadline is kept by one watcher task per container.
//!
//! A worker owns nothing the host needs to keep: every socket lives in the host, so a
//! worker that hangs, grows too big or crashes is killed and replaced while sessions
//! and other containers carry on.

mod call;
mod frames;
mod spawn;
mod spin;
mod table;
mod writer;

pub use call::{Call, InvokeError, Reply, ReplyStream};
pub use table::QueueLimits;

use crate::ipc::ToWorker;
use crate::logs;
use crate::outbound::OutboundHttp;
use crate::ws::client::ClientEvents;
use crate::ws::clients::ClientSet;
use call::Part;
use mimhost_bindings::{
    ClientEvent, HttpRequest, MimSpec, SessionInfo, WsAnswer, WsEvent, WsOp, WsQuery,
};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{Calls, Entry, Waiter};
use tokio::sync::{mpsc, oneshot, watch, Notify};
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
    /// How many calls and bytes may queue for one worker (`--max-queue`,
    /// `--max-queue-bytes`); past it a request gets 503 and a session is closed 1008.
    pub queue: QueueLimits,
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
    to_worker: Arc<writer::WorkerWriter>,
    kill_reason: Mutex<Option<String>>,
    /// Set when the host retired this worker on purpose and wants a replacement.
    replace: AtomicBool,
    /// Its outbound HTTP requests in flight, by id: aborted when it goes, so no
    /// answer reaches a later worker.
    outbound: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    /// Set when it was retired for running past the handler timeout.
    timed_out: AtomicBool,
    /// Set while a stuck check of it runs (one at a time).
    checking: AtomicBool,
    /// Turns true once the process is reaped.
    exited: watch::Sender<bool>,
}

/// What [`Supervisor::submit`] leaves the caller to wait for.
enum Ticket {
    /// The answer's parts, and whether the call found a live worker with nothing
    /// else in hand (then it is worth waiting for awake: see [`spin::awake`]).
    Http {
        parts: mpsc::UnboundedReceiver<Part>,
        lone: bool,
    },
    Queued,
    Load(oneshot::Receiver<Result<(), InvokeError>>, MimSpec),
}

/// Supervises the worker process of one container.
pub struct Supervisor {
    name: String,
    spec: Mutex<MimSpec>,
    store_dir: PathBuf,
    limits: WorkerLimits,
    events: Arc<dyn WorkerEvents>,
    /// The live worker and every call queued for or running in it.
    calls: Mutex<Calls>,
    /// Wakes the deadline watcher (a nearer deadline, a new worker, the stop).
    wake: Notify,
    generations: AtomicU64,
    stopped: AtomicBool,
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
    ) -> Result<Arc<Self>, InvokeError> {
        let sup = Arc::new(Self {
            name: spec.name.clone(),
            spec: Mutex::new(spec),
            store_dir,
            limits,
            events,
            calls: Mutex::new(Calls::default()),
            wake: Notify::new(),
            generations: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            ws_handler: AtomicBool::new(false),
            outbound_slots: Arc::new(OutboundHttp::container_slots()),
            restarts: AtomicU64::new(0),
            clients: ClientSet::default(),
        });
        tokio::spawn(sup.clone().watch_deadlines());
        if let Err(e) = sup.spawn_worker().await {
            // Clients its code made while failing to load go with it.
            sup.clients.close_all();
            sup.stopped.store(true, Ordering::Relaxed);
            sup.wake.notify_one();
            return Err(e);
        }
        sup.host_log(logs::Level::Info, "started", None);
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

    /// Calls queued for or running in the worker (what the queue limit counts).
    pub fn queued(&self) -> usize {
        lock(&self.calls).queued()
    }

    /// Runs one invocation: an HTTP request or upgrade, a session event, a hot swap.
    ///
    /// The call is taken (or refused: [`InvokeError::Busy`], [`InvokeError::Stopped`])
    /// before the returned future is first polled, so a caller that cannot wait (a
    /// session event) learns at once whether it was queued. The future resolves with
    /// the answer, or with [`InvokeError::TimedOut`] when the handler timeout passes.
    pub fn invoke(
        &self,
        call: Call,
    ) -> impl Future<Output = Result<Reply, InvokeError>> + Send + '_ {
        let ticket = match call {
            Call::Http(request) => {
                let (parts, rx) = mpsc::unbounded_channel();
                let bytes = request_bytes(&request);
                let waiter = Waiter::Http {
                    parts,
                    parked: Some(request),
                };
                self.submit(waiter, bytes, true)
                    .map(|lone| Ticket::Http { parts: rx, lone })
            }
            Call::Event(event) => {
                let bytes = event_bytes(event.message.as_deref());
                self.submit(Waiter::Event(Inbound::Session(event)), bytes, true)
                    .map(|_| Ticket::Queued)
            }
            Call::Load(spec) => {
                let (reply, rx) = oneshot::channel();
                let waiter = Waiter::Load {
                    reply,
                    parked: Some(spec.clone()),
                };
                self.submit(waiter, 0, false)
                    .map(|_| Ticket::Load(rx, spec))
            }
        };
        async move {
            match ticket? {
                Ticket::Queued => Ok(Reply::Queued),
                Ticket::Http { parts, lone } => self.first_part(parts, lone).await,
                Ticket::Load(rx, spec) => self.loaded(rx, spec).await,
            }
        }
    }

    /// Puts a call in the table: written to the live worker, or parked until one is
    /// live. Requests and events count against the queue limits. True when it was
    /// the only call in the table (a lone call, answered soon unless slow).
    fn submit(&self, waiter: Waiter, bytes: usize, bounded: bool) -> Result<bool, InvokeError> {
        let mut calls = lock(&self.calls);
        if self.stopped.load(Ordering::Relaxed) {
            return Err(InvokeError::Stopped);
        }
        if bounded {
            calls.admit(bytes, self.limits.queue, &self.name)?;
        }
        let entry = Entry {
            waiter,
            sent_to: None,
            deadline: Some(Instant::now() + self.limits.handler_timeout),
            expired: false,
            bytes,
            bounded,
        };
        let lone = calls.entries.is_empty() && calls.live.is_some();
        let (_, earlier) = calls.add(entry, None, &self.store_dir);
        drop(calls);
        if earlier {
            self.wake.notify_one();
        }
        Ok(lone)
    }

    /// Turns the first part of an HTTP answer into a [`Reply`].
    async fn first_part(
        &self,
        mut rx: mpsc::UnboundedReceiver<Part>,
        lone: bool,
    ) -> Result<Reply, InvokeError> {
        let spin = match lone {
            true => crate::ipc::spin_time(),
            false => std::time::Duration::ZERO,
        };
        let first = spin::awake(spin, rx.recv()).await;
        match first {
            Some(Part::Full {
                status,
                headers,
                body,
            }) => Ok(Reply::Full {
                status,
                headers,
                body,
            }),
            Some(Part::Start { status, headers }) => Ok(Reply::Stream {
                status,
                headers,
                body: ReplyStream { parts: rx },
            }),
            Some(Part::Accept { data, protocols }) => Ok(Reply::Accept { data, protocols }),
            Some(Part::Failed(e)) => Err(e),
            Some(Part::Chunk(_) | Part::End) => Err(InvokeError::OutOfOrder),
            None => Err(InvokeError::WorkerGone {
                container: self.name.clone(),
                reason: "it dropped the request".into(),
            }),
        }
    }

    /// Waits for a hot swap's verdict and logs it.
    async fn loaded(
        &self,
        rx: oneshot::Receiver<Result<(), InvokeError>>,
        spec: MimSpec,
    ) -> Result<Reply, InvokeError> {
        let verdict = rx
            .await
            .unwrap_or_else(|_| Err(self.gone("it exited while loading the new code")));
        match verdict {
            Ok(()) => {
                *lock(&self.spec) = spec;
                self.host_log(
                    logs::Level::Info,
                    "hot swapped: the new code is serving",
                    None,
                );
                Ok(Reply::Loaded)
            }
            Err(e) => {
                if matches!(e, InvokeError::LoadFailed { .. }) {
                    self.host_log(
                        logs::Level::Error,
                        &format!(
                            "the new code did not load; the previous version keeps serving: {e}"
                        ),
                        None,
                    );
                }
                Err(e)
            }
        }
    }

    fn gone(&self, reason: &str) -> InvokeError {
        InvokeError::WorkerGone {
            container: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Spawns a worker, loads the code and makes it the live one. (Boxed: the reader
    /// task it starts may call it again to restart, which a plain async fn cannot.)
    fn spawn_worker(self: &Arc<Self>) -> BoxFuture<'_, Result<(), InvokeError>> {
        Box::pin(self.spawn_worker_inner())
    }

    async fn spawn_worker_inner(self: &Arc<Self>) -> Result<(), InvokeError> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (child, stream) =
            spawn::worker_process(self.limits.memory_bytes, self.limits.store_redis.as_deref())
                .map_err(|e| InvokeError::Spawn {
                    reason: e.to_string(),
                })?;
        let pid = child.id().unwrap_or(0);
        let (read, write) = stream.into_split();
        let to_worker = writer::WorkerWriter::start(write);
        let live = Arc::new(Live {
            generation,
            pid,
            to_worker,
            kill_reason: Mutex::new(None),
            replace: AtomicBool::new(false),
            outbound: Mutex::new(HashMap::new()),
            timed_out: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            exited: watch::Sender::new(false),
        });
        tokio::spawn(self.clone().read_frames(read, live.clone(), child));
        let (reply, verdict) = oneshot::channel();
        let load = Entry {
            waiter: Waiter::Load {
                reply,
                parked: Some(self.spec()),
            },
            sent_to: None,
            deadline: Some(Instant::now() + self.limits.handler_timeout),
            expired: false,
            bytes: 0,
            bounded: false,
        };
        let (_, earlier) = lock(&self.calls).add(load, Some(&live), &self.store_dir);
        if earlier {
            self.wake.notify_one();
        }
        let verdict = verdict
            .await
            .unwrap_or_else(|_| Err(self.gone("it exited while loading the code")));
        if let Err(e) = verdict {
            kill(&live, "its code did not load");
            return Err(e);
        }
        self.resume_sessions(&live);
        if !self.go_live(live.clone(), false) {
            kill(&live, "the container stopped while it was starting");
        }
        Ok(())
    }

    /// Makes `live` the worker that gets invocations (unless `only_if_none` and one
    /// already is, or the container stopped), first writing it every call parked
    /// meanwhile, oldest first: the `error` events for what a dead worker dropped,
    /// the events it never started, then what came while no worker was live.
    fn go_live(&self, live: Arc<Live>, only_if_none: bool) -> bool {
        let mut calls = lock(&self.calls);
        let done = self.go_live_locked(&mut calls, live, only_if_none);
        drop(calls);
        self.wake.notify_one();
        done
    }

    /// [`Self::go_live`] with the table already locked.
    fn go_live_locked(&self, calls: &mut Calls, live: Arc<Live>, only_if_none: bool) -> bool {
        if (only_if_none && calls.live.is_some()) || self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        calls.send_parked(&live, &self.store_dir, self.limits.handler_timeout);
        calls.live = Some(live);
        true
    }

    /// Tells the worker about every open session (a `resume` event each, no handler call).
    fn resume_sessions(&self, live: &Arc<Live>) {
        let all = self.wants_ws_events();
        let sessions = self.events.sessions_of(&self.name);
        let mut calls = lock(&self.calls);
        for info in sessions {
            if !all && info.handler.is_none() {
                continue;
            }
            let event = WsEvent {
                session: info.id.clone(),
                info: Some(info),
                kind: "resume".into(),
                ..WsEvent::default()
            };
            let entry = Entry {
                waiter: Waiter::Event(Inbound::Session(event)),
                sent_to: None,
                deadline: Some(Instant::now() + self.limits.handler_timeout),
                expired: false,
                bytes: 0,
                bounded: false,
            };
            calls.add(entry, Some(live), &self.store_dir);
        }
        drop(calls);
        self.wake.notify_one();
    }

    /// Whether the container's code listens to session events (`webSocketEvent`).
    pub fn wants_ws_events(&self) -> bool {
        self.ws_handler.load(Ordering::Relaxed)
    }

    /// Whether events of `session` still wait for or run in the worker: a closing
    /// session waits for them so the replies to what it received go out first.
    pub fn ws_busy(&self, session: &str) -> bool {
        lock(&self.calls).entries.values().any(
            |e| matches!(&e.waiter, Waiter::Event(Inbound::Session(ev)) if ev.session == session),
        )
    }

    /// The one deadline mechanism: sleeps until the nearest deadline of the table,
    /// then answers what ran out of time (504 for a request the worker has, 503 for
    /// one that never found a live worker) and checks whether the worker is stuck.
    async fn watch_deadlines(self: Arc<Self>) {
        loop {
            let (next, stuck) = {
                let mut calls = lock(&self.calls);
                if self.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let stuck = self.expire(&mut calls, Instant::now());
                let next = calls
                    .entries
                    .values()
                    .filter(|e| !e.expired)
                    .filter_map(|e| e.deadline)
                    .min();
                calls.watch_at = next;
                (next, stuck)
            };
            for (live, paused) in stuck {
                let sup = self.clone();
                tokio::spawn(async move { sup.check_stuck(&live, paused).await });
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Acts on every deadline that passed; returns the workers to check for a loop.
    ///
    /// A worker to check is paused here, under the table's lock and before any 504
    /// can reach a client, so a request sent right after one never lands behind a
    /// loop; it is paused once, by whoever starts its check.
    fn expire(&self, calls: &mut Calls, now: Instant) -> Vec<(Arc<Live>, bool)> {
        let due: Vec<u64> = calls
            .entries
            .iter()
            .filter(|(_, e)| !e.expired && e.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        let mut stuck: Vec<Arc<Live>> = Vec::new();
        let mut suspect = |live: Arc<Live>| {
            if !stuck.iter().any(|l| l.generation == live.generation) {
                stuck.push(live);
            }
        };
        for id in due {
            let Some(entry) = calls.entries.get_mut(&id) else {
                continue;
            };
            if let Waiter::Event(_) = entry.waiter {
                // It stays until acknowledged; the stuck check decides the rest.
                entry.expired = true;
                if let Some(live) = entry.sent_to.clone() {
                    suspect(live);
                }
                continue;
            }
            let Some(entry) = calls.remove(id) else {
                continue;
            };
            let error = match &entry.sent_to {
                Some(_) => InvokeError::TimedOut {
                    container: self.name.clone(),
                },
                None => InvokeError::NotReady,
            };
            match entry.waiter {
                Waiter::Http { parts, .. } => {
                    let _ = parts.send(Part::Failed(error));
                    if let Some(live) = entry.sent_to {
                        suspect(live);
                    }
                }
                Waiter::Load { reply, .. } => {
                    let _ = reply.send(Err(error));
                    // Code still loading past the deadline is not trusted to serve.
                    if let Some(live) = entry.sent_to {
                        if calls.is_live(live.generation) {
                            calls.live = None;
                            live.replace.store(true, Ordering::Relaxed);
                            live.timed_out.store(true, Ordering::Relaxed);
                        }
                        kill(&live, "loading the code overran the handler timeout");
                    }
                }
                Waiter::Event(_) | Waiter::Ping(_) => {}
            }
        }
        stuck
            .into_iter()
            .filter(|live| !live.checking.swap(true, Ordering::Relaxed))
            .map(|live| {
                let paused = calls.is_live(live.generation);
                if paused {
                    calls.live = None;
                    live.replace.store(true, Ordering::Relaxed);
                }
                (live, paused)
            })
            .collect()
    }

    /// A worker exited: answer its leftovers and replace it (unless stopped).
    async fn worker_gone(self: &Arc<Self>, live: &Arc<Live>, reason: &str, cause: logs::Cause) {
        abort_outbound(live);
        let error = self.gone(reason);
        let was_current = {
            let mut calls = lock(&self.calls);
            let same = calls.is_live(live.generation);
            if same {
                calls.live = None;
            }
            let mine: Vec<u64> = calls
                .entries
                .iter()
                .filter(|(_, e)| e.sent_to_gen(live.generation))
                .map(|(id, _)| *id)
                .collect();
            // The oldest unanswered event is the one the worker died on: its session
            // gets an `error` event. The worker never started the ones behind it:
            // they wait, in order, for the next worker.
            let mut culprit = true;
            for id in mine {
                if let Some(entry) = calls.entries.get_mut(&id) {
                    if let Waiter::Event(event) = &entry.waiter {
                        if culprit {
                            entry.waiter = Waiter::Event(event.dropped());
                            culprit = false;
                        }
                        entry.sent_to = None;
                        entry.deadline = None;
                        entry.expired = false;
                        continue;
                    }
                }
                match calls.remove(id).map(|e| e.waiter) {
                    Some(Waiter::Http { parts, .. }) => {
                        let _ = parts.send(Part::Failed(error.clone()));
                    }
                    Some(Waiter::Load { reply, .. }) => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    _ => {}
                }
            }
            same
        };
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

    /// Pings the worker; one that does not answer at once is stuck in a loop and is
    /// killed (a replacement starts). New invocations are parked meanwhile rather
    /// than queued behind a loop.
    /// `paused`: the watcher took it out of service for the check (it was live).
    async fn check_stuck(&self, live: &Arc<Live>, paused: bool) {
        let (tx, rx) = oneshot::channel();
        let ping = {
            let mut calls = lock(&self.calls);
            let ping = Entry {
                waiter: Waiter::Ping(tx),
                sent_to: None,
                deadline: None,
                expired: false,
                bytes: 0,
                bounded: false,
            };
            calls.add(ping, Some(live), &self.store_dir).0
        };
        if matches!(tokio::time::timeout(PING_GRACE, rx).await, Ok(Ok(()))) {
            let mut calls = lock(&self.calls);
            // Under the lock the watcher decides under: a deadline that passes from
            // here on starts a check of its own.
            live.checking.store(false, Ordering::Relaxed);
            if paused {
                let back = self.go_live_locked(&mut calls, live.clone(), true);
                live.replace.store(!back, Ordering::Relaxed);
            }
            drop(calls);
            self.wake.notify_one();
            return;
        }
        lock(&self.calls).remove(ping);
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
            let mut calls = lock(&self.calls);
            if calls.is_live(live.generation) {
                calls.live = None;
            }
        }
        kill(live, reason);
    }

    /// Stops the worker: every waiting call fails with [`InvokeError::Stopped`], the
    /// worker flushes its store and exits (killed if it does not within 5 s).
    pub async fn stop(&self) {
        let live = {
            let mut calls = lock(&self.calls);
            self.stopped.store(true, Ordering::Relaxed);
            for entry in calls.drain() {
                match entry.waiter {
                    Waiter::Http { parts, .. } => {
                        let _ = parts.send(Part::Failed(InvokeError::Stopped));
                    }
                    Waiter::Load { reply, .. } => {
                        let _ = reply.send(Err(InvokeError::Stopped));
                    }
                    Waiter::Event(_) | Waiter::Ping(_) => {}
                }
            }
            calls.live.take()
        };
        self.wake.notify_one();
        self.events.on_stopped(&self.name);
        self.clients.close_all();
        let Some(live) = live else {
            return;
        };
        abort_outbound(&live);
        let _ = live.to_worker.send(ToWorker::Shutdown);
        let mut exited = live.exited.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|gone| *gone));
        if waited.await.is_err() {
            kill(&live, "it did not stop in time");
        }
    }
}

/// What an HTTP request counts against the queue's byte limit.
fn request_bytes(request: &HttpRequest) -> usize {
    let headers: usize = request.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    request.body.len() + request.url.len() + headers
}

/// What a session or client event counts against the queue's byte limit.
fn event_bytes(message: Option<&str>) -> usize {
    64 + message.map_or(0, str::len)
}

impl ClientEvents for Supervisor {
    fn client_event(&self, event: ClientEvent) {
        let bytes = event_bytes(event.message.as_deref());
        if let Err(e @ InvokeError::Busy { .. }) =
            self.submit(Waiter::Event(Inbound::Client(event)), bytes, true)
        {
            tracing::warn!(container = %self.name, "outbound client event dropped: {e}");
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
