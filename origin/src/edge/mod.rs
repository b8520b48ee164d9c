//! A running signaling edge: the process-wide state of an origin ([`App`])
//! and the calls into the component, in two lanes (frames, and
//! housekeeping: heartbeats, ticks, the prober) so a storm of one cannot
//! starve the other.
//!
//! * [`serve`]: starting an edge and the tasks beside its HTTP server.
//! * [`websocket`]: the `/v1/signal` endpoint and its sockets.
//! * [`routes`]: every HTTP route.
//! * [`bus`]: deliveries between edges (Redis pub/sub).
//! * [`relay_link`]: relays' heartbeat connections, a crash signal.
//! * [`calls`]: call record queries and retention.
//! * [`assets`]: the demo page and the SDK.

pub mod assets;
pub mod bus;
pub mod calls;
pub mod connections;
pub mod directory_cache;
pub mod outbound;
pub mod probes;
pub mod relay_link;
pub mod routes;
pub mod serve;
pub mod socket_limits;
pub mod websocket;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::edge::connections::Connections;
use crate::host::{Answered, Delivery, HeartbeatError, SignalingHost};
use crate::store::{Durability, Kv};

pub struct App {
    pub host: Arc<SignalingHost>,
    pub kv: Kv,
    pub conns: Connections,
    /// This edge's name; the first part of every connection id it makes.
    pub edge: String,
    /// Random per process start; keeps connection ids unique across restarts.
    pub boot: String,
    pub signaling: edge_signaling::Config,
    /// `GET /v1/dev/token` is served only under `tern up`.
    pub dev_tokens: bool,
    /// Bounds component calls in flight on the blocking pool (remote
    /// stores), below the instance pool's size, so a burst of frames waits
    /// its turn instead of failing to instantiate.
    pub in_flight: tokio::sync::Semaphore,
    /// The same for housekeeping (heartbeats, ticks, the prober's reads
    /// and writes), apart from frames: when an edge takes over a dead
    /// edge's sessions, a thousand resuming `join`s queue for `in_flight`,
    /// and a relay's heartbeat waiting behind them made every relay look
    /// silent to this edge (which then rerouted every call).
    pub housekeeping: tokio::sync::Semaphore,
    /// The housekeeping tick's own lane: one tick at a time, and never
    /// behind heartbeats or directory reads, so calls leave a lost relay
    /// however busy the other lanes are.
    pub ticking: tokio::sync::Semaphore,
    /// The public relay directory, read at most every 100 ms.
    pub directory: directory_cache::DirectoryCache,
    /// Run the housekeeping tick now instead of at its next interval: the
    /// prober just found a relay gone, and its calls should not wait.
    pub tick_now: tokio::sync::Notify,
    /// Relays whose heartbeat connection just closed, for the prober to
    /// check at once (see [`crate::edge::relay_link`]).
    pub suspects: crate::probe::Suspects,
    /// Bearer token of `GET /v1/calls`; `None`: the calls API is off.
    pub calls_token: Option<String>,
    /// What one socket, or one client address, may ask of this edge.
    pub limits: socket_limits::SocketLimits,
    /// Sockets open per client address, against [`App::limits`].
    pub sockets_per_ip: Arc<socket_limits::SocketsPerIp>,
}

/// Component calls allowed in flight at once (see [`App::in_flight`]).
pub const MAX_IN_FLIGHT: usize = 128;
/// Housekeeping calls allowed in flight at once (see [`App::housekeeping`]):
/// with [`MAX_IN_FLIGHT`], below the instance pool's size.
pub const MAX_HOUSEKEEPING: usize = 16;
/// Ticks in flight at once (see [`App::ticking`]).
pub const MAX_TICKS: usize = 1;
/// Component calls of every lane in flight at once: what the store's
/// connection pool must hold.
pub const CALLS_IN_FLIGHT: usize = MAX_IN_FLIGHT + MAX_HOUSEKEEPING + MAX_TICKS;

// Every call in flight and every idle instance holds an instance of the
// component's pool at once.
const _: () =
    assert!(CALLS_IN_FLIGHT + crate::host::MAX_IDLE <= crate::host::MAX_INSTANCES as usize);

