//! The relay directory: which relays exist, which are healthy, and which one
//! a caller should use.

use serde::Serialize;
use std::collections::BTreeMap;
use tern_common::relay::{Listener, Load, RelayState};

use crate::health;
use crate::keys;
use crate::kv::{KvError, KvRead};
use crate::model::{decode, read, CrashReport, ProbeRecord, RelayIndex, RelayRecord, Suspect};

/// A relay as `GET /v1/relays` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayView {
    /// Relay id, from its heartbeats.
    pub id: String,
    /// Region the relay serves.
    pub region: String,
    /// Addresses TURN clients reach it on.
    pub listeners: Vec<Listener>,
    /// The state it announces: active, draining or standby.
    pub state: RelayState,
    /// May be handed to new callers: alive, not suspected, not degrading,
    /// and active (or a standby promoted because its region needs it).
    pub healthy: bool,
    /// A cold standby currently taking calls because its region has no
    /// healthy active relay.
    pub promoted: bool,
    /// Why calls on this relay must move (`relay-lost`, `relay-draining`,
    /// `relay-degraded`, `media-stalled`, or `relay-overloaded`: some of
    /// them, see [`crate::reroute`]), if they must.
    pub failing: Option<&'static str>,
    /// Sustained CPU utilization, percent of the relay's datapath threads
    /// (`null` until a few heartbeats carried it). From
    /// [`health::BUSY_PERCENT`] on the relay takes no new calls.
    pub utilization: Option<u16>,
    /// Load figures from its latest heartbeat; among relays equally near a
    /// caller, fewer allocations rank first.
    pub load: Load,
    /// Time since its latest heartbeat was received, ms; past the stale limit
    /// (1.5 s by default) the relay counts as silent.
    pub last_heartbeat_age_ms: u64,
    /// Suspicion level of the phi-accrual detector (`null` until a few
    /// heartbeats have been seen).
    pub phi: Option<f64>,
    /// This edge's probes were refused by the relay's host (ICMP port
    /// unreachable): the relay process is gone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe_refused: bool,
    /// The relay's heartbeat connection to this edge closed and a probe
    /// right after went refused or unanswered: the fastest sign of a crash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probe_link_closed: bool,
    /// The edge that reported this relay crashed (its heartbeat connection
    /// there closed, then it failed that edge's probe), while no newer
    /// heartbeat says otherwise: how edges without that connection learn of
    /// a crash as soon as the one with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash_reported_by: Option<String>,
    /// When the last heartbeat arrived (unix ms); identifies one "life" of
    /// the relay for the reroute sweep.
    #[serde(skip)]
    pub received_at_ms: u64,
}

impl RelayView {
    /// Whether the calls already on this relay stay: nothing says they must
    /// move. A busy relay keeps its rooms (newcomers to them too) but gets no
    /// new ones.
    pub fn keeps_calls(&self) -> bool {
        self.failing.is_none() && (self.healthy || self.state == RelayState::Active)
    }

    /// How clients see this relay.
    pub fn client_ref(&self) -> crate::frame::RelayRef {
        crate::frame::RelayRef {
            id: self.id.clone(),
            region: self.region.clone(),
        }
    }
}

/// What one read of the store says about one relay, before the verdict.
struct Evidence {
    rec: RelayRecord,
    age: u64,
    phi: Option<f64>,
    /// Heartbeats stopped (phi detector or the hard timeout).
    silent: bool,
    /// Callers reported its media stalled (recently).
    suspect: bool,
    probe_failed: bool,
    probe_refused: bool,
    probe_link_closed: bool,
    /// The edge that reported it crashed, while no newer heartbeat came.
    crash: Option<String>,
    degrading: bool,
}

