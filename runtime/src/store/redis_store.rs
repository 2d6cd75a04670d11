//! `context.storage` on Redis (`--cluster`, SPEC 8): every node reads and writes the
//! same data, with the embedded store's order and tags (SPEC 7).
//!
//! Keys of container NAME, all with the hash tag `{NAME}` so they live on one shard
//! of a Redis Cluster and one script may touch them all:
//! - `mimhost:store:{NAME}:seq`: the sequence (`INCR`) giving each new key its age;
//! - `mimhost:store:{NAME}:order`: sorted set key → seq (iteration, oldest first);
//! - `mimhost:store:{NAME}:data`: hash key → value;
//! - `mimhost:store:{NAME}:tagof`: hash key → its tag;
//! - `mimhost:store:{NAME}:tag:TAG`: sorted set key → seq, one per tag;
//! - `mimhost:store:{NAME}:ver`: the store's version, bumped by every write (for this
//!   node's copy, [`super::redis_mirror`]).
//!
//! Every write is one Lua script, so it is atomic, and it returns only once Redis has
//! applied it: the worker's answer leaves after its writes are acknowledged. The
//! worker calls it synchronously (storage calls are synchronous JavaScript calls)
//! over one blocking connection. When Redis cannot be reached the store is read-only
//! (SPEC 8): writes throw an Error saying the store is unavailable, reads answer from
//! this node's copy; the connection is tried again after a back-off, so the store
//! works again when Redis returns, without a restart.

use super::redis_mirror::{self, Mirror, Write};
use mimhost_bindings::{Storage, StorageError};
use redis::{Client, Connection, RedisError, Script};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connect may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait for its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// First wait before connecting again after a failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two connect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Keys per `HMGET` in the read script (Lua's `unpack` has a stack limit).
const READ_CHUNK: usize = 500;

/// Sets a value, giving a new key the next sequence number and keeping an existing
/// key's; with a tag (ARGV[4] = '1') it moves the key to that tag. Answers the key's
/// sequence number and the store's new version.
const SET: &str = r"
local key, value, tag, tagged, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local seq = redis.call('ZSCORE', KEYS[2], key)
if not seq then
  seq = redis.call('INCR', KEYS[1])
  redis.call('ZADD', KEYS[2], seq, key)
end
if tagged == '1' then
  local old = redis.call('HGET', KEYS[4], key)
  if old ~= tag then
    if old then redis.call('ZREM', prefix .. old, key) end
    redis.call('HSET', KEYS[4], key, tag)
    redis.call('ZADD', prefix .. tag, seq, key)
  end
end
redis.call('HSET', KEYS[3], key, value)
return { tonumber(seq), redis.call('INCR', KEYS[5]) }
";

/// Removes one key from the order, the data and its tag; answers the new version.
const REMOVE: &str = r"
local key, prefix = ARGV[1], ARGV[2]
redis.call('ZREM', KEYS[1], key)
redis.call('HDEL', KEYS[2], key)
local old = redis.call('HGET', KEYS[3], key)
if old then
  redis.call('ZREM', prefix .. old, key)
  redis.call('HDEL', KEYS[3], key)
end
return redis.call('INCR', KEYS[4])
";

/// Removes every key of one tag; answers how many went and the new version.
const REMOVE_BY_TAG: &str = r"
local keys = redis.call('ZRANGE', KEYS[4], 0, -1)
for _, k in ipairs(keys) do
  redis.call('ZREM', KEYS[1], k)
  redis.call('HDEL', KEYS[2], k)
  redis.call('HDEL', KEYS[3], k)
