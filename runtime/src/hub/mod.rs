//! The registry of WebSocket sessions, groups and client ids, and the one fan-out path
//! every send goes through (dispatch channel, `send`, `sendToGroup`, `sendToAll`,
//! replies).
//!
//! A frame is encoded once into `Bytes` and the same bytes are queued for every
//! recipient. Each session has a bounded queue drained by its own task; a session
//! whose queue is full is closed with 1008 and counted, and never slows a sender.
//! What crosses nodes goes through a [`Backplane`]; [`LocalBackplane`] is the
//! single-node one.

mod session;
mod set;

pub use session::{wake, Outgoing, SessionHandle, SessionKind};

use set::SessionSet;

use crate::frame::{binary_frame, close, text_frame};
use crate::supervisor::WorkerEvents;
use base64::Engine;
use bytes::Bytes;
use mimhost_bindings::{SessionInfo, WsAnswer, WsOp, WsQuery};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The frame a mim's message becomes: text, or (`binary`) the bytes its base64 holds.
/// None, logged, when the base64 is broken (only a broken worker sends that).
fn data_frame(container: &str, text: &str, binary: bool) -> Option<Bytes> {
    if !binary {
        return Some(text_frame(text));
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) => Some(binary_frame(&bytes)),
        Err(e) => {
            tracing::warn!(container, "binary message with broken base64 dropped: {e}");
            None
        }
    }
}

/// A metric family: name, kind, help, and how to read it off a container's counters.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&HubStats) -> u64,
);

/// WebSocket counters of one container (shared by its sessions), for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Sessions accepted since start.
    pub sessions_opened: AtomicU64,
    /// Frames queued for sessions.
    pub frames_sent: AtomicU64,
    /// Frames dropped because their session's queue was full.
    pub frames_dropped: AtomicU64,
    /// Sessions closed 1008 for falling behind.
    pub slow_closed: AtomicU64,
}

/// Carries hub traffic between nodes. The local one has nothing to carry.
pub trait Backplane: Send + Sync + 'static {
    /// Frames for a container's dispatch channel were delivered locally; other nodes
    /// should deliver them to their sessions too.
    fn publish_dispatch(&self, container: &str, frames: &[String]);

    /// An operation other nodes must apply to their own sessions (a group or
    /// everyone-send delivered here already, or an operation on a session this node
    /// does not have).
    fn publish_op(&self, _container: &str, _op: &WsOp) {}

    /// One of this node's sessions changed what others can see of it (groups,
    /// client ids, existence).
    fn presence(&self, _container: &str, _change: PresenceChange) {}

    /// A question only the whole cluster can answer; None: answer from this node.
    fn query(&self, _container: &str, _query: &WsQuery) -> Option<WsAnswer> {
        None
    }

    /// A Mesa dispatch delivered here already (`recipients` with exclusions applied,
    /// or `["*"]`) for the other nodes and Mesa servers, keeping (`sync`) what no
    /// session anywhere can take. `namespace`: the Dispatcher's option, else None.
    fn mesa_dispatch(&self, _: &MesaDispatch<'_>) {}

    /// The containers of this node a Mesa dispatch of `container`'s code reaches:
    /// every one in `namespace` (the Dispatcher's option), else in its own (SPEC 6).
    fn mesa_containers(&self, container: &str, _namespace: Option<&str>) -> Vec<String> {
        vec![container.to_string()]
    }

    /// The Mesa namespace of `container` (SPEC 6: env `MESA_NAMESPACE`, else its
    /// name): what Mesa sync keeps is kept per namespace.
    fn namespace(&self, container: &str) -> String {
        container.to_string()
    }

    /// Whether other nodes exist (then sync keeping and session lookups go through it).
    fn is_clustered(&self) -> bool {
        false
    }
}

/// One Mesa dispatch of a container's code, for the backplane.
#[derive(Debug, Clone, Copy)]
pub struct MesaDispatch<'a> {
    /// The container whose code dispatched.
    pub container: &'a str,
    /// The Dispatcher's `namespace` option (None: the container's namespace).
    pub namespace: Option<&'a str>,
    /// The `{"op","d","t"}` frame.
    pub text: &'a str,
    /// Client ids with exclusions applied, or `["*"]`.
    pub recipients: &'a [String],
    /// Keep what no session anywhere can take (Mesa sync).
    pub sync: bool,
}

