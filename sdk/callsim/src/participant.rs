//! One simulated caller: a signaling socket, a TURN allocation at a time,
//! and the audio it sends and receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tern_loadgen::client::Op;
use tern_loadgen::client::{decode_channel_data, encode_channel_data};
use tern_loadgen::{ClientError, Session, SessionEvent, TurnClient};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// First channel number; each new peer address gets the next one, since a
/// channel stays tied to its peer for its lifetime (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;
/// 20 ms frames: 50 packets a second, like Opus.
pub const FRAME: Duration = Duration::from_millis(20);
/// Audio payload size, like a 64 kbit/s Opus frame.
pub const PAYLOAD: usize = 160;

/// What one participant saw.
#[derive(Debug, Clone, Default)]
pub struct MediaLog {
    /// Arrival time of every audio packet received from the peer.
    pub arrivals: Vec<Instant>,
    pub sent: u64,
    /// `(relay id, when)` of every reroute followed.
    pub reroutes: Vec<(String, Instant)>,
    pub relay: String,
    /// How long each loss of the signaling connection lasted until the
    /// session was resumed on another edge.
    pub signaling_gaps: Vec<Duration>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The relay address from an `iceServers` entry's UDP TURN URL.
fn turn_udp_addr(ice: &Value) -> anyhow::Result<SocketAddr> {
    let urls = ice[0]["urls"]
        .as_array()
        .ok_or_else(|| anyhow!("no urls"))?;
    for u in urls {
        let u = u.as_str().unwrap_or_default();
        if let Some(rest) = u.strip_prefix("turn:") {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.is_empty() || query.contains("transport=udp") {
                return addr.parse().context("TURN address");
            }
        }
    }
    bail!("no UDP TURN url in {ice}")
}

/// A TURN allocation in progress or in use.
struct Leg {
    /// The `iceServers` it was made from (to start over from a new port).
    ice: Value,
    client: TurnClient,
    server: SocketAddr,
    socket: UdpSocket,
    relayed: Option<SocketAddr>,
    bound_to: Option<SocketAddr>,
    channel: u16,
    ready: bool,
}

impl Leg {
    async fn new(ice: &Value, seed: u64) -> anyhow::Result<Leg> {
        let server = turn_udp_addr(ice)?;
        let username = ice[0]["username"].as_str().unwrap_or_default().to_string();
        let credential = ice[0]["credential"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let socket = UdpSocket::bind(if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })
        .await?;
        let mut client = TurnClient::new(username, credential, seed);
        client.allocate(Instant::now());
        let mut leg = Leg {
            ice: ice.clone(),
            client,
            server,
            socket,
            relayed: None,
            bound_to: None,
            channel: FIRST_CHANNEL - 1,
            ready: false,
        };
        leg.flush().await?;
        Ok(leg)
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        while let Some(t) = self.client.poll_transmit() {
            self.socket.send_to(&t, self.server).await?;
        }
        Ok(())
    }

    fn bind(&mut self, peer: SocketAddr) {
        if self.bound_to != Some(peer) {
            self.bound_to = Some(peer);
            self.ready = false;
            self.channel += 1;
            self.client.bind(Instant::now(), peer, self.channel);
        }
    }
}

/// What a participant needs to join: the room, its token, and the region
/// RTTs it measured (`probes` in `join`; empty: none sent).
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub room: String,
    pub token: String,
    pub probes: BTreeMap<String, f64>,
}

