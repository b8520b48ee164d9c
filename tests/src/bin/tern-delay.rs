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
//! One thread, a level-triggered epoll (tern-netio), and one FIFO per
//! direction: with a constant delay, packets fall due in arrival order.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tern_netio::Epoll;

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

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut delay = Duration::from_millis(a.delay_ms);
    let mut delay_read = Instant::now();
    let front = UdpSocket::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    front.set_nonblocking(true)?;
    let mut epoll = Epoll::new(1024)?;
    epoll.add(front.as_raw_fd(), FRONT)?;
    let upstream_ip = if a.upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let mut clients: Vec<(SocketAddr, UdpSocket)> = Vec::new();
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut queue: VecDeque<(Instant, Dest, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    eprintln!(
        "tern-delay: {} -> {} (+{} ms each way)",
        front.local_addr()?,
        a.upstream,
        a.delay_ms
    );
    loop {
        let mut timeout = queue
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
                    while let Ok((len, from)) = front.recv_from(&mut buf) {
                        let i = match by_client.get(&from) {
                            Some(&i) => i,
                            None => {
                                let s = UdpSocket::bind(upstream_ip)?;
                                s.connect(a.upstream)?;
                                s.set_nonblocking(true)?;
                                epoll.add(s.as_raw_fd(), clients.len() as u64)?;
                                clients.push((from, s));
                                by_client.insert(from, clients.len() - 1);
                                clients.len() - 1
                            }
                        };
                        queue.push_back((now + delay, Dest::Up(i), buf[..len].to_vec()));
                    }
                }
                i => {
                    let (client, s) = &clients[i as usize];
                    while let Ok(len) = s.recv(&mut buf) {
                        queue.push_back((now + delay, Dest::Client(*client), buf[..len].to_vec()));
                    }
                }
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, dest, bytes) = queue.pop_front().expect("checked");
            // UDP: a failed send is a lost packet, as on a real path.
            let _ = match dest {
                Dest::Up(i) => clients[i].1.send(&bytes),
                Dest::Client(addr) => front.send_to(&bytes, addr),
            };
        }
    }
}
