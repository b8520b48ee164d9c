//! One simulated caller: a signaling socket, a TURN allocation on the room's
//! relay and one on the hot standby, and the audio it sends and receives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use tern_loadgen::client::Op;
use tern_loadgen::client::{decode_channel_data, encode_channel_data};
use tern_loadgen::{ClientError, Session, SessionEvent, TurnClient};
use tokio::net::UdpSocket;

use crate::signaling::{Event, JoinArgs, Link};

/// First channel number; each new peer address gets the next one, since a
/// channel stays tied to its peer for its lifetime (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;
/// 20 ms frames: 50 packets a second, like Opus.
pub const FRAME: Duration = Duration::from_millis(20);
/// Audio payload size, like a 64 kbit/s Opus frame.
pub const PAYLOAD: usize = 160;

/// Inbound silence after which sending moves to a ready standby leg: the
/// SDK's stall threshold (it reports a relay after 300 ms without audio).
pub const STALL_AFTER: Duration = Duration::from_millis(300);
/// After a reroute the next standby is allocated this long later, plus up
/// to [`STANDBY_SPREAD`]: it is needed only at the next failure, and every
/// caller of the lost relay gets the same standby, so allocating at once
/// would land hundreds of Allocates on it (and, in a drill, on this
/// machine's CPU) exactly while audio is being restored.
const STANDBY_DELAY: Duration = Duration::from_millis(250);
const STANDBY_SPREAD: Duration = Duration::from_millis(1000);

/// How a participant should behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pre-allocate on the hot standby from `joined`/`reroute`. Off: one
    /// allocation at a time, re-allocated on every `reroute`.
    pub standby: bool,
    /// Inbound silence that moves sending to a ready standby leg.
    pub stall_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            standby: true,
            stall_after: STALL_AFTER,
        }
    }
}

/// How a participant moved its audio to another relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// `reroute` named the relay of the prepared standby leg, already
    /// bound to the peer: it became the primary leg with no new Allocate.
    Prepared,
    /// `reroute` to a relay with no ready leg: a new allocation there, as
    /// the SDK's ICE restart.
    Fresh,
    /// Inbound audio stalled while the standby leg was ready, or the
    /// peer's audio started arriving on the standby leg (the peer moved on
    /// its own): sending moved to it without waiting for a `reroute`.
    Stall,
}

/// What one participant saw.
#[derive(Debug, Clone, Default)]
pub struct MediaLog {
    /// Arrival time of every audio packet received from the peer.
    pub arrivals: Vec<Instant>,
    /// Lowest and highest sequence number received: with one packet per
    /// number (audio goes out on one leg at a time), the numbers between
    /// them that never arrived were lost on the way.
    pub seq_range: Option<(u64, u64)>,
    pub sent: u64,
    /// `(relay id, when)` of every reroute followed.
    pub reroutes: Vec<(String, Instant)>,
    /// Every move of the outgoing audio to another leg, and when.
    pub switches: Vec<(Switch, Instant)>,
    pub relay: String,
    /// How long each loss of the signaling connection lasted until the
    /// session was resumed on another edge.
    pub signaling_gaps: Vec<Duration>,
}

impl MediaLog {
    /// Record a ChannelData payload from the peer if it is audio.
    fn heard(&mut self, now: Instant, payload: &[u8]) -> bool {
        let Some(seq) = payload.get(..8) else {
            return false;
        };
        let seq = u64::from_be_bytes(seq.try_into().expect("8 bytes"));
        self.arrivals.push(now);
        self.seq_range = Some(match self.seq_range {
            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
            None => (seq, seq),
        });
        true
    }

    /// Packets from the peer that never arrived, between the first and the
    /// last that did (so packets still in flight when the call ended, or
    /// sent before this side could receive, do not count).
    pub fn lost(&self) -> u64 {
        self.seq_range.map_or(0, |(lo, hi)| {
            (hi - lo + 1).saturating_sub(self.arrivals.len() as u64)
        })
    }
}

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

/// A relay and the TURN credentials signaling handed out for it.
#[derive(Debug, Clone)]
struct Creds {
    relay: String,
    ice: Value,
}

impl Creds {
    /// `relay` and `iceServers` of a `joined`/`reroute` frame, or of its
    /// `standby` object.
    fn of(v: &Value) -> Option<Creds> {
        let relay = v["relay"]["id"].as_str()?;
        v["iceServers"].as_array().filter(|a| !a.is_empty())?;
        Some(Creds {
            relay: relay.to_string(),
            ice: v["iceServers"].clone(),
        })
    }
}

