//! The sockets connected to this edge: one bounded outbound queue per
//! connection id (see [`crate::edge::outbound`]), and the rule that keeps
//! each socket's frames in order. Inherently local
//! to this process; everything about rooms and participants lives in the
//! store and is decided by the component.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use edge_signaling::error::FrameError;
use edge_signaling::{ErrorCode, Outcome};

use crate::edge::outbound::{Outbound, OverBudget};
use crate::host::Delivery;

/// Writers of the sockets connected to this edge.
#[derive(Default)]
pub struct Connections {
    writers: Mutex<HashMap<String, Writer>>,
    next: AtomicU64,
}

/// One socket's outbound queue, and what waits for the answer to the frame
/// it sent last.
struct Writer {
    out: Outbound,
    /// A frame of this socket's is being handled: frames for it that other
    /// calls produce meanwhile wait in `held` until its own answer is
    /// queued. Another call's frame can be ready first even though its
    /// commit came later: call records make both wait for one shared fsync,
    /// and the waiters wake in any order. Without this a caller could get
    /// `peer-joined` (or a peer's `signal`) before its own `joined`, and a
    /// client taking `joined` as the start of its room state would lose it.
    answering: bool,
    held: Vec<String>,
}

impl Writer {
    /// Queue `frame`, or hold it while the socket's own answer is pending;
    /// both count against the socket's budget.
    fn queue(&mut self, frame: String) -> Result<(), OverBudget> {
        self.out.reserve(frame.len())?;
        if self.answering {
            self.held.push(frame);
        } else {
            self.out.send_reserved(frame);
        }
        Ok(())
    }
}

impl Connections {
    /// A connection id unique across this edge's restarts: edge name, a
    /// per-boot nonce and a counter.
    pub fn next_id(&self, edge: &str, boot: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{edge}.{boot}.{n}")
    }

    pub fn insert(&self, id: &str, out: Outbound) {
        let w = Writer {
            out,
            answering: false,
            held: Vec::new(),
        };
        self.writers.lock().unwrap().insert(id.to_string(), w);
    }

    pub fn remove(&self, id: &str) {
        self.writers.lock().unwrap().remove(id);
    }

    pub fn len(&self) -> usize {
        self.writers.lock().unwrap().len()
    }

    /// `conn` sent a frame that is being handled: hold what others send it
    /// until [`Connections::answer`]. Frames of one socket are handled one
    /// at a time, so there is at most one answer outstanding per socket.
    pub fn begin_answer(&self, conn: &str) {
        if let Some(w) = self.writers.lock().unwrap().get_mut(conn) {
            w.answering = true;
        }
    }

    /// Queue the answer to `conn`'s frame (and what it causes for other
    /// sockets), then whatever was held for `conn` meanwhile.
    pub fn answer(&self, conn: &str, deliveries: Vec<Delivery>) {
        let mut writers = self.writers.lock().unwrap();
        let (own, others): (Vec<Delivery>, Vec<Delivery>) =
            deliveries.into_iter().partition(|d| d.conn == conn);
        if let Some(w) = writers.get_mut(conn) {
            w.answering = false;
            let mut over = Ok(());
            for d in own {
                over = over.and_then(|()| w.queue(d.frame));
            }
            for frame in std::mem::take(&mut w.held) {
                w.out.send_reserved(frame);
            }
            if over.is_err() {
                writers.remove(conn);
            }
        }
        Self::queue(&mut writers, others);
    }

    /// Queue each frame on its socket (or hold it, see [`Writer::answering`]).
    /// Frames for sockets that are gone are dropped; those for sockets on
    /// other edges were forwarded before they got here.
    pub fn deliver(&self, deliveries: Vec<Delivery>) {
        Self::queue(&mut self.writers.lock().unwrap(), deliveries);
    }

    fn queue(writers: &mut HashMap<String, Writer>, deliveries: Vec<Delivery>) {
        for d in deliveries {
            match writers.get_mut(&d.conn) {
                Some(w) => {
                    if w.queue(d.frame).is_err() {
                        // Its close is under way (see Outbound::reserve);
                        // nothing more is queued for it.
                        tracing::warn!(conn = %d.conn, "closing a socket that does not read");
                        writers.remove(&d.conn);
                    }
                }
                None => {
                    tracing::debug!(conn = %d.conn, "delivery to a connection not on this edge")
                }
            }
        }
    }
}

/// An error frame for `conn` produced by the host itself (the same frame
/// the core would produce).
pub fn local_error(conn: &str, code: ErrorCode, msg: String) -> Vec<Delivery> {
    Outcome::error(conn, &FrameError::new(code, msg))
        .deliveries
        .into_iter()
        .map(|d| Delivery {
            conn: d.conn,
            frame: d.frame,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::outbound::{self, Writing, MAX_FRAMES};

    fn to(conn: &str, frame: &str) -> Delivery {
        Delivery {
            conn: conn.into(),
            frame: frame.into(),
        }
    }

    fn drain(w: &mut Writing) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(m) = w.rx.try_recv() {
            let text = m.into_text().unwrap().to_string();
            w.backlog.written(text.len());
            got.push(text);
        }
        got
    }

    /// Bob's join committed after alice's, but its answer was ready first:
    /// alice still gets her own `joined` before `peer-joined`.
    #[test]
    fn frames_for_a_socket_wait_for_the_answer_to_its_own_frame() {
        let conns = Connections::default();
        let (alice_out, mut alice) = outbound::queue();
        let (bob_out, mut bob) = outbound::queue();
        conns.insert("alice", alice_out);
        conns.insert("bob", bob_out);

        conns.begin_answer("alice");
        conns.begin_answer("bob");
        conns.answer(
            "bob",
            vec![to("bob", "joined-bob"), to("alice", "peer-joined")],
        );
        assert_eq!(drain(&mut bob), ["joined-bob"]);
        assert_eq!(drain(&mut alice), Vec::<String>::new(), "held");
        conns.deliver(vec![to("alice", "signal")]);
        assert_eq!(drain(&mut alice), Vec::<String>::new(), "held");

        conns.answer("alice", vec![to("alice", "joined-alice")]);
        assert_eq!(drain(&mut alice), ["joined-alice", "peer-joined", "signal"]);
        // Nothing is held once the answer is out.
        conns.deliver(vec![to("alice", "pong")]);
        assert_eq!(drain(&mut alice), ["pong"]);
    }

    /// Frames held for a socket count against its budget like queued ones;
    /// past the budget the socket leaves the map (its close is under way)
    /// and later frames for it are dropped, not queued.
    #[test]
    fn a_socket_over_its_budget_is_dropped_from_the_map() {
        let conns = Connections::default();
        let (out, mut alice) = outbound::queue();
        conns.insert("alice", out);
        conns.begin_answer("alice");
        conns.deliver((0..MAX_FRAMES).map(|_| to("alice", "signal")).collect());
        assert_eq!(conns.len(), 1, "held, within the budget");
        conns.deliver(vec![to("alice", "one-too-many")]);
        assert_eq!(conns.len(), 0);
        let close = alice.close.borrow().clone().expect("asked to close");
        assert_eq!(close.code, outbound::SLOW_READER);
        conns.answer("alice", vec![to("alice", "joined")]);
        assert!(
            drain(&mut alice).is_empty(),
            "nothing queued after the close"
        );
    }
}
