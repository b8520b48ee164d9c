//! Call records: who was in a room's call, when, on which relays, and how
//! good it sounded (docs/kv-schema.md "Call records").
//!
//! A call starts when someone joins an empty room and ends when the last
//! participant leaves or times out. Its id lives in the room record, so
//! whichever edge handles an input appends to the same record. The record is
//! written as events happen, one key per event (`call-event/<call>/…`), in
//! the same outcome as the room change that caused it: an event exists
//! exactly when its effect does, and no two edges ever write the same key.
//! Hosts make these keys durable before acknowledging (see
//! [`keys::needs_durable_write`]).
//!
//! Participants that vanish (sockets dropped, never resumed) are closed by
//! the timeout sweep ([`crate::call_sweep`]), part of every edge's tick.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::keys;
use crate::kv::Write;
use crate::model::{encode, CallEvent, CallEventKind, CallSummary, PeerQuality, Quality, Room};
use crate::outcome::Outcome;

/// A new call id: start time first, so ids sort by when calls began (the
/// query pages by id), then 48 bits drawn from the host's entropy. Hashed
/// with a label so the id reveals nothing of the participant and session
/// ids drawn from the same bytes.
pub fn new_call_id(now_ms: u64, entropy: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"tern call id v1");
    h.update(entropy);
    format!("c-{now_ms:013}-{}", hex::encode(&h.finalize()[..6]))
}

/// When a call began, read back from its id (`c-<ms>-<random>`).
pub fn started_ms(call: &str) -> Option<u64> {
    call.strip_prefix("c-")?.split('-').next()?.parse().ok()
}

/// Add one event of `call` to `out`.
pub(crate) fn record(out: &mut Outcome, call: &str, at_ms: u64, kind: CallEventKind) {
    let suffix = match &kind {
        CallEventKind::Join { participant, .. } => format!("join-{participant}"),
        CallEventKind::Resume { participant, .. } => format!("resume-{participant}"),
        CallEventKind::Away { participant } => format!("away-{participant}"),
        CallEventKind::Leave { participant, .. } => format!("leave-{participant}"),
        CallEventKind::Reroute { to, .. } => format!("reroute-{to}"),
        CallEventKind::Gap { participant, .. } => format!("gap-{participant}"),
        CallEventKind::End { .. } => "end".to_string(),
    };
    out.writes.push(Write::Put {
        key: keys::call_event(call, at_ms, &suffix),
        value: encode(&CallEvent { at_ms, kind }),
    });
}

/// Begin a call in `room` (which has none): summary, open marker, and the
/// id in the room record.
pub(crate) fn start(
    out: &mut Outcome,
    room: &mut Room,
    room_name: &str,
    edge: &str,
    now_ms: u64,
    entropy: &[u8],
) -> String {
    let call = new_call_id(now_ms, entropy);
    out.writes.push(Write::Put {
        key: keys::call(&call),
        value: encode(&CallSummary {
            call: call.clone(),
            room: room_name.to_string(),
            started_ms: now_ms,
            edge: edge.to_string(),
        }),
    });
    out.writes.push(Write::Put {
        key: keys::call_open(&call),
        value: encode(&room_name),
    });
    out.writes.push(Write::Put {
        key: keys::call_by_room(room_name, &call),
        value: Vec::new(),
    });
    room.call = Some(call.clone());
    call
}

/// End `room`'s call if nobody is left in it.
pub(crate) fn end_if_empty(out: &mut Outcome, room: &mut Room, now_ms: u64, reason: &str) {
    if !room.members.is_empty() {
        return;
    }
    if let Some(call) = room.call.take() {
        end(out, &call, now_ms, reason);
    }
}

pub(crate) fn end(out: &mut Outcome, call: &str, now_ms: u64, reason: &str) {
    record(
        out,
        call,
        now_ms,
        CallEventKind::End {
            reason: reason.to_string(),
        },
    );
    out.writes.push(Write::Delete {
        key: keys::call_open(call),
    });
}

/// A `stats` frame as the SDK sends it (sdk/js/tern.js `#report`). Every
/// field is optional: clients may send less, and unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// Relay the client uses now; the room's relay is assumed when absent.
    #[serde(default)]
    pub relay: Option<String>,
    /// One entry per link to another participant.
    #[serde(default)]
    pub peers: Vec<PeerReport>,
    /// An audio gap the SDK measured around a relay switch.
    #[serde(default)]
    pub gap: Option<GapReport>,
}

/// One link in a `stats` report: audio RTP counters, cumulative since the
/// link started, and its current jitter and RTT.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// The participant at the other end; entries for non-members are ignored.
    pub participant: String,
    /// Audio RTP packets sent on the link (`packetsSent`).
    #[serde(default)]
    pub packets_sent: Option<u64>,
    /// Audio RTP packets received on the link (`packetsReceived`).
    #[serde(default)]
    pub packets_received: Option<u64>,
    /// Inbound audio RTP packets lost on the link (`packetsLost`).
    #[serde(default)]
    pub packets_lost: Option<u64>,
    /// Inbound jitter, ms; `null` until measured.
    #[serde(default)]
    pub jitter: Option<f64>,
    /// Round-trip time of the media path, ms; `null` until measured.
    #[serde(default)]
    pub rtt: Option<f64>,
}

/// An inbound-audio gap the client measured around a relay switch (`gap`).
#[derive(Debug, Deserialize)]
pub struct GapReport {
    /// Relay that carried the audio before the gap.
    #[serde(default)]
    pub relay: Option<String>,
    /// Length of the gap, ms.
    pub ms: u64,
}

/// Largest measurement accepted (ms); anything above is nonsense or hostile.
const MAX_MS: f64 = 600_000.0;

/// A mean that takes one more sample.
fn mean(prev: Option<f64>, n: u32, x: f64) -> Option<f64> {
    Some(match prev {
        Some(m) if n > 0 => m + (x - m) / f64::from(n + 1),
        _ => x,
    })
}

/// Fold one report into a participant's quality summary. Reports about
/// participants other than the room's members are ignored, so a client
/// cannot grow the record without bound.
pub fn fold(q: &mut Quality, report: &StatsReport, now_ms: u64, room: &Room) {
    if q.reports == 0 {
        q.first_ms = now_ms;
    }
    q.reports = q.reports.saturating_add(1);
    q.last_ms = now_ms;
    if report.relay.is_some() {
        q.relay = report.relay.clone();
    }
    for p in &report.peers {
        if p.participant == q.participant || room.member(&p.participant).is_none() {
            continue;
        }
        let e: &mut PeerQuality = q.peers.entry(p.participant.clone()).or_default();
        e.packets_sent = p.packets_sent.unwrap_or(e.packets_sent);
        e.packets_received = p.packets_received.unwrap_or(e.packets_received);
        e.packets_lost = p.packets_lost.unwrap_or(e.packets_lost);
        if let Some(j) = p
            .jitter
            .filter(|j| j.is_finite() && (0.0..MAX_MS).contains(j))
        {
            e.jitter_ms_max = Some(e.jitter_ms_max.map_or(j, |m| m.max(j)));
            e.jitter_ms_mean = mean(e.jitter_ms_mean, e.jitter_samples, j);
            e.jitter_samples += 1;
        }
        if let Some(r) = p.rtt.filter(|r| r.is_finite() && (0.0..MAX_MS).contains(r)) {
            e.rtt_ms_max = Some(e.rtt_ms_max.map_or(r, |m| m.max(r)));
            e.rtt_ms_mean = mean(e.rtt_ms_mean, e.rtt_samples, r);
            e.rtt_samples += 1;
        }
    }
}