end
redis.call('DEL', KEYS[4])
return { #keys, redis.call('INCR', KEYS[5]) }
";

/// Every key of an order set (all items, or one tag's) with its value, oldest first,
/// as one flat list `k1, v1, k2, v2, …`, read atomically.
const ITEMS: &str = r"
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
local chunk = tonumber(ARGV[1])
for i = 1, #keys, chunk do
  local part = {}
  for j = i, math.min(i + chunk - 1, #keys) do part[#part + 1] = keys[j] end
  local values = redis.call('HMGET', KEYS[2], unpack(part))
  for j = 1, #part do
    if values[j] then
      out[#out + 1] = part[j]
      out[#out + 1] = values[j]
    end
  end
end
return out
";

/// Deletes every key of a container's store (`DELETE …?purge=true`).
const PURGE: &str = r"
local tags = redis.call('HVALS', KEYS[4])
local seen = {}
for _, t in ipairs(tags) do
  if not seen[t] then
    seen[t] = true
    redis.call('DEL', ARGV[1] .. t)
  end
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
";

/// The key names of one container's store.
#[derive(Debug, Clone)]
pub struct StoreKeys {
    seq: String,
    order: String,
    data: String,
    tag_of: String,
    tag_prefix: String,
    version: String,
}

impl StoreKeys {
    /// The keys of container `name`'s store.
    pub fn new(name: &str) -> Self {
        let base = format!("mimhost:store:{{{name}}}:");
        Self {
            seq: format!("{base}seq"),
            order: format!("{base}order"),
            data: format!("{base}data"),
            tag_of: format!("{base}tagof"),
            tag_prefix: format!("{base}tag:"),
            version: format!("{base}ver"),
        }
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}{tag}", self.tag_prefix)
    }

    pub(super) fn order(&self) -> &str {
        &self.order
    }

    pub(super) fn data(&self) -> &str {
        &self.data
    }

    pub(super) fn tag_of(&self) -> &str {
        &self.tag_of
    }

    pub(super) fn version(&self) -> &str {
        &self.version
    }
}

/// The Lua scripts, hashed once per store.
struct Scripts {
    set: Script,
    remove: Script,
    remove_by_tag: Script,
    items: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            set: Script::new(SET),
            remove: Script::new(REMOVE),
            remove_by_tag: Script::new(REMOVE_BY_TAG),
            items: Script::new(ITEMS),
        }
    }
}

/// A container's store in Redis, used from the worker's JavaScript thread.
pub struct RedisStore {
    client: Client,
    keys: StoreKeys,
    scripts: Scripts,
    /// The open connection; `None` before the first call and after a failure.
    conn: RefCell<Option<Connection>>,
    /// No connect attempt before this instant (back-off after a failure).
    retry_at: Cell<Option<Instant>>,
    /// The current back-off.
    backoff: Cell<Duration>,
    /// Why the last connect failed, repeated while backing off.
    last_error: RefCell<String>,
    /// This node's copy, read while Redis is away.
    mirror: Arc<Mirror>,
}

/// Why a call to Redis failed.
enum Failure {
    /// Redis cannot be reached: reads may answer from the copy.
    Unreachable(StorageError),
    /// Redis answered with an error.
    Answered(StorageError),
}

impl From<Failure> for StorageError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unreachable(e) | Failure::Answered(e) => e,
        }
    }
}

/// The error every call throws while Redis cannot be reached.
fn unavailable(reason: &str) -> StorageError {
    StorageError(format!(
        "the store is unavailable: Redis cannot be reached ({reason}); the store is read-only until it is back"
    ))
}

/// Whether `e` means the connection is no longer usable (as opposed to an error
/// answer from a working server).
fn connection_lost(e: &RedisError) -> bool {
    e.code().is_none()
}

impl RedisStore {
    /// The store of container `name` in the Redis at `url`, with this node's copy
    /// kept in step by a thread of its own. Nothing is connected yet: a worker
    /// started while Redis is down serves, and its store works once Redis is up.
    /// Fails only on a URL that is not a Redis URL.
    pub fn open(url: &str, name: &str) -> Result<Self, StorageError> {
        let store = Self::unmirrored(url, name)?;
        redis_mirror::spawn_refresher(store.client.clone(), store.keys.clone(), &store.mirror);
        Ok(store)
    }

    /// The store without a refresher (for a purge).
    fn unmirrored(url: &str, name: &str) -> Result<Self, StorageError> {
        let client = Client::open(url)
            .map_err(|e| StorageError(format!("the cluster's Redis URL is not usable: {e}")))?;
        Ok(Self {
            client,
            keys: StoreKeys::new(name),
            scripts: Scripts::new(),
            conn: RefCell::new(None),
            retry_at: Cell::new(None),
            backoff: Cell::new(FIRST_BACKOFF),
            last_error: RefCell::new(String::new()),
            mirror: Arc::default(),
        })
    }

