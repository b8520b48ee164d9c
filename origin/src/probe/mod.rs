//! Active probes of relays from this edge. Heartbeats say a relay's process
//! is alive; a probe says its TURN listener answers. Every
//! [`PROBE_INTERVAL`] the edge sends each relay's UDP listener a STUN Binding
//! request (20 bytes; the answer is 32); after [`MISSES`] unanswered probes
//! in a row it records `relay-probe/<edge>/<relay>` as failing, which the
//! directory treats as lost (calls move on the next tick). One answer clears
//! it. A relay whose heartbeat task lives on while its media socket is
//! stuck is caught here, and a dead relay is caught sooner than by
//! heartbeats alone. Answers also time the round trip: a relay answering far
//! slower than its usual ([`crate::rtt_trend`]) is recorded as slow, which
//! the directory treats as degrading (its calls move make-before-break).
//!
//! A relay process that died on a host that is still up is known sooner: its
//! host answers the probe with ICMP port unreachable ([`tern_netio::refusal`]).
//! One refusal sends a confirming probe at once; a second refusal with no
//! answer between marks the relay failing, about one probe interval after
//! the crash instead of [`SILENCE`]. (One stray or forged ICMP is not
//! enough; a host that is gone, or a network cut, sends nothing and is
//! caught by silence as before.)
//!
//! Sooner still, and without ICMP (which a loaded host rate-limits): when a
//! relay's heartbeat connection to this edge closes ([`crate::relay_link`])
//! the relay becomes a *suspect*: it is probed at once, and marked failing
//! if its host refuses that probe or no answer comes within a few of its
//! usual round trips ([`suspicion`]). A live relay (one that only moved its
//! heartbeats to another edge) answers and is left alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use edge_signaling::model::ProbeRecord;
use rand::RngCore;
use std::os::fd::AsRawFd;
use tern_netio::refusal;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::app::{now_ms, App};
use crate::rtt_trend::RttTrend;

pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// No answer for this long, with at least [`MISSES`] probes sent since the
/// last one: the relay is failing. Loopback and same-region RTTs are far
/// below this; a cross-region edge should raise it with the RTT.
const SILENCE: Duration = Duration::from_millis(300);
const MISSES: u32 = 3;
/// Transaction ids remembered per relay (late answers still count).
const PENDING: usize = 8;
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Relays whose heartbeat connection closed, queued for the prober.
pub struct Suspects {
    tx: mpsc::UnboundedSender<(String, u64)>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<(String, u64)>>>,
}

impl Suspects {
    pub fn new() -> Suspects {
        let (tx, rx) = mpsc::unbounded_channel();
        Suspects {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Have the prober check `relay` now; `last_heartbeat_ms`: when the
    /// closed connection carried its last heartbeat (unix ms).
    pub fn report(&self, relay: String, last_heartbeat_ms: u64) {
        let _ = self.tx.send((relay, last_heartbeat_ms));
    }

    fn take(&self) -> Option<mpsc::UnboundedReceiver<(String, u64)>> {
        self.rx.lock().expect("not poisoned").take()
    }
}

/// How long a suspect has to answer: a few of its usual round trips (the
/// relay answers a Binding request at once), at least 30 ms for scheduling
/// noise, at most [`SILENCE`].
fn suspicion(p: &Probe) -> Duration {
    let usual = p.rtt.baseline_ms().unwrap_or(0.0);
    Duration::from_secs_f64((3.0 * usual + 20.0) / 1e3).clamp(Duration::from_millis(30), SILENCE)
}

struct Probe {
    /// Where its probes go (to match ICMP refusals).
    addr: Option<SocketAddr>,
    /// Refusals since the last answer.
    refused: u32,
    /// Its heartbeat connection closed: unless it answers by then, it is
    /// failing.
    suspect_until: Option<Instant>,
    /// A suspect's last heartbeat on the closed connection (unix ms): one
    /// received after it, anywhere, means the relay lives.
    last_linked_heartbeat_ms: u64,
    /// The current failing verdict came from refusals.
    failing_refused: bool,
    /// The current failing verdict followed the heartbeat connection closing.
    failing_link_closed: bool,
    /// Transaction ids in flight and when each was sent.
    pending: std::collections::VecDeque<([u8; 12], Instant)>,
    last_answer: Instant,
    sent_since_answer: u32,
    failing_since_ms: Option<u64>,
    rtt: RttTrend,
    slow_since_ms: Option<u64>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            addr: None,
            refused: 0,
            suspect_until: None,
            last_linked_heartbeat_ms: 0,
            failing_refused: false,
            failing_link_closed: false,
            pending: Default::default(),
            // A new relay gets the benefit of the doubt for one SILENCE.
            last_answer: Instant::now(),
            sent_since_answer: 0,
            failing_since_ms: None,
            rtt: RttTrend::default(),
            slow_since_ms: None,
        }
    }
}

pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        if let Err(e) = run(app).await {
            tracing::error!(error = %e, "relay prober stopped");
        }
    });
}

/// A Binding request with FINGERPRINT (28 bytes, as ICE agents send it).
/// Relays answer an unauthenticated request with at most twice its size, and
/// a bare 20-byte request leaves too little room for an IPv6 answer.
fn binding_request(txid: &[u8; 12]) -> [u8; 28] {
    let mut m = [0u8; 28];
    m[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    m[2..4].copy_from_slice(&8u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(txid);
    m[20..22].copy_from_slice(&0x8028u16.to_be_bytes());
    m[22..24].copy_from_slice(&4u16.to_be_bytes());
    let crc = crc32fast::hash(&m[..20]) ^ 0x5354_554e;
    m[24..28].copy_from_slice(&crc.to_be_bytes());
    m
}

/// The transaction id of a Binding success response, if `b` is one.
fn binding_success(b: &[u8]) -> Option<[u8; 12]> {
    if b.len() < 20
        || u16::from_be_bytes([b[0], b[1]]) != 0x0101
        || u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    b[8..20].try_into().ok()
}

async fn run(app: Arc<App>) -> anyhow::Result<()> {
    let v4 = UdpSocket::bind("0.0.0.0:0").await?;
    let v6 = UdpSocket::bind("[::]:0").await.ok();
    for (s, ipv6) in [(Some(&v4), false), (v6.as_ref(), true)] {
        if let Some(s) = s {
            if let Err(e) = refusal::enable(s.as_raw_fd(), ipv6) {
                tracing::warn!(error = %e, "no ICMP refusals for probes; silence only");
            }
        }
    }
    let mut suspects = app.suspects.take().context("one prober per edge")?;
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut buf4, mut buf6) = ([0u8; 512], [0u8; 512]);
    loop {
        let next_verdict = probes.values().filter_map(|p| p.suspect_until).min();
        tokio::select! {
            Some((id, last_heartbeat_ms)) = suspects.recv() => {
                // A relay that heartbeated in since the last round has not
                // been probed yet: a round now learns its address.
                if !probes.contains_key(&id) {
                    probe_round(&app, &mut probes, (&v4, v6.as_ref())).await;
                }
                if let Some(p) = probes.get_mut(&id) {
                    suspect(&app, &id, p, last_heartbeat_ms, (&v4, v6.as_ref())).await;
                }
            }
            _ = async { match next_verdict { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {
                // Answers may be waiting behind a busy edge: they count.
                read_waiting_answers(&app, &mut probes, (&v4, v6.as_ref())).await;
                let now = Instant::now();
                for (id, p) in probes.iter_mut() {
                    if p.suspect_until.is_none_or(|t| t > now) {
                        continue;
                    }
                    p.suspect_until = None;
                    if heartbeat_since(&app, id, p.last_linked_heartbeat_ms).await {
                        // It moved its heartbeats to another edge: alive,
                        // and its probe answer is only late.
                        tracing::info!(relay = %id, "heartbeat connection closed but the relay heartbeats elsewhere");
                        continue;
                    }
                    tracing::warn!(relay = %id, "heartbeat connection closed and no answer to probes");
                    fail(&app, id, p, false, true).await;
                }
            }
            _ = tick.tick() => probe_round(&app, &mut probes, (&v4, v6.as_ref())).await,
            Ok((n, _)) = v4.recv_from(&mut buf4) => answered(&app, &mut probes, &buf4[..n]).await,
            Ok((n, _)) = async { match &v6 { Some(s) => s.recv_from(&mut buf6).await, None => std::future::pending().await } } => {
                answered(&app, &mut probes, &buf6[..n]).await
            }
            Ok(to) = refused(&v4) => on_refused(&app, &mut probes, (&v4, v6.as_ref()), to).await,
            Ok(to) = async { match &v6 { Some(s) => refused(s).await, None => std::future::pending().await } } => {
                on_refused(&app, &mut probes, (&v4, v6.as_ref()), to).await
            }
        }
    }
}

/// Probe every relay in the directory once; a relay silent for
/// [`SILENCE`] is failing.
async fn probe_round(
    app: &Arc<App>,
    probes: &mut HashMap<String, Probe>,
    (v4, v6): (&UdpSocket, Option<&UdpSocket>),
) {
    read_waiting_answers(app, probes, (v4, v6)).await;
    let relays = match app.relay_view().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "prober could not read the relay directory");
            return;
        }
    };
    probes.retain(|id, _| relays.iter().any(|r| &r.id == id));
    for r in &relays {
        let Some(addr) = r
            .listeners
            .iter()
            .find(|l| l.transport == "udp")
            .and_then(|l| l.address.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        let p = probes.entry(r.id.clone()).or_default();
        p.addr = Some(addr);
        if p.sent_since_answer >= MISSES && p.last_answer.elapsed() > SILENCE {
            // Silent while a suspect: the closed connection was evidence too.
            let linked = p.suspect_until.take().is_some();
            fail(app, &r.id, p, false, linked).await;
        }
        send_probe(v4, v6, p, addr).await;
    }
}

/// Read the answers already waiting before judging silence: a prober that
/// was starved (its edge busy with a burst of reconnecting clients) must
/// not take its own lateness for the relays' silence.
async fn read_waiting_answers(
    app: &Arc<App>,
    probes: &mut HashMap<String, Probe>,
    (v4, v6): (&UdpSocket, Option<&UdpSocket>),
) {
    let mut buf = [0u8; 512];
    for sock in [Some(v4), v6].into_iter().flatten() {
        while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
            answered(app, probes, &buf[..n]).await;
        }
    }
}

