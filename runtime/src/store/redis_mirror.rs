//! This node's copy of a container's Redis store, so that reads go on while Redis
//! cannot be reached (SPEC 8: losing Redis leaves a read-only store).
//!
//! Every write script bumps the store's version (`mimhost:store:{NAME}:ver`). A
//! refresher thread ([`spawn_refresher`]) compares it with the copy's every
//! [`REFRESH`] and reads the whole store again when another node changed it; this
//! node's own writes are applied to the copy at once when they follow its version.
//! So while Redis is away a read answers what Redis held at most [`REFRESH`] (plus
//! one read of the store) before it went, and this node's own writes. A store over
//! [`MAX_BYTES`] is not copied: its reads throw while Redis is away, as its writes do.

use super::redis_store::StoreKeys;
use redis::{Client, Connection, Script};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How often the refresher looks at the store's version.
pub const REFRESH: Duration = Duration::from_millis(500);
/// The largest store (keys plus values, in bytes) this node keeps a copy of.
pub const MAX_BYTES: usize = 64 << 20;
/// How long the refresher waits for Redis on one call.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// The whole store with its version, read atomically: `version, then per key
/// oldest first: key, seq, value, tag ('1' .. tag, or '0' for none)`.
const DUMP: &str = r"
local out = { redis.call('GET', KEYS[4]) or '0' }
local keys = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #keys, 2 do
  local k = keys[i]
  local tag = redis.call('HGET', KEYS[3], k)
  out[#out + 1] = k
  out[#out + 1] = keys[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], k) or ''
  out[#out + 1] = tag and ('1' .. tag) or '0'
end
return out
";

/// One item of the copy.
#[derive(Debug, Clone)]
struct Item {
    seq: i64,
    value: String,
    tag: Option<String>,
}

/// The copy's contents; `version` is `None` when it is not known to match any
/// version of the store (never read, or a write it could not follow). A store found
/// too big keeps its version with no copy (`filled` false), so it is read again only
/// once it changed.
#[derive(Debug, Default)]
struct State {
    version: Option<i64>,
    items: HashMap<String, Item>,
    order: BTreeMap<i64, String>,
    /// Whether the copy was ever filled; reads need it.
    filled: bool,
    /// The store was over [`MAX_BYTES`] when last read (said once in the log).
    too_big: bool,
}

impl State {
    fn insert(&mut self, key: String, item: Item) {
        if let Some(old) = self.items.get(&key) {
            self.order.remove(&old.seq);
        }
        self.order.insert(item.seq, key.clone());
        self.items.insert(key, item);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.items.remove(key) {
            self.order.remove(&old.seq);
        }
    }
}

/// A container's store as this node last saw it.
#[derive(Debug, Default)]
pub struct Mirror {
    state: Mutex<State>,
}

/// A write this node made, to apply to the copy.
pub enum Write<'a> {
    /// `setItem`/`setItemWithTag`: `seq` is the key's age; `tag` is `Some` when the
    /// call set one (`setItem` keeps an existing tag).
    Set {
        key: &'a str,
        value: &'a str,
        seq: i64,
        tag: Option<&'a str>,
    },
    /// `removeItem`.
    Remove { key: &'a str },
    /// `removeItemsByTag`.
    RemoveTag { tag: &'a str },
}

impl Mirror {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version the copy matches, if any.
    pub fn version(&self) -> Option<i64> {
        self.lock().version
    }

    /// The value of `key` in the copy; `None` outside: the copy was never filled.
    pub fn get(&self, key: &str) -> Option<Option<String>> {
        let state = self.lock();
        state
            .filled
            .then(|| state.items.get(key).map(|i| i.value.clone()))
    }

    /// Every item (of `tag`, when given) oldest first; `None`: never filled.
    pub fn items(&self, tag: Option<&str>) -> Option<Vec<(String, String)>> {
        let state = self.lock();
        if !state.filled {
            return None;
        }
        let out = state
            .order
            .values()
            .filter_map(|k| state.items.get(k).map(|i| (k, i)))
            .filter(|(_, i)| tag.is_none() || i.tag.as_deref() == tag)
            .map(|(k, i)| (k.clone(), i.value.clone()))
            .collect();
        Some(out)
    }

    /// Applies this node's write, acknowledged by Redis at store `version`: when the
    /// copy was at the version before, it follows; otherwise another node wrote in
    /// between and the copy waits for the refresher to read the store again.
    pub fn applied(&self, version: i64, write: Write<'_>) {
        let mut state = self.lock();
        if state.version != Some(version - 1) {
            state.version = None;
            return;
        }
        if !state.filled {
            // Too big to copy: only follow the version.
            state.version = Some(version);
            return;
        }
        match write {
            Write::Set {
                key,
                value,
                seq,
                tag,
            } => {
                let tag = match tag {
                    Some(t) => Some(t.to_string()),
                    None => state.items.get(key).and_then(|i| i.tag.clone()),
                };
                let item = Item {
                    seq,
                    value: value.to_string(),
                    tag,
                };
                state.insert(key.to_string(), item);
            }
            Write::Remove { key } => state.remove(key),
            Write::RemoveTag { tag } => {
                let gone: Vec<String> = state
                    .items
                    .iter()
                    .filter(|(_, i)| i.tag.as_deref() == Some(tag))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    state.remove(&k);
                }
            }
        }
        state.version = Some(version);
    }

    /// Replaces the copy with a dump read by [`DUMP`]; a dump over [`MAX_BYTES`]
    /// empties it (reads then throw while Redis is away) and keeps its version, so
    /// the refresher reads it again only when it changed.
    fn replace(&self, flat: Vec<String>) {
        let mut it = flat.into_iter();
        let version = it.next().and_then(|v| v.parse::<i64>().ok());
        let mut next = State {
            version,
            filled: true,
            ..State::default()
        };
        let mut bytes = 0usize;
        while let (Some(key), Some(seq), Some(value), Some(tag)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            bytes += key.len() + value.len();
            if bytes > MAX_BYTES {
                let mut state = self.lock();
                if !state.too_big {
                    tracing::warn!(
                        "storage: the store is over {} MiB; this node keeps no copy, so its reads fail while Redis is away",
                        MAX_BYTES >> 20
                    );
                }
                *state = State {
                    version,
                    too_big: true,
                    ..State::default()
                };
                return;
            }
            let seq = seq.parse::<f64>().map(|s| s as i64).unwrap_or(0);
            let tag = tag.strip_prefix('1').map(str::to_string);
            next.insert(key, Item { seq, value, tag });
        }
        *self.lock() = next;
    }
}

/// Keeps `mirror` in step with the store in the Redis of `client` on a thread of
/// its own, until the mirror is dropped (the store closed).
pub fn spawn_refresher(client: Client, keys: StoreKeys, mirror: &Arc<Mirror>) {
    let mirror = Arc::downgrade(mirror);
    let spawned = std::thread::Builder::new()
        .name("store-mirror".into())
        .spawn(move || refresh_loop(&client, &keys, &mirror));
    if let Err(e) = spawned {
        tracing::warn!(
            "storage: no copy of the store is kept ({e}); reads fail while Redis is away"
        );
    }
}

fn refresh_loop(client: &Client, keys: &StoreKeys, mirror: &Weak<Mirror>) {
    let dump = Script::new(DUMP);
    let mut conn: Option<Connection> = None;
    loop {
        let Some(m) = mirror.upgrade() else { return };
        if conn.is_none() {
            conn = connect(client);
        }
        if let Some(c) = conn.as_mut() {
            if refresh_once(c, keys, &dump, &m).is_err() {
                conn = None;
            }
        }
        drop(m);
        std::thread::sleep(REFRESH);
    }
}

fn connect(client: &Client) -> Option<Connection> {
    let c = client.get_connection_with_timeout(IO_TIMEOUT).ok()?;
    c.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    c.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    Some(c)
}

/// Reads the store again when its version is not the copy's.
fn refresh_once(
    c: &mut Connection,
    keys: &StoreKeys,
    dump: &Script,
    mirror: &Mirror,
) -> redis::RedisResult<()> {
    let version: Option<i64> = redis::cmd("GET").arg(keys.version()).query(c)?;
    if mirror.version() == Some(version.unwrap_or(0)) {
        return Ok(());
    }
    let flat: Vec<String> = dump
        .key(keys.order())
        .key(keys.data())
        .key(keys.tag_of())
        .key(keys.version())
        .invoke(c)?;
    mirror.replace(flat);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(version: i64) -> Mirror {
        let m = Mirror::default();
        m.replace(vec![
            version.to_string(),
            "a".into(),
            "1".into(),
            "A".into(),
            "1users".into(),
            "b".into(),
            "2".into(),
            "B".into(),
            "0".into(),
        ]);
        m
    }

    #[test]
    fn a_store_too_big_is_not_copied_and_not_read_again_until_it_changes() {
        let m = filled(7);
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        m.replace(vec![
            "9".into(),
            "a".into(),
            "1".into(),
            big.clone(),
            "0".into(),
            "b".into(),
            "2".into(),
            big,
            "0".into(),
        ]);
        assert_eq!(m.get("a"), None, "no copy: reads fail while Redis is away");
        assert_eq!(m.version(), Some(9), "the refresher skips version 9");
        m.applied(10, Write::Remove { key: "a" });
        assert_eq!(m.version(), Some(10), "own writes keep it in step");
        assert_eq!(m.items(None), None);
        m.applied(12, Write::Remove { key: "b" });
        assert_eq!(m.version(), None, "another node wrote: read it again");
    }

    #[test]
    fn an_empty_copy_answers_nothing() {
        let m = Mirror::default();
        assert_eq!(m.get("a"), None);
        assert_eq!(m.items(None), None);
    }

    #[test]
    fn a_dump_keeps_order_values_and_tags() {
        let m = filled(7);
        assert_eq!(m.version(), Some(7));
        assert_eq!(m.get("a"), Some(Some("A".into())));
        assert_eq!(m.get("z"), Some(None));
        let all = m.items(None).expect("filled");
        assert_eq!(
            all,
            vec![("a".into(), "A".into()), ("b".into(), "B".into())]
        );
        assert_eq!(m.items(Some("users")).expect("filled").len(), 1);
    }

    #[test]
    fn own_writes_follow_the_version_and_keep_age_and_tag() {
        let m = filled(7);
        m.applied(
            8,
            Write::Set {
                key: "a",
                value: "A2",
                seq: 1,
                tag: None,
            },
        );
        m.applied(
            9,
            Write::Set {
                key: "c",
                value: "C",
                seq: 3,
                tag: Some("users"),
            },
        );
        let all = m.items(None).expect("filled");
        assert_eq!(all[0], ("a".into(), "A2".into()));
        assert_eq!(m.items(Some("users")).expect("filled").len(), 2);
        m.applied(10, Write::RemoveTag { tag: "users" });
        m.applied(11, Write::Remove { key: "b" });
        assert_eq!(m.items(None).expect("filled"), vec![]);
        assert_eq!(m.version(), Some(11));
    }

    #[test]
    fn a_write_after_another_nodes_marks_the_copy_stale() {
        let m = filled(7);
        m.applied(9, Write::Remove { key: "a" });
        assert_eq!(m.version(), None);
        // Still answers its last contents until the refresher reads the store.
        assert_eq!(m.get("a"), Some(Some("A".into())));
    }
}
