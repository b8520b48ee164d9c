//! Wire frames of protocol v1 (JSON text over WebSocket or HTTP).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::{ErrorCode, FrameError};

/// A frame from a client, after parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `join`: enter a room with a room token, or resume a session.
    Join {
        /// Room name, 1–128 bytes; must equal the token's `room` claim.
        room: String,
        /// Room token: a JWT (HS256) signed with the app's API secret.
        token: String,
        /// The `session` of an earlier `joined`, to resume (an empty string
        /// counts as none).
        session: Option<String>,
        /// Region → measured RTT in ms, from the SDK's probes.
        probes: BTreeMap<String, f64>,
    },
    /// `signal`: forward `data` to another participant of the sender's room.
    Signal {
        /// Participant id of the recipient.
        to: String,
        /// Opaque JSON object (SDP, ICE candidates), forwarded unchanged.
        data: serde_json::Value,
    },
    /// `leave`: leave the room and end the session; the connection stays open.
    Leave,
    /// `ping`: answered with `pong`, also before joining; the `id` is at
    /// most [`MAX_PING_ID_BYTES`] as JSON.
    Ping {
        /// Echoed in the `pong` as given (any JSON value; `null` when absent).
        id: serde_json::Value,
    },
    /// `stats`: a quality report for the call record; nothing is sent back.
    Stats {
        /// The whole frame, read later as a [`crate::calls::StatsReport`].
        report: serde_json::Value,
    },
    /// Inbound audio from peers stopped while they are still connected to
    /// signaling: evidence against the relay carrying the call.
    Stall {
        /// Relay that carried the audio when it stopped; a report about a
        /// relay the room no longer uses is ignored.
        relay: String,
    },
}

#[derive(Deserialize)]
struct RawStall {
    relay: String,
}

#[derive(Deserialize)]
struct RawJoin {
    room: String,
    token: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    probes: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct RawSignal {
    to: String,
    data: serde_json::Value,
}

const MAX_ROOM_LEN: usize = 128;
/// Longest `ping` id, in bytes of its JSON (a counter or a short string
/// fits many times over).
pub const MAX_PING_ID_BYTES: usize = 128;

impl ClientFrame {
    /// Parse one text frame. Size is checked by the caller first.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            FrameError::new(ErrorCode::BadRequest, format!("frame is not JSON: {e}"))
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| FrameError::new(ErrorCode::BadRequest, "frame must be a JSON object"))?;
        let ty = obj.get("type").and_then(|t| t.as_str()).ok_or_else(|| {
            FrameError::new(ErrorCode::BadRequest, "frame needs a string \"type\"")
        })?;
        let bad = |e: serde_json::Error| {
            FrameError::new(ErrorCode::BadRequest, format!("bad \"{ty}\" frame: {e}"))
        };
        match ty {
            "join" => {
                let j: RawJoin = serde_json::from_value(value.clone()).map_err(bad)?;
                if j.room.is_empty() || j.room.len() > MAX_ROOM_LEN {
                    return Err(FrameError::new(
                        ErrorCode::BadRequest,
                        format!("room must be 1..={MAX_ROOM_LEN} bytes"),
                    ));
                }
                Ok(ClientFrame::Join {
                    room: j.room,
                    token: j.token,
                    session: j.session.filter(|s| !s.is_empty()),
                    probes: j.probes,
                })
            }
            "signal" => {
                let s: RawSignal = serde_json::from_value(value.clone()).map_err(bad)?;
                if !s.data.is_object() {
                    return Err(FrameError::new(
                        ErrorCode::BadRequest,
                        "signal \"data\" must be a JSON object",
                    ));
                }
                Ok(ClientFrame::Signal {
                    to: s.to,
                    data: s.data,
                })
            }
            "leave" => Ok(ClientFrame::Leave),
            "ping" => {
                let id = obj.get("id").cloned().unwrap_or(serde_json::Value::Null);
                // The pong echoes the id: a large one would let a client
                // make the edge queue a frame as big as its own for free.
                let len = serde_json::to_string(&id).map_or(usize::MAX, |s| s.len());
                if len > MAX_PING_ID_BYTES {
                    return Err(FrameError::new(
                        ErrorCode::BadRequest,
                        format!(
                            "ping \"id\" is {len} bytes as JSON; the limit is {MAX_PING_ID_BYTES}"
                        ),
                    ));
                }
                Ok(ClientFrame::Ping { id })
            }
            "stats" => Ok(ClientFrame::Stats { report: value }),
            "stall" => {
                let s: RawStall = serde_json::from_value(value.clone()).map_err(bad)?;
                Ok(ClientFrame::Stall { relay: s.relay })
            }
            other => Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {other:?}"),
            )),
        }
    }
}

/// Relay identity as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayRef {
    /// Relay id, e.g. `local-a-1`; what a `stall` or `stats` frame names.
    pub id: String,
    /// Region the relay serves.
    pub region: String,
}