/// Whether a heartbeat of `relay` reached any edge after `since_ms` (unix
/// ms; the last one on its closed connection): a relay whose connection
/// here closed because it moved to another edge is alive, even if this edge is too busy to hear its probe answer
/// in time. (A false verdict here would be reported to every edge.)
async fn heartbeat_since(app: &Arc<App>, relay: &str, since_ms: u64) -> bool {
    match app.relay_view().await {
        Ok(view) => view
            .iter()
            .any(|r| r.id == relay && r.received_at_ms > since_ms),
        // The store is away: no evidence either way; the probe decides.
        Err(_) => false,
    }
}

/// Send one probe to `addr` and remember its transaction.
async fn send_probe(v4: &UdpSocket, v6: Option<&UdpSocket>, p: &mut Probe, addr: SocketAddr) {
    let mut txid = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut txid);
    let sock = if addr.is_ipv4() { Some(v4) } else { v6 };
    if let Some(sock) = sock {
        let req = binding_request(&txid);
        // With IP_RECVERR a refusal also leaves a pending error on the
        // socket, and the kernel fails the next send with it (whoever it
        // is to) instead of sending: that send must be made again, or one
        // dead relay would silence the probes of the next in line.
        if let Err(e) = sock.send_to(&req, addr).await {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                let _ = sock.send_to(&req, addr).await;
            }
        }
        if p.pending.len() == PENDING {
            p.pending.pop_front();
        }
        p.pending.push_back((txid, Instant::now()));
        p.sent_since_answer += 1;
    }
}

/// `p`'s heartbeat connection closed: probe it now (twice, so that one lost
/// datagram does not condemn a live relay) and give it until
/// [`suspicion`] to answer.
async fn suspect(
    app: &Arc<App>,
    relay: &str,
    p: &mut Probe,
    last_heartbeat_ms: u64,
    (v4, v6): (&UdpSocket, Option<&UdpSocket>),
) {
    let Some(addr) = p.addr else {
        return; // not probed yet: nothing to compare with
    };
    if p.failing_since_ms.is_some() {
        // Its probes already failed (refused, or silent), and now its
        // connection closed too: it crashed; tell the other edges.
        if !p.failing_link_closed {
            p.failing_link_closed = true;
            record(app, relay, p).await;
            report_crash(app, relay).await;
        }
        return;
    }
    if p.suspect_until.is_some() {
        return;
    }
    p.suspect_until = Some(Instant::now() + suspicion(p));
    p.last_linked_heartbeat_ms = last_heartbeat_ms;
    send_probe(v4, v6, p, addr).await;
    send_probe(v4, v6, p, addr).await;
}

/// Mark `relay` failing (once per episode) and record it; `refused`: its
/// host refused the probes, rather than silence; `link_closed`: its
/// heartbeat connection closed first.
async fn fail(app: &Arc<App>, relay: &str, p: &mut Probe, refused: bool, link_closed: bool) {
    if p.failing_since_ms.is_some() {
        return;
    }
    p.failing_since_ms = Some(now_ms());
    p.failing_refused = refused;
    p.failing_link_closed = link_closed;
    // Whatever it answers after this is a new life.
    p.rtt.reset();
    p.slow_since_ms = None;
    if refused {
        tracing::warn!(relay = %relay, "relay's host refuses its port: the relay is gone");
    } else {
        tracing::warn!(relay = %relay, "relay stopped answering probes");
    }
    record(app, relay, p).await;
    if link_closed {
        report_crash(app, relay).await;
    }
    app.tick_now.notify_one();
}

