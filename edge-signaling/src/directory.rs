//! The relay directory: which relays exist, which are healthy, and which one
//! a caller should use.

use serde::Serialize;
use std::collections::BTreeMap;
use tern_common::relay::{Listener, Load, RelayState};

use crate::health;
use crate::keys;
use crate::kv::{KvError, KvRead};
use crate::model::{read, RelayIndex, RelayRecord};

/// A relay as `GET /v1/relays` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayView {
    pub id: String,
    pub region: String,
    pub listeners: Vec<Listener>,
    pub state: RelayState,
    pub healthy: bool,
    pub load: Load,
    pub last_heartbeat_age_ms: u64,
    /// Suspicion level of the phi-accrual detector (`null` until a few
    /// heartbeats have been seen).
    pub phi: Option<f64>,
    /// When the last heartbeat arrived (unix ms); identifies one "life" of
    /// the relay for the reroute sweep.
    #[serde(skip)]
    pub received_at_ms: u64,
}

/// Every relay in the index, with health judged at `now_ms`.
pub fn list(kv: &dyn KvRead, now_ms: u64, stale_ms: u64) -> Result<Vec<RelayView>, KvError> {
    let (index, _) = read::<RelayIndex>(kv, keys::RELAY_INDEX)?;
    let mut out = Vec::new();
    for id in index.unwrap_or_default().ids {
        let (Some(rec), _) = read::<RelayRecord>(kv, &keys::relay(&id))? else {
            continue;
        };
        let age = now_ms.saturating_sub(rec.received_at_ms);
        let phi = health::phi(&rec.intervals, age);
        let hb = rec.heartbeat;
        // Out when the detector suspects it, or in any case after the hard
        // timeout (covers relays with too little history for a verdict).
        let alive = age <= stale_ms && phi.is_none_or(|p| p < health::PHI_THRESHOLD);
        out.push(RelayView {
            healthy: alive && hb.state == RelayState::Active,
            phi: phi.map(|p| (p * 100.0).round() / 100.0),
            received_at_ms: rec.received_at_ms,
            id: hb.id,
            region: hb.region,
            listeners: hb.listeners,
            state: hb.state,
            load: hb.load,
            last_heartbeat_age_ms: age,
        });
    }
    Ok(out)
}

/// Rank healthy relays for a caller, best first.
///
/// Skeleton policy: measured RTT to the relay's region when the client sent
/// probes (unprobed regions rank after probed ones), then fewest
/// allocations, then id for a stable order. The failover issue replaces this
/// with a health score that looks at trends.
pub fn rank<'a>(relays: &'a [RelayView], probes: &BTreeMap<String, f64>) -> Vec<&'a RelayView> {
    let mut healthy: Vec<&RelayView> = relays.iter().filter(|r| r.healthy).collect();
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
            },
            last_heartbeat_age_ms: 0,
            phi: None,
            received_at_ms: 0,
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