/// One entry of `iceServers` (RTCIceServer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:`/`turns:` URLs, one per listener of the relay.
    pub urls: Vec<String>,
    /// TURN REST username, `<expiry unix seconds>:<participant>`.
    pub username: String,
    /// TURN REST password for `username`.
    pub credential: String,
}

/// Another participant of the room, as `joined` lists it in `peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its participant id, the address for `signal`.
    pub participant: String,
    /// Its identity, from its room token.
    pub identity: String,
}

/// A hot standby: a relay in another region with credentials, so a client
/// whose relay dies can switch without another round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    /// The standby relay.
    pub relay: RelayRef,
    /// Credentials for it, as `iceServers`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// A frame to a client. Built and serialized at once, never stored, so the
/// size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerFrame<'a> {
    /// `joined`: answer to a `join`, fresh or resumed.
    Joined {
        /// This participant's id in the room.
        participant: &'a str,
        /// Secret resume handle (128 bits), for rejoining after a dropped socket.
        session: &'a str,
        /// Identity from the room token.
        identity: &'a str,
        /// Room joined.
        room: &'a str,
        /// An earlier session was resumed: same participant, peers not told.
        resumed: bool,
        /// Everyone else connected in the room; the newcomer sends them offers.
        peers: Vec<PeerInfo>,
        /// The room's relay, which every participant of the room uses.
        relay: RelayRef,
        /// TURN credentials for `relay`, valid for `turn_ttl_secs`.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        /// A relay in another region to switch to; absent when none is healthy.
        #[serde(skip_serializing_if = "Option::is_none")]
        standby: Option<Standby>,
    },
    /// `peer-joined`: someone new joined the room (not sent for a resume).
    PeerJoined {
        /// The newcomer's participant id.
        participant: &'a str,
        /// Its identity.
        identity: &'a str,
    },
    /// `peer-left`: a participant left, or stayed away past the grace period.
    PeerLeft {
        /// Participant that is gone.
        participant: &'a str,
    },
    /// `signal`: data another participant of the room sent to this one.
    Signal {
        /// Participant id of the sender.
        from: &'a str,
        /// The sender's `data`, unchanged.
        data: &'a serde_json::Value,
    },
    /// `left`: answer to `leave`.
    Left,
    /// Move media to another relay: ICE restart with these servers.
    Reroute {
        /// `relay-lost`, `relay-draining`, `relay-degraded`, `relay-overloaded`
        /// or `media-stalled`; clients treat an unknown reason like any other.
        reason: &'a str,
        /// The relay to move to.
        relay: RelayRef,
        /// TURN credentials for `relay`.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        /// A relay in another region, as in `joined`.
        #[serde(skip_serializing_if = "Option::is_none")]
        standby: Option<Standby>,
    },
    /// `pong`: answer to `ping`.
    Pong {
        /// The ping's `id`, as given.
        id: &'a serde_json::Value,
    },
    /// `error`: the client's frame was refused and had no effect.
    Error {
        /// Stable, machine-readable code.
        code: ErrorCode,
        /// A sentence for humans; may change.
        message: &'a str,
        /// For `unknown_peer`: the `to` of the refused signal.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// The frame as the JSON text sent to the client.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_frame() {
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"join","room":"r","token":"t","probes":{"a":12.5}}"#),
            Ok(ClientFrame::Join { .. })
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"signal","to":"p","data":{"sdp":"x"}}"#),
            Ok(ClientFrame::Signal { .. })
        ));
        assert_eq!(
            ClientFrame::parse(r#"{"type":"leave"}"#),
            Ok(ClientFrame::Leave)
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping","id":7}"#),
            Ok(ClientFrame::Ping { .. })
        ));
    }

    #[test]
    fn rejects_bad_frames_with_stable_codes() {
        let code = |s: &str| ClientFrame::parse(s).unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::BadRequest);
        assert_eq!(code("[1]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        let long_id = format!(
            r#"{{"type":"ping","id":"{}"}}"#,
            "x".repeat(MAX_PING_ID_BYTES)
        );
        assert_eq!(code(&long_id), ErrorCode::BadRequest, "id over the limit");
        let id = format!(
            r#"{{"type":"ping","id":"{}"}}"#,
            "x".repeat(MAX_PING_ID_BYTES - 2)
        );
        assert!(
            ClientFrame::parse(&id).is_ok(),
            "an id of exactly the limit"
        );
        assert_eq!(code(r#"{"type":"join","room":"r"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"join","room":"","token":"t"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"p","data":"x"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
    }

    #[test]
    fn server_frames_use_protocol_names() {
        let f = ServerFrame::PeerLeft { participant: "p1" };
        assert_eq!(f.to_json(), r#"{"type":"peer-left","participant":"p1"}"#);
        let e = ServerFrame::Error {
            code: ErrorCode::RoomFull,
            message: "full",
            to: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
    }
}
