//! Several nodes on one Redis behaving as one host (SPEC 8).
//!
//! [`Cluster`] is this node's handle on Redis: a command connection (a
//! `ConnectionManager`, made lazily so a node starts even when Redis is down), a
//! subscriber connection this module supervises itself ([`link`]: reconnect with
//! back-off 250 ms → 5 s, resubscribe, then everyone watching [`Cluster::watch_up`]
//! reconciles), and one ordered queue of jobs that talk to Redis ([`Cluster::enqueue`])
//! so that what one invocation asks for reaches Redis in the order it asked.
//!
//! Delivery between nodes is in [`backplane`], global groups, sessions and client ids
//! in [`presence`], Mesa's own protocol in [`mesa`], every key and channel in [`keys`].

pub mod backplane;
pub mod deploys;
pub mod keys;
mod link;
pub mod mesa;
pub mod presence;

use crate::hub::Hub;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Most jobs waiting for Redis; more are dropped and counted (never block a sender).
const JOB_QUEUE: usize = 65_536;
/// Most messages from other nodes waiting for one container; more are dropped and counted.
const INBOUND_QUEUE: usize = 16_384;
/// How long one Redis command may take before it counts as failed (generous: a
/// loaded machine must not pass for a lost Redis; a stopped one fails at once).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `--cluster` URL is not a Redis URL.
    #[error("--cluster {url:?} is not a Redis URL (redis://[user:pass@]HOST:PORT[/DB]): {source}")]
    Url {
        /// The URL given (password left out).
        url: String,
        /// Why the redis crate refused it.
        source: redis::RedisError,
    },
}

/// One job for Redis, run in queue order on the command connection.
pub type Job = Box<dyn FnOnce(ConnectionManager) -> BoxFuture<'static, ()> + Send>;

/// The cluster's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages published for other nodes.
    pub published: AtomicU64,
    /// Messages received from other nodes (own echoes not counted).
    pub received: AtomicU64,
    /// Own messages that came back and were ignored.
    pub echoes: AtomicU64,
    /// Jobs or inbound messages dropped (queue full, Redis down, or a failed command).
    pub dropped: AtomicU64,
}

/// A channel someone else (deploys, storage) asked to hear: what arrives on it goes to
/// `to`, dropped and counted when `to` is full.
struct Listener {
    channel: String,
    to: mpsc::Sender<Vec<u8>>,
}

/// This node's handle on the cluster.
pub struct Cluster {
    node_id: String,
    client: redis::Client,
    commands: ConnectionManager,
    up: watch::Sender<bool>,
    /// The counters `/metrics` shows.
    pub stats: ClusterStats,
    jobs: mpsc::Sender<Job>,
    jobs_rx: Mutex<Option<mpsc::Receiver<Job>>>,
    listeners: Mutex<Vec<Listener>>,
    listeners_changed: Notify,
    hub: OnceLock<Weak<Hub>>,
    directory: OnceLock<Box<dyn Directory>>,
    inbound: Mutex<HashMap<String, mpsc::Sender<backplane::Inbound>>>,
}

/// What the cluster needs to know of this node's containers: which there are (their
/// channels are subscribed) and each one's Mesa namespace (its env `MESA_NAMESPACE`,
/// else its name).
pub trait Directory: Send + Sync + 'static {
    /// The containers this node runs.
    fn containers(&self) -> Vec<String>;
    /// The Mesa namespace of `container`.
    fn namespace(&self, container: &str) -> String;
}

impl Cluster {
    /// A handle for node `node_id` on the Redis at `url`. Nothing is connected yet and
    /// nothing fails when Redis is down: [`Cluster::start`] joins when it can.
    pub fn new(url: &str, node_id: &str) -> Result<Arc<Self>, ClusterError> {
        let url_error = |source| ClusterError::Url {
            url: redact(url),
            source,
        };
        let client = redis::Client::open(url).map_err(url_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(5));
        let commands =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(url_error)?;
        let (jobs, jobs_rx) = mpsc::channel(JOB_QUEUE);
        Ok(Arc::new(Self {
            node_id: node_id.to_string(),
            client,
            commands,
            up: watch::channel(false).0,
            stats: ClusterStats::default(),
            jobs,
            jobs_rx: Mutex::new(Some(jobs_rx)),
            listeners: Mutex::default(),
            listeners_changed: Notify::new(),
            hub: OnceLock::new(),
            directory: OnceLock::new(),
            inbound: Mutex::default(),
        }))
    }

    /// Connects this node's hub and starts the subscriber, the job runner and the
    /// presence refresher. Call once, from inside the runtime, once the containers
    /// present at start are loaded (their channels are subscribed before the node
    /// counts as joined).
    pub fn start(self: &Arc<Self>, hub: &Arc<Hub>, directory: Box<dyn Directory>) {
        let _ = self.hub.set(Arc::downgrade(hub));
        let _ = self.directory.set(directory);
        if let Some(rx) = lock(&self.jobs_rx).take() {
            tokio::spawn(run_jobs(self.clone(), rx));
        }
        tokio::spawn(link::supervise(self.clone()));
        tokio::spawn(presence::refresh_loop(self.clone()));
    }