/// Connect to the first edge in `edges` (from `start`) that answers and
/// send `join` (with `session` to resume). Returns the socket and the index
/// of the edge used.
async fn connect(
    edges: Vec<String>,
    start: usize,
    args: JoinArgs,
    session: Option<String>,
    until: Instant,
) -> anyhow::Result<(Ws, usize)> {
    let mut i = start;
    loop {
        let url = &edges[i % edges.len()];
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async_with_config(url, None, true).await
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

/// Run one participant until `until`, returning what it saw. `edges` are
/// the signaling URLs it may use, first one first; when its edge goes away
/// it resumes its session on the next, as the SDK does.
pub async fn run(
    edges: &[String],
    join: &JoinArgs,
    until: Instant,
    seed: u64,
) -> anyhow::Result<MediaLog> {
    let (first, mut edge) = connect(edges.to_vec(), 0, join.clone(), None, until).await?;
    let mut ws: Option<Ws> = Some(first);
    // A reconnection runs beside the media loop, so audio never waits for
    // signaling (as in a browser, where media is not on the WebSocket).
    let mut reconnecting: Option<tokio::task::JoinHandle<anyhow::Result<(Ws, usize)>>> = None;
    let mut session: Option<String> = None;
    let mut lost_at: Option<Instant> = None;
    let mut log = MediaLog::default();
    let mut me = String::new();
    let mut peer: Option<String> = None;
    let mut peer_relayed: Option<SocketAddr> = None;
    let mut leg: Option<Leg> = None;
    let mut seq: u64 = 0;
    let mut frame_tick = tokio::time::interval(FRAME);
    frame_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut control_tick = tokio::time::interval(Duration::from_millis(50));
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; PAYLOAD + 4];
    let deadline = tokio::time::Instant::from_std(until);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            r = async { match reconnecting.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                reconnecting = None;
                let (w, e) = r??;
                ws = Some(w);
                edge = e;
            }
            msg = async { match ws.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    // The edge is gone: resume the session on the next one
                    // while media goes on.
                    _ => {
                        ws = None;
                        lost_at.get_or_insert_with(Instant::now);
                        reconnecting = Some(tokio::spawn(connect(
                            edges.to_vec(),
                            edge + 1,
                            join.clone(),
                            session.clone(),
                            until,
                        )));
                        continue;
                    }
                };
                let Message::Text(t) = msg else { continue };
                let f: Value = serde_json::from_str(&t)?;
                match f["type"].as_str().unwrap_or_default() {
                    "joined" => {
                        me = f["participant"].as_str().unwrap_or_default().to_string();
                        session = f["session"].as_str().map(str::to_string);
                        let relay = f["relay"]["id"].as_str().unwrap_or_default().to_string();
                        if let Some(at) = lost_at.take() {
                            log.signaling_gaps.push(at.elapsed());
                        }
                        // A resume on the same relay keeps the allocation;
                        // anything else (first join, or the relay changed
                        // while we were away) allocates anew.
                        let keep = f["resumed"] == true && relay == log.relay && leg.is_some();
                        if f["resumed"] != true {
                            peer = f["peers"][0]["participant"].as_str().map(str::to_string);
                        }
                        if !keep {
                            log.relay = relay;
                            leg = Some(Leg::new(&f["iceServers"], seed.wrapping_add(7)).await?);
                        }
                    }
                    "peer-joined" => {
                        peer = f["participant"].as_str().map(str::to_string);
                        announce(ws.as_mut(), &peer, &leg).await?;
                    }
                    "signal" => {
                        if let Some(addr) = f["data"]["relayed"].as_str().and_then(|a| a.parse().ok()) {
                            peer_relayed = Some(addr);
                            if let Some(l) = leg.as_mut().filter(|l| l.relayed.is_some()) {
                                l.bind(addr);
                                l.flush().await?;
                            }
                        }
                    }
                    "reroute" => {
                        // Like the SDK's ICE restart: a new allocation on
                        // the new relay, announced to the peer.
                        let relay = f["relay"]["id"].as_str().unwrap_or_default().to_string();
                        log.reroutes.push((relay.clone(), Instant::now()));
                        log.relay = relay;
                        leg = Some(Leg::new(&f["iceServers"], seed.wrapping_add(log.reroutes.len() as u64)).await?);
                    }
                    "error" => bail!("{me}: signaling error {f}"),
                    _ => {}
                }
            }
            r = async { match &leg { Some(l) => l.socket.recv_from(&mut buf).await, None => std::future::pending().await } } => {
                let (n, _) = r?;
                let l = leg.as_mut().expect("a leg is being read");
                if let Some((_, payload)) = decode_channel_data(&buf[..n]) {
                    if payload.len() >= 8 {
                        log.arrivals.push(Instant::now());
                    }
                    continue;
                }
                l.client.handle_control(Instant::now(), &buf[..n]);
                let events: Vec<SessionEvent> = std::iter::from_fn(|| l.client.poll_event()).collect();
                for ev in events {
                    match ev {
                        SessionEvent::Allocated { relayed } => {
                            if let Some(l) = leg.as_mut() {
                                l.relayed = Some(relayed);
                                if let Some(p) = peer_relayed {
                                    l.bind(p);
                                }
                            }
                            announce(ws.as_mut(), &peer, &leg).await?;
                        }
                        SessionEvent::ChannelBound { channel, .. } => {
                            if let Some(l) = leg.as_mut().filter(|l| l.channel == channel) {
                                l.ready = true;
                            }
                        }
                        SessionEvent::PermissionCreated { .. } => {}
                        // 437: the relay already has an allocation for
                        // this 5-tuple; our local port was used before (a
                        // NAT, or here the delay shim, keeps the old
                        // mapping). RFC 8656 §7.2: allocate from another
                        // port, as the loadgen and browsers do.
                        SessionEvent::Failed(ClientError::Rejected { op: Op::Allocate, code: 437 }) => {
                            let ice = leg.as_ref().map(|l| l.ice.clone()).unwrap_or_default();
                            leg = Some(Leg::new(&ice, seed.wrapping_add(437)).await?);
                            break;
                        }
                        SessionEvent::Failed(e) => bail!("{me}: TURN: {e}"),
                    }
                }
                if let Some(l) = leg.as_mut() { l.flush().await?; }
            }
            _ = frame_tick.tick() => {
                if let Some(l) = leg.as_ref().filter(|l| l.ready) {
                    seq += 1;
                    let mut payload = [0u8; PAYLOAD];
                    payload[..8].copy_from_slice(&seq.to_be_bytes());
                    let n = encode_channel_data(l.channel, &payload, &mut out);
                    l.socket.send_to(&out[..n], l.server).await?;
                    log.sent += 1;
                }
            }
            _ = control_tick.tick() => {
                if let Some(l) = leg.as_mut() {
                    l.client.handle_timeout(Instant::now());
                    l.flush().await?;
                }
            }
        }
    }
    if let Some(h) = reconnecting {
        h.abort();
    }
    if let Some(mut ws) = ws {
        let _ = ws.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
    }
    Ok(log)
}

/// Tell the peer our current relayed address, if we have both.
async fn announce(
    ws: Option<&mut Ws>,
    peer: &Option<String>,
    leg: &Option<Leg>,
) -> anyhow::Result<()> {
    if let (Some(ws), Some(p), Some(addr)) = (ws, peer, leg.as_ref().and_then(|l| l.relayed)) {
        ws.send(Message::Text(
            json!({"type":"signal","to":p,"data":{"relayed":addr.to_string()}})
                .to_string()
                .into(),
        ))
        .await?;
    }
    Ok(())
}
