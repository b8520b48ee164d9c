//! `tern-delay`: a userspace UDP delay shim, because this kernel has no
//! netem. It stands in front of one relay (a "region" far away): clients
//! send to the shim, the shim forwards to the relay after `--delay-ms`, and
//! the relay's answers come back through it after the same delay, so the
//! client-to-region round trip grows by twice the delay. Each client gets
//! its own upstream socket, so the relay still sees one 5-tuple per client
//! (like a NAT). Give the relay `--advertise <shim address>` so signaling
//! hands out and probes the shim, not the relay itself.
//!
//!   tern-delay --listen 127.0.0.1:4478 --upstream 127.0.0.1:3478 --delay-ms 30
//!
//! Freezing the shim (SIGSTOP) cuts the region off for its clients while the
//! relay itself stays up and keeps heartbeating: a network partition. With
//! `--delay-file F`, the delay becomes the number written in F (re-read
//! every 100 ms): a path that congests while calls run.
//!
//! One thread, a level-triggered epoll (tern-netio) with one recvmmsg per
//! readable socket, one FIFO (with a constant delay, packets fall due in
//! arrival order), client-bound packets leaving in sendmmsg batches, and
//! packet buffers recycled. Sockets get large receive buffers: a drill puts
//! 1,000 calls (200,000 datagrams a second) through one shim on a machine
//! whose cores the callers and relays share, and a shim that is preempted
//! for a few milliseconds must queue, not drop (it would drop the edges'
//! probes too, and the region would look dead).

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tern_netio::{Epoll, RecvBatch, SendBatch};

#[derive(Parser)]
#[command(
    about = "UDP delay shim: adds a fixed one-way delay both ways between clients and one upstream"
)]
struct Args {
    /// Where clients send.
    #[arg(long)]
    listen: SocketAddr,
    /// The relay (or any UDP server) behind the shim.
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way delay added in each direction, in milliseconds.
    #[arg(long)]
    delay_ms: u64,
    /// A file holding a new one-way delay in ms, re-read every 100 ms while
    /// it exists (to congest the path mid-test).
    #[arg(long)]
    delay_file: Option<std::path::PathBuf>,
}

/// How often `--delay-file` is read.
const DELAY_FILE_EVERY: Duration = Duration::from_millis(100);

const FRONT: u64 = u64::MAX;

enum Dest {
    /// To the upstream, from client `i`'s socket.
    Up(usize),
    /// To a client, from the front socket.
    Client(SocketAddr),
}

/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;
/// Largest datagram the shim carries (TURN media and control are far
/// smaller; anything larger is truncated, which a real path would drop).
const SLOT: usize = 4096;
/// Receive buffer asked for on every socket (the kernel caps it at
/// net.core.rmem_max).
const RCVBUF: usize = 4 << 20;

fn big_receive_buffer(s: &UdpSocket) {
    let _ = tern_netio::set_receive_buffer(s.as_raw_fd(), RCVBUF);
}

/// The delay line: packets waiting to fall due, and spare buffers.
struct Line {
    queue: VecDeque<(Instant, Dest, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Line {
    fn push(&mut self, due: Instant, dest: Dest, bytes: &[u8]) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        self.queue.push_back((due, dest, b));
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut delay = Duration::from_millis(a.delay_ms);
    let mut delay_read = Instant::now();
    let front = UdpSocket::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    front.set_nonblocking(true)?;
    big_receive_buffer(&front);
    let mut epoll = Epoll::new(1024)?;
    epoll.add(front.as_raw_fd(), FRONT)?;
    let upstream_ip = if a.upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let mut clients: Vec<(SocketAddr, UdpSocket)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut line = Line {
        queue: VecDeque::new(),
        spare: Vec::new(),
    };
    let mut rx = RecvBatch::new(BATCH, SLOT, 0);
    let mut to_clients = SendBatch::new(BATCH, SLOT);
    eprintln!(
        "tern-delay: {} -> {} (+{} ms each way)",
        front.local_addr()?,
        a.upstream,
        a.delay_ms
    );
    loop {
        let mut timeout = line
            .queue
            .front()
            .map(|(due, _, _)| due.saturating_duration_since(Instant::now()));
        if let Some(f) = &a.delay_file {
            if delay_read.elapsed() >= DELAY_FILE_EVERY {
                delay_read = Instant::now();
                if let Some(ms) = std::fs::read_to_string(f)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    if ms != delay.as_millis() as u64 {
                        eprintln!("tern-delay: now +{ms} ms each way");
                        delay = Duration::from_millis(ms);
                    }
                }
            }
            timeout = Some(timeout.map_or(DELAY_FILE_EVERY, |t| t.min(DELAY_FILE_EVERY)));
        }
        let n = epoll.wait(timeout)?;
        let now = Instant::now();
        for k in 0..n {
            match epoll.token(k) {
                FRONT => {
                    let got = rx.recv(front.as_raw_fd()).unwrap_or(0);
                    for j in 0..got {
                        let (Some(from), bytes) = rx.get(j) else {
                            continue;
                        };
                        let i = match by_client.get(&from) {
                            Some(&i) => i,
                            None => {
                                let s = UdpSocket::bind(upstream_ip)?;
                                s.connect(a.upstream)?;
                                s.set_nonblocking(true)?;
                                big_receive_buffer(&s);
                                epoll.add(s.as_raw_fd(), clients.len() as u64)?;
                                clients.push((from, s));
                                by_client.insert(from, clients.len() - 1);
                                clients.len() - 1
                            }
                        };
                        line.push(now + delay, Dest::Up(i), bytes);
                    }
                }
                i => {
                    let (client, s) = &clients[i as usize];
                    let got = rx.recv(s.as_raw_fd()).unwrap_or(0);
                    for j in 0..got {
                        line.push(now + delay, Dest::Client(*client), rx.get(j).1);
                    }
                }
            }
        }
        let now = Instant::now();
        while line.queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, dest, bytes) = line.queue.pop_front().expect("checked");
            // UDP: a failed send is a lost packet, as on a real path.
            match dest {
                Dest::Up(i) => {
                    let _ = clients[i].1.send(&bytes);
                }
                Dest::Client(addr) => {
                    if to_clients.is_full() {
                        to_clients.flush(front.as_raw_fd());
                    }
                    to_clients.push(addr, |out| {
                        out[..bytes.len()].copy_from_slice(&bytes);
                        bytes.len()
                    });
                }
            }
            line.spare.push(bytes);
        }
        if !to_clients.is_empty() {
            to_clients.flush(front.as_raw_fd());
        }
    }
}
