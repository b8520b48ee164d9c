//! Records the core stores in the KV (JSON values; docs/kv-schema.md).

use std::collections::BTreeMap;

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
    /// The call in progress (see `crate::calls`): set when someone joins an
    /// empty room, cleared when the last participant leaves or times out,
    /// so every edge writes the room's events to the same record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// Region RTTs (ms) from the join that chose the room's relay (its
    /// `probes`), so a reroute moves the call to the region nearest its
    /// callers, not merely the least loaded one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub participant: String,
    pub at_ms: u64,
}

/// `relay-crashed/<relay>`: see [`crate::keys::relay_crashed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    pub at_ms: u64,
    /// The edge that held the relay's heartbeat connection.
    pub edge: String,
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
    /// Recent CPU utilization samples, percent of what the relay can use
    /// (see [`crate::health::utilization`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<u16>,
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
        Some(raw) => Ok((decode(key, Some(&raw))?, Some(raw))),
    }
}

/// Parse the record `raw` read at `key` (`None`: absent).
pub fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    raw: Option<&[u8]>,
) -> Result<Option<T>, KvError> {
    raw.map(|raw| {
        serde_json::from_slice(raw).map_err(|e| KvError(format!("corrupt record at {key}: {e}")))
    })
    .transpose()
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
    /// Since when answers come far slower than this relay's usual (see
    /// origin's prober): queueing in the relay or congestion on its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_since_ms: Option<u64>,
    /// The relay's host answered probes with ICMP port unreachable: its
    /// process is gone (the fast way a crash is told from silence).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The verdict followed the relay's heartbeat connection to this edge
    /// closing (its host's kernel closes it when the process dies), then a
    /// probe refused or unanswered within a few round trips.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub link_closed: bool,
}

/// `call/<call>`: written once, when the call starts. The rest of the record
/// is events (`call-event/…`) and quality reports (`call-quality/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    pub call: String,
    pub room: String,
    pub started_ms: u64,
    /// Edge that handled the first join.
    pub edge: String,
}

/// `call-event/<call>/<at>-<suffix>`: one thing that happened in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: CallEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CallEventKind {
    /// A participant joined (fresh, not a resume) through `edge`; `relay` is
    /// the room's relay it was given.
    Join {
        participant: String,
        identity: String,
        edge: String,
        relay: String,
    },
    /// A participant that was away came back, possibly on another edge.
    Resume { participant: String, edge: String },
    /// A participant's connection dropped without `leave` (it may resume).
    Away { participant: String },
    /// A participant is gone: `reason` is `leave` (it said so) or `timeout`
    /// (away longer than the grace period).
    Leave { participant: String, reason: String },
    /// The room moved from relay `from` to `to`. `since_ms` is when the
    /// trouble began as far as signaling knows: the lost relay's last
    /// heartbeat, or the first caller's stall report.
    Reroute {
        from: Option<String>,
        to: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// A caller's audio gap around a relay switch, as its SDK measured it.
    Gap {
        participant: String,
        relay: Option<String>,
        gap_ms: u64,
    },
    /// The call is over: `reason` is `empty` (the last participant left) or
    /// `timeout` (everyone left was away past the grace period).
    End { reason: String },
}

/// `call-quality/<call>/<participant>`: what one participant's `stats`
/// reports said, folded into a summary (docs/protocol.md, `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub participant: String,
    pub reports: u32,
    pub first_ms: u64,
    pub last_ms: u64,
    /// Relay named in the latest report.
    #[serde(default)]
    pub relay: Option<String>,
    /// Per remote participant, as this participant measured its link.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, PeerQuality>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerQuality {
    /// Audio RTP counters of the link, as last reported (cumulative).
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Inbound jitter, ms: worst and mean over the reports that had it.
    pub jitter_ms_max: Option<f64>,
    pub jitter_ms_mean: Option<f64>,
    /// Round-trip time of the media path, ms: worst and mean.
    pub rtt_ms_max: Option<f64>,
    pub rtt_ms_mean: Option<f64>,
    #[serde(default)]
    pub jitter_samples: u32,
    #[serde(default)]
    pub rtt_samples: u32,
}
