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

/// A relay callers reported as silent (`Suspect`). Writer: the edge that saw
/// the reports; honoured for [`crate::health::SUSPECT_MS`].
pub fn relay_suspect(relay: &str) -> String {
    format!("relay-suspect/{relay}")
}

/// Active-probe verdict of one edge about one relay. Writer: that edge.
pub fn relay_probe(edge: &str, relay: &str) -> String {
    format!("relay-probe/{edge}/{relay}")
}
