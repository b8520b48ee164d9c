//! A call record as readers see it (`GET /v1/calls`, `tern calls`): the
//! stored pieces of one call (summary, events, quality reports) folded into
//! one document. Pure, so every host and the CLI present records the same way.

use serde::{Deserialize, Serialize};

use crate::model::{CallEvent, CallEventKind, CallSummary, Quality};

/// One call as `GET /v1/calls` returns it: its summary, events and quality
/// reports folded into one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call id, `c-<start unix ms>-<random>`; ids sort by start time.
    pub call: String,
    /// Room the call took place in.
    pub room: String,
    /// When the join that started it arrived (unix ms).
    pub started_ms: u64,
    /// `None` while the call is going on.
    pub ended_ms: Option<u64>,
    /// `empty` (last participant left) or `timeout`.
    pub end_reason: Option<String>,
    /// Edge that started the call.
    pub edge: String,
    /// Everyone who joined, in join order.
    pub participants: Vec<ParticipantRecord>,
    /// Relays that carried the call, in order (first one, then each
    /// reroute's target).
    pub relays: Vec<String>,
    /// Every relay switch, in order.
    pub reroutes: Vec<RerouteRecord>,
    /// Over every participant's reports.
    pub quality: QualitySummary,
}

/// One participant's part in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    /// Participant id.
    pub participant: String,
    /// Identity from its room token.
    pub identity: String,
    /// When it joined (unix ms).
    pub joined_ms: u64,
    /// When it left or timed out (unix ms); `None` while it is in the call.
    pub left_ms: Option<u64>,
    /// `leave` or `timeout`.
    pub leave_reason: Option<String>,
    /// Edges it was connected through: the join's, then each resume's.
    pub edges: Vec<String>,
    /// Times its connection dropped (it resumed or timed out after).
    pub away: Vec<u64>,
    /// Its `stats` reports folded together; `None` if it sent none.
    pub quality: Option<Quality>,
}

/// One relay switch of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerouteRecord {
    /// When the room moved (unix ms).
    pub at_ms: u64,
    /// Relay the room left; `None` if it had none.
    pub from: Option<String>,
    /// Relay the room moved to.
    pub to: String,
    /// `reason` of the `reroute` frames (`relay-lost`, `media-stalled`, …).
    pub reason: String,
    /// When the trouble began as signaling saw it (the lost relay's last
    /// heartbeat, the first stall report).
    pub since_ms: Option<u64>,
    /// `at_ms - since_ms`: how long detection and decision took.
    pub detection_ms: Option<u64>,
    /// Largest audio gap the callers' SDKs measured around this switch.
    pub gap_ms: Option<u64>,
}

/// Quality over every link of every participant of a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    /// `stats` reports received, all participants together.
    pub reports: u32,
    /// Audio RTP packets received, summed over every link.
    pub packets_received: u64,
    /// Inbound audio RTP packets lost, summed over every link.
    pub packets_lost: u64,
    /// Lost / (received + lost), percent; `None` without packets.
    pub loss_pct: Option<f64>,
    /// Worst inbound jitter on any link, ms.
    pub jitter_ms_max: Option<f64>,
    /// Mean inbound jitter, each link weighted by its samples, ms.
    pub jitter_ms_mean: Option<f64>,
    /// Worst media-path round-trip time on any link, ms.
    pub rtt_ms_max: Option<f64>,
    /// Mean media-path round-trip time, each link weighted by its samples, ms.
    pub rtt_ms_mean: Option<f64>,
}

