//! Records the core stores in the KV (JSON values; docs/kv-schema.md).

use serde::{Deserialize, Serialize};
use tern_common::relay::Heartbeat;

use crate::kv::{KvError, KvRead};

/// `room/<room>`: who is in the room and which relays carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub members: Vec<Member>,
    /// Relay the room's participants are sent to (all on one relay keeps media
    /// to a single hop); re-chosen when it becomes unhealthy.
    #[serde(default)]
    pub relay: Option<String>,
    /// Recent reports that inbound audio stalled, one per participant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub participant: String,
    pub at_ms: u64,
}

/// `relay-suspect/<relay>`: callers reported the relay silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub at_ms: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub participant: String,
    pub identity: String,
    pub session: String,
    /// Current connection; `None` while away (dropped, within grace).
    pub conn: Option<String>,
    pub joined_at_ms: u64,
    #[serde(default)]
    pub away_since_ms: Option<u64>,
}

impl Room {
    pub fn member(&self, participant: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.participant == participant)
    }

    /// Connections of everyone present except `except`.
    pub fn others<'a>(&'a self, except: &'a str) -> impl Iterator<Item = (&'a Member, &'a str)> {
        self.members
            .iter()
            .filter(move |m| m.participant != except)
            .filter_map(|m| m.conn.as_deref().map(|c| (m, c)))
    }
}

/// `session/<session>`: lets a reconnecting client resume its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub participant: String,
    pub room: String,
    pub identity: String,
}

/// `conn/<conn>`: which participant a connection speaks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnBinding {
    pub participant: String,
    pub room: String,
    pub session: String,
}

/// `relay/<id>`: the last heartbeat of a relay and when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayRecord {
    pub heartbeat: Heartbeat,
    pub received_at_ms: u64,
    /// Recent inter-arrival times in ms (phi-accrual history, see
    /// [`crate::health`]).
    #[serde(default)]
    pub intervals: Vec<u32>,
}

/// `relays`: ids of every relay that has heartbeated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayIndex {
    pub ids: Vec<String>,
}

/// Read and decode a JSON record; also returns the raw bytes, which CAS
/// writes need as their expected value.
pub fn read<T: serde::de::DeserializeOwned>(
    kv: &dyn KvRead,
    key: &str,
) -> Result<(Option<T>, Option<Vec<u8>>), KvError> {
    match kv.get(key)? {
        None => Ok((None, None)),
        Some(raw) => {
            let v = serde_json::from_slice(&raw)
                .map_err(|e| KvError(format!("corrupt record at {key}: {e}")))?;
            Ok((Some(v), Some(raw)))
        }
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

/// A compare-and-swap of `key` from the raw value read (`expected`) to `v`.
pub fn cas<T: Serialize>(
    key: impl Into<String>,
    expected: Option<Vec<u8>>,
    v: &T,
) -> crate::kv::Write {
    crate::kv::Write::Cas {
        key: key.into(),
        expected,
        value: encode(v),
    }
}

/// `relay-probe/<edge>/<relay>`: what an edge's active probes of a relay
/// (STUN Binding to its UDP listener) currently say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Since when probes go unanswered; `None` while they are answered.
    pub failing_since_ms: Option<u64>,
}
