//! The probe judge: what this edge concludes about each relay from its
//! active probes, as a state machine that does no IO and reads no clock.
//!
//! Inputs come in through `handle_*` (a directory round, an answer, an ICMP
//! refusal, a closed heartbeat connection, a deadline) with the time; what
//! to do comes out of [`Judge::poll_output`]: datagrams to send, verdicts to
//! record, crashes to report, a tick to run now, a heartbeat to look up.
//! Drain outputs after every input. The UDP driver ([`super::driver`]) owns
//! the sockets and the store; tests drive the judge in simulated time.
//!
//! The rules (docs/failover.md, "Active probes"):
//! - every round sends each relay's UDP listener a STUN Binding request;
//!   after [`MISSES`] unanswered probes and [`SILENCE`] without an answer
//!   the relay is *failing*; one answer clears it;
//! - answers time the round trip: far slower than the relay's usual
//!   ([`RttTrend`]) is *slow* (degrading: its calls move make-before-break);
//! - an ICMP port unreachable is confirmed by a second probe at once; two
//!   refusals with no answer between mark it failing about one probe
//!   interval after a crash (one stray or forged ICMP is not enough);
//! - a relay whose heartbeat connection to this edge closed is a *suspect*:
//!   probed twice at once and failing unless it answers within a few of its
//!   usual round trips ([`suspicion`]), or unless it heartbeated elsewhere
//!   since (it only moved edges); a relay already failing whose connection
//!   closes crashed, and other edges are told.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edge_relay::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use edge_signaling::model::ProbeRecord;

use super::rtt_trend::RttTrend;

/// How often every relay is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// No answer for this long, with at least [`MISSES`] probes sent since the
/// last one: the relay is failing. Loopback and same-region RTTs are far
/// below this; a cross-region edge should raise it with the RTT.
pub const SILENCE: Duration = Duration::from_millis(300);
pub const MISSES: u32 = 3;
/// Transaction ids remembered per relay (late answers still count).
const PENDING: usize = 8;

/// What the judge wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `bytes` to `to`.
    Transmit { to: SocketAddr, bytes: Vec<u8> },
    /// This edge's verdict about `relay` changed: record it
    /// (`relay-probe/<edge>/<relay>`); `change` says how.
    Record {
        relay: String,
        record: ProbeRecord,
        change: Change,
    },
    /// `relay` crashed (its heartbeat connection closed and its probes
    /// fail): tell the edges that never had its connection.
    Crashed { relay: String },
    /// A relay was just found failing: move its calls now, not at the next
    /// tick.
    TickNow,
    /// A suspect did not answer in time: did any edge receive a heartbeat
    /// of `relay` after `since_ms`? Answer with [`Judge::heartbeat_seen`].
    CheckHeartbeat { relay: String, since_ms: u64 },
}

/// How a verdict changed (for the record and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Failing: `refused` by its host, or silent; `link_closed` if its
    /// heartbeat connection closed first.
    Failing { refused: bool, link_closed: bool },
    /// Already failing, and now its heartbeat connection closed too.
    CrashConfirmed,
    /// It answers again.
    Answering,
    /// It answers far slower than its usual.
    Slow,
    /// It answers at its usual speed again.
    UsualSpeed,
}

/// How long a suspect has to answer: a few of its usual round trips (the
/// relay answers a Binding request at once), at least 30 ms for scheduling
/// noise, at most [`SILENCE`].
fn suspicion(p: &Probe) -> Duration {
    let usual = p.rtt.baseline_ms().unwrap_or(0.0);
    Duration::from_secs_f64((3.0 * usual + 20.0) / 1e3).clamp(Duration::from_millis(30), SILENCE)
}

/// What the judge knows of one relay.
struct Probe {
    /// Where its probes go (to match ICMP refusals).
    addr: SocketAddr,
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
    pending: VecDeque<(TransactionId, Instant)>,
    last_answer: Instant,
    sent_since_answer: u32,
    failing_since_ms: Option<u64>,
    rtt: RttTrend,
    slow_since_ms: Option<u64>,
}

impl Probe {
    fn new(addr: SocketAddr, now: Instant) -> Probe {
        Probe {
            addr,
            refused: 0,
            suspect_until: None,
            last_linked_heartbeat_ms: 0,
            failing_refused: false,
            failing_link_closed: false,
            pending: VecDeque::new(),
            // A new relay gets the benefit of the doubt for one SILENCE.
            last_answer: now,
            sent_since_answer: 0,
            failing_since_ms: None,
            rtt: RttTrend::default(),
            slow_since_ms: None,
        }
    }

