//! The bare forwarder: a TURN-shaped UDP forwarder with nothing but the
//! forwarding (see [`crate::bare`] for its control messages and why it
//! exists). One thread, a level-triggered epoll, one recvmmsg per readable
//! socket per wakeup, sendmmsg for everything that leaves through the
//! listener.
//!
//! Per relayed packet (client A → client B) it does what any relay with one
//! socket per allocation must: read from the listener (batched with other
//! clients' packets), `sendto` from A's relayed socket to B's relayed
//! address, read on B's relayed socket (rarely more than one datagram per
//! wakeup at 50 pps per stream), and send from the listener to B (batched).
//!
//! With [`Forwarder::local_delivery`] it is the floor for tern-relay's
//! in-memory path instead: when B's relayed address is one of its own, the
//! packet goes straight from A's datagram into the batch for B (one read,
//! one batched send per relayed packet).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use crate::bare::{decode_v4, encode_v4, ALLOC, ALLOC_OK, BIND, BIND_OK};
use crate::client::{decode_channel_data, CHANNEL_DATA_HEADER};
use tern_netio::{Epoll, RecvBatch, SendBatch};

const LISTENER: u64 = u64::MAX;
const BATCH: usize = 64;
/// Largest datagram a slot holds; media packets are far smaller.
const SLOT: usize = 2048;

struct Alloc {
    socket: UdpSocket,
    relayed: SocketAddrV4,
    client: SocketAddrV4,
    /// (channel, peer): a call has one or two peers, so a scan beats a map.
    channels: Vec<(u16, SocketAddrV4)>,
}

/// Counters printed when the forwarder stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwarderStats {
    pub allocations: usize,
    pub forwarded: u64,
    pub dropped: u64,
}

pub struct Forwarder {
    epoll: Epoll,
    listener: UdpSocket,
    allocs: Vec<Alloc>,
    by_client: HashMap<SocketAddrV4, usize>,
    by_relayed: HashMap<SocketAddrV4, usize>,
    local_delivery: bool,
    relay_ip: std::net::Ipv4Addr,
    rx: RecvBatch,
    to_clients: SendBatch,
    stats: ForwarderStats,
}

impl Forwarder {
    pub fn bind(listen: SocketAddrV4) -> io::Result<Self> {
        let epoll = Epoll::new(1024)?;
        let listener = UdpSocket::bind(listen)?;
        listener.set_nonblocking(true)?;
        // The same receive buffer tern-relay asks for on its listener, so
        // the floor is measured with the same queue in front of it.
        tern_netio::set_receive_buffer(listener.as_raw_fd(), 4 << 20)?;
        epoll.add(listener.as_raw_fd(), LISTENER)?;
        Ok(Forwarder {
            epoll,
            listener,
            allocs: Vec::new(),
            by_client: HashMap::new(),
            by_relayed: HashMap::new(),
            local_delivery: false,
            relay_ip: *listen.ip(),
            rx: RecvBatch::new(BATCH, SLOT, CHANNEL_DATA_HEADER),
            to_clients: SendBatch::new(BATCH, SLOT),
            stats: ForwarderStats::default(),
        })
    }

