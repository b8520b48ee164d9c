//! Key layout (docs/kv-schema.md is the reference; keep both in step).

/// Directory entry of one relay. Writer: the edge receiving its heartbeats.
pub fn relay(id: &str) -> String {
    format!("relay/{id}")
}

/// Index of known relay ids (CAS; changes only when a relay first appears).
pub const RELAY_INDEX: &str = "relays";

/// Roster and relay assignment of one room (CAS: joins and leaves race).
pub fn room(room: &str) -> String {
    format!("room/{room}")
}

/// A resumable session. Writer: the edge holding that participant's socket.
pub fn session(session: &str) -> String {
    format!("session/{session}")
}

/// Which participant a connection speaks for. Writer: the connection's edge.
pub fn conn(conn: &str) -> String {
    format!("conn/{conn}")
}

/// Marker: relay `relay` carries room `room`. Put when a room is assigned
/// to a relay; listed by prefix when the relay is lost; deleted by the sweep.
pub fn relay_room(relay: &str, room: &str) -> String {
    format!("relay-room/{relay}/{room}")
}

/// Prefix of every [`relay_room`] marker of one relay.
pub fn relay_rooms_prefix(relay: &str) -> String {
    format!("relay-room/{relay}/")
}

/// The heartbeat time (`received_at_ms`) of the relay life that was last
/// swept, so a dead relay's rooms are moved once, not on every tick.
pub fn relay_swept(relay: &str) -> String {
    format!("relay-swept/{relay}")
}

/// When an overloaded relay last shed calls (unix ms). Claimed by CAS, so
/// one edge sheds per [`crate::health::SHED_INTERVAL_MS`].
pub fn relay_shed(relay: &str) -> String {
    format!("relay-shed/{relay}")
}

/// One participant's loss over its last report interval, against the relay
/// that carried it ([`crate::loss`]). Writer: that participant's connection.
pub fn relay_loss(relay: &str, participant: &str) -> String {
    format!("{RELAY_LOSS_PREFIX}{relay}/{participant}")
}
/// Prefix of every [`relay_loss`] report; the loss check lists it.
pub const RELAY_LOSS_PREFIX: &str = "relay-loss/";

/// Present while callers' reports show the relay losing packets.
pub fn relay_lossy(relay: &str) -> String {
    format!("{RELAY_LOSSY_PREFIX}{relay}")
}
/// Prefix of every [`relay_lossy`] verdict; the loss check lists it to clear
/// verdicts whose reports are gone.
pub const RELAY_LOSSY_PREFIX: &str = "relay-lossy/";

/// When an edge last judged callers' loss reports (CAS: one edge per second).
pub const RELAY_LOSS_CHECK: &str = "relay-loss-check";

/// Rooms whose callers recently agreed that their audio stalled on the
/// relay (`StalledRooms`). Writer: any edge, by compare-and-swap.
pub fn relay_stalled_rooms(relay: &str) -> String {
    format!("relay-stalled-rooms/{relay}")
}

/// A relay callers reported as silent (`Suspect`). Writer: the edge that saw
/// the reports; honoured for [`crate::health::SUSPECT_MS`].
pub fn relay_suspect(relay: &str) -> String {
    format!("relay-suspect/{relay}")
}

/// An edge's report that the relay crashed (`CrashReport`): its heartbeat
/// connection to that edge closed and it then failed that edge's probe.
/// Writer: that edge's prober; honoured by every edge until a newer
/// heartbeat arrives (the relay lives after all, or a new process took its id).
pub fn relay_crashed(relay: &str) -> String {
    format!("relay-crashed/{relay}")
}

/// Active-probe verdict of one edge about one relay. Writer: that edge.
pub fn relay_probe(edge: &str, relay: &str) -> String {
    format!("relay-probe/{edge}/{relay}")
}

// Call records (docs/kv-schema.md "Call records"). Every key below has one
// writer per event: records grow by adding keys, never by rewriting a shared
// document, so edges never fight over them.

/// Summary of one call, written once when the call starts.
pub fn call(call: &str) -> String {
    format!("call/{call}")
}

/// Prefix of every [`call`] summary.
pub const CALLS_PREFIX: &str = "call/";

/// One event of a call. `at_ms` is zero-padded so keys sort by time; the
/// suffix names the event and its subject, so the same event written twice
/// (a retried outcome) lands on the same key.
pub fn call_event(call: &str, at_ms: u64, suffix: &str) -> String {
    format!("call-event/{call}/{at_ms:013}-{suffix}")
}

/// Prefix of every [`call_event`] of one call.
pub fn call_events_prefix(call: &str) -> String {
    format!("call-event/{call}/")
}