    /// This node's id (it is in every session id and every message this node publishes).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether Redis is reachable right now (subscribed and answering).
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Up/down transitions: `true` when the node has (re)joined Redis, `false` when it
    /// lost it. Whoever keeps state in Redis reconciles on every `true`.
    pub fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// A clone of the command connection (multiplexed; it reconnects by itself).
    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Runs `job` on the command connection after every job queued before it. Dropped
    /// (and counted) when Redis is down or the queue is full; returns whether it was queued.
    pub fn enqueue(&self, job: Job) -> bool {
        if !self.is_up() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.jobs.try_send(job).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Publishes `payload` on `channel`, in queue order.
    pub fn publish(&self, channel: String, payload: Vec<u8>) -> bool {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.enqueue(Box::new(move |mut con| {
            Box::pin(async move {
                let _: Result<i64, _> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&payload)
                    .query_async(&mut con)
                    .await;
            })
        }))
    }

    /// Hears `channel` (subscribed now and after every reconnect): its messages go to
    /// the returned receiver, at most `capacity` waiting (more are dropped and counted).
    pub fn listen(&self, channel: &str, capacity: usize) -> mpsc::Receiver<Vec<u8>> {
        let (to, rx) = mpsc::channel(capacity.max(1));
        lock(&self.listeners).push(Listener {
            channel: channel.to_string(),
            to,
        });
        self.listeners_changed.notify_one();
        rx
    }

    /// Prometheus text for the cluster.
    pub fn render_metrics(&self) -> String {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP mimhost_cluster_redis_up whether this node reaches the cluster's Redis\n\
             # TYPE mimhost_cluster_redis_up gauge\n\
             mimhost_cluster_redis_up {}\n\
             # HELP mimhost_cluster_published_total messages published for other nodes\n\
             # TYPE mimhost_cluster_published_total counter\n\
             mimhost_cluster_published_total {}\n\
             # HELP mimhost_cluster_received_total messages received from other nodes\n\
             # TYPE mimhost_cluster_received_total counter\n\
             mimhost_cluster_received_total {}\n\
             # HELP mimhost_cluster_echoes_total own messages received back and ignored\n\
             # TYPE mimhost_cluster_echoes_total counter\n\
             mimhost_cluster_echoes_total {}\n\
             # HELP mimhost_cluster_dropped_total cluster jobs or messages dropped (queue full or Redis down)\n\
             # TYPE mimhost_cluster_dropped_total counter\n\
             mimhost_cluster_dropped_total {}\n",
            u8::from(self.is_up()),
            get(&s.published),
            get(&s.received),
            get(&s.echoes),
            get(&s.dropped),
        )
    }

    /// The hub, while the host runs.
    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    /// The Mesa namespace of `container`.
    fn namespace(&self, container: &str) -> String {
        self.directory
            .get()
            .map_or_else(|| container.to_string(), |d| d.namespace(container))
    }

    /// This node's containers in Mesa namespace `namespace` (deploys are global, so
    /// only drop-ins another node has alone are missing).
    fn containers_in(&self, namespace: &str) -> Vec<String> {
        self.directory.get().map_or_else(Vec::new, |d| {
            d.containers()
                .into_iter()
                .filter(|c| d.namespace(c) == namespace)
                .collect()
        })
    }

    /// Every channel this node must hear now: its own, each of its containers' and
    /// their Mesa namespaces', and what others asked for with [`Cluster::listen`].
    fn wanted_channels(&self) -> std::collections::BTreeSet<String> {
        let mut wanted = std::collections::BTreeSet::new();
        wanted.insert(keys::node_channel(&self.node_id));
        if let Some(directory) = self.directory.get() {
            for container in directory.containers() {
                wanted.insert(keys::mesa_channel(&directory.namespace(&container)));
                wanted.insert(keys::container_channel(&container));
            }
        }
        wanted.extend(lock(&self.listeners).iter().map(|l| l.channel.clone()));
        wanted
    }

    fn set_up(&self, up: bool) -> bool {
        self.up.send_if_modified(|v| std::mem::replace(v, up) != up)
    }
}

/// Runs queued jobs one after another, each bounded by a timeout.
async fn run_jobs(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        if !cluster.is_up() {
            cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let work = job(cluster.commands());
        if tokio::time::timeout(COMMAND_TIMEOUT * 2, work)
            .await
            .is_err()
        {
            cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch (presence scores).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn session_ids_name_their_node() {
        use crate::hub::node_of_session;
        assert_eq!(node_of_session("n-1-19a2b-3f"), Some("n-1"));
        assert_eq!(
            node_of_session("node-ab12cd34-19a2b-0"),
            Some("node-ab12cd34")
        );
        assert_eq!(node_of_session("alice"), None);
        assert_eq!(node_of_session("-1-2"), None);
        assert_eq!(node_of_session("a-b-zz"), None);
    }

    #[test]
    fn a_bad_url_is_a_typed_error() {
        assert!(matches!(
            Cluster::new("http://nope", "n1"),
            Err(ClusterError::Url { .. })
        ));
    }
}
