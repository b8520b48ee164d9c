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
