//! Global sessions, groups and client ids: sorted sets in Redis scored by expiry
//! (milliseconds since the epoch), as Centrifugo's presence keeps them. Live nodes
//! refresh their own entries every [`REFRESH`]; entries of a node that died expire
//! after [`EXPIRY`] and are purged on every read, and survivors remove a dead node's
//! client ids from Mesa's `connected_clients` (counting holders, so closing one of two
//! tabs keeps the id). The same refresh re-registers everything after Redis returns.

use super::{keys, now_ms, Cluster};
use crate::hub::{PresenceChange, SessionPresence};
use mimhost_bindings::{WsAnswer, WsQuery};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// How often a live node refreshes its entries.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long an entry lives without a refresh (a dead node's ghosts are gone after it).
pub const EXPIRY: Duration = Duration::from_secs(7);

/// Binds a client id: one more holder, the id in Mesa's set, and what Mesa kept for it
/// taken out (returned as Mesa's JSON array, or nil).
const BIND: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
local kept = redis.call('HGET', KEYS[3], ARGV[3])
if kept then redis.call('HDEL', KEYS[3], ARGV[3]) end
return kept
";

/// Unbinds a client id: one holder less; the last live one takes the id out of Mesa's set.
const UNBIND: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 0
";

/// Removes from Mesa's set the ids whose every mimhost holder expired (ids with no
/// holders key at all belong to real Mesa servers and are left alone).
const REAP: &str = r"
local removed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = ARGV[1] .. id
  if redis.call('EXISTS', h) == 1 then
    redis.call('ZREMRANGEBYSCORE', h, '-inf', ARGV[2])
    if redis.call('ZCARD', h) == 0 then
      redis.call('SREM', KEYS[1], id)
      removed = removed + 1
    end
  end
end
return removed
";

fn expiry() -> u64 {
    now_ms() + EXPIRY.as_millis() as u64
}

/// Records one change of this node's sessions in Redis (in queue order).
pub(super) fn change(cluster: &Arc<Cluster>, container: &str, change: PresenceChange) {
    let container = container.to_string();
    let namespace = cluster.namespace(&container);
    let weak = Arc::downgrade(cluster);
    cluster.enqueue(Box::new(move |mut con| {
        Box::pin(async move {
            let result = apply(&mut con, &container, &namespace, change, weak).await;
            if let Err(e) = result {
                tracing::debug!(container, "presence change not recorded: {e}");
            }
        })
    }));
}

async fn apply(
    con: &mut ConnectionManager,
    container: &str,
    namespace: &str,
    change: PresenceChange,
    cluster: std::sync::Weak<Cluster>,
) -> redis::RedisResult<()> {
    match change {
        PresenceChange::Opened { session } => {
            redis::cmd("ZADD")
                .arg(keys::sessions(container))
                .arg(expiry())
                .arg(&session)
                .exec_async(con)
                .await
        }
        PresenceChange::Closed {
            session,
            groups,
            client,
        } => {
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM")
                .arg(keys::sessions(container))
                .arg(&session)
                .ignore();
            for group in &groups {
                pipe.cmd("ZREM")
                    .arg(keys::group(container, group))
                    .arg(&session)
                    .ignore();
            }
            pipe.exec_async(con).await?;
            if let Some(client) = client {
                unbind(con, namespace, &session, &client).await?;
            }
            Ok(())
        }
        PresenceChange::Joined { group, session } => {
            redis::cmd("ZADD")
                .arg(keys::group(container, &group))
                .arg(expiry())
                .arg(&session)
                .exec_async(con)
                .await
        }
        PresenceChange::Left { group, session } => {
            redis::cmd("ZREM")
                .arg(keys::group(container, &group))
                .arg(&session)
                .exec_async(con)
                .await
        }
        PresenceChange::Bound {
            session,
            client,
            previous,
        } => {
            if let Some(previous) = previous {
                unbind(con, namespace, &session, &previous).await?;
            }
            let kept: Option<String> = redis::Script::new(BIND)
                .key(keys::holders(namespace, &client))
                .key(keys::connected_clients(namespace))
                .key(keys::undelivered_messages(namespace))
                .key(keys::MESA_NAMESPACES)
                .arg(&session)
                .arg(expiry())
                .arg(&client)
                .arg(namespace)
                .invoke_async(con)
                .await?;
            if let (Some(kept), Some(cluster)) = (kept, cluster.upgrade()) {
                if let Some(hub) = cluster.hub() {
                    super::mesa::deliver_kept(&hub, container, &session, &kept);
                }
            }
            Ok(())
        }
    }
}

async fn unbind(
    con: &mut ConnectionManager,
    namespace: &str,
    session: &str,
    client: &str,
) -> redis::RedisResult<()> {
    redis::Script::new(UNBIND)
        .key(keys::holders(namespace, client))
        .key(keys::connected_clients(namespace))
        .arg(session)
        .arg(now_ms())
        .arg(client)
        .invoke_async::<i64>(con)
        .await
        .map(drop)
}