    fn record(&self) -> ProbeRecord {
        ProbeRecord {
            failing_since_ms: self.failing_since_ms,
            slow_since_ms: self.slow_since_ms,
            refused: self.failing_refused,
            link_closed: self.failing_link_closed,
        }
    }
}

/// This edge's probe verdicts about every relay in the directory.
pub struct Judge {
    probes: HashMap<String, Probe>,
    out: VecDeque<Output>,
    /// State of the generator of transaction ids (xorshift64*), seeded by
    /// the host: the judge draws no randomness of its own.
    rng: u64,
}

impl Judge {
    /// `seed`: random bits from the host (transaction ids are drawn from it).
    pub fn new(seed: u64) -> Judge {
        Judge {
            probes: HashMap::new(),
            out: VecDeque::new(),
            rng: seed | 1,
        }
    }

    /// Whether `relay` is being probed (a directory round has listed it).
    pub fn knows(&self, relay: &str) -> bool {
        self.probes.contains_key(relay)
    }

    /// A probe round: `relays` is the directory now (id, UDP listener).
    /// Relays no longer listed are forgotten; one silent for [`SILENCE`]
    /// is failing; every relay is probed once.
    pub fn handle_round(&mut self, now: Instant, now_ms: u64, relays: &[(String, SocketAddr)]) {
        self.probes
            .retain(|id, _| relays.iter().any(|(r, _)| r == id));
        for (id, addr) in relays {
            let p = self
                .probes
                .entry(id.clone())
                .or_insert_with(|| Probe::new(*addr, now));
            p.addr = *addr;
            if p.sent_since_answer >= MISSES
                && now.saturating_duration_since(p.last_answer) > SILENCE
            {
                // Silent while a suspect: the closed connection was
                // evidence too.
                let linked = p.suspect_until.take().is_some();
                Self::fail(&mut self.out, now_ms, id, p, false, linked);
            }
            let p = self.probes.get_mut(id).expect("just inserted");
            Self::send_probe(&mut self.out, &mut self.rng, now, p);
        }
    }

    /// A datagram on the probe socket: an answer to a probe, or nothing.
    pub fn handle_answer(&mut self, now: Instant, now_ms: u64, datagram: &[u8]) {
        let Some(txid) = binding_success(datagram) else {
            return;
        };
        let Some((id, p)) = self
            .probes
            .iter_mut()
            .find(|(_, p)| p.pending.iter().any(|(t, _)| *t == txid))
        else {
            return;
        };
        // This probe and older ones are settled; newer ones are still in
        // flight (a relay farther than one probe interval answers each in
        // turn).
        let at = p
            .pending
            .iter()
            .position(|(t, _)| *t == txid)
            .expect("found above");
        let sent = p.pending[at].1;
        p.pending.drain(..=at);
        p.last_answer = now;
        p.sent_since_answer = 0;
        p.refused = 0;
        p.suspect_until = None;
        p.failing_refused = false;
        p.failing_link_closed = false;
        let mut change = None;
        if p.failing_since_ms.take().is_some() {
            change = Some(Change::Answering);
        }
        match p
            .rtt
            .sample(now.saturating_duration_since(sent).as_secs_f64() * 1e3)
        {
            Some(true) => {
                p.slow_since_ms = Some(now_ms);
                change = Some(Change::Slow);
            }
            Some(false) => {
                p.slow_since_ms = None;
                change = Some(Change::UsualSpeed);
            }
            None => {}
        }
        if let Some(change) = change {
            self.out.push_back(Output::Record {
                relay: id.clone(),
                record: p.record(),
                change,
            });
        }
    }

    /// The host at `to` refused a probe (ICMP port unreachable): confirm
    /// with another at once; the second refusal in a row marks the relay
    /// failing.
    pub fn handle_refusal(&mut self, now: Instant, now_ms: u64, to: SocketAddr) {
        let Some((id, p)) = self.probes.iter_mut().find(|(_, p)| p.addr == to) else {
            return;
        };
        p.refused += 1;
        // A suspect's closed connection was the first piece of evidence.
        let suspect = p.suspect_until.take().is_some();
        if p.refused >= 2 || suspect {
            let id = id.clone();
            Self::fail(&mut self.out, now_ms, &id, p, true, suspect);
        } else {
            Self::send_probe(&mut self.out, &mut self.rng, now, p);
        }
    }

