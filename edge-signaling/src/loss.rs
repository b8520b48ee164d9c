//! Callers' packet loss as evidence about their relay (predictive drain).
//!
//! Every `stats` report carries cumulative RTP counters per peer; the loss
//! over the interval since the participant's previous report is written
//! under `relay-loss/<relay>/<identity>`: one report per caller, however
//! many sockets it holds, and only from a connected member of a room whose
//! relay it is. About once a second one
//! edge (claimed by compare-and-swap on [`keys::RELAY_LOSS_CHECK`]) looks at
//! the recent reports of each relay and records a verdict under
//! `relay-lossy/<relay>`, which the directory reads like the other evidence.
//!
//! One caller losing packets says more about its own access network than
//! about the relay, so a relay is *lossy* only when at least
//! [`MIN_REPORTERS`] identities in at least [`MIN_ROOMS`] rooms reported it
//! recently and at least half of them lost [`LOSSY_PERCENT`] or more: many
//! callers, in different rooms and on different networks, suffering
//! together point at what they share, and one room cannot move the calls
//! of every other room on its relay.

use serde::{Deserialize, Serialize};

use crate::apply::{self, KvStore};
use crate::calls::StatsReport;
use crate::keys;
use crate::kv::{KvError, Write};
use crate::model::{cas, encode, read, Quality};

/// A report interval counts only with at least this many packets expected.
pub const MIN_PACKETS: u64 = 50;
/// Loss at or above this (percent of the interval's packets) is bad.
pub const LOSSY_PERCENT: f64 = 5.0;
/// Reports older than this are not evidence any more (the SDK reports every
/// 5 s).
pub const RECENT_MS: u64 = 15_000;
/// Fewer recent reporters (identities) than this: no verdict.
pub const MIN_REPORTERS: usize = 3;
/// Reporters from fewer rooms than this: no verdict.
pub const MIN_ROOMS: usize = 2;
/// How often one edge judges.
pub const CHECK_EVERY_MS: u64 = 1_000;
/// Reports older than this are deleted by the check.
const FORGET_MS: u64 = 60_000;

/// `relay-loss/<relay>/<identity>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// The room the reporter was in.
    #[serde(default)]
    pub room: String,
    /// When the `stats` report arrived (unix ms); evidence for [`RECENT_MS`].
    pub at_ms: u64,
    /// Packets lost over the interval, percent of those expected (received
    /// + lost) on all the participant's links.
    pub loss_percent: f64,
}

/// `relay-lossy/<relay>`: present while the relay is judged lossy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lossy {
    /// Since when the relay has been judged lossy (unix ms); kept while the
    /// verdict holds.
    pub since_ms: u64,
    /// Identities that reported on the relay within [`RECENT_MS`].
    pub reporters: usize,
    /// Those of them that lost [`LOSSY_PERCENT`] or more.
    pub lossy_reporters: usize,
}

/// Who a loss report is from.
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    /// The identity of the caller's room token: one report per identity.
    pub identity: &'a str,
    /// The room it is in, whose relay `relay` is.
    pub room: &'a str,
}

/// The write recording this report's interval loss against `relay`, if the
/// interval had enough packets. `relay` is the relay of the reporter's room;
/// `before` is the participant's quality record as it was before this report
/// (its cumulative counters).
pub fn report_write(
    now_ms: u64,
    reporter: Reporter<'_>,
    relay: &str,
    before: &Quality,
    report: &StatsReport,
) -> Option<Write> {
    let (mut received, mut lost) = (0u64, 0u64);
    for p in &report.peers {
        let prev = before.peers.get(&p.participant);
        let (r0, l0) = prev.map_or((0, 0), |q| (q.packets_received, q.packets_lost));
        // Counters restart with a new peer connection (ICE restart keeps
        // them; a new RTCPeerConnection does not): a drop means a fresh start.
        let r = p.packets_received.unwrap_or(r0);
        let l = p.packets_lost.unwrap_or(l0);
        received += if r >= r0 { r - r0 } else { r };
        lost += if l >= l0 { l - l0 } else { l };
    }
    let expected = received + lost;
    if expected < MIN_PACKETS {
        return None;
    }
    Some(Write::Put {
        key: keys::relay_loss(relay, reporter.identity),
        value: encode(&LossReport {
            room: reporter.room.to_string(),
            at_ms: now_ms,
            loss_percent: lost as f64 * 100.0 / expected as f64,
        }),
    })
}

