//! Records the core stores in the KV (JSON values; docs/kv-schema.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tern_common::relay::Heartbeat;

use crate::kv::{KvError, KvRead};

/// `room/<room>`: who is in the room and which relays carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// The roster: every participant present, or away within the grace
    /// period, in join order.
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

/// One participant's report (a `stall` frame) that inbound audio stopped on
/// the room's relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Participant that reported the stall.
    pub participant: String,
    /// When the report arrived (unix ms); reports count together within
    /// [`crate::health::STALL_WINDOW_MS`].
    pub at_ms: u64,
}

/// `relay-stalled-rooms/<relay>`: the rooms whose callers agreed their
/// audio stalled on the relay, and when. One room's callers can only move
/// their own call; the relay is suspected fleet-wide (every room on it
/// moves) only when another room's callers agree (see
/// [`crate::health::FLEET_STALL_ROOMS`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StalledRooms {
    /// Room name and when its callers agreed (unix ms), oldest first.
    pub rooms: Vec<(String, u64)>,
}

/// `relay-crashed/<relay>`: see [`crate::keys::relay_crashed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// When the edge judged the relay crashed (unix ms); a heartbeat received
    /// after it makes the report stale.
    pub at_ms: u64,
    /// The edge that held the relay's heartbeat connection.
    pub edge: String,
}

/// `relay-suspect/<relay>`: callers reported the relay silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    /// When the callers' reports made the relay suspect (unix ms); honoured
    /// for [`crate::health::SUSPECT_MS`].
    pub at_ms: u64,
    /// Why, as a `reroute` reason (`media-stalled`, the only one written today).
    pub reason: String,
}

/// One participant's entry in a room's roster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Participant id (`p-` + 64 random bits): how peers address it in `signal`.
    pub participant: String,
    /// Identity from its room token's `sub` claim.
    pub identity: String,
    /// Expiry (unix s) of the room token it joined or last resumed with:
    /// its TURN credentials last as long (0 in records from before).
    #[serde(default)]
    pub token_exp: u64,
    /// Session id (`s-` + 128 random bits) the client resumes with.
    pub session: String,
    /// Current connection; `None` while away (dropped, within grace).
    pub conn: Option<String>,
    /// When the participant joined (unix ms); a resume keeps it.
    pub joined_at_ms: u64,
    /// When its connection dropped (unix ms); `None` while connected. The
    /// member is pruned once this is older than the grace period.
    #[serde(default)]
    pub away_since_ms: Option<u64>,
}

impl Room {
    /// The member with id `participant`, connected or away.
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
    /// Participant a resume comes back as.
    pub participant: String,
    /// Room the session belongs to; a `join` of another room does not resume it.
    pub room: String,
    /// Identity that joined; a token for another identity does not resume it.
    pub identity: String,
}

/// `conn/<conn>`: which participant a connection speaks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnBinding {
    /// Participant the connection speaks for.
    pub participant: String,
    /// Room that participant is in.
    pub room: String,
    /// Its session, deleted with the binding on `leave`.
    pub session: String,
}

/// `relay/<id>`: the last heartbeat of a relay and when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// The relay's latest accepted heartbeat, as it sent it.
    pub heartbeat: Heartbeat,
    /// When the receiving edge took it (unix ms, that edge's clock): the
    /// directory ages the relay from this, not from the relay's own clock.
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
    /// Relay ids in order of their first heartbeat; the list only grows.
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

/// A record as the JSON bytes stored in the KV.
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
    /// Call id, `c-<start unix ms, 13 digits>-<48 random bits>`.
    pub call: String,
    /// Room the call takes place in.
    pub room: String,
    /// When the join that started the call arrived (unix ms).
    pub started_ms: u64,
    /// Edge that handled the first join.
    pub edge: String,
}

/// `call-event/<call>/<at>-<suffix>`: one thing that happened in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    /// When it happened (unix ms); also part of the event's key, so a call's
    /// events list in time order.
    pub at_ms: u64,
    /// What happened: `event` and its fields, flattened into the record.
    #[serde(flatten)]
    pub kind: CallEventKind,
}