    /// `relay`'s heartbeat connection to this edge closed; it carried its
    /// last heartbeat at `last_heartbeat_ms`. False if the relay is not
    /// probed yet (run a round first, then call again).
    pub fn handle_link_closed(
        &mut self,
        now: Instant,
        relay: &str,
        last_heartbeat_ms: u64,
    ) -> bool {
        let Some(p) = self.probes.get_mut(relay) else {
            return false;
        };
        if p.failing_since_ms.is_some() {
            // Its probes already failed (refused, or silent), and now its
            // connection closed too: it crashed; tell the other edges.
            if !p.failing_link_closed {
                p.failing_link_closed = true;
                self.out.push_back(Output::Record {
                    relay: relay.to_string(),
                    record: p.record(),
                    change: Change::CrashConfirmed,
                });
                self.out.push_back(Output::Crashed {
                    relay: relay.to_string(),
                });
            }
            return true;
        }
        if p.suspect_until.is_some() {
            return true;
        }
        p.suspect_until = Some(now + suspicion(p));
        p.last_linked_heartbeat_ms = last_heartbeat_ms;
        // Twice, so that one lost datagram does not condemn a live relay.
        Self::send_probe(&mut self.out, &mut self.rng, now, p);
        Self::send_probe(&mut self.out, &mut self.rng, now, p);
        true
    }

    /// When [`Judge::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes.values().filter_map(|p| p.suspect_until).min()
    }

    /// Suspects whose time is up without an answer: ask whether they
    /// heartbeated elsewhere meanwhile ([`Output::CheckHeartbeat`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        for (id, p) in self.probes.iter_mut() {
            if p.suspect_until.is_none_or(|t| t > now) {
                continue;
            }
            p.suspect_until = None;
            self.out.push_back(Output::CheckHeartbeat {
                relay: id.clone(),
                since_ms: p.last_linked_heartbeat_ms,
            });
        }
    }

    /// The answer to [`Output::CheckHeartbeat`]: `seen` if any edge got a
    /// heartbeat of `relay` after the closed connection's last one (it only
    /// moved its heartbeats, and its probe answer is merely late); if not,
    /// it is failing.
    pub fn heartbeat_seen(&mut self, now_ms: u64, relay: &str, seen: bool) {
        if seen {
            return;
        }
        if let Some(p) = self.probes.get_mut(relay) {
            Self::fail(&mut self.out, now_ms, relay, p, false, true);
        }
    }

    /// The next thing to do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Mark `relay` failing (once per episode); `refused`: its host refused
    /// the probes, rather than silence; `link_closed`: its heartbeat
    /// connection closed first.
    fn fail(
        out: &mut VecDeque<Output>,
        now_ms: u64,
        relay: &str,
        p: &mut Probe,
        refused: bool,
        link_closed: bool,
    ) {
        if p.failing_since_ms.is_some() {
            return;
        }
        p.failing_since_ms = Some(now_ms);
        p.failing_refused = refused;
        p.failing_link_closed = link_closed;
        // Whatever it answers after this is a new life.
        p.rtt.reset();
        p.slow_since_ms = None;
        out.push_back(Output::Record {
            relay: relay.to_string(),
            record: p.record(),
            change: Change::Failing {
                refused,
                link_closed,
            },
        });
        if link_closed {
            out.push_back(Output::Crashed {
                relay: relay.to_string(),
            });
        }
        out.push_back(Output::TickNow);
    }

    /// Probe `p` once and remember the transaction.
    fn send_probe(out: &mut VecDeque<Output>, rng: &mut u64, now: Instant, p: &mut Probe) {
        let mut txid = [0u8; 12];
        for chunk in txid.chunks_mut(4) {
            chunk.copy_from_slice(&next_random(rng).to_be_bytes()[..4]);
        }
        out.push_back(Output::Transmit {
            to: p.addr,
            bytes: binding_request(txid),
        });
        if p.pending.len() == PENDING {
            p.pending.pop_front();
        }
        p.pending.push_back((txid, now));
        p.sent_since_answer += 1;
    }
}

