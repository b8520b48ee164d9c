//! The bare forwarder's control protocol and its client.
//!
//! The forwarder is the benchmark's physical floor: it moves packets along the
//! same path as a TURN relay (client → listener socket → per-allocation
//! "relayed" socket → the peer's relayed socket → listener → peer client, as
//! ChannelData on the client legs) but with no authentication, permissions,
//! lifetimes or STUN parsing. Its two control messages only exist to set that
//! path up, so the generator runs unchanged against it:
//!
//! * `TFWA tid:u32` → `TFWa tid:u32 ipv4:4 port:2` (open a relayed socket for
//!   the sender; a repeat gets the same one)
//! * `TFWB tid:u32 channel:u16 ipv4:4 port:2` → `TFWb tid:u32` (map a channel
//!   of the sender's allocation to a peer address)
//!
//! IPv4 only. The first byte `T` (0x54) never starts ChannelData (0x40-0x4F).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::client::{ClientError, Op};
use crate::session::{Session, SessionEvent};

pub const ALLOC: &[u8; 4] = b"TFWA";
pub const ALLOC_OK: &[u8; 4] = b"TFWa";
pub const BIND: &[u8; 4] = b"TFWB";
pub const BIND_OK: &[u8; 4] = b"TFWb";

const RTO: Duration = Duration::from_millis(500);
const MAX_SENDS: u32 = 7;

pub fn encode_v4(addr: SocketAddrV4, out: &mut Vec<u8>) {
    out.extend_from_slice(&addr.ip().octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

pub fn decode_v4(b: &[u8]) -> Option<SocketAddrV4> {
    let b: &[u8; 6] = b.get(..6)?.try_into().ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        u16::from_be_bytes([b[4], b[5]]),
    ))
}

struct Pending {
    tid: u32,
    op: Op,
    bytes: Vec<u8>,
    sends: u32,
    next_send: Instant,
}

/// Client of the bare forwarder, with the same [`Session`] interface as the
/// TURN client.
#[derive(Default)]
pub struct BareClient {
    next_tid: u32,
    pending: Vec<Pending>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<SessionEvent>,
}

impl BareClient {
    pub fn new() -> Self {
        BareClient::default()
    }

    fn start(&mut self, now: Instant, op: Op, bytes: Vec<u8>, tid: u32) {
        self.transmits.push_back(bytes.clone());
        self.pending.push(Pending {
            tid,
            op,
            bytes,
            sends: 1,
            next_send: now + RTO,
        });
    }

    fn tid(&mut self) -> u32 {
        self.next_tid += 1;
        self.next_tid
    }
}

impl Session for BareClient {
    fn allocate(&mut self, now: Instant) {
        let tid = self.tid();
        let mut b = ALLOC.to_vec();
        b.extend_from_slice(&tid.to_be_bytes());
        self.start(now, Op::Allocate, b, tid);
    }

    fn bind(&mut self, now: Instant, peer: SocketAddr, channel: u16) {
        let SocketAddr::V4(v4) = peer else {
            self.events
                .push_back(SessionEvent::Failed(ClientError::BadAnswer {
                    op: Op::ChannelBind { peer, channel },
                    what: "IPv4 peer (the bare forwarder is IPv4 only)",
                }));
            return;
        };
        let tid = self.tid();
        let mut b = BIND.to_vec();
        b.extend_from_slice(&tid.to_be_bytes());
        b.extend_from_slice(&channel.to_be_bytes());
        encode_v4(v4, &mut b);
        self.start(now, Op::ChannelBind { peer, channel }, b, tid);
    }

    /// The forwarder keeps allocations for its lifetime; nothing to do.
    fn release(&mut self, _now: Instant) {}

    fn handle_control(&mut self, _now: Instant, d: &[u8]) {
        if d.len() < 8 {
            return;
        }
        let tid = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let Some(i) = self.pending.iter().position(|p| p.tid == tid) else {
            return;
        };
        let ev = match (&d[..4], &self.pending[i].op) {
            (k, Op::Allocate) if k == ALLOC_OK => match decode_v4(&d[8..]) {
                Some(a) => SessionEvent::Allocated { relayed: a.into() },
                None => return,
            },
            (k, Op::ChannelBind { peer, channel }) if k == BIND_OK => SessionEvent::ChannelBound {
                peer: *peer,
                channel: *channel,
            },
            _ => return,
        };
        self.pending.swap_remove(i);
        self.events.push_back(ev);
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if p.next_send > now {
                i += 1;
            } else if p.sends >= MAX_SENDS {
                let p = self.pending.swap_remove(i);
                self.events
                    .push_back(SessionEvent::Failed(ClientError::Timeout { op: p.op }));
            } else {
                p.sends += 1;
                p.next_send = now + RTO;
                self.transmits.push_back(p.bytes.clone());
                i += 1;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next_send).min()
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }
}
