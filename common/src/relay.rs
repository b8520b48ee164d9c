//! The relay directory record and signed heartbeats.
//!
//! Each relay POSTs a [`Heartbeat`] (JSON) to the signaling plane at least every
//! 500 ms with the header [`SIGNATURE_HEADER`] carrying
//! `hex(HMAC-SHA256(heartbeat_key(relay_secret), body))`. The heartbeat key is
//! derived from the same secret that signs TURN credentials, with a fixed label,
//! so one secret is configured per fleet but a leaked heartbeat signature says
//! nothing about TURN passwords (domain separation).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// HTTP header that carries the heartbeat signature.
pub const SIGNATURE_HEADER: &str = "x-tern-signature";

/// Heartbeats whose `sent_at_ms` is further than this from the receiver's clock
/// are refused, which bounds replay of a captured heartbeat.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// How a relay wants to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    /// Takes new allocations.
    Active,
    /// Finishing existing allocations; must not be handed to new callers.
    Draining,
    /// Cold standby: registered and healthy but given calls only when its
    /// region has no active relay left (then promoted automatically).
    Standby,
}

/// One address a relay listens on for TURN clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// `ip:port` reachable by clients.
    pub address: String,
}

impl Listener {
    /// The URL a browser puts in `iceServers.urls`.
    pub fn turn_url(&self) -> String {
        match self.transport.as_str() {
            "tls" => format!("turns:{}?transport=tcp", self.address),
            t => format!("turn:{}?transport={t}", self.address),
        }
    }
}

/// Load figures a relay reports with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// TURN allocations the relay holds at the moment of the heartbeat.
    pub allocations: u64,
    /// Packets relayed per second, averaged since the previous heartbeat.
    pub pps: u64,
    /// Process CPU use since the previous heartbeat (100 = one core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Datapath threads: the relay saturates at `threads` × 100 % CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

/// What a relay says about itself in one heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable id of the relay process, e.g. `local-a-1`.
    pub id: String,
    /// Region the relay serves, e.g. `local-a`; callers' `probes` rank relays by it.
    pub region: String,
    /// Addresses TURN clients reach the relay on; at least one is required.
    pub listeners: Vec<Listener>,
    /// Whether the relay takes new calls, is draining or is a standby.
    pub state: RelayState,
    /// Load at the time of sending, which signaling uses to balance and shed rooms.
    pub load: Load,
    /// Monotonic per relay process; lets a receiver drop reordered heartbeats.
    pub seq: u64,
    /// Relay's wall clock when sent (unix ms).
    pub sent_at_ms: u64,
    /// Random per relay process start: tells one run's heartbeats from
    /// another's, so a heartbeat of an earlier run (replayed, or late) is
    /// refused once a later run has been heard (empty from older relays).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot: String,
}

/// Why [`verify`] refused a heartbeat (the origin answers 401 to all of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// The signature is not hex or does not match the body under the fleet's secret.
    #[error("heartbeat signature is missing or wrong")]
    BadSignature,
    /// The body is genuine but not a heartbeat, or lacks an id, a region or a listener.
    #[error("heartbeat body is not a valid heartbeat: {0}")]
    Malformed(String),
    /// `sent_at_ms` is more than [`MAX_CLOCK_SKEW_MS`] from the receiver's clock
    /// (a replay, or a relay whose clock is wrong).
    #[error("heartbeat clock is {skew_ms} ms away from ours")]
    ClockSkew {
        /// Distance between the relay's clock and ours, in ms.
        skew_ms: u64,
    },
}

fn heartbeat_mac(relay_secret: &[u8]) -> Hmac<Sha256> {
    let mut k = Hmac::<Sha256>::new_from_slice(relay_secret).expect("any key length");
    k.update(b"tern heartbeat key v1");
    let key = k.finalize().into_bytes();
    Hmac::<Sha256>::new_from_slice(&key).expect("any key length")
}

/// Signature for a heartbeat body.
pub fn sign(relay_secret: &[u8], body: &[u8]) -> String {
    let mut mac = heartbeat_mac(relay_secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verify signature and freshness, then parse. Constant-time compare.
pub fn verify(
    relay_secret: &[u8],
    body: &[u8],
    signature: &str,
    now_ms: u64,
) -> Result<Heartbeat, HeartbeatError> {
    let sig = hex::decode(signature.trim()).map_err(|_| HeartbeatError::BadSignature)?;
    let mut mac = heartbeat_mac(relay_secret);
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| HeartbeatError::BadSignature)?;
    let hb: Heartbeat =
        serde_json::from_slice(body).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let skew_ms = hb.sent_at_ms.abs_diff(now_ms);
    if skew_ms > MAX_CLOCK_SKEW_MS {
        return Err(HeartbeatError::ClockSkew { skew_ms });
    }
    if hb.id.is_empty() || hb.region.is_empty() || hb.listeners.is_empty() {
        return Err(HeartbeatError::Malformed(
            "id, region and at least one listener are required".into(),
        ));
    }
    Ok(hb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(now: u64) -> Heartbeat {
        Heartbeat {
            id: "r1".into(),
            region: "local-a".into(),
            listeners: vec![Listener {
                transport: "udp".into(),
                address: "127.0.0.1:3478".into(),
            }],
            state: RelayState::Active,
            load: Load::default(),
            seq: 1,
            sent_at_ms: now,
            boot: String::new(),
        }
    }

    #[test]
    fn signed_heartbeat_round_trips() {
        let body = serde_json::to_vec(&hb(1000)).unwrap();
        let sig = sign(b"s", &body);
        assert_eq!(verify(b"s", &body, &sig, 1500).unwrap(), hb(1000));
    }

    #[test]
    fn forged_or_stale_heartbeats_are_refused() {
        let body = serde_json::to_vec(&hb(1000)).unwrap();
        let sig = sign(b"s", &body);
        assert_eq!(
            verify(b"other", &body, &sig, 1000),
            Err(HeartbeatError::BadSignature)
        );
        assert_eq!(
            verify(b"s", &body, "zz", 1000),
            Err(HeartbeatError::BadSignature)
        );
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert_eq!(
            verify(b"s", &tampered, &sig, 1000),
            Err(HeartbeatError::BadSignature)
        );
        assert!(matches!(
            verify(b"s", &body, &sig, 1000 + MAX_CLOCK_SKEW_MS + 1),
            Err(HeartbeatError::ClockSkew { .. })
        ));
    }

    #[test]
    fn turn_urls() {
        let l = Listener {
            transport: "udp".into(),
            address: "127.0.0.2:3478".into(),
        };
        assert_eq!(l.turn_url(), "turn:127.0.0.2:3478?transport=udp");
    }
}
