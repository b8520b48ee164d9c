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

/// A relay callers reported as silent (`Suspect`). Writer: the edge that saw
/// the reports; honoured for [`crate::health::SUSPECT_MS`].
pub fn relay_suspect(relay: &str) -> String {
    format!("relay-suspect/{relay}")
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
