//! The prober's IO: two UDP sockets (IPv4 and IPv6) with ICMP refusals
//! turned on, the probe clock, and the edge it reports to ([`ProbeHost`]).
//! Every decision is the [`Judge`]'s; this loop feeds it and carries out
//! what it says.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use edge_signaling::directory::RelayView;
use edge_signaling::kv::KvError;
use edge_signaling::model::ProbeRecord;
use tern_netio::refusal;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::judge::{Change, Judge, Output, PROBE_INTERVAL};

/// What the prober needs from the edge it runs in.
pub trait ProbeHost: Send + Sync + 'static {
    /// The relay directory as this edge judges it.
    fn relays(&self) -> impl std::future::Future<Output = Result<Vec<RelayView>, KvError>> + Send;
    /// Record this edge's verdict about `relay`.
    fn record(
        &self,
        relay: &str,
        record: &ProbeRecord,
    ) -> impl std::future::Future<Output = ()> + Send;
    /// Tell the other edges that `relay` crashed.
    fn report_crash(&self, relay: &str) -> impl std::future::Future<Output = ()> + Send;
    /// Run the housekeeping tick now (a relay was just found failing).
    fn tick_now(&self);
    /// Now, in unix ms.
    fn now_ms(&self) -> u64;
}

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

/// Probe the relays `host` lists, reporting to it, for as long as the
/// process runs (one prober per edge: it takes `suspects`' queue).
pub fn spawn<H: ProbeHost>(host: Arc<H>, suspects: &Suspects) {
    let Some(queue) = suspects.take() else {
        tracing::error!("a second prober for one edge was not started");
        return;
    };
    tokio::spawn(async move {
        if let Err(e) = run(host, queue).await {
            tracing::error!(error = %e, "relay prober stopped");
        }
    });
}

struct Sockets {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
}

async fn run<H: ProbeHost>(
    host: Arc<H>,
    mut suspects: mpsc::UnboundedReceiver<(String, u64)>,
) -> anyhow::Result<()> {
    let socks = Sockets {
        v4: UdpSocket::bind("0.0.0.0:0").await.context("probe socket")?,
        v6: UdpSocket::bind("[::]:0").await.ok(),
    };
    for (s, ipv6) in [(Some(&socks.v4), false), (socks.v6.as_ref(), true)] {
        if let Some(s) = s {
            if let Err(e) = refusal::enable(s.as_raw_fd(), ipv6) {
                tracing::warn!(error = %e, "no ICMP refusals for probes; silence only");
            }
        }
    }
    let mut judge = Judge::new(rand::random());
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut buf4, mut buf6) = ([0u8; 512], [0u8; 512]);
    loop {
        let deadline = judge.poll_timeout();
        tokio::select! {
            Some((id, last_heartbeat_ms)) = suspects.recv() => {
                // A relay that heartbeated in since the last round has not
                // been probed yet: a round now learns its address.
                if !judge.knows(&id) {
                    round(&*host, &mut judge, &socks).await;
                }
                judge.handle_link_closed(Instant::now(), &id, last_heartbeat_ms);
            }
            _ = async { match deadline { Some(t) => tokio::time::sleep_until(t.into()).await, None => std::future::pending().await } } => {
                // Answers may be waiting behind a busy edge: they count.
                read_waiting_answers(&*host, &mut judge, &socks);
                judge.handle_timeout(Instant::now());
            }
            _ = tick.tick() => round(&*host, &mut judge, &socks).await,
            Ok((n, _)) = socks.v4.recv_from(&mut buf4) => {
                judge.handle_answer(Instant::now(), host.now_ms(), &buf4[..n]);
            }
            Ok((n, _)) = async { match &socks.v6 { Some(s) => s.recv_from(&mut buf6).await, None => std::future::pending().await } } => {
                judge.handle_answer(Instant::now(), host.now_ms(), &buf6[..n]);
            }
            Ok(to) = refused(&socks.v4) => judge.handle_refusal(Instant::now(), host.now_ms(), to),
            Ok(to) = async { match &socks.v6 { Some(s) => refused(s).await, None => std::future::pending().await } } => {
                judge.handle_refusal(Instant::now(), host.now_ms(), to);
            }
        }
        carry_out(&*host, &mut judge, &socks).await;
    }
}