/// A TURN allocation in progress or in use.
struct Leg {
    /// What it was made from (to start over from a new port).
    creds: Creds,
    client: TurnClient,
    server: SocketAddr,
    socket: UdpSocket,
    relayed: Option<SocketAddr>,
    bound_to: Option<SocketAddr>,
    channel: u16,
    ready: bool,
}

impl Leg {
    async fn new(creds: &Creds, seed: u64) -> anyhow::Result<Leg> {
        let ice = &creds.ice;
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
            creds: creds.clone(),
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

/// Which of a participant's legs: each is bound to the peer's leg of the
/// same role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// On the room's relay (signaling's `relay`); announced as `relayed`.
    Primary,
    /// On the hot standby; announced as `standby`.
    Standby,
}

/// A participant's media side: its legs, what it knows of its peer's, and
/// the log.
struct Media {
    opts: Options,
    seed: u64,
    /// Allocations made so far, so each gets its own transaction ids.
    allocations: u64,
    me: String,
    peer: Option<String>,
    primary: Option<Leg>,
    standby: Option<Leg>,
    /// The standby relay a stall switch moved sending to: audio goes out on
    /// the standby leg while that leg is on it. Once per standby relay, as
    /// in the SDK: if the standby does not bring audio back either, the
    /// call waits for signaling. Cleared by `reroute`, and by audio on the
    /// primary leg (then the primary's relay is alive after all).
    stalled_to: Option<String>,
    /// The standby relay we followed the peer onto (once per relay, so two
    /// sides can never chase each other between legs).
    followed: Option<String>,
    /// The peer's legs' relayed addresses, as it last announced them.
    peer_relayed: Option<SocketAddr>,
    peer_standby: Option<SocketAddr>,
    /// The standby a reroute handed out, and when to allocate on it.
    pending_standby: Option<(Instant, Creds)>,
    /// The primary leg a reroute replaced, still read until the deadline:
    /// the peer moves when its own `reroute` arrives, which can be a little
    /// later, and a draining relay still delivers what it sends meanwhile
    /// (make-before-break; closing the leg at once would drop that audio).
    retiring: Option<(Leg, Instant)>,
    log: MediaLog,
}

/// How long a replaced leg is still read after a reroute.
const RETIRE_AFTER: Duration = Duration::from_secs(2);

impl Media {
    fn new(opts: Options, seed: u64) -> Media {
        Media {
            opts,
            seed,
            allocations: 0,
            me: String::new(),
            peer: None,
            primary: None,
            standby: None,
            stalled_to: None,
            followed: None,
            peer_relayed: None,
            peer_standby: None,
            pending_standby: None,
            retiring: None,
            log: MediaLog::default(),
        }
    }

    async fn new_leg(&mut self, creds: &Creds) -> anyhow::Result<Leg> {
        self.allocations += 1;
        Leg::new(creds, self.seed.wrapping_add(self.allocations)).await
    }

    fn leg_mut(&mut self, role: Role) -> Option<&mut Leg> {
        match role {
            Role::Primary => self.primary.as_mut(),
            Role::Standby => self.standby.as_mut(),
        }
    }

    /// The peer address a leg of `role` is bound to.
    fn peer_addr(&self, role: Role) -> Option<SocketAddr> {
        match role {
            Role::Primary => self.peer_relayed,
            Role::Standby => self.peer_standby,
        }
    }

    /// Whether audio goes out on the standby leg (after a stall switch).
    fn on_standby(&self) -> bool {
        self.standby
            .as_ref()
            .is_some_and(|l| self.stalled_to.as_ref() == Some(&l.creds.relay))
    }

    /// The leg audio goes out on, if it can send now.
    fn sending(&self) -> Option<&Leg> {
        let leg = if self.on_standby() {
            self.standby.as_ref()
        } else {
            self.primary.as_ref()
        };
        leg.filter(|l| l.ready)
    }

    /// Bind the leg of `role` to the peer's leg of that role, once both
    /// have relayed addresses.
    async fn bind(&mut self, role: Role) -> anyhow::Result<()> {
        let peer = self.peer_addr(role);
        if let (Some(l), Some(p)) = (self.leg_mut(role), peer) {
            if l.relayed.is_some() {
                l.bind(p);
                l.flush().await?;
            }
        }
        Ok(())
    }

    /// `joined`: allocate on the room's relay (a resume on the same relay
    /// keeps the allocation) and prepare the standby.
    async fn on_joined(&mut self, f: &Value) -> anyhow::Result<()> {
        let primary = Creds::of(f).ok_or_else(|| anyhow!("joined without a relay: {f}"))?;
        let keep =
            f["resumed"] == true && primary.relay == self.log.relay && self.primary.is_some();
        if !keep {
            self.log.relay = primary.relay.clone();
            self.primary = Some(self.new_leg(&primary).await?);
        }
        let standby = Creds::of(&f["standby"]);
        self.prepare_standby(standby).await
    }