/// Other edges never had this relay's connection: tell them it crashed, so
/// that they move their calls as soon as this one does.
async fn report_crash(app: &Arc<App>, relay: &str) {
    let report = edge_signaling::model::CrashReport {
        at_ms: now_ms(),
        edge: app.edge.clone(),
    };
    let key = edge_signaling::keys::relay_crashed(relay);
    let value = serde_json::to_vec(&report).expect("serializes");
    if let Err(e) = app.put("default", key, value).await {
        tracing::warn!(error = %e, "recording a crash report failed");
    }
}

/// The next ICMP refusal queued on `sock`: the address a probe was refused at.
async fn refused(sock: &UdpSocket) -> std::io::Result<SocketAddr> {
    loop {
        let e = sock
            .async_io(Interest::ERROR, || refusal::recv(sock.as_raw_fd()))
            .await?;
        if let refusal::QueuedError::Refused(to) = e {
            return Ok(to);
        }
    }
}

/// A probe to `to` was refused: confirm with another at once; the second
/// refusal in a row marks the relay failing.
async fn on_refused(
    app: &Arc<App>,
    probes: &mut HashMap<String, Probe>,
    (v4, v6): (&UdpSocket, Option<&UdpSocket>),
    to: SocketAddr,
) {
    let Some((id, p)) = probes.iter_mut().find(|(_, p)| p.addr == Some(to)) else {
        return;
    };
    p.refused += 1;
    // A suspect's closed connection was the first piece of evidence.
    let suspect = p.suspect_until.take().is_some();
    if p.refused >= 2 || suspect {
        let id = id.clone();
        fail(app, &id, p, true, suspect).await;
    } else {
        send_probe(v4, v6, p, to).await;
    }
}

async fn answered(app: &Arc<App>, probes: &mut HashMap<String, Probe>, b: &[u8]) {
    let Some(txid) = binding_success(b) else {
        return;
    };
    let Some((id, p)) = probes
        .iter_mut()
        .find(|(_, p)| p.pending.iter().any(|(t, _)| *t == txid))
    else {
        return;
    };
    // This probe and older ones are settled; newer ones are still in flight
    // (a relay farther than one probe interval answers each in turn).
    let at = p
        .pending
        .iter()
        .position(|(t, _)| *t == txid)
        .expect("found above");
    let sent = p.pending[at].1;
    p.pending.drain(..=at);
    p.last_answer = Instant::now();
    p.sent_since_answer = 0;
    p.refused = 0;
    p.suspect_until = None;
    let mut changed = false;
    p.failing_refused = false;
    p.failing_link_closed = false;
    if p.failing_since_ms.take().is_some() {
        tracing::info!(relay = %id, "relay answers probes again");
        changed = true;
    }
    match p.rtt.sample(sent.elapsed().as_secs_f64() * 1e3) {
        Some(true) => {
            tracing::warn!(relay = %id, "relay answers probes far slower than usual");
            p.slow_since_ms = Some(now_ms());
            changed = true;
        }
        Some(false) => {
            tracing::info!(relay = %id, "relay answers probes at its usual speed again");
            p.slow_since_ms = None;
            changed = true;
        }
        None => {}
    }
    if changed {
        let id = id.clone();
        record(app, &id, p).await;
    }
}

/// Write this edge's verdict about `relay` (only when it changed: probes run
/// ten times a second per relay).
async fn record(app: &Arc<App>, relay: &str, p: &Probe) {
    let key = edge_signaling::keys::relay_probe(&app.edge, relay);
    let value = serde_json::to_vec(&ProbeRecord {
        failing_since_ms: p.failing_since_ms,
        slow_since_ms: p.slow_since_ms,
        refused: p.failing_refused,
        link_closed: p.failing_link_closed,
    })
    .expect("serializes");
    if let Err(e) = app.put("default", key, value).await {
        tracing::warn!(error = %e, "recording a probe verdict failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_request_and_success_framing() {
        let txid = [7u8; 12];
        let req = binding_request(&txid);
        assert_eq!(
            &req[0..4],
            &[0, 1, 0, 8],
            "Binding request, 8 bytes of attributes"
        );
        // The relay's own codec parses it and verifies the FINGERPRINT.
        assert!(edge_relay::stun::Message::parse(&req).is_ok());
        let mut bad = req;
        bad[27] ^= 1;
        assert!(
            edge_relay::stun::Message::parse(&bad).is_err(),
            "a wrong CRC is caught"
        );
        let mut resp = req;
        resp[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(binding_success(&resp), Some(txid));
        assert_eq!(binding_success(&req), None, "a request is not an answer");
        assert_eq!(binding_success(&resp[..19]), None);
    }
}
