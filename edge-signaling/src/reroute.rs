//! Moving live calls off a lost or draining relay.
//!
//! Every edge runs a tick (about every 100 ms). A tick finds relays that are
//! no longer healthy and whose rooms were not yet moved, and moves each room
//! to the best healthy relay: the room's relay changes by compare-and-swap,
//! so when several edges tick at once exactly one of them moves a room and
//! sends its participants `reroute` with fresh credentials. Rooms are found
//! through `relay-room/<relay>/<room>` markers written when a room is
//! assigned a relay.
//!
//! An overloaded relay (sustained CPU near its capacity) is not emptied: it
//! sheds the share of its rooms above the target utilization, at most once
//! per [`health::SHED_INTERVAL_MS`] (claimed by compare-and-swap, so one
//! edge sheds), then waits for its heartbeats to show the effect. Moving
//! every call at once would only overload the relay that takes them.

use serde::Serialize;

use crate::directory::{self, RelayView};
use crate::frame::{ServerFrame, Standby};
use crate::health;
use crate::keys;
use crate::kv::{KvError, KvRead, Write};
use crate::model::{cas, encode, read, CallEventKind, Room};
use crate::signaling::{Outcome, Signaling};

/// A relay whose rooms must move, and those rooms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// Id of the relay whose rooms move.
    pub relay: String,
    /// Identifies the relay's life that ended (its last heartbeat time).
    pub received_at_ms: u64,
    /// `reason` of the `reroute` frames.
    pub reason: &'static str,
    /// Rooms to move: all of the relay's, or for a shed only its share.
    pub rooms: Vec<String>,
    /// The directory as judged when the sweep was planned: where its rooms
    /// may go. Read once per sweep, not once per room.
    #[serde(skip)]
    pub directory: Vec<RelayView>,
    /// A partial shed of an overloaded relay: the `relay-shed` value read,
    /// which the tick must swap to claim this shed before moving anything.
    #[serde(skip)]
    pub shed: Option<ShedClaim>,
}

/// What a tick must swap to claim a shed, so one edge sheds a relay per
/// [`health::SHED_INTERVAL_MS`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShedClaim {
    /// Raw `relay-shed/<relay>` value read when planning (`None`: never shed).
    pub expected: Option<Vec<u8>>,
}