/// A probe round over the directory as it is now.
async fn round<H: ProbeHost>(host: &H, judge: &mut Judge, socks: &Sockets) {
    read_waiting_answers(host, judge, socks);
    let relays = match host.relays().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "prober could not read the relay directory");
            return;
        }
    };
    let listed: Vec<(String, SocketAddr)> = relays
        .iter()
        .filter_map(|r| {
            let udp = r.listeners.iter().find(|l| l.transport == "udp")?;
            Some((r.id.clone(), udp.address.parse().ok()?))
        })
        .collect();
    judge.handle_round(Instant::now(), host.now_ms(), &listed);
}

/// Read the answers already waiting before judging silence: a prober that
/// was starved (its edge busy with a burst of reconnecting clients) must
/// not take its own lateness for the relays' silence.
fn read_waiting_answers<H: ProbeHost>(host: &H, judge: &mut Judge, socks: &Sockets) {
    let mut buf = [0u8; 512];
    for sock in [Some(&socks.v4), socks.v6.as_ref()].into_iter().flatten() {
        while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
            judge.handle_answer(Instant::now(), host.now_ms(), &buf[..n]);
        }
    }
}

/// Do everything the judge asks, until it asks nothing more.
async fn carry_out<H: ProbeHost>(host: &H, judge: &mut Judge, socks: &Sockets) {
    while let Some(out) = judge.poll_output() {
        match out {
            Output::Transmit { to, bytes } => send(socks, to, &bytes).await,
            Output::Record {
                relay,
                record,
                change,
            } => {
                log(&relay, change);
                host.record(&relay, &record).await;
            }
            Output::Crashed { relay } => host.report_crash(&relay).await,
            Output::TickNow => host.tick_now(),
            Output::CheckHeartbeat { relay, since_ms } => {
                let seen = match host.relays().await {
                    Ok(view) => view
                        .iter()
                        .any(|r| r.id == relay && r.received_at_ms > since_ms),
                    // The store is away: no evidence either way; the probe
                    // decides.
                    Err(_) => false,
                };
                if seen {
                    tracing::info!(relay = %relay, "heartbeat connection closed but the relay heartbeats elsewhere");
                } else {
                    tracing::warn!(relay = %relay, "heartbeat connection closed and no answer to probes");
                }
                judge.heartbeat_seen(host.now_ms(), &relay, seen);
            }
        }
    }
}

fn log(relay: &str, change: Change) {
    match change {
        Change::Failing { refused: true, .. } => {
            tracing::warn!(relay = %relay, "relay's host refuses its port: the relay is gone")
        }
        Change::Failing { .. } => tracing::warn!(relay = %relay, "relay stopped answering probes"),
        Change::CrashConfirmed => {
            tracing::warn!(relay = %relay, "failing relay's heartbeat connection closed: it crashed")
        }
        Change::Answering => tracing::info!(relay = %relay, "relay answers probes again"),
        Change::Slow => {
            tracing::warn!(relay = %relay, "relay answers probes far slower than usual")
        }
        Change::UsualSpeed => {
            tracing::info!(relay = %relay, "relay answers probes at its usual speed again")
        }
    }
}

async fn send(socks: &Sockets, to: SocketAddr, bytes: &[u8]) {
    let sock = if to.is_ipv4() {
        Some(&socks.v4)
    } else {
        socks.v6.as_ref()
    };
    let Some(sock) = sock else { return };
    // With IP_RECVERR a refusal also leaves a pending error on the socket,
    // and the kernel fails the next send with it (whoever it is to) instead
    // of sending: that send must be made again, or one dead relay would
    // silence the probes of the next in line.
    if let Err(e) = sock.send_to(bytes, to).await {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            let _ = sock.send_to(bytes, to).await;
        }
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