/// Every relay in the index, judged at `now_ms` by edge `edge` (its own
/// active probes count; see docs/failover.md).
pub fn list(
    kv: &dyn KvRead,
    now_ms: u64,
    stale_ms: u64,
    edge: &str,
) -> Result<Vec<RelayView>, KvError> {
    let (index, _) = read::<RelayIndex>(kv, keys::RELAY_INDEX)?;
    let ids = index.unwrap_or_default().ids;
    // What is known about every relay, in one read (one round trip on a
    // store across the network): its record, callers' stall reports, this
    // edge's probe verdict, the loss verdict, a crash report.
    const PER_RELAY: usize = 5;
    let keys: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                keys::relay(id),
                keys::relay_suspect(id),
                keys::relay_probe(edge, id),
                keys::relay_lossy(id),
                keys::relay_crashed(id),
            ]
        })
        .collect();
    let values = kv.get_many(&keys)?;
    if values.len() != keys.len() {
        return Err(KvError(format!(
            "{} values for {} keys",
            values.len(),
            keys.len()
        )));
    }
    // First gather the evidence about each relay, then judge: whether
    // heartbeat silence can be trusted depends on the whole fleet.
    let mut seen = Vec::new();
    for (k, v) in keys.chunks(PER_RELAY).zip(values.chunks(PER_RELAY)) {
        let Some(rec) = decode::<RelayRecord>(&k[0], v[0].as_deref())? else {
            continue;
        };
        let age = now_ms.saturating_sub(rec.received_at_ms);
        let phi = health::phi(&rec.intervals, age);
        // Silent when the detector suspects it, or in any case after the
        // hard timeout (covers relays with too little history for a verdict).
        let silent = age > stale_ms || phi.is_some_and(|p| p >= health::PHI_THRESHOLD);
        let suspect = decode::<Suspect>(&k[1], v[1].as_deref())?
            .filter(|s| now_ms.saturating_sub(s.at_ms) < health::SUSPECT_MS);
        let probe = decode::<ProbeRecord>(&k[2], v[2].as_deref())?;
        let probe_failed = probe.as_ref().is_some_and(|p| p.failing_since_ms.is_some());
        let probe_refused = probe_failed && probe.as_ref().is_some_and(|p| p.refused);
        let probe_link_closed = probe_failed && probe.as_ref().is_some_and(|p| p.link_closed);
        let lossy = decode::<crate::loss::Lossy>(&k[3], v[3].as_deref())?.is_some();
        // Stale once the relay heartbeats again after it.
        let crash = decode::<CrashReport>(&k[4], v[4].as_deref())?
            .filter(|c| rec.received_at_ms <= c.at_ms)
            .map(|c| c.edge);
        // A ragged heartbeat rhythm, probe answers far slower than usual or
        // many callers losing packets: the relay is trending towards failure.
        let degrading = health::degrading(&rec.intervals)
            || probe.is_some_and(|p| p.slow_since_ms.is_some())
            || lossy;
        seen.push(Evidence {
            rec,
            age,
            phi,
            silent,
            suspect: suspect.is_some(),
            probe_failed,
            probe_refused,
            probe_link_closed,
            crash,
            degrading,
        });
    }
    // If most of the fleet went silent or ragged at once, the likelier cause
    // is on this side (the state store was down, or this edge is too busy to
    // take heartbeats in time), not a mass failure of independent relays:
    // then only direct evidence counts (this edge's probes, callers'
    // reports, draining). Relays silent for a long time are gone, not
    // "just went silent", and do not count.
    let recent: Vec<_> = seen.iter().filter(|s| s.age <= health::GONE_MS).collect();
    let soft_failing = recent.iter().filter(|s| s.silent || s.degrading).count();
    let distrust_heartbeats = recent.len() >= 2 && soft_failing * 2 > recent.len();

    let mut out = Vec::new();
    for Evidence {
        rec,
        age,
        phi,
        silent,
        suspect,
        probe_failed,
        probe_refused,
        probe_link_closed,
        crash,
        degrading,
    } in seen
    {
        let hb = rec.heartbeat;
        let long_gone = age > health::GONE_MS;
        let utilization = health::utilization(&rec.cpu);
        let busy = utilization.is_some_and(|u| u >= health::BUSY_PERCENT);
        let failing =
            if probe_failed || crash.is_some() || long_gone || (silent && !distrust_heartbeats) {
                Some("relay-lost")
            } else if suspect {
                Some("media-stalled")
            } else if hb.state == RelayState::Draining {
                Some("relay-draining")
            } else if degrading && !distrust_heartbeats {
                Some("relay-degraded")
            } else if utilization.is_some_and(|u| u >= health::OVERLOADED_PERCENT) {
                Some("relay-overloaded")
            } else {
                None
            };
        out.push(RelayView {
            healthy: failing.is_none() && !busy && hb.state == RelayState::Active,
            utilization,
            promoted: false,
            failing,
            phi: phi.map(|p| (p * 100.0).round() / 100.0),
            probe_refused,
            probe_link_closed,
            crash_reported_by: crash,
            received_at_ms: rec.received_at_ms,
            id: hb.id,
            region: hb.region,
            listeners: hb.listeners,
            state: hb.state,
            load: hb.load,
            last_heartbeat_age_ms: age,
        });
    }
    // Cold standbys take calls only where their region has no healthy
    // active relay left.
    let covered: std::collections::BTreeSet<String> = out
        .iter()
        .filter(|r| r.healthy)
        .map(|r| r.region.clone())
        .collect();
    for r in out.iter_mut() {
        if r.state == RelayState::Standby && r.failing.is_none() && !covered.contains(&r.region) {
            r.healthy = true;
            r.promoted = true;
        }
    }
    Ok(out)
}