/// Order of events that share a millisecond: a call begins with joins and
/// ends with its end event.
fn rank(k: &CallEventKind) -> u8 {
    match k {
        CallEventKind::Join { .. } => 0,
        CallEventKind::Resume { .. } => 1,
        CallEventKind::Reroute { .. } => 2,
        CallEventKind::Gap { .. } => 3,
        CallEventKind::Away { .. } => 4,
        CallEventKind::Leave { .. } => 5,
        CallEventKind::End { .. } => 6,
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Fold the stored pieces of one call into its record.
pub fn build(
    summary: CallSummary,
    mut events: Vec<CallEvent>,
    quality: Vec<Quality>,
) -> CallRecord {
    events.sort_by_key(|e| (e.at_ms, rank(&e.kind)));
    let mut r = CallRecord {
        call: summary.call,
        room: summary.room,
        started_ms: summary.started_ms,
        ended_ms: None,
        end_reason: None,
        edge: summary.edge,
        participants: Vec::new(),
        relays: Vec::new(),
        reroutes: Vec::new(),
        quality: QualitySummary::default(),
    };
    for e in events {
        let who = |r: &mut CallRecord, p: &str| {
            r.participants.iter_mut().position(|m| m.participant == p)
        };
        match e.kind {
            CallEventKind::Join {
                participant,
                identity,
                edge,
                relay,
            } => {
                if r.relays.is_empty() {
                    r.relays.push(relay);
                }
                r.participants.push(ParticipantRecord {
                    participant,
                    identity,
                    joined_ms: e.at_ms,
                    left_ms: None,
                    leave_reason: None,
                    edges: vec![edge],
                    away: Vec::new(),
                    quality: None,
                });
            }
            CallEventKind::Resume { participant, edge } => {
                if let Some(i) = who(&mut r, &participant) {
                    let edges = &mut r.participants[i].edges;
                    if edges.last() != Some(&edge) {
                        edges.push(edge);
                    }
                }
            }
            CallEventKind::Away { participant } => {
                if let Some(i) = who(&mut r, &participant) {
                    r.participants[i].away.push(e.at_ms);
                }
            }
            CallEventKind::Leave {
                participant,
                reason,
            } => {
                if let Some(i) = who(&mut r, &participant) {
                    r.participants[i].left_ms = Some(e.at_ms);
                    r.participants[i].leave_reason = Some(reason);
                }
            }
            CallEventKind::Reroute {
                from,
                to,
                reason,
                since_ms,
            } => {
                r.relays.push(to.clone());
                r.reroutes.push(RerouteRecord {
                    at_ms: e.at_ms,
                    from,
                    to,
                    reason,
                    since_ms,
                    detection_ms: since_ms.map(|s| e.at_ms.saturating_sub(s)),
                    gap_ms: None,
                });
            }
            CallEventKind::Gap { gap_ms, .. } => {
                // A gap belongs to the latest switch before it was reported.
                if let Some(last) = r.reroutes.last_mut() {
                    last.gap_ms = Some(last.gap_ms.map_or(gap_ms, |g| g.max(gap_ms)));
                }
            }
            CallEventKind::End { reason } => {
                r.ended_ms = Some(e.at_ms);
                r.end_reason = Some(reason);
            }
        }
    }
    let (mut jitter_sum, mut jitter_n, mut rtt_sum, mut rtt_n) = (0.0, 0u32, 0.0, 0u32);
    for q in quality {
        let s = &mut r.quality;
        s.reports += q.reports;
        for p in q.peers.values() {
            s.packets_received += p.packets_received;
            s.packets_lost += p.packets_lost;
            s.jitter_ms_max = max_opt(s.jitter_ms_max, p.jitter_ms_max);
            s.rtt_ms_max = max_opt(s.rtt_ms_max, p.rtt_ms_max);
            if let Some(m) = p.jitter_ms_mean {
                jitter_sum += m * f64::from(p.jitter_samples);
                jitter_n += p.jitter_samples;
            }
            if let Some(m) = p.rtt_ms_mean {
                rtt_sum += m * f64::from(p.rtt_samples);
                rtt_n += p.rtt_samples;
            }
        }
        if let Some(m) = r
            .participants
            .iter_mut()
            .find(|m| m.participant == q.participant)
        {
            m.quality = Some(q);
        }
    }
    let s = &mut r.quality;
    let total = s.packets_received + s.packets_lost;
    s.loss_pct = (total > 0).then(|| 100.0 * s.packets_lost as f64 / total as f64);
    s.jitter_ms_mean = (jitter_n > 0).then(|| jitter_sum / f64::from(jitter_n));
    s.rtt_ms_mean = (rtt_n > 0).then(|| rtt_sum / f64::from(rtt_n));
    r
}

impl CallRecord {
    /// Whether `identity` took part.
    pub fn has_identity(&self, identity: &str) -> bool {
        self.participants.iter().any(|p| p.identity == identity)
    }

    /// Whether the call overlaps `[since_ms, until_ms)`; an open call lasts
    /// until `now_ms`.
    pub fn overlaps(&self, since_ms: Option<u64>, until_ms: Option<u64>, now_ms: u64) -> bool {
        let end = self.ended_ms.unwrap_or(now_ms);
        since_ms.is_none_or(|s| end >= s) && until_ms.is_none_or(|u| self.started_ms < u)
    }
}
