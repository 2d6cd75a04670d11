//! Every Redis key and channel the cluster uses, in one place, so docs/cluster.md and
//! the code cannot drift apart (the shared store's keys, `mimhost:store:{NAME}:…`,
//! are `StoreKeys` in `store/redis_store.rs`, next to the scripts that use them). mimhost's own names start with `mimhost:`; Mesa's
//! (`ws`, `connected_clients`, `undelivered_messages`) are spelled exactly as
//! `@cryb/mesa` 1.5.8 spells them.

/// The prefix of every per-container delivery channel (`mimhost:c:<container>`).
pub const CONTAINER_CHANNEL_PREFIX: &str = "mimhost:c:";

/// The channel carrying one container's deliveries between nodes.
pub fn container_channel(container: &str) -> String {
    format!("{CONTAINER_CHANNEL_PREFIX}{container}")
}

/// The channel carrying operations on one node's sessions (`send`, `close`, replies…
/// addressed to a session id that carries that node's id).
pub fn node_channel(node: &str) -> String {
    format!("mimhost:n:{node}")
}

/// Whether `channel` carries mimhost's own deliveries (a container's or a node's).
pub fn is_delivery_channel(channel: &str) -> bool {
    channel.starts_with(CONTAINER_CHANNEL_PREFIX) || channel.starts_with("mimhost:n:")
}

/// Mesa's name for `prefix` in `namespace`: `prefix` alone for the default (empty)
/// namespace, else `prefix_<namespace>` (as Mesa's `clientNamespace`).
pub fn mesa_name(prefix: &str, namespace: &str) -> String {
    if namespace.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}_{namespace}")
    }
}

/// Mesa's pub/sub channel of a namespace (`ws` or `ws_<namespace>`).
pub fn mesa_channel(namespace: &str) -> String {
    mesa_name("ws", namespace)
}

/// The namespace a Mesa channel belongs to (`ws` → "", `ws_x` → "x").
pub fn namespace_of_mesa_channel(channel: &str) -> Option<&str> {
    if channel == "ws" {
        Some("")
    } else {
        channel.strip_prefix("ws_")
    }
}

/// Mesa's set of connected client ids of a namespace.
pub fn connected_clients(namespace: &str) -> String {
    mesa_name("connected_clients", namespace)
}

/// Mesa's hash of messages kept for client ids that were not connected.
pub fn undelivered_messages(namespace: &str) -> String {
    mesa_name("undelivered_messages", namespace)
}

/// The sorted set of sessions (scored by expiry, ms) holding a client id in a
/// namespace: Mesa's set has no count, this is mimhost's.
pub fn holders(namespace: &str, client_id: &str) -> String {
    format!("mimhost:holders:{namespace}:{client_id}")
}

/// The sorted set of a container's sessions on every node (scored by expiry, ms).
pub fn sessions(container: &str) -> String {
    format!("mimhost:sessions:{{{container}}}")
}

/// The sorted set of a group's member sessions on every node (scored by expiry, ms).
pub fn group(container: &str, group: &str) -> String {
    format!("mimhost:group:{{{container}}}:{group}")
}

/// The sorted set of live nodes (member = node id, scored by expiry, ms).
pub const NODES: &str = "mimhost:nodes";

/// The set of Mesa namespaces in which some mimhost session ever bound a client id:
/// survivors reap a dead node's ids in every one of them, not only in those they use.
pub const MESA_NAMESPACES: &str = "mimhost:mesa:namespaces";
