//! What handling one input produces: the writes for the host to apply and
//! the frames to deliver. Every module that handles inputs builds one.

use crate::error::FrameError;
use crate::frame::ServerFrame;
use crate::kv::Write;

/// A frame to send on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Connection to send on (`<edge>.<boot nonce>.<counter>`, or an HTTP
    /// transport connection's id); the edge holding it delivers.
    pub conn: String,
    /// The server frame as JSON text.
    pub frame: String,
}

/// What handling one input produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// KV writes, applied together by [`crate::apply::run`]: a lost CAS voids
    /// the outcome and the input is handled again on fresh reads.
    pub writes: Vec<Write>,
    /// Frames to send once the writes have applied.
    pub deliveries: Vec<Delivery>,
}

impl Outcome {
    /// Queue `frame` for connection `conn`.
    pub(crate) fn deliver(&mut self, conn: &str, frame: ServerFrame<'_>) {
        self.deliveries.push(Delivery {
            conn: conn.to_string(),
            frame: frame.to_json(),
        });
    }

    /// An outcome that only tells `conn` what went wrong.
    pub fn error(conn: &str, err: &FrameError) -> Outcome {
        let mut o = Outcome::default();
        o.deliver(
            conn,
            ServerFrame::Error {
                code: err.code,
                message: &err.message,
                to: err.to.as_deref(),
            },
        );
        o
    }
}
