//! Delivery between nodes: the hub delivers to its own sessions, then the cluster
//! publishes one message on the container's channel with this node's id; every other
//! node hands it to that container's inbound queue, and a task per container applies
//! it to its own sessions. A node's own echo is dropped, so each session gets a
//! message exactly once; one publisher (the job queue) and one applier per container
//! keep the order one invocation issued.

use super::{keys, lock, presence, Cluster, INBOUND_QUEUE};
use crate::hub::{Backplane, MesaDispatch, PresenceChange};
use mimhost_bindings::{WsAnswer, WsOp, WsQuery};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What one node asks the others to do with their sessions of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Remote {
    /// Frames for the dispatch channel (5.1).
    Dispatch(Vec<String>),
    /// A websocket operation (send, group send, close, reply, setClientId…).
    Op(WsOp),
}

/// The message on a container's or a node's channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The node that published it.
    node: String,
    /// The container whose sessions it is for.
    container: String,
    /// What to do.
    remote: Remote,
}

/// What waits in a container's (or a Mesa namespace's) inbound queue.
#[derive(Debug)]
pub enum Inbound {
    /// A delivery for one container's sessions.
    Container(Remote),
    /// A Mesa message for one namespace's sessions.
    Mesa(super::mesa::MesaMessage),
}

impl Cluster {
    /// Publishes `remote` on `channel` (a container's, or the node's that holds the
    /// session it addresses).
    fn publish_remote(&self, channel: String, container: &str, remote: Remote) {
        let envelope = Envelope {
            node: self.node_id.clone(),
            container: container.to_string(),
            remote,
        };
        match serde_json::to_vec(&envelope) {
            Ok(payload) => {
                self.publish(channel, payload);
            }
            Err(e) => tracing::warn!(container, "cluster message not encodable: {e}"),
        }
    }

    /// Queues `inbound` for the applier of `queue` (made on first use); drops and counts
    /// when that queue is full, so the subscriber never waits.
    pub(super) fn hand_over(self: &Cluster, queue: &str, inbound: Inbound) {
        let mut queues = lock(&self.inbound);
        let sender = queues.entry(queue.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            tokio::spawn(apply_loop(self.hub.get().cloned(), queue.to_string(), rx));
            tx
        });
        if sender.try_send(inbound).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A message that arrived on a container's or this node's channel.
pub(super) fn receive(cluster: &Cluster, payload: &[u8]) {
    let envelope: Envelope = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("unreadable cluster message ignored: {e}");
            return;
        }
    };
    let container = envelope.container.as_str();
    if envelope.node == cluster.node_id {
        cluster.stats.echoes.fetch_add(1, Ordering::Relaxed);
        return;
    }
    cluster.stats.received.fetch_add(1, Ordering::Relaxed);
    let has_sessions = cluster
        .hub()
        .is_some_and(|hub| hub.open_sessions(container) > 0);
    if has_sessions {
        cluster.hand_over(container, Inbound::Container(envelope.remote));
    }
}

/// Applies what arrives for one queue, in order.
async fn apply_loop(
    hub: Option<std::sync::Weak<crate::hub::Hub>>,
    queue: String,
    mut rx: mpsc::Receiver<Inbound>,
) {
    while let Some(inbound) = rx.recv().await {
        let Some(hub) = hub.as_ref().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        match inbound {
            Inbound::Container(Remote::Dispatch(frames)) => hub.dispatch_local(&queue, &frames),
            Inbound::Container(Remote::Op(op)) => hub.apply_remote(&queue, op),
            Inbound::Mesa(message) => super::mesa::deliver(&hub, &message),
        }
    }
}

/// The cluster as the hub's door to other nodes.
pub struct ClusterBackplane(pub Arc<Cluster>);

impl Backplane for ClusterBackplane {
    fn publish_dispatch(&self, container: &str, frames: &[String]) {
        self.0.publish_remote(
            keys::container_channel(container),
            container,
            Remote::Dispatch(frames.to_vec()),
        );
    }

    fn publish_op(&self, container: &str, op: &WsOp) {
        // An operation on one session goes to the node its id names; the rest to
        // every node serving the container.
        let channel = match op {
            WsOp::Reply { session, .. }
            | WsOp::Send { session, .. }
            | WsOp::Close { session, .. }
            | WsOp::AddToGroup { session, .. }
            | WsOp::RemoveFromGroup { session, .. }
            | WsOp::SetClientId { session, .. } => crate::hub::node_of_session(session)
                .map_or_else(|| keys::container_channel(container), keys::node_channel),
            _ => keys::container_channel(container),
        };
        self.0
            .publish_remote(channel, container, Remote::Op(op.clone()));
    }

    fn presence(&self, container: &str, change: PresenceChange) {
        presence::change(&self.0, container, change);
    }

    fn query(&self, container: &str, query: &WsQuery) -> Option<WsAnswer> {
        presence::query(&self.0, container, query)
    }

    fn mesa_dispatch(&self, dispatch: &MesaDispatch<'_>) {
        super::mesa::dispatch(&self.0, dispatch);
    }

    fn mesa_containers(&self, container: &str, namespace: Option<&str>) -> Vec<String> {
        let namespace = namespace.map_or_else(|| self.0.namespace(container), str::to_string);
        self.0.containers_in(&namespace)
    }

    fn namespace(&self, container: &str) -> String {
        self.0.namespace(container)
    }

    fn is_clustered(&self) -> bool {
        true
    }
}