impl Signaling<'_> {
    /// Relays that lost health since they were last swept, with their rooms.
    pub fn sweeps(&self, now_ms: u64, kv: &dyn KvRead) -> Result<Vec<Sweep>, KvError> {
        let relays = directory::list(kv, now_ms, self.config.relay_stale_ms, &self.config.edge)?;
        let mut out = Vec::new();
        // Only failing relays: an idle standby or a demoted one keeps calls.
        for r in relays.iter().filter(|r| r.failing.is_some()) {
            let overloaded = r.failing == Some("relay-overloaded");
            let mut shed = None;
            if overloaded {
                let (last, raw) = read::<u64>(kv, &keys::relay_shed(&r.id))?;
                if last.is_some_and(|t| now_ms.saturating_sub(t) < health::SHED_INTERVAL_MS) {
                    continue;
                }
                shed = Some(ShedClaim { expected: raw });
            } else {
                let swept: Option<u64> = read(kv, &keys::relay_swept(&r.id))?.0;
                if swept == Some(r.received_at_ms) {
                    continue;
                }
            }
            let prefix = keys::relay_rooms_prefix(&r.id);
            let mut rooms: Vec<String> = kv
                .list(&prefix)?
                .into_iter()
                .map(|k| k[prefix.len()..].to_string())
                .collect();
            if overloaded {
                let keep = health::rooms_to_shed(rooms.len(), r.utilization.unwrap_or(0));
                if keep == 0 {
                    continue;
                }
                rooms.truncate(keep);
            }
            out.push(Sweep {
                relay: r.id.clone(),
                received_at_ms: r.received_at_ms,
                reason: r.failing.unwrap_or("relay-lost"),
                rooms,
                directory: relays.clone(),
                shed,
            });
        }
        Ok(out)
    }

    /// Move `room` off `relay` if it is still there. Returns the outcome and
    /// whether the room is settled (false: no healthy relay to move to yet).
    pub fn reroute_room(
        &self,
        now_ms: u64,
        sweep: &Sweep,
        room_name: &str,
        kv: &dyn KvRead,
    ) -> Result<(Outcome, bool), KvError> {
        let mut out = Outcome::default();
        let marker = keys::relay_room(&sweep.relay, room_name);
        let room_key = keys::room(room_name);
        let (room, raw) = read::<Room>(kv, &room_key)?;
        let Some(mut room) = room.filter(|r| r.relay.as_deref() == Some(sweep.relay.as_str()))
        else {
            // Moved already (by another edge, or a join), or gone.
            out.writes.push(Write::Delete { key: marker });
            return Ok((out, true));
        };
        if !self.move_room(
            now_ms,
            &mut room,
            room_name,
            &sweep.directory,
            sweep.reason,
            Some(sweep.received_at_ms),
            &mut out,
        ) {
            return Ok((out, false));
        }
        out.writes.push(cas(room_key, raw, &room));
        out.writes.push(Write::Delete { key: marker });
        Ok((out, true))
    }

    /// Point `room` at the best healthy relay other than its current one and
    /// add `reroute` frames for its connected members, the new relay's
    /// room marker and the call record's reroute event to `out`. `since_ms`
    /// is when the trouble began, if known. False when no relay can take it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn move_room(
        &self,
        now_ms: u64,
        room: &mut Room,
        room_name: &str,
        relays: &[RelayView],
        reason: &str,
        since_ms: Option<u64>,
        out: &mut Outcome,
    ) -> bool {
        // Nearest to the callers first, as they measured at join.
        let ranked = directory::rank(relays, &room.probes);
        let from = room.relay.clone();
        let Some(next) = ranked
            .iter()
            .copied()
            .find(|r| Some(&r.id) != from.as_ref())
        else {
            return false;
        };
        room.relay = Some(next.id.clone());
        room.stalls.clear();
        let standby = ranked
            .iter()
            .copied()
            .find(|r| r.region != next.region && Some(&r.id) != from.as_ref());
        for m in &room.members {
            let Some(conn) = m.conn.as_deref() else {
                continue; // away members get the new relay when they resume
            };
            out.deliveries.push(crate::signaling::Delivery {
                conn: conn.to_string(),
                frame: ServerFrame::Reroute {
                    reason,
                    relay: next.client_ref(),
                    ice_servers: self.ice_servers(next, m, now_ms),
                    standby: standby.map(|s| Standby {
                        relay: s.client_ref(),
                        ice_servers: self.ice_servers(s, m, now_ms),
                    }),
                }
                .to_json(),
            });
        }
        out.writes.push(Write::Put {
            key: keys::relay_room(&next.id, room_name),
            value: Vec::new(),
        });
        if let Some(call) = &room.call {
            crate::calls::record(
                out,
                call,
                now_ms,
                CallEventKind::Reroute {
                    from,
                    to: next.id.clone(),
                    reason: reason.to_string(),
                    since_ms,
                },
            );
        }
        true
    }

    /// Record that `sweep`'s relay life has been fully swept.
    pub fn sweep_done(&self, sweep: &Sweep) -> Outcome {
        Outcome {
            writes: vec![Write::Put {
                key: keys::relay_swept(&sweep.relay),
                value: encode(&sweep.received_at_ms),
            }],
            deliveries: Vec::new(),
        }
    }
}

/// Run a whole tick against a store: every sweep, every room, with the CAS
/// retry rule. Returns the deliveries. Shared by every host.
pub fn tick<S: crate::apply::KvStore>(
    s: &Signaling<'_>,
    now_ms: u64,
    store: &mut S,
) -> Result<Vec<crate::signaling::Delivery>, KvError> {
    let mut deliveries = Vec::new();
    for sweep in s.sweeps(now_ms, store)? {
        if let Some(claim) = &sweep.shed {
            let take = cas(
                keys::relay_shed(&sweep.relay),
                claim.expected.clone(),
                &now_ms,
            );
            if !crate::apply::apply(store, &[take])? {
                continue; // another edge is shedding this relay right now
            }
        }
        let mut settled = true;
        for room in &sweep.rooms {
            let mut failed = None;
            let mut room_settled = true;
            let applied =
                crate::apply::run(store, |kv| match s.reroute_room(now_ms, &sweep, room, kv) {
                    Ok((o, done)) => {
                        room_settled = done;
                        o
                    }
                    Err(e) => {
                        failed = Some(e);
                        Outcome::default()
                    }
                })?;
            if let Some(e) = failed {
                return Err(e);
            }
            match applied {
                Some(o) => deliveries.extend(o.deliveries),
                None => room_settled = false,
            }
            settled &= room_settled;
        }
        // A shed is done when claimed; a lost relay's life when all moved.
        if settled && sweep.shed.is_none() {
            crate::apply::apply(store, &s.sweep_done(&sweep).writes)?;
        }
    }
    // Calls whose participants vanished are closed here too, and callers'
    // loss reports judged (both rate-limited inside, since they scan), but
    // not on a tick that moved calls: its `reroute` frames must not wait.
    if deliveries.is_empty() {
        deliveries.extend(crate::call_sweep::housekeeping(s, now_ms, store)?);
        let min_rooms = if s.config.room_local_evidence {
            1
        } else {
            crate::loss::MIN_ROOMS
        };
        crate::loss::check(now_ms, min_rooms, store)?;
    }
    Ok(deliveries)
}