    /// Hand packets between two of its own allocations over in memory.
    pub fn local_delivery(mut self, on: bool) -> Self {
        self.local_delivery = on;
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> ForwarderStats {
        self.stats
    }

    /// Serve forever (until the process is killed).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            let n = self.epoll.wait(None)?;
            for k in 0..n {
                match self.epoll.token(k) {
                    LISTENER => self.drain_listener()?,
                    i => self.drain_relayed(i as usize),
                }
            }
            self.flush_to_clients();
        }
    }

    fn flush_to_clients(&mut self) {
        flush(&mut self.to_clients, &self.listener, &mut self.stats);
    }

    /// Client → relayed socket → peer. One recvmmsg batch per epoll report
    /// (level-triggered: if more is waiting, the listener is reported again).
    fn drain_listener(&mut self) -> io::Result<()> {
        {
            let n = match self.rx.recv(self.listener.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
                Err(e) => return Err(e),
            };
            for i in 0..n {
                // The benchmark runs on 127.0.0.0/8: IPv4 only.
                let (Some(SocketAddr::V4(from)), slot) = self.rx.slot_mut(i) else {
                    continue;
                };
                let d = &slot[CHANNEL_DATA_HEADER..];
                if let Some((channel, payload)) = decode_channel_data(d) {
                    let Some(a) = self.by_client.get(&from).map(|&a| &self.allocs[a]) else {
                        continue;
                    };
                    let Some(&(_, peer)) = a.channels.iter().find(|c| c.0 == channel) else {
                        continue;
                    };
                    let local = self.by_relayed.get(&peer).filter(|_| self.local_delivery);
                    if let Some(b) = local.map(|&b| &self.allocs[b]) {
                        // In memory: the datagram sits behind the headroom,
                        // so the ChannelData frame for B is slot[4..].
                        let (len, from) = (payload.len(), a.relayed);
                        let Some(&(out, _)) = b.channels.iter().find(|c| c.1 == from) else {
                            continue;
                        };
                        let frame = &mut slot[CHANNEL_DATA_HEADER..2 * CHANNEL_DATA_HEADER + len];
                        frame[0..2].copy_from_slice(&out.to_be_bytes());
                        to_client(
                            &mut self.to_clients,
                            &self.listener,
                            &mut self.stats,
                            b.client,
                            frame,
                        );
                        continue;
                    }
                    match a.socket.send_to(payload, peer) {
                        Ok(_) => self.stats.forwarded += 1,
                        Err(_) => self.stats.dropped += 1,
                    }
                } else {
                    let d = d.to_vec();
                    self.control(from, &d)?;
                }
            }
        }
        Ok(())
    }

    /// Peer → our relayed socket → ChannelData to the allocation's client.
    fn drain_relayed(&mut self, i: usize) {
        let Some(a) = self.allocs.get(i) else { return };
        let fd = a.socket.as_raw_fd();
        {
            // One batch per report, as for the listener; errors (e.g.
            // ECONNREFUSED from an old ICMP) clear on read.
            let Ok(n) = self.rx.recv(fd) else { return };
            for k in 0..n {
                let (Some(SocketAddr::V4(from)), slot) = self.rx.slot_mut(k) else {
                    continue;
                };
                let len = slot.len() - CHANNEL_DATA_HEADER;
                let a = &self.allocs[i];
                let Some(&(channel, _)) = a.channels.iter().find(|c| c.1 == from) else {
                    continue;
                };
                // The datagram sits after the headroom: the header goes in
                // front of it and the whole frame is copied once, into the
                // send batch.
                slot[0..2].copy_from_slice(&channel.to_be_bytes());
                slot[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                let frame = &slot[..CHANNEL_DATA_HEADER + len];
                to_client(
                    &mut self.to_clients,
                    &self.listener,
                    &mut self.stats,
                    a.client,
                    frame,
                );
            }
        }
    }

    fn control(&mut self, from: SocketAddrV4, d: &[u8]) -> io::Result<()> {
        if d.len() < 8 {
            return Ok(());
        }
        let mut answer = Vec::with_capacity(16);
        if &d[..4] == ALLOC {
            let idx = match self.by_client.get(&from) {
                Some(&i) => i,
                None => self.open_relayed(from)?,
            };
            let SocketAddr::V4(relayed) = self.allocs[idx].socket.local_addr()? else {
                return Ok(());
            };
            answer.extend_from_slice(ALLOC_OK);
            answer.extend_from_slice(&d[4..8]);
            encode_v4(relayed, &mut answer);
        } else if &d[..4] == BIND && d.len() >= 16 {
            let Some(&i) = self.by_client.get(&from) else {
                return Ok(());
            };
            let channel = u16::from_be_bytes([d[8], d[9]]);
            let Some(peer) = decode_v4(&d[10..]) else {
                return Ok(());
            };
            let chans = &mut self.allocs[i].channels;
            chans.retain(|c| c.0 != channel && c.1 != peer);
            chans.push((channel, peer));
            answer.extend_from_slice(BIND_OK);
            answer.extend_from_slice(&d[4..8]);
        } else {
            return Ok(());
        }
        let _ = self.listener.send_to(&answer, from);
        Ok(())
    }

    fn open_relayed(&mut self, client: SocketAddrV4) -> io::Result<usize> {
        let std_sock = UdpSocket::bind((self.relay_ip, 0))?;
        std_sock.set_nonblocking(true)?;
        let socket = std_sock;
        let idx = self.allocs.len();
        self.epoll.add(socket.as_raw_fd(), idx as u64)?;
        let SocketAddr::V4(relayed) = socket.local_addr()? else {
            return Err(io::Error::other("IPv4 only"));
        };
        self.by_relayed.insert(relayed, idx);
        self.allocs.push(Alloc {
            socket,
            relayed,
            client,
            channels: Vec::new(),
        });
        self.by_client.insert(client, idx);
        self.stats.allocations = self.allocs.len();
        Ok(idx)
    }
}

fn flush(batch: &mut SendBatch, listener: &UdpSocket, stats: &mut ForwarderStats) {
    if !batch.is_empty() {
        stats.dropped += batch.flush(listener.as_raw_fd()) as u64;
    }
}

/// A ChannelData frame into the batch that leaves through the listener.
fn to_client(
    batch: &mut SendBatch,
    listener: &UdpSocket,
    stats: &mut ForwarderStats,
    client: SocketAddrV4,
    frame: &[u8],
) {
    batch.push(SocketAddr::V4(client), |out| {
        out[..frame.len()].copy_from_slice(frame);
        frame.len()
    });
    stats.forwarded += 1;
    if batch.is_full() {
        flush(batch, listener, stats);
    }
}