    /// A new connection, unless a recent failure says to wait.
    fn connect(&self) -> Result<Connection, StorageError> {
        if self.retry_at.get().is_some_and(|at| Instant::now() < at) {
            return Err(unavailable(&self.last_error.borrow()));
        }
        let connected = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .and_then(|c| {
                c.set_read_timeout(Some(IO_TIMEOUT))?;
                c.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(c)
            });
        match connected {
            Ok(c) => {
                self.retry_at.set(None);
                self.backoff.set(FIRST_BACKOFF);
                Ok(c)
            }
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Records a connection failure and schedules the next attempt.
    fn failed(&self, e: &RedisError) -> StorageError {
        let wait = self.backoff.get();
        self.retry_at.set(Some(Instant::now() + wait));
        self.backoff.set((wait * 2).min(MAX_BACKOFF));
        *self.last_error.borrow_mut() = e.to_string();
        unavailable(&e.to_string())
    }

    /// Runs `op` on the connection. A connection that broke since its last use
    /// (Redis restarted, say) is replaced and the call tried once more on the new
    /// one; every call here is idempotent (set, remove, reads), except that a
    /// repeated `removeItemsByTag` would count what the first attempt left.
    fn run<T>(&self, op: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> Result<T, Failure> {
        let mut slot = self.conn.borrow_mut();
        let reused = slot.is_some();
        for attempt in 0..2 {
            let mut con = match slot.take() {
                Some(c) => c,
                None => self.connect().map_err(Failure::Unreachable)?,
            };
            match op(&mut con) {
                Ok(v) => {
                    *slot = Some(con);
                    return Ok(v);
                }
                Err(e) if connection_lost(&e) => {
                    if !(reused && attempt == 0) {
                        return Err(Failure::Unreachable(self.failed(&e)));
                    }
                }
                Err(e) => {
                    *slot = Some(con);
                    return Err(Failure::Answered(StorageError(format!(
                        "storage error from Redis: {e}"
                    ))));
                }
            }
        }
        Err(Failure::Unreachable(unavailable(&self.last_error.borrow())))
    }

    /// A read: from Redis, or from this node's copy while Redis cannot be reached
    /// (the Error stays when the copy was never filled).
    fn read_or_copy<T>(
        &self,
        op: impl Fn(&mut Connection) -> redis::RedisResult<T>,
        from_copy: impl FnOnce(&Mirror) -> Option<T>,
    ) -> Result<T, StorageError> {
        match self.run(op) {
            Ok(v) => Ok(v),
            Err(Failure::Unreachable(e)) => from_copy(&self.mirror).ok_or(e),
            Err(f) => Err(f.into()),
        }
    }

    /// Deletes every key of container `name`'s store in the Redis at `url`.
    pub fn purge(url: &str, name: &str) -> Result<(), StorageError> {
        let store = Self::unmirrored(url, name)?;
        let keys = &store.keys;
        let script = Script::new(PURGE);
        store.run(|c| {
            script
                .key(&keys.seq)
                .key(&keys.order)
                .key(&keys.data)
                .key(&keys.tag_of)
                .key(&keys.version)
                .arg(&keys.tag_prefix)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn read(&self, tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        let order_key = match tag {
            None => self.keys.order.clone(),
            Some(t) => self.keys.tag(t),
        };
        let flat: Vec<String> = match self.run(|c| {
            self.scripts
                .items
                .key(&order_key)
                .key(&self.keys.data)
                .arg(READ_CHUNK)
                .invoke(c)
        }) {
            Ok(flat) => flat,
            Err(Failure::Unreachable(e)) => return self.mirror.items(tag).ok_or(e),
            Err(f) => return Err(f.into()),
        };
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }
}

impl Storage for RedisStore {
    fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        self.read_or_copy(
            |c| redis::cmd("HGET").arg(&self.keys.data).arg(key).query(c),
            |copy| copy.get(key),
        )
    }

    /// A rewrite keeps the key's age; `setItem` (no tag) keeps an existing tag.
    fn set(&self, key: &str, value: &str, tag: Option<&str>) -> Result<(), StorageError> {
        let k = &self.keys;
        let (seq, version): (i64, i64) = self.run(|c| {
            self.scripts
                .set
                .key(&k.seq)
                .key(&k.order)
                .key(&k.data)
                .key(&k.tag_of)
                .key(&k.version)
                .arg(key)
                .arg(value)
                .arg(tag.unwrap_or(""))
                .arg(if tag.is_some() { "1" } else { "0" })
                .arg(&k.tag_prefix)
                .invoke(c)
        })?;
        let write = Write::Set {
            key,
            value,
            seq,
            tag,
        };
        self.mirror.applied(version, write);
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), StorageError> {
        let k = &self.keys;
        let version: i64 = self.run(|c| {
            self.scripts
                .remove
                .key(&k.order)
                .key(&k.data)
                .key(&k.tag_of)
                .key(&k.version)
                .arg(key)
                .arg(&k.tag_prefix)
                .invoke(c)
        })?;
        self.mirror.applied(version, Write::Remove { key });
        Ok(())
    }

    fn items(&self, tag: Option<&str>) -> Result<Vec<(String, String)>, StorageError> {
        self.read(tag)
    }

    fn remove_by_tag(&self, tag: &str) -> Result<usize, StorageError> {
        let k = &self.keys;
        let tag_key = k.tag(tag);
        let (count, version): (i64, i64) = self.run(|c| {
            self.scripts
                .remove_by_tag
                .key(&k.order)
                .key(&k.data)
                .key(&k.tag_of)
                .key(&tag_key)
                .key(&k.version)
                .invoke(c)
        })?;
        self.mirror.applied(version, Write::RemoveTag { tag });
        Ok(usize::try_from(count).unwrap_or(0))
    }
}