/// The kinds of call event, tagged `event` in JSON (`join`, `resume`, `away`,
/// `leave`, `reroute`, `gap`, `end`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CallEventKind {
    /// A participant joined (fresh, not a resume) through `edge`; `relay` is
    /// the room's relay it was given.
    Join {
        /// Participant id of the newcomer.
        participant: String,
        /// Its identity, from its room token.
        identity: String,
        /// Edge that handled the join.
        edge: String,
        /// Relay the room gave it.
        relay: String,
    },
    /// A participant that was away came back, possibly on another edge.
    Resume {
        /// Participant that came back.
        participant: String,
        /// Edge it resumed through.
        edge: String,
    },
    /// A participant's connection dropped without `leave` (it may resume).
    Away {
        /// Participant whose connection dropped.
        participant: String,
    },
    /// A participant is gone: `reason` is `leave` (it said so) or `timeout`
    /// (away longer than the grace period).
    Leave {
        /// Participant that is gone.
        participant: String,
        /// `leave` or `timeout`.
        reason: String,
    },
    /// The room moved from relay `from` to `to`. `since_ms` is when the
    /// trouble began as far as signaling knows: the lost relay's last
    /// heartbeat, or the first caller's stall report.
    Reroute {
        /// Relay the room left; `None` if it had none.
        from: Option<String>,
        /// Relay the room moved to.
        to: String,
        /// `reason` of the `reroute` frames (`relay-lost`, `relay-draining`,
        /// `relay-degraded`, `relay-overloaded`, `media-stalled`).
        reason: String,
        /// When the trouble began (unix ms), if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// A caller's audio gap around a relay switch, as its SDK measured it.
    Gap {
        /// Participant whose SDK measured the gap.
        participant: String,
        /// Relay that carried the audio before the gap, as the SDK reported it.
        relay: Option<String>,
        /// Length of the inbound-audio gap, ms.
        gap_ms: u64,
    },
    /// The call is over: `reason` is `empty` (the last participant left) or
    /// `timeout` (everyone left was away past the grace period).
    End {
        /// `empty` or `timeout`.
        reason: String,
    },
}

/// `call-quality/<call>/<participant>`: what one participant's `stats`
/// reports said, folded into a summary (docs/protocol.md, `stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Participant whose reports these are.
    pub participant: String,
    /// `stats` reports folded in so far.
    pub reports: u32,
    /// When the first report arrived (unix ms).
    pub first_ms: u64,
    /// When the latest report arrived (unix ms).
    pub last_ms: u64,
    /// Relay named in the latest report.
    #[serde(default)]
    pub relay: Option<String>,
    /// Per remote participant, as this participant measured its link.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, PeerQuality>,
}

/// One link of a participant to a peer, as the participant measured it: the
/// last audio RTP counters, worst and mean jitter and RTT.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerQuality {
    /// Audio RTP packets sent on the link, cumulative, as last reported.
    pub packets_sent: u64,
    /// Audio RTP packets received on the link, cumulative, as last reported.
    pub packets_received: u64,
    /// Inbound audio RTP packets lost on the link, cumulative, as last reported.
    pub packets_lost: u64,
    /// Worst inbound jitter over the reports that had it, ms.
    pub jitter_ms_max: Option<f64>,
    /// Mean inbound jitter over the reports that had it, ms.
    pub jitter_ms_mean: Option<f64>,
    /// Worst round-trip time of the media path, ms.
    pub rtt_ms_max: Option<f64>,
    /// Mean round-trip time of the media path, ms.
    pub rtt_ms_mean: Option<f64>,
    /// Reports that carried a jitter figure: the weight of `jitter_ms_mean`
    /// when a call record averages over links.
    #[serde(default)]
    pub jitter_samples: u32,
    /// Reports that carried an RTT figure: the weight of `rtt_ms_mean`.
    #[serde(default)]
    pub rtt_samples: u32,
}
