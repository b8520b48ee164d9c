//! Stable error codes sent to clients in `{"type":"error","code":..}` frames.
//! Codes are part of the protocol contract: add new ones, never rename.

use serde::Serialize;

/// The `code` of an `error` frame (snake_case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field is missing or of the wrong type.
    BadRequest,
    /// The `type` is not one this server knows.
    UnknownType,
    /// The frame is larger than the limit (64 KiB).
    FrameTooLarge,
    /// Token missing, malformed, wrongly signed, or for another room.
    BadToken,
    /// Token signature is fine but `exp` has passed.
    ExpiredToken,
    /// The room has its maximum number of participants.
    RoomFull,
    /// `signal.to` names no participant connected to this room.
    UnknownPeer,
    /// A frame that needs a joined connection arrived before `join`.
    NotJoined,
    /// `join` on a connection that has already joined.
    AlreadyJoined,
    /// No healthy relay is registered, so no call can be placed.
    NoRelay,
    /// The state store failed or kept conflicting; the frame had no effect.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NoRelay => "no_relay",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An error to report to the sender of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Code sent to the client.
    pub code: ErrorCode,
    /// Explanation for humans sent with it.
    pub message: String,
    /// For `unknown_peer`: the `to` of the refused signal, so a client can
    /// tell which of its signals was lost and re-send it when the peer is back.
    pub to: Option<String>,
}

impl FrameError {
    /// An error with `code` and `message` that names no peer.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            to: None,
        }
    }
}
