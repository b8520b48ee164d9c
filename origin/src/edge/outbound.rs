//! One socket's outbound queue, bounded: what an edge holds for a browser
//! that does not read.
//!
//! Frames for a socket come from its own requests and from everyone else in
//! its room. A browser that stops reading (a frozen tab, a hostile client)
//! would make the edge hold them without end; so a socket may have at most
//! [`MAX_FRAMES`] frames or [`MAX_BYTES`] bytes queued and not yet written
//! to the kernel, the same budget as the HTTP transport's mailbox. Past it
//! the socket is closed with [`SLOW_READER`]: the browser reconnects and
//! resumes its session, getting the room's state afresh instead of a
//! backlog.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message};
use tokio::sync::{mpsc, watch};

/// Frames one socket may have queued.
pub const MAX_FRAMES: usize = 1024;
/// Bytes one socket may have queued.
pub const MAX_BYTES: usize = 1 << 20;
/// The close code for a socket over its budget: 1008, policy violation
/// (RFC 6455 §7.4.1); the reason says which.
pub const SLOW_READER: u16 = 1008;

/// The edge's side of one socket's queue: frames go in, and a close can be
/// asked for when the socket is over its budget.
pub struct Outbound {
    tx: mpsc::UnboundedSender<Message>,
    backlog: Arc<Backlog>,
    close: watch::Sender<Option<CloseFrame>>,
}

/// The writer task's side: frames to write, what they count for, and the
/// close the edge asked for.
pub struct Writing {
    pub rx: mpsc::UnboundedReceiver<Message>,
    pub backlog: Arc<Backlog>,
    pub close: watch::Receiver<Option<CloseFrame>>,
}

/// Frames and bytes queued and not yet written.
#[derive(Default)]
pub struct Backlog {
    frames: AtomicUsize,
    bytes: AtomicUsize,
}

impl Backlog {
    /// `bytes` of one frame were handed to the socket.
    pub fn written(&self, bytes: usize) {
        self.frames.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The socket is over its budget; it is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

/// A bounded queue for a new socket.
pub fn queue() -> (Outbound, Writing) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let (close_tx, close_rx) = watch::channel(None);
    (
        Outbound {
            tx,
            backlog: backlog.clone(),
            close: close_tx,
        },
        Writing {
            rx,
            backlog,
            close: close_rx,
        },
    )
}

impl Outbound {
    /// Count `bytes` of one more frame against the budget (whether it is
    /// sent now or held back for a while: both hold memory). Over budget,
    /// the socket is asked to close and nothing is counted.
    pub fn reserve(&self, bytes: usize) -> Result<(), OverBudget> {
        let b = &self.backlog;
        let frames = b.frames.fetch_add(1, Ordering::Relaxed) + 1;
        let total = b.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if frames <= MAX_FRAMES && total <= MAX_BYTES {
            return Ok(());
        }
        b.written(bytes);
        let reason = format!("slow reader: over {MAX_FRAMES} frames or {MAX_BYTES} bytes unread");
        self.close.send_replace(Some(CloseFrame {
            code: SLOW_READER,
            reason: reason.into(),
        }));
        Err(OverBudget)
    }

    /// Hand a frame already counted by [`Outbound::reserve`] to the writer.
    pub fn send_reserved(&self, frame: String) {
        let _ = self.tx.send(Message::Text(frame.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_over_its_budget_is_asked_to_close_and_writing_makes_room() {
        let (out, mut writing) = queue();
        for _ in 0..MAX_FRAMES {
            out.reserve(10).unwrap();
            out.send_reserved("x".repeat(10));
        }
        assert!(writing.close.borrow().is_none());
        assert_eq!(out.reserve(10), Err(OverBudget));
        let asked = writing
            .close
            .borrow_and_update()
            .clone()
            .expect("close asked");
        assert_eq!(asked.code, SLOW_READER);
        // One frame written makes room for one more.
        writing.rx.try_recv().unwrap();
        writing.backlog.written(10);
        assert_eq!(out.reserve(10), Ok(()));

        let (out, _writing) = queue();
        out.reserve(MAX_BYTES - 1).unwrap();
        assert_eq!(out.reserve(2), Err(OverBudget), "bytes count too");
        assert_eq!(out.reserve(1), Ok(()), "a refused frame is not counted");
    }
}
