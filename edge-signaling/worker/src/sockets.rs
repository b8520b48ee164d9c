//! A room's WebSockets: who each socket is, and sending frames to them.
//!
//! Sockets are accepted with the hibernation API, so the object can be
//! evicted from memory while its sockets stay open. What the object must
//! know about a socket when it wakes travels with the socket: its connection
//! id is both its tag (to find it again for deliveries) and, with its room,
//! its serialized attachment.

use edge_signaling::Delivery;
use serde::{Deserialize, Serialize};
use worker::{State, WebSocket};

/// What a socket carries across hibernation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// The core's connection id for this socket.
    pub conn: String,
    /// The room in the socket's URL: the only room it may join.
    pub room: String,
}

pub fn accept(state: &State, ws: &WebSocket, att: &Attachment) -> worker::Result<()> {
    state.accept_websocket_with_tags(ws, &[att.conn.as_str()]);
    ws.serialize_attachment(att)
}

pub fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment().ok().flatten()
}

/// True while a socket for `conn` is open in this object.
pub fn is_open(state: &State, conn: &str) -> bool {
    !state.get_websockets_with_tag(conn).is_empty()
}

/// Send each frame to its connection's socket. A socket that closed meanwhile
/// is skipped: its close event tells the core.
pub fn deliver(state: &State, deliveries: Vec<Delivery>) {
    for d in deliveries {
        for ws in state.get_websockets_with_tag(&d.conn) {
            let _ = ws.send_with_str(&d.frame);
        }
    }
}