/// Quality summary of one participant's `stats` reports in one call.
/// Writer: the edge holding that participant's connection.
pub fn call_quality(call: &str, participant: &str) -> String {
    format!("call-quality/{call}/{participant}")
}

/// Prefix of every [`call_quality`] of one call.
pub fn call_quality_prefix(call: &str) -> String {
    format!("call-quality/{call}/")
}

/// Index entry: call `call` took place in room `room` (empty value).
/// Written with the call's summary, so a query for one room's calls reads
/// that room's entries, newest first, instead of every call.
pub fn call_by_room(room: &str, call: &str) -> String {
    format!("call-room/{room}/{call}")
}

/// Prefix of every [`call_by_room`] entry of one room.
pub fn call_by_room_prefix(room: &str) -> String {
    format!("call-room/{room}/")
}

/// Index entry: `identity` took part in call `call` (empty value). Written
/// with the identity's first join event in that call.
pub fn call_by_identity(identity: &str, call: &str) -> String {
    format!("call-identity/{identity}/{call}")
}

/// Prefix of every [`call_by_identity`] entry of one identity.
pub fn call_by_identity_prefix(identity: &str) -> String {
    format!("call-identity/{identity}/")
}

/// Call-record keys that readers list in order, split into their *group*
/// (the prefix readers list) and *member* (the rest): `call/` + call id,
/// `call-event/<call>/` + event, `call-quality/<call>/` + participant,
/// `call-room/<room>/` + call id, `call-identity/<identity>/` + call id.
/// A store without ordered key ranges (Redis) keeps one sorted set per
/// group with these members, so listing a group costs what it returns
/// instead of a walk over the keyspace. `None` for every other key.
pub fn ordered_group(key: &str) -> Option<(&str, &str)> {
    if key.starts_with(CALLS_PREFIX) {
        return Some(key.split_at(CALLS_PREFIX.len()));
    }
    // The call id has no '/': the group ends at the first one after it.
    for family in ["call-event/", "call-quality/"] {
        if let Some(rest) = key.strip_prefix(family) {
            let slash = rest.find('/')?;
            return Some(key.split_at(family.len() + slash + 1));
        }
    }
    // Rooms and identities may hold '/', call ids never: the member is
    // what follows the last one.
    for family in ["call-room/", "call-identity/"] {
        if key.starts_with(family) {
            let slash = key.rfind('/')?;
            if slash < family.len() {
                return None;
            }
            return Some(key.split_at(slash + 1));
        }
    }
    None
}

/// Marker: call `call` has not ended. Listed by the timeout sweep.
pub fn call_open(call: &str) -> String {
    format!("call-open/{call}")
}

/// Prefix of every [`call_open`] marker.
pub const CALLS_OPEN_PREFIX: &str = "call-open/";

/// When edge `edge` last swept open calls for timeouts (JSON number, ms).
pub fn calls_swept(edge: &str) -> String {
    format!("calls-swept/{edge}")
}

/// Keys whose writes must be durable before the frame that caused them is
/// acknowledged (a crash may lose nothing a client was told about). Quality
/// reports are not acknowledged, so they ride the group commit.
pub fn needs_durable_write(key: &str) -> bool {
    key.starts_with(CALLS_PREFIX) || key.starts_with("call-event/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_split_into_their_ordered_group() {
        let c = "c-1764118923456-9f2c4e1a0b3d";
        assert_eq!(ordered_group(&call(c)), Some(("call/", c)));
        assert_eq!(
            ordered_group(&call_event(c, 5, "leave-p-1")),
            Some((
                "call-event/c-1764118923456-9f2c4e1a0b3d/",
                "0000000000005-leave-p-1"
            ))
        );
        assert_eq!(
            ordered_group(&call_event(c, 5, "reroute-odd/relay")),
            Some((
                "call-event/c-1764118923456-9f2c4e1a0b3d/",
                "0000000000005-reroute-odd/relay"
            )),
            "the call id ends the group, whatever the event's subject holds"
        );
        assert_eq!(
            ordered_group(&call_quality(c, "p-1")).map(|g| g.0),
            Some(call_quality_prefix(c).as_str())
        );
        // A room or identity with '/' in it: the call id is the member.
        assert_eq!(
            ordered_group(&call_by_room("team/standup", c)),
            Some(("call-room/team/standup/", c))
        );
        assert_eq!(
            ordered_group(&call_by_identity("alice", c)).map(|g| g.0),
            Some(call_by_identity_prefix("alice").as_str())
        );
        assert_eq!(ordered_group("call-room/nothing"), None);
        assert_eq!(ordered_group(&call_open(c)), None);
        assert_eq!(ordered_group(&room("r")), None);
    }
}