/// Which queue a call into the store waits in (see [`App::housekeeping`]).
#[derive(Clone, Copy)]
enum Lane {
    Frames,
    Housekeeping,
    Tick,
}

/// How long after a store failure ticks wait (four heartbeat intervals).
const STORE_RECOVERY_MS: u64 = 1_000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Deliveries handed from one edge to another over Redis pub/sub.
#[derive(Serialize, Deserialize)]
pub struct Forwarded {
    pub deliveries: Vec<(String, String)>,
}

/// The edge a connection id belongs to (`<edge>.<boot>.<n>`).
pub fn edge_of(conn: &str) -> &str {
    conn.split('.').next().unwrap_or("")
}

impl App {
    /// Run the component for one frame and deliver what it returns.
    ///
    /// On the embedded store a call is short and never blocks on the
    /// network (single-digit to tens of µs: `tern bench signaling`), so it
    /// runs on the async worker itself. On Redis every KV call is a network
    /// round trip, so the call moves to the blocking pool.
    pub async fn handle_frame(self: &Arc<Self>, conn: &str, frame: String) {
        let mut entropy = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut entropy);
        self.conns.begin_answer(conn);
        let answering = Answering {
            app: self,
            conn: Some(conn),
        };
        let conn = conn.to_string();
        self.deliver_from(Lane::Frames, Some(answering), move |app| {
            app.host
                .handle_frame(now_ms(), &conn, &frame, &entropy)
                .unwrap_or_else(|e| {
                    // A trap or host failure: the frame had no effect.
                    tracing::error!(conn = %conn, error = %e, "signaling component failed");
                    Answered {
                        value: internal_error(&conn),
                        durability: Durability::Now,
                    }
                })
        })
        .await;
    }

    pub async fn handle_disconnect(self: &Arc<Self>, conn: &str) {
        let conn = conn.to_string();
        self.deliver_from(Lane::Frames, None, move |app| {
            app.host
                .handle_disconnect(now_ms(), &conn)
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "signaling component failed on disconnect");
                    Answered {
                        value: Vec::new(),
                        durability: Durability::Now,
                    }
                })
        })
        .await;
    }

    /// The relay directory as this edge judges it, read where the store
    /// wants to be read.
    pub async fn relay_view(
        self: &Arc<Self>,
    ) -> Result<Vec<edge_signaling::directory::RelayView>, edge_signaling::KvError> {
        self.run(Lane::Housekeeping, |app| {
            edge_signaling::Signaling::new(&app.signaling)
                .relays(now_ms(), &app.kv.reader("default"))
        })
        .await
    }

    /// Write one key natively (for records the edge itself owns).
    pub async fn put(
        self: &Arc<Self>,
        bucket: &'static str,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), crate::store::StoreError> {
        self.run(Lane::Housekeeping, move |app| {
            app.kv.set(bucket, &key, &value)
        })
        .await
    }

    /// One housekeeping tick: reroute calls off lost or draining relays.
    ///
    /// Skipped for a while after the store failed: heartbeats could not be
    /// recorded during the outage, so every relay looks silent until its
    /// next heartbeat lands, and moving calls on that evidence would be a
    /// reroute storm caused by the store, not the relays.
    pub async fn handle_tick(self: &Arc<Self>) {
        if self.kv.failed_within(now_ms(), STORE_RECOVERY_MS) {
            return;
        }
        let started = std::time::Instant::now();
        self.deliver_from(Lane::Tick, None, move |app| {
            let out = app.host.handle_tick(now_ms()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "signaling tick failed");
                Answered {
                    value: Vec::new(),
                    durability: Durability::Now,
                }
            });
            if !out.value.is_empty() {
                tracing::info!(
                    frames = out.value.len(),
                    decided_in_ms = started.elapsed().as_millis() as u64,
                    "rerouting calls off an unhealthy relay"
                );
            }
            out
        })
        .await;
    }

    pub async fn handle_heartbeat(
        self: &Arc<Self>,
        body: Vec<u8>,
        signature: String,
    ) -> anyhow::Result<Result<(), HeartbeatError>> {
        self.run(Lane::Housekeeping, move |app| {
            app.host.handle_heartbeat(now_ms(), &body, &signature)
        })
        .await
    }

    /// Run a component call that produces deliveries, hand those for other
    /// edges' connections to them and write the rest to this edge's sockets
    /// (as the answer to `answering`'s frame, when the call handles one).
    async fn deliver_from(
        self: &Arc<Self>,
        lane: Lane,
        answering: Option<Answering<'_>>,
        f: impl FnOnce(&App) -> Answered<Vec<Delivery>> + Send + 'static,
    ) {
        let (mut out, durability) = self
            .run(lane, move |app| {
                let Answered {
                    mut value,
                    durability,
                } = f(app);
                if !durability.must_wait() {
                    app.forward_remote(&mut value);
                }
                (value, durability)
            })
            .await;
        if durability.must_wait() {
            // Call records in this commit: nothing is acknowledged before
            // they are durable. On the embedded store one fsync covers this
            // commit and every other frame waiting meanwhile (group
            // commit); on Redis a replica's WAIT does. Awaiting holds no
            // thread, so other frames go on and join the same sync.
            if let Err(e) = durability.reached().await {
                // The writes are committed but maybe not durable: say so
                // and answer anyway (the store's own flush retries).
                tracing::error!(error = %e, "making call records durable failed");
            }
            // Publishing is a store round trip: skip the hop to a blocking
            // thread when every delivery is local (a resuming `join`).
            if out.iter().any(|d| edge_of(&d.conn) != self.edge) {
                out = self
                    .run(lane, move |app| {
                        app.forward_remote(&mut out);
                        out
                    })
                    .await;
            }
        }
        match answering {
            Some(a) => a.answer(out),
            None => self.conns.deliver(out),
        }
    }

    /// Run work that touches the store where it belongs: inline on the
    /// embedded store, on the blocking pool (bounded by the lane's
    /// semaphore) when every store call is a network round trip.
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        lane: Lane,
        f: impl FnOnce(&App) -> R + Send + 'static,
    ) -> R {
        if !self.kv.is_remote() {
            return f(self);
        }
        let permits = match lane {
            Lane::Frames => &self.in_flight,
            Lane::Housekeeping => &self.housekeeping,
            Lane::Tick => &self.ticking,
        };
        let permit = permits.acquire().await.expect("never closed");
        let app = self.clone();
        let r = match tokio::task::spawn_blocking(move || f(&app)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down and drops every task,
            // this one too, at its next await; there is no answer to give.
            Err(_) => std::future::pending().await,
        };
        drop(permit);
        r
    }

    /// Publish deliveries whose connection lives on another edge to that
    /// edge's channel, leaving only the local ones in `out`.
    fn forward_remote(&self, out: &mut Vec<Delivery>) {
        let Some(redis) = self.kv.bus() else { return };
        let mut remote: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        out.retain(|d| {
            let edge = edge_of(&d.conn);
            if edge == self.edge {
                return true;
            }
            remote
                .entry(edge.to_string())
                .or_default()
                .push((d.conn.clone(), d.frame.clone()));
            false
        });
        for (edge, deliveries) in remote {
            let payload = serde_json::to_string(&Forwarded { deliveries }).expect("serializes");
            if let Err(e) = redis.publish(&redis.edge_channel(&edge), &payload) {
                tracing::warn!(%edge, error = %e, "forwarding deliveries to another edge failed");
            }
        }
    }
}

/// A socket's frame being handled (see [`Connections::begin_answer`]). If
/// the call never answers (it panicked, or its task was dropped), dropping
/// this releases what was held for the socket.
struct Answering<'a> {
    app: &'a App,
    conn: Option<&'a str>,
}

impl Answering<'_> {
    fn answer(mut self, out: Vec<Delivery>) {
        if let Some(conn) = self.conn.take() {
            self.app.conns.answer(conn, out);
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.app.conns.answer(conn, Vec::new());
        }
    }
}

fn internal_error(conn: &str) -> Vec<Delivery> {
    crate::edge::connections::local_error(
        conn,
        edge_signaling::ErrorCode::Unavailable,
        "signaling failed to handle this frame; it had no effect".into(),
    )
}
