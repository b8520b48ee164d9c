//! Settings a host passes to the core. The core never reads the environment
//! itself; the wasm component reads these from its environment variables.

/// Limits and secrets for one deployment.
#[derive(Debug, Clone)]
pub struct Config {
    /// HS256 key room tokens are signed with (the app's API secret).
    pub api_secret: Vec<u8>,
    /// Shared with relays: signs TURN REST credentials and heartbeats.
    pub relay_secret: Vec<u8>,
    /// Name of the edge this instance runs at (for logs and, later, routing).
    pub edge: String,
    /// Lifetime of minted TURN credentials.
    pub turn_ttl_secs: u64,
    /// Participants allowed in one room (a mesh call grows O(n²)).
    pub max_room_size: usize,
    /// A relay whose last heartbeat is older than this is not healthy.
    pub relay_stale_ms: u64,
    /// A participant whose connection dropped keeps its place this long, so a
    /// reconnecting client can resume with its `session`.
    pub session_grace_ms: u64,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// How often (at most) an edge's tick sweeps open calls for members
    /// away past `session_grace_ms`, closing calls nobody is left in.
    pub call_sweep_ms: u64,
    /// The host keeps callers' evidence about relays per room (the
    /// Worker: each room's object has its own `relay-loss`): a loss verdict
    /// there can only move the room that reached it, so it needs no second
    /// room to agree (see [`crate::loss::MIN_ROOMS`]).
    pub room_local_evidence: bool,
}

impl Config {
    /// Default `max_frame_bytes`: 64 KiB, protocol v1's frame limit.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
    /// Default `session_grace_ms`: 30 s for a dropped participant to resume.
    pub const DEFAULT_SESSION_GRACE_MS: u64 = 30_000;
    /// Default `call_sweep_ms`: an edge sweeps open calls at most every 5 s.
    pub const DEFAULT_CALL_SWEEP_MS: u64 = 5_000;

    /// A deployment with these secrets and the defaults: edge `local`, TURN
    /// credentials valid 6 h, rooms of up to 16, relays stale after 1.5 s.
    pub fn new(api_secret: impl Into<Vec<u8>>, relay_secret: impl Into<Vec<u8>>) -> Self {
        Config {
            api_secret: api_secret.into(),
            relay_secret: relay_secret.into(),
            edge: "local".into(),
            turn_ttl_secs: 6 * 3600,
            max_room_size: 16,
            relay_stale_ms: 1_500,
            session_grace_ms: Self::DEFAULT_SESSION_GRACE_MS,
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            call_sweep_ms: Self::DEFAULT_CALL_SWEEP_MS,
            room_local_evidence: false,
        }
    }
}