/// A change of one local session that the cluster records.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceChange {
    /// The session opened.
    Opened {
        /// Session id.
        session: String,
    },
    /// The session closed, leaving these groups and this client id.
    Closed {
        /// Session id.
        session: String,
        /// The groups it was in.
        groups: Vec<String>,
        /// The client id it had bound, if any.
        client: Option<String>,
    },
    /// The session joined a group.
    Joined {
        /// Group name.
        group: String,
        /// Session id.
        session: String,
    },
    /// The session left a group.
    Left {
        /// Group name.
        group: String,
        /// Session id.
        session: String,
    },
    /// The session bound a client id (replacing `previous`).
    Bound {
        /// Session id.
        session: String,
        /// The client id bound.
        client: String,
        /// The client id it had before, if any.
        previous: Option<String>,
    },
}

/// What the cluster refreshes for one local session.
#[derive(Debug, Clone)]
pub struct SessionPresence {
    /// Its container.
    pub container: String,
    /// Its id.
    pub session: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its bound client id, if any.
    pub client: Option<String>,
}

/// The node a session id names (ids are `<node>-<start>-<n>`, see
/// [`Hub::new_session_id`]); None for anything else.
pub fn node_of_session(id: &str) -> Option<&str> {
    let mut parts = id.rsplitn(3, '-');
    let n = parts.next()?;
    let started = parts.next()?;
    let node = parts.next()?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(n) && hex(started) && !node.is_empty()).then_some(node)
}

/// The single-node backplane: nothing crosses nodes, but Mesa namespaces still span
/// this node's containers (SPEC 6), so it knows them once the host gives it its
/// [`crate::cluster::Directory`].
#[derive(Default)]
pub struct LocalBackplane {
    directory: std::sync::OnceLock<Box<dyn crate::cluster::Directory>>,
}

impl LocalBackplane {
    /// Gives it this node's containers and their namespaces (once).
    pub fn set_directory(&self, directory: Box<dyn crate::cluster::Directory>) {
        let _ = self.directory.set(directory);
    }
}

impl Backplane for LocalBackplane {
    fn publish_dispatch(&self, _: &str, _: &[String]) {}

    fn mesa_containers(&self, container: &str, namespace: Option<&str>) -> Vec<String> {
        let Some(d) = self.directory.get() else {
            return vec![container.to_string()];
        };
        let namespace = namespace.map_or_else(|| d.namespace(container), str::to_string);
        d.containers()
            .into_iter()
            .filter(|c| d.namespace(c) == namespace)
            .collect()
    }

    fn namespace(&self, container: &str) -> String {
        self.directory
            .get()
            .map_or_else(|| container.to_string(), |d| d.namespace(container))
    }
}

#[derive(Default)]
struct HubState {
    /// Every open session by id.
    sessions: SessionSet,
    /// Container -> its sessions on the dispatch channel.
    channels: HashMap<String, SessionSet>,
    /// Container -> all of its sessions.
    by_container: HashMap<String, SessionSet>,
    /// (container, group) -> member session ids, in a stable order.
    groups: HashMap<(String, String), BTreeSet<String>>,
    /// (container, client id) -> sessions bound to it with `setClientId`.
    clients: HashMap<(String, String), BTreeSet<String>>,
    /// (Mesa namespace, client id) -> frames kept for a client id not connected
    /// (Mesa sync), for the first session of any container of the namespace to bind it.
    kept: HashMap<(String, String), Vec<Bytes>>,
}

/// The longest a session's window may grow for a large broadcast.
const MAX_WINDOW: Duration = Duration::from_secs(1);