    /// Allocate on `standby` unless a leg is there already; none: drop ours
    /// (signaling knows no healthy relay in another region).
    async fn prepare_standby(&mut self, standby: Option<Creds>) -> anyhow::Result<()> {
        if !self.opts.standby {
            return Ok(());
        }
        match standby {
            Some(s)
                if self
                    .standby
                    .as_ref()
                    .is_some_and(|l| l.creds.relay == s.relay) => {}
            Some(s) => self.standby = Some(self.new_leg(&s).await?),
            None => self.standby = None,
        }
        Ok(())
    }

    /// `reroute`: make the prepared standby the primary if it is on the new
    /// relay and bound; otherwise allocate there, as the SDK's ICE restart
    /// does. Either way a new standby is prepared later. Returns whether the
    /// primary's address changed at once (to be announced).
    async fn on_reroute(&mut self, f: &Value) -> anyhow::Result<bool> {
        let now = Instant::now();
        let to = Creds::of(f).ok_or_else(|| anyhow!("reroute without a relay: {f}"))?;
        self.log.reroutes.push((to.relay.clone(), now));
        self.log.relay = to.relay.clone();
        self.stalled_to = None;
        self.followed = None;
        let prepared = self
            .standby
            .as_ref()
            .is_some_and(|l| l.creds.relay == to.relay && l.ready);
        self.retiring = self.primary.take().map(|l| (l, now + RETIRE_AFTER));
        if prepared {
            // Bound to the peer's standby, which the peer (moved by the same
            // reroute) makes its primary in turn.
            self.primary = self.standby.take();
            self.peer_relayed = self.primary.as_ref().and_then(|l| l.bound_to);
            self.peer_standby = None;
            self.log.switches.push((Switch::Prepared, now));
        } else {
            self.primary = Some(self.new_leg(&to).await?);
            // A standby leg left from before is bound to the peer's old
            // standby, which the peer now drops or makes its primary: not a
            // leg to fall back on. The next one comes from this reroute.
            self.standby = None;
            self.peer_standby = None;
            self.log.switches.push((Switch::Fresh, now));
        }
        let spread = rand::thread_rng().gen_range(Duration::ZERO..STANDBY_SPREAD);
        self.pending_standby = Creds::of(&f["standby"])
            .filter(|_| self.opts.standby)
            .map(|s| (now + STANDBY_DELAY + spread, s));
        Ok(prepared)
    }

    /// The peer's addresses: `relayed` (its primary leg) and, from a peer
    /// that prepared one, `standby`. Each of our legs binds to the peer's
    /// leg of the same role.
    async fn on_signal(&mut self, data: &Value) -> anyhow::Result<()> {
        let addr = |k: &str| data[k].as_str().and_then(|a| a.parse().ok());
        if let Some(relayed) = addr("relayed") {
            self.peer_relayed = Some(relayed);
            self.peer_standby = addr("standby");
            self.bind(Role::Primary).await?;
            self.bind(Role::Standby).await?;
        }
        Ok(())
    }

    /// A datagram on the leg of `role`: audio (whichever leg the peer sends
    /// on is heard) or an answer from the relay. Returns whether an address
    /// changed (to be announced).
    async fn on_datagram(&mut self, role: Role, datagram: &[u8]) -> anyhow::Result<bool> {
        let now = Instant::now();
        if let Some((_, payload)) = decode_channel_data(datagram) {
            if self.log.heard(now, payload) {
                // Audio through the primary after a stall switch: its relay
                // is alive and the silence was elsewhere (a starved
                // process, say), so sending goes back to it; left on the
                // standby, a call would lose its audio if that relay died
                // later, with no reroute to move it.
                match role {
                    Role::Primary => self.stalled_to = None,
                    Role::Standby => self.follow_peer(now),
                }
            }
            return Ok(false);
        }
        let peer = self.peer_addr(role);
        let Some(l) = self.leg_mut(role) else {
            return Ok(false);
        };
        l.client.handle_control(now, datagram);
        let mut announce = false;
        while let Some(ev) = l.client.poll_event() {
            match ev {
                SessionEvent::Allocated { relayed } => {
                    l.relayed = Some(relayed);
                    if let Some(p) = peer {
                        l.bind(p);
                    }
                    announce = true;
                }
                SessionEvent::ChannelBound { channel, .. } => {
                    if l.channel == channel {
                        l.ready = true;
                    }
                }
                SessionEvent::PermissionCreated { .. } => {}
                // 437: the relay already has an allocation for this
                // 5-tuple; our local port was used before (a NAT, or here
                // the delay shim, keeps the old mapping). RFC 8656 §7.2:
                // allocate from another port, as the loadgen and browsers
                // do.
                SessionEvent::Failed(ClientError::Rejected {
                    op: Op::Allocate,
                    code: 437,
                }) => {
                    let creds = l.creds.clone();
                    let leg = self.new_leg(&creds).await?;
                    *self.leg_mut(role).expect("the leg is there") = leg;
                    return Ok(false);
                }
                SessionEvent::Failed(e) => return self.on_leg_failed(role, e).map(|_| false),
            }
        }
        l.flush().await?;
        Ok(announce)
    }

