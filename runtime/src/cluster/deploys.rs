//! Global deploys (SPEC 8): images and container records live in Redis with a version
//! counter, and every node makes its own containers match them.
//!
//! Keys:
//! - `mimhost:deploys:version`: bumped by every change (`INCR`, in the same atomic
//!   step as the change);
//! - `mimhost:deploys:images`: hash image id → its record (JSON);
//! - `mimhost:deploys:image:ID`: the uploaded tar of image ID (at most `--max-image`);
//! - `mimhost:deploys:containers`: hash container name → its record (JSON);
//! - `mimhost:deploys:serving:NODE`: what NODE serves (JSON), refreshed every poll
//!   and expiring [`SERVING_TTL_MS`] after the last; the nodes are those of
//!   [`keys::NODES`].
//!
//! A node changes its own containers first (that is where code that does not load is
//! refused), then records the change in Redis. Every node polls the version every
//! [`POLL`]; when it moved (and after every reconnect, and at start) the node reads
//! the whole state and makes its containers match it ([`crate::mcm::Mcm::apply`]),
//! under the same lock as its MCM calls. Records and images are also kept under
//! `--data`, so a node that starts while Redis is down serves what it had, and
//! catches up when Redis comes.

use super::{keys, Cluster};
use crate::mcm::{ContainerRecord, ImageMeta, Mcm};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a node looks at the version counter (and refreshes its presence).
pub const POLL: Duration = Duration::from_millis(250);
/// How long what a node serves stays listed without a refresh.
const SERVING_TTL_MS: u64 = 3_000;
/// How long one Redis call may take before the cluster counts as unavailable
/// (image blobs are fetched with a longer bound).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on fetching one image blob.
const BLOB_TIMEOUT: Duration = Duration::from_secs(30);

const VERSION: &str = "mimhost:deploys:version";
const IMAGES: &str = "mimhost:deploys:images";
const CONTAINERS: &str = "mimhost:deploys:containers";

fn blob_key(id: &str) -> String {
    format!("mimhost:deploys:image:{id}")
}

fn serving_key(node: &str) -> String {
    format!("mimhost:deploys:serving:{node}")
}

/// Records a new container unless its name or its base path (ARGV[3]) is taken:
/// answers the new version, -1 for a taken name, or the name holding the base path.
const CREATE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
for _, json in ipairs(redis.call('HVALS', KEYS[1])) do
  local ok, other = pcall(cjson.decode, json)
  if ok and type(other) == 'table' and other.basePath == ARGV[3] then return other.name end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
";

/// Why a change could not be recorded in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Redis cannot be reached (or answered with an error).
    #[error("the cluster's Redis is unavailable ({0}); deploys are global and wait for it")]
    Unavailable(String),
    /// Another node recorded a container of that name first.
    #[error("a container named {0:?} already exists in the cluster; PUT to update it")]
    Taken(String),
    /// Another node recorded a container at that base path first.
    #[error("base path {path} is already used by container {other:?} in the cluster")]
    BasePathTaken {
        /// The base path asked for.
        path: String,
        /// The container that has it.
        other: String,
    },
}

impl From<redis::RedisError> for DeployError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// What one node serves, as other nodes see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// Where it serves.
    pub base_path: String,
    /// `api` (deployed) or `mims` (a drop-in of that node).
    pub source: String,
    /// The env of a drop-in mim (deployed containers have theirs in their record).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The cluster-wide state read from Redis in one atomic step.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The version it was read at.
    pub version: u64,
    /// Every image record.
    pub images: Vec<ImageMeta>,
    /// Every container record.
    pub containers: Vec<ContainerRecord>,
}

/// This node's door to the deploy state in Redis.
pub struct Deploys {
    cluster: Arc<Cluster>,
    /// The version this node last made its containers match (`None`: match again).
    applied: Mutex<Option<u64>>,
    /// Container name → node id → what that node serves, from the last poll.
    serving: Mutex<BTreeMap<String, BTreeMap<String, Served>>>,
    /// Whether the last call reached Redis (for one log line per loss and return).
    up: Mutex<Option<bool>>,
    create: redis::Script,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, DeployError> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(DeployError::from),
        Err(_) => Err(DeployError::Unavailable(format!(
            "no answer within {limit:?}"
        ))),
    }
}

