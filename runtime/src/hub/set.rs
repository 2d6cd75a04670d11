//! A set of session handles looked up by session id, without a copy of the id.
//!
//! The hub keeps every session in three maps (all, per container, per dispatch
//! channel). Keyed by `String`, each held its own copy of the id (one allocation
//! each) and a 32-byte entry; here the entry is the handle's pointer and the key is
//! the id inside the handle (issue 11: memory per idle session).

use super::SessionHandle;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A handle hashed and compared by its session id.
struct ById(Arc<SessionHandle>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same as hashing the `&str` id, so lookups by `&str` find it.
        self.0.info.id.as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.info.id == other.0.info.id
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.info.id
    }
}

/// Sessions by id.
#[derive(Default)]
pub(super) struct SessionSet(HashSet<ById>);

impl SessionSet {
    /// Adds `session` (replacing one with the same id).
    pub fn insert(&mut self, session: Arc<SessionHandle>) {
        self.0.replace(ById(session));
    }

    /// Removes the session with `id`.
    pub fn remove(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// The session with `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<SessionHandle>> {
        self.0.get(id).map(|s| &s.0)
    }

    /// Every session, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<SessionHandle>> {
        self.0.iter().map(|s| &s.0)
    }

    /// How many sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SessionKind;
    use mimhost_bindings::SessionInfo;

    fn handle(id: &str) -> Arc<SessionHandle> {
        let info = SessionInfo {
            id: id.into(),
            ..SessionInfo::default()
        };
        Arc::new(SessionHandle::new(
            info,
            "c".into(),
            SessionKind::Dispatch,
            Arc::default(),
        ))
    }

    #[test]
    fn sessions_are_found_by_their_id() {
        let mut set = SessionSet::default();
        set.insert(handle("n-1-0"));
        set.insert(handle("n-1-1"));
        set.insert(handle("n-1-1"));
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("n-1-1").map(|s| s.info.id.as_str()), Some("n-1-1"));
        assert!(set.get("n-1-2").is_none());
        set.remove("n-1-0");
        set.remove("n-1-9");
        assert_eq!(set.values().count(), 1);
        set.remove("n-1-1");
        assert!(set.is_empty());
    }
}