    /// A TURN operation failed for good on the leg of `role`.
    fn on_leg_failed(&mut self, role: Role, e: ClientError) -> anyhow::Result<()> {
        match role {
            // The call goes on without a standby, as one does when no other
            // region is healthy.
            Role::Standby => {
                self.standby = None;
                Ok(())
            }
            // The primary failing while audio goes out on the standby is
            // the failure the standby is for; the next reroute replaces it.
            Role::Primary if self.on_standby() => Ok(()),
            Role::Primary => bail!("{}: TURN: {e}", self.me),
        }
    }

    /// The control tick: TURN retransmissions and refreshes on every leg,
    /// the stall switch, and a standby that is due.
    async fn on_tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if self
            .retiring
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            self.retiring = None;
        }
        for l in [self.primary.as_mut(), self.standby.as_mut()]
            .into_iter()
            .flatten()
        {
            l.client.handle_timeout(now);
            l.flush().await?;
        }
        if let Some(relay) = self.stall_switch(now) {
            self.stalled_to = Some(relay);
            self.log.switches.push((Switch::Stall, now));
        }
        if self
            .pending_standby
            .as_ref()
            .is_some_and(|(at, _)| *at <= now)
        {
            let (_, s) = self.pending_standby.take().expect("checked");
            self.prepare_standby(Some(s)).await?;
        }
        Ok(())
    }

    /// The standby relay to move sending to now, if inbound audio (after it
    /// had flowed) has been silent for longer than the stall threshold and
    /// the standby leg is ready and not already used for it. Each side
    /// restores the direction it sends: a peer that moved first is heard at
    /// once on our standby leg (so we see no stall), and our audio reaches
    /// it once we move too, by our own `reroute` or stall, since it also
    /// receives on every leg.
    /// The peer's audio arrives on our standby leg while we still send on
    /// the primary: the peer switched on its own (its inbound audio
    /// stalled), so the primary path is likely dead our way too, and since
    /// we now hear the peer we would never see a stall of our own. Follow it
    /// (without this, a call whose signaling is down stays one-way).
    fn follow_peer(&mut self, now: Instant) {
        let Some(relay) = self.standby.as_ref().filter(|l| l.ready) else {
            return;
        };
        let relay = relay.creds.relay.clone();
        if self.stalled_to.is_some() || self.followed.as_ref() == Some(&relay) {
            return;
        }
        self.followed = Some(relay.clone());
        self.stalled_to = Some(relay);
        self.log.switches.push((Switch::Stall, now));
    }

    fn stall_switch(&self, now: Instant) -> Option<String> {
        let standby = self.standby.as_ref().filter(|l| l.ready)?;
        if self.stalled_to.as_ref() == Some(&standby.creds.relay) {
            return None;
        }
        let last = *self.log.arrivals.last()?;
        (now.saturating_duration_since(last) > self.opts.stall_after)
            .then(|| standby.creds.relay.clone())
    }

    /// Send one audio frame on the sending leg, if one is ready.
    async fn send_frame(&mut self, out: &mut [u8]) -> anyhow::Result<()> {
        if let Some(l) = self.sending() {
            let seq = self.log.sent + 1;
            let mut payload = [0u8; PAYLOAD];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            let n = encode_channel_data(l.channel, &payload, out);
            l.socket.send_to(&out[..n], l.server).await?;
            self.log.sent = seq;
        }
        Ok(())
    }

    /// Tell the peer our legs' relayed addresses, once the primary has one.
    fn announce(&self, link: &Link) {
        let (Some(p), Some(addr)) = (&self.peer, self.primary.as_ref().and_then(|l| l.relayed))
        else {
            return;
        };
        let mut data = json!({"relayed": addr.to_string()});
        if let Some(s) = self.standby.as_ref().and_then(|l| l.relayed) {
            data["standby"] = json!(s.to_string());
        }
        link.send(&json!({"type":"signal","to":p,"data":data}));
    }
}