/// Rank healthy relays for a caller, best first: measured RTT to the relay's
/// region when the client sent probes (unprobed regions rank after probed
/// ones), then fewest allocations, then id for a stable order. Health (phi,
/// probes, trends, reports) has already decided which relays are healthy.
pub fn rank<'a>(relays: &'a [RelayView], probes: &BTreeMap<String, f64>) -> Vec<&'a RelayView> {
    let mut healthy: Vec<&RelayView> = relays.iter().filter(|r| r.healthy).collect();
    if healthy.is_empty() {
        // Nothing healthy: a relay that is only degrading (alive, answering,
        // but with a ragged rhythm) or busy is still far better than no call.
        healthy = relays
            .iter()
            .filter(|r| {
                matches!(
                    r.failing,
                    None | Some("relay-degraded" | "relay-overloaded")
                ) && r.state != RelayState::Draining
            })
            .collect();
    }
    healthy.sort_by(|a, b| {
        let rtt = |r: &RelayView| probes.get(&r.region).copied().unwrap_or(f64::INFINITY);
        rtt(a)
            .total_cmp(&rtt(b))
            .then(a.load.allocations.cmp(&b.load.allocations))
            .then(a.id.cmp(&b.id))
    });
    healthy
}

/// The best relay in a region other than `primary`'s, for a hot standby.
pub fn standby<'a>(ranked: &[&'a RelayView], primary: &RelayView) -> Option<&'a RelayView> {
    ranked.iter().copied().find(|r| r.region != primary.region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, region: &str, allocations: u64, healthy: bool) -> RelayView {
        RelayView {
            id: id.into(),
            region: region.into(),
            listeners: vec![],
            state: RelayState::Active,
            healthy,
            load: Load {
                allocations,
                pps: 0,
                cpu_percent: None,
                threads: None,
            },
            last_heartbeat_age_ms: 0,
            phi: None,
            probe_refused: false,
            probe_link_closed: false,
            crash_reported_by: None,
            received_at_ms: 0,
            promoted: false,
            failing: None,
            utilization: None,
        }
    }

    #[test]
    fn ranks_by_rtt_then_load_and_skips_unhealthy() {
        let relays = vec![
            view("a1", "a", 5, true),
            view("a2", "a", 1, true),
            view("b1", "b", 0, true),
            view("c1", "c", 0, false),
        ];
        let none = BTreeMap::new();
        let ids = |v: Vec<&RelayView>| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(rank(&relays, &none)), ["b1", "a2", "a1"]);
        let probes = BTreeMap::from([("a".to_string(), 10.0), ("b".to_string(), 40.0)]);
        let ranked = rank(&relays, &probes);
        assert_eq!(ids(ranked.clone()), ["a2", "a1", "b1"]);
        assert_eq!(standby(&ranked, ranked[0]).unwrap().id, "b1");
    }
}
