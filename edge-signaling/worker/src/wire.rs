//! Messages between the Worker's Durable Objects, and the internal paths
//! they are sent to. The Worker routes only public paths to the objects, so
//! these are reachable only from inside the deployment.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Keys and raw values, sorted (prefix listing is a range scan).
pub type Entries = BTreeMap<String, Vec<u8>>;

/// Room → directory: the directory's keys, raw (`GET`).
pub const SNAPSHOT_PATH: &str = "/internal/directory/snapshot";
/// Room → directory: changes to directory keys a room's input made (`POST`).
pub const WRITES_PATH: &str = "/internal/directory/writes";
/// Directory → room: "a relay failed; here is the directory" (`POST`, body a
/// [`Snapshot`]); the answer is the room's [`DirectoryWrites`].
pub const REROUTE_PATH: &str = "/internal/room/reroute";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed message between Durable Objects: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed value for key {0:?}")]
    Value(String),
}

/// Raw key-value entries of the directory, as the core stored them. Values
/// are base64 so any bytes survive JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    entries: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn of(entries: &Entries) -> Snapshot {
        Snapshot {
            entries: entries
                .iter()
                .map(|(k, v)| (k.clone(), B64.encode(v)))
                .collect(),
        }
    }

    pub fn into_entries(self) -> Result<Entries, WireError> {
        self.entries
            .into_iter()
            .map(|(k, v)| match B64.decode(&v) {
                Ok(bytes) => Ok((k, bytes)),
                Err(_) => Err(WireError::Value(k)),
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }

    pub fn from_json(s: &str) -> Result<Snapshot, WireError> {
        Ok(serde_json::from_str(s)?)
    }
}

/// Changes a room made to keys the directory holds (room-on-relay markers,
/// relay suspicion), in the order they apply: puts, then deletes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryWrites {
    #[serde(default)]
    pub put: BTreeMap<String, String>,
    #[serde(default)]
    pub delete: Vec<String>,
}

impl DirectoryWrites {
    pub fn put(&mut self, key: &str, value: &[u8]) {
        self.delete.retain(|k| k != key);
        self.put.insert(key.to_string(), B64.encode(value));
    }

    pub fn delete(&mut self, key: &str) {
        self.put.remove(key);
        if !self.delete.iter().any(|k| k == key) {
            self.delete.push(key.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }

    /// Fold later changes into these.
    pub fn extend(&mut self, later: DirectoryWrites) {
        for (k, v) in later.put {
            self.delete.retain(|d| d != &k);
            self.put.insert(k, v);
        }
        for k in later.delete {
            self.put.remove(&k);
            if !self.delete.contains(&k) {
                self.delete.push(k);
            }
        }
    }

    /// The puts decoded, and the deletes.
    pub fn decode(self) -> Result<(Entries, Vec<String>), WireError> {
        let puts = Snapshot { entries: self.put }.into_entries()?;
        Ok((puts, self.delete))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }

    pub fn from_json(s: &str) -> Result<DirectoryWrites, WireError> {
        Ok(serde_json::from_str(s)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_keep_any_bytes() {
        let entries = Entries::from([
            ("relay/a".into(), vec![0, 255, b'{']),
            ("relays".into(), vec![]),
        ]);
        let back = Snapshot::from_json(&Snapshot::of(&entries).to_json())
            .unwrap()
            .into_entries()
            .unwrap();
        assert_eq!(back, entries);
    }

    #[test]
    fn later_writes_win() {
        let mut w = DirectoryWrites::default();
        w.put("relay-room/a/r", b"");
        w.delete("relay-room/a/r");
        w.put("relay-room/b/r", b"");
        let mut later = DirectoryWrites::default();
        later.delete("relay-room/b/r");
        later.put("relay-room/a/r", b"");
        w.extend(later);
        let (puts, deletes) = DirectoryWrites::from_json(&w.to_json())
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(puts.keys().collect::<Vec<_>>(), ["relay-room/a/r"]);
        assert_eq!(deletes, ["relay-room/b/r"]);
    }
}