/// Receive on `leg`'s socket; never completes without a leg.
async fn recv(leg: Option<&Leg>, buf: &mut [u8]) -> std::io::Result<usize> {
    match leg {
        Some(l) => l.socket.recv_from(buf).await.map(|(n, _)| n),
        None => std::future::pending().await,
    }
}

/// Run one participant until `until`, returning what it saw. `edges` are
/// the signaling URLs it may use, first one first; when its edge goes away
/// it resumes its session on the next, as the SDK does. Its signaling runs
/// on `signaling` (see [`crate::signaling`]).
pub async fn run(
    signaling: &tokio::runtime::Handle,
    edges: &[String],
    join: &JoinArgs,
    opts: &Options,
    until: Instant,
    seed: u64,
) -> anyhow::Result<MediaLog> {
    let mut link = Link::open(signaling, edges.to_vec(), join.clone(), until);
    let mut m = Media::new(opts.clone(), seed);
    let mut frame_tick = tokio::time::interval(FRAME);
    frame_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut control_tick = tokio::time::interval(Duration::from_millis(50));
    // One buffer per leg: both are read at once.
    let mut buf_primary = vec![0u8; 2048];
    let mut buf_standby = vec![0u8; 2048];
    let mut buf_retiring = vec![0u8; 2048];
    let mut out = vec![0u8; PAYLOAD + 4];
    // One timer for the whole call, not a fresh one per wakeup (each
    // participant wakes ~100 times a second).
    let end = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            ev = link.events.recv() => {
                let f = match ev {
                    Some(Ok(Event::Frame(f, _))) => f,
                    Some(Ok(Event::Resumed(gap))) => {
                        m.log.signaling_gaps.push(gap);
                        continue;
                    }
                    Some(Err(e)) => return Err(e),
                    None => bail!("{}: signaling link ended", m.me),
                };
                match f["type"].as_str().unwrap_or_default() {
                    "joined" => {
                        m.me = f["participant"].as_str().unwrap_or_default().to_string();
                        if f["resumed"] != true {
                            m.peer = f["peers"][0]["participant"].as_str().map(str::to_string);
                        }
                        m.on_joined(&f).await?;
                    }
                    "peer-joined" => {
                        m.peer = f["participant"].as_str().map(str::to_string);
                        m.announce(&link);
                    }
                    "signal" => m.on_signal(&f["data"]).await?,
                    // A fresh leg has a new relayed address to announce.
                    "reroute" if m.on_reroute(&f).await? => m.announce(&link),
                    "error" => bail!("{}: signaling error {f}", m.me),
                    _ => {}
                }
            }
            r = recv(m.primary.as_ref(), &mut buf_primary) => {
                if m.on_datagram(Role::Primary, &buf_primary[..r?]).await? {
                    m.announce(&link);
                }
            }
            r = recv(m.standby.as_ref(), &mut buf_standby) => {
                if m.on_datagram(Role::Standby, &buf_standby[..r?]).await? {
                    m.announce(&link);
                }
            }
            // Audio still coming the old way; nothing else matters there.
            r = recv(m.retiring.as_ref().map(|(l, _)| l), &mut buf_retiring) => {
                if let Some((_, payload)) = decode_channel_data(&buf_retiring[..r?]) {
                    m.log.heard(Instant::now(), payload);
                }
            }
            _ = frame_tick.tick() => m.send_frame(&mut out).await?,
            _ = control_tick.tick() => m.on_tick().await?,
        }
    }
    link.close().await;
    Ok(m.log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_frame_or_its_standby() {
        let ice =
            json!([{"urls":["turn:127.0.0.1:3478?transport=udp"],"username":"u","credential":"c"}]);
        let joined = json!({
            "type": "joined",
            "relay": {"id": "a-1", "region": "a"},
            "iceServers": ice,
            "standby": {"relay": {"id": "b-1", "region": "b"}, "iceServers": ice},
        });
        assert_eq!(Creds::of(&joined).unwrap().relay, "a-1");
        let standby = Creds::of(&joined["standby"]).unwrap();
        assert_eq!(standby.relay, "b-1");
        assert_eq!(
            turn_udp_addr(&standby.ice).unwrap(),
            "127.0.0.1:3478".parse().unwrap()
        );
        // No standby (no healthy relay in another region), or an empty one.
        assert!(Creds::of(&json!({"type": "reroute"})["standby"]).is_none());
        assert!(Creds::of(&json!({"relay": {"id": "b-1"}, "iceServers": []})).is_none());
    }
}
