//! A participant's signaling connection, driven on threads of its own.
//!
//! Why not in the participant's media loop: one simulator process plays
//! thousands of callers, and their audio keeps the runtime's workers busy
//! (100,000 packets a second each way at 1,000 calls). A real caller's
//! browser does not queue its WebSocket behind 1,999 other callers' audio,
//! but a shared runtime does: when an edge died, the 1,000 reconnections
//! (TCP, WebSocket handshake, `join`, `joined`) each waited several turns
//! behind every media task, and the drill measured the simulator's run
//! queue instead of how fast the surviving edge resumed the sessions (the
//! edge itself used 3 % of a core meanwhile). On its own threads, which
//! sleep until a frame arrives, signaling gets the CPU as soon as it
//! wakes, as it would on a caller's own device.
//!
//! The link also keeps polling of the WebSocket out of the media loop,
//! where every wakeup (~170 a second per caller) used to poll the socket
//! and zero tungstenite's read buffer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a participant needs to join: the room, its token, and the region
/// RTTs it measured (`probes` in `join`; empty: none sent).
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub room: String,
    pub token: String,
    pub probes: BTreeMap<String, f64>,
}

/// What the link reports to its participant.
#[derive(Debug)]
pub enum Event {
    /// A frame from the edge, and when it arrived.
    Frame(Value, Instant),
    /// The session was resumed on another edge (its `joined` follows as a
    /// [`Event::Frame`]) this long after the previous edge was lost.
    Resumed(Duration),
}

/// One participant's signaling: joins on the first edge that answers and,
/// when that edge goes away, resumes the session on the next one.
pub struct Link {
    out: Option<mpsc::UnboundedSender<String>>,
    pub events: mpsc::UnboundedReceiver<anyhow::Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub fn open(
        on: &tokio::runtime::Handle,
        edges: Vec<String>,
        join: JoinArgs,
        until: Instant,
    ) -> Link {
        let (out, out_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = on.spawn(drive(edges, join, until, out_rx, events_tx));
        Link {
            out: Some(out),
            events,
            task,
        }
    }

    /// Send a frame. While no edge is connected it is dropped, as the SDK
    /// drops what it cannot send: the peer learns the state again from the
    /// next announcement.
    pub fn send(&self, frame: &Value) {
        if let Some(out) = &self.out {
            let _ = out.send(frame.to_string());
        }
    }

    /// Send `leave` and wait (briefly) for the link to close.
    pub async fn close(mut self) {
        drop(self.out.take());
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

async fn drive(
    edges: Vec<String>,
    join: JoinArgs,
    until: Instant,
    mut out: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<anyhow::Result<Event>>,
) {
    let mut next_edge = 0;
    let mut session: Option<String> = None;
    let mut lost_at: Option<Instant> = None;
    loop {
        let (mut ws, edge) = match connect(&edges, next_edge, &join, session.clone(), until).await {
            Ok(c) => c,
            Err(e) => {
                let _ = events.send(Err(e));
                return;
            }
        };
        // What the participant said while no edge was connected is stale.
        while out.try_recv().is_ok() {}
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let at = Instant::now();
                        let f: Value = match serde_json::from_str(&t) {
                            Ok(f) => f,
                            Err(e) => {
                                let _ = events.send(Err(anyhow::anyhow!("bad frame {t}: {e}")));
                                return;
                            }
                        };
                        if f["type"] == "joined" {
                            session = f["session"].as_str().map(str::to_string);
                            if let Some(lost) = lost_at.take() {
                                let _ = events.send(Ok(Event::Resumed(at - lost)));
                            }
                        }
                        if events.send(Ok(Event::Frame(f, at))).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    // The edge is gone: resume on the next one.
                    _ => break,
                },
                frame = out.recv() => match frame {
                    Some(f) => {
                        if ws.send(Message::Text(f.into())).await.is_err() {
                            break;
                        }
                    }
                    // The participant is done.
                    None => {
                        let _ = ws.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
                        let _ = ws.close(None).await;
                        return;
                    }
                },
            }
        }
        lost_at.get_or_insert_with(Instant::now);
        next_edge = edge + 1;
    }
}

/// Connect to the first edge in `edges` (from `start`) that answers and
/// send `join` (with `session` to resume). Returns the socket and the index
/// of the edge used.
async fn connect(
    edges: &[String],
    start: usize,
    args: &JoinArgs,
    session: Option<String>,
    until: Instant,
) -> anyhow::Result<(Ws, usize)> {
    let mut i = start;
    loop {
        let url = &edges[i % edges.len()];
        // tungstenite zero-fills its whole read buffer (128 KiB by default)
        // before every read attempt: keep it small.
        let config = WebSocketConfig::default().read_buffer_size(4096);
        if let Ok((mut ws, _)) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
        {
            let mut join = json!({"type":"join","room":args.room,"token":args.token});
            if let Some(s) = &session {
                join["session"] = json!(s);
            }
            if !args.probes.is_empty() {
                join["probes"] = json!(args.probes);
            }
            ws.send(Message::Text(join.to_string().into())).await?;
            return Ok((ws, i % edges.len()));
        }
        if Instant::now() >= until {
            bail!("no edge answers");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
