//! Wire frames of protocol v1 (JSON text over WebSocket or HTTP).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::{ErrorCode, FrameError};

/// A frame from a client, after parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Join {
        room: String,
        token: String,
        session: Option<String>,
        /// Region → measured RTT in ms, from the SDK's probes.
        probes: BTreeMap<String, f64>,
    },
    Signal {
        to: String,
        data: serde_json::Value,
    },
    Leave,
    Ping {
        id: serde_json::Value,
    },
    Stats {
        report: serde_json::Value,
    },
    /// Inbound audio from peers stopped while they are still connected to
    /// signaling: evidence against the relay carrying the call.
    Stall {
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
            "ping" => Ok(ClientFrame::Ping {
                id: obj.get("id").cloned().unwrap_or(serde_json::Value::Null),
            }),
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
    pub id: String,
    pub region: String,
}

/// One entry of `iceServers` (RTCIceServer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub participant: String,
    pub identity: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    pub relay: RelayRef,
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServer>,
}

/// A frame to a client. Built and serialized at once, never stored, so the
/// size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerFrame<'a> {
    Joined {
        participant: &'a str,
        session: &'a str,
        identity: &'a str,
        room: &'a str,
        resumed: bool,
        peers: Vec<PeerInfo>,
        relay: RelayRef,
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        #[serde(skip_serializing_if = "Option::is_none")]
        standby: Option<Standby>,
    },
    PeerJoined {
        participant: &'a str,
        identity: &'a str,
    },
    PeerLeft {
        participant: &'a str,
    },
    Signal {
        from: &'a str,
        data: &'a serde_json::Value,
    },
    Left,
    /// Move media to another relay: ICE restart with these servers.
    Reroute {
        reason: &'a str,
        relay: RelayRef,
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        #[serde(skip_serializing_if = "Option::is_none")]
        standby: Option<Standby>,
    },
    Pong {
        id: &'a serde_json::Value,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
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