/// Answers a group or session question for the whole cluster; None (answer locally)
/// when Redis is down or slow, or when called where waiting is impossible.
pub(super) fn query(cluster: &Arc<Cluster>, container: &str, query: &WsQuery) -> Option<WsAnswer> {
    if !cluster.is_up() {
        return None;
    }
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let container = container.to_string();
    let query = query.clone();
    let queued = cluster.enqueue(Box::new(move |mut con| {
        Box::pin(async move {
            if let Ok(answer) = ask(&mut con, &container, query).await {
                let _ = tx.send(answer);
            }
        })
    }));
    if !queued {
        return None;
    }
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            tokio::time::timeout(super::COMMAND_TIMEOUT, rx)
                .await
                .ok()?
                .ok()
        })
    })
}

/// An atomic pipeline that first drops the expired members of `key` (purge on read).
fn purged(key: &str, now: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(now)
        .ignore();
    pipe
}

async fn ask(
    con: &mut ConnectionManager,
    container: &str,
    query: WsQuery,
) -> redis::RedisResult<WsAnswer> {
    let now = now_ms();
    match query {
        WsQuery::GroupSize(group) => {
            let key = keys::group(container, &group);
            let (size,): (u64,) = purged(&key, now)
                .cmd("ZCARD")
                .arg(&key)
                .query_async(con)
                .await?;
            Ok(WsAnswer::Size(size))
        }
        WsQuery::GroupMembers(group) => {
            let key = keys::group(container, &group);
            let (members,): (Vec<String>,) = purged(&key, now)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(con)
                .await?;
            let sorted: std::collections::BTreeSet<String> = members.into_iter().collect();
            Ok(WsAnswer::Members(sorted.into_iter().collect()))
        }
        WsQuery::SessionExists(id) => {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(keys::sessions(container))
                .arg(&id)
                .query_async(con)
                .await?;
            Ok(WsAnswer::Flag(score.is_some_and(|s| s > now as f64)))
        }
    }
}

/// Refreshes this node's entries every [`REFRESH`], and at once (re-registering
/// everything, and saying so) each time Redis comes back.
pub(super) async fn refresh_loop(cluster: Arc<Cluster>) {
    let mut up = cluster.watch_up();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut joined_before = false;
    // Set when Redis came back; cleared by the first refresh that succeeds after it
    // (the first try may meet a connection that is not back yet).
    let report = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let returned = tokio::select! {
            _ = tick.tick() => false,
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*up.borrow_and_update() {
                    continue;
                }
                true
            }
        };
        if !cluster.is_up() {
            continue;
        }
        let Some(hub) = cluster.hub() else { return };
        // Taken now and written in queue order, so a session closed after this
        // snapshot is removed after it is refreshed, never before.
        let snapshot = hub.presence_snapshot();
        if returned && joined_before {
            report.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        joined_before |= returned;
        let weak = Arc::downgrade(&cluster);
        let report = report.clone();
        cluster.enqueue(Box::new(move |mut con| {
            Box::pin(async move {
                let Some(cluster) = weak.upgrade() else { return };
                match refresh(&cluster, &mut con, &snapshot).await {
                    Ok(()) if report.swap(false, std::sync::atomic::Ordering::Relaxed) => {
                        let groups: usize = snapshot.iter().map(|s| s.groups.len()).sum();
                        let clients = snapshot.iter().filter(|s| s.client.is_some()).count();
                        tracing::info!(node = %cluster.node_id,
                            "re-registered {} sessions, {groups} group memberships and {clients} client ids with Redis",
                            snapshot.len());
                    }
                    Ok(()) => {}
                    Err(e) => tracing::debug!("presence refresh failed: {e}"),
                }
            })
        }));
    }
}

async fn refresh(
    cluster: &Cluster,
    con: &mut ConnectionManager,
    snapshot: &[SessionPresence],
) -> redis::RedisResult<()> {
    let until = expiry();
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(keys::NODES)
        .arg(until)
        .arg(cluster.node_id())
        .ignore();
    for s in snapshot {
        let namespace = cluster.namespace(&s.container);
        pipe.cmd("ZADD")
            .arg(keys::sessions(&s.container))
            .arg(until)
            .arg(&s.session)
            .ignore();
        for group in &s.groups {
            pipe.cmd("ZADD")
                .arg(keys::group(&s.container, group))
                .arg(until)
                .arg(&s.session)
                .ignore();
        }
        if let Some(client) = &s.client {
            pipe.cmd("ZADD")
                .arg(keys::holders(&namespace, client))
                .arg(until)
                .arg(&s.session)
                .ignore();
            pipe.cmd("SADD")
                .arg(keys::connected_clients(&namespace))
                .arg(client)
                .ignore();
            pipe.cmd("SADD")
                .arg(keys::MESA_NAMESPACES)
                .arg(&namespace)
                .ignore();
        }
    }
    pipe.exec_async(con).await?;
    // Survivors clean what dead nodes (or sessions closed while Redis was away) left
    // in every namespace mimhost sessions bound ids in, used here or not.
    let namespaces: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::MESA_NAMESPACES)
        .query_async(con)
        .await?;
    let now = now_ms();
    let reap = redis::Script::new(REAP);
    for namespace in namespaces {
        reap.key(keys::connected_clients(&namespace))
            .arg(keys::holders(&namespace, ""))
            .arg(now)
            .invoke_async::<i64>(con)
            .await?;
    }
    Ok(())
}
