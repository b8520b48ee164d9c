//! The WebSocket gateway: terminates browser sockets at `/v1/signal`, feeds
//! each text frame to the signaling component and delivers what it returns
//! to the right sockets.
//!
//! The gateway holds only the map from connection id to socket writer, which
//! is inherently local to this process; everything about rooms and
//! participants lives in the KV and is decided by the component.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use edge_signaling::error::FrameError;
use edge_signaling::{ErrorCode, Outcome};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::app::App;
use crate::component::Delivery;

/// Frames up to this size reach the component; larger ones (up to the
/// WebSocket limit) get a `frame_too_large` error and the socket stays open.
pub const MAX_FRAME_BYTES: usize = edge_signaling::Config::DEFAULT_MAX_FRAME_BYTES;
/// Messages above this close the socket (protects memory before parsing).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Read buffer per WebSocket. tungstenite zero-fills the free part of its
/// read buffer (up to this size) before every read attempt, including the
/// ones that find nothing; at its 128 KiB default that memset costs more
/// than handling a signaling frame. Frames are small; a larger one grows
/// the buffer as it arrives.
pub const READ_BUFFER_BYTES: usize = 4096;

/// Writers of the sockets connected to this edge.
#[derive(Default)]
pub struct Connections {
    writers: Mutex<HashMap<String, Writer>>,
    next: AtomicU64,
}

/// One socket's outbound queue, and what waits for the answer to the frame
/// it sent last.
struct Writer {
    tx: mpsc::UnboundedSender<Message>,
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
    fn send(&self, frame: String) {
        let _ = self.tx.send(Message::Text(frame.into()));
    }
}

impl Connections {
    /// A connection id unique across this edge's restarts: edge name, a
    /// per-boot nonce and a counter.
    pub fn next_id(&self, edge: &str, boot: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{edge}.{boot}.{n}")
    }

    fn insert(&self, id: &str, tx: mpsc::UnboundedSender<Message>) {
        let w = Writer {
            tx,
            answering: false,
            held: Vec::new(),
        };
        self.writers.lock().unwrap().insert(id.to_string(), w);
    }

    fn remove(&self, id: &str) {
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
            for d in own {
                w.send(d.frame);
            }
            for frame in std::mem::take(&mut w.held) {
                w.send(frame);
            }
            w.answering = false;
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
                Some(w) if w.answering => w.held.push(d.frame),
                Some(w) => w.send(d.frame),
                None => {
                    tracing::debug!(conn = %d.conn, "delivery to a connection not on this edge")
                }
            }
        }
    }
}

pub async fn upgrade(State(app): State<Arc<App>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(app, socket))
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

async fn serve(app: Arc<App>, socket: WebSocket) {
    let id = app.conns.next_id(&app.edge, &app.boot);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    app.conns.insert(&id, tx);
    tracing::debug!(conn = %id, "connected");

    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    // Frames from one socket are handled strictly in order.
    while let Some(msg) = stream.next().await {
        let out = match msg {
            Ok(Message::Text(text)) if text.len() > MAX_FRAME_BYTES => local_error(
                &id,
                ErrorCode::FrameTooLarge,
                format!(
                    "frame is {} bytes; the limit is {MAX_FRAME_BYTES}",
                    text.len()
                ),
            ),
            Ok(Message::Text(text)) => {
                app.handle_frame(&id, text.to_string()).await;
                continue;
            }
            Ok(Message::Binary(_)) => local_error(
                &id,
                ErrorCode::BadRequest,
                "binary frames are not part of protocol v1; send JSON text".into(),
            ),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue, // ping/pong are answered by the WebSocket layer
            Err(e) => {
                tracing::debug!(conn = %id, error = %e, "socket error");
                break;
            }
        };
        app.conns.deliver(out);
    }

    app.conns.remove(&id);
    app.handle_disconnect(&id).await;
    writer.abort();
    tracing::debug!(conn = %id, "disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(conn: &str, frame: &str) -> Delivery {
        Delivery {
            conn: conn.into(),
            frame: frame.into(),
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Message>) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(m.into_text().unwrap().to_string());
        }
        got
    }

    /// Bob's join committed after alice's, but its answer was ready first:
    /// alice still gets her own `joined` before `peer-joined`.
    #[test]
    fn frames_for_a_socket_wait_for_the_answer_to_its_own_frame() {
        let conns = Connections::default();
        let (alice_tx, mut alice) = mpsc::unbounded_channel();
        let (bob_tx, mut bob) = mpsc::unbounded_channel();
        conns.insert("alice", alice_tx);
        conns.insert("bob", bob_tx);

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
}
