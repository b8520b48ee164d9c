//! The call timeout sweep: members away past the grace period leave
//! (`timeout`), and calls with nobody left end. Run from every edge's tick,
//! at most every `call_sweep_ms` per edge.

use crate::apply::{self, KvStore};
use crate::calls::{end, end_if_empty};
use crate::keys;
use crate::kv::{KvError, KvRead, Write};
use crate::model::{cas, encode, read, Room};
use crate::outcome::{Delivery, Outcome};
use crate::signaling::Signaling;

impl Signaling<'_> {
    /// Close what has timed out in call `call`: members away past the grace
    /// period leave (`timeout`), and a call with nobody left ends. Also ends
    /// a call whose room has moved on to another call (or is gone). No
    /// writes when nothing is due.
    pub fn expire_call(
        &self,
        now_ms: u64,
        call: &str,
        kv: &dyn KvRead,
    ) -> Result<Outcome, KvError> {
        let mut out = Outcome::default();
        let Some(room_name) = read::<String>(kv, &keys::call_open(call))?.0 else {
            return Ok(out); // ended meanwhile
        };
        let room_key = keys::room(&room_name);
        let (room, raw) = read::<Room>(kv, &room_key)?;
        let Some(mut room) = room.filter(|r| r.call.as_deref() == Some(call)) else {
            end(&mut out, call, now_ms, "timeout");
            return Ok(out);
        };
        let before = room.members.len();
        self.prune_away(now_ms, &mut room, &mut out);
        if room.members.len() == before && !room.members.is_empty() {
            return Ok(Outcome::default());
        }
        end_if_empty(&mut out, &mut room, now_ms, "timeout");
        out.writes.insert(0, cas(room_key, raw, &room));
        Ok(out)
    }
}

/// The timeout sweep, run from every edge's tick but at most every
/// `call_sweep_ms` per edge: it lists the open calls (a prefix scan, so not
/// on every tick) and expires what is due. Returns `peer-left` deliveries
/// for participants still connected in a call whose absent members timed
/// out.
pub fn housekeeping<S: KvStore>(
    s: &Signaling<'_>,
    now_ms: u64,
    store: &mut S,
) -> Result<Vec<Delivery>, KvError> {
    let swept_key = keys::calls_swept(&s.config.edge);
    let last: Option<u64> = read(store, &swept_key)?.0;
    if last.is_some_and(|t| now_ms.saturating_sub(t) < s.config.call_sweep_ms) {
        return Ok(Vec::new());
    }
    let mut deliveries = Vec::new();
    for key in store.list(keys::CALLS_OPEN_PREFIX)? {
        let call = &key[keys::CALLS_OPEN_PREFIX.len()..];
        let mut failed = None;
        let applied = apply::run(store, |kv| {
            s.expire_call(now_ms, call, kv).unwrap_or_else(|e| {
                failed = Some(e);
                Outcome::default()
            })
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // A conflict means the room is busy: its next change or sweep
        // settles it.
        if let Some(o) = applied {
            deliveries.extend(o.deliveries);
        }
    }
    apply::apply(
        store,
        &[Write::Put {
            key: swept_key,
            value: encode(&now_ms),
        }],
    )?;
    Ok(deliveries)
}
