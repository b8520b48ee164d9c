//! The embedded key-value store: one redb file under the data directory.
//!
//! Buckets map to redb tables. Writes use `Durability::None` and a background
//! task makes them durable every [`FLUSH_INTERVAL`] with one fsync (group
//! commit): presence state changes on every join and heartbeat, and an fsync
//! per frame would cap signaling at a few hundred frames a second. A power
//! loss can lose at most that interval of presence changes, which clients
//! repair by resuming; nothing else is lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::error::StoreError;
use crate::store::sync_gate::{SyncError, SyncGate};

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The store's file in its directory.
const FILE_NAME: &str = "tern.redb";

/// Whether `dir` holds an embedded store.
pub fn exists(dir: &Path) -> bool {
    dir.join(FILE_NAME).exists()
}

/// Shared handle to the embedded store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    dirty: Arc<AtomicBool>,
    /// Its syncer thread holds the database open until the last handle
    /// drops the gate.
    sync: Arc<SyncGate>,
}

fn table(bucket: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(bucket)
}

impl EmbeddedStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let db = Arc::new(db);
        let syncer_db = db.clone();
        // One empty durable commit makes every commit before it durable.
        let sync = SyncGate::new(move || {
            let mut tx = syncer_db.begin_write().map_err(|e| e.to_string())?;
            tx.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())
        })
        .map_err(backend)?;
        Ok(EmbeddedStore {
            db,
            dirty: Arc::new(AtomicBool::new(false)),
            sync: Arc::new(sync),
        })
    }

    /// One read in its own transaction.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.snapshot()?.get(bucket, key)
    }

    /// One write in its own (lazily durable) transaction.
    pub fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut b = self.begin()?;
        b.set(bucket, key, value)?;
        b.commit()
    }

    /// [`Batch::compare_and_swap`] in its own transaction.
    pub fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let mut b = self.begin()?;
        let r = b.compare_and_swap(bucket, key, expected, value)?;
        b.commit()?;
        Ok(r)
    }

    pub fn list_keys(&self, bucket: &str) -> Result<Vec<String>, StoreError> {
        self.list_prefix(bucket, "")
    }

    /// Make every commit so far durable, if there were any.
    pub fn flush(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(backend)?;
        tx.set_durability(Durability::Immediate).map_err(backend)?;
        tx.commit().map_err(backend)
    }

    /// Call right after a commit that must not be acknowledged before it
    /// would survive a crash: resolves once it is durable, sharing one
    /// fsync with every other commit waiting (group commit, see
    /// `sync_gate.rs`). Awaiting holds no thread.
    pub fn wait_durable(
        &self,
    ) -> impl std::future::Future<Output = Result<(), SyncError>> + Send + 'static {
        self.sync.wait_durable()
    }

    /// A consistent read view: every read through it sees the same state.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot(self.db.begin_read().map_err(backend)?))
    }

    /// Start a write transaction that groups several operations into one
    /// commit. Origin opens one per component call on its first write and
    /// commits it when the call returns: one commit instead of one per key.
    pub fn begin(&self) -> Result<Batch, StoreError> {
        let mut tx = self.db.begin_write().map_err(backend)?;
        tx.set_durability(Durability::None).map_err(backend)?;
        Ok(Batch {
            tx,
            dirty: self.dirty.clone(),
        })
    }

    /// Every key of every bucket, read in ONE read transaction: a consistent
    /// snapshot for backups, while writers go on (redb is MVCC: readers
    /// never block writers). Calls `f(bucket, key, value)` for each entry;
    /// returns how many there were.
    pub fn dump<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&str, &str, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        use redb::TableHandle as _;
        let tx = self.db.begin_read().map_err(backend)?;
        let names: Vec<String> = tx
            .list_tables()
            .map_err(backend)?
            .map(|h| h.name().to_string())
            .collect();
        let mut n = 0;
        for name in names {
            let t = tx.open_table(table(&name)).map_err(backend)?;
            for entry in t.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                f(&name, k.value(), v.value())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether no bucket holds a key (restore only writes into an empty
    /// store unless forced).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        use redb::{ReadableTableMetadata as _, TableHandle as _};
        let tx = self.db.begin_read().map_err(backend)?;
        for h in tx.list_tables().map_err(backend)? {
            let t = tx.open_table(table(h.name())).map_err(backend)?;
            if !t.is_empty().map_err(backend)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Write `entries` (bucket, key, value) in one transaction, durable when
    /// this returns: a restore is all or nothing.
    pub fn load<E: From<StoreError>>(
        &self,
        entries: impl Iterator<Item = Result<(String, String, Vec<u8>), E>>,
    ) -> Result<u64, E> {
        let mut tx = self.db.begin_write().map_err(backend)?;
        tx.set_durability(Durability::Immediate).map_err(backend)?;
        let mut n = 0;
        {
            // Entries come grouped by bucket: keep its table open.
            let mut open: Option<(String, redb::Table<&str, &[u8]>)> = None;
            for e in entries {
                let (bucket, key, value) = e?;
                if open.as_ref().is_none_or(|(b, _)| *b != bucket) {
                    let t = tx.open_table(table(&bucket)).map_err(backend)?;
                    open = Some((bucket, t));
                }
                let (_, t) = open.as_mut().expect("opened above");
                t.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                n += 1;
            }
        }
        tx.commit().map_err(backend)?;
        Ok(n)
    }
}

/// A read transaction. Origin opens one per component call on its first
/// read, so a call's reads cost one transaction and see one state.
pub struct Snapshot(redb::ReadTransaction);

impl Snapshot {
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = match self.0.open_table(table(bucket)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let v = t.get(key).map_err(backend)?.map(|v| v.value().to_vec());
        Ok(v)
    }
}

/// An open write transaction. Reads through it see its own writes. Dropped
/// without [`Batch::commit`], it changes nothing.
pub struct Batch {
    tx: redb::WriteTransaction,
    dirty: Arc<AtomicBool>,
}

impl Batch {
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tx.open_table(table(bucket)).map_err(backend)?;
        let v = t.get(key).map_err(backend)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    pub fn set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(table(bucket)).map_err(backend)?;
        t.insert(key, value).map_err(backend)?;
        Ok(())
    }

    pub fn delete(&mut self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(table(bucket)).map_err(backend)?;
        t.remove(key).map_err(backend)?;
        Ok(())
    }

    /// As [`EmbeddedStore::compare_and_swap`], inside this transaction.
    pub fn compare_and_swap(
        &mut self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let mut t = self.tx.open_table(table(bucket)).map_err(backend)?;
        let current = t.get(key).map_err(backend)?.map(|v| v.value().to_vec());
        if current.as_deref() != expected {
            return Ok(Err(current));
        }
        t.insert(key, value).map_err(backend)?;
        Ok(Ok(()))
    }

    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().map_err(backend)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

/// Call records (origin/src/calls.rs): ordered listing by prefix and
/// deletion, natively (the component only has wasi:keyvalue's full scan).
impl EmbeddedStore {
    /// Keys of `bucket` that start with `prefix`, in key order: a redb range,
    /// so it costs what it returns, not the size of the bucket.
    pub fn list_prefix(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = match tx.open_table(table(bucket)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let mut keys = Vec::new();
        for entry in t.range::<&str>(prefix..).map_err(backend)? {
            let (k, _) = entry.map_err(backend)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            keys.push(k.to_string());
        }
        Ok(keys)
    }

    /// Up to `limit` keys of `bucket` under `prefix`, newest first (in
    /// descending key order), each without the prefix, and only those
    /// below `prefix + before` when `before` is given: one page of an
    /// index, read as a redb range, so it costs what it returns.
    pub fn page_prefix_rev(
        &self,
        bucket: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = match tx.open_table(table(bucket)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let end = match before {
            Some(b) => format!("{prefix}{b}"),
            None => prefix_end(prefix),
        };
        let mut out = Vec::new();
        for entry in t
            .range::<&str>(prefix..end.as_str())
            .map_err(backend)?
            .rev()
        {
            if out.len() == limit {
                break;
            }
            let (k, _) = entry.map_err(backend)?;
            out.push(k.value()[prefix.len()..].to_string());
        }
        Ok(out)
    }

    /// Delete `keys` of `bucket` in one transaction (group-committed).
    pub fn delete_keys(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        let mut b = self.begin()?;
        for k in keys {
            b.delete(bucket, k)?;
        }
        b.commit()
    }
}

/// The least string above every string that starts with `prefix` (its
/// last character incremented): the exclusive end of a prefix range.
fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    // Only an empty prefix (or one of char::MAX) gets here: no upper bound
    // short of the largest key, which redb ranges cannot name; use one
    // above any key Tern writes.
    char::MAX.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pages_run_newest_first_below_the_cursor() {
        let dir = std::env::temp_dir().join(format!("tern-store-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = EmbeddedStore::open(&dir).unwrap();
        for k in ["a/1", "a/2", "a/3", "a0", "b/1", "a/2/x"] {
            s.set("default", k, b"").unwrap();
        }
        let page = |before, limit| s.page_prefix_rev("default", "a/", before, limit).unwrap();
        assert_eq!(page(None, 10), ["3", "2/x", "2", "1"]);
        assert_eq!(page(None, 2), ["3", "2/x"]);
        assert_eq!(page(Some("2"), 10), ["1"]);
        assert_eq!(page(Some("1"), 10), Vec::<String>::new());
        assert!(s
            .page_prefix_rev("missing", "a/", None, 5)
            .unwrap()
            .is_empty());
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_survive_reopen_after_flush() {
        let dir = std::env::temp_dir().join(format!("tern-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = EmbeddedStore::open(&dir).unwrap();
            s.set("default", "k", b"v").unwrap();
            assert_eq!(
                s.compare_and_swap("default", "k", Some(b"x"), b"w")
                    .unwrap(),
                Err(Some(b"v".to_vec()))
            );
            assert_eq!(
                s.compare_and_swap("default", "k", Some(b"v"), b"w")
                    .unwrap(),
                Ok(())
            );
            assert_eq!(
                s.compare_and_swap("default", "new", None, b"1").unwrap(),
                Ok(())
            );
            s.flush().unwrap();
        }
        let s = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(s.get("default", "k").unwrap(), Some(b"w".to_vec()));
        let mut keys = s.list_keys("default").unwrap();
        keys.sort();
        assert_eq!(keys, ["k", "new"]);
        assert_eq!(s.get("other", "k").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
