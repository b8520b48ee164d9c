//! Which Durable Object holds which of the core's keys (docs/kv-schema.md
//! names them; docs/deploy.md explains the split).
//!
//! Everything about one room (roster, sessions, connection bindings, call
//! records, which relays it has been swept off) lives in that room's object.
//! Everything about relays (records, index, suspicion, probe verdicts, crash
//! reports) lives in the directory object, which every room reads. The
//! room-on-relay markers live in both: the room's copy drives the core's own
//! reroute sweep, the directory's copy tells it which rooms to wake when a
//! relay fails.

use edge_signaling::keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// Only the relay directory object.
    Directory,
    /// Only the room's object.
    Room,
    /// The room's object, mirrored into the directory object.
    Both,
}

pub fn home(key: &str) -> Home {
    if key.starts_with(RELAY_ROOM_PREFIX) {
        Home::Both
    } else if key == keys::RELAY_INDEX
        || key.starts_with(&keys::relay(""))
        || key.starts_with(&keys::relay_suspect(""))
        || key.starts_with(&keys::relay_stalled_rooms(""))
        || key.starts_with(&keys::relay_crashed(""))
        || key.starts_with(RELAY_PROBE_PREFIX)
    {
        Home::Directory
    } else {
        Home::Room
    }
}

/// Prefixes of `keys::relay_room` and `keys::relay_probe`, whose helpers
/// take two parts (the test below keeps them in step with keys.rs).
const RELAY_ROOM_PREFIX: &str = "relay-room/";
const RELAY_PROBE_PREFIX: &str = "relay-probe/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_homes() {
        assert_eq!(home(&keys::relay("r1")), Home::Directory);
        assert_eq!(home(keys::RELAY_INDEX), Home::Directory);
        assert_eq!(home(&keys::relay_suspect("r1")), Home::Directory);
        assert_eq!(home(&keys::relay_stalled_rooms("r1")), Home::Directory);
        assert_eq!(home(&keys::relay_crashed("r1")), Home::Directory);
        assert_eq!(home(&keys::relay_probe("cf", "r1")), Home::Directory);
        assert_eq!(home(&keys::relay_room("r1", "math")), Home::Both);
        assert_eq!(home(&keys::relay_rooms_prefix("r1")), Home::Both);
        assert_eq!(home(&keys::relay_swept("r1")), Home::Room);
        assert_eq!(home(&keys::room("math")), Home::Room);
        assert_eq!(home(&keys::room("relay-room/x")), Home::Room);
        assert_eq!(home(&keys::session("s")), Home::Room);
    }
}
