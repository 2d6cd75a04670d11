//! Mesa's own Redis protocol (SPEC 6), so the real `@cryb/mesa` Dispatcher reaches
//! mimhost's clients and mimhost's reaches Mesa servers' clients: the payload
//! `{"message":{op,d,t},"recipients":[…]}` on `ws[_<ns>]` (with extra `node` and
//! `container` fields Mesa ignores: a node drops its own echo, and applies another
//! node's dispatch in the same queue as that container's other operations, so one
//! invocation's deliveries keep their order, SPEC 8), `connected_clients[_<ns>]`,
//! `undelivered_messages[_<ns>]` appended by one Lua script, and `op 5`
//! `DISCONNECT_CLIENT` closing the id's sessions with 1000.

use super::backplane::Inbound;
use super::{keys, Cluster};
use crate::hub::{Hub, MesaDispatch};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Appends one message to the JSON array Mesa keeps for a client id, keeping every
/// byte of what was there (Mesa's own append is a read-modify-write; this is atomic).
const APPEND_UNDELIVERED: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if (not v) or v == '' or v == '[]' or string.sub(v, -1) ~= ']' then
  v = '[' .. ARGV[2] .. ']'
else
  v = string.sub(v, 1, -2) .. ',' .. ARGV[2] .. ']'
end
redis.call('HSET', KEYS[1], ARGV[1], v)
return 1
";

/// A Mesa message that arrived for this node's sessions.
#[derive(Debug)]
pub struct MesaMessage {
    /// This node's containers in the message's namespace.
    pub containers: Vec<String>,
    /// The frame sessions get (`{"op":…,"d":…,"t":…}`).
    pub text: String,
    /// Client ids, or `["*"]`.
    pub recipients: Vec<String>,
    /// An `op 5 DISCONNECT_CLIENT`: close the recipients' sessions with 1000.
    pub disconnect: bool,
}

/// Mesa's internal message as it travels on `ws[_<ns>]`.
#[derive(Deserialize)]
struct Wire {
    message: serde_json::Value,
    #[serde(default)]
    recipients: Vec<serde_json::Value>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    container: Option<String>,
}

/// Whether a Mesa message (as JSON text) is `op 5` `DISCONNECT_CLIENT`.
pub fn is_disconnect(message: &serde_json::Value) -> bool {
    message.get("op").and_then(serde_json::Value::as_u64) == Some(5)
        && message.get("t").and_then(serde_json::Value::as_str) == Some("DISCONNECT_CLIENT")
}