impl Deploys {
    /// The deploy state of `cluster`. Nothing is connected yet; a node whose Redis is
    /// down serves locally meanwhile.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            applied: Mutex::new(None),
            serving: Mutex::new(BTreeMap::new()),
            up: Mutex::new(None),
            create: redis::Script::new(CREATE),
        }
    }

    /// Runs `op` on the cluster's command connection (which reconnects by itself),
    /// bounded by `limit`.
    async fn call<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T, DeployError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        bounded(limit, op(self.cluster.commands())).await
    }

    /// Fails fast (before anything changes) when Redis was unreachable at the last
    /// poll, so an MCM change is refused rather than made on one node only.
    pub fn check_up(&self) -> Result<(), DeployError> {
        match *lock(&self.up) {
            Some(false) => Err(DeployError::Unavailable(
                "it did not answer the last poll".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Makes the next poll read the whole state and apply it, whatever the version
    /// (after a change this node made locally could not be recorded).
    pub fn resync(&self) {
        *lock(&self.applied) = None;
    }

    /// Runs the changes in `pipe` and the version bump as one atomic step.
    async fn commit(&self, limit: Duration, mut pipe: redis::Pipeline) -> Result<(), DeployError> {
        pipe.atomic().incr(VERSION, 1).ignore();
        self.call(limit, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Records image records (a new upload and the records whose tags it took), and
    /// the uploaded tar of a new image.
    pub async fn put_images(
        &self,
        metas: &[ImageMeta],
        blob: Option<(&str, &[u8])>,
    ) -> Result<(), DeployError> {
        let mut pipe = redis::pipe();
        if let Some((id, bytes)) = blob {
            pipe.set(blob_key(id), bytes).ignore();
        }
        for m in metas {
            pipe.hset(IMAGES, &m.id, to_json(m)).ignore();
        }
        self.commit(BLOB_TIMEOUT, pipe).await
    }

    /// Removes an image record and its tar.
    pub async fn drop_image(&self, id: &str) -> Result<(), DeployError> {
        let mut pipe = redis::pipe();
        pipe.hdel(IMAGES, id).ignore().del(blob_key(id)).ignore();
        self.commit(CALL_TIMEOUT, pipe).await
    }

    /// Records a new container; [`DeployError::Taken`] when the name is in use.
    pub async fn create_container(&self, record: &ContainerRecord) -> Result<(), DeployError> {
        let json = to_json(record);
        let answer: redis::Value = self
            .call(CALL_TIMEOUT, |mut c| async move {
                self.create
                    .key(CONTAINERS)
                    .key(VERSION)
                    .arg(&record.name)
                    .arg(json)
                    .arg(&record.base_path)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match answer {
            redis::Value::Int(v) if v < 0 => Err(DeployError::Taken(record.name.clone())),
            redis::Value::Int(_) => Ok(()),
            other => Err(DeployError::BasePathTaken {
                path: record.base_path.clone(),
                other: redis::from_redis_value::<String>(other)
                    .unwrap_or_else(|_| "another container".to_string()),
            }),
        }
    }

    /// Records a changed container (hot swap).
    pub async fn put_container(&self, record: &ContainerRecord) -> Result<(), DeployError> {
        let mut pipe = redis::pipe();
        pipe.hset(CONTAINERS, &record.name, to_json(record))
            .ignore();
        self.commit(CALL_TIMEOUT, pipe).await
    }

    /// Removes a container record.
    pub async fn drop_container(&self, name: &str) -> Result<(), DeployError> {
        let mut pipe = redis::pipe();
        pipe.hdel(CONTAINERS, name).ignore();
        self.commit(CALL_TIMEOUT, pipe).await
    }

    /// The uploaded tar of image `id`, if Redis still has it.
    pub async fn blob(&self, id: &str) -> Result<Option<Vec<u8>>, DeployError> {
        let key = blob_key(id);
        self.call(BLOB_TIMEOUT, |mut c| async move { c.get(key).await })
            .await
    }

    /// The nodes serving container `name`, as of the last poll.
    pub fn nodes_of(&self, name: &str) -> Vec<String> {
        lock(&self.serving)
            .get(name)
            .map(|by_node| by_node.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every container some node serves, with what each node serves.
    pub fn served(&self) -> BTreeMap<String, BTreeMap<String, Served>> {
        lock(&self.serving).clone()
    }

    /// The whole state, read atomically; `None` version when nothing was ever deployed.
    async fn snapshot(&self) -> Result<(Option<u64>, Snapshot), DeployError> {
        let (version, images, containers): (
            Option<u64>,
            HashMap<String, String>,
            HashMap<String, String>,
        ) = self
            .call(CALL_TIMEOUT, |mut c| async move {
                redis::pipe()
                    .atomic()
                    .get(VERSION)
                    .hgetall(IMAGES)
                    .hgetall(CONTAINERS)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let images = images
            .into_iter()
            .filter_map(|(id, json)| parse(&format!("image record {id}"), &json))
            .collect();
        let containers = containers
            .into_iter()
            .filter_map(|(name, json)| parse(&format!("container record {name}"), &json))
            .collect();
        Ok((
            version,
            Snapshot {
                version: version.unwrap_or(0),
                images,
                containers,
            },
        ))
    }

    /// Publishes what this node serves and reads what every live node serves.
    async fn refresh_presence(&self, here: BTreeMap<String, Served>) -> Result<(), DeployError> {
        let node = self.cluster.node_id().to_string();
        let json = serde_json::to_string(&here).unwrap_or_else(|_| "{}".into());
        let mut nodes: Vec<String> = self
            .call(CALL_TIMEOUT, |mut c| async move {
                redis::pipe()
                    .pset_ex(serving_key(&node), json, SERVING_TTL_MS)
                    .ignore()
                    .zrange(keys::NODES, 0, -1)
                    .query_async::<(Vec<String>,)>(&mut c)
                    .await
                    .map(|(nodes,)| nodes)
            })
            .await?;
        if !nodes.iter().any(|n| n == self.cluster.node_id()) {
            nodes.push(self.cluster.node_id().to_string());
        }
        let keys: Vec<String> = nodes.iter().map(|n| serving_key(n)).collect();
        let lists: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.call(CALL_TIMEOUT, |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await?
        };
        let mut serving: BTreeMap<String, BTreeMap<String, Served>> = BTreeMap::new();
        for (node, list) in nodes.into_iter().zip(lists) {
            let Some(list) = list else { continue };
            let Some(map) = parse::<BTreeMap<String, Served>>("a node's serving list", &list)
            else {
                continue;
            };
            for (name, served) in map {
                serving
                    .entry(name)
                    .or_default()
                    .insert(node.clone(), served);
            }
        }
        *lock(&self.serving) = serving;
        Ok(())
    }

    /// One poll: presence, then the deploy state when its version moved.
    async fn poll(&self, mcm: &Mcm) -> Result<(), DeployError> {
        self.refresh_presence(mcm.served_here()).await?;
        let version = self.version().await?;
        if self.applied() == Some(version.unwrap_or(0)) {
            return Ok(());
        }
        let _ops = mcm.lock_changes().await;
        self.catch_up(mcm).await
    }

    /// The cluster's deploy version; `None` when nothing was ever deployed.
    async fn version(&self) -> Result<Option<u64>, DeployError> {
        self.call(CALL_TIMEOUT, |mut c| async move { c.get(VERSION).await })
            .await
    }

    /// The version this node last made its containers match.
    fn applied(&self) -> Option<u64> {
        *lock(&self.applied)
    }

    /// Makes this node match the cluster's deploy state when its version moved since
    /// the last poll (call with [`Mcm::lock_changes`] held). An MCM change runs it
    /// first, so a node that has not polled yet judges a change against what the
    /// cluster has, not what it had (a name just freed elsewhere is free here too).
    pub async fn catch_up(&self, mcm: &Mcm) -> Result<(), DeployError> {
        let applied = self.applied();
        if applied.is_some() && applied == Some(self.version().await?.unwrap_or(0)) {
            return Ok(());
        }
        let (version, snapshot) = self.snapshot().await?;
        if version.is_none() {
            // Nothing was ever deployed in this cluster: this node's own images and
            // containers (from before it joined) become the cluster's.
            self.seed(mcm).await?;
            return Ok(());
        }
        let at = snapshot.version;
        let changed = mcm.apply(self, snapshot).await;
        *lock(&self.applied) = Some(at);
        if changed > 0 || applied.is_none() {
            tracing::info!(
                version = at,
                changed,
                "deploys: in step with the cluster (version {at})"
            );
        }
        Ok(())
    }

    /// Records this node's images and containers in an empty cluster.
    async fn seed(&self, mcm: &Mcm) -> Result<(), DeployError> {
        let images = mcm.images();
        for meta in &images {
            let blob = mcm.image_tar(&meta.id).map_err(DeployError::Unavailable)?;
            self.put_images(std::slice::from_ref(meta), Some((&meta.id, &blob)))
                .await?;
        }
        for record in mcm.deployed() {
            match self.create_container(&record).await {
                Ok(()) | Err(DeployError::Taken(_) | DeployError::BasePathTaken { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Even an empty node starts the count, so later joiners adopt, not seed.
        self.call(CALL_TIMEOUT, |mut c| async move {
            c.incr::<_, _, u64>(VERSION, 0).await
        })
        .await?;
        tracing::info!(
            images = images.len(),
            "deploys: the cluster had no deploys; recorded this node's"
        );
        Ok(())
    }

    /// One poll, noting whether Redis answered: one warning when it stops answering
    /// and one when it is back (and then everything is compared once more). The host
    /// runs one before it opens its port, so a node that starts catches up first.
    pub async fn poll_once(&self, mcm: &Mcm) {
        let result = self.poll(mcm).await;
        let mut up = lock(&self.up);
        match (*up, &result) {
            // A warning: the cluster link logs the one error a lost Redis makes (SPEC 8).
            (Some(true) | None, Err(e)) => tracing::warn!("deploys: {e}"),
            (Some(false), Ok(())) => {
                tracing::info!("deploys: Redis is back; catching up with the cluster's deploys");
                *lock(&self.applied) = None;
            }
            _ => {}
        }
        *up = Some(result.is_ok());
    }
}

/// Keeps this node's containers in step with the cluster until the process ends.
pub async fn run(deploys: Arc<Deploys>, mcm: Arc<Mcm>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        deploys.poll_once(&mcm).await;
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, json: &str) -> Option<T> {
    serde_json::from_str(json)
        .inspect_err(|e| tracing::warn!("deploys: {what} in Redis is not valid: {e}; ignored"))
        .ok()
}