/// How sessions let frames gather between writes (set from the host's flags).
#[derive(Debug, Clone, Copy)]
pub struct WindowSettings {
    /// `--ws-coalesce`: a session's first window after a write; zero turns windows off.
    pub start: Duration,
    /// `--ws-coalesce-frames`: frames per write a window aims at (0: fixed windows).
    pub frames: u32,
    /// `--ws-coalesce-per-session`: how much longer a window may grow per recipient of
    /// the latest broadcast.
    pub per_session: Duration,
    /// Whether sessions end their windows at different points of its second half
    /// (so a broadcast's sessions do not all wake in one timer tick).
    pub spread: bool,
}

/// What a session's window may be now (see [`Hub::window`]).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The first window after a write (zero: no windows).
    pub start: Duration,
    /// The longest it may grow to.
    pub max: Duration,
    /// Frames per write aimed at (0: always `start`).
    pub target: u32,
    /// Whether to spread window ends.
    pub spread: bool,
}

/// Most frames kept for one client id that is not connected (Mesa sync).
const MAX_KEPT_PER_CLIENT: usize = 1024;

/// Sessions, groups and fan-out of this node.
pub struct Hub {
    state: RwLock<HubState>,
    backplane: Arc<dyn Backplane>,
    node_id: String,
    started: u64,
    counter: AtomicU64,
    stats: RwLock<HashMap<String, Arc<HubStats>>>,
    /// Woken when the last session goes (a stopping host waits for it).
    emptied: tokio::sync::Notify,
    /// Each container's recent log lines: workers report through the hub (it is
    /// their [`WorkerEvents`]), the MCM API and the console read them here.
    pub logs: Arc<crate::logs::LogBook>,
    /// How sessions let a burst's frames gather between writes (see [`Hub::window`]).
    windows: WindowSettings,
    /// Recipients of the latest broadcast (dispatch, `sendToAll`, `sendToGroup`).
    fanout: AtomicU64,
}