/// xorshift64*: cheap, and only has to make transaction ids distinct.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A Binding request with FINGERPRINT (28 bytes, as ICE agents send it),
/// written with the relay's own STUN builder. Relays answer an
/// unauthenticated request with at most twice its size, and a bare 20-byte
/// request leaves too little room for an IPv6 answer.
fn binding_request(txid: TransactionId) -> Vec<u8> {
    MessageBuilder::new(Method::BINDING, Class::Request, txid)
        .fingerprint()
        .finish()
}

/// The transaction id of a Binding success response, if `b` is one.
fn binding_success(b: &[u8]) -> Option<TransactionId> {
    let m = Message::parse(b).ok()?;
    (m.method == Method::BINDING && m.class == Class::Success).then_some(m.transaction_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-1";

    fn addr() -> SocketAddr {
        "192.0.2.1:3478".parse().unwrap()
    }

    fn drain(j: &mut Judge) -> Vec<Output> {
        std::iter::from_fn(|| j.poll_output()).collect()
    }

    /// The requests among `out`, and the Binding success answering each.
    fn answers(out: &[Output]) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|o| match o {
                Output::Transmit { bytes, .. } => {
                    let req = Message::parse(bytes).expect("the relay's codec parses a probe");
                    assert_eq!((req.method, req.class), (Method::BINDING, Class::Request));
                    Some(
                        MessageBuilder::new(Method::BINDING, Class::Success, req.transaction_id)
                            .xor_address(edge_relay::stun::attr::XOR_MAPPED_ADDRESS, addr())
                            .fingerprint()
                            .finish(),
                    )
                }
                _ => None,
            })
            .collect()
    }

    fn changes(out: &[Output]) -> Vec<Change> {
        out.iter()
            .filter_map(|o| match o {
                Output::Record { change, .. } => Some(*change),
                _ => None,
            })
            .collect()
    }

    /// One round every probe interval from `t0`, for `rounds` rounds.
    fn rounds(j: &mut Judge, t0: Instant, rounds: u32) -> Vec<Output> {
        let mut all = Vec::new();
        for i in 0..rounds {
            j.handle_round(
                t0 + PROBE_INTERVAL * i,
                1000 + i as u64,
                &[(A.into(), addr())],
            );
            all.extend(drain(j));
        }
        all
    }

    #[test]
    fn a_silent_relay_fails_after_silence_and_recovers_on_one_answer() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        let out = rounds(&mut j, t0, 4);
        assert_eq!(answers(&out).len(), 4, "one probe per round");
        assert!(
            changes(&out).is_empty(),
            "300 ms of silence is not yet failing"
        );
        j.handle_round(t0 + PROBE_INTERVAL * 4, 2000, &[(A.into(), addr())]);
        let out = drain(&mut j);
        assert_eq!(
            changes(&out),
            [Change::Failing {
                refused: false,
                link_closed: false
            }]
        );
        assert!(out.contains(&Output::TickNow));
        assert!(!out.iter().any(|o| matches!(o, Output::Crashed { .. })));
        let Output::Record { record, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(record.failing_since_ms, Some(2000));
        // A late answer to any probe still in flight clears it.
        let late = answers(&out)[0].clone();
        j.handle_answer(t0 + PROBE_INTERVAL * 5, 2100, &late);
        assert_eq!(changes(&drain(&mut j)), [Change::Answering]);
    }

    #[test]
    fn an_answered_relay_stays_healthy_and_a_stranger_answer_is_ignored() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        for i in 0..20 {
            let now = t0 + PROBE_INTERVAL * i;
            j.handle_round(now, i as u64, &[(A.into(), addr())]);
            let out = drain(&mut j);
            for a in answers(&out) {
                j.handle_answer(now + Duration::from_millis(1), i as u64, &a);
            }
            assert!(changes(&drain(&mut j)).is_empty(), "round {i}");
        }
        // An answer to nothing we sent, and garbage: nothing happens.
        let stranger = MessageBuilder::new(Method::BINDING, Class::Success, [9; 12])
            .fingerprint()
            .finish();
        j.handle_answer(t0, 0, &stranger);
        j.handle_answer(t0, 0, b"not stun at all, but long enough to look");
        assert!(drain(&mut j).is_empty());
    }

    #[test]
    fn two_refusals_in_a_row_fail_a_relay_and_one_is_confirmed_first() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        rounds(&mut j, t0, 1);
        j.handle_refusal(t0, 10, addr());
        let out = drain(&mut j);
        assert_eq!(answers(&out).len(), 1, "a confirming probe at once");
        assert!(changes(&out).is_empty(), "one refusal is not enough");
        // The relay answers the confirming probe: the refusal was stray.
        j.handle_answer(t0, 11, &answers(&out)[0]);
        drain(&mut j);
        j.handle_refusal(t0, 12, addr());
        assert!(changes(&drain(&mut j)).is_empty(), "the count starts over");
        j.handle_refusal(t0, 13, addr());
        let out = drain(&mut j);
        assert_eq!(
            changes(&out),
            [Change::Failing {
                refused: true,
                link_closed: false
            }]
        );
        // A refusal from a host we never probed changes nothing.
        j.handle_refusal(t0, 14, "198.51.100.9:3478".parse().unwrap());
        assert!(drain(&mut j).is_empty());
    }

    #[test]
    fn a_suspect_that_does_not_answer_in_time_fails_unless_it_heartbeats_elsewhere() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        assert!(!j.handle_link_closed(t0, A, 500), "unknown until a round");
        rounds(&mut j, t0, 1);
        assert!(j.handle_link_closed(t0, A, 500));
        let out = drain(&mut j);
        assert_eq!(answers(&out).len(), 2, "probed twice at once");
        let deadline = j.poll_timeout().expect("a deadline");
        assert!(deadline > t0 && deadline <= t0 + SILENCE);
        j.handle_timeout(deadline - Duration::from_millis(1));
        assert!(drain(&mut j).is_empty(), "not yet");
        j.handle_timeout(deadline);
        assert_eq!(
            drain(&mut j),
            [Output::CheckHeartbeat {
                relay: A.into(),
                since_ms: 500
            }]
        );
        assert_eq!(j.poll_timeout(), None);
        // It heartbeated elsewhere: alive.
        j.heartbeat_seen(900, A, true);
        assert!(drain(&mut j).is_empty());

        // The next closed connection, no heartbeat anywhere: it crashed.
        j.handle_link_closed(t0, A, 600);
        drain(&mut j);
        j.handle_timeout(j.poll_timeout().unwrap());
        drain(&mut j);
        j.heartbeat_seen(1000, A, false);
        let out = drain(&mut j);
        assert_eq!(
            changes(&out),
            [Change::Failing {
                refused: false,
                link_closed: true
            }]
        );
        assert!(out.contains(&Output::Crashed { relay: A.into() }));
        assert!(out.contains(&Output::TickNow));
    }

    #[test]
    fn a_suspect_that_answers_is_left_alone() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        rounds(&mut j, t0, 1);
        j.handle_link_closed(t0, A, 500);
        let out = drain(&mut j);
        j.handle_answer(t0 + Duration::from_millis(2), 501, &answers(&out)[1]);
        drain(&mut j);
        assert_eq!(j.poll_timeout(), None, "no verdict pending");
    }

    #[test]
    fn a_failing_relay_whose_connection_closes_is_reported_as_crashed_once() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        rounds(&mut j, t0, 5);
        drain(&mut j);
        j.handle_link_closed(t0 + SILENCE * 2, A, 700);
        let out = drain(&mut j);
        assert_eq!(changes(&out), [Change::CrashConfirmed]);
        assert!(out.contains(&Output::Crashed { relay: A.into() }));
        j.handle_link_closed(t0 + SILENCE * 2, A, 700);
        assert!(drain(&mut j).is_empty(), "once per episode");
    }

    #[test]
    fn relays_leaving_the_directory_are_forgotten() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        rounds(&mut j, t0, 1);
        assert!(j.knows(A));
        j.handle_round(t0 + PROBE_INTERVAL, 0, &[]);
        assert!(!j.knows(A));
        assert!(drain(&mut j).is_empty());
    }

    #[test]
    fn transaction_ids_differ_from_probe_to_probe() {
        let t0 = Instant::now();
        let mut j = Judge::new(7);
        let out = rounds(&mut j, t0, 8);
        let ids: std::collections::HashSet<TransactionId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Transmit { bytes, .. } => {
                    Some(Message::parse(bytes).unwrap().transaction_id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 8);
    }
}