/// A message on `ws[_<namespace>]` from a Mesa server, a Mesa Dispatcher or a node.
pub(super) fn receive(cluster: &Cluster, namespace: &str, payload: &[u8]) {
    let wire: Wire = match serde_json::from_slice(payload) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(namespace, "unreadable Mesa message ignored: {e}");
            return;
        }
    };
    if wire.node.as_deref() == Some(cluster.node_id()) {
        cluster.stats.echoes.fetch_add(1, Ordering::Relaxed);
        return;
    }
    cluster.stats.received.fetch_add(1, Ordering::Relaxed);
    let Some(hub) = cluster.hub() else { return };
    let containers: Vec<String> = hub
        .local_containers()
        .into_iter()
        .filter(|c| cluster.namespace(c) == namespace)
        .collect();
    if containers.is_empty() {
        return;
    }
    let recipients = wire
        .recipients
        .iter()
        .map(|r| match r {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let message = MesaMessage {
        containers,
        text: frame_text(&wire.message),
        disconnect: is_disconnect(&wire.message),
        recipients,
    };
    // A mimhost node's dispatch joins its container's queue (ordered with that
    // container's other operations); a Mesa server's or Dispatcher's has its own.
    let queue = wire
        .container
        .unwrap_or_else(|| format!("\u{0}mesa:{namespace}"));
    cluster.hand_over(&queue, Inbound::Mesa(message));
}

/// The frame a client gets for a Mesa message: its `op`, `d` and `t` only (Mesa's
/// `Message.serialize`), whatever else a publisher put in it.
fn frame_text(message: &serde_json::Value) -> String {
    let mut frame = serde_json::Map::new();
    for field in ["op", "d", "t"] {
        if let Some(v) = message.get(field) {
            frame.insert(field.to_string(), v.clone());
        }
    }
    serde_json::Value::Object(frame).to_string()
}

/// Delivers a Mesa message to this node's sessions.
pub(super) fn deliver(hub: &Hub, message: &MesaMessage) {
    for container in &message.containers {
        if message.disconnect {
            hub.disconnect_clients(container, &message.recipients);
        } else {
            hub.deliver_to_clients(container, &message.text, &message.recipients);
        }
    }
}

/// What Mesa kept for a client id (a JSON array of messages), to the session that
/// just bound it, in order.
pub(super) fn deliver_kept(hub: &Hub, container: &str, session: &str, kept: &str) {
    match serde_json::from_str::<Vec<serde_json::Value>>(kept) {
        Ok(messages) => {
            for m in messages {
                if is_disconnect(&m) {
                    // As Mesa replays it: the client is disconnected (1000).
                    hub.disconnect_session(container, session);
                    return;
                }
                hub.send_text(container, session, &frame_text(&m));
            }
        }
        Err(e) => tracing::warn!(
            container,
            "unreadable undelivered Mesa messages dropped: {e}"
        ),
    }
}

/// Which of `recipients` are connected in `namespace`: a bound client id in Mesa's
/// set, or the id of a live session of one of `containers` (a session's client id is
/// its session id until it binds one, SPEC 6).
async fn connected(
    con: &mut redis::aio::ConnectionManager,
    namespace: &str,
    containers: &[String],
    recipients: &[String],
) -> redis::RedisResult<Vec<bool>> {
    let mut pipe = redis::pipe();
    for r in recipients {
        pipe.cmd("SISMEMBER")
            .arg(keys::connected_clients(namespace))
            .arg(r);
    }
    let mut flags: Vec<bool> = pipe.query_async(con).await?;
    let now = super::now_ms() as f64;
    for (r, flag) in recipients.iter().zip(flags.iter_mut()) {
        if *flag || crate::hub::node_of_session(r).is_none() {
            continue;
        }
        for container in containers {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(keys::sessions(container))
                .arg(r)
                .query_async(con)
                .await?;
            if score.is_some_and(|s| s > now) {
                *flag = true;
                break;
            }
        }
    }
    Ok(flags)
}

/// mimhost's Dispatcher beyond this node: with `sync`, messages for ids in no
/// session anywhere go to `undelivered_messages`, the rest is published on `ws[_<ns>]`.
pub(super) fn dispatch(cluster: &Arc<Cluster>, dispatch: &MesaDispatch<'_>) {
    let namespace = dispatch
        .namespace
        .map_or_else(|| cluster.namespace(dispatch.container), str::to_string);
    let containers = cluster.containers_in(&namespace);
    let node = cluster.node_id().to_string();
    let origin = dispatch.container.to_string();
    let text = dispatch.text.to_string();
    let recipients = dispatch.recipients.to_vec();
    let sync = dispatch.sync;
    let published = cluster.enqueue(Box::new(move |mut con| {
        Box::pin(async move {
            let mut online = recipients.clone();
            let everyone = recipients.iter().any(|r| r == "*");
            if sync && !everyone && !recipients.is_empty() {
                let Ok(flags) = connected(&mut con, &namespace, &containers, &recipients).await
                else {
                    return;
                };
                online.clear();
                for (r, is_online) in recipients.iter().zip(flags) {
                    if is_online {
                        online.push(r.clone());
                        continue;
                    }
                    let _ = redis::Script::new(APPEND_UNDELIVERED)
                        .key(keys::undelivered_messages(&namespace))
                        .arg(r)
                        .arg(&text)
                        .invoke_async::<i64>(&mut con)
                        .await;
                }
            }
            if online.is_empty() {
                return;
            }
            let payload = format!(
                "{{\"message\":{text},\"recipients\":{},\"node\":{},\"container\":{}}}",
                serde_json::Value::from(online),
                serde_json::Value::from(node),
                serde_json::Value::from(origin)
            );
            let _: Result<i64, _> = redis::cmd("PUBLISH")
                .arg(keys::mesa_channel(&namespace))
                .arg(payload)
                .query_async(&mut con)
                .await;
        })
    }));
    if published {
        cluster.stats.published.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_op_d_and_t_only() {
        let m = serde_json::json!({"op": 0, "d": {"x": 1}, "t": "T", "o": {"sync": true}});
        assert_eq!(frame_text(&m), r#"{"op":0,"d":{"x":1},"t":"T"}"#);
    }

    #[test]
    fn disconnect_is_op_5_with_mesas_type() {
        let yes = serde_json::json!({"op": 5, "d": {}, "t": "DISCONNECT_CLIENT"});
        let no = serde_json::json!({"op": 0, "d": {}, "t": "DISCONNECT_CLIENT"});
        assert!(is_disconnect(&yes));
        assert!(!is_disconnect(&no));
    }
}
