//! The core's key-value store inside a Durable Object.
//!
//! The core reads synchronously ([`KvRead`]); Durable Object storage is async.
//! An object is the only writer of the keys it holds, so a copy of them
//! loaded once when the object wakes stays exact: reads come from memory,
//! and writes change memory at once and are collected in [`Changes`], which
//! the object persists before anything the input caused leaves it.
//!
//! In a room, the relay directory's keys are not the room's: they come from a
//! snapshot the directory object handed over for this input, and writes to
//! them go back to the directory (see [`crate::keyspace`]).

use std::collections::BTreeMap;

use edge_signaling::apply::KvStore;
use edge_signaling::kv::{KvError, KvRead};

use crate::keyspace::{self, Home};
use crate::wire::DirectoryWrites;

pub use crate::wire::Entries;

/// What one input changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// This object's keys to write (`Some`) or delete (`None`).
    pub own: BTreeMap<String, Option<Vec<u8>>>,
    /// Changes for the directory object (only from a room).
    pub directory: DirectoryWrites,
}

/// Where a store finds the relay directory's keys.
#[derive(Debug)]
pub enum DirectoryKeys {
    /// In its own entries: this store is the directory object's.
    Own,
    /// In a snapshot from the directory object (a room's store). `None` when
    /// the input needs no directory: reading it then is a glue bug, reported
    /// as a store failure rather than answered wrongly.
    Snapshot(Option<Entries>),
}

pub struct CachedStore<'a> {
    own: &'a mut Entries,
    directory: DirectoryKeys,
    changes: Changes,
}

fn range<'e>(entries: &'e Entries, prefix: &str) -> impl Iterator<Item = String> + 'e {
    let prefix = prefix.to_string();
    entries
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
}

impl<'a> CachedStore<'a> {
    pub fn new(own: &'a mut Entries, directory: DirectoryKeys) -> Self {
        CachedStore {
            own,
            directory,
            changes: Changes::default(),
        }
    }

    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// Which entries a read of `key` (or a listing of a prefix) looks at.
    fn source(&self, key: &str) -> Result<&Entries, KvError> {
        match (&self.directory, keyspace::home(key)) {
            (DirectoryKeys::Snapshot(Some(s)), Home::Directory) => Ok(s),
            (DirectoryKeys::Snapshot(None), Home::Directory) => Err(KvError(format!(
                "{key:?} belongs to the relay directory, which this input did not load"
            ))),
            _ => Ok(self.own),
        }
    }

    fn set(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        let home = match self.directory {
            DirectoryKeys::Own => Home::Room,
            DirectoryKeys::Snapshot(_) => keyspace::home(key),
        };
        if home != Home::Room {
            match value {
                Some(v) => self.changes.directory.put(key, v),
                None => self.changes.directory.delete(key),
            }
            // Later reads of this input see the change.
            if let DirectoryKeys::Snapshot(Some(s)) = &mut self.directory {
                if home == Home::Directory {
                    match value {
                        Some(v) => s.insert(key.to_string(), v.to_vec()),
                        None => s.remove(key),
                    };
                }
            }
        }
        if home != Home::Directory {
            match value {
                Some(v) => self.own.insert(key.to_string(), v.to_vec()),
                None => self.own.remove(key),
            };
            self.changes
                .own
                .insert(key.to_string(), value.map(<[u8]>::to_vec));
        }
        Ok(())
    }
}

impl KvRead for CachedStore<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.source(key)?.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(range(self.source(prefix)?, prefix).collect())
    }
}

impl KvStore for CachedStore<'_> {
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.set(key, Some(value))
    }

    fn delete(&mut self, key: &str) -> Result<(), KvError> {
        self.set(key, None)
    }

    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        if matches!(self.directory, DirectoryKeys::Snapshot(_)) && keyspace::home(key) != Home::Room
        {
            // A room only ever swaps its own roster; a swap on a copy of
            // someone else's key could not be atomic.
            return Err(KvError(format!(
                "{key:?} is the directory's; a room cannot swap it"
            )));
        }
        if self.own.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        self.set(key, Some(value))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_signaling::keys;

    #[test]
    fn a_room_reads_the_directory_from_its_snapshot_and_sends_it_writes() {
        let mut own = Entries::from([(keys::room("math"), b"{}".to_vec())]);
        let snap = Entries::from([(keys::RELAY_INDEX.to_string(), b"x".to_vec())]);
        let mut store = CachedStore::new(&mut own, DirectoryKeys::Snapshot(Some(snap)));
        assert_eq!(store.get(keys::RELAY_INDEX).unwrap(), Some(b"x".to_vec()));
        assert_eq!(
            store.get(&keys::room("math")).unwrap(),
            Some(b"{}".to_vec())
        );
        store.put(&keys::relay_room("r1", "math"), b"").unwrap();
        store.put(&keys::relay_suspect("r1"), b"s").unwrap();
        assert!(store
            .compare_and_swap(&keys::room("math"), Some(b"{}"), b"{\"a\":1}")
            .unwrap());
        assert!(!store
            .compare_and_swap(&keys::room("math"), Some(b"{}"), b"{}")
            .unwrap());
        assert!(store
            .compare_and_swap(keys::RELAY_INDEX, Some(b"x"), b"y")
            .is_err());
        assert_eq!(
            store.get(&keys::relay_suspect("r1")).unwrap(),
            Some(b"s".to_vec())
        );
        assert_eq!(
            store.list(&keys::relay_rooms_prefix("r1")).unwrap(),
            [keys::relay_room("r1", "math")]
        );
        let changes = store.into_changes();
        let (puts, deletes) = changes.directory.decode().unwrap();
        assert_eq!(
            puts.keys().cloned().collect::<Vec<_>>(),
            [keys::relay_room("r1", "math"), keys::relay_suspect("r1")]
        );
        assert!(deletes.is_empty());
        assert_eq!(
            changes.own.keys().cloned().collect::<Vec<_>>(),
            [keys::relay_room("r1", "math"), keys::room("math")]
        );
        assert!(!own.contains_key(&keys::relay_suspect("r1")));
    }

    #[test]
    fn reading_the_directory_without_a_snapshot_fails_loudly() {
        let mut own = Entries::new();
        let store = CachedStore::new(&mut own, DirectoryKeys::Snapshot(None));
        assert!(store.get(&keys::relay("r1")).is_err());
        assert!(store.get(&keys::conn("c")).unwrap().is_none());
    }

    #[test]
    fn the_directory_owns_every_key() {
        let mut own = Entries::new();
        let mut store = CachedStore::new(&mut own, DirectoryKeys::Own);
        assert!(store
            .compare_and_swap(keys::RELAY_INDEX, None, b"i")
            .unwrap());
        store.put(&keys::relay_room("r1", "math"), b"").unwrap();
        let changes = store.into_changes();
        assert!(changes.directory.is_empty());
        assert_eq!(changes.own.len(), 2);
        assert_eq!(own.len(), 2);
    }
}