impl Hub {
    /// An empty hub for node `node_id`, whose sessions pace their writes by `windows`.
    pub fn new(node_id: &str, backplane: Arc<dyn Backplane>, windows: WindowSettings) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            state: RwLock::default(),
            backplane,
            node_id: node_id.to_string(),
            started,
            counter: AtomicU64::new(0),
            stats: RwLock::default(),
            emptied: tokio::sync::Notify::new(),
            logs: Arc::default(),
            windows,
            fanout: AtomicU64::new(0),
        }
    }

    /// The window a session lets frames gather in after a write, so a burst's frames
    /// leave in one `writev` per window instead of one `write` each: it starts at
    /// `--ws-coalesce`, follows the rate frames come at, and may grow to
    /// `--ws-coalesce-per-session` × the recipients of the latest broadcast (at most
    /// 1 s), since writing each frame of a broadcast to N sessions alone costs about
    /// N × 7 µs of CPU and a frame waits about that long anyway when the host is
    /// short of it.
    pub fn window(&self) -> Window {
        let set = self.windows;
        let fanout = u32::try_from(self.fanout.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        let scaled = set.per_session.saturating_mul(fanout).min(MAX_WINDOW);
        Window {
            start: set.start,
            max: set.start.max(scaled),
            target: set.frames,
            spread: set.spread,
        }
    }

    /// Records how many sessions a broadcast reached.
    fn note_fanout(&self, recipients: usize) {
        self.fanout.store(recipients as u64, Ordering::Relaxed);
    }

    /// A session id unique across nodes (node id) and restarts (start time).
    pub fn new_session_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}-{:x}", self.node_id, self.started, n)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HubState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HubState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters of `container`, made on first use; sessions keep a reference.
    pub fn stats_for(&self, container: &str) -> Arc<HubStats> {
        if let Some(s) = self
            .stats
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(container)
        {
            return s.clone();
        }
        let mut all = self.stats.write().unwrap_or_else(|p| p.into_inner());
        all.entry(container.to_string()).or_default().clone()
    }

    /// Prometheus text for the WebSocket counters, per container.
    pub fn render_metrics(&self) -> String {
        let open: HashMap<String, usize> = self
            .read()
            .by_container
            .iter()
            .map(|(c, m)| (c.clone(), m.len()))
            .collect();
        let stats = self.stats.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = stats.keys().collect();
        names.sort();
        let mut out = crate::prom::Exposition::default();
        let families: [Family; 4] = [
            (
                "mimhost_ws_sessions_opened_total",
                "counter",
                "WebSocket sessions accepted",
                |s| s.sessions_opened.load(Ordering::Relaxed),
            ),
            (
                "mimhost_ws_frames_sent_total",
                "counter",
                "frames queued for sessions",
                |s| s.frames_sent.load(Ordering::Relaxed),
            ),
            (
                "mimhost_ws_frames_dropped_total",
                "counter",
                "frames dropped on full session queues",
                |s| s.frames_dropped.load(Ordering::Relaxed),
            ),
            (
                "mimhost_ws_slow_closed_total",
                "counter",
                "sessions closed 1008 for falling behind",
                |s| s.slow_closed.load(Ordering::Relaxed),
            ),
        ];
        out.family("mimhost_ws_sessions", "gauge", "open WebSocket sessions");
        for name in &names {
            let count = open.get(*name).copied().unwrap_or(0);
            out.sample("mimhost_ws_sessions", &[("container", name)], count);
        }
        for (metric, kind, help, get) in families {
            out.family(metric, kind, help);
            for name in &names {
                out.sample(metric, &[("container", name)], get(&stats[*name]));
            }
        }
        out.finish()
    }

    /// Adds an accepted session.
    pub fn register(&self, session: Arc<SessionHandle>) {
        session
            .stats
            .sessions_opened
            .fetch_add(1, Ordering::Relaxed);
        let mut st = self.write();
        let id = session.info.id.clone();
        let container = session.container.clone();
        if session.kind == SessionKind::Dispatch {
            st.channels
                .entry(container.clone())
                .or_default()
                .insert(session.clone());
        }
        st.by_container
            .entry(container.clone())
            .or_default()
            .insert(session.clone());
        st.sessions.insert(session);
        drop(st);
        self.backplane
            .presence(&container, PresenceChange::Opened { session: id });
    }

    /// Removes a closed session from everything, its groups included.
    pub fn unregister(&self, session: &SessionHandle) {
        let mut guard = self.write();
        let st = &mut *guard;
        let id = &session.info.id;
        st.sessions.remove(id);
        if st.sessions.is_empty() {
            self.emptied.notify_waiters();
        }
        for map in [&mut st.channels, &mut st.by_container] {
            if let Some(m) = map.get_mut(&session.container) {
                m.remove(id);
                if m.is_empty() {
                    map.remove(&session.container);
                }
            }
        }
        let client = session.bound_client_id();
        if let Some(client) = client.clone() {
            let key = (session.container.clone(), client);
            if let Some(ids) = st.clients.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    st.clients.remove(&key);
                }
            }
        }
        let groups = session.take_groups();
        for group in &groups {
            let key = (session.container.clone(), group.clone());
            if let Some(members) = st.groups.get_mut(&key) {
                members.remove(id);
                if members.is_empty() {
                    st.groups.remove(&key);
                }
            }
        }
        drop(guard);
        self.backplane.presence(
            &session.container,
            PresenceChange::Closed {
                session: id.clone(),
                groups,
                client,
            },
        );
    }

    /// Queues `frame` for `session`; a session that cannot take it is closed 1008.
    fn deliver(&self, session: &SessionHandle, frame: &Bytes) {
        self.deliver_all(session, std::slice::from_ref(frame));
    }

    /// Queues `frames` for `session` in one go; a session that cannot take them is
    /// closed 1008.
    fn deliver_all(&self, session: &SessionHandle, frames: &[Bytes]) {
        let count = frames.len() as u64;
        if session.enqueue(frames) {
            session
                .stats
                .frames_sent
                .fetch_add(count, Ordering::Relaxed);
        } else {
            session
                .stats
                .frames_dropped
                .fetch_add(count, Ordering::Relaxed);
            if session.close_slow() {
                session.stats.slow_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container = %session.container, session = %session.info.id,
                    "closed 1008: the client fell too far behind");
            }
        }
    }

    /// Sends each frame to every session on `container`'s dispatch channel, in order.
    pub fn dispatch(&self, container: &str, frames: &[String]) {
        self.dispatch_local(container, frames);
        self.backplane.publish_dispatch(container, frames);
    }

    /// Delivers dispatch frames to this node's sessions only.
    pub fn dispatch_local(&self, container: &str, frames: &[String]) {
        let st = self.read();
        let Some(members) = st.channels.get(container) else {
            return;
        };
        // Encoded once; then each session takes the whole batch under one lock and
        // one wake-up.
        let encoded: Vec<Bytes> = frames.iter().map(|text| text_frame(text)).collect();
        self.note_fanout(members.len());
        for session in members.values() {
            self.deliver_all(session, &encoded);
        }
    }

    /// Applies one WebSocket operation of `container`'s code: to this node's sessions,
    /// and through the backplane to the other nodes' (SPEC 8).
    pub fn apply(&self, container: &str, op: WsOp) {
        if !self.backplane.is_clustered() {
            return self.apply_local(container, op);
        }
        match &op {
            WsOp::Reply { session, .. }
            | WsOp::Send { session, .. }
            | WsOp::Close { session, .. }
            | WsOp::AddToGroup { session, .. }
            | WsOp::RemoveFromGroup { session, .. }
            | WsOp::SetClientId { session, .. } => {
                if self.session_of(container, session).is_none() {
                    // Another node's session: its node applies it.
                    self.backplane.publish_op(container, &op);
                    return;
                }
            }
            WsOp::SendToGroup { .. } | WsOp::SendToAll { .. } => {
                self.backplane.publish_op(container, &op);
            }
            WsOp::DispatchToClients {
                text,
                recipients,
                excluding,
                sync,
                namespace,
            } => {
                let everyone = recipients.iter().any(|r| r == "*");
                let targets: Vec<String> = if everyone {
                    vec!["*".to_string()]
                } else {
                    recipients
                        .iter()
                        .filter(|r| !excluding.contains(r))
                        .cloned()
                        .collect()
                };
                let locals = self
                    .backplane
                    .mesa_containers(container, namespace.as_deref());
                self.mesa_local(&locals, "", text, &targets, false);
                self.backplane.mesa_dispatch(&MesaDispatch {
                    container,
                    namespace: namespace.as_deref(),
                    text,
                    recipients: &targets,
                    sync: *sync,
                });
                return;
            }
        }
        self.apply_local(container, op);
    }

    /// Applies an operation another node published to this node's sessions.
    pub fn apply_remote(&self, container: &str, op: WsOp) {
        self.apply_local(container, op);
    }

    /// A Mesa message to this node's sessions of `containers` (one Mesa namespace,
    /// `namespace`): `op 5` `DISCONNECT_CLIENT` closes the recipients' sessions with
    /// 1000; with `sync`, what reaches no session is kept for the namespace.
    fn mesa_local(
        &self,
        containers: &[String],
        namespace: &str,
        text: &str,
        recipients: &[String],
        sync: bool,
    ) {
        let disconnect = text.starts_with("{\"op\":5")
            && serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|m| crate::cluster::mesa::is_disconnect(&m));
        if disconnect {
            for container in containers {
                self.disconnect_clients(container, recipients);
            }
        } else {
            let frame = text_frame(text);
            self.dispatch_to_clients(containers, namespace, &frame, recipients, sync);
        }
    }

    /// Applies one WebSocket operation to this node's sessions only.
    fn apply_local(&self, container: &str, op: WsOp) {
        match op {
            WsOp::Reply {
                session,
                body,
                end,
                binary,
            } => {
                if let Some(s) = self.session_of(container, &session) {
                    if let Some(frame) = body.and_then(|b| data_frame(container, &b, binary)) {
                        self.deliver(&s, &frame);
                    }
                    if end {
                        s.close(close::NORMAL, "");
                    }
                }
            }
            WsOp::Send {
                session,
                text,
                binary,
            } => {
                let Some(frame) = data_frame(container, &text, binary) else {
                    return;
                };
                if let Some(s) = self.session_of(container, &session) {
                    self.deliver(&s, &frame);
                }
            }
            WsOp::SendToGroup {
                group,
                text,
                binary,
            } => {
                let Some(frame) = data_frame(container, &text, binary) else {
                    return;
                };
                let st = self.read();
                let members = st.groups.get(&(container.to_string(), group));
                self.note_fanout(members.map_or(0, |m| m.len()));
                for id in members.into_iter().flatten() {
                    if let Some(s) = st.sessions.get(id) {
                        self.deliver(s, &frame);
                    }
                }
            }
            WsOp::SendToAll { text, binary } => {
                let Some(frame) = data_frame(container, &text, binary) else {
                    return;
                };
                let st = self.read();
                let all = st.by_container.get(container);
                self.note_fanout(all.map_or(0, SessionSet::len));
                for s in all.into_iter().flat_map(SessionSet::values) {
                    self.deliver(s, &frame);
                }
            }
            WsOp::AddToGroup { group, session } => {
                if let Some(s) = self.session_of(container, &session) {
                    s.join_group(&group);
                    self.write()
                        .groups
                        .entry((container.to_string(), group.clone()))
                        .or_default()
                        .insert(session.clone());
                    self.backplane
                        .presence(container, PresenceChange::Joined { group, session });
                }
            }
            WsOp::RemoveFromGroup { group, session } => {
                if let Some(s) = self.session_of(container, &session) {
                    s.leave_group(&group);
                    self.backplane.presence(
                        container,
                        PresenceChange::Left {
                            group: group.clone(),
                            session: session.clone(),
                        },
                    );
                }
                let mut st = self.write();
                let key = (container.to_string(), group);
                if let Some(members) = st.groups.get_mut(&key) {
                    members.remove(&session);
                    if members.is_empty() {
                        st.groups.remove(&key);
                    }
                }
            }
            WsOp::Close {
                session,
                code,
                reason,
            } => {
                if let Some(s) = self.session_of(container, &session) {
                    s.close(code, &reason);
                }
            }
            WsOp::SetClientId { session, client_id } => {
                self.bind_client(container, &session, client_id)
            }
            WsOp::DispatchToClients {
                text,
                recipients,
                excluding,
                sync,
                namespace,
            } => {
                let targets: Vec<String> = recipients
                    .into_iter()
                    .filter(|r| r == "*" || !excluding.contains(r))
                    .collect();
                let namespace = namespace.unwrap_or_else(|| self.backplane.namespace(container));
                let containers = self.backplane.mesa_containers(container, Some(&namespace));
                self.mesa_local(&containers, &namespace, &text, &targets, sync);
            }
        }
    }

    /// Binds `client_id` to a session (replacing an earlier binding) and hands it
    /// what was kept for that client id, in order.
    fn bind_client(&self, container: &str, session: &str, client_id: String) {
        let Some(s) = self.session_of(container, session) else {
            return;
        };
        let previous = s.bound_client_id();
        let namespace = self.backplane.namespace(container);
        let kept = {
            let mut st = self.write();
            if let Some(old) = previous.clone() {
                if let Some(ids) = st.clients.get_mut(&(container.to_string(), old)) {
                    ids.remove(session);
                }
            }
            st.clients
                .entry((container.to_string(), client_id.clone()))
                .or_default()
                .insert(session.to_string());
            st.kept
                .remove(&(namespace, client_id.clone()))
                .unwrap_or_default()
        };
        s.set_client_id(&client_id);
        for frame in &kept {
            self.deliver(&s, frame);
        }
        self.backplane.presence(
            container,
            PresenceChange::Bound {
                session: session.to_string(),
                client: client_id,
                previous,
            },
        );
    }

    /// Closes with 1000 the sessions of `container` holding one of `clients` (`*`:
    /// all): Mesa's `DISCONNECT_CLIENT`.
    pub fn disconnect_clients(&self, container: &str, clients: &[String]) {
        for s in self.client_sessions(container, clients) {
            s.close(close::NORMAL, "");
        }
    }

    /// A Mesa message (`{"op","d","t"}` text) to this node's sessions of `container`
    /// whose client id is in `clients` (`*`: all).
    pub fn deliver_to_clients(&self, container: &str, text: &str, clients: &[String]) {
        let frame = text_frame(text);
        for s in self.client_sessions(container, clients) {
            self.deliver(&s, &frame);
        }
    }

    /// The sessions of `container` holding one of `clients` (`*`: all of them); a
    /// session without a bound client id holds its own id.
    fn client_sessions(&self, container: &str, clients: &[String]) -> Vec<Arc<SessionHandle>> {
        let st = self.read();
        let Some(all) = st.by_container.get(container) else {
            return Vec::new();
        };
        if clients.iter().any(|c| c == "*") {
            return all.values().cloned().collect();
        }
        all.values()
            .filter(|s| {
                let id = s.bound_client_id().unwrap_or_else(|| s.info.id.clone());
                clients.contains(&id)
            })
            .cloned()
            .collect()
    }

    /// Closes one local session of `container` with 1000 (a kept Mesa
    /// `DISCONNECT_CLIENT`).
    pub fn disconnect_session(&self, container: &str, session: &str) {
        if let Some(s) = self.session_of(container, session) {
            s.close(close::NORMAL, "");
        }
    }

    /// One text frame to one local session of `container` (Mesa's kept messages).
    pub fn send_text(&self, container: &str, session: &str, text: &str) {
        if let Some(s) = self.session_of(container, session) {
            self.deliver(&s, &text_frame(text));
        }
    }

    /// Every local session with its groups and client id, for the cluster to refresh.
    pub fn presence_snapshot(&self) -> Vec<SessionPresence> {
        self.read()
            .sessions
            .values()
            .map(|s| SessionPresence {
                container: s.container.clone(),
                session: s.info.id.clone(),
                groups: s.groups(),
                client: s.bound_client_id(),
            })
            .collect()
    }

    /// The containers with sessions on this node.
    pub fn local_containers(&self) -> Vec<String> {
        self.read().by_container.keys().cloned().collect()
    }

    /// Mesa's dispatch: `frame` to every session of `containers` (one namespace)
    /// whose client id is in `recipients` (`*`: all of them); with `sync`, frames for
    /// client ids connected in none of them are kept under `namespace` for when one
    /// binds.
    fn dispatch_to_clients(
        &self,
        containers: &[String],
        namespace: &str,
        frame: &Bytes,
        recipients: &[String],
        sync: bool,
    ) {
        if recipients.iter().any(|r| r == "*") {
            let st = self.read();
            for s in containers
                .iter()
                .filter_map(|c| st.by_container.get(c))
                .flat_map(|m| m.values())
            {
                self.deliver(s, frame);
            }
            return;
        }
        let mut missing = Vec::new();
        {
            let st = self.read();
            for client in recipients {
                let mut reached = false;
                for container in containers {
                    let key = (container.clone(), client.clone());
                    let bound = st
                        .clients
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter_map(|id| st.sessions.get(id));
                    let unbound = st
                        .sessions
                        .get(client)
                        .filter(|s| &s.container == container && s.bound_client_id().is_none());
                    for s in bound.chain(unbound) {
                        self.deliver(s, frame);
                        reached = true;
                    }
                }
                if !reached && sync {
                    missing.push((namespace.to_string(), client.clone()));
                }
            }
        }
        if !missing.is_empty() {
            let mut st = self.write();
            for key in missing {
                let kept = st.kept.entry(key).or_default();
                if kept.len() < MAX_KEPT_PER_CLIENT {
                    kept.push(frame.clone());
                }
            }
        }
    }

    /// Answers a question of `container`'s code.
    pub fn query(&self, container: &str, query: WsQuery) -> WsAnswer {
        let local_session = matches!(&query, WsQuery::SessionExists(id)
            if self.session_of(container, id).is_some());
        if !local_session {
            if let Some(answer) = self.backplane.query(container, &query) {
                return answer;
            }
        }
        let st = self.read();
        let members = |group: String| st.groups.get(&(container.to_string(), group));
        match query {
            WsQuery::GroupSize(g) => WsAnswer::Size(members(g).map_or(0, |m| m.len() as u64)),
            WsQuery::SessionExists(id) => WsAnswer::Flag(
                st.sessions
                    .get(&id)
                    .is_some_and(|s| s.container == container),
            ),
            WsQuery::GroupMembers(g) => {
                WsAnswer::Members(members(g).map_or_else(Vec::new, |m| m.iter().cloned().collect()))
            }
        }
    }

    fn session_of(&self, container: &str, id: &str) -> Option<Arc<SessionHandle>> {
        self.read()
            .sessions
            .get(id)
            .filter(|s| s.container == container)
            .cloned()
    }

    /// The open sessions of `container` (for a restarted worker to learn them).
    pub fn sessions_of(&self, container: &str) -> Vec<SessionInfo> {
        self.read()
            .by_container
            .get(container)
            .map(|m| m.values().map(|s| s.full_info()).collect())
            .unwrap_or_default()
    }

    /// The open sessions of `container` as the MCM API lists them, oldest id first.
    pub fn session_views(&self, container: &str) -> Vec<serde_json::Value> {
        let mut sessions: Vec<Arc<SessionHandle>> = self
            .read()
            .by_container
            .get(container)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        sessions.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        sessions
            .iter()
            .map(|s| {
                let kind = match s.kind {
                    SessionKind::Dispatch => "dispatch",
                    SessionKind::Controller => "controller",
                    SessionKind::Endpoint => "endpoint",
                };
                let mut groups = s.groups();
                groups.sort();
                serde_json::json!({
                    "id": s.info.id,
                    "peer": s.info.peer,
                    "path": s.info.path,
                    "kind": kind,
                    "groups": groups,
                    "clientId": s.bound_client_id().unwrap_or_else(|| s.info.id.clone()),
                    "queuedFrames": s.queued_frames(),
                })
            })
            .collect()
    }

    /// How many sessions `container` has open.
    pub fn open_sessions(&self, container: &str) -> usize {
        self.read()
            .by_container
            .get(container)
            .map_or(0, |m| m.len())
    }

    /// Closes every session of `container` with `code` (container deleted: 1001).
    pub fn close_container(&self, container: &str, code: u16, reason: &str) {
        for s in self
            .read()
            .by_container
            .get(container)
            .into_iter()
            .flat_map(|m| m.values())
        {
            s.close(code, reason);
        }
    }

    /// Closes every session (host shutdown: 1001).
    pub fn close_all(&self, code: u16, reason: &str) {
        for s in self.read().sessions.values() {
            s.close(code, reason);
        }
    }

    /// Asks every session to ping its peer, or to close if the peer stayed silent
    /// since the last time (dead peers are reaped).
    pub fn ping_sessions(&self) {
        for s in self.read().sessions.values() {
            s.ping();
        }
    }

    /// Pings every session each `every` from one task for the whole node, so an idle
    /// session needs no timer of its own. Stops when the hub is dropped.
    pub fn start_pinger(self: &Arc<Self>, every: Duration) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match hub.upgrade() {
                    Some(hub) => hub.ping_sessions(),
                    None => break,
                }
            }
        });
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.read().sessions.len()
    }

    /// Resolves once no session is open (a stopping host awaits it after closing them).
    pub async fn all_closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.session_count() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl WorkerEvents for Hub {
    fn on_dispatch(&self, container: &str, frames: Vec<String>) {
        self.dispatch(container, &frames);
    }

    fn on_ws(&self, container: &str, op: WsOp) {
        self.apply(container, op);
    }

    fn on_query(&self, container: &str, query: WsQuery) -> WsAnswer {
        self.query(container, query)
    }

    fn sessions_of(&self, container: &str) -> Vec<SessionInfo> {
        Hub::sessions_of(self, container)
    }

    fn on_stopped(&self, container: &str) {
        self.close_container(container, close::GOING_AWAY, "container stopped");
        use crate::logs::{Level, Source};
        self.logs
            .push(container, Level::Info, Source::Host, "stopped", None);
        self.logs.close(container);
    }

    fn on_log(
        &self,
        container: &str,
        level: crate::logs::Level,
        source: crate::logs::Source,
        message: &str,
        cause: Option<crate::logs::Cause>,
    ) {
        self.logs.push(container, level, source, message, cause);
    }
}