/// The verdict for one relay from its reports (`None`: not lossy), which
/// must come from at least `min_rooms` rooms.
pub fn judge(
    now_ms: u64,
    reports: &[LossReport],
    since_ms: Option<u64>,
    min_rooms: usize,
) -> Option<Lossy> {
    let recent: Vec<&LossReport> = reports
        .iter()
        .filter(|r| now_ms.saturating_sub(r.at_ms) <= RECENT_MS)
        .collect();
    let bad = recent
        .iter()
        .filter(|r| r.loss_percent >= LOSSY_PERCENT)
        .count();
    let rooms: std::collections::BTreeSet<&str> = recent.iter().map(|r| r.room.as_str()).collect();
    let agreed = recent.len() >= MIN_REPORTERS && rooms.len() >= min_rooms;
    (agreed && bad * 2 >= recent.len()).then(|| Lossy {
        since_ms: since_ms.unwrap_or(now_ms),
        reporters: recent.len(),
        lossy_reporters: bad,
    })
}

/// At most once per [`CHECK_EVERY_MS`] across edges: judge every relay with
/// reports and write or clear its verdict (agreed by `min_rooms` rooms);
/// forget old reports.
pub fn check<S: KvStore>(now_ms: u64, min_rooms: usize, store: &mut S) -> Result<(), KvError> {
    let (last, raw) = read::<u64>(store, keys::RELAY_LOSS_CHECK)?;
    if last.is_some_and(|t| now_ms.saturating_sub(t) < CHECK_EVERY_MS) {
        return Ok(());
    }
    if !apply::apply(
        store,
        &[cas(keys::RELAY_LOSS_CHECK.to_string(), raw, &now_ms)],
    )? {
        return Ok(()); // another edge is checking
    }
    let mut by_relay: std::collections::BTreeMap<String, Vec<LossReport>> = Default::default();
    let mut writes = Vec::new();
    for key in store.list(keys::RELAY_LOSS_PREFIX)? {
        let Some((relay, _)) = key[keys::RELAY_LOSS_PREFIX.len()..].split_once('/') else {
            continue;
        };
        match read::<LossReport>(store, &key) {
            Ok((Some(r), _)) if now_ms.saturating_sub(r.at_ms) <= FORGET_MS => {
                by_relay.entry(relay.to_string()).or_default().push(r);
            }
            // Old, or not ours to parse: forget it.
            _ => writes.push(Write::Delete { key }),
        }
    }
    // Relays with a verdict but no reports left get it cleared too.
    for key in store.list(keys::RELAY_LOSSY_PREFIX)? {
        by_relay
            .entry(key[keys::RELAY_LOSSY_PREFIX.len()..].to_string())
            .or_default();
    }
    for (relay, reports) in by_relay {
        let key = keys::relay_lossy(&relay);
        let was: Option<Lossy> = read(store, &key)?.0;
        match judge(
            now_ms,
            &reports,
            was.as_ref().map(|l| l.since_ms),
            min_rooms,
        ) {
            Some(v) => writes.push(Write::Put {
                key,
                value: encode(&v),
            }),
            None if was.is_some() => writes.push(Write::Delete { key }),
            None => {}
        }
    }
    apply::apply(store, &writes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at_ms: u64, loss_percent: f64) -> LossReport {
        in_room(at_ms, loss_percent, &format!("room-{loss_percent}-{at_ms}"))
    }

    fn in_room(at_ms: u64, loss_percent: f64, room: &str) -> LossReport {
        LossReport {
            room: room.into(),
            at_ms,
            loss_percent,
        }
    }

    #[test]
    fn lossy_needs_several_recent_reporters_and_half_of_them_losing() {
        let now = 100_000;
        assert_eq!(
            judge(now, &[r(now, 30.0), r(now, 30.0)], None, MIN_ROOMS),
            None,
            "two"
        );
        let v = judge(
            now,
            &[r(now, 30.0), r(now, 6.0), r(now, 0.0)],
            None,
            MIN_ROOMS,
        )
        .unwrap();
        assert_eq!((v.reporters, v.lossy_reporters, v.since_ms), (3, 2, now));
        assert_eq!(
            judge(
                now,
                &[r(now, 30.0), r(now, 1.0), r(now, 0.0)],
                None,
                MIN_ROOMS
            ),
            None,
            "one caller's bad network is not the relay's fault"
        );
        let old = now - RECENT_MS - 1;
        assert_eq!(
            judge(
                now,
                &[r(now, 30.0), r(old, 30.0), r(old, 30.0)],
                None,
                MIN_ROOMS
            ),
            None,
            "old reports are not evidence"
        );
        let apart = [
            in_room(now, 9.0, "x"),
            in_room(now, 9.0, "y"),
            in_room(now, 9.0, "x"),
        ];
        assert_eq!(
            judge(now, &apart, Some(5), MIN_ROOMS).unwrap().since_ms,
            5,
            "a verdict keeps its start"
        );
        let one_room = vec![in_room(now, 40.0, "x"); 5];
        assert_eq!(
            judge(now, &one_room, None, MIN_ROOMS),
            None,
            "one room's callers cannot condemn the relay of every room"
        );
        assert!(
            judge(now, &one_room, None, 1).is_some(),
            "where evidence is room-local, one room decides for itself"
        );
    }
}
