//! The supervised subscriber: connects, subscribes to every channel this node hears,
//! reads messages without ever blocking on a consumer, probes the connection, and on
//! loss reconnects with back-off (250 ms → 5 s). Up/down transitions are published on
//! the cluster's watch and logged once each.

use super::{backplane, keys, lock, Cluster};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// How often the subscriber connection and the command connection are probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Probes in a row that may go unanswered before the link counts as lost (a closed
/// connection counts at once; this is for one that is open but silent).
const PROBE_MISSES: u32 = 3;
/// How often the subscriptions follow the containers this node runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Keeps this node subscribed for as long as the host runs.
pub(super) async fn supervise(cluster: Arc<Cluster>) {
    let mut delay = FIRST_DELAY;
    let mut joined_once = false;
    let mut said_unreachable = false;
    loop {
        match connect(&cluster).await {
            Ok((sink, stream, heard)) => {
                delay = FIRST_DELAY;
                cluster.set_up(true);
                if joined_once {
                    tracing::info!(node = %cluster.node_id, "Redis is back: re-registering this node's sessions, groups and client ids");
                } else {
                    tracing::info!(node = %cluster.node_id, "joined the cluster on Redis");
                }
                joined_once = true;
                said_unreachable = false;
                read(&cluster, sink, stream, heard).await;
                cluster.set_up(false);
                tracing::error!(node = %cluster.node_id,
                    "lost Redis: delivering to this node's sessions only until it returns");
            }
            Err(e) => {
                if !joined_once && !said_unreachable {
                    tracing::warn!(node = %cluster.node_id,
                        "Redis unreachable at start ({e}); serving locally, joining when it comes");
                    said_unreachable = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// A subscribed connection and the channels it hears.
async fn connect(
    cluster: &Cluster,
) -> redis::RedisResult<(PubSubSink, PubSubStream, BTreeSet<String>)> {
    let timeout = |e| redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, e));
    let pubsub = tokio::time::timeout(Duration::from_secs(2), cluster.client.get_async_pubsub())
        .await
        .map_err(|_| timeout("connecting timed out"))??;
    let (mut sink, stream) = pubsub.split();
    let mut heard = BTreeSet::new();
    follow(cluster, &mut sink, &mut heard).await?;
    // The command connection must answer too before the node counts as up.
    let mut commands = cluster.commands();
    tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut commands),
    )
    .await
    .map_err(|_| timeout("PING timed out"))??;
    Ok((sink, stream, heard))
}

/// Subscribes to the channels the node wants now and leaves those it no longer does
/// (a container deployed or deleted, a listener added).
async fn follow(
    cluster: &Cluster,
    sink: &mut PubSubSink,
    heard: &mut BTreeSet<String>,
) -> redis::RedisResult<()> {
    let wanted = cluster.wanted_channels();
    let new: Vec<String> = wanted.difference(heard).cloned().collect();
    if !new.is_empty() {
        sink.subscribe(&new).await?;
    }
    let gone: Vec<String> = heard.difference(&wanted).cloned().collect();
    if !gone.is_empty() {
        sink.unsubscribe(&gone).await?;
    }
    *heard = wanted;
    Ok(())
}

/// Reads until the connection is lost.
async fn read(
    cluster: &Cluster,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    mut heard: BTreeSet<String>,
) {
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = 0;
    let mut resync = tokio::time::interval(FOLLOW_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return };
                route(cluster, &msg);
            }
            _ = cluster.listeners_changed.notified() => {
                if follow(cluster, &mut sink, &mut heard).await.is_err() {
                    return;
                }
            }
            _ = resync.tick() => {
                if follow(cluster, &mut sink, &mut heard).await.is_err() {
                    return;
                }
            }
            _ = probe.tick() => {
                // A connection can be open yet dead (failover, a frozen peer): both
                // must answer within the probe window.
                let mut commands = cluster.commands();
                let ok = tokio::time::timeout(PROBE_EVERY * 2, async {
                    sink.ping::<redis::Value>().await.is_ok()
                        && redis::cmd("PING").query_async::<String>(&mut commands).await.is_ok()
                })
                .await
                .unwrap_or(false);
                misses = if ok { 0 } else { misses + 1 };
                if misses >= PROBE_MISSES {
                    return;
                }
            }
        }
    }
}

/// Hands one message to whoever hears its channel; never waits.
fn route(cluster: &Cluster, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let payload = msg.get_payload_bytes();
    if keys::is_delivery_channel(channel) {
        backplane::receive(cluster, payload);
    } else if let Some(namespace) = keys::namespace_of_mesa_channel(channel) {
        super::mesa::receive(cluster, namespace, payload);
    } else {
        for listener in lock(&cluster.listeners)
            .iter()
            .filter(|l| l.channel == channel)
        {
            if listener.to.try_send(payload.to_vec()).is_err() {
                cluster.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
